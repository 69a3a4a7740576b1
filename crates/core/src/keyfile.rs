//! The key file (`docs/formats/key-file.md`): the one record that holds a vault's keystore
//! parameters, its wrapped master key and every account's wrapped data keys.
//!
//! ```text
//! file    = "FVKF" | version 0x01 | reserved 0x00 | count u16 | section{count}
//! section = type u8 | len u16 | body[len] | check[8]
//! check   = SHA-256("fieldvault/v1/check" 0x00 "keyfile-section" 0x00 type len body)[0..8]
//! type 1  vault     vault id (16) | generation u64
//! type 2  keystore  kind u8 | params        (os: none; passphrase: m u32 t u32 p u32 salt 16)
//! type 3  master    wrapped key (104)
//! type 4  data      state u8 | len8(account) | account | wrapped key (104)
//! type 5  lease     len8(account) | account | len8(lease_id) | lease_id | expires_at u64
//!                   | has_key u8 | wrapped lease key (104, when has_key is 1)
//! type 6  device    len8(account) | account | len8(device_id) | device_id | wrapped secret (104)
//! type 7  logout    a logout the server is owed ([`OwedLogout`], sealed under the master key)
//! type 8  recovery  id (16) | created_at u64 | master under K_R (104) | K_R under master (104)
//! ```
//!
//! Version 2 adds sections 5 and 6 (a synced account's lease and device secret, both
//! wrapped by the master key); a file without them is written as version 1, byte for byte
//! as before. Version 3 adds section 7, and is written only while a logout is owed. Version 4
//! adds section 8 (the recovery key's copy of the master key, [`RecoverySlot`]) and is
//! written exactly when the file holds one; it may hold sections 5 to 7 as well. An account with a lease section has its data keys wrapped under the lease
//! (`MasterKey::lease_wrapping_key`), not under the master key.
//!
//! Sections 1, 2 and 3 appear once each, in that order, then any number of data slots. All
//! integers are big-endian. The whole record is replaced atomically on every change, so the
//! Argon2id parameters, the salt and the wrapped master key always change together; the
//! keystore section is the master key's bound associated data.

use std::collections::BTreeSet;

use crate::section::{CHECK_LEN, Reader, checksum};
use crate::{AccountName, Error, KdfParams, OwedLogout, Purpose, RecoverySlot, VaultId, WrappedKey};

const MAGIC: &[u8; 4] = b"FVKF";
/// Written when the file holds no lease or device section (the version-1 layout).
const VERSION_1: u8 = 1;
/// Written when it does (and holds no owed logout).
const VERSION_2: u8 = 2;
/// Written while a logout is owed to a server (section 7).
const VERSION_3: u8 = 3;
/// Written while the file holds a recovery section (section 8), whatever else it holds.
const VERSION_4: u8 = 4;
const CHECK_LABEL: &[u8] = b"keyfile-section";
const WHAT: &str = "key file";

/// Which keystore holds (or derives) the key that wraps the master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeystoreKind {
    /// The OS keystore (Keychain, Keystore, Secret Service) holds a random KEK.
    Os = 1,
    /// KEK = Argon2id(passphrase, salt).
    Passphrase = 2,
    /// A process-local store, for tests.
    Memory = 3,
}

impl KeystoreKind {
    /// Lower-case name as shown to users and accepted by `--keystore`.
    pub fn name(self) -> &'static str {
        match self {
            KeystoreKind::Os => "os",
            KeystoreKind::Passphrase => "passphrase",
            KeystoreKind::Memory => "memory",
        }
    }
}

/// The keystore section: which store, and what it needs to find or derive the KEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeystoreParams {
    /// The KEK is the OS keystore entry named after the vault id.
    Os,
    /// The KEK is derived from the passphrase with these parameters and salt.
    Passphrase {
        /// Argon2id cost.
        kdf: KdfParams,
        /// Random salt, fresh for every new passphrase.
        salt: [u8; KdfParams::SALT_LEN],
    },
    /// The KEK lives in a process-local test store.
    Memory,
}

impl KeystoreParams {
    /// Which store.
    pub fn kind(&self) -> KeystoreKind {
        match self {
            KeystoreParams::Os => KeystoreKind::Os,
            KeystoreParams::Passphrase { .. } => KeystoreKind::Passphrase,
            KeystoreParams::Memory => KeystoreKind::Memory,
        }
    }

