//! `fieldvault`: the command-line client. Argument parsing and output only; everything it
//! does goes through the `fieldvault-client` library.

mod cli;
mod commands;
mod secret_input;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything can hold a key: no core dumps, not dumpable.
    let hygiene = fieldvault_hygiene::disable_core_dumps();
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => return fieldvault_hygiene::usage_error("fieldvault", &e),
    };
    if let Err(why) = hygiene {
        eprintln!("fieldvault: warning: could not disable core dumps ({why})");
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined with ": ", skipping a cause whose text the
            // line already holds (library errors name their cause in their own message).
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !line.contains(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
            }
            let line = line.replace('\n', " ");
            eprintln!("fieldvault: {line}");
            ExitCode::FAILURE
        }
    }
}
