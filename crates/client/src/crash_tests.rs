//! A crash before every single file-system step of every key operation, of `attach` and of
//! `migrate`, on real files: afterwards the vault must open and unlock with every key, old
//! or new, and hold a whole attachment or import or none of it.

use std::path::Path;

use base64::Engine;
use fieldvault_core::{AccountName, Passphrase, Purpose};
use fieldvault_keystore::{KeyStore, MemoryStore, PassphraseStore};
use zeroize::Zeroizing;

use crate::disk::Disk;
use crate::{Error, Unlocked, Vault};

fn account(name: &str) -> AccountName {
    AccountName::new(name).expect("valid name")
}

/// Canaries of every live data key, in a stable order.
fn canaries(v: &Unlocked) -> Vec<(String, [u8; 16])> {
    let mut out = Vec::new();
    for a in v.vault().accounts() {
        for p in Purpose::DATA {
            out.push((format!("{a}/{p}"), v.data_key(&a, p).expect("live key").canary()));
        }
    }
    out
}

/// Runs `op` with a crash injected at step 0, 1, 2, ... until it completes, each time on a
/// fresh vault made by `setup`, and calls `check(dir, crashed)` after every run.
fn crash_everywhere(
    setup: impl Fn(&Path),
    op: impl Fn(&Path, Disk) -> Result<(), Error>,
    check: impl Fn(&Path, bool),
) -> usize {
    for at in 0..64 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("v");
        setup(&dir);
        let disk = Disk::crashing_at(at);
        let result = op(&dir, disk.clone());
        if disk.crashed() {
            assert!(result.is_err(), "a crash at step {at} went unnoticed");
            check(&dir, true);
        } else {
            result.expect("no crash injected: the operation succeeds");
            check(&dir, false);
            return at;
        }
    }
    panic!("operation never completed");
}

#[test]
fn master_rotation_survives_a_crash_at_every_step() {
    let store = MemoryStore::default();
    let before = std::cell::RefCell::new(Vec::new());
    let steps = crash_everywhere(
        |dir| {
            let v = Vault::init(dir, &store, &account("alice")).expect("init");
            *before.borrow_mut() = canaries(&v);
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.set_disk(disk);
            v.rotate_master().map(|_| ())
        },
        |dir, crashed| {
            let v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks with every key");
            assert_eq!(canaries(&v), *before.borrow(), "data keys never change in a master rotation");
            let version = v.vault().status().expect("status").master.version;
            assert!(if crashed { version == 1 || version == 2 } else { version == 2 });
        },
    );
    assert!(steps >= 5, "the rotation writes the key file atomically ({steps} steps)");
}

#[test]
fn data_key_rotation_survives_a_crash_at_every_step_and_resumes_with_the_same_key() {
    let store = MemoryStore::default();
    let alice = account("alice");
    let before = std::cell::RefCell::new([0u8; 16]);
    crash_everywhere(
        |dir| {
            let v = Vault::init(dir, &store, &alice).expect("init");
            *before.borrow_mut() = v.data_key(&alice, Purpose::Database).expect("key").canary();
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.set_disk(disk);
            v.rotate_data_key(&alice, Purpose::Database, |_, _, _| Ok(())).map(|_| ())
        },
        |dir, crashed| {
            let mut v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            let live = v.data_key(&alice, Purpose::Database).expect("live").canary();
            let old = *before.borrow();
            if !crashed {
                assert_ne!(live, old);
                assert!(v.pending_data_key(&alice, Purpose::Database).is_none());
                return;
            }
            let pending = v.pending_data_key(&alice, Purpose::Database).map(|k| k.canary());
            if live == old {
                // Finish the interrupted rotation: it must use the recorded pending key.
                let meta = v.rotate_data_key(&alice, Purpose::Database, |_, _, _| Ok(())).expect("resume");
                let now = v.data_key(&alice, Purpose::Database).expect("live").canary();
                if let Some(p) = pending {
                    assert_eq!(now, p, "resumed with the pending key");
                }
                assert_eq!(meta.version, 2);
            } else {
                assert!(pending.is_none(), "promoted key is no longer pending");
            }
        },
    );
}

