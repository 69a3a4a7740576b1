use thiserror::Error;

/// What a keystore can refuse.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The new passphrase is too easy to guess.
    #[error("passphrase too weak (strength {score} of 4, at least 3 needed){hint}")]
    WeakPassphrase {
        /// zxcvbn's score, 0 to 4.
        score: u8,
        /// zxcvbn's advice, prefixed with ": " when there is any.
        hint: String,
    },
    /// The vault was made with another kind of store.
    #[error("this vault uses the {vault_uses} keystore, not the {offered} keystore")]
    WrongKind {
        /// The kind recorded in the key file.
        vault_uses: &'static str,
        /// The kind offered.
        offered: &'static str,
    },
    /// The OS keystore is not available on this machine.
    #[error("the OS keystore is not available: {0}")]
    Unavailable(String),
    /// The keystore answered but holds no key for this vault.
    #[error(
        "the keystore holds no key for vault {vault}: it was deleted, or this vault was copied from another machine"
    )]
    NoEntry {
        /// The vault id, hex.
        vault: String,
    },
    /// The user cancelled the keystore's prompt (biometric or device credential).
    #[error("the keystore prompt was cancelled; nothing was changed")]
    Cancelled,
    /// The OS keystore failed.
    #[error("the OS keystore failed: {0}")]
    Os(String),
    /// A core check failed (Argon2id parameters).
    #[error(transparent)]
    Core(#[from] fieldvault_core::Error),
}
