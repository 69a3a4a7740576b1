//! The unlocked key hierarchy: unlocking (with failed-attempt counting), rotation of the
//! master key and of data keys, adding accounts and changing the passphrase.
//!
//! Every change is one atomic replacement of the key file, so a crash leaves the old
//! hierarchy or the new one. A data-key rotation takes two: the new key is first recorded
//! as *pending* next to the live one, then the caller re-encrypts, then the new key is
//! promoted. A crash in between leaves both keys in the file, and the next rotation
//! resumes with the same pending key.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use fieldvault_core::{
    AccountName, DataKey, DataSlot, Kek, KeyFile, KeyId, KeyMeta, KeystoreKind, KeystoreParams, MasterKey, Purpose,
    SlotContext, SlotState, VaultId, WrappedKey, unlock_delay,
};
use fieldvault_keystore::KeyStore;

use crate::vault::{COUNTER, KEYS, read_counter_checked};
use crate::{Error, Vault, random, random_key};

/// The secrets of an unlocked vault. Every key zeroizes itself on drop.
pub(crate) struct KeySet {
    kek: Kek,
    master: MasterKey,
    data: BTreeMap<(AccountName, Purpose, u32), DataKey>,
}

fn seal_master(kek: &Kek, master: &MasterKey, vault: &VaultId, params: &KeystoreParams, meta: KeyMeta) -> WrappedKey {
    let bound = params.to_bytes();
    kek.seal_master(master, meta, &SlotContext { vault, account: "", bound: &bound }, random())
}

fn seal_data(master: &MasterKey, key: &DataKey, vault: &VaultId, account: &AccountName, meta: KeyMeta) -> WrappedKey {
    master.seal_data_key(key, meta, &SlotContext { vault, account: account.as_str(), bound: b"" }, random())
}

fn fresh_meta(purpose: Purpose, version: u32) -> KeyMeta {
    KeyMeta { purpose, version, key_id: KeyId::from_bytes(random()) }
}

impl KeySet {
    /// A new hierarchy: a master key under `kek` and one account's data keys.
    pub(crate) fn create(
        vault: VaultId,
        kek: Kek,
        keystore: KeystoreParams,
        account: &AccountName,
    ) -> (KeyFile, KeySet) {
        let master = MasterKey::from_bytes(random_key());
        let wrapped = seal_master(&kek, &master, &vault, &keystore, fresh_meta(Purpose::Master, 1));
        let mut keys = KeySet { kek, master, data: BTreeMap::new() };
        let mut file = KeyFile { vault, generation: 0, keystore, master: wrapped, slots: Vec::new() };
        keys.add_account(&mut file, account);
        (file, keys)
    }

    fn add_account(&mut self, file: &mut KeyFile, account: &AccountName) {
        for purpose in Purpose::DATA {
            let key = DataKey::from_bytes(random_key());
            let meta = fresh_meta(purpose, 1);
            let sealed = seal_data(&self.master, &key, &file.vault, account, meta);
            file.slots.push(DataSlot { account: account.clone(), state: SlotState::Live, key: sealed });
            self.data.insert((account.clone(), purpose, 1), key);
        }
    }

