//! The public error an app sees: made from real failures, it names what to do and carries
//! none of the secrets or personal data that went into the call.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::Duration;

use fieldvault_client::{ApiError, HostKeystore, HostKeystoreError, HostStore, LoginOptions, Session, Vault};
use fieldvault_core::Passphrase;
use fieldvault_keystore::PassphraseStore;
use serde_json::json;
use zeroize::Zeroizing;

use crate::fixture::{Fixture, alice};

const PASSPHRASE: &str = "PASSPHRASE-CANARY marble quokka seventy";
const WRONG: &str = "WRONG-CANARY umbrella turnip galaxy";
const PASSWORD: &str = "PASSWORD-CANARY-7f3e";
const CONTENT: &str = "CONTENT-CANARY Ada Lovelace, 120/80";
const DOC_ID: &str = "ID-CANARY-patient-ada";
const USER: &str = "USER-CANARY-alice";

/// Checks one failure: its kind, and that neither its `Debug` nor its `Display` holds a canary
/// or any of the key bytes.
fn check(e: fieldvault_client::Error, want: ApiError, keys: &[[u8; 32]]) {
    let api = ApiError::from(e);
    assert_eq!(api, want);
    let texts = [format!("{api:?}"), api.to_string()];
    for text in &texts {
        for canary in [PASSPHRASE, WRONG, PASSWORD, CONTENT, DOC_ID, USER, "CANARY"] {
            assert!(!text.contains(canary), "{text:?} holds {canary:?}");
        }
        for key in keys {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!text.contains(&hex), "{text:?} holds key bytes");
        }
        assert!(!text.is_empty() && !text.contains('\n'), "one line: {text:?}");
    }
}

fn pass(p: &str) -> PassphraseStore {
    PassphraseStore::new(Passphrase::new(Zeroizing::new(p.into())))
}

#[test]
fn errors_from_real_failures_name_what_to_do_and_carry_no_secret_or_personal_data() {
    let f = Fixture::new();
    let mut v = f.unlock();
    let key = *v.data_key(&alice(), fieldvault_core::Purpose::Database).expect("key").expose_secret();
    let keys = [key];
    let mut docs = v.documents(&alice()).expect("documents");
    docs.put("visits", DOC_ID, fieldvault_client::parse_body(&json!({"note": CONTENT}).to_string()).expect("body"))
        .expect("put");
    // Not found: a document id that is a person's name.
    let source = f.tmp.path().join("photo");
    std::fs::write(&source, CONTENT).expect("write");
    let missing = v.attach(&alice(), "visits", &format!("{DOC_ID}-2"), &source).expect_err("no such document");
    check(missing, ApiError::NotFound { what: "document" }, &keys);
    // Invalid: a body that is not an object, holding personal content.
    let bad = fieldvault_client::parse_body(&format!("[\"{CONTENT}\"]")).expect_err("not an object");
    check(bad, ApiError::Invalid { what: "document" }, &keys);

    // A server URL that carries the password; a login to a port nobody listens on.
    let url_err = v
        .login(
            &alice(),
            LoginOptions {
                server: &format!("http://{USER}:{PASSWORD}@127.0.0.1"),
                pins: &["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()],
                user: USER,
                password: Zeroizing::new(PASSWORD.into()),
                device_name: "tablet",
                totp: None,
            },
        )
        .expect_err("plain http");
    check(url_err, ApiError::Invalid { what: "server URL" }, &keys);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let pin = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned();
    let offline = v
        .login(
            &alice(),
            LoginOptions {
                server: &format!("https://127.0.0.1:{port}"),
                pins: std::slice::from_ref(&pin),
                user: USER,
                password: Zeroizing::new(PASSWORD.into()),
                device_name: "tablet",
                totp: None,
            },
        )
        .expect_err("nobody listens");
    check(offline, ApiError::Offline, &keys);

    // Locked: the session's idle lock.
    let session = Session::new(v, Duration::from_secs(3600));
    session.lock();
    check(session.with(|_| Ok(())).expect_err("locked"), ApiError::Locked, &keys);
    drop(session);

    // Tampered: a database whose first page was edited.
    let db = f.vault().join("accounts/alice/documents.db");
    let mut bytes = std::fs::read(&db).expect("read");
    bytes[100] ^= 0xff;
    std::fs::write(&db, &bytes).expect("write");
    let mut v = f.unlock();
    let tampered = v.documents(&alice()).map(|_| ()).expect_err("edited page");
    check(tampered, ApiError::Tampered, &keys);
}

#[test]
fn a_wrong_passphrase_says_when_to_try_again_and_never_repeats_the_passphrase() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v");
    drop(Vault::init(&dir, &pass(PASSPHRASE), &alice()).expect("init"));
    let wrong = Vault::open(&dir).expect("open").unlock(&pass(WRONG)).expect_err("wrong");
    let fieldvault_client::Error::WrongPassphrase { retry_after_secs, .. } = wrong else { panic!("{wrong}") };
    check(wrong, ApiError::WrongPassphrase { retry_after_secs }, &[]);
    // The passphrase in use, given as the new one: invalid, and it is not repeated.
    let mut v = Vault::open(&dir).expect("open").unlock(&pass(PASSPHRASE)).expect("unlock");
    let same = v.change_passphrase(&pass(PASSPHRASE)).expect_err("the same passphrase");
    check(same, ApiError::Invalid { what: "new passphrase (it is the one in use)" }, &[]);
}

/// The app's keystore: refuses its first prompt as a cancelled biometric prompt would.
#[derive(Default)]
struct Prompting {
    entries: Mutex<HashMap<String, Vec<u8>>>,
    cancel_next: Mutex<bool>,
}

impl HostKeystore for &Prompting {
    fn store(&self, entry: &str, secret: &[u8]) -> Result<(), HostKeystoreError> {
        self.entries.lock().expect("lock").insert(entry.into(), secret.into());
        Ok(())
    }
    fn load(&self, entry: &str) -> Result<Zeroizing<Vec<u8>>, HostKeystoreError> {
        if std::mem::take(&mut *self.cancel_next.lock().expect("lock")) {
            return Err(HostKeystoreError::Cancelled);
        }
        self.entries.lock().expect("lock").get(entry).cloned().map(Zeroizing::new).ok_or(HostKeystoreError::NotFound)
    }
    fn delete(&self, entry: &str) -> Result<(), HostKeystoreError> {
        self.entries.lock().expect("lock").remove(entry);
        Ok(())
    }
}

#[test]
fn a_cancelled_keystore_prompt_is_cancelled_and_the_next_prompt_unlocks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v");
    let host = Prompting::default();
    let store = HostStore::new(&host);
    drop(Vault::init(&dir, &store, &alice()).expect("init"));
    *host.cancel_next.lock().expect("lock") = true;
    let cancelled = Vault::open(&dir).expect("open").unlock(&store).expect_err("cancelled");
    check(cancelled, ApiError::Cancelled, &[]);
    Vault::open(&dir).expect("open").unlock(&store).expect("the second prompt is allowed");
    host.entries.lock().expect("lock").clear();
    let gone = Vault::open(&dir).expect("open").unlock(&store).expect_err("entry gone");
    check(gone, ApiError::KeyUnavailable, &[]);
}
