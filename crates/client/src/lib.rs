//! The Fieldvault SDK: the encrypted vault on the device.
//!
//! Map of the main types:
//! - [`Vault`]: a vault directory, opened and checked but locked (no key in memory).
//! - [`Unlocked`]: the key hierarchy in memory: the master key and every account's data
//!   keys, zeroized on drop. Rotation, account management, documents ([`Documents`]),
//!   attachments, migration and `verify` hang off it; [`Session`] locks it after a time
//!   without use.
//! - [`RecoveryKey`]: the key a person writes down at `init`
//!   ([`Vault::init_with_recovery_key`], [`Unlocked::new_recovery_key`]) to get back in with
//!   [`Vault::recover`] when the keystore entry is lost or the passphrase forgotten.
//! - [`Error`]: what can go wrong, one fact per variant; [`ApiError`]: the same by what an
//!   app does about it (a few coarse variants, nothing personal in them).
//! - [`HostKeystore`]: the keystore an app supplies (Android Keystore, iOS Keychain), with
//!   a user-presence prompt; [`HostStore`] makes it a vault's keystore.
//!
//! ```
//! use fieldvault_client::Vault;
//! use fieldvault_core::{AccountName, Purpose};
//! use fieldvault_keystore::MemoryStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = MemoryStore::default();
//! let account = AccountName::new("alice")?;
//! let vault = Vault::init(&dir.path().join("v"), &store, &account)?;
//! let db_key_canary = vault.data_key(&account, Purpose::Database)?.canary();
//! let locked = vault.lock(); // every key zeroized
//! drop(locked);
//! let again = Vault::open(&dir.path().join("v"))?.unlock(&store)?;
//! assert_eq!(again.data_key(&account, Purpose::Database)?.canary(), db_key_canary);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api_error;
mod attachments;
mod changes;
mod database;
mod disk;
mod documents;
mod error;
mod export;
mod keys;
mod migrate;
mod pinning;
mod recovery;
mod rotation;
mod session;
mod store;
mod sync;
mod transport;
mod vault;

#[cfg(test)]
mod crash_tests;

pub use api_error::ApiError;
pub use attachments::{Attachment, Progress};
pub use changes::{ChangeKind, DocumentChange, SubscriptionId, Watch};
pub use documents::{
    Document, Documents, MAX_DOCUMENT_BYTES, MAX_ID_BYTES, Page, check_collection, check_id, parse_body,
};
pub use error::Error;
pub use export::{DocRef, ExportOptions, ExportReport, ExportTo, ImportKey, ImportReport, read_identities};
pub use fieldvault_core::RecoveryKey;
pub use fieldvault_keystore::{HostKeystore, HostKeystoreError, HostStore};
pub use keys::{Parked, UnlockPolicy, Unlocked};
pub use migrate::{KeptAsText, Migration};
pub use pinning::{PinnedVerifier, Pins, pinned_client_config};
pub use session::{DEFAULT_IDLE_TIMEOUT, Session};
pub use store::{Finding, Report};
pub use sync::client::{Identity, SyncReport, SyncStatus, SyncTarget, probe};
pub use sync::conflicts::{Conflict, ConflictPolicy, Keep, MergeFn, Rejected};
pub use sync::engine::PushSummary;
pub use sync::login::{LoginOptions, LoginSummary};
pub use sync::logout::{LogoutNotice, OwedLogoutInfo};
pub use sync::oidc::{OidcLogin, OidcLoginOptions};
pub use sync::outbox::OutboxEntry;
pub use sync::retry::{FIRST_RETRY, MAX_RETRY, retry_delay};
pub use sync::transfer::TransferReport;
pub use transport::{Auth, CONNECT_TIMEOUT, MAX_RESPONSE_BYTES, Method, REQUEST_TIMEOUT, Request, Response, Transport};
pub use vault::{KeyStatus, RecoveryStatus, Status, Vault, WipeReport};

/// `N` bytes from the OS CSPRNG (nonces, ids).
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("the OS random number generator does not fail");
    b
}

/// A fresh 256-bit key from the OS CSPRNG.
pub(crate) fn random_key() -> zeroize::Zeroizing<[u8; fieldvault_core::KEY_LEN]> {
    let mut k = zeroize::Zeroizing::new([0u8; fieldvault_core::KEY_LEN]);
    aws_lc_rs::rand::fill(k.as_mut()).expect("the OS random number generator does not fail");
    k
}

/// The benchmark's baseline: the same document code on plain SQLite. Only with the
/// `bench-baseline` feature; never part of a product build.
#[cfg(feature = "bench-baseline")]
#[doc(hidden)]
pub mod bench_baseline {
    use std::path::Path;

    use fieldvault_core::DataKey;

    use crate::documents::{AccountDb, Documents};
    use crate::{Error, database};

    /// A database opened outside a vault: encrypted with `key`, or plain with `None`.
    pub struct BenchDb(AccountDb);

    impl BenchDb {
        /// Opens (creating) the database at `path`.
        pub fn open(path: &Path, key: Option<&DataKey>) -> Result<Self, Error> {
            let conn = match key {
                Some(k) => database::open(path, k)?,
                None => database::open_plain_baseline(path)?,
            };
            Ok(BenchDb(AccountDb::new(conn, path.to_path_buf())?))
        }

        /// Its documents, through the same code the vault uses.
        pub fn documents(&mut self) -> Documents<'_> {
            Documents { db: &mut self.0 }
        }
    }
}
