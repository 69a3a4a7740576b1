//! `fieldvault`: the command-line client. Argument parsing and output only; everything it
//! does goes through the `fieldvault-client` library.

mod cli;
mod commands;
mod hygiene;
mod secret_input;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything can hold a key: no core dumps, not dumpable.
    let hygiene = hygiene::disable_core_dumps();
    let cli = cli::Cli::parse();
    if let Err(why) = hygiene {
        eprintln!("fieldvault: warning: could not disable core dumps ({why})");
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined with ": ".
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("fieldvault: {line}");
            ExitCode::FAILURE
        }
    }
}
