use std::fs;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::Command;

use fieldvault_client::{Error, Unlocked, Vault};
use fieldvault_core::{AccountName, Purpose};
use fieldvault_keystore::MemoryStore;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

fn alice() -> AccountName {
    AccountName::new("alice").expect("valid")
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: MemoryStore,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("vault");
        let store = MemoryStore::default();
        Vault::init(&dir, &store, &alice()).expect("init");
        Fixture { _tmp: tmp, dir, store }
    }
    fn unlock(&self) -> Unlocked {
        Vault::open(&self.dir).expect("open").unlock(&self.store).expect("unlock")
    }
    fn db(&self) -> PathBuf {
        self.dir.join("accounts/alice/documents.db")
    }
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() { todo.push(p) } else { out.push((p.clone(), fs::read(&p).expect("read"))) }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Opens the database the way any SQLCipher 4 client would, from docs/formats/database.md.
fn raw_conn(path: &Path, key: &[u8; 32]) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{hex}'\"; PRAGMA cipher_page_size = 8192; PRAGMA kdf_iter = 256000;
         PRAGMA cipher_hmac_algorithm = HMAC_SHA256; PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA512;
         PRAGMA cipher_use_hmac = ON; PRAGMA cipher_plaintext_header_size = 0;"
    ))?;
    Ok(conn)
}

fn raw_open(path: &Path, key: &[u8; 32]) -> rusqlite::Result<i64> {
    raw_conn(path, key)?.query_row("SELECT count(*) FROM documents", [], |r| r.get(0))
}

#[test]
fn documents_round_trip_through_the_encrypted_database() {
    let f = Fixture::new();
    let mut v = f.unlock();
    let mut docs = v.documents(&alice()).expect("documents");
    let d1 = docs.put("visits", "v-1", obj(json!({"patient": "Ada", "bp": [120, 80]}))).expect("put");
    assert_eq!(d1.version, 1);
    let d2 = docs.put("visits", "v-1", obj(json!({"patient": "Ada", "bp": [118, 79]}))).expect("put again");
    assert_eq!(d2.version, 2);
    assert!(d2.updated_at_ms >= d1.updated_at_ms);
    for i in 0..5 {
        docs.put("visits", &format!("v-{}", i + 2), obj(json!({"n": i}))).expect("put");
    }
    assert!(docs.delete("visits", "v-3").expect("delete"));
    assert!(!docs.delete("visits", "v-3").expect("delete twice"));
    drop(v);
    let mut v = f.unlock();
    let docs = v.documents(&alice()).expect("documents");
    let got = docs.get("visits", "v-1").expect("get").expect("present");
    assert_eq!((got.version, got.body["bp"][0].clone()), (2, json!(118)));
    assert!(docs.get("visits", "v-3").expect("get").is_none());
    let ids = |p: &fieldvault_client::Page| p.documents.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let page = docs.list("visits", NonZeroUsize::new(2), None).expect("list");
    assert_eq!((ids(&page), page.next.as_deref()), (vec!["v-1".to_owned(), "v-2".to_owned()], Some("v-2")));
    let rest = docs.list("visits", None, page.next.as_deref()).expect("list rest");
    assert_eq!(ids(&rest), ["v-4", "v-5", "v-6"]);
    assert_eq!(rest.next, None);
    // A page that takes exactly what is left is the last one: no `next` that leads nowhere.
    let exact = docs.list("visits", NonZeroUsize::new(3), page.next.as_deref()).expect("list exact");
    assert_eq!((ids(&exact), exact.next), (ids(&rest), None));
    let all = docs.list("visits", NonZeroUsize::new(5), None).expect("list all");
    assert_eq!((all.documents.len(), all.next), (5, None));
}

