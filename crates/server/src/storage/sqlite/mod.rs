//! The embedded store: one SQLCipher 4 database (`<data>/server.db`) keyed with a key derived
//! from the store key, so a copy of the data directory alone reads as random bytes. One
//! connection behind a mutex, used from Tokio's blocking pool: SQLite has one writer anyway,
//! and serialising every call makes each method's transaction trivially atomic.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fieldvault_core::sqlcipher;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

use fieldvault_core::protocol::sync::StoredDoc;

use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::protocol::auth::DeviceReason;

mod attachments;
mod devices;
mod sync;

use super::{
    AttachmentRecord, DeviceRecord, DeviceState, LeaseRecord, LoginFailures, NewDirective, NewLogin, PullBatch,
    PullOutcome, PushBatch, PushOutcome, SessionRecord, Spend, SpendOutcome, Store, StoreError, UserRecord,
    decode_access, encode_access, from_column, to_column,
};

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        roles         TEXT NOT NULL,
        disabled      INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE devices (
        id           TEXT PRIMARY KEY,
        user_name    TEXT NOT NULL REFERENCES users(name),
        name         TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id               TEXT PRIMARY KEY,
        key_id           TEXT NOT NULL UNIQUE,
        user_name        TEXT NOT NULL REFERENCES users(name),
        device_id        TEXT NOT NULL REFERENCES devices(id),
        secret_sealed    BLOB NOT NULL,
        created_at       INTEGER NOT NULL,
        revoked_at       INTEGER,
        lease_id         TEXT,
        lease_sealed     BLOB,
        lease_issued_at  INTEGER,
        lease_expires_at INTEGER
    );
    CREATE INDEX sessions_by_user ON sessions (user_name);
    CREATE TABLE refresh_tokens (
        hash             BLOB PRIMARY KEY,
        session_id       TEXT NOT NULL REFERENCES sessions(id),
        issued_at        INTEGER NOT NULL,
        spent_at         INTEGER,
        attempt_id       TEXT,
        successor_hash   BLOB,
        successor_sealed BLOB
    );
    CREATE INDEX refresh_by_session ON refresh_tokens (session_id);
    CREATE TABLE nonces (
        key_id     TEXT NOT NULL,
        nonce      BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (key_id, nonce)
    ) WITHOUT ROWID;
    CREATE INDEX nonces_by_expiry ON nonces (expires_at);
    CREATE TABLE login_failures (
        user_name TEXT NOT NULL,
        address   TEXT NOT NULL,
        failures  INTEGER NOT NULL,
        last_at   INTEGER NOT NULL,
        PRIMARY KEY (user_name, address)
    );
";

