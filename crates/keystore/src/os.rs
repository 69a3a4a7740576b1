use std::sync::Arc;

use fieldvault_core::{KEY_LEN, Kek, KeystoreKind, KeystoreParams, VaultId};
use keyring_core::{CredentialStore, Entry};
use zeroize::Zeroizing;

use crate::{Error, KeyStore, expect_kind, random_key};

/// Service name of every Fieldvault entry; the entry's user is the vault id in hex.
const SERVICE: &str = "fieldvault";

/// A random KEK kept in the OS keystore, one entry per vault.
///
/// On Linux the platform store is the desktop's Secret Service over D-Bus; headless
/// machines have none, and [`OsStore::platform`] says so.
pub struct OsStore {
    store: Arc<CredentialStore>,
}

impl OsStore {
    /// Uses any `keyring-core` credential store (the platform's, or the crate's own mock
    /// store in tests).
    pub fn with_store(store: Arc<CredentialStore>) -> Self {
        Self { store }
    }

    /// Connects to this platform's keystore and checks that it answers by writing,
    /// reading and deleting a probe entry.
    ///
    /// # Errors
    /// [`Error::Unavailable`] with the platform's reason (no D-Bus session, no Secret
    /// Service, locked collection, unsupported platform).
    pub fn platform() -> Result<Self, Error> {
        let store = platform_store()?;
        let s = Self { store };
        s.probe().map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(s)
    }

    fn probe(&self) -> Result<(), keyring_core::Error> {
        let entry = Entry::new_in_store(&self.store, SERVICE, "probe")?;
        entry.set_secret(b"fieldvault keystore probe")?;
        let back = entry.get_secret()?;
        entry.delete_credential()?;
        if back != b"fieldvault keystore probe" {
            return Err(keyring_core::Error::Invalid("probe".into(), "read back different bytes".into()));
        }
        Ok(())
    }

    fn entry(&self, vault: &VaultId) -> Result<Entry, Error> {
        Entry::new_in_store(&self.store, SERVICE, &vault.to_hex()).map_err(|e| Error::Os(e.to_string()))
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<Arc<CredentialStore>, Error> {
    let store: Arc<CredentialStore> =
        dbus_secret_service_keyring_store::Store::new().map_err(|e| Error::Unavailable(e.to_string()))?;
    Ok(store)
}

#[cfg(not(target_os = "linux"))]
fn platform_store() -> Result<Arc<CredentialStore>, Error> {
    Err(Error::Unavailable("no OS keystore is wired up for this platform yet".into()))
}

impl KeyStore for OsStore {
    fn kind(&self) -> KeystoreKind {
        KeystoreKind::Os
    }

    fn create(&self, vault: &VaultId) -> Result<(Kek, KeystoreParams), Error> {
        let k = random_key();
        let entry = self.entry(vault)?;
        entry.set_secret(k.as_ref()).map_err(|e| Error::Os(e.to_string()))?;
        // Read it back: a store that accepts writes and loses them would lose the vault.
        let back = Zeroizing::new(entry.get_secret().map_err(|e| Error::Os(e.to_string()))?);
        if back.as_slice() != k.as_slice() {
            return Err(Error::Os("the keystore returned different bytes than were stored".into()));
        }
        Ok((Kek::from_bytes(k), KeystoreParams::Os))
    }

    fn kek(&self, vault: &VaultId, params: &KeystoreParams) -> Result<Kek, Error> {
        expect_kind(params, KeystoreKind::Os)?;
        let secret = match self.entry(vault)?.get_secret() {
            Ok(s) => Zeroizing::new(s),
            Err(keyring_core::Error::NoEntry) => {
                return Err(Error::NoEntry { vault: vault.to_hex() });
            }
            Err(e) => return Err(Error::Os(e.to_string())),
        };
        let bytes: [u8; KEY_LEN] = secret
            .as_slice()
            .try_into()
            .map_err(|_| Error::Os(format!("the keystore entry for vault {vault} is not a 32-byte key")))?;
        Ok(Kek::from_bytes(Zeroizing::new(bytes)))
    }

    fn destroy(&self, vault: &VaultId) -> Result<(), Error> {
        match self.entry(vault)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(Error::Os(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // keyring-core's own in-memory credential store stands in for the desktop keystore,
    // which needs a D-Bus session this machine does not have.
    fn store() -> OsStore {
        OsStore::with_store(keyring_core::mock::Store::new().expect("mock store"))
    }

    #[test]
    fn os_store_keeps_one_kek_per_vault_and_forgets_it_on_destroy() {
        let s = store();
        let (a, b) = (VaultId::from_bytes([1; 16]), VaultId::from_bytes([2; 16]));
        let (ka, pa) = s.create(&a).expect("create a");
        let (kb, _) = s.create(&b).expect("create b");
        assert_ne!(ka.canary(), kb.canary());
        assert_eq!(s.kek(&a, &pa).expect("a").canary(), ka.canary());
        s.destroy(&a).expect("destroy");
        assert!(matches!(s.kek(&a, &pa), Err(Error::NoEntry { .. })));
        s.destroy(&a).expect("destroying twice is fine");
    }
}