#[test]
fn a_failing_rekey_keeps_the_old_key_live_and_the_new_one_pending() {
    let store = MemoryStore::default();
    let alice = account("alice");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut v = Vault::init(&tmp.path().join("v"), &store, &alice).expect("init");
    let old = v.data_key(&alice, Purpose::Files).expect("key").canary();
    let err = v
        .rotate_data_key(&alice, Purpose::Files, |_, _, _| Err(Error::NoSuchAccount("rekey failed".into())))
        .expect_err("rekey error is returned");
    assert!(err.to_string().contains("rekey failed"));
    assert_eq!(v.data_key(&alice, Purpose::Files).expect("key").canary(), old);
    assert!(v.pending_data_key(&alice, Purpose::Files).is_some());
}

#[test]
fn account_wipe_survives_a_crash_at_every_step_and_never_touches_the_other_account() {
    let store = MemoryStore::default();
    let (alice, bob) = (account("alice"), account("bob"));
    let alice_keys = std::cell::RefCell::new(Vec::new());
    crash_everywhere(
        |dir| {
            let mut v = Vault::init(dir, &store, &alice).expect("init");
            v.add_account(&bob).expect("add bob");
            std::fs::write(v.vault().account_dir(&bob).join("data"), b"bob's ciphertext").expect("write");
            *alice_keys.borrow_mut() = Purpose::DATA.map(|p| v.data_key(&alice, p).expect("key").canary()).to_vec();
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.set_disk(disk);
            v.wipe_account(&bob)
        },
        |dir, crashed| {
            let v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            let alice_now: Vec<_> = Purpose::DATA.map(|p| v.data_key(&alice, p).expect("key").canary()).to_vec();
            assert_eq!(alice_now, *alice_keys.borrow());
            let bob_has_keys = v.data_key(&bob, Purpose::Database).is_ok();
            let bob_dir = v.vault().account_dir(&bob).exists();
            assert!(!bob_dir || bob_has_keys, "no account directory outlives its keys after open");
            if !crashed {
                assert!(!bob_has_keys);
            }
        },
    );
}

#[test]
fn vault_wipe_survives_a_crash_at_every_step_and_can_be_finished() {
    let store = MemoryStore::default();
    crash_everywhere(
        |dir| {
            Vault::init(dir, &store, &account("alice")).expect("init");
        },
        |dir, disk| Vault::wipe_on(&disk, dir, Some(&store)).map(|_| ()),
        |dir, crashed| {
            if !crashed {
                assert!(!dir.exists());
                return;
            }
            match Vault::open(dir) {
                // Crashed before the key file went: everything is still there.
                Ok(v) => {
                    v.unlock(&store).expect("unlocks");
                }
                Err(Error::KeysGone { .. }) | Err(Error::NotAVault { .. }) => {}
                Err(e) => panic!("unexpected state after a crashed wipe: {e}"),
            }
            let empty = || std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true);
            if dir.exists() && !empty() {
                Vault::wipe(dir, Some(&store)).expect("a second wipe finishes the job");
            }
            assert!(!dir.exists() || empty(), "nothing of the vault is left");
        },
    );
}

#[test]
fn init_survives_a_crash_at_every_step_and_can_be_redone() {
    let store = MemoryStore::default();
    crash_everywhere(
        |_| {},
        |dir, disk| {
            let rk = fieldvault_core::RecoveryKey::from_bytes(Zeroizing::new([3; 32]));
            Vault::init_on(disk, dir, &store, &account("alice"), Some(&rk)).map(|_| ())
        },
        |dir, crashed| {
            if crashed {
                if let Ok(v) = Vault::open(dir) {
                    v.unlock(&store).expect("a vault that opens also unlocks");
                    return;
                }
                if Vault::wipe(dir, Some(&store)).is_err() {
                    // Nothing vault-like was written; init must accept the directory as is.
                }
                Vault::init(dir, &store, &account("alice")).expect("init again after a crashed init");
            }
            let v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            if !crashed {
                assert!(v.vault().status().expect("status").recovery.is_some(), "made in the first write");
            }
        },
    );
}

