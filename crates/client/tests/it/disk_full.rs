//! A real full disk: a small tmpfs mounted for the test (needs root, as in CI; skipped with
//! a message elsewhere unless FIELDVAULT_REQUIRE_ROOT_TESTS is set).

use std::path::{Path, PathBuf};
use std::process::Command;

use fieldvault_client::{Error, Unlocked, Vault};
use fieldvault_core::{AccountName, Purpose};
use fieldvault_keystore::MemoryStore;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

struct Tmpfs {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if rustix::process::geteuid().as_raw() != 0 {
            assert!(std::env::var_os("FIELDVAULT_REQUIRE_ROOT_TESTS").is_none(), "these tests must run as root here");
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("small");
        std::fs::create_dir(&dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "mount tmpfs");
        Some(Tmpfs { _tmp: tmp, dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

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

#[test]
fn rotation_on_a_full_disk_changes_nothing() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let store = MemoryStore::default();
    let dir = fs.dir.join("v");
    let mut v = Vault::init(&dir, &store, &alice()).expect("init");
    v.documents(&alice()).expect("documents").put_many("c", rows(0, 3000)).expect("fill the database");
    let keys_before = std::fs::read(dir.join("keys.fvk")).expect("read");
    fill(&fs.dir, 1 << 20);
    let err = v.rotate_database_key(&alice()).expect_err("no room for a second copy");
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
    let Some(fs) = Tmpfs::mount("6m") else { return };
    let store = MemoryStore::default();
    let dir = fs.dir.join("v");
    let mut v = Vault::init(&dir, &store, &alice()).expect("init");
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
    let Some(fs) = Tmpfs::mount("6m") else { return };
    let store = MemoryStore::default();
    let dir = fs.dir.join("v");
    let mut v = Vault::init(&dir, &store, &alice()).expect("init");
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
