//! The recovery key (`docs/keys.md`, "Recovery"): made at `init` or later, it opens the
//! master key when the keystore entry is gone or the passphrase forgotten. Recovering
//! re-wraps the master key under a new keystore key and issues a new recovery key in one
//! atomic write of the key file, so every document, attachment, outbox op, device secret and
//! session secret (all under the master key already) is kept.

use std::path::Path;

use fieldvault_core::{KeyId, KeyMeta, MasterKey, RecoveryKey, RecoverySlot, VaultId, unlock_delay};
use fieldvault_keystore::KeyStore;

use crate::disk::Disk;
use crate::keys::{KeySet, seal_master, unix_now};
use crate::vault::{COUNTER, KEYS};
use crate::{Error, UnlockPolicy, Unlocked, Vault, random, random_key};

/// A recovery section for a new recovery key `rk`, made now.
pub(crate) fn seal_slot(rk: &RecoveryKey, master: &MasterKey, master_meta: KeyMeta, vault: &VaultId) -> RecoverySlot {
    RecoverySlot::seal(rk, master, master_meta, vault, KeyId::from_bytes(random()), unix_now(), [random(), random()])
}

fn fresh_recovery_key() -> RecoveryKey {
    RecoveryKey::from_bytes(random_key())
}

impl Vault {
    /// [`Vault::init`], and a recovery key made in the same first write of the key file: the
    /// vault never exists without it. The key is returned once; show it to the person who
    /// keeps it (its [`RecoveryKey::to_human`] form) and do not store it on the device.
    ///
    /// # Errors
    /// As [`Vault::init`].
    pub fn init_with_recovery_key(
        dir: &Path,
        store: &dyn KeyStore,
        account: &fieldvault_core::AccountName,
    ) -> Result<(Unlocked, RecoveryKey), Error> {
        let rk = fresh_recovery_key();
        let unlocked = Self::init_on(Disk::default(), dir, store, account, Some(&rk))?;
        Ok((unlocked, rk))
    }

    /// Opens the vault with its recovery key when the keystore entry is gone or the
    /// passphrase forgotten: the master key is unwrapped with `recovery_key`, wrapped again
    /// under a fresh key from `new_store` (a new OS keystore entry, or a new passphrase with a
    /// new salt: the old passphrase no longer unlocks), and a new recovery key replaces the
    /// used one (which then opens nothing), all in one atomic write of the key file. Nothing
    /// else changes: documents, attachments, the outbox, device and session secrets are kept.
    ///
    /// Attempts are counted like passphrase unlocks, on every keystore kind (a wrong key
    /// waits, and counts toward the wipe policy of [`Vault::recover_with`]).
    ///
    /// # Errors
    /// [`Error::NoRecoveryKey`]; [`Error::WrongRecoveryKey`] (counted);
    /// [`Error::UnlockThrottled`]; [`Error::Corrupt`] (the recovery section or a key slot is
    /// damaged; not counted); [`Error::Keystore`] (the new store refused, e.g. a weak new
    /// passphrase: nothing was changed). A crash leaves the old recovery key working, or the
    /// new keystore key.
    ///
    /// # Security
    /// Parse the text with [`RecoveryKey::parse`] first: a typo is caught by its checksum and
    /// never counted. The new recovery key is returned once.
    pub fn recover(
        self,
        recovery_key: &RecoveryKey,
        new_store: &dyn KeyStore,
    ) -> Result<(Unlocked, RecoveryKey), Error> {
        self.recover_with(recovery_key, new_store, UnlockPolicy::default())
    }

    /// [`Vault::recover`] under an app's policy.
    ///
    /// # Errors
    /// As [`Vault::recover`], and [`Error::WipedAfterFailures`] when this failure reached the
    /// policy's limit and the vault was wiped.
    pub fn recover_with(
        self,
        recovery_key: &RecoveryKey,
        new_store: &dyn KeyStore,
        policy: UnlockPolicy,
    ) -> Result<(Unlocked, RecoveryKey), Error> {
        let Some(slot) = self.keyfile.recovery.clone() else { return Err(Error::NoRecoveryKey) };
        let now = unix_now();
        // As for a passphrase: the failure is recorded before the key is tried, and taken
        // back only if the key was right or could not be judged.
        let (counter, next) = self.begin_attempt(&policy, true, now)?;
        let path = self.dir.join(COUNTER);
        let vault_id = self.keyfile.vault;
        let master = match slot.open(recovery_key, &vault_id) {
            Ok(master) => master,
            Err(fieldvault_core::Error::WrongKey { .. }) => {
                if policy.wipe_after_failures.is_some_and(|n| next.failures >= n) {
                    let dir = self.dir.clone();
                    drop(self);
                    Vault::wipe(&dir, Some(new_store))?;
                    return Err(Error::WipedAfterFailures { failures: next.failures });
                }
                return Err(Error::WrongRecoveryKey {
                    failures: next.failures,
                    retry_after_secs: unlock_delay(next.failures),
                });
            }
            Err(source) => {
                self.take_back(counter)?;
                return Err(Error::Corrupt { path: self.dir.join(KEYS), source });
            }
        };
        // The key was right: the attempt is not a failure, whatever happens next.
        self.take_back(counter)?;
        let (kek, params) = new_store.create(&vault_id)?;
        let (keys, ended) = KeySet::open_under(&self.keyfile, kek, master, now)
            .map_err(|source| Error::Corrupt { path: self.dir.join(KEYS), source })?;
        let fresh = fresh_recovery_key();
        let meta = self.keyfile.master.meta();
        let mut file = self.keyfile.clone();
        file.master = seal_master(keys.kek(), keys.master(), &vault_id, &params, meta);
        file.keystore = params;
        file.recovery = Some(seal_slot(&fresh, keys.master(), meta, &vault_id));
        let mut vault = self;
        vault.commit(file)?;
        vault.disk.remove_file(&path)?;
        let mut unlocked = Unlocked::from_parts(vault, keys);
        if !ended.is_empty() {
            unlocked.forget_leases(&ended)?;
        }
        Ok((unlocked, fresh))
    }

