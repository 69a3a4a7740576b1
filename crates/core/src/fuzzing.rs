//! Entry points for the fuzz targets under `fuzz/`: each parses untrusted bytes, and where
//! parsing succeeds, writes the value back and checks it round-trips exactly. They must
//! never panic, whatever the input.

use std::io::Cursor;

use zeroize::Zeroizing;

use crate::attachment::{Decryptor, Header, check_without_key};
use crate::{AccountName, ContentKey, KeyFile, VaultMarker, WrappedKey};

/// Attachment bytes: the header round-trips; the keyless check and a full decryption
/// (under a fixed key) either succeed or fail with an error.
pub fn attachment(data: &[u8]) {
    if let Ok((header, len)) = Header::parse(data) {
        assert_eq!(header.to_bytes(), data[..len], "an attachment header re-encodes to its bytes");
    }
    let _ = check_without_key(Cursor::new(data));
    let cek = ContentKey::from_bytes(Zeroizing::new([0x43; 32]));
    let account = AccountName::new("alice").expect("valid");
    if let Ok(d) = Decryptor::open(Cursor::new(data), &cek, &[0xa7; 16], &account) {
        let _ = d.decrypt_to(std::io::sink());
    }
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
