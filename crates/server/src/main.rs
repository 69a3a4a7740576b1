//! `fieldvault-server`: the sync server's command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::sync::Arc;

use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::rules::Rules;
use fieldvault_server::auth::oidc::Oidc;
use fieldvault_server::auth::oidc::provider::ProviderConfig;
use fieldvault_server::auth::{Password, Passwords};
use fieldvault_server::seal::Sealer;
use fieldvault_server::{
    App, Config, KeyDir, Store, accounts, clock_skew, default_key_dir, devices, open_store, system_clock,
};
use zeroize::Zeroizing;

/// Deletes expired nonces and idempotency records past their life, once a minute, and
/// checks this machine's clock against the database's.
async fn purge(app: Arc<App>) {
    for minute in 1u64.. {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        // Once a day: the certificate's expiry (a warning from 30 days before).
        if minute % (24 * 60) == 0
            && let Some(pins) = &app.pins
            && let Err(e) = pins.warn_if_expiring(app.now())
        {
            tracing::warn!(error = %e, "reading the TLS certificate failed");
        }
        if let Err(e) = app.purge().await {
            tracing::warn!(error = %e, "purging expired nonces and idempotency records failed");
        }
        let idle_since = app.now().saturating_sub(fieldvault_server::console::IDLE_TIMEOUT);
        if let Err(e) = app.store.purge_admin_sessions(idle_since).await {
            tracing::warn!(error = %e, "purging idle console sessions failed");
        }
        match app.store.clock().await {
            Ok(Some(store)) => {
                if let Some(why) = clock_skew(app.now(), store) {
                    tracing::error!("{why}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the database's clock failed"),
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
    ///
    /// On the SQLite store one `serve` runs at a time: a second one on the same --data refuses
    /// (the first holds a lock on <data>/serve.lock for its life); the other subcommands work
    /// beside it. Several instances share a PostgreSQL store (--database-url).
    Serve {
        /// Address to listen on (port 0 picks a free one; the bound address is printed)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Access rules (TOML, docs/rules.md); without it a user reads and writes only what they own
        #[arg(long, value_name = "FILE", env = "FIELDVAULT_RULES")]
        rules: Option<PathBuf>,
        /// Access token lifetime in seconds (10 to 86400; short lifetimes are for tests)
        #[arg(long, value_name = "SECS", default_value_t = 600,
            value_parser = clap::value_parser!(u64).range(10..=86_400))]
        access_ttl: u64,
        /// Offline lease (and offline token) lifetime in seconds: every login and refresh moves the
        /// lease's expiry this far ahead (3600 to 31622400)
        #[arg(long, value_name = "SECS", default_value_t = 604_800,
            value_parser = clap::value_parser!(u64).range(3_600..=31_622_400))]
        lease_ttl: u64,
        /// Connections one client address may hold at once, handshakes included (an IPv6 address
        /// counts by its /64); more are closed at once. Clients behind one proxy or NAT share an
        /// address: raise it for them (1 to 512; the server serves 512 connections in all)
        #[arg(long, value_name = "N", default_value_t = 128,
            value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=512))]
        max_connections_per_address: usize,
        /// Also serve the admin console (docs/console.md) on this address, over TLS with the same
        /// certificate; off unless given (suggested: 127.0.0.1:8444, loopback only)
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        oidc: OidcArgs,
    },
    /// Show, renew or rotate the TLS certificate and key (devices pin the key: make the next
    /// key, let devices sync to learn its pin, then rotate; docs/protocol.md section 20)
    #[command(subcommand)]
    Cert(CertCommand),
    /// Manage user accounts
    #[command(subcommand)]
    User(UserCommand),
    /// List devices; revoke or wipe one remotely
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage administrators of the admin console (apart from app users)
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check, export or cut the tamper-evident audit log (docs/formats/audit.md); safe beside a
    /// running server
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Each key's pin, validity and days left: the key in use, the next one (after `cert next`)
    /// and the previous one (after `cert rotate`)
    Status,
    /// Re-issue the certificate in use for the same key, valid for a year from now (the pin does
    /// not change: the routine yearly step); with --tls-cert, install your CA's new certificate
    /// for the same key instead. Restart `serve` to use it
    Renew {
        /// Your CA's new certificate chain (PEM) for the key in use
        #[arg(long, value_name = "PEM")]
        tls_cert: Option<PathBuf>,
    },
    /// Make the next key and print its pin (or print the pin of the one already made); devices
    /// learn it from GET /v1/server/pins at their next sync
    Next,
    /// Put the next key in use, keeping the replaced one as the previous key; restart `serve`
    /// to use it. With --undo, put the previous key back in use
    Rotate {
        /// Go back to the key in use before the last rotation
        #[arg(long)]
        undo: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Add an administrator (password from a prompt or FIELDVAULT_PASSWORD); their first console
    /// login enrols a TOTP authenticator through a QR code, and every later login needs its code
    Add {
        /// Administrator name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain from the first record to the chain head: prints OK with the record
    /// count and the last seq, or names the first broken link and exits non-zero
    Verify,
    /// Write the records as JSON lines {seq, at, actor, action, target, detail, prev_hash, hash}
    /// (hashes in lowercase hex), oldest first
    Export {
        /// Only the records after this seq
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
    },
    /// Retention cut: delete the records older than DAYS days and append an audit.retention_cut
    /// record naming the first kept one, so the rest still verifies. Nothing is ever deleted
    /// otherwise
    Prune {
        /// Keep the records of the last DAYS days (1 to 36500)
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
        before: u64,
    },
}

/// Sign-in through OpenID Connect providers (docs/identity.md). One provider from the flags, or
/// any number from `--oidc-config`.
#[derive(Debug, clap::Args)]
struct OidcArgs {
    /// Let users sign in through this OpenID Connect issuer (https; its discovery document must name
    /// exactly this issuer)
    #[arg(long = "oidc", value_name = "ISSUER_URL", requires = "oidc_client_id", conflicts_with = "oidc_config")]
    oidc_issuer: Option<String>,
    /// This server's client id at the issuer
    #[arg(long, value_name = "ID", requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// A file holding the client secret (a confidential client; first line, whitespace trimmed)
    #[arg(long, value_name = "FILE", requires = "oidc_issuer")]
    oidc_client_secret_file: Option<PathBuf>,
    /// Also trust this CA (PEM) for HTTPS to identity providers, besides the system's roots
    #[arg(long, value_name = "FILE")]
    oidc_ca: Option<PathBuf>,
    /// A claim holding the user's roles (such as `groups`): each sign-in sets the roles from it
    #[arg(long, value_name = "CLAIM", requires = "oidc_issuer")]
    oidc_roles_claim: Option<String>,
    /// Create a user at an identity's first sign-in, named by its `preferred_username` (else `sub`);
    /// without it an operator links identities with `user link`
    #[arg(long, requires = "oidc_issuer")]
    oidc_create_users: bool,
    /// At each refresh, refresh at the provider too: a user disabled there loses the session
    #[arg(long, requires = "oidc_issuer")]
    oidc_recheck: bool,
    /// Providers from a TOML file: `ca = "FILE"` and `[[oidc]]` tables with issuer, client_id,
    /// client_secret_file, scopes, roles_claim, username_claim, create_users, recheck
    #[arg(long, value_name = "FILE")]
    oidc_config: Option<PathBuf>,
}

/// The `--oidc-config` file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcFile {
    ca: Option<PathBuf>,
    #[serde(default)]
    oidc: Vec<ProviderConfig>,
}

