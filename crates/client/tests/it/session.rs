use std::time::Duration;

use fieldvault_client::{Error, Session, UnlockPolicy, Vault};
use fieldvault_core::{AccountName, Passphrase};
use fieldvault_keystore::{MemoryStore, PassphraseStore};
use serde_json::json;
use zeroize::Zeroizing;

fn alice() -> AccountName {
    AccountName::new("alice").expect("valid")
}

#[test]
fn a_session_locks_itself_after_the_idle_timeout_and_releases_the_vault() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v");
    let store = MemoryStore::default();
    let session = Session::new(Vault::init(&dir, &store, &alice()).expect("init"), Duration::from_millis(1500));
    session
        .with(|v| {
            v.documents(&alice())?.put("c", "1", json!({"a": 1}).as_object().cloned().expect("object")).map(|_| ())
        })
        .expect("use while unlocked");
    assert!(matches!(Vault::open(&dir), Err(Error::InUse { .. })), "the session holds the vault");
    // Used within the timeout: still unlocked.
    std::thread::sleep(Duration::from_millis(150));
    session.with(|v| v.documents(&alice())?.get("c", "1").map(|d| assert!(d.is_some()))).expect("still unlocked");
    // Idle past the timeout: the watchdog locks without any call, releasing keys and lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !session.is_locked() {
        assert!(std::time::Instant::now() < deadline, "the session never locked itself");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(matches!(session.with(|_| Ok(())), Err(Error::Locked)));
    Vault::open(&dir).expect("directory lock released").unlock(&store).expect("unlock again");
}

#[test]
fn an_explicit_lock_takes_effect_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::default();
    let session =
        Session::new(Vault::init(&tmp.path().join("v"), &store, &alice()).expect("init"), Duration::from_secs(600));
    session.lock();
    assert!(matches!(session.with(|_| Ok(())), Err(Error::Locked)));
}

fn pass(p: &str) -> PassphraseStore {
    PassphraseStore::new(Passphrase::new(Zeroizing::new(p.into())))
}

/// A passphrase vault in a scratch directory (kept alive by the returned guard).
fn passphrase_vault() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v");
    Vault::init(&dir, &pass("harbor pickle ninety gondolas"), &alice()).expect("init");
    (tmp, dir)
}

#[test]
fn wipe_after_n_failures_is_off_by_default_and_wipes_when_an_app_turns_it_on() {
    let (_tmp, dir) = passphrase_vault();
    let wrong = pass("harbor pickle ninety gondolaz");
    for _ in 0..3 {
        assert!(matches!(Vault::open(&dir).expect("open").unlock(&wrong), Err(Error::WrongPassphrase { .. })));
    }
    assert!(dir.join("keys.fvk").exists(), "default policy never wipes");
    let policy = UnlockPolicy { wipe_after_failures: Some(4) };
    let err = Vault::open(&dir).expect("open").unlock_with(&wrong, policy).expect_err("fourth failure");
    assert!(matches!(err, Error::WipedAfterFailures { failures: 4 }), "{err:?}");
    assert!(!dir.exists(), "the vault is gone, keys first");
}

#[test]
fn a_damaged_counter_never_brings_a_wipe_closer() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir) = passphrase_vault();
    let counter = dir.join("unlock.fvc");
    std::fs::write(&counter, b"XXXX").expect("damage the counter");
    std::fs::set_permissions(&counter, std::fs::Permissions::from_mode(0o600)).expect("0600");
    // Read as three failures, one typo would reach a policy of four: it counts as none.
    let policy = UnlockPolicy { wipe_after_failures: Some(4) };
    let err = Vault::open(&dir).expect("open").unlock_with(&pass("harbor pickle ninety gondolaz"), policy);
    assert!(matches!(err, Err(Error::WrongPassphrase { failures: 1, .. })), "{err:?}");
    assert!(dir.join("keys.fvk").exists(), "one typo wiped the vault");
}