    /// The section body; also the master key's bound associated data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.kind() as u8];
        if let KeystoreParams::Passphrase { kdf, salt } = self {
            out.extend_from_slice(&kdf.m_cost_kib.to_be_bytes());
            out.extend_from_slice(&kdf.t_cost.to_be_bytes());
            out.extend_from_slice(&kdf.p_cost.to_be_bytes());
            out.extend_from_slice(salt);
        }
        out
    }

    fn from_bytes(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body, "keystore section");
        let params = match r.u8()? {
            1 => KeystoreParams::Os,
            2 => {
                let kdf = KdfParams { m_cost_kib: r.u32()?, t_cost: r.u32()?, p_cost: r.u32()? };
                kdf.check()?;
                KeystoreParams::Passphrase { kdf, salt: r.array()? }
            }
            3 => KeystoreParams::Memory,
            code => {
                return Err(Error::UnknownCode { what: "keystore kind", code });
            }
        };
        r.finish()?;
        Ok(params)
    }
}

/// Whether a data key is the one in use or a rotation's new key not yet in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// The key in use for its (account, purpose).
    Live = 1,
    /// A rotation's next key: written before the data is re-keyed, promoted after.
    Pending = 2,
}

/// One account's wrapped data key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSlot {
    /// The account it belongs to.
    pub account: AccountName,
    /// Live or pending.
    pub state: SlotState,
    /// The sealed key.
    pub key: WrappedKey,
}

impl DataSlot {
    /// `account 'alice' database key v2`.
    pub fn describe(&self) -> String {
        self.key.describe(self.account.as_str())
    }
}

/// A synced account's offline lease as the device keeps it: `L` wrapped by the master key,
/// bound to its id and expiry; `key` is `None` once the lease has ended (the account's data
/// keys, wrapped under the lease, stay shut until a login brings `L` back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSlot {
    /// The account.
    pub account: AccountName,
    /// The server's lease id.
    pub lease_id: String,
    /// When the lease ends, Unix seconds.
    pub expires_at: u64,
    /// `L`, wrapped by the master key (`Purpose::Lease`); `None` after expiry.
    pub key: Option<WrappedKey>,
}

/// A synced account's device secret, wrapped by the master key (never by the lease, so it
/// outlives a lease's end and proves the device at the next login).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSlot {
    /// The account.
    pub account: AccountName,
    /// The server-assigned device id.
    pub device_id: String,
    /// The secret (`Purpose::Device`).
    pub key: WrappedKey,
}

/// A parsed key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// The vault this file belongs to.
    pub vault: VaultId,
    /// Raised by one on every write: tells which of two copies is newer.
    pub generation: u64,
    /// The keystore section.
    pub keystore: KeystoreParams,
    /// The master key, wrapped by the KEK.
    pub master: WrappedKey,
    /// Every account's data keys, wrapped by the master key (or, for an account with a
    /// lease, by the lease-wrapping key).
    pub slots: Vec<DataSlot>,
    /// Synced accounts' leases (version 2).
    pub leases: Vec<LeaseSlot>,
    /// Synced accounts' device secrets (version 2).
    pub devices: Vec<DeviceSlot>,
    /// Logouts not yet told to their server (version 3); the account may since have been
    /// re-created, or not.
    pub owed: Vec<OwedLogout>,
    /// The recovery key's copy of the master key (version 4), if the vault has one.
    pub recovery: Option<RecoverySlot>,
}

fn push_section(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let len = u16::try_from(body.len()).expect("sections are at most a few hundred bytes");
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    let check = checksum(CHECK_LABEL, &out[start..]);
    out.extend_from_slice(&check);
}

impl KeyFile {
    /// The live slot of one (account, purpose), if any.
    pub fn live(&self, account: &AccountName, purpose: Purpose) -> Option<&DataSlot> {
        self.slots
            .iter()
            .find(|s| &s.account == account && s.state == SlotState::Live && s.key.meta().purpose == purpose)
    }

    /// An account's lease, if it syncs.
    pub fn lease(&self, account: &AccountName) -> Option<&LeaseSlot> {
        self.leases.iter().find(|l| &l.account == account)
    }