fn read_client_secret(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    let secret = Zeroizing::new(text.lines().next().unwrap_or("").trim().to_owned());
    anyhow::ensure!(!secret.is_empty(), "the client secret file {} is empty", path.display());
    Ok(secret)
}

impl OidcArgs {
    /// The providers configured, if any.
    fn providers(&self) -> Result<Option<Oidc>> {
        let (mut configs, ca) = match (&self.oidc_issuer, &self.oidc_config) {
            (Some(issuer), _) => {
                let config = ProviderConfig {
                    issuer: issuer.clone(),
                    client_id: self.oidc_client_id.clone().unwrap_or_default(),
                    client_secret: None,
                    client_secret_file: self.oidc_client_secret_file.clone(),
                    scopes: Vec::new(),
                    roles_claim: self.oidc_roles_claim.clone(),
                    username_claim: None,
                    create_users: self.oidc_create_users,
                    recheck: self.oidc_recheck,
                };
                (vec![config], self.oidc_ca.clone())
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let file: OidcFile =
                    toml::from_str(&text).with_context(|| format!("OIDC config {}", path.display()))?;
                (file.oidc, self.oidc_ca.clone().or(file.ca))
            }
            (None, None) => return Ok(None),
        };
        for config in &mut configs {
            if let Some(path) = &config.client_secret_file {
                config.client_secret = Some(read_client_secret(path)?);
            }
        }
        Oidc::new(configs, ca.as_deref()).map(Some).map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// List devices: user, label, last contact, whether a session is live, whether the device is live or
    /// retired (wiped, retired, rollback), pending directives
    List,
    /// Remote logout: revoke the device's sessions and send it a revoke directive; its lease key stays,
    /// so its next login continues it
    Revoke {
        /// Device id (from `device list`)
        id: String,
    },
    /// Remote wipe: revoke the device's sessions, delete its lease key, retire it, and send it a wipe
    /// directive telling it to crypto-shred the account
    Wipe {
        /// Device id (from `device list`)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (password from a prompt or FIELDVAULT_PASSWORD)
    ///
    /// The name is 1 to 64 of A-Z a-z 0-9 _ . - @ and starts with a letter or digit. The password
    /// is 12 to 1024 characters and must score at least 3 of 4 on zxcvbn, the floor the vault
    /// passphrase has (a name or "fieldvault" inside it counts against it).
    Add {
        /// User name (1 to 64 of A-Z a-z 0-9 _ . - @, starting with a letter or digit)
        name: String,
        /// A role for access rules (repeatable)
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// An attribute for access rules, key=value; a JSON value (3, true, ["a","b"]) stays JSON (repeatable)
        #[arg(long = "attr", value_name = "K=V")]
        attributes: Vec<String>,
    },
    /// Replace a user's roles and attributes; devices drop what they may no longer read at their next pull
    Access {
        /// User name
        name: String,
        /// A role (repeatable); none given means no roles
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// An attribute, key=value (repeatable); none given means no attributes
        #[arg(long = "attr", value_name = "K=V")]
        attributes: Vec<String>,
    },
    /// Set a user's password (prompt or FIELDVAULT_PASSWORD); revokes every session of the user, keeps
    /// their devices and lease keys
    ///
    /// The password is 12 to 1024 characters and must score at least 3 of 4 on zxcvbn, the floor
    /// the vault passphrase has.
    Passwd {
        /// User name
        name: String,
    },
    /// Disable a user: no login or refresh, every session revoked; devices and lease keys are kept
    Disable {
        /// User name
        name: String,
    },
    /// Enable a disabled user: their devices continue at their next login
    Enable {
        /// User name
        name: String,
    },
    /// Remove a user: sessions, devices, device secrets and lease keys deleted; their documents stay
    Remove {
        /// User name
        name: String,
    },
    /// Link an identity at an OpenID Connect provider to a user: signing in through the provider as
    /// that identity signs in as the user (docs/identity.md)
    Link {
        /// User name
        name: String,
        /// The provider's issuer, exactly as `serve --oidc` names it
        #[arg(long, value_name = "URL")]
        issuer: String,
        /// The identity's subject (`sub` claim) at that issuer
        #[arg(long, value_name = "SUB")]
        subject: String,
    },
    /// Unlink an identity from its user (sessions already signed in stay until revoked)
    Unlink {
        /// The provider's issuer
        #[arg(long, value_name = "URL")]
        issuer: String,
        /// The identity's subject (`sub` claim)
        #[arg(long, value_name = "SUB")]
        subject: String,
    },
    /// Multi-factor login (TOTP): enroll a user or end it
    #[command(subcommand)]
    Mfa(MfaCommand),
}

#[derive(Debug, Subcommand)]
enum MfaCommand {
    /// Give a user a new TOTP secret and print its otpauth:// URI (and a QR code of it when stdout is a
    /// terminal) for their authenticator app; from then on their logins need a code. Re-enrolling replaces
    /// the secret: the old one's codes stop working
    Enroll {
        /// User name
        name: String,
    },
    /// End a user's multi-factor login: the secret is deleted and the password alone logs in again
    Disable {
        /// User name
        name: String,
    },
}

/// The URI as a QR code of Unicode half blocks, light modules drawn, for a terminal that
/// writes light on dark.
fn qr_code(uri: &str) -> Result<Zeroizing<String>> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(uri.as_bytes()).context("drawing the QR code")?;
    Ok(Zeroizing::new(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build()))
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

async fn print_devices(store: &Arc<dyn Store>, json: bool) -> Result<()> {
    let all = devices::list(store).await.context("device list")?;
    if json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|d| {
                serde_json::json!({ "id": d.id, "user": d.user, "name": d.name, "created_at": d.created_at,
                    "last_seen_at": d.last_seen_at, "active": d.active,
                    "retired": d.retired.map(|r| r.as_str()), "lease_expires_at": d.lease_expires_at,
                    "pending": d.pending().map(|x| serde_json::json!({"jti": x.jti, "kind": x.kind})).collect::<Vec<_>>() })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON values always serialize"));
        return Ok(());
    }
    println!(
        "{:<26} {:<16} {:<20} {:<20} {:<8} {:<9} PENDING",
        "DEVICE", "USER", "NAME", "LAST CONTACT (UTC)", "SESSION", "STATE"
    );
    for d in &all {
        let pending: Vec<String> = d.pending().map(|x| format!("{}:{}", x.kind, x.jti)).collect();
        let seen = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(d.last_seen_at));
        println!(
            "{:<26} {:<16} {:<20} {:<20} {:<8} {:<9} {}",
            d.id,
            d.user,
            d.name.chars().take(20).collect::<String>(),
            seen.get(5..25).unwrap_or(&seen),
            if d.active { "live" } else { "revoked" },
            d.retired.map_or("live", |r| r.as_str()),
            if pending.is_empty() { "-".to_owned() } else { pending.join(",") }
        );
    }
    Ok(())
}

/// The actor of the audit records these subcommands write: `cli:<name>` of the user running
/// the process, from the passwd database (`cli:uid-<uid>` when it has no entry there).
fn cli_actor() -> String {
    let uid = rustix::process::getuid().as_raw().to_string();
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|text| {
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 2 && fields[2] == uid && !fields[0].is_empty()).then(|| fields[0].to_owned())
        })
    });
    format!("cli:{}", name.unwrap_or_else(|| format!("uid-{uid}")))
}