#[test]
fn recovery_survives_a_crash_at_every_step_with_the_old_recovery_key_or_the_new_keystore_key() {
    let store = MemoryStore::default();
    let rk = || fieldvault_core::RecoveryKey::from_bytes(Zeroizing::new([3; 32]));
    let alice = account("alice");
    let has_document = |v: &mut Unlocked| {
        assert!(v.documents(&alice).expect("db").get("c", "d").expect("get").is_some(), "nothing lost");
    };
    let steps = crash_everywhere(
        |dir| {
            let mut v = Vault::init_on(Disk::default(), dir, &store, &alice, Some(&rk())).expect("init");
            let mut body = serde_json::Map::new();
            body.insert("n".into(), 1.into());
            v.documents(&alice).expect("db").put("c", "d", body).expect("put");
            let id = v.vault().id();
            drop(v);
            store.destroy(&id).expect("the keystore entry is lost");
        },
        |dir, disk| Vault::open_on(disk, dir)?.recover(&rk(), &store).map(|_| ()),
        |dir, crashed| {
            let mut v = match Vault::open(dir).expect("opens").unlock(&store) {
                Ok(v) => v,
                Err(_) => {
                    assert!(crashed, "a completed recovery unlocks with the new keystore key");
                    Vault::open(dir).expect("opens").recover(&rk(), &store).expect("the old recovery key works").0
                }
            };
            has_document(&mut v);
        },
    );
    assert!(steps >= 5, "the key file is replaced atomically ({steps} steps)");
}

#[test]
fn passphrase_change_survives_a_crash_at_every_step() {
    let pass = |p: &str| PassphraseStore::new(Passphrase::new(Zeroizing::new(p.into())));
    let (old, new) = ("copper lantern ninety quietly", "violet harbour seventeen kites");
    crash_everywhere(
        |dir| {
            Vault::init(dir, &pass(old), &account("alice")).expect("init");
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&pass(old))?;
            v.set_disk(disk);
            v.change_passphrase(&pass(new))
        },
        |dir, crashed| {
            let opened_new = Vault::open(dir).expect("opens").unlock(&pass(new)).is_ok();
            if !opened_new {
                assert!(crashed);
                Vault::open(dir).expect("opens").unlock(&pass(old)).expect("old passphrase still works");
            }
        },
    );
}

#[test]
fn a_passphrase_change_to_the_passphrase_in_use_is_refused_and_writes_nothing() {
    let pass = |p: &str| PassphraseStore::new(Passphrase::new(Zeroizing::new(p.into())));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v");
    let old = "copper lantern ninety quietly";
    let mut v = Vault::init(&dir, &pass(old), &account("alice")).expect("init");
    let keys = std::fs::read(dir.join(crate::vault::KEYS)).expect("key file");
    assert!(matches!(v.change_passphrase(&pass(old)), Err(Error::SamePassphrase)));
    assert_eq!(std::fs::read(dir.join(crate::vault::KEYS)).expect("key file"), keys, "not even a new salt");
    // After a real change, the new one is the one in use.
    let new = "violet harbour seventeen kites";
    v.change_passphrase(&pass(new)).expect("changed");
    assert!(matches!(v.change_passphrase(&pass(new)), Err(Error::SamePassphrase)));
}

#[test]
fn a_passphrase_change_on_a_vault_without_a_passphrase_is_refused() {
    let store = MemoryStore::default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut v = Vault::init(&tmp.path().join("v"), &store, &account("alice")).expect("init");
    let p = PassphraseStore::new(Passphrase::new(Zeroizing::new("violet harbour seventeen kites".into())));
    let err = v.change_passphrase(&p).expect_err("refused");
    assert!(err.to_string().contains("uses the memory keystore"), "{err}");
    assert_eq!(store.kind().name(), "memory");
    drop(v);
    Vault::open(&tmp.path().join("v")).expect("opens").unlock(&store).expect("unchanged");
}

#[test]
fn account_creation_survives_a_crash_at_every_step() {
    let store = MemoryStore::default();
    let bob = account("bob");
    crash_everywhere(
        |dir| {
            Vault::init(dir, &store, &account("alice")).expect("init");
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.set_disk(disk);
            v.add_account(&bob)
        },
        |dir, crashed| {
            let v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            let has_keys = v.data_key(&bob, Purpose::Database).is_ok();
            assert_eq!(v.vault().account_dir(&bob).exists(), has_keys, "keys and directory go together after open");
            assert!(crashed || has_keys);
        },
    );
}

