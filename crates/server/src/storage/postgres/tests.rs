//! The PostgreSQL store's own tests: users, sessions, refresh spends, nonces, migrations.
//! They run when `FIELDVAULT_TEST_POSTGRES` names a database, each in a fresh schema.

use std::future::Future;

use super::*;
use crate::storage::{LoginDevice, LoginOutcome};

const ENV: &str = "FIELDVAULT_TEST_POSTGRES";

fn random_schema() -> String {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("fv_t_{hex}")
}

/// Runs `test` against a store in a fresh schema of the database named by
/// `FIELDVAULT_TEST_POSTGRES`, then drops the schema, also when the test panicked.
async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(String, String, PgStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(url) = std::env::var(ENV) else {
        println!("skipped: {ENV} not set");
        return;
    };
    let schema = random_schema();
    let store = PgStore::connect_in_schema(&url, &schema, 4).await.expect("connects and migrates");
    let outcome = tokio::spawn(test(url.clone(), schema.clone(), store)).await;
    PgStore::drop_schema(&url, &schema).await.expect("drops the test schema");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        password_hash: "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA".to_owned(),
        roles: vec!["field".to_owned(), "admin".to_owned()],
        disabled: false,
        attributes: serde_json::Map::new(),
    }
}

fn lease(id: &str, now: u64) -> LeaseRecord {
    LeaseRecord { id: id.to_owned(), key_sealed: vec![7; 48], expires_at: now + 86_400 }
}

/// A first login of user's device `dev{n}`, session `sid{n}`.
fn new_session(n: u8, user: &str, now: u64) -> NewLogin {
    NewLogin {
        session_id: format!("sid{n}"),
        key_id: format!("kid{n}"),
        user: user.to_owned(),
        secret_sealed: vec![n; 60],
        refresh_hash: [n; 32],
        device_name: "field laptop".to_owned(),
        device: LoginDevice::New {
            id: format!("dev{n}"),
            secret_sealed: vec![n; 61],
            lease: lease(&format!("lease{n}"), now),
        },
        totp: None,
        now,
    }
}

fn spend<'a>(session: &'a NewLogin, token: [u8; 32], attempt: &'a str, successor: u8, now: u64) -> Spend<'a> {
    Spend {
        token_hash: token,
        session_id: &session.session_id,
        attempt_id: attempt,
        successor_hash: [successor; 32],
        successor_sealed: vec![successor; 70],
        now,
        retry_window: 60,
        on_reuse: &REUSE,
    }
}

/// The audit record of a reuse these tests detect.
static REUSE: std::sync::LazyLock<crate::storage::AuditEvent> =
    std::sync::LazyLock::new(|| crate::storage::AuditEvent::new(0, "test", "refresh.reuse_detected", ""));

#[test]
fn schema_names_outside_our_alphabet_are_refused() {
    for bad in ["", "Public", "a;b", "a\"b", "a b", "é", &"a".repeat(64)] {
        assert!(check_schema_name(bad).is_err(), "{bad:?}");
    }
    assert!(check_schema_name("fv_t_0123abcd").is_ok());
}

#[tokio::test]
async fn a_stored_value_its_column_may_not_hold_is_corrupt_naming_the_column() {
    with_store(|_, _, store| async move {
        for row in crate::storage::tests::corrupt_rows("'\\x01'") {
            sqlx::query(AssertSqlSafe(row)).execute(&store.pool).await.expect("writes");
        }
        crate::storage::tests::each_corrupt_row_is_refused_naming_its_column(&store).await;
    })
    .await;
}

#[tokio::test]
async fn adding_a_user_twice_is_user_exists() {
    with_store(|_, _, store| async move {
        store
            .add_user(&user("alice"), 100, &crate::storage::AuditEvent::new(0, "test", "test", ""))
            .await
            .expect("first add");
        let again = store.add_user(&user("alice"), 101, &crate::storage::AuditEvent::new(0, "test", "test", "")).await;
        assert!(matches!(again, Err(StoreError::UserExists(ref name)) if name == "alice"), "{again:?}");
        assert_eq!(store.user("alice").await.expect("reads"), Some(user("alice")));
        assert_eq!(store.user("bob").await.expect("reads"), None);
    })
    .await;
}

