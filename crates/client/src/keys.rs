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
    AccountName, DataKey, DataSlot, DeviceSlot, Kek, KeyFile, KeyId, KeyMeta, KeystoreKind, KeystoreParams, LeaseSlot,
    MasterKey, OwedLogout, Purpose, SlotContext, SlotState, VaultId, WrappedKey, device_bound, lease_bound,
    unlock_delay,
};
use fieldvault_keystore::KeyStore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::vault::{COUNTER, KEYS, read_counter_checked};
use crate::{Error, Vault, random, random_key};

/// The secrets of an unlocked vault. Every key zeroizes itself on drop.
pub(crate) struct KeySet {
    kek: Kek,
    master: MasterKey,
    data: BTreeMap<(AccountName, Purpose, u32), DataKey>,
    /// The lease key `L` of each synced account whose lease is live.
    leases: BTreeMap<AccountName, Zeroizing<[u8; 32]>>,
}

/// A device's id and its secret, as kept for its next login.
pub(crate) type DeviceCredential = (String, Zeroizing<[u8; 32]>);

/// A lease as the server grants it at login and refresh (SPEC section 5).
pub(crate) struct LeaseGrant {
    pub(crate) lease_id: String,
    pub(crate) key: Zeroizing<[u8; 32]>,
    pub(crate) expires_at: u64,
}

/// What wraps an account's data keys: the master key, or for a synced account the key
/// derived from the master key and its lease key.
fn wrapper_of(
    master: &MasterKey,
    vault: &VaultId,
    account: &AccountName,
    lease: Option<(&str, &[u8; 32])>,
) -> MasterKey {
    match lease {
        Some((lease_id, l)) => master.lease_wrapping_key(l, vault, account.as_str(), lease_id),
        None => MasterKey::from_bytes(Zeroizing::new(*master.expose_secret())),
    }
}

fn seal_lease(
    master: &MasterKey,
    vault: &VaultId,
    account: &AccountName,
    grant: &LeaseGrant,
    meta: KeyMeta,
) -> LeaseSlot {
    let bound = lease_bound(&grant.lease_id, grant.expires_at);
    let ctx = SlotContext { vault, account: account.as_str(), bound: &bound };
    LeaseSlot {
        account: account.clone(),
        lease_id: grant.lease_id.clone(),
        expires_at: grant.expires_at,
        key: Some(master.seal_sync_secret(&grant.key, meta, &ctx, random())),
    }
}

fn seal_device(
    master: &MasterKey,
    vault: &VaultId,
    account: &AccountName,
    device_id: &str,
    secret: &[u8; 32],
    meta: KeyMeta,
) -> DeviceSlot {
    let bound = device_bound(device_id);
    let ctx = SlotContext { vault, account: account.as_str(), bound: &bound };
    DeviceSlot {
        account: account.clone(),
        device_id: device_id.to_owned(),
        key: master.seal_sync_secret(secret, meta, &ctx, random()),
    }
}

fn open_lease(
    master: &MasterKey,
    vault: &VaultId,
    slot: &LeaseSlot,
) -> Result<Option<Zeroizing<[u8; 32]>>, fieldvault_core::Error> {
    let Some(key) = &slot.key else { return Ok(None) };
    let bound = lease_bound(&slot.lease_id, slot.expires_at);
    key.open_sync_secret(master, &SlotContext { vault, account: slot.account.as_str(), bound: &bound }).map(Some)
}

pub(crate) fn seal_master(
    kek: &Kek,
    master: &MasterKey,
    vault: &VaultId,
    params: &KeystoreParams,
    meta: KeyMeta,
) -> WrappedKey {
    let bound = params.to_bytes();
    kek.seal_master(master, meta, &SlotContext { vault, account: "", bound: &bound }, random())
}

fn seal_data(master: &MasterKey, key: &DataKey, vault: &VaultId, account: &AccountName, meta: KeyMeta) -> WrappedKey {
    master.seal_data_key(key, meta, &SlotContext { vault, account: account.as_str(), bound: b"" }, random())
}