#[test]
fn database_re_key_survives_a_crash_at_every_step_with_every_document() {
    use serde_json::json;
    let store = MemoryStore::default();
    let alice = account("alice");
    let put = |v: &mut Unlocked| {
        let rows = (0..50).map(|i| (format!("d{i:02}"), json!({"i": i}).as_object().expect("object").clone()));
        v.documents(&alice).expect("documents").put_many("c", rows).expect("put");
    };
    let steps = crash_everywhere(
        |dir| put(&mut Vault::init(dir, &store, &alice).expect("init")),
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.documents(&alice)?;
            v.set_disk(disk);
            v.rotate_database_key(&alice).map(|_| ())
        },
        |dir, crashed| {
            let mut v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            let n = v.documents(&alice).expect("database opens").list("c", None, None).expect("list").documents.len();
            assert_eq!(n, 50, "every document survives (crashed: {crashed})");
            assert!(v.pending_data_key(&alice, Purpose::Database).is_none() || crashed);
            // Whatever state the crash left, another rotation completes and keeps everything.
            v.rotate_database_key(&alice).expect("rotate again");
            assert_eq!(
                v.documents(&alice).expect("documents").list("c", None, None).expect("list").documents.len(),
                50
            );
        },
    );
    assert!(steps >= 10, "re-key has its own steps ({steps})");
}

/// A file of `len` bytes to attach, in a directory of its own; and its bytes.
fn source_file(len: u32) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let src = tmp.path().join("in");
    std::fs::write(&src, &bytes).expect("write");
    (tmp, src, bytes)
}

/// A new vault in `dir` whose account `alice` has the document `c/doc` to attach to.
fn vault_with_a_document(dir: &Path, store: &MemoryStore) -> Unlocked {
    let alice = account("alice");
    let mut v = Vault::init(dir, store, &alice).expect("init");
    let body = serde_json::json!({}).as_object().cloned().expect("obj");
    v.documents(&alice).expect("documents").put("c", "doc", body).expect("put");
    v
}

#[test]
fn files_key_rotation_survives_a_crash_at_every_step_and_every_attachment_still_opens() {
    let store = MemoryStore::default();
    let alice = account("alice");
    let (_tmp_src, src, bytes) = source_file(70_000);
    let ids = std::cell::RefCell::new(Vec::new());
    crash_everywhere(
        |dir| {
            let mut v = vault_with_a_document(dir, &store);
            *ids.borrow_mut() = (0..3).map(|_| v.attach(&alice, "c", "doc", &src).expect("attach").id).collect();
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.documents(&alice)?;
            v.set_disk(disk);
            v.rotate_files_key(&alice).map(|_| ())
        },
        |dir, _crashed| {
            let mut v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            for id in ids.borrow().iter() {
                let out = dir.with_file_name("out");
                v.attachment_get(&alice, id, &out).expect("every attachment opens after the crash");
                assert_eq!(std::fs::read(&out).expect("read"), bytes);
            }
            v.rotate_files_key(&alice).expect("a later rotation completes");
            assert!(v.verify().expect("verify").findings.is_empty());
        },
    );
}

#[test]
fn attach_survives_a_crash_at_every_step_with_a_whole_attachment_or_none() {
    let store = MemoryStore::default();
    let alice = account("alice");
    let (_tmp_src, src, bytes) = source_file(200_000);
    let steps = crash_everywhere(
        |dir| drop(vault_with_a_document(dir, &store)),
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.documents(&alice)?;
            v.set_disk(disk);
            v.attach(&alice, "c", "doc", &src).map(|_| ())
        },
        |dir, crashed| {
            let mut v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            let list = v.attachments_of(&alice, "c", "doc").expect("the account opens");
            assert!(if crashed { list.len() <= 1 } else { list.len() == 1 }, "{} attachments", list.len());
            // Every row has its file and it decrypts; no file without a row is left.
            let mut files: Vec<String> = std::fs::read_dir(dir.join("accounts/alice/files"))
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            files.sort();
            assert_eq!(files, list.iter().map(|a| format!("{}.fva", a.id)).collect::<Vec<_>>());
            for a in &list {
                let out = dir.with_file_name("out");
                v.attachment_get(&alice, &a.id, &out).expect("a recorded attachment opens");
                assert_eq!(std::fs::read(&out).expect("read"), bytes);
            }
            assert!(v.verify().expect("verify").findings.is_empty());
        },
    );
    assert!(steps >= 2, "attach has steps of its own ({steps})");
}

