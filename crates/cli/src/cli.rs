//! The command line, as SPEC section 6 names it.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Fieldvault: an encrypted, offline-first data vault.
///
/// Secrets never come from arguments (they are visible in /proc): the passphrase comes from
/// a terminal prompt, `--passphrase-fd N`, or FIELDVAULT_PASSPHRASE (weaker: other
/// processes of the same user can read a process's environment).
#[derive(Debug, Parser)]
#[command(name = "fieldvault", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Vault directory [default: $XDG_DATA_HOME/fieldvault or ~/.local/share/fieldvault]
    #[arg(long, global = true, env = "FIELDVAULT_VAULT", value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// Account (namespace) inside the vault [default: default]. With `wipe`, wipes only it
    /// (and then only when given here, not through FIELDVAULT_ACCOUNT)
    #[arg(long, global = true, env = "FIELDVAULT_ACCOUNT", value_name = "NAME")]
    pub account: Option<String>,
    /// Whether `account` came from FIELDVAULT_ACCOUNT rather than the command line.
    #[arg(skip)]
    pub account_from_env: bool,
    /// Print machine-readable JSON on stdout (errors stay one line on stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// Read the passphrase from this open file descriptor (first line)
    #[arg(long, global = true, value_name = "N")]
    pub passphrase_fd: Option<u32>,
}