/// Version 2: documents and their change sequence, idempotency records, the ids each device
/// holds, each device's sync counter, user attributes.
const SCHEMA_V2: &str = "
    ALTER TABLE users ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE devices ADD COLUMN sync_seq INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE documents (
        collection TEXT NOT NULL,
        id         TEXT NOT NULL,
        owner      TEXT NOT NULL,
        version    INTEGER NOT NULL,
        deleted    INTEGER NOT NULL,
        body       TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (collection, id)
    );
    CREATE UNIQUE INDEX documents_by_seq ON documents (seq);
    CREATE TABLE idempotency (
        user_name   TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        status      TEXT NOT NULL,
        version     INTEGER,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (user_name, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_by_age ON idempotency (created_at);
    CREATE TABLE held (
        device_id  TEXT NOT NULL,
        collection TEXT NOT NULL,
        id         TEXT NOT NULL,
        PRIMARY KEY (device_id, collection, id)
    ) WITHOUT ROWID;
    CREATE TABLE directives (
        jti        TEXT PRIMARY KEY,
        device_id  TEXT NOT NULL REFERENCES devices(id),
        kind       TEXT NOT NULL,
        token      TEXT NOT NULL,
        issued_at  INTEGER NOT NULL,
        acked_at   INTEGER
    );
    CREATE INDEX directives_pending ON directives (device_id) WHERE acked_at IS NULL;
";

/// The SQLCipher-backed store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A database failure, as its message.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

/// How often the background checkpoint copies the WAL back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A keyed connection with the store's settings; fails unless the key opens the file and
/// the library is SQLCipher 4.
fn connect(path: &Path, key: &Zeroizing<[u8; 32]>) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    conn.execute_batch("PRAGMA cipher_log_level = NONE;").map_err(backend)?;
    // The settings as SQLCipher's defaults before the key too: SQLCipher sizes a new file's
    // page reserve when the key is set, from the defaults, and never shrinks it (its own
    // defaults would leave 80 bytes per page where IV and HMAC-SHA256 take 48).
    conn.execute_batch(&sqlcipher::cipher_default_settings_sql()).map_err(backend)?;
    conn.execute_batch(&sqlcipher::key_pragma("main", key)).map_err(backend)?;
    conn.execute_batch(&sqlcipher::cipher_settings_sql("main")).map_err(backend)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)).map_err(|_| {
        backend(format!("{}: the store key does not open this database (wrong key directory?)", path.display()))
    })?;
    let version: String = conn.query_row("PRAGMA cipher_version", [], |r| r.get(0)).map_err(backend)?;
    if !version.starts_with('4') {
        return Err(backend("this build is not linked with SQLCipher 4; refusing to write plaintext"));
    }
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY; PRAGMA trusted_schema = OFF; PRAGMA busy_timeout = 5000;
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if missing, mode 0600) the store at `path` with the 256-bit `key`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] for a wrong key, a plaintext file, or any SQLite failure;
    /// [`StoreError::SchemaTooNew`] for a store written by a newer build.
    pub fn open(path: &Path, key: &Zeroizing<[u8; 32]>) -> Result<SqliteStore, StoreError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // Closed before SQLite opens the file: closing any descriptor of a file drops every
        // POSIX lock this process holds on it, SQLite's included, and another process would
        // then believe it is alone and reset the WAL under our feet.
        {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)
                .map_err(|e| backend(format!("{}: {e}", path.display())))?;
            let mut head = [0u8; 16];
            if f.read_exact(&mut head).is_ok() && &head == sqlcipher::PLAINTEXT_HEADER {
                return Err(backend(format!("{} is an unencrypted SQLite file; refusing to use it", path.display())));
            }
        }
        let conn = connect(path, key)?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        if found < SCHEMA_VERSION {
            let v1 = if found < 1 { SCHEMA_V1 } else { "" };
            let v2 = if found < 2 { format!("{SCHEMA_V2} {}", attachments::SCHEMA) } else { String::new() };
            let v3 = devices::SCHEMA_V3;
            conn.execute_batch(&format!("BEGIN; {v1} {v2} {v3} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
                .map_err(backend)?;
        }
        // Checkpoints run on a connection of their own, in the background, so that copying the
        // WAL back into the database does not happen inside a push's commit while every other
        // request waits for the store's one writer.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;").map_err(backend)?;
        let conn = Arc::new(Mutex::new(conn));
        let checkpointer = connect(path, key)?;
        let alive = Arc::downgrade(&conn);
        std::thread::Builder::new()
            .name("fv-store-checkpoint".into())
            .spawn(move || {
                while alive.strong_count() > 0 {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    // PASSIVE never waits for the writer; a busy moment is retried next time.
                    if let Err(e) = checkpointer.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::debug!(error = %e, "store checkpoint deferred");
                    }
                }
            })
            .map_err(|e| backend(format!("starting the checkpoint thread: {e}")))?;
        Ok(SqliteStore { conn })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| backend("a previous storage call panicked"))?;
            f(&mut guard)
        })
        .await
        .map_err(backend)?
    }
}

fn revoke_in(tx: &rusqlite::Transaction<'_>, session_id: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute("UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1", params![session_id, now])?;
    tx.execute(
        "UPDATE refresh_tokens SET spent_at = ?2 WHERE session_id = ?1 AND spent_at IS NULL",
        params![session_id, now],
    )?;
    Ok(())
}

