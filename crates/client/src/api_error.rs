//! The SDK's public error: what an app can do about a failure, with nothing personal in it.
//!
//! [`Error`] states facts (68 of them, with paths, ids and server text for the log of the
//! person who debugs). An app's code acts on few outcomes, and its users' data must not
//! travel into crash reports: [`ApiError`] is that short list, converted from [`Error`] in
//! one place ([`From<Error>`]), and carrying only numbers and fixed words.

use std::fmt;

use crate::Error;

/// What went wrong, by what the app does about it (docs/sdk.md, section 3).
///
/// No variant carries a path, a document id or body, a user or account name, server text,
/// a passphrase or key bytes: `Debug` and `Display` are safe to log and to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// The vault or session is locked (an idle lock, `lock()`): unlock again.
    Locked,
    /// Another process or handle holds the vault: close it there, or try again later.
    InUse,
    /// The passphrase (or recovery key) is wrong; counted. The next attempt is allowed
    /// after `retry_after_secs` (0: at once).
    WrongPassphrase {
        /// Seconds before the next attempt is allowed.
        retry_after_secs: u64,
    },
    /// Too many attempts: wait `retry_after_secs` (0 when the server did not say).
    Throttled {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// The user cancelled the keystore's prompt (biometric or device credential): nothing
    /// changed; offer to try again.
    Cancelled,
    /// The keystore cannot give the vault's key (its entry is gone or replaced, the store
    /// is unavailable): recover with the recovery key.
    KeyUnavailable,
    /// Stored or received bytes failed their checks (a damaged or edited file, a tampered
    /// or unsigned answer, a server key that is not pinned): nothing of it was used. Report
    /// it; do not retry in a loop.
    Tampered,
    /// What was asked for does not exist (`what`: "vault", "account", "document",
    /// "attachment", "attachment bytes yet").
    NotFound {
        /// Which kind of thing.
        what: &'static str,
    },
    /// The call's input was refused; nothing was written (`what` names the input:
    /// "document", "collection or id", "server URL", "passphrase", ...).
    Invalid {
        /// Which input.
        what: &'static str,
    },
    /// Not enough free disk space; nothing was changed.
    NoSpace,
    /// The server cannot be reached now, or failed for a while: pending changes stay
    /// queued; retry later (`retry_delay`).
    Offline,
    /// The request conflicts with the vault's state: changes wait in the outbox (sync
    /// first, or force), or the account holds another user's data.
    Conflict,
    /// The user must log in (again): never logged in, session ended, offline lease over,
    /// a second factor needed, an old copy of the vault put back. Local data is kept.
    AuthRequired,
    /// The account's data was wiped (ordered by the server, by the wrong-passphrase policy,
    /// or its keys deleted): back to the start screen.
    Wiped,
    /// A fault the app cannot act on (an OS or database failure): report it.
    Internal,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Locked => f.write_str("the vault is locked; unlock it again"),
            ApiError::InUse => f.write_str("the vault is open in another process or handle; close it there first"),
            ApiError::WrongPassphrase { retry_after_secs: 0 } => f.write_str("wrong passphrase"),
            ApiError::WrongPassphrase { retry_after_secs } => {
                write!(f, "wrong passphrase; next attempt allowed in {retry_after_secs} s")
            }
            ApiError::Throttled { retry_after_secs } => {
                write!(f, "too many attempts; try again in {retry_after_secs} s")
            }
            ApiError::Cancelled => f.write_str("the keystore prompt was cancelled; nothing was changed"),
            ApiError::KeyUnavailable => {
                f.write_str("the keystore cannot give this vault's key; recover the vault with its recovery key")
            }
            ApiError::Tampered => f.write_str("data failed its integrity checks; nothing of it was used"),
            ApiError::NotFound { what } => write!(f, "no such {what}"),
            ApiError::Invalid { what } => write!(f, "invalid {what}; nothing was written"),
            ApiError::NoSpace => f.write_str("not enough free disk space; nothing was changed"),
            ApiError::Offline => f.write_str("the sync server cannot be reached now; changes stay queued, try later"),
            ApiError::Conflict => f.write_str("the request conflicts with the vault's state; nothing was changed"),
            ApiError::AuthRequired => f.write_str("log in again; local data and unsynced changes are kept"),
            ApiError::Wiped => f.write_str("the account's data was wiped on this device"),
            ApiError::Internal => f.write_str("internal error (an OS or database failure); nothing was changed"),
        }
    }
}

impl std::error::Error for ApiError {}

/// ENOSPC on Linux and the BSDs (Android, iOS, macOS).
const ENOSPC: i32 = 28;

