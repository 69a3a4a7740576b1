//! The storage interface's own contract, on every backend.

use std::sync::Arc;

use crate::harness::{Harness, backends};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_are_unique_per_key_id_until_purged_after_expiry() {
    for b in backends() {
        let h = Harness::start_bare(b).await;
        let store: &Arc<dyn fieldvault_server::Store> = &h.app.store;
        let n = [7u8; 16];
        assert!(store.insert_nonce("k1", &n, 1_000).await.expect("insert"));
        assert!(!store.insert_nonce("k1", &n, 1_000).await.expect("insert"), "a replay");
        assert!(store.insert_nonce("k2", &n, 1_000).await.expect("insert"), "another session's nonce space");
        assert!(store.insert_nonce("k1", &[8; 16], 2_000).await.expect("insert"));
        assert_eq!(store.purge_nonces(999).await.expect("purge"), 0, "nothing expired yet");
        assert_eq!(store.purge_nonces(1_001).await.expect("purge"), 2);
        assert!(!store.insert_nonce("k1", &[8; 16], 2_000).await.expect("insert"), "still kept");
        assert!(store.insert_nonce("k1", &n, 3_000).await.expect("insert"), "purged, so new again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_user_twice_changes_nothing() {
    for b in backends() {
        let h = Harness::start(b).await;
        let before = h.app.store.user("alice").await.expect("read").expect("alice");
        let passwords = fieldvault_server::auth::Passwords::new(1).expect("hasher");
        let pw = fieldvault_server::auth::Password::new(zeroize::Zeroizing::new("some other password".into()));
        let err = fieldvault_server::accounts::add_user(&h.app.store, &passwords, "alice", Default::default(), pw, 0)
            .await
            .expect_err("exists");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(h.app.store.user("alice").await.expect("read").expect("alice"), before);
    }
}
