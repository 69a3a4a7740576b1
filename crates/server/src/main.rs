//! `fieldvault-server`: the sync server's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fieldvault_server::{KeyDir, default_key_dir};

/// Fieldvault sync server. HTTPS only; keys live in a key directory apart from the data.
#[derive(Debug, Parser)]
#[command(name = "fieldvault-server", version)]
struct Cli {
    /// Data directory
    #[arg(long, global = true, env = "FIELDVAULT_DATA", value_name = "DIR", default_value = "fieldvault-data")]
    data: PathBuf,
    /// Key directory [default: a sibling of --data named <data>.keys]
    #[arg(long, global = true, env = "FIELDVAULT_KEY_DIR", value_name = "DIR")]
    key_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the store key, the token-signing key and a self-signed TLS certificate; print
    /// the certificate's SPKI pin for clients (`fieldvault login --pin`)
    Init {
        /// Host names and IP addresses the certificate is for
        #[arg(long = "host", value_name = "NAME", default_values = ["localhost", "127.0.0.1", "::1"])]
        hosts: Vec<String>,
    },
}

fn run(cli: Cli) -> Result<()> {
    let key_dir = KeyDir::at(&cli.key_dir.clone().unwrap_or_else(|| default_key_dir(&cli.data)));
    match cli.command {
        Command::Init { hosts } => {
            let pin = key_dir.init(&cli.data, &hosts).context("init")?;
            if cli.json {
                let out = serde_json::json!({
                    "pin": pin,
                    "key_dir": key_dir.path().display().to_string(),
                    "data": cli.data.display().to_string(),
                    "hosts": hosts,
                });
                println!("{}", serde_json::to_string_pretty(&out).expect("JSON values always serialize"));
            } else {
                println!("{pin}");
                eprintln!("fieldvault-server: keys in {}; give clients the pin above", key_dir.path().display());
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !line.contains(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
            }
            eprintln!("fieldvault-server: {}", line.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
