use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fieldvault_client::{Error, Vault};
use fieldvault_core::{AccountName, KeyFile, Passphrase, Purpose, UnlockCounter};
use fieldvault_keystore::{MemoryStore, OsStore, PassphraseStore};
use zeroize::Zeroizing;

const GOOD: &str = "marble quokka seventy umbrella";

fn pass(p: &str) -> PassphraseStore {
    PassphraseStore::new(Passphrase::new(Zeroizing::new(p.into())))
}

fn alice() -> AccountName {
    AccountName::new("alice").expect("valid")
}

fn new_vault(store: &dyn fieldvault_keystore::KeyStore) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("vault");
    Vault::init(&dir, store, &alice()).expect("init");
    (tmp, dir)
}

/// Every file under `dir` with its bytes, to show that nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn wrong_passphrase_is_named_counted_and_changes_no_key() {
    let (_t, dir) = new_vault(&pass(GOOD));
    let keys_before = fs::read(dir.join("keys.fvk")).expect("read");
    let err = Vault::open(&dir).expect("opens").unlock(&pass("marble quokka seventy umbrelka")).expect_err("wrong");
    assert!(matches!(err, Error::WrongPassphrase { failures: 1, retry_after_secs: 0 }), "{err:?}");
    assert_eq!(err.to_string(), "wrong passphrase (1 failed attempt(s))");
    assert_eq!(fs::read(dir.join("keys.fvk")).expect("read"), keys_before);
    assert_eq!(Vault::open(&dir).expect("opens").status().expect("status").failed_unlocks, 1);
    // The right passphrase works and resets the count.
    Vault::open(&dir).expect("opens").unlock(&pass(GOOD)).expect("unlocks");
    assert_eq!(Vault::open(&dir).expect("opens").status().expect("status").failed_unlocks, 0);
    assert!(!dir.join("unlock.fvc").exists());
}

#[test]
fn after_three_free_failures_each_next_attempt_must_wait() {
    let (_t, dir) = new_vault(&pass(GOOD));
    for n in 1..=4 {
        let err = Vault::open(&dir).expect("opens").unlock(&pass("nope nope nope nope")).expect_err("wrong");
        let wait = if n <= 3 { 0 } else { 1 };
        assert!(
            matches!(err, Error::WrongPassphrase { failures, retry_after_secs } if failures == n && retry_after_secs == wait),
            "{err:?}"
        );
    }
    // Eight failures a moment ago: even the right passphrase is not tried yet.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let counter = dir.join("unlock.fvc");
    fs::write(&counter, UnlockCounter { failures: 8, last_failure_unix: now }.to_bytes()).expect("write");
    let err = Vault::open(&dir).expect("opens").unlock(&pass(GOOD)).expect_err("throttled");
    assert!(
        matches!(err, Error::UnlockThrottled { retry_after_secs } if (15..=16).contains(&retry_after_secs)),
        "{err:?}"
    );
    // Once the wait has passed, the right passphrase unlocks.
    fs::write(&counter, UnlockCounter { failures: 8, last_failure_unix: now - 60 }.to_bytes()).expect("write");
    Vault::open(&dir).expect("opens").unlock(&pass(GOOD)).expect("unlocks after the wait");
}

#[test]
fn a_damaged_key_file_is_corruption_naming_the_slot_and_never_a_failed_unlock() {
    let (_t, dir) = new_vault(&pass(GOOD));
    let path = dir.join("keys.fvk");
    let good = fs::read(&path).expect("read");
    // Flip one bit inside the last slot (the sync key).
    let mut bad = good.clone();
    let at = bad.len() - 20;
    bad[at] ^= 0x04;
    fs::write(&path, &bad).expect("write");
    let err = Vault::open(&dir).expect_err("corrupt");
    assert!(matches!(err, Error::Corrupt { .. }));
    assert!(err.to_string().contains("account 'alice' sync key v1"), "{err}");
    // Truncated.
    fs::write(&path, &good[..good.len() / 2]).expect("write");
    assert!(Vault::open(&dir).expect_err("truncated").to_string().contains("truncated"));
    // Nothing was counted.
    fs::write(&path, &good).expect("write");
    assert_eq!(Vault::open(&dir).expect("opens").status().expect("status").failed_unlocks, 0);
}

#[test]
fn a_wrapped_key_moved_to_another_slot_fails_authentication_and_is_named() {
    let store = MemoryStore::default();
    let (_t, dir) = new_vault(&store);
    let mut v = Vault::open(&dir).expect("opens").unlock(&store).expect("unlocks");
    v.add_account(&AccountName::new("bob").expect("valid")).expect("add bob");
    drop(v);
    let path = dir.join("keys.fvk");
    // Put alice's database key into bob's database slot, re-encoding the file with fresh
    // checksums as an attacker would.
    let mut file = KeyFile::from_bytes(&fs::read(&path).expect("read")).expect("parses");
    let alice_db = file.slots[0].key.clone();
    let bob_db = file.slots.iter_mut().find(|s| s.account.as_str() == "bob").expect("bob's first slot");
    assert_eq!(bob_db.key.meta().purpose, Purpose::Database);
    bob_db.key = alice_db;
    fs::write(&path, file.to_bytes()).expect("write");
    let err = Vault::open(&dir).expect("structure is fine").unlock(&store).expect_err("tampered");
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("account 'bob' database key v1 failed authentication"), "{err}");
}

