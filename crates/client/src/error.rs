use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Everything the vault can refuse. Variants state a fact; none carries key material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory holds no vault, or does not exist (`missing`).
    #[error("{}", not_a_vault(dir, *missing))]
    NotAVault {
        /// The directory.
        dir: PathBuf,
        /// True when the directory does not exist at all (a vault that was never made, or a
        /// mistyped path): `init` makes one there.
        missing: bool,
    },
    /// `init` on a directory that already holds a vault.
    #[error("{} already holds a vault; nothing was changed", dir.display())]
    AlreadyAVault {
        /// The directory.
        dir: PathBuf,
    },
    /// `init` on a directory that holds other files.
    #[error("{} is not empty; a new vault needs an empty or missing directory", dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// The key file is gone but the marker is there: the vault was wiped (keys first) or
    /// its key file deleted. What is left cannot be decrypted.
    #[error("{} has no key file: the vault was wiped or its keys deleted, and its data cannot be decrypted; `fieldvault wipe` removes what is left", dir.display())]
    KeysGone {
        /// The directory.
        dir: PathBuf,
    },
    /// A file or directory of the vault is readable or writable by others.
    #[error("{} has mode {mode:04o}; Fieldvault requires {expected:04o} (run: chmod {expected:o} {})", path.display(), path.display())]
    LoosePermissions {
        /// The path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
        /// What is required.
        expected: u32,
    },
    /// A file of the vault belongs to another user.
    #[error("{} belongs to user {owner}, not to the user running Fieldvault ({me})", path.display())]
    NotOwned {
        /// The path.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// Our uid.
        me: u32,
    },
    /// A path inside the vault is a symbolic link or another unexpected kind of file.
    #[error("{} is not a plain {expected}; refusing to follow it", path.display())]
    UnexpectedFileType {
        /// The path.
        path: PathBuf,
        /// "file" or "directory".
        expected: &'static str,
    },
    /// Another process has the vault open.
    #[error("the vault at {} is in use by another process", dir.display())]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
    /// The passphrase does not open the vault. Counted; see `retry_after_secs`.
    #[error("wrong passphrase ({failures} failed attempt(s){})", wait_note(*retry_after_secs))]
    WrongPassphrase {
        /// Consecutive failures so far.
        failures: u32,
        /// Seconds before the next attempt is allowed.
        retry_after_secs: u64,
    },
    /// The recovery key (its checksum right) is not this vault's: it was replaced by a newer
    /// one, used by a `recover` already, or belongs to another vault. Counted like a wrong
    /// passphrase; see `retry_after_secs`.
    #[error("wrong recovery key: it is not this vault's current recovery key ({failures} failed attempt(s){})", wait_note(*retry_after_secs))]
    WrongRecoveryKey {
        /// Consecutive failures so far.
        failures: u32,
        /// Seconds before the next attempt is allowed.
        retry_after_secs: u64,
    },
    /// The vault has no recovery key (made before recovery keys existed, or never made one).
    #[error(
        "this vault has no recovery key; nothing was changed (an unlocked vault makes one with `fieldvault recovery-key new`)"
    )]
    NoRecoveryKey,
    /// Too many recent failures: wait before trying again.
    #[error("too many failed unlocks; try again in {retry_after_secs} s")]
    UnlockThrottled {
        /// Seconds left.
        retry_after_secs: u64,
    },
    /// The OS keystore gave a key that does not open this vault.
    #[error(
        "the OS keystore's key does not open this vault (its entry was replaced, or the vault comes from another machine)"
    )]
    KeystoreMismatch,
    /// A file of the vault is damaged or was edited. Never counted as a failed unlock.
    #[error("{} is corrupt: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the slot where there is one.
        source: fieldvault_core::Error,
    },
    /// The key file belongs to another vault than the marker says.
    #[error(
        "keys.fvk belongs to vault {keyfile}, but this directory is vault {marker}: a key file was copied in from another vault"
    )]
    VaultMismatch {
        /// Id in the marker.
        marker: String,
        /// Id in the key file.
        keyfile: String,
    },
    /// `passwd` was given the passphrase in use: nothing would change, and a user who meant
    /// to change it would believe it changed.
    #[error("the new passphrase is the one in use; nothing was changed")]
    SamePassphrase,
    /// No such account in this vault.
    #[error("no account named '{0}' in this vault")]
    NoSuchAccount(String),
    /// The account already exists.
    #[error("account '{0}' already exists")]
    AccountExists(String),
    /// A database file is plain SQLite: encryption is off. Refused, never opened.
    #[error("{} is an unencrypted SQLite database; Fieldvault refuses to open it (use `fieldvault migrate --from` to import one)", path.display())]
    PlaintextDatabase {
        /// The file.
        path: PathBuf,
    },
    /// An account's database was lost outside Fieldvault: it is shorter than one page (no
    /// database is), or it is missing or empty although attachment files of the account
    /// remain. Opening would start an empty database and the attachments would be swept as
    /// orphans, and a rotation would retire the only key to a backup: nothing is done.
    #[error("{}", lost_message(path, *size, *attachments))]
    DatabaseLost {
        /// The database file.
        path: PathBuf,
        /// Its size in bytes (0 when missing).
        size: u64,
        /// Attachment files of the account found beside it.
        attachments: usize,
    },
    /// The database does not open with its key: the key is not the one it was made with,
    /// or its first page is damaged (SQLCipher cannot tell these apart).
    #[error("{} does not open with its key: it is damaged, or was encrypted under another key", path.display())]
    DatabaseKey {
        /// The file.
        path: PathBuf,
    },
    /// SQLite or SQLCipher failed (an integrity failure on a damaged page, a full disk, ...).
    #[error("database {}: {source}", path.display())]
    Database {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Not enough free disk space for the operation: nothing was changed.
    #[error("not enough free space in {}: {needed} bytes needed, {available} available; nothing was changed", path.display())]
    NoSpace {
        /// The directory.
        path: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// A document, collection name or id was refused; nothing was written.
    #[error("{0}; nothing was written")]
    InvalidDocument(String),
    /// The wrong passphrase reached the app's wipe-after-N policy: the vault was wiped.
    #[error("wrong passphrase: {failures} failed attempts reached the wipe policy, and the vault was wiped")]
    WipedAfterFailures {
        /// The failures counted.
        failures: u32,
    },
    /// A plaintext database cannot be imported as it is; nothing was written and the file
    /// is untouched.
    #[error("cannot migrate: {0}")]
    Migration(String),
    /// No such document.
    #[error("no document {id:?} in {collection}")]
    NoSuchDocument {
        /// Its collection.
        collection: String,
        /// Its id.
        id: String,
    },
    /// No attachment with this id in the account.
    #[error("no attachment {0:?}")]
    NoSuchAttachment(String),
    /// A source that cannot be attached, or an output that cannot be written; nothing was
    /// written.
    #[error("{0}; nothing was written")]
    InvalidAttachment(String),
    /// An attachment failed its checks (tampered, truncated, another attachment's file, a
    /// content key that does not unwrap). No plaintext was released.
    #[error("attachment {id}: {source}")]
    Attachment {
        /// The attachment id.
        id: String,
        /// What failed.
        source: fieldvault_core::Error,
    },
    /// An attachment another device made cannot be fetched yet: its upload has not
    /// finished, or the server does not give it to this user now. Nothing was written.
    #[error("attachment {id} cannot be downloaded yet ({reason}); try again after a sync")]
    AttachmentNotReady {
        /// The attachment id.
        id: String,
        /// Why, as the server put it.
        reason: String,
    },
    /// A server pin is not of the form `sha256/BASE64`.
    #[error("invalid pin: {0}")]
    InvalidPin(String),
    /// The session locked itself after its inactivity timeout (or was locked): unlock again.
    #[error("the vault is locked; unlock it again")]
    Locked,
    /// The account has not logged in to a sync server (`fieldvault login`).
    #[error("account {0:?} has not logged in to a server; run `fieldvault login` first")]
    NotLoggedIn(String),
    /// The server answered in a way the protocol does not allow: nothing was applied.
    #[error("the server's answer broke the protocol ({0}); nothing was changed")]
    MalformedAnswer(String),
    /// The server refused the request with a problem code (SPEC section 5, "Errors").
    #[error("the server refused: {code} (HTTP {status}): {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The stable problem code (`invalid_grant`, `rollback_detected`, ...).
        code: String,
        /// The server's explanation.
        detail: String,
    },
    /// The server has seen this account sync further than this copy of the vault: an old
    /// copy was put back. Sync stops until an online login continues as a new device.
    #[error(
        "the server has seen this account further along than this copy of the vault (an old copy was put back); log in again to continue as a new device"
    )]
    RollbackDetected,
    /// The account's offline lease has ended: its data stays encrypted on this device until
    /// a login (or a refresh) brings the lease key back.
    #[error(
        "account {0:?} is locked: its offline lease has ended; log in again to open it (its data and unsynced changes are kept)"
    )]
    LeaseExpired(String),
    /// The server's lease key does not open the account's keys here: nothing was changed.
    #[error(
        "the server's lease for account {0:?} does not open its keys on this device; nothing was changed (wipe the account to start afresh)"
    )]
    LeaseMismatch(String),
    /// Changes wait in the outbox: logging out now would lose them (pass `force`).
    #[error("{0} change(s) have not reached the server yet; sync first, or log out with --force to lose them")]
    OutboxNotEmpty(usize),
    /// The server ordered this device's account wiped: its keys and data are destroyed here.
    #[error("the server ordered account {0:?} wiped on this device: its keys and data are destroyed")]
    RemoteWipe(String),
    /// The server needs a TOTP code from the user's authenticator app to log them in
    /// (multi-factor login), and the login had none, a wrong one, or one already used. Nothing
    /// was changed: log in again with the current code.
    #[error(
        "this user logs in with a code from their authenticator app (multi-factor login): the code was missing, wrong or already used; log in again with the current code"
    )]
    MfaRequired,
    /// The session cannot be refreshed any more: log in again (local data is kept).
    #[error("the session has ended ({0}); log in again: local data and unsynced changes are kept")]
    ReauthRequired(String),
    /// The keystore refused.
    #[error(transparent)]
    Keystore(#[from] fieldvault_keystore::Error),
    /// A core rule was broken (an invalid account name, ...).
    #[error(transparent)]
    Core(#[from] fieldvault_core::Error),
    /// The file system failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "rename", ...).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An export's options were refused (an age recipient that does not parse, no recipient,
    /// a collection name, a memory-only collection); nothing was written.
    #[error("export refused: {0}; nothing was written")]
    InvalidExport(String),
    /// No identity or passphrase given opens this export (or a passphrase was given for an
    /// export made to recipients, or the other way round); nothing was imported.
    #[error("cannot open the export: {0}; nothing was imported")]
    ExportKeyRefused(String),
    /// The export is not a Fieldvault export, or is truncated, tampered with or corrupted
    /// (its age authentication or its layout failed); nothing was imported.
    #[error("the export is damaged: {0}; nothing was imported")]
    ExportDamaged(String),
    /// A newer Fieldvault made this export, in a layout this build does not read; nothing
    /// was imported.
    #[error(
        "the export uses layout version {found}; this build reads version {supported} only (update Fieldvault); nothing was imported"
    )]
    ExportNewerLayout {
        /// The export's layout version.
        found: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// The sync server's URL is not `https://HOST[:PORT]`. Plain `http://` is refused: the
    /// server is reached over pinned TLS only. The URL itself is not repeated (it may carry a
    /// password).
    #[error("the sync server URL must be https://HOST[:PORT]: {0}")]
    InvalidServerUrl(&'static str),
    /// A request cannot be sent as given (its target, key id or bearer token is not a valid
    /// header value, or the blocking transport was called inside an async runtime). Nothing
    /// was sent.
    #[error("cannot send the request: {0}; nothing was sent")]
    InvalidRequest(&'static str),
    /// No TCP connection to the sync server could be made (offline, no route, refused, or the
    /// name does not resolve). Nothing was sent.
    #[error("cannot connect to {host}:{port}: {source}")]
    ServerUnreachable {
        /// The host dialled.
        host: String,
        /// Its port.
        port: u16,
        /// What the OS said.
        source: io::Error,
    },
    /// The connection broke while a request was under way or its answer was read (offline
    /// in the middle of an exchange). The request may or may not have had its effect; its
    /// answer is lost.
    #[error("the connection to the sync server was lost: {0}")]
    ConnectionLost(String),
    /// Connecting, or the whole exchange, took longer than its bound (offline or a stalled
    /// server). The request may or may not have had its effect; its answer is lost.
    #[error("{what} timed out after {after:?}")]
    TimedOut {
        /// "connecting to the sync server" or "the request".
        what: &'static str,
        /// The bound.
        after: std::time::Duration,
    },
    /// The sync server's TLS key is not one of the pins: the handshake was refused and no
    /// byte of HTTP was sent.
    #[error(
        "the TLS key of {host}:{port} is not one of the pinned server keys; the connection was refused before any request was sent (if the server's key was rotated, add its new pin)"
    )]
    PinMismatch {
        /// The host dialled.
        host: String,
        /// Its port.
        port: u16,
    },
    /// The TLS handshake failed for another reason (the certificate does not name the host,
    /// no common protocol version, an alert). No byte of HTTP was sent.
    #[error("TLS with {host}:{port} failed: {reason}; nothing was sent")]
    Tls {
        /// The host dialled.
        host: String,
        /// Its port.
        port: u16,
        /// What rustls said.
        reason: String,
    },
    /// The answer to a signed request carries no valid response signature (missing, wrong,
    /// duplicated, or bound to another request): it was discarded and must change nothing.
    #[error("the sync server's answer (HTTP {status}) is not verified: {reason}; it was discarded")]
    ResponseNotVerified {
        /// The HTTP status it claimed.
        status: u16,
        /// What is wrong with its signature.
        reason: &'static str,
    },
    /// The server refused a signed request without signing its answer, as it does when it
    /// cannot verify the request (SPEC section 5: a key id naming no session, a signature that
    /// does not verify, a malformed or duplicated header). Not tampering, but not
    /// authenticated either: report it, act on nothing in it.
    #[error(
        "the sync server refused the request (HTTP {status} {}) without signing its answer, as it does when it cannot verify a request; nothing in the answer was used",
        code.as_str()
    )]
    UnsignedRefusal {
        /// The HTTP status.
        status: u16,
        /// The problem code the answer names.
        code: fieldvault_core::protocol::ProblemCode,
    },
    /// The server's answer breaks the protocol (a content coding, an unparsable head).
    #[error("the sync server's answer is malformed: {0}")]
    MalformedResponse(String),
    /// The server's answer is larger than the transport accepts; it was not read in full.
    #[error("the sync server's answer is larger than {limit} bytes; it was discarded")]
    ResponseTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The server answered with a redirect. Redirects are never followed (its `Location`
    /// was not used).
    #[error("the sync server answered with a redirect (HTTP {status}); redirects are never followed")]
    RedirectNotFollowed {
        /// The 3xx status.
        status: u16,
    },
    /// The transport's network runtime could not be started.
    #[error("cannot start the network runtime: {0}")]
    NetworkRuntime(io::Error),
    /// An OpenID Connect sign-in named an identity provider the server does not sign users
    /// in through.
    #[error("{}", unknown_issuer(issuer, offered))]
    UnknownIssuer {
        /// The issuer asked for.
        issuer: String,
        /// The issuers the server offers (none when it offers no OpenID Connect sign-in).
        offered: Vec<String>,
    },
    /// The identity provider refused the sign-in (the user cancelled, or may not use this
    /// client): its OAuth error code and description, provider text with control characters
    /// removed. Nothing was sent to the sync server.
    #[error("the identity provider refused the sign-in: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    SignInRefused {
        /// The OAuth error code (`access_denied`, ...).
        error: String,
        /// `error_description`, if the provider gave one.
        description: Option<String>,
    },
    /// The redirect back from the identity provider is not the answer to this sign-in (its
    /// `state` is missing or another): a stale or forged redirect. Nothing was sent.
    #[error(
        "the sign-in answer the browser brought back does not belong to this sign-in (its state does not match); nothing was sent to the server: start the sign-in again"
    )]
    SignInMismatch,
    /// The redirect back from the identity provider cannot be used. Nothing was sent.
    #[error("the identity provider's answer cannot be used: {0}; nothing was sent to the server")]
    SignInMalformed(&'static str),
    /// No redirect came back from the browser in time.
    #[error("no sign-in came back from the browser within {} s; nothing was changed: start the sign-in again", after.as_secs())]
    SignInTimedOut {
        /// How long the device waited.
        after: std::time::Duration,
    },
    /// The loopback listener for the browser's redirect could not be opened or failed.
    #[error("cannot listen on 127.0.0.1 for the browser's sign-in: {0}")]
    RedirectListener(io::Error),
}

fn unknown_issuer(issuer: &str, offered: &[String]) -> String {
    if offered.is_empty() {
        format!("the server offers no sign-in through an identity provider (asked for {issuer})")
    } else {
        format!("the server does not sign users in through {issuer}; it offers: {}", offered.join(", "))
    }
}

fn not_a_vault(dir: &std::path::Path, missing: bool) -> String {
    if missing {
        format!("there is no vault at {} (the directory does not exist); `fieldvault init` makes one", dir.display())
    } else {
        format!("{} is not a Fieldvault vault (no vault.fv or keys.fvk in it)", dir.display())
    }
}

fn wait_note(secs: u64) -> String {
    if secs == 0 { String::new() } else { format!("; next attempt allowed in {secs} s") }
}

fn lost_message(path: &std::path::Path, size: u64, attachments: usize) -> String {
    let what = match size {
        0 => "missing or empty".to_owned(),
        n => format!("truncated ({n} bytes, shorter than one database page)"),
    };
    let remain = match attachments {
        0 => String::new(),
        n => format!(", but {n} attachment file(s) of this account remain"),
    };
    format!(
        "{} is {what}{remain}: the vault is damaged; nothing was changed (restore the database from a backup, or wipe the account)",
        path.display()
    )
}
