use std::collections::HashMap;
use std::sync::Mutex;

use fieldvault_core::{Kek, KeystoreKind, KeystoreParams, VaultId};
use zeroize::Zeroizing;

use crate::{Error, KeyStore, expect_kind, random_key};

/// A process-local keystore for tests: KEKs live in a map and die with the process.
#[derive(Default)]
pub struct MemoryStore {
    keys: Mutex<HashMap<VaultId, Zeroizing<[u8; 32]>>>,
}

impl MemoryStore {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<VaultId, Zeroizing<[u8; 32]>>> {
        // A panic while holding the lock cannot leave the map half-updated: every
        // operation is a single insert, get or remove.
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl KeyStore for MemoryStore {
    fn kind(&self) -> KeystoreKind {
        KeystoreKind::Memory
    }

    fn create(&self, vault: &VaultId) -> Result<(Kek, KeystoreParams), Error> {
        let k = random_key();
        self.keys().insert(*vault, k.clone());
        Ok((Kek::from_bytes(k), KeystoreParams::Memory))
    }

    fn kek(&self, vault: &VaultId, params: &KeystoreParams) -> Result<Kek, Error> {
        expect_kind(params, KeystoreKind::Memory)?;
        let keys = self.keys();
        let k = keys.get(vault).ok_or_else(|| Error::NoEntry { vault: vault.to_hex() })?;
        Ok(Kek::from_bytes(k.clone()))
    }

    fn destroy(&self, vault: &VaultId) -> Result<(), Error> {
        self.keys().remove(vault);
        Ok(())
    }
}