    fn open(file: &KeyFile, kek: Kek) -> Result<Self, fieldvault_core::Error> {
        let bound = file.keystore.to_bytes();
        let master = file.master.open_master(&kek, &SlotContext { vault: &file.vault, account: "", bound: &bound })?;
        let mut data = BTreeMap::new();
        for slot in &file.slots {
            let ctx = SlotContext { vault: &file.vault, account: slot.account.as_str(), bound: b"" };
            let key = slot.key.open_data_key(&master, &ctx)?;
            let m = slot.key.meta();
            data.insert((slot.account.clone(), m.purpose, m.version), key);
        }
        Ok(KeySet { kek, master, data })
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Vault {
    /// Unlocks the vault with the KEK from `store`.
    ///
    /// With the passphrase keystore, failures are counted on disk and, after three, each
    /// next attempt must wait (1 s, doubling, at most 15 min); a success resets the count.
    /// Damage to the key file is reported as [`Error::Corrupt`] and never counted.
    ///
    /// # Errors
    /// [`Error::WrongPassphrase`], [`Error::UnlockThrottled`], [`Error::KeystoreMismatch`]
    /// (the OS keystore's key does not fit), [`Error::Corrupt`] (naming the slot),
    /// [`Error::Keystore`] (the store failed or holds no key for this vault).
    pub fn unlock(self, store: &dyn KeyStore) -> Result<Unlocked, Error> {
        self.unlock_with(store, UnlockPolicy::default())
    }

    /// [`Vault::unlock`] under an app's policy.
    ///
    /// # Errors
    /// As [`Vault::unlock`], and [`Error::WipedAfterFailures`] when this failure reached the
    /// policy's limit and the vault was wiped.
    pub fn unlock_with(self, store: &dyn KeyStore, policy: UnlockPolicy) -> Result<Unlocked, Error> {
        let counted = self.keystore_kind() == KeystoreKind::Passphrase;
        let now = unix_now();
        let (counter, damaged) = if counted { read_counter_checked(&self.dir)? } else { Default::default() };
        // A damaged counter is read as the last free failure (the next wrong passphrase
        // waits), but it never brings a wipe closer: under a wipe policy it counts as none.
        let counter = if damaged && policy.wipe_after_failures.is_some() {
            fieldvault_core::UnlockCounter::default()
        } else {
            counter
        };
        let wait = counter.wait_remaining(now);
        if wait > 0 {
            return Err(Error::UnlockThrottled { retry_after_secs: wait });
        }
        // The attempt is recorded as a failure before the passphrase is tried, and the record
        // taken back only if it was not a wrong passphrase: a guess whose failure could not
        // be recorded (a full disk, a file-size limit) is never tried.
        let path = self.dir.join(COUNTER);
        let next = counter.after_failure(now);
        if counted {
            self.disk.write_atomic(&path, &next.to_bytes())?;
        }
        let take_back = |vault: &Vault| -> Result<(), Error> {
            match (counted, counter.failures) {
                (false, _) => Ok(()),
                (true, 0) => vault.disk.remove_file(&path),
                (true, _) => vault.disk.write_atomic(&path, &counter.to_bytes()),
            }
        };
        let opened = match store.kek(&self.id(), &self.keyfile.keystore) {
            Ok(kek) => KeySet::open(&self.keyfile, kek).map_err(OpenError::Keys),
            Err(e) => Err(OpenError::Other(e.into())),
        };
        let keys = match opened {
            Ok(keys) => keys,
            // Only the master slot's canary can say "wrong KEK": a data slot with a wrong
            // canary means the file itself was altered.
            Err(OpenError::Keys(fieldvault_core::Error::WrongKey { what })) if what.starts_with("master") => {
                if !counted {
                    return Err(Error::KeystoreMismatch);
                }
                if policy.wipe_after_failures.is_some_and(|n| next.failures >= n) {
                    let dir = self.dir.clone();
                    drop(self); // release the directory lock, then wipe (keys first)
                    Vault::wipe(&dir, Some(store))?;
                    return Err(Error::WipedAfterFailures { failures: next.failures });
                }
                return Err(Error::WrongPassphrase {
                    failures: next.failures,
                    retry_after_secs: unlock_delay(next.failures),
                });
            }
            // Not a failed unlock: the keystore failed, or the file is damaged.
            Err(OpenError::Keys(source)) => {
                take_back(&self)?;
                return Err(Error::Corrupt { path: self.dir.join(KEYS), source });
            }
            Err(OpenError::Other(e)) => {
                take_back(&self)?;
                return Err(e);
            }
        };
        if counted {
            self.disk.remove_file(&path)?;
        }
        Ok(Unlocked::from_parts(self, keys))
    }
}

/// Why the key hierarchy did not open: the key file's answer, or the keystore's.
enum OpenError {
    Keys(fieldvault_core::Error),
    Other(Error),
}

/// What an app decides about failed passphrase unlocks.
///
/// `wipe_after_failures` is off by default, on purpose: it punishes the owner (a child with
/// the phone, a few typos) and protects nothing against an attacker who copied the vault,
/// since a copy has no counter. An app whose threat model needs it (a shared device with
/// an MDM policy, say) turns it on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnlockPolicy {
    /// Wipe the vault (keys first) when this many consecutive failures are reached.
    pub wipe_after_failures: Option<u32>,
}

/// An unlocked vault: the key hierarchy in memory. Dropping it (or [`Unlocked::lock`])
/// zeroizes every key.
pub struct Unlocked {
    // Fields drop in this order: the databases close first (SQLCipher wipes its copy of the
    // key), then the keys are zeroized, and only then does the vault release the directory
    // lock, so no other process opens the databases while this one still has them open.
    /// Open account databases.
    pub(crate) dbs: BTreeMap<AccountName, crate::documents::AccountDb>,
    keys: KeySet,
    pub(crate) vault: Vault,
}

impl Unlocked {
    pub(crate) fn from_parts(vault: Vault, keys: KeySet) -> Self {
        Unlocked { vault, keys, dbs: BTreeMap::new() }
    }

