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
        /// Use this certificate chain (PEM) instead of a self-signed one
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Serve HTTPS (TLS 1.2+, no plaintext listener); `GET /healthz` answers 200 once ready
    Serve {
        /// Address to listen on (port 0 picks a free one; the bound address is printed)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
    },
}

fn run(cli: Cli) -> Result<()> {
    let key_dir = KeyDir::at(&cli.key_dir.clone().unwrap_or_else(|| default_key_dir(&cli.data)));
    match cli.command {
        Command::Init { hosts, tls_cert, tls_key } => {
            let pin = match (&tls_cert, &tls_key) {
                (Some(c), Some(k)) => key_dir.init_with_certificate(&cli.data, c, k),
                _ => key_dir.init(&cli.data, &hosts),
            }
            .context("init")?;
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
        Command::Serve { listen } => {
            let tls = key_dir.tls_config().context("run `fieldvault-server init` first")?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
            runtime.block_on(async {
                let server = fieldvault_server::Server::bind(listen, tls, fieldvault_server::router()).await?;
                eprintln!("fieldvault-server: listening on https://{}", server.local_addr());
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing the SIGTERM handler")?;
                let shutdown = async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                };
                server.run(shutdown).await;
                Ok::<(), anyhow::Error>(())
            })
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
