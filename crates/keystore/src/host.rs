use fieldvault_core::{KEY_LEN, Kek, KeystoreKind, KeystoreParams, VaultId};
use zeroize::Zeroizing;

use crate::{Error, KeyStore, expect_kind, random_key};

/// What an app's keystore can answer instead of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostKeystoreError {
    /// The user cancelled the prompt (biometric or device credential) or it timed out.
    Cancelled,
    /// The keystore holds no entry of that name.
    NotFound,
    /// The keystore failed (no secure hardware, the entry was invalidated by a new
    /// fingerprint, ...). The text is the app's and must name no secret.
    Failed(String),
}

/// The keystore an app supplies: Android Keystore, iOS Keychain, or a desktop app's own.
///
/// The SDK gives it one random 32-byte secret per vault, under an entry named after the
/// vault id, and asks for it back at each unlock.
///
/// # Security
/// `load` must release the secret only after the OS has verified that the user is present
/// (Android: a key with `setUserAuthenticationRequired(true)` that wraps the secret, released
/// through `BiometricPrompt`; iOS: a Keychain item with `SecAccessControl` `.userPresence`).
/// A cancelled prompt is [`HostKeystoreError::Cancelled`], never an empty secret. The SDK
/// checks the secret against the vault's key file: a wrong one opens nothing.
pub trait HostKeystore: Send + Sync {
    /// Keeps `secret` under `entry`, replacing any earlier one.
    ///
    /// # Errors
    /// What the keystore answers.
    fn store(&self, entry: &str, secret: &[u8]) -> Result<(), HostKeystoreError>;

    /// Gives the secret under `entry` back, after the user-presence prompt.
    ///
    /// # Errors
    /// [`HostKeystoreError::Cancelled`] when the user cancelled the prompt,
    /// [`HostKeystoreError::NotFound`] when there is no such entry.
    fn load(&self, entry: &str) -> Result<Zeroizing<Vec<u8>>, HostKeystoreError>;

    /// Removes `entry`; absent is fine.
    ///
    /// # Errors
    /// What the keystore answers.
    fn delete(&self, entry: &str) -> Result<(), HostKeystoreError>;
}

/// A [`KeyStore`] over an app's [`HostKeystore`]. Recorded in the key file as the OS
/// keystore (`os`): the host keystore is the operating system's.
pub struct HostStore<H: HostKeystore> {
    host: H,
}

impl<H: HostKeystore> HostStore<H> {
    /// Uses the app's keystore.
    pub fn new(host: H) -> Self {
        Self { host }
    }
}

fn entry(vault: &VaultId) -> String {
    format!("fieldvault-{}", vault.to_hex())
}

impl From<HostKeystoreError> for Error {
    fn from(e: HostKeystoreError) -> Self {
        match e {
            HostKeystoreError::Cancelled => Error::Cancelled,
            HostKeystoreError::NotFound => Error::Os("the app's keystore has no entry for this vault".into()),
            HostKeystoreError::Failed(why) => Error::Os(why),
        }
    }
}

impl<H: HostKeystore> KeyStore for HostStore<H> {
    fn kind(&self) -> KeystoreKind {
        KeystoreKind::Os
    }

    fn create(&self, vault: &VaultId) -> Result<(Kek, KeystoreParams), Error> {
        let k = random_key();
        self.host.store(&entry(vault), k.as_ref())?;
        Ok((Kek::from_bytes(k), KeystoreParams::Os))
    }

    fn kek(&self, vault: &VaultId, params: &KeystoreParams) -> Result<Kek, Error> {
        expect_kind(params, KeystoreKind::Os)?;
        let secret = match self.host.load(&entry(vault)) {
            Ok(s) => s,
            Err(HostKeystoreError::NotFound) => return Err(Error::NoEntry { vault: vault.to_hex() }),
            Err(e) => return Err(e.into()),
        };
        let bytes: [u8; KEY_LEN] = secret
            .as_slice()
            .try_into()
            .map_err(|_| Error::Os(format!("the app's keystore gave {} bytes, not the 32-byte key", secret.len())))?;
        Ok(Kek::from_bytes(Zeroizing::new(bytes)))
    }

    fn destroy(&self, vault: &VaultId) -> Result<(), Error> {
        match self.host.delete(&entry(vault)) {
            Ok(()) | Err(HostKeystoreError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// Refuses its first `load` as a cancelled prompt would, then allows.
    #[derive(Default)]
    struct Prompting {
        entries: Mutex<HashMap<String, Vec<u8>>>,
        cancel_next: Mutex<bool>,
    }

    impl HostKeystore for Prompting {
        fn store(&self, entry: &str, secret: &[u8]) -> Result<(), HostKeystoreError> {
            self.entries.lock().expect("lock").insert(entry.into(), secret.into());
            Ok(())
        }
        fn load(&self, entry: &str) -> Result<Zeroizing<Vec<u8>>, HostKeystoreError> {
            if std::mem::take(&mut *self.cancel_next.lock().expect("lock")) {
                return Err(HostKeystoreError::Cancelled);
            }
            self.entries
                .lock()
                .expect("lock")
                .get(entry)
                .cloned()
                .map(Zeroizing::new)
                .ok_or(HostKeystoreError::NotFound)
        }
        fn delete(&self, entry: &str) -> Result<(), HostKeystoreError> {
            self.entries.lock().expect("lock").remove(entry);
            Ok(())
        }
    }

    #[test]
    fn a_cancelled_prompt_is_a_typed_error_and_the_next_prompt_releases_the_key() {
        let s = HostStore::new(Prompting::default());
        let vault = VaultId::from_bytes([7; 16]);
        let (kek, params) = s.create(&vault).expect("create");
        *s.host.cancel_next.lock().expect("lock") = true;
        assert!(matches!(s.kek(&vault, &params), Err(Error::Cancelled)));
        assert_eq!(s.kek(&vault, &params).expect("allowed").canary(), kek.canary());
        s.destroy(&vault).expect("destroy");
        assert!(matches!(s.kek(&vault, &params), Err(Error::NoEntry { .. })));
    }

    #[test]
    fn a_secret_of_the_wrong_length_is_refused() {
        let s = HostStore::new(Prompting::default());
        let vault = VaultId::from_bytes([8; 16]);
        s.host.store(&entry(&vault), b"short").expect("store");
        assert!(matches!(s.kek(&vault, &KeystoreParams::Os), Err(Error::Os(_))));
    }
}