    #[cfg(test)]
    pub(crate) fn set_disk(&mut self, disk: crate::disk::Disk) {
        self.vault.disk = disk;
    }

    /// The vault (directory, id, status).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Locks: zeroizes every key and gives back the locked vault.
    pub fn lock(mut self) -> Vault {
        // Close databases first: SQLCipher wipes its own copy of the key on close.
        self.dbs.clear();
        self.vault
    }

    fn slot_key(&self, account: &AccountName, purpose: Purpose, state: SlotState) -> Option<&DataKey> {
        let slot = self
            .vault
            .keyfile
            .slots
            .iter()
            .find(|s| &s.account == account && s.key.meta().purpose == purpose && s.state == state)?;
        self.keys.data.get(&(account.clone(), purpose, slot.key.meta().version))
    }

    /// The live data key of one account and purpose.
    ///
    /// # Errors
    /// [`Error::NoSuchAccount`].
    pub fn data_key(&self, account: &AccountName, purpose: Purpose) -> Result<&DataKey, Error> {
        self.slot_key(account, purpose, SlotState::Live).ok_or_else(|| Error::NoSuchAccount(account.to_string()))
    }

    /// The key of one version (live or pending) of an account's purpose.
    pub(crate) fn data_key_version(&self, account: &AccountName, purpose: Purpose, version: u32) -> Option<&DataKey> {
        self.keys.data.get(&(account.clone(), purpose, version))
    }

    /// The live key's version.
    pub(crate) fn live_version(&self, account: &AccountName, purpose: Purpose) -> Option<u32> {
        self.vault.keyfile.live(account, purpose).map(|s| s.key.meta().version)
    }

    /// The pending key of an interrupted rotation, if there is one.
    pub fn pending_data_key(&self, account: &AccountName, purpose: Purpose) -> Option<&DataKey> {
        self.slot_key(account, purpose, SlotState::Pending)
    }

    /// Adds an account with fresh data keys and an empty directory.
    ///
    /// # Errors
    /// [`Error::AccountExists`].
    pub fn add_account(&mut self, account: &AccountName) -> Result<(), Error> {
        if self.vault.keyfile.accounts().contains(account) {
            return Err(Error::AccountExists(account.to_string()));
        }
        let mut next = self.vault.keyfile.clone();
        self.keys.add_account(&mut next, account);
        self.vault.commit(next)?;
        self.vault.disk.create_dir(&self.vault.account_dir(account))
    }

    /// Rotates the master key: a new random master key, every data key re-wrapped under
    /// it, one atomic write. Data keys (and so the data) are unchanged.
    pub fn rotate_master(&mut self) -> Result<KeyMeta, Error> {
        let file = &self.vault.keyfile;
        let master = MasterKey::from_bytes(random_key());
        let meta = fresh_meta(Purpose::Master, file.master.meta().version + 1);
        let mut next = file.clone();
        next.master = seal_master(&self.keys.kek, &master, &file.vault, &file.keystore, meta);
        for slot in &mut next.slots {
            let m = slot.key.meta();
            let key = &self.keys.data[&(slot.account.clone(), m.purpose, m.version)];
            slot.key = seal_data(&master, key, &file.vault, &slot.account, m);
        }
        self.vault.commit(next)?;
        self.keys.master = master;
        Ok(meta)
    }

    /// Re-wraps the master key under a new passphrase (a new salt, the same master key).
    ///
    /// Moving a vault between the OS keystore and a passphrase is not offered yet: it must
    /// also delete the old keystore entry, crash-safely.
    ///
    /// # Errors
    /// [`Error::Keystore`] when the vault does not use a passphrase, or the new one is weak.
    pub fn change_passphrase(&mut self, store: &fieldvault_keystore::PassphraseStore) -> Result<(), Error> {
        let kind = self.vault.keystore_kind();
        if kind != KeystoreKind::Passphrase {
            return Err(Error::Keystore(fieldvault_keystore::Error::WrongKind {
                vault_uses: kind.name(),
                offered: KeystoreKind::Passphrase.name(),
            }));
        }
        let file = &self.vault.keyfile;
        let (kek, params) = store.create(&file.vault)?;
        let mut next = file.clone();
        next.master = seal_master(&kek, &self.keys.master, &file.vault, &params, file.master.meta());
        next.keystore = params;
        self.vault.commit(next)?;
        self.keys.kek = kek;
        self.vault.disk.remove_file(&self.vault.dir.join(COUNTER))
    }