    /// Puts the failed-attempt counter back to `counter`.
    fn take_back(&self, counter: fieldvault_core::UnlockCounter) -> Result<(), Error> {
        let path = self.dir.join(COUNTER);
        match counter.failures {
            0 => self.disk.remove_file(&path),
            _ => self.disk.write_atomic(&path, &counter.to_bytes()),
        }
    }
}

impl Unlocked {
    /// Makes a new recovery key, replacing the vault's old one (which then opens nothing), in
    /// one atomic write of the key file. Returned once: show it, do not store it.
    ///
    /// # Errors
    /// Key-file write errors (the old recovery key then still works).
    pub fn new_recovery_key(&mut self) -> Result<RecoveryKey, Error> {
        let fresh = fresh_recovery_key();
        let mut file = self.vault.keyfile.clone();
        file.recovery = Some(seal_slot(&fresh, self.keys().master(), file.master.meta(), &file.vault));
        self.vault.commit(file)?;
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use fieldvault_core::{AccountName, Passphrase};
    use fieldvault_keystore::{MemoryStore, PassphraseStore};
    use zeroize::Zeroizing;

    use super::*;
    use crate::keys::LeaseGrant;

    fn alice() -> AccountName {
        AccountName::new("alice").expect("name")
    }

    fn body(n: i64) -> serde_json::Map<String, serde_json::Value> {
        let mut b = serde_json::Map::new();
        b.insert("n".into(), n.into());
        b
    }

    /// A vault with a document, a device secret and a lease, whose memory-store entry is then
    /// deleted (a reset keychain).
    fn lost_entry() -> (tempfile::TempDir, std::path::PathBuf, RecoveryKey) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("v");
        let store = MemoryStore::default();
        let (mut v, rk) = Vault::init_with_recovery_key(&dir, &store, &alice()).expect("init");
        v.documents(&alice()).expect("db").put("c", "d", body(1)).expect("put");
        let grant = LeaseGrant { lease_id: "l_1".into(), key: Zeroizing::new([9; 32]), expires_at: 4_000_000_000 };
        v.install_grant(&alice(), Some(("d_1", &[7; 32])), &grant).expect("lease");
        let id = v.vault().id();
        drop(v);
        store.destroy(&id).expect("entry deleted");
        (tmp, dir, rk)
    }

    #[test]
    fn a_vault_whose_keystore_entry_was_deleted_is_recovered_with_everything_and_a_new_key() {
        let (_tmp, dir, rk) = lost_entry();
        let store = MemoryStore::default();
        assert!(matches!(Vault::open(&dir).expect("open").unlock(&store), Err(Error::Keystore(_))));
        let (mut v, fresh) = Vault::open(&dir).expect("open").recover(&rk, &store).expect("recovers");
        assert!(v.documents(&alice()).expect("db").get("c", "d").expect("get").is_some());
        let (device, secret) = v.device_credential(&alice()).expect("reads").expect("kept");
        assert_eq!((device.as_str(), *secret), ("d_1", [7; 32]));
        assert_ne!(fresh.expose_secret(), rk.expose_secret());
        drop(v);
        // The new keystore entry unlocks; the used recovery key opens nothing any more.
        drop(Vault::open(&dir).expect("open").unlock(&store).expect("the new entry unlocks"));
        let err = Vault::open(&dir).expect("open").recover(&rk, &store).expect_err("used");
        assert!(matches!(err, Error::WrongRecoveryKey { failures: 1, .. }), "{err}");
        let (v, _) = Vault::open(&dir).expect("open").recover(&fresh, &store).expect("the new one works");
        assert_eq!(v.vault().status().expect("status").failed_unlocks, 0, "a success resets the count");
    }

