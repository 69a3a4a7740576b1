//! A real full disk: a small tmpfs mounted for the test (needs root, as in CI; skipped with
//! a message elsewhere unless FIELDVAULT_REQUIRE_ROOT_TESTS is set).

use std::path::{Path, PathBuf};

use crate::tmpfs::Tmpfs;
use fieldvault_client::{Error, Unlocked, Vault};
use fieldvault_core::{AccountName, Purpose};
use fieldvault_keystore::MemoryStore;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

fn alice() -> AccountName {
    AccountName::new("alice").expect("valid")
}

fn rows(from: u64, n: u64) -> Vec<(String, Map<String, Value>)> {
    (from..from + n)
        .map(|i| (format!("d{i:06}"), json!({"i": i, "pad": "p".repeat(1000)}).as_object().cloned().expect("obj")))
        .collect()
}

fn count(v: &mut Unlocked) -> usize {
    v.documents(&alice()).expect("documents").list("c", None, None).expect("list").documents.len()
}

/// Fills the file system at `dir` until at most `leave` bytes are free.
fn fill(dir: &Path, leave: u64) {
    let st = rustix::fs::statvfs(dir).expect("statvfs");
    let free = st.f_bavail * st.f_frsize;
    if free > leave {
        std::fs::write(dir.join("filler"), vec![0u8; (free - leave) as usize]).expect("filler");
    }
}

/// A new vault with account alice on a fresh tmpfs of `size`: the mount, the keystore,
/// the vault directory and the unlocked vault.
fn vault_on(size: &str) -> Option<(Tmpfs, MemoryStore, PathBuf, Unlocked)> {
    let fs = Tmpfs::mount(size)?;
    let store = MemoryStore::default();
    let dir = fs.dir.join("v");
    let v = Vault::init(&dir, &store, &alice()).expect("init");
    Some((fs, store, dir, v))
}

#[test]
fn rotation_on_a_full_disk_changes_nothing() {
    let Some((fs, store, dir, mut v)) = vault_on("8m") else { return };
    v.documents(&alice()).expect("documents").put_many("c", rows(0, 3000)).expect("fill the database");
    let keys_before = std::fs::read(dir.join("keys.fvk")).expect("read");
    fill(&fs.dir, 1 << 20);
    let err = v.rotate_keys(&alice()).expect_err("no room for a second copy");
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing was changed"));
    assert_eq!(std::fs::read(dir.join("keys.fvk")).expect("read"), keys_before, "no pending key recorded");
    assert!(v.pending_data_key(&alice(), Purpose::Database).is_none());
    assert_eq!(count(&mut v), 3000);
    drop(v);
    let mut v = Vault::open(&dir).expect("open").unlock(&store).expect("unlock");
    assert_eq!(count(&mut v), 3000);
    assert!(v.verify().expect("verify").findings.is_empty());
}

#[test]
fn a_write_that_fills_the_disk_fails_and_loses_nothing() {
    let Some((fs, store, dir, mut v)) = vault_on("6m") else { return };
    v.documents(&alice()).expect("documents").put_many("c", rows(0, 500)).expect("first batch");
    fill(&fs.dir, 200 << 10);
    let err = v.documents(&alice()).expect("documents").put_many("c", rows(500, 3000)).expect_err("disk full");
    assert!(err.to_string().to_lowercase().contains("full"), "{err}");
    drop(v);
    std::fs::remove_file(fs.dir.join("filler")).expect("free space again");
    let mut v = Vault::open(&dir).expect("open").unlock(&store).expect("unlock");
    assert_eq!(count(&mut v), 500, "the first batch intact, none of the failed one");
    assert!(v.verify().expect("verify").findings.is_empty());
}

#[test]
fn migration_onto_a_full_disk_changes_nothing() {
    let Some((fs, _store, _dir, mut v)) = vault_on("6m") else { return };
    let src_dir = tempfile::tempdir().expect("tempdir");
    let plain = src_dir.path().join("legacy.sqlite");
    let conn = Connection::open(&plain).expect("plain");
    conn.execute_batch(
        "CREATE TABLE c (id INTEGER, pad TEXT);
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 3000)
         INSERT INTO c SELECT i, printf('%.1000c', 'x') FROM k;",
    )
    .expect("fill plain");
    drop(conn);
    let before = std::fs::read(&plain).expect("read");
    fill(&fs.dir, 2 << 20);
    let err = v.migrate_from(&alice(), &plain, |_, _| {}).expect_err("no room");
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert_eq!(std::fs::read(&plain).expect("plaintext file untouched"), before);
    assert_eq!(count(&mut v), 0);
}

/// Attachments: too little room is refused before anything is written, and a disk that
/// fills while the stream is being written (here: filled from the progress callback, so
/// after the check) fails with the file system's error; either way no file is left behind,
/// nothing is recorded, and the stored attachment still decrypts once there is room.
#[test]
fn attachments_on_a_full_disk_fail_and_leave_nothing_behind() {
    let Some((fs, _store, dir, mut v)) = vault_on("24m") else { return };
    let doc = json!({"n": 1}).as_object().cloned().expect("obj");
    v.documents(&alice()).expect("documents").put("visits", "v1", doc).expect("put");
    // The source lives off the small disk: 8 MiB, several of the stream's batches.
    let src_dir = tempfile::tempdir().expect("tempdir");
    let src = src_dir.path().join("photo");
    let bytes: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    std::fs::write(&src, &bytes).expect("source");
    let files = dir.join("accounts/alice/files");
    let names = |d: &Path| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(d)
            .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        n.sort();
        n
    };
    let free_again = || std::fs::remove_file(fs.dir.join("filler")).expect("free space again");

    fill(&fs.dir, 4 << 20);
    let err = v.attach(&alice(), "visits", "v1", &src).expect_err("no room for 8 MiB");
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    free_again();
    let mut filled = false;
    let err = v
        .attach_with_progress(&alice(), "visits", "v1", &src, &mut |_, _| {
            if !std::mem::replace(&mut filled, true) {
                fill(&fs.dir, 64 << 10);
            }
        })
        .expect_err("the disk filled mid-write");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(names(&files).is_empty(), "no partial file: {:?}", names(&files));
    assert!(v.attachments_of(&alice(), "visits", "v1").expect("list").is_empty(), "nothing recorded");
    free_again();

    let a = v.attach(&alice(), "visits", "v1", &src).expect("attach");
    let out = fs.dir.join("out");
    std::fs::write(&out, b"previous contents").expect("an existing output");
    let before = names(&fs.dir);
    fill(&fs.dir, 4 << 20);
    let err = v.attachment_get(&alice(), &a.id, &out).expect_err("no room for 8 MiB");
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    free_again();
    let mut filled = false;
    let err = v
        .attachment_get_with_progress(&alice(), &a.id, &out, &mut |_, _| {
            if !std::mem::replace(&mut filled, true) {
                fill(&fs.dir, 64 << 10);
            }
        })
        .expect_err("the disk filled mid-write");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    free_again();
    assert_eq!(names(&fs.dir), before, "no temporary file left");
    assert_eq!(std::fs::read(&out).expect("read"), b"previous contents", "the existing output is untouched");
    v.attachment_get(&alice(), &a.id, &out).expect("get once there is room");
    assert!(std::fs::read(&out).expect("read") == bytes);
    assert!(v.verify().expect("verify").findings.is_empty());
}
