//! Walks the named vector files under `tests/vectors/attachment/`.
//!
//! Each file is `name = value` lines: `cek`, `attachment` (hex id), what the file is opened
//! as (`account` for a version 1 file; `collection` and `document` for a version 2 file),
//! `plaintext` (hex, for ok vectors), `file` (hex) and `expect`: `ok`, `manifest`, `chunk N`,
//! `mismatch`, `unsupported_version` or `unknown_code`. `ok_*` vectors must decrypt to
//! `plaintext` and pass the keyless check; `fail_*` must be refused with the named error and
//! release no plaintext. Version 2 vectors have `v2` in their names; the others are
//! version 1, kept because readers still read it. `FIELDVAULT_WRITE_VECTORS=1` rewrites them
//! from the generator below (only for a new format version; the bytes are reproducible, and
//! the files it rewrote must not change otherwise). `check_attachment.py` re-checks the ok
//! vectors, and the relabelled version 2 ones, with independent implementations.

mod common;

use common::{hex, parse, unhex};

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use fieldvault_core::attachment::{Algorithm, Binding, Decryptor, Encryptor, Header, Owner, check_without_key};
use fieldvault_core::{AccountName, ContentKey, Error};
use zeroize::Zeroizing;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/attachment")
}

fn outcome(v: &BTreeMap<String, String>) -> (String, Vec<u8>) {
    let file = unhex(&v["file"]);
    let cek = ContentKey::from_bytes(Zeroizing::new(unhex(&v["cek"]).try_into().expect("32 bytes")));
    let id: [u8; 16] = unhex(&v["attachment"]).try_into().expect("16 bytes");
    // What a vector does not name plays no part in its version: a placeholder that names
    // nothing the vectors use.
    let field = |name: &str| v.get(name).map_or("unused", String::as_str);
    let account = AccountName::new(field("account")).expect("valid");
    let owner = Owner { account: &account, collection: field("collection"), doc_id: field("document") };
    let name = |e: &Error| match e {
        Error::AttachmentManifest { .. } => "manifest".to_owned(),
        Error::AttachmentChunk { index, .. } => format!("chunk {index}"),
        Error::AttachmentMismatch { .. } => "mismatch".to_owned(),
        Error::UnsupportedVersion { .. } => "unsupported_version".to_owned(),
        Error::UnknownCode { .. } => "unknown_code".to_owned(),
        other => format!("other: {other}"),
    };
    let d = match Decryptor::open(Cursor::new(&file), &cek, &id, &owner) {
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
    assert!(seen >= 25, "only {seen} vectors");
}

// ---- generator -------------------------------------------------------------------------

const CEK: [u8; 32] = [0x43; 32];
const ID: [u8; 16] = [0xa7; 16];
/// The version 1 vectors' account, and the version 2 vectors' document.
const ACCOUNT: &str = "alice";
const COLLECTION: &str = "visits";
const DOCUMENT: &str = "visit/2024-06-01 é";

fn account() -> Binding {
    Binding::Account(AccountName::new(ACCOUNT).expect("valid"))
}

fn document(collection: &str, id: &str) -> Binding {
    Binding::Document { collection: collection.into(), id: id.into() }
}

fn encrypt(plain: &[u8], algorithm: Algorithm, id: [u8; 16], binding: Binding) -> Vec<u8> {
    let header = Header {
        algorithm,
        chunk_log2: 12,
        attachment: id,
        binding,
        salt: [0x5a; 32],
        nonce_prefix: [0x70, 0x72, 0x65, 0x66, 0x69, 0x78, 0x21],
    };
    let mut e = Encryptor::new(Vec::new(), &ContentKey::from_bytes(Zeroizing::new(CEK)), header).expect("header");
    e.write_all(plain).expect("write");
    e.finish().expect("finish").0
}

/// Writes one vector file. `opened_as` is what the file is opened as: the `account` line of
/// a version 1 vector, or the `collection` and `document` lines of a version 2 one.
fn write(name: &str, note: &str, cek: &[u8; 32], opened_as: &Binding, plain: &[u8], file: &[u8], expect: &str) {
    let opened_as = match opened_as {
        Binding::Account(account) => format!("account = {account}\n"),
        Binding::Document { collection, id } => format!("collection = {collection}\ndocument = {id}\n"),
    };
    let text = format!(
        "# {note}\ncek = {}\nattachment = {}\n{opened_as}plaintext = {}\nfile = {}\nexpect = {expect}\n",
        hex(cek),
        hex(&ID),
        hex(plain),
        hex(file)
    );
    fs::write(dir().join(name), text).expect("write vector");
}

fn write_vectors() {
    let plain: Vec<u8> = (0..4096 + 100).map(|i| (i * 7 % 256) as u8).collect();
    write_version_1(&plain);
    write_version_2(&plain);
}

/// The version 1 vectors (account-bound, read only), as they were first written.
fn write_version_1(plain: &[u8]) {
    let good = encrypt(plain, Algorithm::Aes256Gcm, ID, account());
    let hlen = Header::parse(&good).expect("header").1;
    let c1 = hlen + 4096 + 16; // start of chunk 1 (the final chunk, 100 bytes)
    let manifest = c1 + 100 + 16;
    let edit = |i: usize, x: u8| {
        let mut f = good.clone();
        f[i] ^= x;
        f
    };
    let alice = account();
    let ok = |name, note, p: &[u8], f: &[u8]| write(name, note, &CEK, &alice, p, f, "ok");
    let fail = |name, note, f: &[u8], expect| write(name, note, &CEK, &alice, plain, f, expect);
    let empty = encrypt(&[], Algorithm::Aes256Gcm, ID, account());
    ok("ok_empty", "an empty attachment: one empty final chunk", &[], &empty);
    let one = encrypt(&plain[..4096], Algorithm::Aes256Gcm, ID, account());
    ok("ok_exactly_one_chunk", "4096 bytes: one full final chunk", &plain[..4096], &one);
    ok("ok_two_chunks", "4196 bytes, AES-256-GCM, 4 KiB chunks", plain, &good);
    let chacha = encrypt(plain, Algorithm::ChaCha20Poly1305, ID, account());
    ok("ok_two_chunks_chacha", "the same under ChaCha20-Poly1305", plain, &chacha);
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
    let other = encrypt(plain, Algorithm::Aes256Gcm, [0xb8; 16], account());
    fail("fail_other_attachment", "attachment b8..b8's file presented as a7..a7", &other, "mismatch");
    let note = "opened with another content key";
    write("fail_wrong_key", note, &[0x44; 32], &alice, plain, &good, "manifest");
    // Version 2 is a known version now: the unknown one is 3.
    fail("fail_unknown_version", "format version 3", &edit(4, 2), "unsupported_version");
    fail("fail_unknown_algorithm", "algorithm 3", &edit(5, 2), "unknown_code");
}

/// The version 2 vectors: bound to document `DOCUMENT` of collection `COLLECTION`.
fn write_version_2(plain: &[u8]) {
    let doc = document(COLLECTION, DOCUMENT);
    let good = encrypt(plain, Algorithm::Aes256Gcm, ID, doc.clone());
    let hlen = Header::parse(&good).expect("header").1;
    assert_eq!(hlen, 8 + 16 + 1 + COLLECTION.len() + 2 + DOCUMENT.len() + 39);
    let c1 = hlen + 4096 + 16;
    let edit = |i: usize, x: u8| {
        let mut f = good.clone();
        f[i] ^= x;
        f
    };
    let fail = |name, note, opened_as, f: &[u8], expect| write(name, note, &CEK, opened_as, plain, f, expect);
    let ok = |name, note, p: &[u8], f: &[u8]| write(name, note, &CEK, &doc, p, f, "ok");
    let empty = encrypt(&[], Algorithm::Aes256Gcm, ID, doc.clone());
    ok("ok_v2_empty", "version 2, bound to its document: an empty attachment", &[], &empty);
    let one = encrypt(&plain[..4096], Algorithm::Aes256Gcm, ID, doc.clone());
    ok("ok_v2_exactly_one_chunk", "version 2: 4096 bytes, one full final chunk", &plain[..4096], &one);
    ok("ok_v2_two_chunks", "version 2: 4196 bytes, AES-256-GCM, 4 KiB chunks", plain, &good);
    let chacha = encrypt(plain, Algorithm::ChaCha20Poly1305, ID, doc.clone());
    ok("ok_v2_two_chunks_chacha", "version 2: the same under ChaCha20-Poly1305", plain, &chacha);
    // Relabelled: the header edited to name another document, opened as that document, so
    // only the MAC (the header is under it) can refuse it.
    let collection_at = 25; // after len8(collection)
    let relabelled = edit(collection_at + 5, b's' ^ b'z');
    let visitz = document("visitz", DOCUMENT);
    let note = "version 2: the collection relabelled visits -> visitz, opened as visitz";
    fail("fail_v2_edited_collection", note, &visitz, &relabelled, "manifest");
    let document_at = collection_at + COLLECTION.len() + 2;
    let relabelled = edit(document_at, b'v' ^ b'w');
    let wisit = document(COLLECTION, &DOCUMENT.replacen('v', "w", 1));
    let note = "version 2: the document id relabelled visit/... -> wisit/..., opened as wisit/...";
    fail("fail_v2_edited_document", note, &wisit, &relabelled, "manifest");
    // The version byte set to 1: the header reads as version 1 of account "visits" (its
    // collection length and name), 21 bytes shorter, so the chunks no longer fill the file.
    let as_v1 = edit(4, 2 ^ 1);
    let visits = Binding::Account(AccountName::new(COLLECTION).expect("valid"));
    let note = "version 2 relabelled version 1: read as account 'visits' and opened as it, the layout does not fit";
    fail("fail_v2_relabelled_version_1", note, &visits, &as_v1, "manifest");
    let other = document(COLLECTION, "visit/2024-06-02 é");
    let note = "an unedited version 2 file opened as another document of its collection";
    fail("fail_v2_other_document", note, &other, &good, "mismatch");
    let note = "version 2: a bit of chunk 1's tag flipped";
    fail("fail_v2_flipped_tag_bit", note, &doc, &edit(c1 + 100 + 3, 0x40), "chunk 1");
}