#[test]
fn a_key_file_from_another_vault_is_named_as_such() {
    let store = MemoryStore::default();
    let (_t, a) = new_vault(&store);
    let (_u, b) = new_vault(&store);
    fs::copy(b.join("keys.fvk"), a.join("keys.fvk")).expect("copy");
    let err = Vault::open(&a).expect_err("mismatch");
    assert!(matches!(err, Error::VaultMismatch { .. }), "{err:?}");
}

#[test]
fn loose_permissions_are_refused_with_the_fix() {
    let store = MemoryStore::default();
    let (_t, dir) = new_vault(&store);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = Vault::open(&dir).expect_err("loose dir");
    assert!(err.to_string().contains("has mode 0755; Fieldvault requires 0700 (run: chmod 700"), "{err}");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::set_permissions(dir.join("keys.fvk"), fs::Permissions::from_mode(0o640)).expect("chmod");
    assert!(matches!(Vault::open(&dir), Err(Error::LoosePermissions { mode: 0o640, .. })));
    fs::set_permissions(dir.join("keys.fvk"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(dir.join("accounts/alice"), fs::Permissions::from_mode(0o750)).expect("chmod");
    assert!(matches!(Vault::open(&dir), Err(Error::LoosePermissions { .. })));
}

#[test]
fn every_file_and_directory_is_private_whatever_the_umask() {
    let store = MemoryStore::default();
    let (_t, dir) = new_vault(&store);
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        assert_eq!(fs::metadata(&d).expect("stat").permissions().mode() & 0o777, 0o700, "{}", d.display());
        for e in fs::read_dir(&d).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                assert_eq!(fs::metadata(&p).expect("stat").permissions().mode() & 0o777, 0o600, "{}", p.display());
            }
        }
    }
}

#[test]
fn init_on_an_existing_vault_or_a_full_directory_changes_nothing() {
    let store = MemoryStore::default();
    let (_t, dir) = new_vault(&store);
    let before = snapshot(&dir);
    let err = Vault::init(&dir, &store, &alice()).expect_err("exists");
    assert!(matches!(err, Error::AlreadyAVault { .. }));
    assert_eq!(snapshot(&dir), before);
    let other = dir.parent().expect("parent").join("full");
    fs::create_dir(&other).expect("mkdir");
    fs::write(other.join("notes.txt"), b"mine").expect("write");
    assert!(matches!(Vault::init(&other, &store, &alice()), Err(Error::NotEmpty { .. })));
    assert_eq!(fs::read_dir(&other).expect("list").count(), 1);
}