/// `audit verify | export | prune`.
async fn audit_command(store: Arc<dyn Store>, cmd: AuditCommand, json: bool, now: u64) -> Result<()> {
    use std::io::Write;
    match cmd {
        AuditCommand::Verify => match fieldvault_server::verify_audit(store.as_ref()).await.context("audit verify")? {
            fieldvault_server::AuditCheck::Intact(summary) => {
                let last = summary.last.map_or(0, |(seq, _)| seq);
                if json {
                    println!("{}", serde_json::json!({ "ok": true, "count": summary.count, "last_seq": last }));
                } else {
                    println!("OK: {} records, last seq {last}", summary.count);
                }
                Ok(())
            }
            fieldvault_server::AuditCheck::Broken(link) => {
                if json {
                    println!("{}", serde_json::json!({ "ok": false, "seq": link.seq, "why": link.why }));
                }
                anyhow::bail!("{link}")
            }
        },
        AuditCommand::Export { after } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            fieldvault_server::audit_records::<anyhow::Error>(store.as_ref(), after, |record| {
                writeln!(out, "{}", record.to_export_json()).context("writing the export")?;
                Ok(())
            })
            .await?;
            out.flush().context("writing the export")?;
            Ok(())
        }
        AuditCommand::Prune { before } => {
            let cut_at = now.saturating_sub(before.saturating_mul(86_400));
            let cut = fieldvault_server::AuditEvent::new(now, cli_actor(), "", "");
            match store.audit_prune(cut_at, &cut).await.context("audit prune")? {
                Some(cut) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "deleted": cut.deleted, "first_kept_seq": cut.first_kept_seq,
                                "cut_seq": cut.record.seq })
                        );
                    } else {
                        eprintln!(
                            "fieldvault-server: deleted {} audit records; the chain starts at seq {}, the cut is seq {}",
                            cut.deleted, cut.first_kept_seq, cut.record.seq
                        );
                    }
                }
                None if json => println!("{}", serde_json::json!({ "deleted": 0 })),
                None => eprintln!("fieldvault-server: no audit record is older than {before} days; nothing changed"),
            }
            Ok(())
        }
    }
}