    /// An account's device secret slot, if it has logged in.
    pub fn device(&self, account: &AccountName) -> Option<&DeviceSlot> {
        self.devices.iter().find(|d| &d.account == account)
    }

    /// The accounts that have at least one slot, sorted.
    pub fn accounts(&self) -> BTreeSet<AccountName> {
        self.slots.iter().map(|s| s.account.clone()).collect()
    }

    /// Encodes the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + (self.slots.len() + self.leases.len() + self.devices.len()) * 180);
        out.extend_from_slice(MAGIC);
        let version = match () {
            () if self.recovery.is_some() => VERSION_4,
            () if !self.owed.is_empty() => VERSION_3,
            () if !self.leases.is_empty() || !self.devices.is_empty() => VERSION_2,
            () => VERSION_1,
        };
        out.push(version);
        out.push(0);
        let sections = 3
            + self.slots.len()
            + self.leases.len()
            + self.devices.len()
            + self.owed.len()
            + usize::from(self.recovery.is_some());
        let count = u16::try_from(sections).expect("fewer than 65k slots");
        out.extend_from_slice(&count.to_be_bytes());
        let mut vault = self.vault.as_bytes().to_vec();
        vault.extend_from_slice(&self.generation.to_be_bytes());
        push_section(&mut out, 1, &vault);
        push_section(&mut out, 2, &self.keystore.to_bytes());
        push_section(&mut out, 3, &self.master.to_bytes());
        for slot in &self.slots {
            let mut body = vec![slot.state as u8];
            body.push(u8::try_from(slot.account.as_str().len()).expect("account names are at most 64 bytes"));
            body.extend_from_slice(slot.account.as_str().as_bytes());
            body.extend_from_slice(&slot.key.to_bytes());
            push_section(&mut out, 4, &body);
        }
        for lease in &self.leases {
            let mut body = Vec::new();
            push_name(&mut body, lease.account.as_str());
            push_name(&mut body, &lease.lease_id);
            body.extend_from_slice(&lease.expires_at.to_be_bytes());
            match &lease.key {
                Some(k) => {
                    body.push(1);
                    body.extend_from_slice(&k.to_bytes());
                }
                None => body.push(0),
            }
            push_section(&mut out, 5, &body);
        }
        for device in &self.devices {
            let mut body = Vec::new();
            push_name(&mut body, device.account.as_str());
            push_name(&mut body, &device.device_id);
            body.extend_from_slice(&device.key.to_bytes());
            push_section(&mut out, 6, &body);
        }
        for owed in &self.owed {
            push_section(&mut out, 7, &owed.to_bytes());
        }
        if let Some(recovery) = &self.recovery {
            push_section(&mut out, 8, &recovery.to_bytes());
        }
        out
    }

    /// Parses and checks a key file: structure, checksums, and that slots are consistent
    /// (one live key per account and purpose, no duplicate versions). Nothing is decrypted.
    ///
    /// # Errors
    /// [`Error::ChecksumMismatch`] names the damaged section; other variants name the rule.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, WHAT);
        let version = r.header_any(MAGIC, &[VERSION_1, VERSION_2, VERSION_3, VERSION_4])?;
        if r.u8()? != 0 {
            return Err(Error::Malformed { what: WHAT, reason: "reserved byte is not zero" });
        }
        let count = r.u16()?;
        if count < 3 {
            return Err(Error::Malformed { what: WHAT, reason: "fewer than the three required sections" });
        }
        let mut vault = None;
        let mut keystore = None;
        let mut master = None;
        let mut slots = Vec::new();
        let mut leases = Vec::new();
        let mut devices = Vec::new();
        let mut owed = Vec::new();
        let mut recovery = None;
        let mut last = 0u8;
        for index in 1..=count {
            let start_kind = r.u8()?;
            let len = r.u16()?;
            let body = r.take(usize::from(len))?;
            let check: [u8; CHECK_LEN] = r.array()?;
            let mut framed = vec![start_kind];
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(body);
            if checksum(CHECK_LABEL, &framed) != check {
                return Err(Error::ChecksumMismatch { what: section_name(index, start_kind, body) });
            }
            // 1, 2, 3 once each, then data slots, then (version 2) leases, then devices, then
            // (version 3) owed logouts, then (version 4) one recovery section.
            let allowed = match start_kind {
                4 => true,
                5 | 6 => version >= VERSION_2,
                7 => version >= VERSION_3,
                8 => version == VERSION_4 && recovery.is_none(),
                _ => false,
            };
            let in_order = match index {
                1..=3 => start_kind == index as u8,
                _ => allowed && start_kind >= last,
            };
            if !in_order {
                return Err(Error::Malformed { what: WHAT, reason: "sections are missing or out of order" });
            }
            last = start_kind;
            match start_kind {
                1 => {
                    let mut b = Reader::new(body, "vault section");
                    vault = Some((VaultId::from_bytes(b.array()?), b.u64()?));
                    b.finish()?;
                }
                2 => keystore = Some(KeystoreParams::from_bytes(body)?),
                3 => {
                    let key = WrappedKey::from_bytes(body)?;
                    if key.meta().purpose != Purpose::Master {
                        return Err(Error::Malformed { what: WHAT, reason: "the master section holds a data key" });
                    }
                    master = Some(key);
                }
                4 => slots.push(parse_slot(body)?),
                5 => leases.push(parse_lease(body)?),
                6 => devices.push(parse_device(body)?),
                7 => owed.push(OwedLogout::from_bytes(body)?),
                _ => recovery = Some(RecoverySlot::from_bytes(body)?),
            }
        }
        r.finish()?;
        // One encoding per content: version 2 only for what version 1 cannot hold.
        if version == VERSION_2 && leases.is_empty() && devices.is_empty() {
            return Err(Error::Malformed { what: WHAT, reason: "version 2 without a lease or device section" });
        }
        if version == VERSION_3 && owed.is_empty() {
            return Err(Error::Malformed { what: WHAT, reason: "version 3 without an owed logout" });
        }
        if version == VERSION_4 && recovery.is_none() {
            return Err(Error::Malformed { what: WHAT, reason: "version 4 without a recovery section" });
        }
        let (vault, generation) = vault.expect("section 1 was read");
        let file = KeyFile {
            vault,
            generation,
            keystore: keystore.expect("section 2 was read"),
            master: master.expect("section 3 was read"),
            slots,
            leases,
            devices,
            owed,
            recovery,
        };
        file.check_consistency()?;
        Ok(file)
    }

    fn check_consistency(&self) -> Result<(), Error> {
        let malformed = |reason| Err(Error::Malformed { what: WHAT, reason });
        let mut seen = BTreeSet::new();
        let mut live = BTreeSet::new();
        let mut pending = BTreeSet::new();
        for s in &self.slots {
            let m = s.key.meta();
            if !seen.insert((s.account.clone(), m.purpose, m.version)) {
                return malformed("two slots hold the same account, purpose and version");
            }
            let set = if s.state == SlotState::Live { &mut live } else { &mut pending };
            if !set.insert((s.account.clone(), m.purpose)) {
                return malformed("two live or two pending keys for one account and purpose");
            }
        }
        if !pending.is_subset(&live) {
            return malformed("a pending key has no live key beside it");
        }
        for account in self.accounts() {
            if Purpose::DATA.iter().any(|&p| !live.contains(&(account.clone(), p))) {
                return malformed("an account lacks a live database, files or sync key");
            }
        }
        let accounts = self.accounts();
        let mut leased = BTreeSet::new();
        for l in &self.leases {
            if !accounts.contains(&l.account) || !leased.insert(l.account.clone()) {
                return malformed("a lease belongs to no account, or an account has two");
            }
        }
        let mut devices = BTreeSet::new();
        for d in &self.devices {
            if !accounts.contains(&d.account) || !devices.insert(d.account.clone()) {
                return malformed("a device secret belongs to no account, or an account has two");
            }
        }
        let mut owed = BTreeSet::new();
        for o in &self.owed {
            if !owed.insert((o.account.clone(), o.device_id.clone())) {
                return malformed("two owed logouts for one account's device");
            }
        }
        Ok(())
    }
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    out.push(u8::try_from(name.len()).expect("names in the key file are at most 255 bytes"));
    out.extend_from_slice(name.as_bytes());
}

