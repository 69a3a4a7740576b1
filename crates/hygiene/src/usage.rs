//! How both binaries report a malformed command line (SPEC section 6): one line on stderr,
//! `PROGRAM: REASON (see --help)`, and exit code 2; `--help` and `--version` print as usual.

use std::process::ExitCode;

/// The one-line reason of a clap error: its "error: ..." line and continuation lines,
/// without tips and usage ("a subcommand is required" when none was given).
pub fn reason(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a subcommand is required".to_owned();
    }
    let text = e.render().to_string();
    let lines = text.lines().map(str::trim).take_while(|l| !l.starts_with("Usage:"));
    let noise = |l: &str| l.is_empty() || l.starts_with("tip:") || l.starts_with("For more information");
    let reason: Vec<&str> = lines.filter(|l| !noise(l)).collect();
    let reason = reason.join(" ");
    let reason = reason.trim_start_matches("error: ");
    if reason.is_empty() { "invalid command line".to_owned() } else { reason.to_owned() }
}

/// Reports `e` for `program`: help and version printed (exit 0, or 1 if stdout fails), any
/// other error as one line on stderr with exit code 2.
pub fn usage_error(program: &str, e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return if e.print().is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    eprintln!("{program}: {} (see --help)", reason(e));
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::*;

    fn command() -> Command {
        Command::new("t")
            .subcommand_required(true)
            .subcommand(Command::new("go").arg(Arg::new("n").long("n").required(true)))
    }

    #[test]
    fn a_clap_error_becomes_one_line_without_usage_or_tips() {
        let missing = command().try_get_matches_from(["t", "go"]).expect_err("--n is required");
        let line = reason(&missing);
        assert!(line.contains("--n") && !line.contains('\n') && !line.contains("Usage"), "{line}");
        let unknown = command().try_get_matches_from(["t", "stop"]).expect_err("no such subcommand");
        assert!(reason(&unknown).contains("unrecognized subcommand 'stop'"), "{}", reason(&unknown));
        let none = command().try_get_matches_from(["t"]).expect_err("a subcommand is required");
        assert!(!reason(&none).is_empty());
    }
}