impl From<Error> for ApiError {
    /// The one conversion. Exhaustive on purpose: a new [`Error`] variant must be placed here.
    fn from(e: Error) -> Self {
        use ApiError as A;
        let invalid = |what| A::Invalid { what };
        let not_found = |what| A::NotFound { what };
        match e {
            Error::Locked => A::Locked,
            Error::InUse { .. } => A::InUse,
            Error::WrongPassphrase { retry_after_secs, .. } | Error::WrongRecoveryKey { retry_after_secs, .. } => {
                A::WrongPassphrase { retry_after_secs }
            }
            Error::UnlockThrottled { retry_after_secs } => A::Throttled { retry_after_secs },
            Error::KeystoreMismatch => A::KeyUnavailable,
            Error::Keystore(k) => keystore(k),
            Error::Core(c) => core(c),
            Error::NotAVault { .. } => not_found("vault"),
            Error::NoSuchAccount(_) => not_found("account"),
            Error::NoSuchDocument { .. } => not_found("document"),
            Error::NoSuchAttachment(_) => not_found("attachment"),
            Error::AttachmentNotReady { .. } => not_found("attachment bytes yet"),
            Error::NoRecoveryKey => not_found("recovery key"),
            Error::AlreadyAVault { .. } | Error::NotEmpty { .. } => invalid("vault directory"),
            Error::AccountExists(_) => invalid("account name (it exists)"),
            Error::InvalidDocument(_) => invalid("document"),
            Error::InvalidAttachment(_) => invalid("attachment source or output"),
            Error::InvalidPin(_) => invalid("pin"),
            Error::SamePassphrase => invalid("new passphrase (it is the one in use)"),
            Error::InvalidExport(_) => invalid("export options"),
            Error::ExportKeyRefused(_) => invalid("export key"),
            Error::ExportNewerLayout { .. } => invalid("export (made by a newer Fieldvault)"),
            Error::InvalidServerUrl(_) => invalid("server URL"),
            Error::InvalidRequest(_) => invalid("request"),
            Error::Migration(_) => invalid("database to migrate"),
            Error::UnknownIssuer { .. } => invalid("identity provider"),
            Error::SignInMismatch | Error::SignInMalformed(_) => invalid("sign-in answer"),
            Error::LoosePermissions { .. } | Error::NotOwned { .. } | Error::UnexpectedFileType { .. } => {
                invalid("vault file permissions or owner")
            }
            Error::Corrupt { .. }
            | Error::VaultMismatch { .. }
            | Error::PlaintextDatabase { .. }
            | Error::DatabaseLost { .. }
            | Error::DatabaseKey { .. }
            | Error::Attachment { .. }
            | Error::MalformedAnswer(_)
            | Error::ResponseNotVerified { .. }
            | Error::UnsignedRefusal { .. }
            | Error::MalformedResponse(_)
            | Error::ResponseTooLarge { .. }
            | Error::RedirectNotFollowed { .. }
            | Error::PinMismatch { .. }
            | Error::Tls { .. }
            | Error::ExportDamaged(_) => A::Tampered,
            Error::NoSpace { .. } => A::NoSpace,
            Error::Io { source, .. } if source.raw_os_error() == Some(ENOSPC) => A::NoSpace,
            Error::Database { source, .. } if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) => {
                A::NoSpace
            }
            Error::ServerUnreachable { .. } | Error::ConnectionLost(_) | Error::TimedOut { .. } => A::Offline,
            Error::Refused { status: 429, .. } => A::Throttled { retry_after_secs: 0 },
            Error::Refused { status, ref code, .. } if status == 401 || code == "invalid_grant" => A::AuthRequired,
            Error::Refused { status, ref code, .. }
                if status >= 500 || (status == 409 && code != "rollback_detected") =>
            {
                if code == "account_in_use" {
                    A::Conflict
                } else {
                    A::Offline
                }
            }
            Error::Refused { ref code, .. } if code == "rollback_detected" => A::AuthRequired,
            Error::Refused { .. } => A::Invalid { what: "request (the server refused it)" },
            Error::OutboxNotEmpty(_) => A::Conflict,
            Error::NotLoggedIn(_)
            | Error::ReauthRequired(_)
            | Error::LeaseExpired(_)
            | Error::LeaseMismatch(_)
            | Error::RollbackDetected
            | Error::MfaRequired
            | Error::SignInRefused { .. } => A::AuthRequired,
            Error::SignInTimedOut { .. } => A::Cancelled,
            Error::RemoteWipe(_) | Error::WipedAfterFailures { .. } | Error::KeysGone { .. } => A::Wiped,
            Error::Io { .. } | Error::Database { .. } | Error::NetworkRuntime(_) | Error::RedirectListener(_) => {
                A::Internal
            }
        }
    }
}

fn keystore(e: fieldvault_keystore::Error) -> ApiError {
    use fieldvault_keystore::Error as K;
    match e {
        K::Cancelled => ApiError::Cancelled,
        K::WeakPassphrase { .. } => ApiError::Invalid { what: "passphrase (too weak)" },
        K::WrongKind { .. } => ApiError::Invalid { what: "keystore (the vault uses another kind)" },
        K::Core(c) => core(c),
        _ => ApiError::KeyUnavailable,
    }
}

fn core(e: fieldvault_core::Error) -> ApiError {
    use fieldvault_core::Error as C;
    match e {
        C::AccountName { .. } => ApiError::Invalid { what: "account name" },
        C::RecoveryKeyFormat { .. } => ApiError::Invalid { what: "recovery key (mistyped)" },
        C::KdfParams(_) => ApiError::Invalid { what: "passphrase parameters" },
        C::Io { .. } => ApiError::Internal,
        _ => ApiError::Tampered,
    }
}
