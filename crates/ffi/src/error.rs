use std::fmt;

use fieldvault_client::ApiError;

/// What went wrong, by what the app does about it: `fieldvault_client::ApiError` for the
/// bindings (docs/sdk.md, section 3), plus [`FieldvaultError::Closed`]. Carries no path, id,
/// name, document content, passphrase or key.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
#[non_exhaustive]
pub enum FieldvaultError {
    /// The vault is locked (idle lock, `lock()`): unlock again.
    Locked,
    /// This object was closed: its keys are gone; open the vault again.
    Closed,
    /// Another process or handle holds the vault.
    InUse,
    /// Wrong passphrase; the next attempt is allowed after `retry_after_secs`.
    WrongPassphrase {
        /// Seconds before the next attempt.
        retry_after_secs: u64,
    },
    /// Too many attempts: wait `retry_after_secs` (0: not said).
    Throttled {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// The user cancelled the keystore prompt; nothing changed.
    Cancelled,
    /// The keystore cannot give the vault's key: recover with the recovery key.
    KeyUnavailable,
    /// Data failed its integrity checks; nothing of it was used.
    Tampered,
    /// No such thing (`what`: vault, account, document, attachment, ...).
    NotFound {
        /// Which kind of thing.
        what: String,
    },
    /// The input was refused; nothing was written (`what` names the input).
    Invalid {
        /// Which input.
        what: String,
    },
    /// Not enough disk space; nothing changed.
    NoSpace,
    /// The server cannot be reached now: retry later; changes stay queued.
    Offline,
    /// The request conflicts with the vault's state (changes wait in the outbox, ...).
    Conflict,
    /// The user must log in (again); local data is kept.
    AuthRequired,
    /// The account's data was wiped on this device.
    Wiped,
    /// An OS or database failure, or a callback that failed: report it.
    Internal,
}

impl fmt::Display for FieldvaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldvaultError::Closed => f.write_str("this vault object was closed; open the vault again"),
            FieldvaultError::NotFound { what } => write!(f, "no such {what}"),
            FieldvaultError::Invalid { what } => write!(f, "invalid {what}; nothing was written"),
            other => match other.to_api() {
                Some(api) => api.fmt(f),
                None => f.write_str("internal error"),
            },
        }
    }
}

impl std::error::Error for FieldvaultError {}

impl FieldvaultError {
    fn to_api(&self) -> Option<ApiError> {
        Some(match self {
            FieldvaultError::Locked => ApiError::Locked,
            FieldvaultError::InUse => ApiError::InUse,
            FieldvaultError::WrongPassphrase { retry_after_secs } => {
                ApiError::WrongPassphrase { retry_after_secs: *retry_after_secs }
            }
            FieldvaultError::Throttled { retry_after_secs } => {
                ApiError::Throttled { retry_after_secs: *retry_after_secs }
            }
            FieldvaultError::Cancelled => ApiError::Cancelled,
            FieldvaultError::KeyUnavailable => ApiError::KeyUnavailable,
            FieldvaultError::Tampered => ApiError::Tampered,
            FieldvaultError::NoSpace => ApiError::NoSpace,
            FieldvaultError::Offline => ApiError::Offline,
            FieldvaultError::Conflict => ApiError::Conflict,
            FieldvaultError::AuthRequired => ApiError::AuthRequired,
            FieldvaultError::Wiped => ApiError::Wiped,
            FieldvaultError::Internal => ApiError::Internal,
            FieldvaultError::Closed | FieldvaultError::NotFound { .. } | FieldvaultError::Invalid { .. } => {
                return None;
            }
        })
    }
}

impl From<ApiError> for FieldvaultError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Locked => FieldvaultError::Locked,
            ApiError::InUse => FieldvaultError::InUse,
            ApiError::WrongPassphrase { retry_after_secs } => FieldvaultError::WrongPassphrase { retry_after_secs },
            ApiError::Throttled { retry_after_secs } => FieldvaultError::Throttled { retry_after_secs },
            ApiError::Cancelled => FieldvaultError::Cancelled,
            ApiError::KeyUnavailable => FieldvaultError::KeyUnavailable,
            ApiError::Tampered => FieldvaultError::Tampered,
            ApiError::NotFound { what } => FieldvaultError::NotFound { what: what.into() },
            ApiError::Invalid { what } => FieldvaultError::Invalid { what: what.into() },
            ApiError::NoSpace => FieldvaultError::NoSpace,
            ApiError::Offline => FieldvaultError::Offline,
            ApiError::Conflict => FieldvaultError::Conflict,
            ApiError::AuthRequired => FieldvaultError::AuthRequired,
            ApiError::Wiped => FieldvaultError::Wiped,
            _ => FieldvaultError::Internal,
        }
    }
}

impl From<fieldvault_client::Error> for FieldvaultError {
    fn from(e: fieldvault_client::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<fieldvault_core::Error> for FieldvaultError {
    fn from(e: fieldvault_core::Error) -> Self {
        fieldvault_client::Error::Core(e).into()
    }
}