#[test]
fn two_inits_racing_on_one_directory_make_one_vault_and_never_overwrite_it() {
    // Both may pass the emptiness check before either writes; the one that takes the lock
    // second must see the other's vault under the lock and leave it alone.
    let tmp = tempfile::tempdir().expect("tempdir");
    for round in 0..20 {
        let dir = tmp.path().join(format!("v{round}"));
        fs::create_dir(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        let stores = [MemoryStore::default(), MemoryStore::default()];
        let start = std::sync::Barrier::new(2);
        let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
            let runs: Vec<_> = stores
                .iter()
                .map(|store| {
                    let (dir, start) = (&dir, &start);
                    s.spawn(move || {
                        start.wait();
                        Vault::init(dir, store, &alice()).map(drop)
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().expect("no panic")).collect()
        });
        let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = &results[1 - winners[0]];
        assert!(
            matches!(loser, Err(Error::AlreadyAVault { .. } | Error::NotEmpty { .. } | Error::InUse { .. })),
            "round {round}: {loser:?}"
        );
        let vault = Vault::open(&dir).expect("opens");
        vault.unlock(&stores[winners[0]]).expect("the winner's vault is the one on disk");
    }
}

#[test]
fn a_vault_open_in_one_handle_is_in_use_for_another() {
    let store = MemoryStore::default();
    let (_t, dir) = new_vault(&store);
    let first = Vault::open(&dir).expect("opens");
    assert!(matches!(Vault::open(&dir), Err(Error::InUse { .. })));
    drop(first);
    Vault::open(&dir).expect("free again");
}

#[test]
fn rotation_changes_ids_and_versions_and_keeps_every_other_key() {
    let store = MemoryStore::default();
    let (_t, dir) = new_vault(&store);
    let mut v = Vault::open(&dir).expect("opens").unlock(&store).expect("unlocks");
    let files_key = v.data_key(&alice(), Purpose::Files).expect("key").canary();
    let before = v.vault().status().expect("status");
    let data = v.rotate_keys(&alice()).expect("rotate the account's keys");
    assert_eq!(
        data.iter().map(|m| (m.purpose, m.version)).collect::<Vec<_>>(),
        vec![(Purpose::Database, 2), (Purpose::Files, 2), (Purpose::Sync, 2)]
    );
    let rotated_files_key = v.data_key(&alice(), Purpose::Files).expect("key").canary();
    assert_ne!(rotated_files_key, files_key, "every data key is new");
    let master = v.rotate_master().expect("rotate master");
    let after = v.vault().status().expect("status");
    assert_eq!(master.version, 2);
    assert_ne!(after.master.key_id, before.master.key_id);
    assert!(after.generation > before.generation);
    drop(v);
    let v = Vault::open(&dir).expect("opens").unlock(&store).expect("unlocks");
    assert_eq!(
        v.data_key(&alice(), Purpose::Files).expect("key").canary(),
        rotated_files_key,
        "a master rotation keeps data keys"
    );
    let db_status =
        v.vault().status().expect("status").keys.into_iter().find(|k| k.meta.purpose == Purpose::Database).expect("db");
    assert_eq!(db_status.meta, data[0]);
}

#[test]
fn wiping_one_account_leaves_the_others_and_wiping_the_vault_leaves_nothing() {
    let store = MemoryStore::default();
    let (_t, dir) = new_vault(&store);
    let bob = AccountName::new("bob").expect("valid");
    let mut v = Vault::open(&dir).expect("opens").unlock(&store).expect("unlocks");
    v.add_account(&bob).expect("add");
    assert!(matches!(v.add_account(&bob), Err(Error::AccountExists(_))));
    let alice_db = v.data_key(&alice(), Purpose::Database).expect("key").canary();
    v.wipe_account(&bob).expect("wipe bob");
    assert!(matches!(v.data_key(&bob, Purpose::Database), Err(Error::NoSuchAccount(_))));
    drop(v);
    let v = Vault::open(&dir).expect("opens").unlock(&store).expect("unlocks");
    assert_eq!(v.data_key(&alice(), Purpose::Database).expect("key").canary(), alice_db);
    assert!(!dir.join("accounts/bob").exists());
    drop(v);
    let report = Vault::wipe(&dir, Some(&store)).expect("wipe");
    assert!(report.keystore_entry_removed);
    assert!(!dir.exists());
}

#[test]
fn wipe_refuses_a_directory_that_is_not_a_vault() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(tmp.path().join("precious"), b"x").expect("write");
    assert!(matches!(Vault::wipe(tmp.path(), None), Err(Error::NotAVault { .. })));
    assert!(tmp.path().join("precious").exists());
}

#[test]
fn a_deleted_key_file_means_the_data_is_gone_and_says_so() {
    let store = MemoryStore::default();
    let (_t, dir) = new_vault(&store);
    fs::remove_file(dir.join("keys.fvk")).expect("rm");
    let err = Vault::open(&dir).expect_err("gone");
    assert!(matches!(err, Error::KeysGone { .. }));
    assert!(err.to_string().contains("cannot be decrypted"));
}

#[test]
fn the_os_keystore_path_unlocks_and_wipe_deletes_its_entry() {
    // keyring-core's in-memory credential store stands in for the desktop Secret Service.
    let store = OsStore::with_store(keyring_core::mock::Store::new().expect("mock store"));
    let (_t, dir) = new_vault(&store);
    let v = Vault::open(&dir).expect("opens");
    assert_eq!(v.keystore_kind().name(), "os");
    let id = v.id();
    v.unlock(&store).expect("unlocks");
    Vault::wipe(&dir, Some(&store)).expect("wipe");
    let err =
        fieldvault_keystore::KeyStore::kek(&store, &id, &fieldvault_core::KeystoreParams::Os).expect_err("entry gone");
    assert!(matches!(err, fieldvault_keystore::Error::NoEntry { .. }));
}

#[test]
fn a_foreign_os_key_is_a_keystore_mismatch_not_a_wrong_passphrase() {
    let mock = keyring_core::mock::Store::new().expect("mock store");
    let store = OsStore::with_store(mock.clone());
    let (_t, dir) = new_vault(&store);
    let id = Vault::open(&dir).expect("opens").id();
    // Replace the entry's key, as another app or a restore from another machine would.
    keyring_core::Entry::new_in_store(
        &(mock as std::sync::Arc<keyring_core::CredentialStore>),
        "fieldvault",
        &id.to_hex(),
    )
    .expect("entry")
    .set_secret(&[9u8; 32])
    .expect("set");
    let err = Vault::open(&dir).expect("opens").unlock(&store).expect_err("mismatch");
    assert!(matches!(err, Error::KeystoreMismatch), "{err:?}");
    assert_eq!(Vault::open(&dir).expect("opens").status().expect("status").failed_unlocks, 0);
}
