//! The storage interface's own contract, on every backend.

use std::sync::Arc;

use crate::harness::{Harness, backends, now, postgres};

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
async fn an_instance_whose_clock_runs_fast_purges_no_nonce_the_database_clock_keeps() {
    let Some(pg) = postgres() else { return };
    let h = Harness::start_bare(pg).await;
    let store: &Arc<dyn fieldvault_server::Store> = &h.app.store;
    let db = store.clock().await.expect("clock").expect("PostgreSQL has a clock of its own");
    // This machine's clock and the database's agree, as `serve` requires.
    assert_eq!(fieldvault_server::clock_skew(now(), db), None, "db {db}, here {}", now());
    let n = [9u8; 16];
    assert!(store.insert_nonce("k1", &n, db + 100).await.expect("insert"));
    // An instance an hour fast purges: the row stays, so the nonce is still refused.
    assert_eq!(store.purge_nonces(db + 3_600).await.expect("purge"), 0);
    assert!(!store.insert_nonce("k1", &n, db + 100).await.expect("insert"), "replayable after a fast purge");
    // Expired by both clocks, it goes.
    assert!(store.insert_nonce("k1", &[10; 16], db - 100).await.expect("insert"));
    assert_eq!(store.purge_nonces(db + 3_600).await.expect("purge"), 1);
}

#[test]
fn a_clock_more_than_the_allowed_skew_from_the_database_is_named() {
    use fieldvault_core::protocol::MAX_SKEW_SECS;
    let db = 1_800_000_000;
    for local in [db, db - MAX_SKEW_SECS, db + MAX_SKEW_SECS] {
        assert_eq!(fieldvault_server::clock_skew(local, db), None, "{local}");
    }
    let behind = fieldvault_server::clock_skew(db - MAX_SKEW_SECS - 1, db).expect("too far behind");
    assert!(behind.contains("61 s behind the database's"), "{behind}");
    let ahead = fieldvault_server::clock_skew(db + 3_600, db).expect("too far ahead");
    assert!(ahead.contains("3600 s ahead of the database's"), "{ahead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_user_twice_changes_nothing() {
    for b in backends() {
        let h = Harness::start(b).await;
        let before = h.app.store.user("alice").await.expect("read").expect("alice");
        let passwords = fieldvault_server::auth::Passwords::new(1).expect("hasher");
        let pw = fieldvault_server::auth::Password::new(zeroize::Zeroizing::new("some other password".into()));
        let err = fieldvault_server::accounts::add_user(
            &h.app.store,
            "cli:test",
            &passwords,
            "alice",
            Default::default(),
            pw,
            0,
        )
        .await
        .expect_err("exists");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(h.app.store.user("alice").await.expect("read").expect("alice"), before);
    }
}