/// `cert status | renew | next | rotate`.
fn cert(key_dir: &KeyDir, cmd: CertCommand, json: bool) -> Result<()> {
    use fieldvault_server::certs::CertInfo;
    let now = system_clock()();
    let date = |t: u64| {
        chrono::DateTime::from_timestamp(i64::try_from(t).unwrap_or(i64::MAX), 0)
            .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    };
    let as_json = |c: &CertInfo| {
        serde_json::json!({ "key": c.slot.as_str(), "pin": c.pin, "not_before": c.not_before,
            "not_after": c.not_after, "days_left": c.days_left(now), "self_signed": c.self_signed, "hosts": c.hosts })
    };
    let one = |c: &CertInfo, what: &str| {
        if json {
            println!("{}", as_json(c));
        } else {
            println!("{}", c.pin);
            eprintln!("fieldvault-server: {what}; valid until {} ({} days)", date(c.not_after), c.days_left(now));
        }
    };
    key_dir.repair_rotation().context("the key directory")?;
    match cmd {
        CertCommand::Status => {
            let all = key_dir.cert_status().context("cert status")?;
            if json {
                println!("{}", serde_json::Value::Array(all.iter().map(as_json).collect()));
            } else {
                println!("{:<9} {:<52} {:<24} {:>9}  ISSUER", "KEY", "PIN", "VALID UNTIL", "DAYS LEFT");
                for c in &all {
                    let issuer = if c.self_signed { "self-signed" } else { "CA" };
                    println!(
                        "{:<9} {:<52} {:<24} {:>9}  {issuer}",
                        c.slot.as_str(),
                        c.pin,
                        date(c.not_after),
                        c.days_left(now)
                    );
                }
            }
        }
        CertCommand::Renew { tls_cert } => {
            let c = key_dir.cert_renew(now, tls_cert.as_deref()).context("cert renew")?;
            one(&c, "renewed for the same key (the pin is unchanged); restart `serve` to use it");
        }
        CertCommand::Next => {
            let (c, made) = key_dir.cert_next(now).context("cert next")?;
            one(
                &c,
                if made {
                    "made the next key; devices learn its pin at their next sync, then `cert rotate` puts it in use"
                } else {
                    "a next key exists already (this is its pin); `cert rotate` puts it in use"
                },
            );
        }
        CertCommand::Rotate { undo } => {
            let c = key_dir.cert_rotate(undo).context(if undo { "cert rotate --undo" } else { "cert rotate" })?;
            one(
                &c,
                if undo {
                    "the previous key is in use again; restart `serve` to use it"
                } else {
                    "the next key is in use (the replaced one is kept: `cert rotate --undo`); restart `serve` to use it"
                },
            );
        }
    }
    Ok(())
}

