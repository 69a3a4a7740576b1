//! Walks the named vector files under `tests/vectors/wrapped-key/`.
//!
//! Each file is `name = hex-or-text` lines. `ok_*` vectors must parse, open to `key`, and
//! re-encode to the same bytes; `fail_*` vectors must be refused with the error named by
//! `expect`. Set `FIELDVAULT_WRITE_VECTORS=1` to (re)write them from the generator below:
//! do so only for a new format version, never to make a failing test pass.

mod common;

use common::{hex, parse, unhex};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use fieldvault_core::{
    DataKey, Error, KdfParams, Kek, KeyId, KeyMeta, KeystoreParams, MasterKey, Purpose, SlotContext, VaultId,
    WrappedKey,
};
use zeroize::Zeroizing;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/wrapped-key")
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().expect("length")
}

/// Classifies a result as the vector files name it.
fn outcome(v: &BTreeMap<String, String>) -> (String, Option<Zeroizing<[u8; 32]>>) {
    let wrapped = match WrappedKey::from_bytes(&unhex(&v["wrapped"])) {
        Ok(w) => w,
        Err(e) => return (error_name(&e), None),
    };
    assert_eq!(hex(&wrapped.to_bytes()), v["wrapped"], "re-encodes to the same bytes");
    let vault = VaultId::from_bytes(arr(&v["vault"]));
    let bound = unhex(&v["bound"]);
    let ctx = SlotContext { vault: &vault, account: &v["account"], bound: &bound };
    let wrapping = Zeroizing::new(arr::<32>(&v["wrapping_key"]));
    let opened = if wrapped.meta().purpose == Purpose::Master {
        wrapped.open_master(&Kek::from_bytes(wrapping), &ctx).map(|k| Zeroizing::new(*k.expose_secret()))
    } else {
        wrapped.open_data_key(&MasterKey::from_bytes(wrapping), &ctx).map(|k| Zeroizing::new(*k.expose_secret()))
    };
    match opened {
        Ok(k) => ("ok".into(), Some(k)),
        Err(e) => (error_name(&e), None),
    }
}

fn error_name(e: &Error) -> String {
    match e {
        Error::Truncated { .. } => "truncated",
        Error::TrailingBytes { .. } => "trailing_bytes",
        Error::BadMagic { .. } => "bad_magic",
        Error::UnsupportedVersion { .. } => "unsupported_version",
        Error::UnknownCode { .. } => "unknown_code",
        Error::Malformed { .. } => "malformed",
        Error::WrongKey { .. } => "wrong_key",
        Error::Tampered { .. } => "tampered",
        other => panic!("unexpected error kind: {other}"),
    }
    .into()
}

#[test]
fn every_wrapped_key_vector_gives_its_expected_outcome() {
    if std::env::var_os("FIELDVAULT_WRITE_VECTORS").is_some() {
        write_vectors();
    }
    let mut seen = 0;
    for entry in fs::read_dir(dir()).expect("vector directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let v = parse(&path);
        let (got, key) = outcome(&v);
        assert_eq!(got, v["expect"], "{name}");
        if name.starts_with("ok_") {
            assert_eq!(hex(key.expect("opened").as_ref()), v["key"], "{name}");
        } else {
            assert!(name.starts_with("fail_") && got != "ok", "{name}");
        }
        seen += 1;
    }
    assert!(seen >= 12, "only {seen} vectors found");
}

// ---- generator -------------------------------------------------------------------------

struct Vector {
    wrapping_key: [u8; 32],
    vault: [u8; 16],
    account: &'static str,
    bound: Vec<u8>,
    key: [u8; 32],
    wrapped: Vec<u8>,
    expect: &'static str,
    note: &'static str,
}

fn write(name: &str, v: &Vector) {
    let text = format!(
        "# {}\nwrapping_key = {}\nvault = {}\naccount = {}\nbound = {}\nkey = {}\nwrapped = {}\nexpect = {}\n",
        v.note,
        hex(&v.wrapping_key),
        hex(&v.vault),
        v.account,
        hex(&v.bound),
        hex(&v.key),
        hex(&v.wrapped),
        v.expect
    );
    fs::write(dir().join(name), text).expect("write vector");
}