fn read_name<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a str, Error> {
    let len = r.u8()?;
    std::str::from_utf8(r.take(usize::from(len))?).map_err(|_| Error::Malformed { what, reason: "a name is not UTF-8" })
}

fn parse_lease(body: &[u8]) -> Result<LeaseSlot, Error> {
    const W: &str = "lease slot";
    let mut r = Reader::new(body, W);
    let account = AccountName::new(read_name(&mut r, W)?)?;
    let lease_id = read_name(&mut r, W)?.to_owned();
    let expires_at = r.u64()?;
    let key = match r.u8()? {
        0 => None,
        1 => Some(WrappedKey::from_bytes(r.take(WrappedKey::LEN)?)?),
        code => return Err(Error::UnknownCode { what: "lease key presence", code }),
    };
    r.finish()?;
    if key.as_ref().is_some_and(|k| k.meta().purpose != Purpose::Lease) {
        return Err(Error::Malformed { what: W, reason: "it holds a key that is not a lease key" });
    }
    Ok(LeaseSlot { account, lease_id, expires_at, key })
}

fn parse_device(body: &[u8]) -> Result<DeviceSlot, Error> {
    const W: &str = "device slot";
    let mut r = Reader::new(body, W);
    let account = AccountName::new(read_name(&mut r, W)?)?;
    let device_id = read_name(&mut r, W)?.to_owned();
    let key = WrappedKey::from_bytes(r.take(WrappedKey::LEN)?)?;
    r.finish()?;
    if key.meta().purpose != Purpose::Device {
        return Err(Error::Malformed { what: W, reason: "it holds a key that is not a device secret" });
    }
    Ok(DeviceSlot { account, device_id, key })
}

