//! Walks the named vector files under `tests/vectors/attachment/`.
//!
//! Each file is `name = value` lines: `cek`, `attachment` (hex id), `account`, `plaintext`
//! (hex, for ok vectors), `file` (hex) and `expect`: `ok`, `manifest`, `chunk N`,
//! `mismatch`, `unsupported_version` or `unknown_code`. `ok_*` vectors must decrypt to
//! `plaintext` and pass the keyless check; `fail_*` must be refused with the named error and
//! release no plaintext. `FIELDVAULT_WRITE_VECTORS=1` rewrites them from the generator
//! below (only for a new format version). `check_attachment.py` re-checks the ok vectors
//! with independent implementations.

mod common;

use common::{hex, parse, unhex};

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use fieldvault_core::attachment::{Algorithm, Decryptor, Encryptor, Header, check_without_key};
use fieldvault_core::{AccountName, ContentKey, Error};
use zeroize::Zeroizing;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/attachment")
}

fn outcome(v: &BTreeMap<String, String>) -> (String, Vec<u8>) {
    let file = unhex(&v["file"]);
    let cek = ContentKey::from_bytes(Zeroizing::new(unhex(&v["cek"]).try_into().expect("32 bytes")));
    let id: [u8; 16] = unhex(&v["attachment"]).try_into().expect("16 bytes");
    let account = AccountName::new(&v["account"]).expect("valid");
    let name = |e: &Error| match e {
        Error::AttachmentManifest { .. } => "manifest".to_owned(),
        Error::AttachmentChunk { index, .. } => format!("chunk {index}"),
        Error::AttachmentMismatch { .. } => "mismatch".to_owned(),
        Error::UnsupportedVersion { .. } => "unsupported_version".to_owned(),
        Error::UnknownCode { .. } => "unknown_code".to_owned(),
        other => format!("other: {other}"),
    };
    let d = match Decryptor::open(Cursor::new(&file), &cek, &id, &account) {
        Ok(d) => d,
        Err(e) => return (name(&e), Vec::new()),
    };
    let mut out = Vec::new();
    match d.decrypt_to(&mut out) {
        Ok(_) => ("ok".into(), out),
        Err(e) => (name(&e), out),
    }
}

#[test]
fn every_attachment_vector_gives_its_expected_outcome() {
    if std::env::var_os("FIELDVAULT_WRITE_VECTORS").is_some() {
        write_vectors();
    }
    let mut seen = 0;
    for entry in fs::read_dir(dir()).expect("vector directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        if name.ends_with(".py") {
            continue;
        }
        let v = parse(&path);
        let (got, out) = outcome(&v);
        assert_eq!(got, v["expect"], "{name}");
        if name.starts_with("ok_") {
            assert_eq!(hex(&out), v["plaintext"], "{name}");
            check_without_key(Cursor::new(unhex(&v["file"]))).expect("keyless check passes");
        } else {
            assert!(name.starts_with("fail_"), "{name}");
            assert!(out.is_empty(), "{name}: plaintext released");
        }
        seen += 1;
    }
    assert!(seen >= 15, "only {seen} vectors");
}

// ---- generator -------------------------------------------------------------------------

const CEK: [u8; 32] = [0x43; 32];
const ID: [u8; 16] = [0xa7; 16];

fn encrypt(plain: &[u8], algorithm: Algorithm, id: [u8; 16]) -> Vec<u8> {
    let header = Header {
        algorithm,
        chunk_log2: 12,
        attachment: id,
        account: AccountName::new("alice").expect("valid"),
        salt: [0x5a; 32],
        nonce_prefix: [0x70, 0x72, 0x65, 0x66, 0x69, 0x78, 0x21],
    };
    let mut e = Encryptor::new(Vec::new(), &ContentKey::from_bytes(Zeroizing::new(CEK)), header).expect("header");
    e.write_all(plain).expect("write");
    e.finish().expect("finish").0
}

