//! Recovery with the recovery key (issue 17, item 3) against the real server on both
//! backends: a logged-in device with changes not yet pushed loses its keystore entry, is
//! recovered, logs in again as the same device and pushes every pending op.

use fieldvault_client::{Error, Vault};
use fieldvault_core::AccountName;
use fieldvault_keystore::{KeyStore, MemoryStore};
use serde_json::json;

use crate::harness::{Harness, backends};
use crate::phone::{Phone, owned};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_lost_its_keystore_entry_is_recovered_continues_as_itself_and_pushes_its_outbox() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vault");
        let lost = MemoryStore::default();
        let account = AccountName::new("default").expect("name");
        let (vault, rk) = Vault::init_with_recovery_key(&path, &lost, &account).expect("init");
        let phone = Phone::adopt(vault, path.clone(), dir);
        let first = phone.login(&h, "alice").await;
        phone.put("visits", "v1", json!({"patient": "Ada"})).await;
        phone.sync().await.expect("first sync");
        // Offline work that has not reached the server: a new document, an edit, a delete.
        phone.put("visits", "v2", json!({"patient": "Grace"})).await;
        phone.put("visits", "v1", owned("alice", json!({"patient": "Ada", "bp": [120, 80]}))).await;
        phone.put("visits", "v3", json!({"patient": "Bob"})).await;
        phone.delete("visits", "v3").await;
        let pending = phone.outbox_len().await;
        assert!(pending >= 2, "{pending}");

        // The keystore entry is lost (a reset keychain): the vault no longer unlocks.
        {
            let mut slot = phone.vault.lock().expect("not poisoned");
            let id = slot.as_ref().expect("open").vault().id();
            drop(slot.take().expect("open").lock());
            lost.destroy(&id).expect("entry deleted");
            let err = Vault::open(&path).expect("open").unlock(&lost).expect_err("no entry");
            assert!(matches!(err, Error::Keystore(_)), "{err}");
            // Recovered into the phone's store: a new entry, a new recovery key.
            let (unlocked, fresh) =
                Vault::open(&path).expect("open").recover(&rk, phone.store.as_ref()).expect("recover");
            assert_ne!(fresh.expose_secret(), rk.expose_secret());
            *slot = Some(unlocked);
        }
        assert_eq!(phone.outbox_len().await, pending, "the outbox is intact");
        assert_eq!(phone.get("visits", "v1").await, Some(owned("alice", json!({"patient": "Ada", "bp": [120, 80]}))));

        let again = phone.login(&h, "alice").await;
        assert!(again.continued && again.device_id == first.device_id, "the same device: {again:?}");
        let r = phone.sync().await.expect("sync after recovery");
        assert_eq!(r.pushed, pending, "every pending op reaches the server: {r:?}");
        assert_eq!(phone.outbox_len().await, 0);

        // Another device of the same user sees what was pending.
        let other = Phone::new();
        other.login(&h, "alice").await;
        other.sync().await.expect("other device syncs");
        assert_eq!(other.get("visits", "v1").await, Some(owned("alice", json!({"patient": "Ada", "bp": [120, 80]}))));
        assert_eq!(other.get("visits", "v2").await, Some(owned("alice", json!({"patient": "Grace"}))));
        assert_eq!(other.get("visits", "v3").await, None);
        // The used recovery key opens nothing any more; the new keystore entry unlocks.
        phone.closed(|p| {
            let err = Vault::open(p).expect("open").recover(&rk, &MemoryStore::default()).expect_err("used");
            assert!(matches!(err, Error::WrongRecoveryKey { .. }), "{err}");
        });
    }
}