fn write_vectors() {
    let kek = [0x4b; 32];
    let master = [0x6d; 32];
    let db = [0x64; 32];
    let vault = [0x76; 16];
    let params = KeystoreParams::Passphrase { kdf: KdfParams::DEFAULT, salt: [0x73; 16] }.to_bytes();
    let mctx = SlotContext { vault: &VaultId::from_bytes(vault), account: "", bound: &params };
    let mmeta = KeyMeta { purpose: Purpose::Master, version: 1, key_id: KeyId::from_bytes([0x01; 16]) };
    let wm = Kek::from_bytes(Zeroizing::new(kek)).seal_master(
        &MasterKey::from_bytes(Zeroizing::new(master)),
        mmeta,
        &mctx,
        [0x0a; 12],
    );
    let master_vec = |wrapped: Vec<u8>, expect, note| Vector {
        wrapping_key: kek,
        vault,
        account: "",
        bound: params.clone(),
        key: master,
        wrapped,
        expect,
        note,
    };
    write(
        "ok_master_key_v1",
        &master_vec(wm.to_bytes().to_vec(), "ok", "master key v1 sealed by a passphrase KEK; bound = keystore section"),
    );
    let mut lowered = params.clone();
    lowered[4] ^= 1; // m_cost changed: the parameters are associated data
    let mut v = master_vec(wm.to_bytes().to_vec(), "tampered", "keystore parameters edited after sealing");
    v.bound = lowered;
    write("fail_kdf_parameters_edited", &v);

    let dctx = SlotContext { vault: &VaultId::from_bytes(vault), account: "alice", bound: b"" };
    let dmeta = KeyMeta { purpose: Purpose::Database, version: 3, key_id: KeyId::from_bytes([0x02; 16]) };
    let wd = MasterKey::from_bytes(Zeroizing::new(master)).seal_data_key(
        &DataKey::from_bytes(Zeroizing::new(db)),
        dmeta,
        &dctx,
        [0x0b; 12],
    );
    let good = wd.to_bytes().to_vec();
    let data_vec = |wrapped: Vec<u8>, expect, note| Vector {
        wrapping_key: master,
        vault,
        account: "alice",
        bound: Vec::new(),
        key: db,
        wrapped,
        expect,
        note,
    };
    let edit = |i: usize, x: u8| {
        let mut b = good.clone();
        b[i] ^= x;
        b
    };
    write(
        "ok_database_key_v3",
        &data_vec(good.clone(), "ok", "account 'alice' database key v3 sealed by the master key"),
    );
    let mut v = data_vec(good.clone(), "wrong_key", "opened with another master key: the canary says so");
    v.wrapping_key = [0x6e; 32];
    write("fail_wrong_wrapping_key", &v);
    let mut v = data_vec(good.clone(), "tampered", "alice's key presented as bob's");
    v.account = "bob";
    write("fail_moved_to_other_account", &v);
    let mut v = data_vec(good.clone(), "tampered", "another vault id");
    v.vault = [0x77; 16];
    write("fail_moved_to_other_vault", &v);
    write("fail_flipped_ciphertext_bit", &data_vec(edit(60, 0x01), "tampered", "bit 0 of ciphertext byte 4 flipped"));
    write("fail_flipped_tag_bit", &data_vec(edit(103, 0x80), "tampered", "top bit of the last tag byte flipped"));
    write("fail_flipped_nonce_bit", &data_vec(edit(44, 0x01), "tampered", "nonce edited"));
    write("fail_relabelled_version", &data_vec(edit(11, 0x07), "tampered", "key version 3 relabelled as 4"));
    write(
        "fail_relabelled_purpose",
        &data_vec(edit(6, 0x01), "tampered", "purpose database (2) relabelled as files (3)"),
    );
    write("fail_relabelled_key_id", &data_vec(edit(20, 0xff), "tampered", "key id edited"));
    write("fail_truncated", &data_vec(good[..103].to_vec(), "truncated", "last byte missing"));
    let mut long = good.clone();
    long.push(0);
    write("fail_trailing_byte", &data_vec(long, "trailing_bytes", "one byte appended"));
    write("fail_bad_magic", &data_vec(edit(0, 0x20), "bad_magic", "magic FVWK -> fVWK"));
    write("fail_unknown_version", &data_vec(edit(4, 0x03), "unsupported_version", "format version 2"));
    write("fail_unknown_algorithm", &data_vec(edit(5, 0x03), "unknown_code", "algorithm 2 is not defined"));
    write("fail_unknown_purpose", &data_vec(edit(6, 0x0f), "unknown_code", "purpose 13 is not defined"));
    write("fail_reserved_flags_set", &data_vec(edit(7, 0x01), "malformed", "reserved flags byte is 1"));
    let mut zero = good.clone();
    zero[8..12].copy_from_slice(&[0; 4]);
    write("fail_version_zero", &data_vec(zero, "malformed", "key version 0"));
}