    #[test]
    fn a_forgotten_passphrase_is_replaced_and_no_longer_unlocks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("v");
        let pass = |p: &str| PassphraseStore::new(Passphrase::new(Zeroizing::new(p.into())));
        let (mut v, rk) =
            Vault::init_with_recovery_key(&dir, &pass("tangerine orbit cello 1987"), &alice()).expect("init");
        v.documents(&alice()).expect("db").put("c", "d", body(1)).expect("put");
        drop(v);
        // A weak new passphrase is refused after the key was checked: nothing changes.
        let before = std::fs::read(dir.join(KEYS)).expect("read");
        let err = Vault::open(&dir).expect("open").recover(&rk, &pass("password")).expect_err("weak");
        assert!(matches!(err, Error::Keystore(_)), "{err}");
        assert_eq!(std::fs::read(dir.join(KEYS)).expect("read"), before, "the key file is untouched");
        let (v, _) = Vault::open(&dir).expect("open").recover(&rk, &pass("velvet harbor quince 2041")).expect("ok");
        drop(v);
        let old = Vault::open(&dir).expect("open").unlock(&pass("tangerine orbit cello 1987"));
        assert!(matches!(old, Err(Error::WrongPassphrase { .. })), "{old:?}");
        let mut v = Vault::open(&dir).expect("open").unlock(&pass("velvet harbor quince 2041")).expect("new");
        assert!(v.documents(&alice()).expect("db").get("c", "d").expect("get").is_some());
    }

    #[test]
    fn wrong_recovery_keys_are_counted_throttled_and_wiped_under_a_policy() {
        let (_tmp, dir, rk) = lost_entry();
        let store = MemoryStore::default();
        let wrong = RecoveryKey::from_bytes(Zeroizing::new([1; 32]));
        for n in 1..=fieldvault_core::FREE_FAILURES + 1 {
            let err = Vault::open(&dir).expect("open").recover(&wrong, &store).expect_err("wrong");
            assert!(matches!(err, Error::WrongRecoveryKey { failures, .. } if failures == n), "{err}");
        }
        let err = Vault::open(&dir).expect("open").recover(&rk, &store).expect_err("must wait");
        assert!(matches!(err, Error::UnlockThrottled { .. }), "even the right key waits: {err}");
        assert_eq!(Vault::open(&dir).expect("open").status().expect("status").failed_unlocks, 4);
        // Under a wipe policy the failure that reaches it wipes the vault.
        let (_tmp, dir, _) = lost_entry();
        let policy = UnlockPolicy { wipe_after_failures: Some(2) };
        let v = Vault::open(&dir).expect("open");
        assert!(matches!(v.recover_with(&wrong, &store, policy), Err(Error::WrongRecoveryKey { .. })));
        let v = Vault::open(&dir).expect("open");
        assert!(matches!(v.recover_with(&wrong, &store, policy), Err(Error::WipedAfterFailures { failures: 2 })));
        assert!(!dir.exists());
    }

    #[test]
    fn a_new_recovery_key_replaces_the_old_and_survives_a_master_rotation() {
        let (_tmp, dir, old) = lost_entry();
        let store = MemoryStore::default();
        let (mut v, rk) = Vault::open(&dir).expect("open").recover(&old, &store).expect("recovers");
        let before = v.vault().status().expect("status").recovery.expect("has one");
        let newer = v.new_recovery_key().expect("new");
        let after = v.vault().status().expect("status").recovery.expect("has one");
        assert_ne!(before.id, after.id);
        v.rotate_master().expect("rotates");
        drop(v);
        store.destroy(&Vault::open(&dir).expect("open").id()).expect("lost again");
        assert!(matches!(Vault::open(&dir).expect("open").recover(&rk, &store), Err(Error::WrongRecoveryKey { .. })));
        let (mut v, _) = Vault::open(&dir).expect("open").recover(&newer, &store).expect("after the rotation");
        assert!(v.documents(&alice()).expect("db").get("c", "d").expect("get").is_some());
    }

    #[test]
    fn a_damaged_recovery_section_is_reported_not_counted_and_a_vault_without_one_says_so() {
        let (_tmp, dir, rk) = lost_entry();
        let store = MemoryStore::default();
        let mut file = Vault::open(&dir).expect("open").keyfile.clone();
        let mut body = file.recovery.as_ref().expect("has one").to_bytes();
        body[24 + 70] ^= 1; // inside the sealed master key, checksum recomputed below
        file.recovery = Some(RecoverySlot::from_bytes(&body).expect("well-formed"));
        std::fs::write(dir.join(KEYS), file.to_bytes()).expect("write");
        let err = Vault::open(&dir).expect("open").recover(&rk, &store).expect_err("tampered");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert_eq!(Vault::open(&dir).expect("open").status().expect("status").failed_unlocks, 0);
        file.recovery = None;
        std::fs::write(dir.join(KEYS), file.to_bytes()).expect("write");
        let err = Vault::open(&dir).expect("open").recover(&rk, &store).expect_err("none");
        assert!(matches!(err, Error::NoRecoveryKey), "{err}");
    }
}