#[test]
fn no_file_under_the_vault_holds_plaintext_and_sqlite3_cannot_open_the_database() {
    let f = Fixture::new();
    let marker = "PLAINTEXT-CANARY-7f3a9c";
    {
        let mut v = f.unlock();
        let mut docs = v.documents(&alice()).expect("documents");
        docs.put("notes", marker, obj(json!({"text": marker}))).expect("put");
        // Leave the WAL in place too: it must be encrypted as well.
        let files = all_bytes(&f.dir);
        assert!(files.iter().all(|(p, _)| !p.to_string_lossy().ends_with("-shm")), "no -shm file is written");
        assert!(files.iter().all(|(_, b)| !contains(b, marker.as_bytes())), "plaintext found while open");
    }
    // Reopen: the -shm rule holds for an existing database too.
    {
        let mut v = f.unlock();
        v.documents(&alice()).expect("documents").get("notes", marker).expect("get");
        assert!(all_bytes(&f.dir).iter().all(|(p, _)| !p.to_string_lossy().ends_with("-shm")), "no -shm on reopen");
        let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(f.db()).expect("stat").permissions());
        assert_eq!(mode & 0o777, 0o600, "the database file is private");
    }
    for (p, b) in all_bytes(&f.dir) {
        assert!(!contains(&b, marker.as_bytes()), "plaintext in {}", p.display());
        assert!(!b.starts_with(b"SQLite format 3"), "plaintext SQLite header in {}", p.display());
    }
    let out = Command::new("sqlite3").arg(f.db()).arg("SELECT count(*) FROM documents;").output();
    match out {
        Ok(out) => {
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("file is not a database"), "{out:?}");
        }
        Err(e) => panic!("sqlite3 is needed for this test (scripts/setup.sh installs it): {e}"),
    }
}

#[test]
fn the_database_opens_in_any_sqlcipher_4_client_with_the_raw_key_and_documented_settings() {
    let f = Fixture::new();
    let key = {
        let mut v = f.unlock();
        v.documents(&alice()).expect("documents").put("c", "x", obj(json!({"a": 1}))).expect("put");
        *v.data_key(&alice(), Purpose::Database).expect("key").expose_secret()
    };
    assert_eq!(raw_open(&f.db(), &key).expect("opens with the documented settings"), 1);
    let mut wrong = key;
    wrong[0] ^= 1;
    assert!(raw_open(&f.db(), &wrong).is_err());
}

