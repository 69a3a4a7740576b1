//! `fieldvault-server`: the sync server's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::sync::Arc;

use fieldvault_server::auth::{Password, Passwords};
use fieldvault_server::{App, Config, KeyDir, Store, accounts, default_key_dir, open_store, router, system_clock};
use zeroize::Zeroizing;

/// Deletes expired nonces once a minute.
async fn purge_nonces(store: Arc<dyn Store>) {
    let clock = system_clock();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        if let Err(e) = store.purge_nonces(clock()).await {
            tracing::warn!(error = %e, "purging expired nonces failed");
        }
    }
}

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
    /// PostgreSQL URL; without it the store is the SQLCipher file <data>/server.db
    #[arg(long, global = true, env = "FIELDVAULT_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
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
    /// Manage user accounts
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (password from a prompt or FIELDVAULT_PASSWORD)
    Add {
        /// User name
        name: String,
        /// A role for access rules (repeatable)
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
    },
    /// Set a user's password (prompt or FIELDVAULT_PASSWORD); revokes every session of the user
    Passwd {
        /// User name
        name: String,
    },
    /// Disable a user: no login or refresh, every session revoked
    Disable {
        /// User name
        name: String,
    },
}

/// The new password: FIELDVAULT_PASSWORD, or a prompt (asked twice) on a terminal.
fn read_password() -> Result<Password> {
    if let Ok(p) = std::env::var("FIELDVAULT_PASSWORD") {
        return Ok(Password::new(Zeroizing::new(p)));
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no password: set FIELDVAULT_PASSWORD or run on a terminal to be prompted");
    }
    let first = Zeroizing::new(rpassword::prompt_password("New password: ").context("reading the password")?);
    let second = Zeroizing::new(rpassword::prompt_password("Again: ").context("reading the password")?);
    if first != second {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(Password::new(first))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")
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
        Command::User(cmd) => {
            let store_key = key_dir.store_key().context("run `fieldvault-server init` first")?;
            runtime()?.block_on(async {
                let store = open_store(&cli.data, &store_key, cli.database_url.as_deref()).await.context("store")?;
                let now = (system_clock())();
                let (name, what) = match cmd {
                    UserCommand::Add { name, roles } => {
                        let passwords = Passwords::new(1).map_err(anyhow::Error::msg)?;
                        accounts::add_user(&store, &passwords, &name, &roles, read_password()?, now)
                            .await
                            .context("user add")?;
                        (name, "added")
                    }
                    UserCommand::Passwd { name } => {
                        let passwords = Passwords::new(1).map_err(anyhow::Error::msg)?;
                        accounts::set_password(&store, &passwords, &name, read_password()?, now)
                            .await
                            .context("user passwd")?;
                        (name, "password changed; every session revoked")
                    }
                    UserCommand::Disable { name } => {
                        accounts::disable_user(&store, &name, now).await.context("user disable")?;
                        (name, "disabled; every session revoked")
                    }
                };
                if cli.json {
                    println!("{}", serde_json::json!({ "user": name, "result": what }));
                } else {
                    eprintln!("fieldvault-server: user {name:?} {what}");
                }
                Ok(())
            })
        }
        Command::Serve { listen } => {
            let tls = key_dir.tls_config().context("run `fieldvault-server init` first")?;
            let store_key = key_dir.store_key().context("run `fieldvault-server init` first")?;
            let signer = key_dir.token_signer().context("the token-signing key")?;
            runtime()?.block_on(async {
                let store = open_store(&cli.data, &store_key, cli.database_url.as_deref()).await.context("store")?;
                let app = App::new(store.clone(), signer, &store_key, system_clock(), Config::default())
                    .map_err(anyhow::Error::msg)?;
                drop(store_key);
                tokio::spawn(purge_nonces(store));
                let server = fieldvault_server::Server::bind(listen, tls, router(Arc::new(app))).await?;
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIELDVAULT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