/// Where the keystore key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeystoreChoice {
    /// The OS keystore (Secret Service on a Linux desktop)
    Os,
    /// Argon2id over a passphrase
    Passphrase,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a vault with a fresh key hierarchy and a recovery key (printed once: write it
    /// down)
    ///
    /// Without --keystore the OS keystore is used where one answers; otherwise init says so
    /// and falls back to the passphrase keystore.
    Init {
        /// Keystore for the key that wraps the master key
        #[arg(long, value_enum)]
        keystore: Option<KeystoreChoice>,
    },
    /// Show the key hierarchy: key ids, versions, keystore (no passphrase needed)
    ///
    /// With --sync it also unlocks and shows the account's sync state: server, user,
    /// device, outbox length, last sync, token and lease expiry.
    Status {
        /// Add the account's sync state (unlocks the vault)
        #[arg(long)]
        sync: bool,
    },
    /// Write a document: a JSON object from the argument, or from stdin with `-` or no argument
    ///
    /// Arguments are visible to other processes in /proc: pass sensitive documents on stdin.
    /// An object naming a key twice (`{"a":1,"a":2}`, at any depth) is refused: a document
    /// must mean one thing on every device. Key order is not kept (keys come back sorted).
    Put {
        /// Collection name (A-Z a-z 0-9 _ . -, up to 64 characters)
        collection: String,
        /// Document id (up to 256 bytes)
        id: String,
        /// The JSON object, or `-` for stdin (the default)
        #[arg(value_name = "JSON")]
        document: Option<String>,
    },
    /// Print a document
    Get {
        /// Collection name
        collection: String,
        /// Document id
        id: String,
    },
    /// List the documents of a collection in id order (all of them unless --limit)
    List {
        /// Collection name
        collection: String,
        /// At most this many documents (1 or more)
        #[arg(long, value_parser = at_least_one)]
        limit: Option<std::num::NonZeroUsize>,
        /// Start after this id (the `next` of a previous page)
        #[arg(long)]
        after: Option<String>,
    },
    /// Delete a document
    Delete {
        /// Collection name
        collection: String,
        /// Document id
        id: String,
    },
    /// Rotate the account's data keys (re-keying its database), or with --master the master key
    Rotate {
        /// Rotate the master key (re-wraps every data key; data is untouched)
        #[arg(long)]
        master: bool,
    },
    /// Change the passphrase (the new one from a prompt, --new-passphrase-fd or FIELDVAULT_NEW_PASSPHRASE)
    ///
    /// The new passphrase must differ from the one in use and score at least 3 of 4 on zxcvbn.
    Passwd {
        /// Read the new passphrase from this open file descriptor (first line)
        #[arg(long, value_name = "N")]
        new_passphrase_fd: Option<u32>,
    },
    /// Recovery key: make a new one (the old one then opens nothing); printed once
    #[command(subcommand)]
    RecoveryKey(RecoveryKeyCommand),
    /// Get back in with the recovery key when the keystore entry is lost or the passphrase
    /// forgotten
    ///
    /// The recovery key comes from a prompt or --recovery-key-fd N. The master key is wrapped
    /// again under a new OS keystore entry or a new passphrase (from a prompt or
    /// FIELDVAULT_NEW_PASSPHRASE; the old passphrase no longer unlocks), and a new recovery
    /// key replaces the used one (printed once). Documents, attachments, unsynced changes and
    /// the device's login are kept. Wrong keys are counted like wrong passphrases.
    Recover {
        /// Read the recovery key from this open file descriptor (first line)
        #[arg(long, value_name = "N")]
        recovery_key_fd: Option<u32>,
    },
    /// Crypto-shred and delete the whole vault, or with --account NAME one account
    ///
    /// Keys go first (crypto-shredding), then files. Asks for confirmation on a terminal.
    /// Wiping the last account leaves a vault with no account: `fieldvault account add NAME`
    /// makes a new one.
    Wipe {
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Encrypt FILE as an attachment of document COLLECTION/ID; prints the attachment id
    Attach {
        /// Collection of the owning document
        collection: String,
        /// Id of the owning document
        id: String,
        /// The file to attach
        file: std::path::PathBuf,
    },
    /// Export the account's documents (and attachments) to FILE, encrypted in the age format
    ///
    /// FILE opens with the `age` tool (`age -d -i IDENTITY FILE`, or with the passphrase);
    /// inside is an uncompressed tar of manifest.json, documents/<collection>.jsonl and
    /// attachments/<id> (docs/formats/export.md). Whoever holds a recipient's identity, or
    /// the passphrase, reads all of it. Written to a temporary file beside FILE and renamed
    /// into place only when complete: FILE is never half-written.
    Export {
        /// Where to write the export (replaced atomically if it exists)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Export only this collection (repeatable) [default: every collection]
        #[arg(long = "collection", value_name = "C")]
        collections: Vec<String>,
        /// Include the attachments of the exported documents (those whose bytes are here)
        #[arg(long)]
        with_attachments: bool,
        /// Encrypt to this age recipient, as age-keygen prints it (repeatable)
        #[arg(
            long = "recipient",
            value_name = "age1...",
            required_unless_present = "to_passphrase",
            conflicts_with = "to_passphrase"
        )]
        recipients: Vec<String>,
        /// Encrypt to a passphrase of the export's own, never the vault's (prompted twice,
        /// or from --export-passphrase-fd or FIELDVAULT_EXPORT_PASSPHRASE)
        #[arg(long)]
        to_passphrase: bool,
        /// Read the export's passphrase from this open file descriptor (first line)
        #[arg(long, value_name = "N", requires = "to_passphrase")]
        export_passphrase_fd: Option<u32>,
    },
    /// Import an export (made by `export`) into the account: all of it or nothing
    ///
    /// Documents keep their ids and are local writes (queued for the server); attachments
    /// get new ids. A document whose id is here already is never overwritten: it is
    /// reported as skipped (same body) or conflicting (another body), and its attachments
    /// are not imported.
    Import {
        /// The export file
        file: PathBuf,
        /// An age identity file (as age-keygen writes it) for an export made to recipients
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "from_passphrase",
            conflicts_with = "from_passphrase"
        )]
        identity: Option<PathBuf>,
        /// The export was made with --to-passphrase: ask for its passphrase (or read it from
        /// --export-passphrase-fd or FIELDVAULT_EXPORT_PASSPHRASE)
        #[arg(long)]
        from_passphrase: bool,
        /// Read the export's passphrase from this open file descriptor (first line)
        #[arg(long, value_name = "N", requires = "from_passphrase")]
        export_passphrase_fd: Option<u32>,
    },
    /// Attachments: list a document's, or get one back
    #[command(subcommand)]
    Attachment(AttachmentCommand),
    /// Import a plaintext SQLite database into the account, then remove the plaintext file
    ///
    /// Each table with an `id` column becomes a collection, each row a document of its other
    /// columns. A text cell holding a JSON object becomes that object only if parsing changes
    /// nothing (no key twice, every number as written), else it stays text (listed). Any other
    /// shape, binary data or text that is not UTF-8 refuses the whole import; nothing is
    /// written and the file stays.
    Migrate {
        /// The plaintext SQLite file
        #[arg(long, value_name = "PLAIN.sqlite")]
        from: std::path::PathBuf,
    },
    /// Log the account in to a sync server, pinning its key (password from a prompt,
    /// --password-fd or FIELDVAULT_PASSWORD; or sign in through an identity provider with
    /// --oidc)
    ///
    /// A vault that logged in to this server as this user before continues its device.
    ///
    /// With --oidc the sign-in happens in a browser: the address to open is printed on
    /// stderr (one line starting with https://) and opened in a browser when there is one
    /// ($BROWSER, or xdg-open on a desktop), and the command waits up to 5 minutes for the
    /// browser to come back to 127.0.0.1.
    #[command(group(clap::ArgGroup::new("credential").required(true).args(["user", "oidc"])))]
    Login {
        /// The server, https://HOST[:PORT] (plain http is refused)
        #[arg(long, value_name = "URL")]
        server: String,
        /// The user name (password login)
        #[arg(long)]
        user: Option<String>,
        /// Sign in through this identity provider (one the server offers) in a browser
        /// instead of with a password
        #[arg(long, value_name = "ISSUER_URL")]
        oidc: Option<String>,
        /// With --oidc: only print the address, do not open a browser
        #[arg(long, conflicts_with = "user")]
        no_browser: bool,
        /// The server's key pin, sha256/BASE64; repeat it for the current and the next key
        #[arg(long = "pin", value_name = "sha256/BASE64", required = true)]
        pins: Vec<String>,
        /// A label for this device
        #[arg(long, value_name = "NAME")]
        device_name: Option<String>,
        /// Read the password from this open file descriptor (first line)
        #[arg(long, value_name = "N", conflicts_with = "oidc")]
        password_fd: Option<u32>,
        /// Read the TOTP code (multi-factor login) from this open file descriptor (first line);
        /// without it, a server asking for a code gets a "TOTP code: " prompt on a terminal
        #[arg(long, value_name = "N")]
        totp_fd: Option<u32>,
    },
    /// Push the outbox, then pull what changed on the server
    ///
    /// Exits 0 when the sync completed (conflicts and refused changes are reported, not
    /// errors), 1 when it could not (offline, auth, an answer that does not verify).
    /// With --watch it syncs every --interval seconds until stopped, holding the vault only
    /// while a cycle runs; a failed cycle is retried with exponential backoff and jitter
    /// (5 s up to 15 minutes); with --json it prints one JSON object per cycle, a line each.
    Sync {
        /// Keep syncing until stopped (Ctrl-C)
        #[arg(long)]
        watch: bool,
        /// Seconds between cycles with --watch
        #[arg(long, value_name = "SECS", requires = "watch", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        interval: u64,
    },
    /// List the changes waiting for the server (never their bodies)
    Outbox,
    /// List the kept conflicts (the losing version of each document), or resolve one
    Conflicts {
        #[command(subcommand)]
        action: Option<ConflictsCommand>,
    },
    /// Who the cached offline token says you are (verified offline; user, roles, expiry)
    Whoami,
    /// Log the account out of its server
    ///
    /// Plain: the account's keys and data are destroyed here first, then the server retires
    /// the device. --keep-data: only the session ends; data, keys and the device stay, and
    /// the next login continues the device. Refused while changes wait in the outbox unless
    /// --force. Asks for confirmation on a terminal.
    Logout {
        /// End the session but keep the data and the device
        #[arg(long)]
        keep_data: bool,
        /// Log out even though changes have not reached the server (a plain logout destroys them)
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Accounts: add one, or list them
    #[command(subcommand)]
    Account(AccountCommand),
    /// Check that every file at rest is encrypted and authentic
    ///
    /// Every key unwraps; every account database is encrypted and authenticates on every
    /// page; every attachment decrypts and authenticates end to end; and nothing else lies
    /// under the vault directory. Exits non-zero on any finding.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum AttachmentCommand {
    /// Decrypt an attachment to FILE (written only after the whole stream authenticates);
    /// one another device made is downloaded first
    Get {
        /// The attachment id (32 hex digits, as `attach` printed it)
        att_id: String,
        /// Where to write it (mode 0600; replaced atomically if it exists)
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
    /// List a document's attachments (the same ids on every device that syncs it)
    List {
        /// Collection of the owning document
        collection: String,
        /// Id of the owning document
        id: String,
    },
    /// Delete an attachment here, and from the server and other devices with the next sync
    Delete {
        /// The attachment id (32 hex digits)
        att_id: String,
    },
    /// Download a collection's attachments with every sync, instead of when asked for
    Prefetch {
        /// The collection
        collection: String,
        /// Stop: download only when `attachment get` asks
        #[arg(long)]
        off: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecoveryKeyCommand {
    /// Make a new recovery key and print it once; the previous one stops working
    New,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add an account with fresh keys (its own database, files and sync state)
    Add {
        /// The account name
        name: String,
    },
    /// List the vault's accounts
    List,
}

#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// Resolve a conflict: keep the local version (pushed again) or the server's (as now)
    Resolve {
        /// Collection of the document
        collection: String,
        /// Id of the document
        id: String,
        /// Which version to keep
        #[arg(long, value_enum)]
        keep: KeepChoice,
    },
}

/// Which side a resolved conflict keeps.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeepChoice {
    /// The version that was set aside
    Local,
    /// The document as it is now (the server's)
    Server,
}

/// A count of 1 or more.
fn at_least_one(text: &str) -> Result<std::num::NonZeroUsize, String> {
    text.parse::<usize>()
        .ok()
        .and_then(std::num::NonZeroUsize::new)
        .ok_or_else(|| "expected a whole number of 1 or more".to_owned())
}

/// Parses the command line, noting where `--account` came from.
pub fn parse() -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let mut m = &matches;
    // A global option's source is recorded where it was matched: look down the subcommands.
    let mut from_env = m.value_source("account") == Some(ValueSource::EnvVariable);
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
        if let Some(source) = m.value_source("account") {
            from_env = source == ValueSource::EnvVariable;
        }
    }
    cli.global.account_from_env = from_env;
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(args: &[&str]) -> Result<Cli, clap::Error> {
        let base = ["fieldvault", "login", "--server", "https://sync.example", "--pin", "sha256/x"];
        Cli::try_parse_from(base.iter().chain(args))
    }

    #[test]
    fn login_takes_exactly_one_of_user_and_oidc() {
        assert!(login(&["--user", "ada"]).is_ok());
        assert!(login(&["--oidc", "https://id.example", "--no-browser"]).is_ok());
        let none = login(&[]).expect_err("refused");
        assert_eq!(none.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let both = login(&["--user", "ada", "--oidc", "https://id.example"]).expect_err("refused");
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn no_browser_and_password_fd_go_with_one_kind_of_login_only() {
        let e = login(&["--user", "ada", "--no-browser"]).expect_err("refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let e = login(&["--oidc", "https://id.example", "--password-fd", "3"]).expect_err("refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
