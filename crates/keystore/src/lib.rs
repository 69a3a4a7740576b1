//! Where the keystore key (KEK) that wraps a vault's master key comes from.
//!
//! - [`OsStore`]: a random KEK kept in the OS keystore (Secret Service on a Linux desktop,
//!   through `keyring-core`), one entry per vault.
//! - [`PassphraseStore`]: KEK = Argon2id(passphrase, salt). The only store a headless
//!   machine has. New passphrases scoring below 3 on zxcvbn are refused.
//! - [`MemoryStore`]: a process-local map, for tests.
//! - [`HostStore`]: the keystore an app supplies ([`HostKeystore`]: Android Keystore, iOS
//!   Keychain), which releases the KEK only after a user-presence prompt.
//!
//! A store only produces the KEK. The wrapped master key and the store's parameters
//! (Argon2id cost, salt) live together in the vault's key file, written atomically by
//! `fieldvault-client`.
//!
//! ```
//! use fieldvault_core::VaultId;
//! use fieldvault_keystore::{KeyStore, MemoryStore};
//!
//! let store = MemoryStore::default();
//! let vault = VaultId::from_bytes([1; 16]);
//! let (kek, params) = store.create(&vault).expect("memory store always answers");
//! let again = store.kek(&vault, &params).expect("same vault");
//! assert_eq!(kek.canary(), again.canary());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod host;
mod memory;
mod os;
mod passphrase;

pub use error::Error;
pub use host::{HostKeystore, HostKeystoreError, HostStore};
pub use memory::MemoryStore;
pub use os::OsStore;
pub use passphrase::{MIN_PASSPHRASE_SCORE, PassphraseStore, passphrase_strength};

use fieldvault_core::{Kek, KeystoreKind, KeystoreParams, VaultId};

/// A source of keystore keys.
pub trait KeyStore: Send + Sync {
    /// Which kind of store this is (recorded in the key file).
    fn kind(&self) -> KeystoreKind;

    /// Makes a fresh KEK for `vault` and returns it with the parameters the key file must
    /// record to get it back.
    ///
    /// # Errors
    /// [`Error::WeakPassphrase`] (passphrase store), [`Error::Os`] (the OS keystore refused).
    fn create(&self, vault: &VaultId) -> Result<(Kek, KeystoreParams), Error>;

    /// Gets the KEK back from the recorded parameters.
    ///
    /// # Errors
    /// [`Error::WrongKind`] if `params` belong to another kind of store; [`Error::NoEntry`]
    /// if the OS keystore has no key for this vault. A wrong passphrase is not detected here:
    /// it yields a KEK whose canary does not match, which the key file's reader reports.
    fn kek(&self, vault: &VaultId, params: &KeystoreParams) -> Result<Kek, Error>;

    /// Removes what the store holds for `vault` (the OS keystore entry). Absent is fine.
    fn destroy(&self, vault: &VaultId) -> Result<(), Error>;
}

/// 32 bytes from the operating system's CSPRNG.
pub(crate) fn random_key() -> zeroize::Zeroizing<[u8; fieldvault_core::KEY_LEN]> {
    let mut k = zeroize::Zeroizing::new([0u8; fieldvault_core::KEY_LEN]);
    aws_lc_rs::rand::fill(k.as_mut()).expect("the OS random number generator does not fail");
    k
}

fn expect_kind(params: &KeystoreParams, want: KeystoreKind) -> Result<(), Error> {
    if params.kind() == want {
        Ok(())
    } else {
        Err(Error::WrongKind { vault_uses: params.kind().name(), offered: want.name() })
    }
}