fn revoke_user_in(tx: &rusqlite::Transaction<'_>, user: &str, now: i64) -> rusqlite::Result<()> {
    let ids: Vec<String> = tx
        .prepare("SELECT id FROM sessions WHERE user_name = ?1 AND revoked_at IS NULL")?
        .query_map([user], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in ids {
        revoke_in(tx, &id, now)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn add_user(&self, user: &UserRecord, now: u64) -> Result<(), StoreError> {
        let user = user.clone();
        let (roles, attributes) = encode_access(&user.roles, &user.attributes)?;
        let created_at = to_column(now, "users.created_at")?;
        let name = user.name.clone();
        let inserted = self
            .run(move |c| {
                Ok(c.execute(
                    "INSERT INTO users (name, password_hash, roles, disabled, created_at, attributes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
                    params![user.name, user.password_hash, roles, user.disabled, created_at, attributes],
                )?)
            })
            .await?;
        if inserted == 0 { Err(StoreError::UserExists(name)) } else { Ok(()) }
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let name = name.to_owned();
        let row = self
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT name, password_hash, roles, disabled, attributes FROM users WHERE name = ?1",
                    [&name],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        row.map(|(name, password_hash, roles, disabled, attributes)| {
            let (roles, attributes) = decode_access(&roles, &attributes)?;
            Ok(UserRecord { name, password_hash, roles, disabled, attributes })
        })
        .transpose()
    }

    async fn set_password(&self, name: &str, password_hash: &str, now: u64) -> Result<bool, StoreError> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        let now = to_column(now, "sessions.revoked_at")?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if tx.execute("UPDATE users SET password_hash = ?2 WHERE name = ?1", params![name, hash])? == 0 {
                return Ok(false);
            }
            revoke_user_in(&tx, &name, now)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn disable_user(&self, name: &str, now: u64) -> Result<bool, StoreError> {
        let name = name.to_owned();
        let now = to_column(now, "sessions.revoked_at")?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if tx.execute("UPDATE users SET disabled = 1 WHERE name = ?1", [&name])? == 0 {
                return Ok(false);
            }
            revoke_user_in(&tx, &name, now)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn enable_user(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| Ok(c.execute("UPDATE users SET disabled = 0 WHERE name = ?1", [&name])? == 1)).await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| devices::remove_user(c, &name)).await
    }

    async fn login_failures(&self, user: &str, address: &str) -> Result<LoginFailures, StoreError> {
        let (user, address) = (user.to_owned(), address.to_owned());
        let row = self
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT failures, last_at FROM login_failures WHERE user_name = ?1 AND address = ?2",
                    [&user, &address],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
            })
            .await?;
        row.map_or(Ok(LoginFailures::default()), |(failures, last_at)| LoginFailures::from_columns(failures, last_at))
    }

    async fn record_login_failure(&self, user: &str, address: &str, now: u64) -> Result<LoginFailures, StoreError> {
        let (user, address) = (user.to_owned(), address.to_owned());
        let now = to_column(now, "login_failures.last_at")?;
        let (failures, last_at) = self
            .run(move |c| {
                Ok(c.query_row(
                    "INSERT INTO login_failures (user_name, address, failures, last_at) VALUES (?1, ?2, 1, ?3)
                     ON CONFLICT (user_name, address) DO UPDATE SET failures = failures + 1, last_at = excluded.last_at
                     RETURNING failures, last_at",
                    params![user, address, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await?;
        LoginFailures::from_columns(failures, last_at)
    }

    async fn clear_login_failures(&self, user: &str, address: &str) -> Result<(), StoreError> {
        let (user, address) = (user.to_owned(), address.to_owned());
        self.run(move |c| {
            c.execute("DELETE FROM login_failures WHERE user_name = ?1 AND address = ?2", [&user, &address])?;
            Ok(())
        })
        .await
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceState>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| devices::device(c, &id)).await
    }

    async fn login(&self, login: &NewLogin) -> Result<bool, StoreError> {
        let login = login.clone();
        self.run(move |c| devices::login(c, &login)).await
    }

    async fn session_by_key_id(&self, key_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            type Row = (String, String, String, String, Vec<u8>, bool, i64);
            let row: Option<Row> = tx
                .prepare_cached(
                    "SELECT id, key_id, user_name, device_id, secret_sealed, revoked_at IS NOT NULL, created_at
                     FROM sessions WHERE key_id = ?1",
                )?
                .query_row([&key_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })
                .optional()?;
            let Some((id, key_id, user, device_id, secret_sealed, revoked, created_at)) = row else {
                return Ok(None);
            };
            Ok(Some(SessionRecord {
                directives: devices::pending_directives(&tx, &device_id)?,
                id,
                key_id,
                user,
                device_id,
                secret_sealed,
                revoked,
                created_at: from_column(created_at, "sessions.created_at")?,
            }))
        })
        .await
    }

    async fn revoke_session(&self, session_id: &str, now: u64) -> Result<(), StoreError> {
        let id = session_id.to_owned();
        let now = to_column(now, "sessions.revoked_at")?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            revoke_in(&tx, &id, now)?;
            Ok(tx.commit()?)
        })
        .await
    }

    async fn retire_device(&self, device_id: &str, reason: DeviceReason, now: u64) -> Result<(), StoreError> {
        let id = device_id.to_owned();
        let now = to_column(now, "devices.retired_at")?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            devices::retire_in(&tx, &id, reason, now)?;
            Ok(tx.commit()?)
        })
        .await
    }

    async fn renew_lease(&self, device_id: &str, expires_at: u64, now: u64) -> Result<Option<LeaseRecord>, StoreError> {
        let id = device_id.to_owned();
        self.run(move |c| devices::renew_lease(c, &id, expires_at, now)).await
    }

    async fn spend_refresh(&self, spend: Spend<'_>) -> Result<SpendOutcome, StoreError> {
        let session_id = spend.session_id.to_owned();
        let attempt_id = spend.attempt_id.to_owned();
        let (hash, successor_hash, successor_sealed) = (spend.token_hash, spend.successor_hash, spend.successor_sealed);
        let (now, window) = (spend.now, spend.retry_window);
        let now_column = to_column(now, "refresh_tokens.spent_at")?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let live: Option<bool> = tx
                .query_row("SELECT revoked_at IS NULL FROM sessions WHERE id = ?1", [&session_id], |r| r.get(0))
                .optional()?;
            if live != Some(true) {
                return Ok(SpendOutcome::Unknown);
            }
            let spent = tx.execute(
                "UPDATE refresh_tokens SET spent_at = ?3, attempt_id = ?4, successor_hash = ?5, successor_sealed = ?6
                 WHERE hash = ?1 AND session_id = ?2 AND spent_at IS NULL",
                params![&hash[..], session_id, now_column, attempt_id, &successor_hash[..], successor_sealed],
            )?;
            if spent == 1 {
                tx.execute(
                    "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, ?3)",
                    params![&successor_hash[..], session_id, now_column],
                )?;
                tx.commit()?;
                return Ok(SpendOutcome::Spent);
            }
            type Row = (Option<i64>, Option<String>, Option<Vec<u8>>, Option<Vec<u8>>);
            let row: Option<Row> = tx
                .query_row(
                    "SELECT spent_at, attempt_id, successor_hash, successor_sealed FROM refresh_tokens
                     WHERE hash = ?1 AND session_id = ?2",
                    params![&hash[..], session_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((spent_at, previous_attempt, succ_hash, succ_sealed)) = row else {
                return Ok(SpendOutcome::Unknown);
            };
            if let (Some(spent_at), Some(prev), Some(succ_hash), Some(succ_sealed)) =
                (spent_at, previous_attempt, succ_hash, succ_sealed)
            {
                let successor_unused: bool = tx
                    .query_row("SELECT spent_at IS NULL FROM refresh_tokens WHERE hash = ?1", [&succ_hash], |r| {
                        r.get(0)
                    })
                    .optional()?
                    .unwrap_or(false);
                let spent_at: u64 = from_column(spent_at, "refresh_tokens.spent_at")?;
                if prev == attempt_id && now.saturating_sub(spent_at) <= window && successor_unused {
                    return Ok(SpendOutcome::Retry { successor_sealed: succ_sealed });
                }
            }
            revoke_in(&tx, &session_id, now_column)?;
            tx.commit()?;
            Ok(SpendOutcome::ReuseRevoked)
        })
        .await
    }

    async fn insert_nonce(&self, key_id: &str, nonce: &[u8; 16], expires_at: u64) -> Result<bool, StoreError> {
        let (key_id, nonce) = (key_id.to_owned(), *nonce);
        let expires_at = to_column(expires_at, "nonces.expires_at")?;
        self.run(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO nonces (key_id, nonce, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?
                .execute(params![key_id, &nonce[..], expires_at])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn purge_nonces(&self, now: u64) -> Result<u64, StoreError> {
        let now = to_column(now, "nonces.expires_at")?;
        self.run(move |c| Ok(c.execute("DELETE FROM nonces WHERE expires_at < ?1", [now])? as u64)).await
    }

    async fn set_user_access(
        &self,
        name: &str,
        roles: &[String],
        attributes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, StoreError> {
        let (roles, attributes) = encode_access(roles, attributes)?;
        let name = name.to_owned();
        self.run(move |c| {
            let updated = c.execute(
                "UPDATE users SET roles = ?2, attributes = ?3 WHERE name = ?1",
                params![name, roles, attributes],
            )?;
            Ok(updated == 1)
        })
        .await
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.run(devices::devices).await
    }

    async fn add_directive(&self, d: &NewDirective) -> Result<bool, StoreError> {
        let d = d.clone();
        let now = to_column(d.now, "directives.issued_at")?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1)", [&d.device_id], |r| r.get(0))?;
            if !exists {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO directives (jti, device_id, kind, token, issued_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d.jti, d.device_id, d.kind.as_str(), d.token, now],
            )?;
            match d.kind {
                DirectiveKind::Wipe => devices::retire_in(&tx, &d.device_id, DeviceReason::Wiped, now)?,
                DirectiveKind::Revoke => devices::revoke_device_sessions(&tx, &d.device_id, now)?,
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn ack_directives(&self, device_id: &str, jtis: &[String], now: u64) -> Result<u64, StoreError> {
        let (device, jtis) = (device_id.to_owned(), jtis.to_vec());
        let now = to_column(now, "directives.acked_at")?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut n = 0;
            for jti in &jtis {
                n += tx.execute(
                    "UPDATE directives SET acked_at = ?3 WHERE jti = ?1 AND device_id = ?2 AND acked_at IS NULL",
                    params![jti, device, now],
                )? as u64;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn document(&self, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            sync::load_doc(&tx, &collection, &id)
        })
        .await
    }

    async fn create_attachment(&self, record: &AttachmentRecord) -> Result<AttachmentRecord, StoreError> {
        let record = record.clone();
        self.run(move |c| attachments::create(c, &record)).await
    }

    async fn attachment(&self, id: &str) -> Result<Option<(AttachmentRecord, Vec<u64>)>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| attachments::get(c, &id)).await
    }

    async fn put_chunk(&self, id: &str, index: u64, bytes: &[u8]) -> Result<(u64, bool), StoreError> {
        let (id, bytes) = (id.to_owned(), bytes.to_vec());
        self.run(move |c| attachments::put_chunk(c, &id, index, &bytes)).await
    }

    async fn chunk(&self, id: &str, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| attachments::chunk(c, &id, index)).await
    }

    async fn push(&self, batch: PushBatch) -> Result<PushOutcome, StoreError> {
        // The batch comes back out so that its JSON trees are freed after the connection is
        // released, not while every other request waits for it.
        let (outcome, batch) = self
            .run(move |c| {
                let outcome = sync::push(c, &batch);
                outcome.map(|o| (o, batch))
            })
            .await?;
        drop(batch);
        Ok(outcome)
    }

    async fn pull(&self, batch: PullBatch) -> Result<PullOutcome, StoreError> {
        self.run(move |c| sync::pull(c, batch)).await
    }

    async fn purge_idempotency(&self, before: u64) -> Result<u64, StoreError> {
        let before = to_column(before, "idempotency.created_at")?;
        self.run(move |c| Ok(c.execute("DELETE FROM idempotency WHERE created_at < ?1", [before])? as u64)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_reserves_exactly_iv_and_hmac_sha256_on_every_page() {
        use aws_lc_rs::cipher::{AES_256, DecryptingKey, DecryptionContext, UnboundCipherKey};
        use aws_lc_rs::iv::FixedLength;
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("server.db");
        let key = Zeroizing::new([5u8; 32]);
        drop(SqliteStore::open(&path, &key).expect("creates"));
        let file = std::fs::read(&path).expect("read");
        // Page 1: salt (16), ciphertext, IV (16), HMAC-SHA256 (32) at the end of 8 KiB.
        let iv_at = 8192 - 48;
        let iv: [u8; 16] = file[iv_at..iv_at + 16].try_into().expect("16 bytes");
        let mut page = file[16..iv_at].to_vec();
        let cbc = DecryptingKey::cbc(UnboundCipherKey::new(&AES_256, &key[..]).expect("key")).expect("cbc");
        let plain = cbc.decrypt(&mut page, DecryptionContext::Iv128(FixedLength::from(iv))).expect("decrypts");
        // Database header offsets 16-17 (page size) and 20 (reserved bytes), 16 bytes in.
        assert_eq!((&plain[..2], plain[4]), (&[0x20u8, 0x00][..], 48));
    }

    #[tokio::test]
    async fn a_stored_value_its_column_may_not_hold_is_corrupt_naming_the_column() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&tmp.path().join("server.db"), &Zeroizing::new([6u8; 32])).expect("creates");
        store
            .run(|c| {
                for row in crate::storage::tests::corrupt_rows("x'01'") {
                    c.execute(&row, [])?;
                }
                Ok(())
            })
            .await
            .expect("writes");
        crate::storage::tests::each_corrupt_row_is_refused_naming_its_column(&store).await;
    }

    #[tokio::test]
    async fn a_store_written_by_schema_version_1_is_migrated_in_place() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("server.db");
        let key = Zeroizing::new([3u8; 32]);
        {
            // What the previous build wrote: version 1, with a user.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(&sqlcipher::key_pragma("main", &key)).expect("key");
            conn.execute_batch(&sqlcipher::cipher_settings_sql("main")).expect("settings");
            conn.execute_batch(&format!("BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;")).expect("v1");
            conn.execute(
                "INSERT INTO users (name, password_hash, roles, disabled, created_at) VALUES ('alice', 'h', '[\"a\"]', 0, 1)",
                [],
            )
            .expect("user");
        }
        let store = SqliteStore::open(&path, &key).expect("migrates");
        let alice = store.user("alice").await.expect("reads").expect("kept");
        assert_eq!((alice.roles, alice.attributes), (vec!["a".to_owned()], serde_json::Map::new()));
        let version: i64 =
            store.run(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)).await.expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        assert!(store.devices().await.expect("new tables").is_empty());
        drop(store);
        // Opening again changes nothing; a newer schema is refused.
        let store = SqliteStore::open(&path, &key).expect("opens");
        store.run(|c| Ok(c.execute_batch("PRAGMA user_version = 99")?)).await.expect("bump");
        drop(store);
        assert!(matches!(SqliteStore::open(&path, &key), Err(StoreError::SchemaTooNew { found: 99, .. })));
    }

    #[tokio::test]
    async fn a_version_2_store_moves_each_devices_newest_lease_from_its_sessions_to_the_device() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("server.db");
        let key = Zeroizing::new([4u8; 32]);
        {
            // What the previous build wrote: version 2, leases on sessions; d2 was wiped.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(&sqlcipher::key_pragma("main", &key)).expect("key");
            conn.execute_batch(&sqlcipher::cipher_settings_sql("main")).expect("settings");
            let v2 = format!("{SCHEMA_V1} {SCHEMA_V2} {}", attachments::SCHEMA);
            conn.execute_batch(&format!("BEGIN; {v2} PRAGMA user_version = 2; COMMIT;")).expect("v2");
            conn.execute_batch(
                "INSERT INTO users (name, password_hash, roles, created_at) VALUES ('alice', 'h', '[]', 1);
                 INSERT INTO devices (id, user_name, name, created_at, last_seen_at) VALUES
                     ('d1', 'alice', 'tablet', 1, 1), ('d2', 'alice', 'phone', 1, 1);
                 INSERT INTO sessions (id, key_id, user_name, device_id, secret_sealed, created_at,
                     lease_id, lease_sealed, lease_issued_at, lease_expires_at) VALUES
                     ('s1', 'k1', 'alice', 'd1', x'01', 10, 'l_old', x'0a', 10, 100),
                     ('s2', 'k2', 'alice', 'd1', x'02', 20, 'l_new', x'0b', 20, 200),
                     ('s3', 'k3', 'alice', 'd2', x'03', 30, NULL, NULL, NULL, NULL);
                 INSERT INTO directives (jti, device_id, kind, token, issued_at) VALUES ('j', 'd2', 'wipe', 't', 40);",
            )
            .expect("rows");
        }
        let store = SqliteStore::open(&path, &key).expect("migrates");
        let d1 = store.device("d1").await.expect("reads").expect("kept");
        assert_eq!(d1.lease, Some(LeaseRecord { id: "l_new".into(), key_sealed: vec![0x0b], expires_at: 200 }));
        assert_eq!((d1.retired, d1.secret_sealed), (None, None), "made before device secrets: cannot be named");
        let d2 = store.device("d2").await.expect("reads").expect("kept");
        assert_eq!((d2.retired, d2.lease, d2.directives), (Some(DeviceReason::Wiped), None, vec!["t".to_owned()]));
        let session = store.session_by_key_id("k2").await.expect("reads").expect("kept");
        assert_eq!((session.device_id.as_str(), session.secret_sealed.as_slice()), ("d1", &[2u8][..]));
        let left: i64 = store
            .run(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM pragma_table_info('sessions') WHERE name LIKE 'lease%'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .expect("reads");
        assert_eq!(left, 0, "no lease is left in the sessions table");
    }
}
