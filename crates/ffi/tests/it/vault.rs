use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fieldvault_ffi::{FieldvaultError, Keystore, KeystoreError, Vault};

/// Refuses its first prompt as a cancelled biometric prompt would, then allows.
#[derive(Default)]
struct Prompting {
    entries: Mutex<HashMap<String, Vec<u8>>>,
    cancel_next: Mutex<bool>,
}

impl Keystore for Prompting {
    fn store(&self, entry: String, secret: Vec<u8>) -> Result<(), KeystoreError> {
        self.entries.lock().expect("lock").insert(entry, secret);
        Ok(())
    }
    fn load(&self, entry: String) -> Result<Vec<u8>, KeystoreError> {
        if std::mem::take(&mut *self.cancel_next.lock().expect("lock")) {
            return Err(KeystoreError::Cancelled);
        }
        self.entries.lock().expect("lock").get(&entry).cloned().ok_or(KeystoreError::NotFound)
    }
    fn delete(&self, entry: String) -> Result<(), KeystoreError> {
        self.entries.lock().expect("lock").remove(&entry);
        Ok(())
    }
}

fn dir(tmp: &tempfile::TempDir) -> String {
    tmp.path().join("v").to_str().expect("utf-8").to_owned()
}

#[test]
fn a_closed_vault_refuses_every_call_and_a_cancelled_prompt_is_cancelled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ks = Arc::new(Prompting::default());
    let v = Vault::init(dir(&tmp), "default".into(), ks.clone(), 600).expect("init");
    v.put("notes".into(), "n1".into(), r#"{"text":"hi"}"#.into()).expect("put");
    v.close();
    assert!(v.is_locked());
    assert_eq!(v.get("notes".into(), "n1".into()).expect_err("closed"), FieldvaultError::Closed);
    assert_eq!(v.unlock(ks.clone()).expect_err("closed for good"), FieldvaultError::Closed);
    v.close();

    let v = Vault::open(dir(&tmp), "default".into(), 600).expect("open");
    assert_eq!(v.get("notes".into(), "n1".into()).expect_err("locked"), FieldvaultError::Locked);
    *ks.cancel_next.lock().expect("lock") = true;
    assert_eq!(v.unlock(ks.clone()).expect_err("cancelled"), FieldvaultError::Cancelled);
    v.unlock(ks.clone()).expect("the next prompt allows");
    let doc = v.get("notes".into(), "n1".into()).expect("get").expect("there");
    assert_eq!(doc.json, r#"{"text":"hi"}"#);
    v.lock();
    assert!(v.status().expect("status").locked);
}

#[test]
fn a_vault_opened_from_two_handles_is_in_use_in_the_second() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = Vault::init_with_passphrase(dir(&tmp), "default".into(), "marble quokka seventy umbrella".into(), 600)
        .expect("init");
    let second = Vault::open(dir(&tmp), "default".into(), 600);
    let err = match second {
        Ok(v) => v.unlock_with_passphrase("marble quokka seventy umbrella".into()).expect_err("held by the first"),
        Err(e) => e,
    };
    assert_eq!(err, FieldvaultError::InUse);
    first.close();
    let second = Vault::open(dir(&tmp), "default".into(), 600).expect("open after close");
    assert_eq!(
        second.unlock_with_passphrase("umbrella seventy quokka marble".into()).expect_err("wrong"),
        FieldvaultError::WrongPassphrase { retry_after_secs: 0 }
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ks = Arc::new(Prompting::default());
    let v = Vault::init(dir(&tmp), "default".into(), ks, 600).expect("init");
    assert!(matches!(
        v.put("notes".into(), "n1".into(), "[1, 2]".into()).expect_err("not an object"),
        FieldvaultError::Invalid { .. }
    ));
    assert!(matches!(
        v.attach("notes".into(), "none".into(), "/nonexistent".into(), None).expect_err("no document"),
        FieldvaultError::NotFound { .. }
    ));
    assert!(matches!(
        Vault::open(tmp.path().join("nothing").to_str().expect("utf-8").into(), "default".into(), 600)
            .expect_err("no vault"),
        FieldvaultError::NotFound { .. }
    ));
}
