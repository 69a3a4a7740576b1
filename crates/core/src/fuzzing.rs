//! Entry points for the fuzz targets under `fuzz/`: each parses untrusted bytes, and where
//! parsing succeeds, writes the value back and checks it round-trips exactly. They must
//! never panic, whatever the input.

use std::io::Cursor;

use zeroize::Zeroizing;

use crate::attachment::{Algorithm, Binding, Decryptor, Header, Owner, check_without_key, verify_manifest};
use crate::{AccountName, ContentKey, KeyFile, VaultMarker, WrappedKey};

/// The owner the committed attachment vectors are opened as (`tests/attachment_vectors.rs`).
const VECTOR_DOCUMENT: (&str, &str) = ("visits", "visit/2024-06-01 é");

/// Attachment bytes: a header of either version round-trips (bytes to header to the same
/// bytes, and a header built from the bytes to bytes and back); the keyless check, the
/// manifest's check and a full decryption (under a fixed key) either succeed or fail with an
/// error.
pub fn attachment(data: &[u8]) {
    if let Ok((header, len)) = Header::parse(data) {
        assert_eq!(header.to_bytes(), data[..len], "an attachment header re-encodes to its bytes");
        let cek = ContentKey::from_bytes(Zeroizing::new([0x43; 32]));
        let account = AccountName::new("alice").expect("valid");
        let owner = Owner { account: &account, collection: VECTOR_DOCUMENT.0, doc_id: VECTOR_DOCUMENT.1 };
        // The manifest as a server's metadata carries it: its length is the last 8 bytes.
        let tail = data.len().checked_sub(8).filter(|&t| t >= len).map(|t| &data[t..]);
        let manifest = tail
            .map(|t| u64::from_be_bytes(t.try_into().expect("8 bytes")))
            .and_then(|m| usize::try_from(m).ok())
            .filter(|&m| m <= data.len() - len);
        if let Some(m) = manifest {
            let _ = verify_manifest(&data[..len], &data[data.len() - m..], &cek, &header.attachment, &owner);
        }
    }
    for version in [1, 2] {
        header_from(data, version);
    }
    let _ = check_without_key(Cursor::new(data));
    let cek = ContentKey::from_bytes(Zeroizing::new([0x43; 32]));
    let account = AccountName::new("alice").expect("valid");
    let owner = Owner { account: &account, collection: VECTOR_DOCUMENT.0, doc_id: VECTOR_DOCUMENT.1 };
    if let Ok(d) = Decryptor::open(Cursor::new(data), &cek, &[0xa7; 16], &owner) {
        let _ = d.decrypt_to(std::io::sink());
    }
}

/// A header of `version` built from arbitrary bytes (names included, valid or not): one
/// that [`Header::check`] accepts encodes to bytes that parse back to it exactly, and one it
/// refuses encodes to bytes that [`Header::parse`] refuses.
fn header_from(data: &[u8], version: u8) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let names = data.get(56..).unwrap_or_default();
    let (first, rest) = names.split_at(usize::from(byte(0)).min(names.len()));
    let binding = if version == 1 {
        match std::str::from_utf8(first).ok().and_then(|n| AccountName::new(n).ok()) {
            Some(account) => Binding::Account(account),
            None => return,
        }
    } else {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Binding::Document { collection: text(first), id: text(rest) }
    };
    let header = Header {
        algorithm: if byte(1) & 1 == 0 { Algorithm::Aes256Gcm } else { Algorithm::ChaCha20Poly1305 },
        chunk_log2: byte(2) % 16 + 10,
        attachment: array(data, 3),
        binding,
        salt: array(data, 19),
        nonce_prefix: array(data, 51),
    };
    let bytes = header.to_bytes();
    match header.check() {
        Ok(()) => {
            let (back, len) = Header::parse(&bytes).expect("a checked header parses");
            assert_eq!((back, len), (header, bytes.len()), "a header of version {version} round-trips");
            assert!(bytes.len() <= Header::MAX_LEN, "a header fits Header::MAX_LEN");
        }
        Err(_) => assert!(Header::parse(&bytes).is_err(), "a header check refuses does not parse"),
    }
}

/// `N` bytes of `data` from `at`, zeros past its end.
fn array<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    std::array::from_fn(|i| data.get(at + i).copied().unwrap_or(0))
}

/// Sync input a device controls: a push op (JSON), an attachment header and manifest as a
/// server receives them, a cursor. Parsing either fails with an error or gives a value whose
/// fingerprint is stable, and deciding it against a stored document never panics.
pub fn sync(data: &[u8]) {
    use crate::protocol::sync::{CursorKey, StoredDoc, check_op, decide};
    use crate::rules::{RuleUser, Rules};
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(op) = check_op(&value)
    {
        assert_eq!(check_op(&value).map(|o| o.fingerprint), Ok(op.fingerprint), "a fingerprint is stable");
        let rules = Rules::owner_only();
        let user = RuleUser { id: "alice".into(), roles: vec![], attributes: serde_json::Map::new() };
        let stored = StoredDoc {
            owner: "alice".into(),
            version: 1,
            deleted: false,
            body: serde_json::json!({"owner": "alice", "n": 1}),
            attachments: vec!["00000000000000000000000000000001".into()],
        };
        let _ = decide(&rules, &user, &op.op, Some(&stored));
        let _ = decide(&rules, &user, &op.op, None);
    }
    if let Some((&split, rest)) = data.split_first() {
        let at = usize::from(split).min(rest.len());
        let _ = crate::attachment::Manifest::parse(&rest[..at], &rest[at..]);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = CursorKey::new(&[1; 32]).decode("alice", text);
    }
}

/// Key-file, wrapped-key and marker bytes: whatever parses re-encodes to the same bytes.
pub fn key_records(data: &[u8]) {
    if let Ok(f) = KeyFile::from_bytes(data) {
        assert_eq!(f.to_bytes(), data, "a key file re-encodes to its bytes");
    }
    if let Ok(w) = WrappedKey::from_bytes(data) {
        assert_eq!(w.to_bytes()[..], data[..], "a wrapped key re-encodes to its bytes");
    }
    if let Ok(m) = VaultMarker::from_bytes(data) {
        assert_eq!(m.to_bytes(), data, "a marker re-encodes to its bytes");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_points_accept_the_committed_vectors_and_junk() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/attachment");
        for e in std::fs::read_dir(dir).expect("vectors") {
            let text = std::fs::read_to_string(e.expect("entry").path()).expect("read");
            if let Some(line) = text.lines().find(|l| l.starts_with("file = ")) {
                let hex = &line[7..];
                let bytes: Vec<u8> =
                    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
                super::attachment(&bytes);
                for cut in [0, 1, 7, 30, bytes.len() / 2] {
                    super::attachment(&bytes[..cut.min(bytes.len())]);
                }
            }
        }
        super::key_records(&[]);
        for junk in [
            &b""[..],
            b"{}",
            br#"{"idempotency_key":"0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5f","collection":"c","id":"x","op":"put","body":{},"base_version":0}"#,
            br#"{"idempotency_key":"0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5f","collection":"c","id":"x","op":"delete","base_version":1}"#,
            b"FVAT",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            super::sync(junk);
        }
        super::key_records(b"FVKF\x01\x00\x00\x03");
    }
}
