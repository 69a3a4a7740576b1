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
        Err(e) => return usage_error(&e),
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

/// `--help` and `--version` print as usual; a malformed command line gets SPEC section 6's
/// one-line reason on stderr (clap's own report is several lines) and exit code 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let reason = match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            return if e.print().is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => "a subcommand is required".to_owned(),
        _ => {
            // Clap's report: "error: ..." and its continuation lines, tips, then the usage.
            let text = e.render().to_string();
            let lines = text.lines().map(str::trim).take_while(|l| !l.starts_with("Usage:"));
            let noise = |l: &str| l.is_empty() || l.starts_with("tip:") || l.starts_with("For more information");
            let reason: Vec<&str> = lines.filter(|l| !noise(l)).collect();
            let reason = reason.join(" ");
            let reason = reason.trim_start_matches("error: ");
            if reason.is_empty() { "invalid command line".to_owned() } else { reason.to_owned() }
        }
    };
    eprintln!("fieldvault: {reason} (see --help)");
    ExitCode::from(2)
}