fn write(name: &str, note: &str, cek: &[u8; 32], id: &[u8; 16], plain: &[u8], file: &[u8], expect: &str) {
    let text = format!(
        "# {note}\ncek = {}\nattachment = {}\naccount = alice\nplaintext = {}\nfile = {}\nexpect = {expect}\n",
        hex(cek),
        hex(id),
        hex(plain),
        hex(file)
    );
    fs::write(dir().join(name), text).expect("write vector");
}

fn write_vectors() {
    let plain: Vec<u8> = (0..4096 + 100).map(|i| (i * 7 % 256) as u8).collect();
    let good = encrypt(&plain, Algorithm::Aes256Gcm, ID);
    let hlen = Header::parse(&good).expect("header").1;
    let c1 = hlen + 4096 + 16; // start of chunk 1 (the final chunk, 100 bytes)
    let manifest = c1 + 100 + 16;
    let edit = |i: usize, x: u8| {
        let mut f = good.clone();
        f[i] ^= x;
        f
    };
    let ok = |name, note, p: &[u8], f: &[u8]| write(name, note, &CEK, &ID, p, f, "ok");
    let fail = |name, note, f: &[u8], expect| write(name, note, &CEK, &ID, &plain, f, expect);
    ok("ok_empty", "an empty attachment: one empty final chunk", &[], &encrypt(&[], Algorithm::Aes256Gcm, ID));
    ok(
        "ok_exactly_one_chunk",
        "4096 bytes: one full final chunk",
        &plain[..4096],
        &encrypt(&plain[..4096], Algorithm::Aes256Gcm, ID),
    );
    ok("ok_two_chunks", "4196 bytes, AES-256-GCM, 4 KiB chunks", &plain, &good);
    ok(
        "ok_two_chunks_chacha",
        "the same under ChaCha20-Poly1305",
        &plain,
        &encrypt(&plain, Algorithm::ChaCha20Poly1305, ID),
    );
    fail("fail_flipped_header_bit", "a bit of the salt flipped", &edit(40, 1), "manifest");
    fail("fail_flipped_chunk_bit", "a bit of chunk 0's ciphertext flipped", &edit(hlen + 10, 1), "chunk 0");
    fail("fail_flipped_tag_bit", "a bit of chunk 1's tag flipped", &edit(c1 + 100 + 3, 0x40), "chunk 1");
    fail(
        "fail_flipped_manifest_hash",
        "a bit of chunk 1's manifest hash flipped",
        &edit(manifest + 24 + 32, 1),
        "manifest",
    );
    fail("fail_flipped_root", "a bit of the root flipped", &edit(manifest + 24 + 64, 1), "manifest");
    fail("fail_flipped_mac", "a bit of the MAC flipped", &edit(manifest + 24 + 96, 1), "manifest");
    fail("fail_truncated_final_chunk", "the final chunk and manifest cut off", &good[..c1], "manifest");
    fail("fail_truncated_manifest", "the last byte missing", &good[..good.len() - 1], "manifest");
    let mut f = good.clone();
    f.push(0);
    fail("fail_trailing_byte", "one byte appended", &f, "manifest");
    let mut f = good[..c1].to_vec();
    f.extend_from_slice(&good[hlen..c1]);
    f.extend_from_slice(&good[c1..]);
    fail("fail_appended_chunk", "chunk 0 repeated before the final chunk", &f, "manifest");
    let other = encrypt(&plain, Algorithm::Aes256Gcm, [0xb8; 16]);
    fail("fail_other_attachment", "attachment b8..b8's file presented as a7..a7", &other, "mismatch");
    write("fail_wrong_key", "opened with another content key", &[0x44; 32], &ID, &plain, &good, "manifest");
    fail("fail_unknown_version", "format version 2", &edit(4, 3), "unsupported_version");
    fail("fail_unknown_algorithm", "algorithm 3", &edit(5, 2), "unknown_code");
}