#[test]
fn a_plaintext_database_is_refused() {
    let f = Fixture::new();
    {
        let conn = Connection::open(f.db()).expect("plain");
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").expect("write plain");
    }
    // Private, so that the plaintext check (not the permission check) is what refuses it.
    fs::set_permissions(f.db(), std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let before = fs::read(f.db()).expect("read");
    let mut v = f.unlock();
    let err = v.documents(&alice()).err().expect("refused");
    assert!(matches!(err, Error::PlaintextDatabase { .. }), "{err:?}");
    // Refused by the failed first read, which changes nothing on disk.
    assert!(fs::read(f.db()).expect("read") == before, "the plaintext file was changed");
}

#[test]
fn memory_only_collections_never_touch_disk_and_vanish_on_lock() {
    let f = Fixture::new();
    let marker = "MEMORY-ONLY-CANARY-51d2";
    let mut v = f.unlock();
    let mut docs = v.documents(&alice()).expect("documents");
    docs.declare_memory_only("drafts").expect("declare");
    docs.put("drafts", "d1", obj(json!({"text": marker}))).expect("put");
    docs.put("kept", "k1", obj(json!({"text": "kept"}))).expect("put");
    assert_eq!(docs.get("drafts", "d1").expect("get").expect("there").body["text"], marker);
    // Survives a key rotation while the session lives.
    v.rotate_keys(&alice()).expect("rotate");
    assert!(v.documents(&alice()).expect("documents").get("drafts", "d1").expect("get").is_some());
    // ... and a verify: it checks the open connection, so the collection stays memory-only.
    assert!(v.verify().expect("verify").findings.is_empty());
    let mut docs = v.documents(&alice()).expect("documents");
    assert!(docs.get("drafts", "d1").expect("get").is_some(), "verify forgot the memory-only documents");
    docs.put("drafts", "d2", obj(json!({"text": marker}))).expect("put after verify");
    let key = *v.data_key(&alice(), Purpose::Database).expect("key").expose_secret();
    drop(v);
    // Not on disk, not even encrypted: a raw read of the database has no such row.
    let conn = raw_conn(&f.db(), &key).expect("open");
    let n: i64 =
        conn.query_row("SELECT count(*) FROM documents WHERE collection = 'drafts'", [], |r| r.get(0)).expect("count");
    assert_eq!(n, 0);
    drop(conn);
    let mut v = f.unlock();
    let docs = v.documents(&alice()).expect("documents");
    assert!(docs.get("drafts", "d1").expect("get").is_none());
    assert!(docs.get("kept", "k1").expect("get").is_some());
}

#[test]
fn rotating_the_database_key_re_keys_the_file_and_keeps_every_document() {
    let f = Fixture::new();
    let mut v = f.unlock();
    let rows: Vec<(String, Map<String, Value>)> =
        (0..500).map(|i| (format!("d{i:04}"), obj(json!({"i": i})))).collect();
    v.documents(&alice()).expect("documents").put_many("bulk", rows).expect("put_many");
    let old = *v.data_key(&alice(), Purpose::Database).expect("key").expose_secret();
    let meta = v.rotate_keys(&alice()).expect("rotate")[0];
    assert_eq!(meta.version, 2);
    let new = *v.data_key(&alice(), Purpose::Database).expect("key").expose_secret();
    drop(v);
    assert!(raw_open(&f.db(), &old).is_err(), "the old key no longer opens the file");
    assert_eq!(raw_open(&f.db(), &new).expect("new key opens"), 500);
    let mut v = f.unlock();
    let page = v.documents(&alice()).expect("documents").list("bulk", None, None).expect("list");
    assert_eq!(page.documents.len(), 500);
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nothing_is_written() {
    let f = Fixture::new();
    let mut v = f.unlock();
    let mut docs = v.documents(&alice()).expect("documents");
    for (c, id, why) in [
        ("bad/name", "x", "collection name"),
        ("", "x", "collection name"),
        ("c", "", "document id"),
        ("c", "a\nb", "control"),
    ] {
        let err = docs.put(c, id, Map::new()).expect_err("refused");
        assert!(err.to_string().contains(why), "{err}");
    }
    let long_id = "i".repeat(10 * 1024);
    assert!(docs.put("c", &long_id, Map::new()).expect_err("long id").to_string().contains("1 to 256 bytes"));
    let big = obj(json!({"blob": "x".repeat(2 << 20)}));
    assert!(docs.put("c", "big", big).expect_err("too big").to_string().contains("the limit is 1048576"));
    for text in ["{not json", "[1,2]", "42", r#"{"a":1,"a":2}"#, r#"{"a":[{"b":1,"b":1}]}"#] {
        assert!(fieldvault_client::parse_body(text).is_err(), "{text}");
    }
    assert!(docs.list("c", None, None).expect("list").documents.is_empty());
}

#[test]
fn a_damaged_database_page_is_an_integrity_error_never_silent_data() {
    let f = Fixture::new();
    {
        let mut v = f.unlock();
        let rows: Vec<(String, Map<String, Value>)> =
            (0..2000).map(|i| (format!("d{i:05}"), obj(json!({"payload": "y".repeat(200), "i": i})))).collect();
        v.documents(&alice()).expect("documents").put_many("bulk", rows).expect("put_many");
    }
    // Zero 16 bytes in the middle of a page well inside the file.
    let mut bytes = fs::read(f.db()).expect("read");
    assert!(bytes.len() > 40 * 8192, "database is {} bytes", bytes.len());
    let at = 20 * 8192 + 1000;
    bytes[at..at + 16].fill(0);
    fs::write(f.db(), &bytes).expect("write");
    let mut v = f.unlock();
    let report = v.verify().expect("verify runs");
    assert!(!report.findings.is_empty(), "verify finds the damaged page");
    let listed = v.documents(&alice()).and_then(|d| d.list("bulk", None, None));
    assert!(listed.is_err(), "reading the damaged page fails instead of returning partial rows");
}

#[test]
fn a_documents_debug_shows_where_it_is_never_its_body() {
    let mut body = serde_json::Map::new();
    body.insert("patient".into(), serde_json::json!("BODY-CANARY Ada"));
    let doc = fieldvault_client::Document {
        collection: "visits".into(),
        id: "v1".into(),
        version: 3,
        updated_at_ms: 1,
        body,
    };
    let text = format!("{doc:?}");
    assert!(text.contains("visits") && text.contains("v1") && text.contains("[redacted]"), "{text}");
    assert!(!text.contains("CANARY"), "{text}");
}