    /// Rotates one account's data key for `purpose`.
    ///
    /// 1. A new key is recorded as pending (one atomic write), or the pending key of an
    ///    interrupted rotation is taken up again.
    /// 2. `rekey(old, new, new_version)` re-encrypts whatever the key protects; it must be idempotent and
    ///    leave data readable with the old key or the new one at every moment.
    /// 3. The new key becomes live and the old one is dropped (one atomic write).
    ///
    /// # Errors
    /// [`Error::NoSuchAccount`]; whatever `rekey` returns (the pending key stays recorded).
    pub fn rotate_data_key(
        &mut self,
        account: &AccountName,
        purpose: Purpose,
        rekey: impl FnOnce(&DataKey, &DataKey, u32) -> Result<(), Error>,
    ) -> Result<KeyMeta, Error> {
        let file = &self.vault.keyfile;
        let live = file.live(account, purpose).ok_or_else(|| Error::NoSuchAccount(account.to_string()))?;
        let old_version = live.key.meta().version;
        let pending = file
            .slots
            .iter()
            .find(|s| &s.account == account && s.key.meta().purpose == purpose && s.state == SlotState::Pending)
            .map(|s| s.key.meta());
        let new_meta = match pending {
            Some(meta) => meta,
            None => {
                let newest = file
                    .slots
                    .iter()
                    .filter(|s| &s.account == account && s.key.meta().purpose == purpose)
                    .map(|s| s.key.meta().version)
                    .max()
                    .unwrap_or(old_version);
                let meta = fresh_meta(purpose, newest + 1);
                let key = DataKey::from_bytes(random_key());
                let mut next = file.clone();
                let sealed = seal_data(&self.keys.master, &key, &file.vault, account, meta);
                next.slots.push(DataSlot { account: account.clone(), state: SlotState::Pending, key: sealed });
                self.vault.commit(next)?;
                self.keys.data.insert((account.clone(), purpose, meta.version), key);
                meta
            }
        };
        let old = &self.keys.data[&(account.clone(), purpose, old_version)];
        let new = &self.keys.data[&(account.clone(), purpose, new_meta.version)];
        rekey(old, new, new_meta.version)?;
        let mut next = self.vault.keyfile.clone();
        next.slots.retain(|s| {
            !(&s.account == account && s.key.meta().purpose == purpose && s.key.meta().version == old_version)
        });
        for s in &mut next.slots {
            if &s.account == account && s.key.meta() == new_meta {
                s.state = SlotState::Live;
            }
        }
        self.vault.commit(next)?;
        self.keys.data.remove(&(account.clone(), purpose, old_version));
        Ok(new_meta)
    }

    /// Wipes one account (see [`Vault::wipe_account`]) and forgets its keys.
    pub fn wipe_account(&mut self, account: &AccountName) -> Result<(), Error> {
        self.dbs.remove(account);
        self.vault.wipe_account(account)?;
        self.keys.data.retain(|(a, _, _), _| a != account);
        Ok(())
    }
}

/// An unlocked vault set aside between two pieces of work (a `sync --watch` between
/// cycles): the keys stay in this process's memory, but the databases are closed and the
/// directory lock is released, so other processes can use the vault meanwhile. Dropping it
/// zeroizes the keys.
pub struct Parked {
    dir: std::path::PathBuf,
    keyfile: fieldvault_core::KeyFile,
    keys: KeySet,
}

impl Unlocked {
    /// Closes the databases and releases the directory lock, keeping the keys in memory.
    pub fn park(mut self) -> Parked {
        self.dbs.clear();
        let Unlocked { keys, vault, .. } = self;
        Parked { dir: vault.dir.clone(), keyfile: vault.keyfile.clone(), keys }
    }
}

impl Parked {
    /// Takes the directory lock again and reopens the vault with the keys held.
    ///
    /// # Errors
    /// [`Error::InUse`] while another process holds the vault; [`Error::Locked`] when the key
    /// file changed meanwhile (a rotation, a new passphrase, a wipe): the keys held may no
    /// longer be the vault's, so unlock again. The keys are zeroized either way.
    pub fn resume(self) -> Result<Unlocked, Error> {
        let vault = Vault::open(&self.dir)?;
        if vault.keyfile != self.keyfile {
            return Err(Error::Locked);
        }
        Ok(Unlocked::from_parts(vault, self.keys))
    }
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked").field("dir", &self.dir).field("keys", &"[redacted]").finish()
    }
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlocked").field("vault", &self.vault).field("keys", &"[redacted]").finish()
    }
}