#[test]
fn migration_survives_a_crash_at_every_step_with_no_half_import_and_no_row_lost() {
    let store = MemoryStore::default();
    let alice = account("alice");
    let tmp_src = tempfile::tempdir().expect("tempdir");
    let plain = tmp_src.path().join("legacy.sqlite");
    let make_plain = || {
        let _ = std::fs::remove_file(&plain);
        let conn = rusqlite::Connection::open(&plain).expect("plain");
        conn.execute_batch("CREATE TABLE visits (id TEXT PRIMARY KEY, patient TEXT);").expect("schema");
        for i in 0..300 {
            conn.execute("INSERT INTO visits VALUES (?1, ?2)", [format!("v{i:03}"), format!("patient {i}")])
                .expect("row");
        }
    };
    let count =
        |v: &mut Unlocked| v.documents(&alice).expect("d").list("visits", None, None).expect("l").documents.len();
    let steps = crash_everywhere(
        |dir| {
            Vault::init(dir, &store, &alice).expect("init");
            make_plain();
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.documents(&alice)?;
            v.set_disk(disk);
            v.migrate_from(&alice, &plain, |_, _| {}).map(|_| ())
        },
        |dir, crashed| {
            let mut v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            let n = count(&mut v);
            if plain.exists() {
                // No half import: all of it (a crash while removing the plaintext) or none.
                assert!(crashed && (n == 0 || n == 300), "{n} rows imported with the file still there");
                v.migrate_from(&alice, &plain, |_, _| {}).expect("running again finishes the job");
            } else {
                assert_eq!(n, 300, "the plaintext file is gone only once every row is in");
            }
            assert_eq!(count(&mut v), 300);
            assert!(!plain.exists());
        },
    );
    assert!(steps >= 5, "the commit and each removal are steps ({steps})");
}

/// A passphrase store that counts how often it is asked for the KEK.
struct Counting<'a>(&'a PassphraseStore, std::sync::atomic::AtomicU32);

impl KeyStore for Counting<'_> {
    fn kind(&self) -> fieldvault_core::KeystoreKind {
        self.0.kind()
    }
    fn create(
        &self,
        vault: &fieldvault_core::VaultId,
    ) -> Result<(fieldvault_core::Kek, fieldvault_core::KeystoreParams), fieldvault_keystore::Error> {
        self.0.create(vault)
    }
    fn kek(
        &self,
        vault: &fieldvault_core::VaultId,
        params: &fieldvault_core::KeystoreParams,
    ) -> Result<fieldvault_core::Kek, fieldvault_keystore::Error> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.kek(vault, params)
    }
    fn destroy(&self, vault: &fieldvault_core::VaultId) -> Result<(), fieldvault_keystore::Error> {
        self.0.destroy(vault)
    }
}

#[test]
fn a_guess_whose_failure_cannot_be_recorded_is_never_tried() {
    let good = PassphraseStore::new(Passphrase::new(Zeroizing::new("marble quokka seventy umbrella".into())));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v");
    drop(Vault::init(&dir, &good, &account("alice")).expect("init"));
    let wrong = PassphraseStore::new(Passphrase::new(Zeroizing::new("marble quokka seventy umbrelka".into())));
    for store in [&wrong, &good] {
        // The first file-system step of an unlock is recording the attempt; it fails.
        let counting = Counting(store, Default::default());
        let err = Vault::open_on(Disk::crashing_at(0), &dir).expect("opens").unlock(&counting).expect_err("no record");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_eq!(counting.1.into_inner(), 0, "the passphrase was tried");
    }
    assert_eq!(Vault::open(&dir).expect("opens").status().expect("status").failed_unlocks, 0);
    // With a disk that works, a wrong guess is counted and the right one resets the count.
    let err = Vault::open(&dir).expect("opens").unlock(&wrong).expect_err("wrong");
    assert!(matches!(err, Error::WrongPassphrase { failures: 1, .. }), "{err:?}");
    Vault::open(&dir).expect("opens").unlock(&good).expect("unlocks");
    assert_eq!(Vault::open(&dir).expect("opens").status().expect("status").failed_unlocks, 0);
}