#[tokio::test]
async fn setting_a_password_revokes_every_session_of_the_user() {
    with_store(|_, _, store| async move {
        store
            .add_user(&user("alice"), 100, &crate::storage::AuditEvent::new(0, "test", "test", ""))
            .await
            .expect("adds");
        store.add_user(&user("bob"), 100, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("adds");
        let a1 = new_session(1, "alice", 100);
        let a2 = new_session(2, "alice", 100);
        let b3 = new_session(3, "bob", 100);
        for s in [&a1, &a2, &b3] {
            assert_eq!(
                store.login(s, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("creates session"),
                LoginOutcome::Recorded
            );
        }
        let found = store.session_by_key_id("kid1").await.expect("reads").expect("exists");
        assert!(!found.revoked);
        assert_eq!(found.secret_sealed, vec![1; 60]);
        let device = store.device("dev1").await.expect("reads").expect("exists");
        assert_eq!((device.lease, device.secret_sealed), (Some(lease("lease1", 100)), Some(vec![1; 61])));

        assert!(
            store
                .set_password("alice", "new-hash", 200, &crate::storage::AuditEvent::new(0, "test", "test", ""))
                .await
                .expect("sets")
        );
        assert!(
            !store
                .set_password("carol", "new-hash", 200, &crate::storage::AuditEvent::new(0, "test", "test", ""))
                .await
                .expect("no such user")
        );
        assert_eq!(store.user("alice").await.expect("reads").expect("exists").password_hash, "new-hash");
        for kid in ["kid1", "kid2"] {
            assert!(store.session_by_key_id(kid).await.expect("reads").expect("exists").revoked, "{kid}");
        }
        assert!(!store.session_by_key_id("kid3").await.expect("reads").expect("exists").revoked);
        // A revoked session's token no longer spends.
        assert_eq!(store.spend_refresh(spend(&a1, [1; 32], "a", 9, 201)).await.expect("spends"), SpendOutcome::Unknown);

        assert!(
            store
                .disable_user("bob", 300, &crate::storage::AuditEvent::new(0, "test", "test", ""))
                .await
                .expect("disables")
        );
        assert!(store.user("bob").await.expect("reads").expect("exists").disabled);
        assert!(store.session_by_key_id("kid3").await.expect("reads").expect("exists").revoked);
        // Devices and their leases outlive the sessions.
        for dev in ["dev1", "dev2", "dev3"] {
            let d = store.device(dev).await.expect("reads").expect("kept");
            assert!(d.lease.is_some() && d.retired.is_none(), "{d:?}");
        }
        assert!(
            store.enable_user("bob", &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("enables")
        );
        assert!(!store.user("bob").await.expect("reads").expect("exists").disabled);
        assert!(
            !store
                .enable_user("carol", &crate::storage::AuditEvent::new(0, "test", "test", ""))
                .await
                .expect("no such user")
        );
    })
    .await;
}

#[tokio::test]
async fn a_retried_spend_gets_the_same_successor_and_any_other_reuse_revokes() {
    with_store(|_, _, store| async move {
        store
            .add_user(&user("alice"), 100, &crate::storage::AuditEvent::new(0, "test", "test", ""))
            .await
            .expect("adds");
        let s = new_session(1, "alice", 100);
        assert_eq!(
            store.login(&s, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("creates session"),
            LoginOutcome::Recorded
        );

        assert_eq!(
            store.spend_refresh(spend(&s, [1; 32], "att-1", 2, 110)).await.expect("spends"),
            SpendOutcome::Spent
        );
        // Same attempt inside the window: the first successor, whatever the retry sent.
        assert_eq!(
            store.spend_refresh(spend(&s, [1; 32], "att-1", 3, 120)).await.expect("spends"),
            SpendOutcome::Retry { successor_sealed: vec![2; 70] }
        );
        // An unknown token changes nothing.
        assert_eq!(
            store.spend_refresh(spend(&s, [99; 32], "att-9", 4, 121)).await.expect("spends"),
            SpendOutcome::Unknown
        );
        assert!(!store.session_by_key_id("kid1").await.expect("reads").expect("exists").revoked);

        // Another attempt with the spent token: theft assumed, the session ends.
        assert_eq!(
            store.spend_refresh(spend(&s, [1; 32], "att-2", 5, 130)).await.expect("spends"),
            SpendOutcome::ReuseRevoked
        );
        let revoked = store.session_by_key_id("kid1").await.expect("reads").expect("exists");
        assert!(revoked.revoked);
        // Its successor is dead too; the device and its lease stay.
        assert_eq!(
            store.spend_refresh(spend(&s, [2; 32], "att-3", 6, 131)).await.expect("spends"),
            SpendOutcome::Unknown
        );
        assert_eq!(store.device("dev1").await.expect("reads").expect("kept").lease, Some(lease("lease1", 100)));
    })
    .await;
}

#[tokio::test]
async fn a_retry_after_the_window_or_the_successor_was_used_revokes() {
    with_store(|_, _, store| async move {
        store
            .add_user(&user("alice"), 100, &crate::storage::AuditEvent::new(0, "test", "test", ""))
            .await
            .expect("adds");
        let s1 = new_session(1, "alice", 100);
        let s2 = new_session(2, "alice", 100);
        assert_eq!(
            store.login(&s1, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("creates session"),
            LoginOutcome::Recorded
        );
        assert_eq!(
            store.login(&s2, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("creates session"),
            LoginOutcome::Recorded
        );

        assert_eq!(store.spend_refresh(spend(&s1, [1; 32], "a", 11, 100)).await.expect("spends"), SpendOutcome::Spent);
        assert_eq!(
            store.spend_refresh(spend(&s1, [1; 32], "a", 12, 161)).await.expect("spends"),
            SpendOutcome::ReuseRevoked
        );

        assert_eq!(store.spend_refresh(spend(&s2, [2; 32], "b", 21, 100)).await.expect("spends"), SpendOutcome::Spent);
        assert_eq!(store.spend_refresh(spend(&s2, [21; 32], "c", 22, 101)).await.expect("spends"), SpendOutcome::Spent);
        assert_eq!(
            store.spend_refresh(spend(&s2, [2; 32], "b", 23, 102)).await.expect("spends"),
            SpendOutcome::ReuseRevoked
        );
        assert!(store.session_by_key_id("kid2").await.expect("reads").expect("exists").revoked);
    })
    .await;
}

#[tokio::test]
async fn concurrent_spends_of_one_token_spend_it_once() {
    with_store(|_, _, store| async move {
        store
            .add_user(&user("alice"), 100, &crate::storage::AuditEvent::new(0, "test", "test", ""))
            .await
            .expect("adds");
        let s = new_session(1, "alice", 100);
        assert_eq!(
            store.login(&s, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("creates session"),
            LoginOutcome::Recorded
        );
        let (a, b) = tokio::join!(
            store.spend_refresh(spend(&s, [1; 32], "same", 2, 110)),
            store.spend_refresh(spend(&s, [1; 32], "same", 3, 110)),
        );
        let mut outcomes = [a.expect("spends"), b.expect("spends")];
        outcomes.sort_by_key(|o| matches!(o, SpendOutcome::Retry { .. }));
        assert_eq!(outcomes[0], SpendOutcome::Spent);
        assert!(matches!(outcomes[1], SpendOutcome::Retry { .. }), "{outcomes:?}");
    })
    .await;
}

#[tokio::test]
async fn revoking_is_idempotent_and_keeps_the_first_time() {
    with_store(|_, _, store| async move {
        store
            .add_user(&user("alice"), 100, &crate::storage::AuditEvent::new(0, "test", "test", ""))
            .await
            .expect("adds");
        let s = new_session(1, "alice", 100);
        assert_eq!(
            store.login(&s, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("creates session"),
            LoginOutcome::Recorded
        );
        let renewed = store.renew_lease("dev1", 5_000, 150).await.expect("renews");
        assert_eq!(renewed, Some(LeaseRecord { expires_at: 5_000, ..lease("lease1", 100) }));
        store.revoke_session(&s.session_id, 200).await.expect("revokes");
        store.revoke_session(&s.session_id, 300).await.expect("revokes again");
        store.revoke_session("no-such-session", 300).await.expect("revoking nothing is fine");
        let found = store.session_by_key_id("kid1").await.expect("reads").expect("exists");
        assert!(found.revoked);
        assert_eq!(store.device("dev1").await.expect("reads").expect("kept").lease, renewed);
        assert_eq!(store.spend_refresh(spend(&s, [1; 32], "a", 2, 301)).await.expect("spends"), SpendOutcome::Unknown);
    })
    .await;
}

#[tokio::test]
async fn replayed_nonce_is_rejected_until_purged() {
    with_store(|_, _, store| async move {
        assert!(store.insert_nonce("kid1", &[1; 16], 200).await.expect("inserts"));
        assert!(!store.insert_nonce("kid1", &[1; 16], 200).await.expect("inserts"));
        assert!(store.insert_nonce("kid2", &[1; 16], 200).await.expect("inserts"));
        assert!(store.insert_nonce("kid1", &[2; 16], 400).await.expect("inserts"));
        assert_eq!(store.purge_nonces(200).await.expect("purges"), 0);
        assert_eq!(store.purge_nonces(201).await.expect("purges"), 2);
        assert!(!store.insert_nonce("kid1", &[2; 16], 400).await.expect("inserts"));
        assert!(store.insert_nonce("kid1", &[1; 16], 500).await.expect("inserts"));
    })
    .await;
}

#[tokio::test]
async fn login_failures_count_up_and_clear() {
    with_store(|_, _, store| async move {
        assert_eq!(store.login_failures("alice", "10.0.0.1").await.expect("reads"), LoginFailures::default());
        for n in 1..=3u32 {
            let now = 100 + u64::from(n);
            let state = store.record_login_failure("alice", "10.0.0.1", now).await.expect("records");
            assert_eq!(state, LoginFailures { failures: n, last_at: now });
        }
        assert_eq!(store.login_failures("alice", "10.0.0.2").await.expect("reads"), LoginFailures::default());
        store.clear_login_failures("alice", "10.0.0.1").await.expect("clears");
        assert_eq!(store.login_failures("alice", "10.0.0.1").await.expect("reads"), LoginFailures::default());
    })
    .await;
}

#[tokio::test]
async fn a_version_1_schema_is_migrated_in_place() {
    with_store(|url, schema, store| async move {
        // Back to what the previous build wrote: version 1, with a user.
        for statement in back_to_v3().iter().chain(BACK_TO_V2).chain(&[
            "DROP TABLE attachment_chunks, attachments, directives, held, idempotency, documents",
            "ALTER TABLE users DROP COLUMN attributes",
            "ALTER TABLE devices DROP COLUMN sync_seq",
            "UPDATE fv_schema SET version = 1",
            "INSERT INTO users (name, password_hash, roles, disabled, created_at) VALUES ('alice', 'h', '[\"a\"]', false, 1)",
        ]) {
            sqlx::query(*statement).execute(&store.pool).await.expect(statement);
        }
        let migrated = PgStore::connect_in_schema(&url, &schema, 1).await.expect("migrates");
        let alice = migrated.user("alice").await.expect("reads").expect("kept");
        assert_eq!((alice.roles, alice.attributes), (vec!["a".to_owned()], serde_json::Map::new()));
        let version: i64 =
            sqlx::query("SELECT max(version) FROM fv_schema").fetch_one(&store.pool).await.expect("reads").get(0);
        assert_eq!(version, SCHEMA_VERSION);
        assert!(migrated.devices().await.expect("new tables").is_empty());
    })
    .await;
}

/// Undoes version 4: what the version 3 build wrote (attachments with a device-wrapped CEK, no
/// attachment lists).
fn back_to_v3() -> Vec<&'static str> {
    let mut statements = vec![
        "DROP TABLE listed_attachments",
        "DROP TABLE attachment_chunks, attachments",
        "ALTER TABLE documents DROP COLUMN attachments",
    ];
    statements.extend(attachments::SCHEMA_V2);
    statements.push("UPDATE fv_schema SET version = 3");
    statements
}

#[tokio::test]
async fn a_version_3_store_keeps_its_documents_and_drops_the_attachments_no_other_device_could_open() {
    with_store(|url, schema, store| async move {
        let id = "a".repeat(32);
        let rows = [
            "INSERT INTO users (name, password_hash, roles, created_at) VALUES ('alice', 'h', '[]', 1)".to_owned(),
            "INSERT INTO documents (collection, id, owner, version, deleted, body, seq, updated_at) VALUES
                 ('notes', 'n1', 'alice', 2, false, '{\"text\":\"x\",\"owner\":\"alice\"}', 7, 1),
                 ('notes', 'n2', 'alice', 3, true, '{\"owner\":\"alice\"}', 8, 1)"
                .to_owned(),
            format!(
                "INSERT INTO attachments (id, user_name, collection, doc_id, header, manifest, wrapped_cek,
                     chunk_count, length, complete, created_at) VALUES
                     ('{id}', 'alice', 'notes', 'n1', '\\x01', '\\x02', '\\x03', 2, 10, true, 1)"
            ),
            format!(
                "INSERT INTO attachment_chunks (attachment_id, idx, bytes) VALUES
                     ('{id}', 0, '\\x04'), ('{id}', 1, '\\x05')"
            ),
        ];
        for statement in back_to_v3() {
            sqlx::query(statement).execute(&store.pool).await.expect(statement);
        }
        for statement in rows {
            sqlx::query(AssertSqlSafe(statement)).execute(&store.pool).await.expect("row");
        }
        let migrated = PgStore::connect_in_schema(&url, &schema, 1).await.expect("migrates");
        let n1 = migrated.document("notes", "n1").await.expect("reads").expect("kept");
        assert_eq!((n1.version, n1.deleted, n1.attachments.len()), (2, false, 0));
        assert_eq!(n1.body, serde_json::json!({"text": "x", "owner": "alice"}));
        let n2 = migrated.document("notes", "n2").await.expect("reads").expect("kept");
        assert_eq!((n2.version, n2.deleted), (3, true));
        // The attachment and its chunks are gone: its key opened on one device only.
        assert!(migrated.attachment(&id).await.expect("reads").is_none());
        let chunks: i64 =
            sqlx::query_scalar("SELECT count(*) FROM attachment_chunks").fetch_one(&store.pool).await.expect("reads");
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1
             AND table_name = 'attachments' AND column_name LIKE '%cek%'",
        )
        .bind(&schema)
        .fetch_all(&store.pool)
        .await
        .expect("reads");
        assert_eq!((chunks, columns), (0, vec!["cek_sealed".to_owned()]));
        assert!(migrated.documents_listing(&id).await.expect("the index exists").is_empty());
        let version: i64 =
            sqlx::query("SELECT max(version) FROM fv_schema").fetch_one(&store.pool).await.expect("reads").get(0);
        assert_eq!(version, SCHEMA_VERSION);
        // Its id is free: uploaded again, it is stored.
        let record = AttachmentRecord {
            id: id.clone(),
            user: "alice".into(),
            collection: "notes".into(),
            doc_id: "n1".into(),
            header: vec![1],
            manifest: vec![2],
            cek_sealed: vec![3; 60],
            chunk_count: 1,
            length: 1,
            complete: false,
            created_at: 2,
        };
        assert_eq!(migrated.create_attachment(&record, 2).await.expect("stores"), Some(record));
    })
    .await;
}

/// Undoes version 3: what the version 2 build wrote.
const BACK_TO_V2: &[&str] = &[
    "ALTER TABLE devices DROP COLUMN secret_sealed, DROP COLUMN lease_id, DROP COLUMN lease_sealed,
         DROP COLUMN lease_expires_at, DROP COLUMN retired_at, DROP COLUMN retired_reason",
    "ALTER TABLE sessions ADD COLUMN lease_id TEXT NULL, ADD COLUMN lease_sealed BYTEA NULL,
         ADD COLUMN lease_issued_at BIGINT NULL, ADD COLUMN lease_expires_at BIGINT NULL",
    "DROP INDEX sessions_device_id, devices_user_name",
    "UPDATE fv_schema SET version = 2",
];

#[tokio::test]
async fn a_version_2_store_moves_each_devices_newest_lease_from_its_sessions_to_the_device() {
    with_store(|url, schema, store| async move {
        for statement in back_to_v3().iter().chain(BACK_TO_V2).chain(&[
            "INSERT INTO users (name, password_hash, roles, created_at) VALUES ('alice', 'h', '[]', 1)",
            "INSERT INTO devices (id, user_name, name, created_at, last_seen_at) VALUES
                 ('d1', 'alice', 'tablet', 1, 1), ('d2', 'alice', 'phone', 1, 1)",
            "INSERT INTO sessions (id, key_id, user_name, device_id, secret_sealed, created_at,
                 lease_id, lease_sealed, lease_issued_at, lease_expires_at) VALUES
                 ('s1', 'k1', 'alice', 'd1', '\\x01', 10, 'l_old', '\\x0a', 10, 100),
                 ('s2', 'k2', 'alice', 'd1', '\\x02', 20, 'l_new', '\\x0b', 20, 200),
                 ('s3', 'k3', 'alice', 'd2', '\\x03', 30, NULL, NULL, NULL, NULL)",
            "INSERT INTO directives (jti, device_id, kind, token, issued_at) VALUES ('j', 'd2', 'wipe', 't', 40)",
        ]) {
            sqlx::query(*statement).execute(&store.pool).await.expect(statement);
        }
        let migrated = PgStore::connect_in_schema(&url, &schema, 1).await.expect("migrates");
        let d1 = migrated.device("d1").await.expect("reads").expect("kept");
        assert_eq!(d1.lease, Some(LeaseRecord { id: "l_new".into(), key_sealed: vec![0x0b], expires_at: 200 }));
        assert_eq!((d1.retired, d1.secret_sealed), (None, None), "made before device secrets: cannot be named");
        let d2 = migrated.device("d2").await.expect("reads").expect("kept");
        assert_eq!((d2.retired, d2.lease), (Some(DeviceReason::Wiped), None));
        let session = migrated.session_by_key_id("k2").await.expect("reads").expect("kept");
        assert_eq!((session.device_id.as_str(), session.secret_sealed.as_slice()), ("d1", &[2u8][..]));
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'sessions'
             AND column_name LIKE 'lease%'",
        )
        .bind(&schema)
        .fetch_one(&store.pool)
        .await
        .expect("reads");
        assert_eq!(left, 0, "no lease is left in the sessions table");
    })
    .await;
}

#[tokio::test]
async fn instances_starting_together_migrate_once_and_newer_schemas_are_refused() {
    with_store(|url, schema, store| async move {
        let (a, b) = tokio::join!(
            PgStore::connect_in_schema(&url, &schema, 1),
            PgStore::connect_in_schema(&url, &schema, 1),
        );
        a.expect("second instance connects");
        b.expect("third instance connects");
        let version: i64 =
            sqlx::query("SELECT max(version) FROM fv_schema").fetch_one(&store.pool).await.expect("reads").get(0);
        assert_eq!(version, SCHEMA_VERSION);

        sqlx::query("UPDATE fv_schema SET version = $1")
            .bind(SCHEMA_VERSION + 1)
            .execute(&store.pool)
            .await
            .expect("bumps");
        let refused = PgStore::connect_in_schema(&url, &schema, 1).await;
        assert!(
            matches!(refused, Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION }) if found == SCHEMA_VERSION + 1),
            "{refused:?}"
        );
    })
    .await;
}
