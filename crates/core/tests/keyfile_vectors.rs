//! Walks `tests/vectors/key-file/`: key files, vault markers and unlock counters. Each file
//! has `kind` (key_file, marker, counter), `bytes` (hex) and `expect`: `ok`, or the error
//! the reader must give (`checksum`, `truncated`, `trailing_bytes`, `bad_magic`,
//! `unsupported_version`, `malformed`, `kdf_params`, `unknown_code`). `ok` vectors must
//! re-encode to the same bytes. `FIELDVAULT_WRITE_VECTORS=1` rewrites them (new format
//! version only); `check_key_file.py` re-checks the checksums independently.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{hex, parse, unhex};
use fieldvault_core::{
    AccountName, DataKey, DataSlot, Error, KdfParams, Kek, KeyFile, KeyId, KeyMeta, KeystoreParams, MasterKey,
    OwedLogout, Purpose, RecoveryKey, RecoverySlot, SlotContext, SlotState, UnlockCounter, VaultId, VaultMarker,
};
use zeroize::Zeroizing;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/key-file")
}

fn name(e: &Error) -> &'static str {
    match e {
        Error::ChecksumMismatch { .. } => "checksum",
        Error::Truncated { .. } => "truncated",
        Error::TrailingBytes { .. } => "trailing_bytes",
        Error::BadMagic { .. } => "bad_magic",
        Error::UnsupportedVersion { .. } => "unsupported_version",
        Error::Malformed { .. } => "malformed",
        Error::KdfParams(_) => "kdf_params",
        Error::UnknownCode { .. } => "unknown_code",
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn every_key_record_vector_gives_its_expected_outcome() {
    if std::env::var_os("FIELDVAULT_WRITE_VECTORS").is_some() {
        write_vectors();
    }
    let mut seen = 0;
    for entry in fs::read_dir(dir()).expect("vector directory") {
        let path = entry.expect("entry").path();
        let file = path.file_name().expect("name").to_string_lossy().into_owned();
        let v = parse(&path);
        let bytes = unhex(&v["bytes"]);
        let (got, back) = match v["kind"].as_str() {
            "key_file" => match KeyFile::from_bytes(&bytes) {
                Ok(f) => ("ok", Some(f.to_bytes())),
                Err(e) => (name(&e), None),
            },
            "marker" => match VaultMarker::from_bytes(&bytes) {
                Ok(m) => ("ok", Some(m.to_bytes())),
                Err(e) => (name(&e), None),
            },
            "counter" => match UnlockCounter::from_bytes(&bytes) {
                Ok(c) => ("ok", Some(c.to_bytes())),
                Err(e) => (name(&e), None),
            },
            other => panic!("{file}: unknown kind {other}"),
        };
        assert_eq!(got, v["expect"], "{file}");
        if let Some(back) = back {
            assert_eq!(hex(&back), v["bytes"], "{file}: re-encodes to the same bytes");
        }
        seen += 1;
    }
    assert!(seen >= 12, "only {seen} vectors");
}

// ---- generator -------------------------------------------------------------------------

fn sample(kdf: KdfParams) -> KeyFile {
    let vault = VaultId::from_bytes([0x76; 16]);
    let keystore = KeystoreParams::Passphrase { kdf, salt: [0x73; 16] };
    let bound = keystore.to_bytes();
    let master = MasterKey::from_bytes(Zeroizing::new([0x6d; 32]));
    let kek = Kek::from_bytes(Zeroizing::new([0x4b; 32]));
    let mmeta = KeyMeta { purpose: Purpose::Master, version: 1, key_id: KeyId::from_bytes([1; 16]) };
    let wrapped =
        kek.seal_master(&master, mmeta, &SlotContext { vault: &vault, account: "", bound: &bound }, [0x0a; 12]);
    let alice = AccountName::new("alice").expect("valid");
    let slots = Purpose::DATA
        .iter()
        .enumerate()
        .map(|(i, &purpose)| {
            let meta = KeyMeta { purpose, version: 1, key_id: KeyId::from_bytes([0x10 + i as u8; 16]) };
            let dk = DataKey::from_bytes(Zeroizing::new([0x20 + i as u8; 32]));
            let key = master.seal_data_key(
                &dk,
                meta,
                &SlotContext { vault: &vault, account: "alice", bound: b"" },
                [i as u8; 12],
            );
            DataSlot { account: alice.clone(), state: SlotState::Live, key }
        })
        .collect();
    KeyFile {
        vault,
        generation: 3,
        keystore,
        master: wrapped,
        slots,
        leases: vec![],
        devices: vec![],
        owed: vec![],
        recovery: None,
    }
}

/// The sample with `alice` synced: a lease (L = 0x66.., id l_1, expiring 2030-03-17) and a
/// device secret (0x88.., device d_1), both wrapped by the master key.
fn synced_sample() -> KeyFile {
    use fieldvault_core::{DeviceSlot, LeaseSlot, device_bound, lease_bound};
    let mut f = sample(KdfParams::DEFAULT);
    let master = MasterKey::from_bytes(Zeroizing::new([0x6d; 32]));
    let alice = AccountName::new("alice").expect("valid");
    let meta = |purpose, id| KeyMeta { purpose, version: 1, key_id: KeyId::from_bytes([id; 16]) };
    let lb = lease_bound("l_1", 1_900_000_000);
    let lease = master.seal_sync_secret(
        &[0x66; 32],
        meta(Purpose::Lease, 0x31),
        &SlotContext { vault: &f.vault, account: "alice", bound: &lb },
        [0x41; 12],
    );
    f.leases.push(LeaseSlot {
        account: alice.clone(),
        lease_id: "l_1".into(),
        expires_at: 1_900_000_000,
        key: Some(lease),
    });
    let db = device_bound("d_1");
    let device = master.seal_sync_secret(
        &[0x88; 32],
        meta(Purpose::Device, 0x32),
        &SlotContext { vault: &f.vault, account: "alice", bound: &db },
        [0x42; 12],
    );
    f.devices.push(DeviceSlot { account: alice, device_id: "d_1".into(), key: device });
    f
}

fn write(name: &str, kind: &str, note: &str, bytes: &[u8], expect: &str) {
    let text = format!("# {note}\nkind = {kind}\nbytes = {}\nexpect = {expect}\n", hex(bytes));
    fs::write(dir().join(name), text).expect("write vector");
}

fn write_vectors() {
    let good = sample(KdfParams::DEFAULT).to_bytes();
    let edit = |i: usize, x: u8| {
        let mut b = good.clone();
        b[i] ^= x;
        b
    };
    write("ok_key_file", "key_file", "passphrase keystore, one account with its three live data keys", &good, "ok");
    write("fail_key_file_flipped_bit", "key_file", "a bit of the master slot flipped", &edit(60, 1), "checksum");
    write("fail_key_file_truncated", "key_file", "the last byte missing", &good[..good.len() - 1], "truncated");
    let mut long = good.clone();
    long.push(0);
    write("fail_key_file_trailing_byte", "key_file", "one byte appended", &long, "trailing_bytes");
    write("fail_key_file_bad_magic", "key_file", "not a key file", &edit(0, 0x20), "bad_magic");
    write("fail_key_file_version_5", "key_file", "format version 5", &edit(4, 4), "unsupported_version");
    write(
        "fail_key_file_version_4_without_recovery",
        "key_file",
        "version 4 with no recovery section",
        &edit(4, 5),
        "malformed",
    );
    write(
        "fail_key_file_version_3_without_owed",
        "key_file",
        "version 3 with no owed-logout section",
        &edit(4, 2),
        "malformed",
    );
    write(
        "fail_key_file_version_2_without_lease",
        "key_file",
        "version 2 with no lease or device section",
        &edit(4, 3),
        "malformed",
    );
    let synced = synced_sample();
    write(
        "ok_key_file_synced",
        "key_file",
        "version 2: one synced account with its lease (L wrapped by the master key, bound to its id and expiry) and device secret",
        &synced.to_bytes(),
        "ok",
    );
    let mut owed = synced.clone();
    owed.owed.push(
        OwedLogout::seal(
            &MasterKey::from_bytes(Zeroizing::new([0x6d; 32])),
            &owed.vault,
            &AccountName::new("alice").expect("valid"),
            "d_0",
            br#"{"server":"https://sync.example:8443"}"#,
            [0x43; 12],
        )
        .expect("seals"),
    );
    write(
        "ok_key_file_owed_logout",
        "key_file",
        "version 3: the synced account plus a logout owed to the server for its earlier device d_0 (record sealed under the master key)",
        &owed.to_bytes(),
        "ok",
    );
    let mut recovery = synced.clone();
    let mut rk = [0u8; 32];
    for (i, b) in rk.iter_mut().enumerate() {
        *b = i as u8;
    }
    recovery.recovery = Some(RecoverySlot::seal(
        &RecoveryKey::from_bytes(Zeroizing::new(rk)),
        &MasterKey::from_bytes(Zeroizing::new([0x6d; 32])),
        recovery.master.meta(),
        &recovery.vault,
        KeyId::from_bytes([0x52; 16]),
        1_800_000_000,
        [[0x44; 12], [0x45; 12]],
    ));
    write(
        "ok_key_file_recovery",
        "key_file",
        "version 4: the synced account plus a recovery section (recovery key 00 01 .. 1f, id 5252..52, made at 1 800 000 000)",
        &recovery.to_bytes(),
        "ok",
    );
    let mut orphan = synced.clone();
    orphan.leases[0].account = AccountName::new("bob").expect("valid");
    write(
        "fail_key_file_lease_for_no_account",
        "key_file",
        "a lease section for an account with no keys",
        &orphan.to_bytes(),
        "malformed",
    );
    let weak = sample(KdfParams { m_cost_kib: 32 * 1024, t_cost: 3, p_cost: 1 }).to_bytes();
    write(
        "fail_key_file_kdf_below_minimum",
        "key_file",
        "Argon2id memory 32 MiB (readers refuse < 64 MiB)",
        &weak,
        "kdf_params",
    );
    let mut f = sample(KdfParams::DEFAULT);
    f.slots[0].state = SlotState::Pending;
    write(
        "fail_key_file_pending_without_live",
        "key_file",
        "the database key pending with no live one",
        &f.to_bytes(),
        "malformed",
    );
    let mut f = sample(KdfParams::DEFAULT);
    f.slots.pop();
    write("fail_key_file_account_missing_a_key", "key_file", "alice has no sync key", &f.to_bytes(), "malformed");
    let marker = VaultMarker { vault: VaultId::from_bytes([0x76; 16]) }.to_bytes();
    write("ok_marker", "marker", "vault 7676...76", &marker, "ok");
    let mut m = marker.clone();
    m[8] ^= 1;
    write("fail_marker_flipped_bit", "marker", "a bit of the vault id flipped", &m, "checksum");
    let counter = UnlockCounter { failures: 5, last_failure_unix: 1_764_000_000 }.to_bytes();
    write("ok_counter", "counter", "5 failures, the last at 1764000000", &counter, "ok");
    let mut c = counter.clone();
    c[8] ^= 1;
    write("fail_counter_flipped_bit", "counter", "the failure count edited", &c, "checksum");
}
