//! The database is a standard SQLCipher 4 file: another SQLCipher build (Python's
//! sqlcipher3-binary, SQLCipher 4.12) reads it with the raw key and the documented settings.

use std::path::Path;
use std::process::Command;

use fieldvault_client::Vault;
use fieldvault_core::{AccountName, Purpose};
use fieldvault_keystore::MemoryStore;
use serde_json::json;

fn sqlcipher3_available() -> bool {
    Command::new("python3").args(["-c", "import sqlcipher3"]).status().is_ok_and(|s| s.success())
}

#[test]
fn python_sqlcipher3_reads_the_documents_with_the_documented_settings() {
    if !sqlcipher3_available() {
        // CI sets FIELDVAULT_REQUIRE_INTEROP=1 (scripts/setup.sh installs sqlcipher3-binary).
        assert!(std::env::var_os("FIELDVAULT_REQUIRE_INTEROP").is_none(), "sqlcipher3 is required but not installed");
        eprintln!("skipped: python3 module sqlcipher3 not installed (pip install sqlcipher3-binary)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::default();
    let alice = AccountName::new("alice").expect("valid");
    let mut v = Vault::init(&tmp.path().join("v"), &store, &alice).expect("init");
    let mut docs = v.documents(&alice).expect("documents");
    docs.put("visits", "v1", json!({"patient": "Ada", "bp": [120, 80]}).as_object().cloned().expect("obj"))
        .expect("put");
    docs.put("visits", "v1", json!({"patient": "Ada", "bp": [118, 79]}).as_object().cloned().expect("obj"))
        .expect("put");
    docs.put("sites", "s1", json!({"name": "north"}).as_object().cloned().expect("obj")).expect("put");
    let key: String = v
        .data_key(&alice, Purpose::Database)
        .expect("key")
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    drop(v); // closed: checkpointed into the main file
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/read_vault_db.py");
    let db = tmp.path().join("v/accounts/alice/documents.db");
    let out = Command::new("python3").arg(&script).arg(&db).arg(&key).output().expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(got["cipher_version"].as_str().expect("version").starts_with('4'));
    assert_eq!(
        got["documents"],
        json!([
            {"collection": "sites", "id": "s1", "version": 1, "body": {"name": "north"}},
            {"collection": "visits", "id": "v1", "version": 2, "body": {"patient": "Ada", "bp": [118, 79]}},
        ])
    );
    // The wrong key is refused by the other client too.
    let mut wrong = key.into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let out = Command::new("python3")
        .arg(&script)
        .arg(&db)
        .arg(String::from_utf8(wrong).expect("hex"))
        .output()
        .expect("run");
    assert!(!out.status.success());
}