fn parse_slot(body: &[u8]) -> Result<DataSlot, Error> {
    let mut r = Reader::new(body, "data key slot");
    let state = match r.u8()? {
        1 => SlotState::Live,
        2 => SlotState::Pending,
        code => {
            return Err(Error::UnknownCode { what: "slot state", code });
        }
    };
    let len = r.u8()?;
    let name = std::str::from_utf8(r.take(usize::from(len))?)
        .map_err(|_| Error::Malformed { what: "data key slot", reason: "account name is not UTF-8" })?;
    let account = AccountName::new(name)?;
    let key = WrappedKey::from_bytes(r.take(WrappedKey::LEN)?)?;
    r.finish()?;
    if !Purpose::DATA.contains(&key.meta().purpose) {
        return Err(Error::Malformed { what: "data key slot", reason: "it holds a key that is not a data key" });
    }
    Ok(DataSlot { account, state, key })
}

/// Names a section for an error, reading what it can from bytes that failed their check.
fn section_name(index: u16, kind: u8, body: &[u8]) -> String {
    let what = match kind {
        1 => "vault id".to_owned(),
        2 => "keystore parameters".to_owned(),
        3 => "master key".to_owned(),
        4 => match parse_slot(body) {
            Ok(slot) => slot.describe(),
            Err(_) => "a data key".to_owned(),
        },
        5 => match parse_lease(body) {
            Ok(l) => format!("account '{}' lease", l.account),
            Err(_) => "a lease".to_owned(),
        },
        6 => match parse_device(body) {
            Ok(d) => format!("account '{}' device secret", d.account),
            Err(_) => "a device secret".to_owned(),
        },
        7 => match OwedLogout::from_bytes(body) {
            Ok(o) => format!("account '{}' owed logout", o.account),
            Err(_) => "an owed logout".to_owned(),
        },
        8 => "recovery key".to_owned(),
        _ => "an unknown section".to_owned(),
    };
    format!("key file section {index} ({what})")
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;
    use crate::{DataKey, Kek, KeyId, KeyMeta, MasterKey, SlotContext};

    fn sample() -> KeyFile {
        let vault = VaultId::from_bytes([7; 16]);
        let keystore = KeystoreParams::Passphrase { kdf: KdfParams::DEFAULT, salt: [5; 16] };
        let kek = Kek::from_bytes(Zeroizing::new([1; 32]));
        let master = MasterKey::from_bytes(Zeroizing::new([2; 32]));
        let bound = keystore.to_bytes();
        let mctx = SlotContext { vault: &vault, account: "", bound: &bound };
        let mmeta = KeyMeta { purpose: Purpose::Master, version: 1, key_id: KeyId::from_bytes([3; 16]) };
        let wrapped_master = kek.seal_master(&master, mmeta, &mctx, [4; 12]);
        let account = AccountName::new("alice").expect("valid");
        let slots = Purpose::DATA
            .iter()
            .enumerate()
            .map(|(i, &purpose)| {
                let ctx = SlotContext { vault: &vault, account: "alice", bound: b"" };
                let meta = KeyMeta { purpose, version: 1, key_id: KeyId::from_bytes([10 + i as u8; 16]) };
                let dk = DataKey::from_bytes(Zeroizing::new([20 + i as u8; 32]));
                DataSlot {
                    account: account.clone(),
                    state: SlotState::Live,
                    key: master.seal_data_key(&dk, meta, &ctx, [i as u8; 12]),
                }
            })
            .collect();
        KeyFile {
            vault,
            generation: 9,
            keystore,
            master: wrapped_master,
            slots,
            leases: vec![],
            devices: vec![],
            owed: vec![],
            recovery: None,
        }
    }

    #[test]
    fn a_synced_accounts_lease_and_device_secret_round_trip_as_version_2() {
        let mut f = sample();
        assert_eq!(f.to_bytes()[4], 1, "no lease: the version-1 layout");
        let master = MasterKey::from_bytes(Zeroizing::new([2; 32]));
        let alice = AccountName::new("alice").expect("valid");
        let meta = |purpose| KeyMeta { purpose, version: 1, key_id: KeyId::from_bytes([9; 16]) };
        let bound = crate::wrap::lease_bound("l_1", 1_900_000_000);
        let ctx = SlotContext { vault: &f.vault, account: "alice", bound: &bound };
        let lease = master.seal_sync_secret(&[6; 32], meta(Purpose::Lease), &ctx, [1; 12]);
        f.leases.push(LeaseSlot {
            account: alice.clone(),
            lease_id: "l_1".into(),
            expires_at: 1_900_000_000,
            key: Some(lease),
        });
        let dbound = crate::wrap::device_bound("d_1");
        let dctx = SlotContext { vault: &f.vault, account: "alice", bound: &dbound };
        let device = master.seal_sync_secret(&[8; 32], meta(Purpose::Device), &dctx, [2; 12]);
        f.devices.push(DeviceSlot { account: alice.clone(), device_id: "d_1".into(), key: device });
        let bytes = f.to_bytes();
        assert_eq!(bytes[4], 2);
        let back = KeyFile::from_bytes(&bytes).expect("parses");
        assert_eq!(back, f);
        assert_eq!(back.to_bytes(), bytes);
        let l = back.lease(&alice).and_then(|l| l.key.clone()).expect("lease key");
        assert_eq!(*l.open_sync_secret(&master, &ctx).expect("opens"), [6; 32]);
        // The expiry is bound: a lease moved forward on disk does not open.
        let later = crate::wrap::lease_bound("l_1", 1_900_000_001);
        assert!(l.open_sync_secret(&master, &SlotContext { bound: &later, ..ctx }).is_err());
        // An ended lease keeps its id and expiry, without the key.
        f.leases[0].key = None;
        assert_eq!(KeyFile::from_bytes(&f.to_bytes()).expect("parses"), f);
        // A lease section in a version-1 file, or for no account, is refused.
        let mut v1 = f.to_bytes();
        v1[4] = 1;
        assert!(KeyFile::from_bytes(&v1).is_err());
        let mut orphan = f.clone();
        orphan.leases[0].account = AccountName::new("bob").expect("valid");
        assert!(KeyFile::from_bytes(&orphan.to_bytes()).is_err());
    }

    #[test]
    fn an_owed_logout_is_written_as_version_3_and_only_while_it_is_owed() {
        let mut f = sample();
        let master = MasterKey::from_bytes(Zeroizing::new([2; 32]));
        let alice = AccountName::new("alice").expect("valid");
        let owed = crate::OwedLogout::seal(&master, &f.vault, &alice, "d_0", b"{}", [5; 12]).expect("seals");
        f.owed.push(owed.clone());
        let bytes = f.to_bytes();
        assert_eq!(bytes[4], 3);
        assert_eq!(KeyFile::from_bytes(&bytes).expect("parses"), f);
        // Two records for one device are refused; settled, the file is version 1 again.
        let mut twice = f.clone();
        twice.owed.push(owed);
        assert!(KeyFile::from_bytes(&twice.to_bytes()).is_err());
        f.owed.clear();
        assert_eq!(f.to_bytes()[4], 1);
    }

    #[test]
    fn a_recovery_section_is_written_as_version_4_once_and_last() {
        let mut f = sample();
        let master = MasterKey::from_bytes(Zeroizing::new([2; 32]));
        let rk = crate::RecoveryKey::from_bytes(Zeroizing::new([9; 32]));
        let slot = crate::RecoverySlot::seal(
            &rk,
            &master,
            f.master.meta(),
            &f.vault,
            KeyId::from_bytes([8; 16]),
            1_800_000_000,
            [[1; 12], [2; 12]],
        );
        f.recovery = Some(slot.clone());
        let bytes = f.to_bytes();
        assert_eq!(bytes[4], 4);
        let back = KeyFile::from_bytes(&bytes).expect("parses");
        assert_eq!(back, f);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.recovery.expect("kept").open(&rk, &f.vault).expect("opens").expose_secret(), &[2; 32]);
        // A recovery section in an older version, or two of them, is refused.
        for v in [1, 2, 3] {
            let mut b = bytes.clone();
            b[4] = v;
            assert!(KeyFile::from_bytes(&b).is_err(), "version {v}");
        }
        let mut twice = bytes.clone();
        let section = bytes[bytes.len() - (3 + crate::RecoverySlot::BODY_LEN + 8)..].to_vec();
        twice.extend_from_slice(&section);
        let count = u16::from_be_bytes([bytes[6], bytes[7]]) + 1;
        twice[6..8].copy_from_slice(&count.to_be_bytes());
        assert!(matches!(KeyFile::from_bytes(&twice), Err(Error::Malformed { .. })));
        // Without it the file is version 1 again.
        f.recovery = None;
        assert_eq!(f.to_bytes()[4], 1);
    }

    #[test]
    fn key_file_round_trips_exactly_to_the_byte() {
        let f = sample();
        let bytes = f.to_bytes();
        let back = KeyFile::from_bytes(&bytes).expect("parses");
        assert_eq!(back, f);
        assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn a_flipped_bit_anywhere_is_reported_and_names_its_section() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let err = KeyFile::from_bytes(&b).expect_err("any flip is caught");
            if i >= 8 {
                let msg = err.to_string();
                assert!(msg.contains("section") || msg.contains("key file"), "byte {i}: {msg}");
            }
        }
        // A flip inside the second data slot's sealed bytes names that slot.
        let slot_start = bytes.len() - 2 * (3 + 1 + 1 + 5 + WrappedKey::LEN + 8);
        let mut b = bytes.clone();
        b[slot_start + 60] ^= 1;
        let msg = KeyFile::from_bytes(&b).expect_err("caught").to_string();
        assert_eq!(msg, "key file section 5 (account 'alice' files key v1) is corrupt: its checksum does not match");
    }

    #[test]
    fn truncation_at_every_length_is_an_error_never_a_panic() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            assert!(KeyFile::from_bytes(&bytes[..len]).is_err(), "length {len}");
        }
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 3]);
        assert!(matches!(KeyFile::from_bytes(&long), Err(Error::TrailingBytes { .. })));
    }

    #[test]
    fn a_pending_key_without_a_live_one_or_an_account_missing_a_purpose_is_refused() {
        let mut f = sample();
        f.slots[0].state = SlotState::Pending;
        let err = KeyFile::from_bytes(&f.to_bytes()).expect_err("pending alone");
        assert!(err.to_string().contains("no live key beside it"), "{err}");
        let mut f = sample();
        f.slots.remove(2);
        let err = KeyFile::from_bytes(&f.to_bytes()).expect_err("sync key missing");
        assert!(err.to_string().contains("lacks a live"), "{err}");
    }

    #[test]
    fn two_live_keys_for_one_purpose_are_refused() {
        let mut f = sample();
        let mut dup = f.slots[0].clone();
        dup.key = {
            let mut b = dup.key.to_bytes();
            b[11] = 2; // version 2, still live
            WrappedKey::from_bytes(&b).expect("well-formed")
        };
        f.slots.push(dup);
        assert!(matches!(KeyFile::from_bytes(&f.to_bytes()), Err(Error::Malformed { .. })));
    }
}