fn grant(lease_id: &str, key: u8, expires_at: u64) -> crate::keys::LeaseGrant {
    crate::keys::LeaseGrant { lease_id: lease_id.into(), key: Zeroizing::new([key; 32]), expires_at }
}

const FAR: u64 = 4_000_000_000;

#[test]
fn a_first_login_survives_a_crash_at_every_step_with_the_old_hierarchy_or_the_whole_new_one() {
    // The device secret, L and the data keys re-wrapped under L go in one write: after a
    // crash the vault opens with every key either wholly as before (no lease, no device
    // secret, keys under the master key) or wholly as after.
    let store = MemoryStore::default();
    let before = std::cell::RefCell::new(Vec::new());
    let steps = crash_everywhere(
        |dir| {
            let mut v = Vault::init(dir, &store, &account("alice")).expect("init");
            v.documents(&account("alice")).expect("db").put("c", "d", serde_json::Map::new()).expect("put");
            *before.borrow_mut() = canaries(&v);
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.set_disk(disk);
            v.install_grant(&account("alice"), Some(("d_1", &[7; 32])), &grant("l_1", 9, FAR))
        },
        |dir, crashed| {
            let mut v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks with every key");
            assert_eq!(canaries(&v), *before.borrow(), "the data keys are the same keys, re-wrapped");
            let leased = v.vault().keyfile.lease(&account("alice")).is_some();
            let device = v.device_credential(&account("alice")).expect("reads");
            assert_eq!(leased, device.is_some(), "the lease and the device secret arrive together");
            assert!(crashed || leased);
            assert!(v.documents(&account("alice")).expect("db").get("c", "d").expect("get").is_some());
        },
    );
    assert!(steps >= 3, "one atomic write of the key file ({steps} steps)");
}

#[test]
fn a_plain_logout_survives_a_crash_at_every_step_with_the_account_intact_or_the_logout_owed() {
    // The server cannot be reached (a closed port): the logout is owed. After a crash the
    // account is either as before (data, session, nothing owed) or shredded with the logout
    // recorded in the key file: never shredded with the server left untold.
    use crate::sync::state;
    let store = MemoryStore::default();
    let alice = account("alice");
    let secret = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let pin = format!("sha256/{}", base64::engine::general_purpose::STANDARD.encode([1u8; 32]));
    crash_everywhere(
        |dir| {
            let mut v = Vault::init(dir, &store, &alice).expect("init");
            let mut docs = v.documents(&alice).expect("db");
            docs.put("c", "d", serde_json::Map::new()).expect("put");
            let conn = &docs.db.conn;
            for (name, value) in [
                (state::SERVER, "https://127.0.0.1:1"),
                (state::PINS, &format!("[\"{pin}\"]")),
                (state::USER, "alice"),
                (state::DEVICE_ID, "d_1"),
                (state::KEY_ID, "k_1"),
                (state::SESSION_SECRET, &secret),
                (state::ACCESS_TOKEN, "a.b.c"),
                (state::ACCESS_EXP, "4000000000"),
                (state::REFRESH_TOKEN, "r_1"),
            ] {
                state::set(conn, name, value).expect("session");
            }
        },
        |dir, disk| {
            let mut v = Vault::open(dir)?.unlock(&store)?;
            v.set_disk(disk);
            match v.logout(&alice, false, true)? {
                crate::LogoutNotice::Owed(_) => Ok(()),
                other => panic!("a closed port cannot be told: {other:?}"),
            }
        },
        |dir, crashed| {
            let mut v = Vault::open(dir).expect("opens").unlock(&store).expect("unlocks");
            let owed = v.owed_logouts().expect("owed");
            let has_doc = v.vault().accounts().contains(&alice)
                && v.documents(&alice).expect("db").get("c", "d").expect("get").is_some();
            assert!(has_doc != (owed.len() == 1), "intact, or shredded and owed: doc {has_doc}, owed {owed:?}");
            if let Some(o) = owed.first() {
                assert_eq!((o.account.as_str(), o.device_id.as_str(), o.keep_device), ("alice", "d_1", false));
                assert_eq!(o.server, "https://127.0.0.1:1");
            }
            if !crashed {
                assert_eq!(owed.len(), 1);
                assert!(v.vault().accounts().contains(&alice), "the account comes back, empty");
            }
        },
    );
}