/// The lock file `serve` holds on a SQLite store's data directory.
const SERVE_LOCK: &str = "serve.lock";

/// One `serve` per SQLite store: an exclusive `flock` on `<data>/serve.lock`, held by the open
/// file the caller keeps. The store assumes one process (a request's idempotency key in flight
/// is tracked in memory, the WAL is written by one server); several instances need PostgreSQL.
/// The other subcommands take no such lock: they work beside a running server.
fn lock_sqlite_store(data: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data.join(SERVE_LOCK);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {} (run `fieldvault-server init` first)", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => anyhow::bail!(
            "another `fieldvault-server serve` is running on the SQLite store in {} (it holds {}); one SQLite \
             store serves one process: stop that server first, or run several instances on PostgreSQL \
             (--database-url)",
            data.display(),
            path.display()
        ),
        Err(e) => Err(std::io::Error::from(e)).with_context(|| format!("cannot lock {}", path.display())),
    }
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
        Command::Cert(cmd) => cert(&key_dir, cmd, cli.json),
        Command::User(cmd) => {
            let store_key = key_dir.store_key().context("run `fieldvault-server init` first")?;
            runtime()?.block_on(async {
                let store = open_store(&cli.data, &store_key, cli.database_url.as_deref()).await.context("store")?;
                let now = (system_clock())();
                let by = cli_actor();
                let (name, what) = match cmd {
                    UserCommand::Add { name, roles, attributes } => {
                        let access = accounts::Access::parse(&roles, &attributes).context("user add")?;
                        let passwords = Passwords::new(1).map_err(anyhow::Error::msg)?;
                        accounts::add_user(&store, &by, &passwords, &name, access, read_password()?, now)
                            .await
                            .context("user add")?;
                        (name, "added")
                    }
                    UserCommand::Access { name, roles, attributes } => {
                        let access = accounts::Access::parse(&roles, &attributes).context("user access")?;
                        accounts::set_access(&store, &by, &name, &access, now).await.context("user access")?;
                        (name, "access replaced")
                    }
                    UserCommand::Passwd { name } => {
                        let passwords = Passwords::new(1).map_err(anyhow::Error::msg)?;
                        accounts::set_password(&store, &by, &passwords, &name, read_password()?, now)
                            .await
                            .context("user passwd")?;
                        (name, "password changed; every session revoked, devices kept")
                    }
                    UserCommand::Disable { name } => {
                        accounts::disable_user(&store, &by, &name, now).await.context("user disable")?;
                        (name, "disabled; every session revoked, devices kept")
                    }
                    UserCommand::Enable { name } => {
                        accounts::enable_user(&store, &by, &name, now).await.context("user enable")?;
                        (name, "enabled")
                    }
                    UserCommand::Remove { name } => {
                        accounts::remove_user(&store, &by, &name, now).await.context("user remove")?;
                        (name, "removed with every session, device and lease key; documents kept")
                    }
                    UserCommand::Link { name, issuer, subject } => {
                        accounts::link_identity(&store, &by, &name, &issuer, &subject, now).await.context("user link")?;
                        (name, "linked to the identity")
                    }
                    UserCommand::Unlink { issuer, subject } => {
                        accounts::unlink_identity(&store, &by, &issuer, &subject, now).await.context("user unlink")?;
                        (subject, "unlinked")
                    }
                    UserCommand::Mfa(MfaCommand::Enroll { name }) => {
                        let sealer = Sealer::new(&store_key);
                        let uri = accounts::enroll_totp(&store, &by, &sealer, &name, now).await.context("user mfa enroll")?;
                        if cli.json {
                            // Written by hand so that no copy of the secret outlives this line
                            // unwiped: the URI has only unreserved characters, '%', ':', '/', '?',
                            // '=' and '&' (its label is percent-encoded), none of which JSON escapes.
                            let user = serde_json::to_string(&name).expect("a string serializes");
                            let line = Zeroizing::new(format!(
                                "{{\"user\":{user},\"result\":\"enrolled in multi-factor login\",\"otpauth_uri\":\"{}\"}}",
                                uri.as_str()
                            ));
                            println!("{}", *line);
                            return Ok(());
                        }
                        println!("{}", *uri);
                        if std::io::stdout().is_terminal() {
                            println!("{}", *qr_code(&uri)?);
                        }
                        (name, "enrolled in multi-factor login: add the URI above to the user's authenticator app")
                    }
                    UserCommand::Mfa(MfaCommand::Disable { name }) => {
                        accounts::disable_totp(&store, &by, &name, now).await.context("user mfa disable")?;
                        (name, "no longer needs a TOTP code to log in")
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
        Command::Device(cmd) => {
            let store_key = key_dir.store_key().context("run `fieldvault-server init` first")?;
            let signer = key_dir.token_signer().context("the token-signing key")?;
            runtime()?.block_on(async {
                let store = open_store(&cli.data, &store_key, cli.database_url.as_deref()).await.context("store")?;
                let now = (system_clock())();
                let by = cli_actor();
                let (id, kind) = match cmd {
                    DeviceCommand::List => return print_devices(&store, cli.json).await,
                    DeviceCommand::Revoke { id } => (id, DirectiveKind::Revoke),
                    DeviceCommand::Wipe { id } => (id, DirectiveKind::Wipe),
                };
                let claims = devices::issue_directive(&store, &by, &signer, &id, kind, now)
                    .await
                    .with_context(|| format!("device {}", kind.as_str()))?;
                let lease = match kind {
                    DirectiveKind::Wipe => "deleted",
                    DirectiveKind::Revoke => "kept",
                };
                if cli.json {
                    let out = serde_json::json!({ "device": id, "user": claims.sub, "directive": claims.jti,
                        "kind": kind.as_str(), "sessions": "revoked", "lease_key": lease });
                    println!("{out}");
                } else {
                    eprintln!(
                        "fieldvault-server: device {id:?} of {:?}: sessions revoked, lease key {lease}, {} directive {} pending",
                        claims.sub,
                        kind.as_str(),
                        claims.jti
                    );
                }
                Ok(())
            })
        }
        Command::Admin(AdminCommand::Add { name }) => {
            let store_key = key_dir.store_key().context("run `fieldvault-server init` first")?;
            runtime()?.block_on(async {
                let store = open_store(&cli.data, &store_key, cli.database_url.as_deref()).await.context("store")?;
                let passwords = Passwords::new(1).map_err(anyhow::Error::msg)?;
                fieldvault_server::console::add_admin(
                    &store,
                    &cli_actor(),
                    &passwords,
                    &name,
                    read_password()?,
                    (system_clock())(),
                )
                .await
                .context("admin add")?;
                let what = "added; their first console login shows the QR code for their authenticator app";
                if cli.json {
                    println!("{}", serde_json::json!({ "admin": name, "result": "added" }));
                } else {
                    eprintln!("fieldvault-server: administrator {name:?} {what}");
                }
                Ok(())
            })
        }
        Command::Audit(cmd) => {
            let store_key = key_dir.store_key().context("run `fieldvault-server init` first")?;
            runtime()?.block_on(async {
                let store = open_store(&cli.data, &store_key, cli.database_url.as_deref()).await.context("store")?;
                audit_command(store, cmd, cli.json, (system_clock())()).await
            })
        }
        Command::Serve { listen, rules, access_ttl, lease_ttl, max_connections_per_address, admin_listen, oidc } => {
            let oidc = oidc.providers().context("--oidc")?;
            let rules = match &rules {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                    Rules::from_toml(&text).with_context(|| format!("rules file {}", path.display()))?
                }
                None => Rules::owner_only(),
            };
            key_dir.repair_rotation().context("the key directory")?;
            let tls = key_dir.tls_config().context("run `fieldvault-server init` first")?;
            let pins = fieldvault_server::certs::PinSource::new(key_dir.clone());
            pins.warn_if_expiring(system_clock()()).context("the TLS certificate")?;
            let store_key = key_dir.store_key().context("run `fieldvault-server init` first")?;
            let signer = key_dir.token_signer().context("the token-signing key")?;
            // Held until this arm returns, that is for the server's life; the kernel releases
            // it when the process dies, however it dies.
            let _one_server = match cli.database_url {
                None => Some(lock_sqlite_store(&cli.data)?),
                Some(_) => None,
            };
            runtime()?.block_on(async {
                let store = open_store(&cli.data, &store_key, cli.database_url.as_deref()).await.context("store")?;
                // Timestamps are judged by this clock, nonces kept for MAX_SKEW_SECS off the store's.
                if let Some(now) = store.clock().await.context("reading the database's clock")?
                    && let Some(why) = clock_skew(system_clock()(), now)
                {
                    anyhow::bail!(why);
                }
                // The offline token expires with the lease it comes with.
                let config = Config {
                    access_ttl,
                    lease_ttl,
                    offline_ttl: lease_ttl,
                    max_connections_per_address,
                    ..Config::default()
                };
                let app = App::new(store.clone(), signer, &store_key, system_clock(), config)
                    .map_err(anyhow::Error::msg)?
                    .with_rules(rules)
                    .with_pins(pins);
                let app = match oidc {
                    Some(oidc) => app.with_oidc(oidc),
                    None => app,
                };
                drop(store_key);
                let app = Arc::new(app);
                tokio::spawn(purge(app.clone()));
                let console = match admin_listen {
                    Some(addr) => Some(fieldvault_server::Server::bind_console(addr, tls.clone(), app.clone()).await?),
                    None => None,
                };
                let server = fieldvault_server::Server::bind(listen, tls, app).await?;
                eprintln!("fieldvault-server: listening on https://{}", server.local_addr());
                let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
                let console = console.map(|console| {
                    eprintln!("fieldvault-server: admin console on https://{}", console.local_addr());
                    tokio::spawn(console.run(async move {
                        let _ = console_stopped.await;
                    }))
                });
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing the SIGTERM handler")?;
                let shutdown = async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                };
                server.run(shutdown).await;
                drop(stop_console);
                if let Some(console) = console {
                    let _ = console.await;
                }
                Ok::<(), anyhow::Error>(())
            })
        }
    }
}

fn main() -> ExitCode {
    // Before anything can hold a key (the store key, the token-signing key, unsealed session
    // secrets): no core dumps, not dumpable.
    let hygiene = fieldvault_hygiene::disable_core_dumps();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIELDVAULT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return fieldvault_hygiene::usage_error("fieldvault-server", &e),
    };
    if let Err(why) = hygiene {
        tracing::warn!(error = %why, "could not disable core dumps; a crash may write this process's keys to disk");
    }
    match run(cli) {
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