pub(crate) fn fresh_meta(purpose: Purpose, version: u32) -> KeyMeta {
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
        let mut keys = KeySet { kek, master, data: BTreeMap::new(), leases: BTreeMap::new() };
        let mut file = KeyFile {
            vault,
            generation: 0,
            keystore,
            master: wrapped,
            slots: Vec::new(),
            leases: Vec::new(),
            devices: Vec::new(),
            owed: Vec::new(),
            recovery: None,
        };
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

    /// Opens the master key and every data key it can at time `now`. A synced account whose
    /// lease has ended (or whose lease key is gone) stays shut: its data keys are not opened.
    /// Returns the keys and the accounts whose lease ended since the file was written (their
    /// `L` must now be deleted from the file).
    fn open(file: &KeyFile, kek: Kek, now: u64) -> Result<(Self, Vec<AccountName>), fieldvault_core::Error> {
        let bound = file.keystore.to_bytes();
        let master = file.master.open_master(&kek, &SlotContext { vault: &file.vault, account: "", bound: &bound })?;
        Self::open_under(file, kek, master, now)
    }

    /// As [`KeySet::open`] with the master key already opened (by the recovery key), held
    /// beside `kek`, the keystore key that is to wrap it from now on.
    pub(crate) fn open_under(
        file: &KeyFile,
        kek: Kek,
        master: MasterKey,
        now: u64,
    ) -> Result<(Self, Vec<AccountName>), fieldvault_core::Error> {
        let mut data = BTreeMap::new();
        let mut leases = BTreeMap::new();
        let mut ended = Vec::new();
        for account in file.accounts() {
            let lease = match file.lease(&account) {
                None => None,
                Some(slot) => match open_lease(&master, &file.vault, slot)? {
                    Some(l) if slot.expires_at > now => Some((slot.lease_id.as_str(), l)),
                    Some(_) => {
                        ended.push(account.clone());
                        continue;
                    }
                    None => continue,
                },
            };
            let wrapper = wrapper_of(&master, &file.vault, &account, lease.as_ref().map(|(id, l)| (*id, &**l)));
            for slot in file.slots.iter().filter(|s| s.account == account) {
                let ctx = SlotContext { vault: &file.vault, account: slot.account.as_str(), bound: b"" };
                let key = slot.key.open_data_key(&wrapper, &ctx)?;
                let m = slot.key.meta();
                data.insert((slot.account.clone(), m.purpose, m.version), key);
            }
            if let Some((_, l)) = lease {
                leases.insert(account.clone(), l);
            }
        }
        Ok((KeySet { kek, master, data, leases }, ended))
    }

    /// The master key.
    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The keystore key.
    pub(crate) fn kek(&self) -> &Kek {
        &self.kek
    }

    /// What wraps `account`'s data keys now (None: its lease has ended, it is shut).
    fn wrapper(&self, file: &KeyFile, account: &AccountName) -> Option<MasterKey> {
        match file.lease(account) {
            None => Some(wrapper_of(&self.master, &file.vault, account, None)),
            Some(slot) => {
                let l = self.leases.get(account)?;
                Some(wrapper_of(&self.master, &file.vault, account, Some((&slot.lease_id, l))))
            }
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Vault {
    /// Unlocks the vault with the KEK from `store`.
    ///
    /// With the passphrase keystore, failures are counted on disk: three in a row are free,
    /// and after the fourth the next attempt must wait 1 s, doubling with each further
    /// failure, at most 15 min; a success resets the count.
    /// Damage to the key file is reported as [`Error::Corrupt`] and never counted.
    ///
    /// # Errors
    /// [`Error::WrongPassphrase`], [`Error::UnlockThrottled`], [`Error::KeystoreMismatch`]
    /// (the OS keystore's key does not fit), [`Error::Corrupt`] (naming the slot),
    /// [`Error::Keystore`] (the store failed or holds no key for this vault).
    pub fn unlock(self, store: &dyn KeyStore) -> Result<Unlocked, Error> {
        self.unlock_with(store, UnlockPolicy::default())
    }

    /// Before a guess (a passphrase, a recovery key) is tried: the failed-attempt counter as
    /// it stands, refused while its wait runs, and the attempt recorded as a failure first
    /// (when `counted`), to be taken back only if the guess was right or could not be judged:
    /// a guess whose failure could not be recorded (a full disk, a file-size limit) is never
    /// tried. A damaged counter reads as the last free failure (the next wrong guess waits),
    /// but it never brings a wipe closer: under a wipe policy it counts as none. Returns the
    /// counter before, and as it stands after a failure.
    pub(crate) fn begin_attempt(
        &self,
        policy: &UnlockPolicy,
        counted: bool,
        now: u64,
    ) -> Result<(fieldvault_core::UnlockCounter, fieldvault_core::UnlockCounter), Error> {
        let (counter, damaged) = if counted { read_counter_checked(&self.dir)? } else { Default::default() };
        let counter = if damaged && policy.wipe_after_failures.is_some() {
            fieldvault_core::UnlockCounter::default()
        } else {
            counter
        };
        let wait = counter.wait_remaining(now);
        if wait > 0 {
            return Err(Error::UnlockThrottled { retry_after_secs: wait });
        }
        let next = counter.after_failure(now);
        if counted {
            self.disk.write_atomic(&self.dir.join(COUNTER), &next.to_bytes())?;
        }
        Ok((counter, next))
    }

    /// [`Vault::unlock`] under an app's policy.
    ///
    /// # Errors
    /// As [`Vault::unlock`], and [`Error::WipedAfterFailures`] when this failure reached the
    /// policy's limit and the vault was wiped.
    pub fn unlock_with(self, store: &dyn KeyStore, policy: UnlockPolicy) -> Result<Unlocked, Error> {
        let counted = self.keystore_kind() == KeystoreKind::Passphrase;
        let now = unix_now();
        let (counter, next) = self.begin_attempt(&policy, counted, now)?;
        let path = self.dir.join(COUNTER);
        let take_back = |vault: &Vault| -> Result<(), Error> {
            match (counted, counter.failures) {
                (false, _) => Ok(()),
                (true, 0) => vault.disk.remove_file(&path),
                (true, _) => vault.disk.write_atomic(&path, &counter.to_bytes()),
            }
        };
        let opened = match store.kek(&self.id(), &self.keyfile.keystore) {
            Ok(kek) => KeySet::open(&self.keyfile, kek, now).map_err(OpenError::Keys),
            Err(e) => Err(OpenError::Other(e.into())),
        };
        let (keys, ended) = match opened {
            Ok(opened) => opened,
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
        let mut unlocked = Unlocked::from_parts(self, keys);
        // A lease that ended while the vault was shut: the device's copy of L goes now.
        if !ended.is_empty() {
            unlocked.forget_leases(&ended)?;
        }
        Ok(unlocked)
    }
}

/// Why the key hierarchy did not open: the key file's answer, or the keystore's.
pub(crate) enum OpenError {
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

/// An owed logout's account, device id and opened record.
pub(crate) type OwedRecordBytes = (AccountName, String, Zeroizing<Vec<u8>>);

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
    /// The key hierarchy in memory.
    pub(crate) fn keys(&self) -> &KeySet {
        &self.keys
    }

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

    /// An account's open database beside its live files key (and version) and the vault:
    /// an import writes attachment files and rows in one transaction that needs all three.
    pub(crate) fn db_with_files_key(
        &mut self,
        account: &AccountName,
    ) -> Result<(&mut crate::documents::AccountDb, &DataKey, u32, &Vault), Error> {
        self.documents(account)?;
        let version =
            self.live_version(account, Purpose::Files).ok_or_else(|| Error::NoSuchAccount(account.to_string()))?;
        let key = self
            .keys
            .data
            .get(&(account.clone(), Purpose::Files, version))
            .ok_or_else(|| Error::NoSuchAccount(account.to_string()))?;
        let db = self.dbs.get_mut(account).expect("opened by documents() above");
        Ok((db, key, version, &self.vault))
    }

    /// The live data key of one account and purpose.
    ///
    /// # Errors
    /// [`Error::NoSuchAccount`].
    pub fn data_key(&self, account: &AccountName, purpose: Purpose) -> Result<&DataKey, Error> {
        self.slot_key(account, purpose, SlotState::Live).ok_or_else(|| {
            if self.lease_ended(account) {
                Error::LeaseExpired(account.to_string())
            } else {
                Error::NoSuchAccount(account.to_string())
            }
        })
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
        // A synced account whose lease has ended keeps its data keys wrapped under the old
        // master key and L: without L they cannot be re-wrapped, so nothing is rotated.
        if let Some(l) = file.leases.iter().find(|l| !self.keys.leases.contains_key(&l.account)) {
            return Err(Error::LeaseExpired(l.account.to_string()));
        }
        let master = MasterKey::from_bytes(random_key());
        let meta = fresh_meta(Purpose::Master, file.master.meta().version + 1);
        let mut next = file.clone();
        next.master = seal_master(&self.keys.kek, &master, &file.vault, &file.keystore, meta);
        for lease in &mut next.leases {
            let l = &self.keys.leases[&lease.account];
            let grant = LeaseGrant { lease_id: lease.lease_id.clone(), key: l.clone(), expires_at: lease.expires_at };
            let m = lease.key.as_ref().map(WrappedKey::meta).unwrap_or_else(|| fresh_meta(Purpose::Lease, 1));
            *lease = seal_lease(&master, &file.vault, &lease.account, &grant, m);
        }
        for device in &mut next.devices {
            let bound = device_bound(&device.device_id);
            let ctx = SlotContext { vault: &file.vault, account: device.account.as_str(), bound: &bound };
            let secret = device.key.open_sync_secret(&self.keys.master, &ctx)?;
            *device = seal_device(&master, &file.vault, &device.account, &device.device_id, &secret, device.key.meta());
        }
        for slot in &mut next.slots {
            let m = slot.key.meta();
            let key = &self.keys.data[&(slot.account.clone(), m.purpose, m.version)];
            let lease = next.leases.iter().find(|l| l.account == slot.account);
            let l = lease.map(|l| (l.lease_id.as_str(), &*self.keys.leases[&slot.account]));
            let wrapper = wrapper_of(&master, &file.vault, &slot.account, l);
            slot.key = seal_data(&wrapper, key, &file.vault, &slot.account, m);
        }
        for owed in &mut next.owed {
            let record = owed.open(&self.keys.master, &file.vault)?;
            *owed = OwedLogout::seal(&master, &file.vault, &owed.account, &owed.device_id, &record, random())?;
        }
        // The recovery key keeps working: its K_R, kept under the master key, seals the new one.
        if let Some(recovery) = &file.recovery {
            next.recovery =
                Some(recovery.rewrap(&self.keys.master, &master, meta, &file.vault, [random(), random()])?);
        }
        self.vault.commit(next)?;
        self.keys.master = master;
        Ok(meta)
    }

    /// The logouts this vault still owes to servers, opened.
    pub(crate) fn owed_records(&self) -> Result<Vec<OwedRecordBytes>, Error> {
        let file = &self.vault.keyfile;
        file.owed
            .iter()
            .map(|o| Ok((o.account.clone(), o.device_id.clone(), o.open(&self.keys.master, &file.vault)?)))
            .collect()
    }

    /// Seals a logout record for `account`'s device `device_id` under the master key.
    pub(crate) fn seal_owed(&self, account: &AccountName, device_id: &str, record: &[u8]) -> Result<OwedLogout, Error> {
        Ok(OwedLogout::seal(&self.keys.master, &self.vault.keyfile.vault, account, device_id, record, random())?)
    }

    /// Replaces (`Some`) or settles (`None`) the owed logout of `account`'s device.
    pub(crate) fn set_owed(
        &mut self,
        account: &AccountName,
        device_id: &str,
        record: Option<&[u8]>,
    ) -> Result<(), Error> {
        let mut next = self.vault.keyfile.clone();
        next.owed.retain(|o| !(&o.account == account && o.device_id == device_id));
        if let Some(r) = record {
            next.owed.push(self.seal_owed(account, device_id, r)?);
        }
        self.vault.commit(next)
    }

    /// Re-wraps the master key under a new passphrase (a new salt, the same master key).
    ///
    /// Moving a vault between the OS keystore and a passphrase is not offered yet: it must
    /// also delete the old keystore entry, crash-safely.
    ///
    /// # Errors
    /// [`Error::Keystore`] when the vault does not use a passphrase, or the new one is weak;
    /// [`Error::SamePassphrase`] when the new passphrase is the one in use (it derives, with
    /// the vault's recorded salt and parameters, the keystore key in use). Nothing changes.
    pub fn change_passphrase(&mut self, store: &fieldvault_keystore::PassphraseStore) -> Result<(), Error> {
        let kind = self.vault.keystore_kind();
        if kind != KeystoreKind::Passphrase {
            return Err(Error::Keystore(fieldvault_keystore::Error::WrongKind {
                vault_uses: kind.name(),
                offered: KeystoreKind::Passphrase.name(),
            }));
        }
        let file = &self.vault.keyfile;
        // One Argon2id derivation more; the canaries (HMACs of the keys, never the keys)
        // compare in constant time.
        let same = store.kek(&file.vault, &file.keystore)?;
        if bool::from(same.canary().ct_eq(&self.keys.kek.canary())) {
            return Err(Error::SamePassphrase);
        }
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
    pub(crate) fn rotate_data_key(
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
                let wrapper =
                    self.keys.wrapper(file, account).ok_or_else(|| Error::LeaseExpired(account.to_string()))?;
                let sealed = seal_data(&wrapper, &key, &file.vault, account, meta);
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
        self.keys.leases.remove(account);
        Ok(())
    }

    /// Wipes `account` as [`Unlocked::wipe_account`] does, recording `owed` in the same
    /// atomic write of the key file that removes its keys.
    pub(crate) fn shred_account_owing(&mut self, account: &AccountName, owed: OwedLogout) -> Result<(), Error> {
        self.dbs.remove(account);
        self.vault.shred_account(account, Some(owed))?;
        self.keys.data.retain(|(a, _, _), _| a != account);
        self.keys.leases.remove(account);
        Ok(())
    }

    /// Whether `account` is shut because its lease has ended (or its lease key is gone).
    pub fn lease_ended(&self, account: &AccountName) -> bool {
        self.vault.keyfile.lease(account).is_some() && !self.keys.leases.contains_key(account)
    }

    /// The account's lease: its id and expiry (Unix seconds), if it syncs.
    pub(crate) fn lease_expiry(&self, account: &AccountName) -> Option<u64> {
        self.vault.keyfile.lease(account).map(|l| l.expires_at)
    }

    /// Shuts `account` when its lease has ended by `now`: its data keys leave memory, its
    /// database closes, and its copy of L is deleted from the key file, so the data stays
    /// encrypted until a login or refresh brings L back.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] when the account is (now) shut; key-file write errors.
    pub(crate) fn enforce_lease(&mut self, account: &AccountName, now: u64) -> Result<(), Error> {
        let Some(lease) = self.vault.keyfile.lease(account) else { return Ok(()) };
        if lease.key.is_some() && lease.expires_at <= now {
            self.forget_leases(std::slice::from_ref(account))?;
        }
        if self.lease_ended(account) {
            return Err(Error::LeaseExpired(account.to_string()));
        }
        Ok(())
    }

    /// Deletes the device's copy of L for these accounts and drops their data keys.
    pub(crate) fn forget_leases(&mut self, accounts: &[AccountName]) -> Result<(), Error> {
        for account in accounts {
            self.dbs.remove(account);
            self.keys.data.retain(|(a, _, _), _| a != account);
            self.keys.leases.remove(account);
        }
        let mut next = self.vault.keyfile.clone();
        for l in &mut next.leases {
            if accounts.contains(&l.account) {
                l.key = None;
            }
        }
        self.vault.commit(next)
    }

    /// The device id and secret an account keeps for its next login, if it has logged in.
    pub(crate) fn device_credential(&self, account: &AccountName) -> Result<Option<DeviceCredential>, Error> {
        let Some(slot) = self.vault.keyfile.device(account) else { return Ok(None) };
        let bound = device_bound(&slot.device_id);
        let ctx = SlotContext { vault: &self.vault.keyfile.vault, account: account.as_str(), bound: &bound };
        let secret = slot
            .key
            .open_sync_secret(&self.keys.master, &ctx)
            .map_err(|source| Error::Corrupt { path: self.vault.dir.join(KEYS), source })?;
        Ok(Some((slot.device_id.clone(), secret)))
    }

    /// Records what a login or refresh granted, in one atomic write of the key file: the
    /// device secret (a login that made a new device), and the lease. The first lease of an
    /// account re-wraps its data keys under the lease; the same lease again moves its expiry
    /// (and opens a shut account); another lease re-wraps the data keys from the old lease
    /// to the new one, which needs them open.
    ///
    /// # Errors
    /// [`Error::LeaseMismatch`] when the server's L does not open the account's keys (or
    /// differs under the same lease id) or the account is shut under another lease: nothing
    /// changes. Key-file write errors.
    pub(crate) fn install_grant(
        &mut self,
        account: &AccountName,
        device: Option<(&str, &[u8; 32])>,
        grant: &LeaseGrant,
    ) -> Result<(), Error> {
        let file = self.vault.keyfile.clone();
        let mut next = file.clone();
        let vault = file.vault;
        if let Some((device_id, secret)) = device {
            next.devices.retain(|d| &d.account != account);
            next.devices.push(seal_device(
                &self.keys.master,
                &vault,
                account,
                device_id,
                secret,
                fresh_meta(Purpose::Device, 1),
            ));
        }
        let mismatch = || Error::LeaseMismatch(account.to_string());
        let meta = file
            .lease(account)
            .and_then(|l| l.key.as_ref().map(WrappedKey::meta))
            .unwrap_or_else(|| fresh_meta(Purpose::Lease, 1));
        let new_wrapper = wrapper_of(&self.keys.master, &vault, account, Some((&grant.lease_id, &grant.key)));
        let mut opened = BTreeMap::new();
        match file.lease(account) {
            Some(old) if old.lease_id == grant.lease_id && self.keys.leases.contains_key(account) => {
                let held = &self.keys.leases[account];
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&held[..], &grant.key[..])) {
                    return Err(mismatch());
                }
            }
            Some(old) if old.lease_id == grant.lease_id => {
                // A shut account: L comes back and must open its keys.
                for slot in file.slots.iter().filter(|s| &s.account == account) {
                    let ctx = SlotContext { vault: &vault, account: account.as_str(), bound: b"" };
                    let key = slot.key.open_data_key(&new_wrapper, &ctx).map_err(|_| mismatch())?;
                    let m = slot.key.meta();
                    opened.insert((account.clone(), m.purpose, m.version), key);
                }
            }
            Some(_) if !self.keys.leases.contains_key(account) => return Err(mismatch()),
            _ => {
                // The first lease, or another one while the keys are open: re-wrap them.
                for slot in next.slots.iter_mut().filter(|s| &s.account == account) {
                    let m = slot.key.meta();
                    let key = &self.keys.data[&(account.clone(), m.purpose, m.version)];
                    slot.key = seal_data(&new_wrapper, key, &vault, account, m);
                }
            }
        }
        next.leases.retain(|l| &l.account != account);
        next.leases.push(seal_lease(&self.keys.master, &vault, account, grant, meta));
        self.vault.commit(next)?;
        self.keys.data.extend(opened);
        self.keys.leases.insert(account.clone(), grant.key.clone());
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
    /// [`Error::InUse`] while another process holds the vault; [`Error::Locked`] when the
    /// keystore key held here no longer opens the vault's master key (its passphrase was
    /// changed, or it was wiped and made anew): unlock again. The keys are zeroized either
    /// way. Other changes by other processes (a login, a rotation) are taken up.
    pub fn resume(self) -> Result<Unlocked, Error> {
        let vault = Vault::open(&self.dir)?;
        if vault.keyfile == self.keyfile {
            return Ok(Unlocked::from_parts(vault, self.keys));
        }
        // Another process changed the key file meanwhile: a login or refresh moved a lease,
        // an account was added, a key rotated. The keystore key held here opens it again
        // as an unlock would, without asking for the passphrase; only when it no longer
        // opens the master key (a new passphrase) must the caller unlock again.
        let now = unix_now();
        let (keys, ended) = KeySet::open(&vault.keyfile, self.keys.kek, now).map_err(|_| Error::Locked)?;
        let mut unlocked = Unlocked::from_parts(vault, keys);
        if !ended.is_empty() {
            unlocked.forget_leases(&ended)?;
        }
        Ok(unlocked)
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

#[cfg(test)]
mod lease_tests {
    use fieldvault_keystore::MemoryStore;

    use super::*;

    fn grant(lease_id: &str, key: u8, expires_at: u64) -> LeaseGrant {
        LeaseGrant { lease_id: lease_id.into(), key: Zeroizing::new([key; 32]), expires_at }
    }

    const FAR: u64 = 4_000_000_000;

    fn synced() -> (tempfile::TempDir, MemoryStore, Unlocked, AccountName) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MemoryStore::default();
        let a = AccountName::new("alice").expect("name");
        let mut v = Vault::init(&dir.path().join("v"), &store, &a).expect("init");
        let mut body = serde_json::Map::new();
        body.insert("n".into(), 1.into());
        v.documents(&a).expect("db").put("c", "d", body).expect("put");
        v.install_grant(&a, Some(("d_1", &[7; 32])), &grant("l_1", 9, FAR)).expect("first lease");
        (dir, store, v, a)
    }

    #[test]
    fn a_synced_accounts_data_keys_open_only_with_the_lease_and_the_device_secret_only_with_the_master_key() {
        let (_d, store, v, a) = synced();
        let dir = v.vault().dir().to_path_buf();
        let file = v.vault().keyfile.clone();
        let master = MasterKey::from_bytes(Zeroizing::new(*v.keys.master.expose_secret()));
        drop(v);
        let ctx = SlotContext { vault: &file.vault, account: "alice", bound: b"" };
        for slot in file.slots.iter().filter(|s| s.account == a) {
            assert!(slot.key.open_data_key(&master, &ctx).is_err(), "no longer under the master key alone");
            let under_lease = master.lease_wrapping_key(&[9; 32], &file.vault, "alice", "l_1");
            assert!(slot.key.open_data_key(&under_lease, &ctx).is_ok());
        }
        let mut v = Vault::open(&dir).expect("open").unlock(&store).expect("unlock");
        assert_eq!(v.device_credential(&a).expect("reads").map(|(id, s)| (id, *s)), Some(("d_1".into(), [7; 32])));
        assert!(v.documents(&a).expect("open under the lease").get("c", "d").expect("get").is_some());
    }

    #[test]
    fn at_the_leases_end_the_account_shuts_and_the_same_lease_again_opens_it_with_nothing_lost() {
        let (_d, store, mut v, a) = synced();
        let err = v.enforce_lease(&a, FAR + 1).expect_err("ended");
        assert!(matches!(err, Error::LeaseExpired(_)), "{err}");
        assert!(matches!(v.data_key(&a, Purpose::Database), Err(Error::LeaseExpired(_))));
        assert!(v.vault().keyfile.lease(&a).is_some_and(|l| l.key.is_none()), "the device's copy of L is deleted");
        // Across a lock too: the key file no longer holds L.
        let dir = v.vault().dir().to_path_buf();
        drop(v);
        let mut v = Vault::open(&dir).expect("open").unlock(&store).expect("unlock");
        assert!(matches!(v.documents(&a), Err(Error::LeaseExpired(_))));
        assert!(matches!(v.rotate_master(), Err(Error::LeaseExpired(_))), "no master rotation without L");
        // A wrong L under the same id changes nothing.
        assert!(matches!(v.install_grant(&a, None, &grant("l_1", 8, FAR + 100)), Err(Error::LeaseMismatch(_))));
        assert!(v.lease_ended(&a));
        // The server sends the same L with a later expiry: everything opens again.
        v.install_grant(&a, None, &grant("l_1", 9, FAR + 100)).expect("the lease is back");
        assert_eq!(v.lease_expiry(&a), Some(FAR + 100));
        assert!(v.documents(&a).expect("open").get("c", "d").expect("get").is_some());
        v.rotate_master().expect("a master rotation with L present");
        drop(v);
        let mut v = Vault::open(&dir).expect("open").unlock(&store).expect("unlock after the rotation");
        assert!(v.documents(&a).expect("open").get("c", "d").expect("get").is_some());
        assert_eq!(v.device_credential(&a).expect("reads").map(|(id, _)| id), Some("d_1".into()));
    }

    #[test]
    fn a_parked_vault_resumes_after_another_process_moved_the_lease() {
        let (_d, store, v, a) = synced();
        let dir = v.vault().dir().to_path_buf();
        let parked = v.park();
        // Another process (a one-shot sync, a login) refreshes the lease meanwhile.
        let mut other = Vault::open(&dir).expect("the vault is free while parked").unlock(&store).expect("unlock");
        other.install_grant(&a, None, &grant("l_1", 9, FAR + 500)).expect("a later expiry");
        drop(other);
        let mut v = parked.resume().expect("the keys held still open the vault");
        assert_eq!(v.lease_expiry(&a), Some(FAR + 500));
        assert!(v.documents(&a).expect("open").get("c", "d").expect("get").is_some());
    }

    #[test]
    fn a_lease_that_ended_while_the_vault_was_shut_is_deleted_at_unlock() {
        let (_d, store, mut v, a) = synced();
        v.install_grant(&a, None, &grant("l_1", 9, 1_000)).expect("an expiry in the past");
        let dir = v.vault().dir().to_path_buf();
        drop(v);
        let v = Vault::open(&dir).expect("open").unlock(&store).expect("the vault unlocks");
        assert!(v.lease_ended(&a));
        assert!(v.vault().keyfile.lease(&a).is_some_and(|l| l.key.is_none()));
    }
}
