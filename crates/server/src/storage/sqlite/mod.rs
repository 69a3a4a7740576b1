//! The embedded store: one SQLCipher 4 database (`<data>/server.db`) keyed with a key derived
//! from the store key, so a copy of the data directory alone reads as random bytes. One
//! connection behind a mutex, used from Tokio's blocking pool: SQLite has one writer anyway,
//! and serialising every call makes each method's transaction trivially atomic.
//!
//! One file per noun: `users.rs` (accounts, login throttling), `sessions.rs` (sessions, refresh
//! tokens, request nonces), `devices.rs` (devices, leases, directives), `sync.rs` (documents,
//! push, pull, idempotency records), `attachments.rs`. This file opens and migrates the
//! database and routes each [`Store`] call to its noun on the blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fieldvault_core::sqlcipher;
use rusqlite::{Connection, OpenFlags};
use zeroize::Zeroizing;

use fieldvault_core::protocol::auth::DeviceReason;
use fieldvault_core::protocol::sync::StoredDoc;

mod admins;
mod admission;
mod attachments;
mod audit;
mod devices;
mod fleet;
mod identities;
mod nonce_index;
mod sessions;
mod sync;
mod users;

use super::admission::{ClaimedNonces, NonceClaim, SessionRead};
use super::{AdminRecord, AdminSession, DeviceFilter, Page, SessionSummary, Sessions};
use super::{
    AttachmentRecord, DeviceRecord, DeviceState, LeaseRecord, LoginFailures, LoginOutcome, NewDirective, NewLogin,
    PullBatch, PullOutcome, PushBatch, PushOutcome, SessionRecord, Spend, SpendOutcome, Store, StoreError, TotpRecord,
    UserRecord,
};
use super::{AuditCut, AuditEvent, AuditRecord, LinkOutcome, OidcSession};
use audit::audited;
use nonce_index::NonceIndex;

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = admission::SCHEMA_VERSION_UNINDEXED_LOG;

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
    conn: Arc<Mutex<Locked>>,
}

/// What the store's lock guards: its one connection, and the nonces the log holds as far as
/// that connection has read it (`nonce_index.rs`), which only its write transactions update.
struct Locked {
    conn: Connection,
    nonces: NonceIndex,
    /// Goes with the last handle on the store, and the store's other connection with it.
    _checkpointer: Checkpointer,
}

/// The background checkpoint's thread, stopped and joined when dropped: its connection is
/// closed before the store is gone, never by a thread still running while the process exits
/// (SQLCipher closing a connection calls into OpenSSL, whose global state the process's exit
/// handlers free; a test binary was seen to crash on exit that way).
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Checkpoints on `conn` every [`CHECKPOINT_EVERY`] until dropped.
    fn start(conn: Connection) -> Result<Checkpointer, StoreError> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fv-store-checkpoint".into())
            .spawn(move || {
                // Nothing is ever sent: the wait ends by timeout (checkpoint) or by the
                // sender's drop (stop).
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    // PASSIVE never waits for the writer; a busy moment is retried next time.
                    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::debug!(error = %e, "store checkpoint deferred");
                    }
                }
            })
            .map_err(|e| backend(format!("starting the checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // At most one checkpoint's wait; a panic in it has nothing left to undo.
            let _ = thread.join();
        }
    }
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

/// Log pages (8 KiB each: 16 MiB) past which the writing connection checkpoints after its
/// commit, so that the log starts over under steady load (`SqliteStore::open`).
const WAL_RESTART_PAGES: u32 = 2048;

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
    // FULL: in WAL mode each commit syncs the WAL before it returns, so a push the server has
    // acknowledged (and the device has dropped from its outbox) survives a power cut; NORMAL
    // would sync only at checkpoints.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY; PRAGMA trusted_schema = OFF; PRAGMA busy_timeout = 5000;
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(backend)?;
    Ok(conn)
}

/// The statements that bring a store from schema version `from` to `to`.
fn migration(from: i64, to: i64) -> String {
    let steps: [(i64, &str); 13] = [
        (1, SCHEMA_V1),
        (2, SCHEMA_V2),
        (2, attachments::SCHEMA_V2),
        (3, devices::SCHEMA_V3),
        (4, attachments::SCHEMA_V4),
        (5, users::SCHEMA_V5),
        (6, identities::SCHEMA_V6),
        (7, audit::SCHEMA_V7),
        (8, admins::SCHEMA_V8),
        (super::fleet::SCHEMA_VERSION_FLEET, fleet::SCHEMA_V9),
        (super::admission::SCHEMA_VERSION_REVOCATIONS, admission::SCHEMA_V10),
        (admission::SCHEMA_VERSION_NONCE_LOG, admission::SCHEMA_V11),
        (admission::SCHEMA_VERSION_UNINDEXED_LOG, admission::SCHEMA_V12),
    ];
    steps.iter().filter(|(v, _)| from < *v && *v <= to).map(|(_, sql)| *sql).collect::<Vec<_>>().join("\n")
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
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
                migration(found, SCHEMA_VERSION)
            ))
            .map_err(backend)?;
        }
        // Checkpoints run on a connection of their own, in the background, so that copying the
        // WAL back into the database does not happen inside a push's commit while every other
        // request waits for the store's one writer. That alone never lets the log start over
        // under steady load: SQLite rewrites the log from its start only when a checkpoint has
        // copied it to its very end, and the background one never catches the end between two
        // commits (the log grew by every commit, 42 MB/s under the signed load benchmark). So
        // the writer checkpoints too once the log passes WAL_RESTART_PAGES: it copies only
        // what the background checkpoint has not yet (a fraction of a second's pages), and its
        // next write starts the log over.
        conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {WAL_RESTART_PAGES};")).map_err(backend)?;
        let checkpointer = Checkpointer::start(connect(path, key)?)?;
        let conn = Arc::new(Mutex::new(Locked { conn, nonces: NonceIndex::default(), _checkpointer: checkpointer }));
        Ok(SqliteStore { conn })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_locked(move |held| f(&mut held.conn)).await
    }

    /// [`SqliteStore::run`] with the nonce index beside the connection.
    async fn run_locked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Locked) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut *lock(&conn)?)).await.map_err(backend)?
    }
}

/// The store's one connection, for as long as the guard lives.
fn lock(held: &Mutex<Locked>) -> Result<std::sync::MutexGuard<'_, Locked>, StoreError> {
    held.lock().map_err(|_| backend("a previous storage call panicked"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn add_user(&self, user: &UserRecord, now: u64, audit: &AuditEvent) -> Result<(), StoreError> {
        let (user, audit) = (user.clone(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| users::add(tx, &user, now), |_| true)).await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| users::get(c, &name)).await
    }

    async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (name, hash, audit) = (name.to_owned(), password_hash.to_owned(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| users::set_password(tx, &name, &hash, now), |done| *done)).await
    }

    async fn disable_user(&self, name: &str, now: u64, audit: &AuditEvent) -> Result<bool, StoreError> {
        let (name, audit) = (name.to_owned(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| users::disable(tx, &name, now), |done| *done)).await
    }

    async fn enable_user(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        let (name, audit) = (name.to_owned(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| users::enable(tx, &name), |done| *done)).await
    }

    async fn remove_user(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        let (name, audit) = (name.to_owned(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| users::remove(tx, &name), |done| *done)).await
    }

    async fn oidc_user(&self, issuer: &str, subject: &str) -> Result<Option<String>, StoreError> {
        let (issuer, subject) = (issuer.to_owned(), subject.to_owned());
        self.run(move |c| identities::user(c, &issuer, &subject)).await
    }

    async fn link_oidc(
        &self,
        issuer: &str,
        subject: &str,
        user: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<LinkOutcome, StoreError> {
        let (issuer, subject, user, audit) = (issuer.to_owned(), subject.to_owned(), user.to_owned(), audit.clone());
        self.run(move |c| {
            audited(c, &audit, |tx| identities::link(tx, &issuer, &subject, &user, now), |o| *o == LinkOutcome::Linked)
        })
        .await
    }

    async fn unlink_oidc(&self, issuer: &str, subject: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        let (issuer, subject, audit) = (issuer.to_owned(), subject.to_owned(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| identities::unlink(tx, &issuer, &subject), |done| *done)).await
    }

    async fn add_oidc_user(
        &self,
        user: &UserRecord,
        issuer: &str,
        subject: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let (user, issuer, subject, audit) = (user.clone(), issuer.to_owned(), subject.to_owned(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| identities::add_user(tx, &user, &issuer, &subject, now), |_| true))
            .await
    }

    async fn set_oidc_session(
        &self,
        session_id: &str,
        issuer: &str,
        refresh_sealed: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let (session_id, issuer, sealed) =
            (session_id.to_owned(), issuer.to_owned(), refresh_sealed.map(<[u8]>::to_vec));
        self.run(move |c| identities::set_session(c, &session_id, &issuer, sealed.as_deref())).await
    }

    async fn oidc_session(&self, session_id: &str) -> Result<Option<OidcSession>, StoreError> {
        let session_id = session_id.to_owned();
        self.run(move |c| identities::session(c, &session_id)).await
    }

    async fn enroll_totp(&self, name: &str, secret_sealed: &[u8], audit: &AuditEvent) -> Result<bool, StoreError> {
        let (name, sealed) = (name.to_owned(), secret_sealed.to_vec());
        let audit = audit.clone();
        self.run(move |c| audited(c, &audit, |tx| users::set_totp(tx, &name, Some(&sealed)), |done| *done)).await
    }

    async fn disable_totp(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        let (name, audit) = (name.to_owned(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| users::set_totp(tx, &name, None), |done| *done)).await
    }

    async fn totp(&self, name: &str) -> Result<Option<TotpRecord>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| users::totp(c, &name)).await
    }

    async fn login_failures(&self, user: &str, address: &str) -> Result<LoginFailures, StoreError> {
        let (user, address) = (user.to_owned(), address.to_owned());
        self.run(move |c| users::failures(c, &user, &address)).await
    }

    async fn record_login_failure(&self, user: &str, address: &str, now: u64) -> Result<LoginFailures, StoreError> {
        let (user, address) = (user.to_owned(), address.to_owned());
        self.run(move |c| users::record_failure(c, &user, &address, now)).await
    }

    async fn clear_login_failures(&self, user: &str, address: &str) -> Result<(), StoreError> {
        let (user, address) = (user.to_owned(), address.to_owned());
        self.run(move |c| users::clear_failures(c, &user, &address)).await
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceState>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| devices::device(c, &id)).await
    }

    async fn login(&self, login: &NewLogin, audit: &AuditEvent) -> Result<LoginOutcome, StoreError> {
        let login = login.clone();
        let audit = audit.clone();
        self.run(move |c| {
            audited(c, &audit, |tx| devices::login(tx, &login), |outcome| *outcome == LoginOutcome::Recorded)
        })
        .await
    }

    async fn session_by_key_id(&self, key_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |c| sessions::by_key_id(c, &key_id)).await
    }

    async fn revoke_session(&self, session_id: &str, now: u64) -> Result<(), StoreError> {
        let id = session_id.to_owned();
        self.run(move |c| sessions::revoke(c, &id, now)).await
    }

    async fn retire_device(&self, device_id: &str, reason: DeviceReason, now: u64) -> Result<(), StoreError> {
        let id = device_id.to_owned();
        self.run(move |c| devices::retire(c, &id, reason, now)).await
    }

    async fn renew_lease(&self, device_id: &str, expires_at: u64, now: u64) -> Result<Option<LeaseRecord>, StoreError> {
        let id = device_id.to_owned();
        self.run(move |c| devices::renew_lease(c, &id, expires_at, now)).await
    }

    async fn spend_refresh(&self, spend: Spend<'_>) -> Result<SpendOutcome, StoreError> {
        let Spend { token_hash, session_id, attempt_id, successor_hash, successor_sealed, now, retry_window, on_reuse } =
            spend;
        let (session_id, attempt_id, on_reuse) = (session_id.to_owned(), attempt_id.to_owned(), on_reuse.clone());
        self.run(move |c| {
            let spend = Spend {
                token_hash,
                session_id: &session_id,
                attempt_id: &attempt_id,
                successor_hash,
                successor_sealed,
                now,
                retry_window,
                on_reuse: &on_reuse,
            };
            sessions::spend_refresh(c, &spend)
        })
        .await
    }

    async fn insert_nonce(&self, key_id: &str, nonce: &[u8; 16], expires_at: u64) -> Result<bool, StoreError> {
        let claim = NonceClaim { key_id: key_id.to_owned(), nonce: *nonce, expires_at };
        Ok(self.claim_nonces(vec![claim]).await?.fresh.first().copied().unwrap_or(false))
    }

    async fn purge_nonces(&self, now: u64) -> Result<u64, StoreError> {
        self.run_locked(move |held| admission::purge_nonces(&mut held.conn, &mut held.nonces, now)).await
    }

    async fn claim_nonces(&self, claims: Vec<NonceClaim>) -> Result<ClaimedNonces, StoreError> {
        self.run_locked(move |held| admission::claim_nonces(&mut held.conn, &mut held.nonces, &claims)).await
    }

    async fn session_read(&self, key_id: &str) -> Result<SessionRead, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |c| admission::session_read(c, &key_id)).await
    }

    async fn clock(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    async fn set_user_access(
        &self,
        name: &str,
        roles: &[String],
        attributes: &serde_json::Map<String, serde_json::Value>,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (name, roles, attributes, audit) = (name.to_owned(), roles.to_vec(), attributes.clone(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| users::set_access(tx, &name, &roles, &attributes), |done| *done))
            .await
    }

    fn backend(&self) -> &'static str {
        "SQLite (SQLCipher)"
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.run(|c| fleet::devices(c, None, None, None)).await
    }

    async fn devices_page(&self, filter: DeviceFilter<'_>, page: Page) -> Result<Vec<DeviceRecord>, StoreError> {
        let (user, id) = filter.columns();
        let (user, id) = (user.map(str::to_owned), id.map(str::to_owned));
        self.run(move |c| fleet::devices(c, user.as_deref(), id.as_deref(), Some(page))).await
    }

    async fn mark_directives_sent(&self, device_id: &str, tokens: &[String], now: u64) -> Result<(), StoreError> {
        let (id, tokens) = (device_id.to_owned(), tokens.to_vec());
        self.run(move |c| fleet::mark_sent(c, &id, &tokens, now)).await
    }

    async fn sessions_page(&self, user: &str, page: Page) -> Result<Vec<SessionSummary>, StoreError> {
        let user = user.to_owned();
        self.run(move |c| fleet::sessions_page(c, &user, page)).await
    }

    async fn revoke_sessions(
        &self,
        user: &str,
        which: Sessions<'_>,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<u64, StoreError> {
        let (user, audit) = (user.to_owned(), audit.clone());
        let one = match which {
            Sessions::One(id) => Some(id.to_owned()),
            Sessions::All => None,
        };
        self.run(move |c| {
            let which = one.as_deref().map_or(Sessions::All, Sessions::One);
            audited(c, &audit, |tx| fleet::revoke_sessions(tx, &user, which, now), |n| *n > 0)
        })
        .await
    }

    async fn add_directive(&self, d: &NewDirective, audit: &AuditEvent) -> Result<bool, StoreError> {
        let (d, audit) = (d.clone(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| devices::add_directive(tx, &d), |done| *done)).await
    }

    async fn ack_directives(
        &self,
        device_id: &str,
        jtis: &[String],
        now: u64,
        audit: &AuditEvent,
    ) -> Result<u64, StoreError> {
        let (device, jtis, audit) = (device_id.to_owned(), jtis.to_vec(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| devices::ack_directives(tx, &device, &jtis, now), |n| *n > 0)).await
    }

    async fn document(&self, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.run(move |c| sync::document(c, &collection, &id)).await
    }

    async fn documents_listing(&self, attachment_id: &str) -> Result<Vec<(String, String, StoredDoc)>, StoreError> {
        let id = attachment_id.to_owned();
        self.run(move |c| attachments::documents_listing(c, &id)).await
    }

    async fn create_attachment(
        &self,
        record: &AttachmentRecord,
        doc_version: u64,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        let record = record.clone();
        self.run(move |c| attachments::create(c, &record, doc_version)).await
    }

    async fn attachment(&self, id: &str) -> Result<Option<(AttachmentRecord, Vec<u64>)>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| attachments::get(c, &id)).await
    }

    async fn put_chunk(&self, id: &str, index: u64, bytes: &[u8]) -> Result<Option<(u64, bool)>, StoreError> {
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
        // The page takes the connection twice (read, then record what the device holds) and
        // plans in between without it: the rules do not run while every request waits.
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || sync::pull(&conn, batch)).await.map_err(backend)?
    }

    async fn purge_idempotency(&self, before: u64) -> Result<u64, StoreError> {
        self.run(move |c| sync::purge_idempotency(c, before)).await
    }

    async fn users_page(&self, prefix: &str, page: Page) -> Result<Vec<UserRecord>, StoreError> {
        let prefix = prefix.to_owned();
        self.run(move |c| admins::users_page(c, &prefix, page)).await
    }

    async fn add_admin(&self, name: &str, password_hash: &str, now: u64, audit: &AuditEvent) -> Result<(), StoreError> {
        let (name, hash, audit) = (name.to_owned(), password_hash.to_owned(), audit.clone());
        self.run(move |c| audited(c, &audit, |tx| admins::add(tx, &name, &hash, now), |_| true)).await
    }

    async fn admin(&self, name: &str) -> Result<Option<AdminRecord>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| admins::get(c, &name)).await
    }

    async fn set_admin_totp(&self, name: &str, secret_sealed: &[u8]) -> Result<bool, StoreError> {
        let (name, sealed) = (name.to_owned(), secret_sealed.to_vec());
        self.run(move |c| admins::set_totp(c, &name, &sealed)).await
    }

    async fn use_admin_totp(&self, name: &str, secret_sealed: &[u8], step: u64) -> Result<bool, StoreError> {
        let (name, sealed) = (name.to_owned(), secret_sealed.to_vec());
        self.run(move |c| admins::use_totp(c, &name, &sealed, step)).await
    }

    async fn put_admin_session(&self, session: &AdminSession) -> Result<(), StoreError> {
        let session = session.clone();
        self.run(move |c| admins::put_session(c, &session)).await
    }

    async fn admin_session(&self, id_hash: &[u8; 32]) -> Result<Option<AdminSession>, StoreError> {
        let id_hash = *id_hash;
        self.run(move |c| admins::session(c, &id_hash)).await
    }

    async fn delete_admin_session(&self, id_hash: &[u8; 32]) -> Result<(), StoreError> {
        let id_hash = *id_hash;
        self.run(move |c| admins::delete_session(c, &id_hash)).await
    }

    async fn purge_admin_sessions(&self, before: u64) -> Result<u64, StoreError> {
        self.run(move |c| admins::purge_sessions(c, before)).await
    }

    async fn audit_append(&self, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        let event = event.clone();
        self.run(move |c| audit::append(c, &event)).await
    }

    async fn audit_page(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(move |c| audit::page(c, after_seq, limit)).await
    }

    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        self.run(audit::stored_head).await
    }

    async fn audit_prune(&self, before: u64, cut: &AuditEvent) -> Result<Option<AuditCut>, StoreError> {
        let cut = cut.clone();
        self.run(move |c| audit::prune(c, before, &cut)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files this process holds open under `dir` (Linux's /proc/self/fd).
    fn open_under(dir: &Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .collect()
    }

    #[test]
    fn a_dropped_store_has_closed_both_its_connections() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().canonicalize().expect("canonical");
        let store = SqliteStore::open(&dir.join("server.db"), &Zeroizing::new([6u8; 32])).expect("creates");
        assert!(open_under(&dir).len() >= 2, "the store and its checkpointer hold the file: {:?}", open_under(&dir));
        drop(store);
        // At once, not a checkpoint interval later: nothing of the store outlives it.
        assert_eq!(open_under(&dir), Vec::<std::path::PathBuf>::new());
    }

    #[tokio::test]
    async fn the_log_starts_over_under_steady_writes_instead_of_growing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("server.db");
        let store = SqliteStore::open(&path, &Zeroizing::new([4u8; 32])).expect("creates");
        // Commits back to back, as under load (each writes at least the log's last page), for
        // at least three times the pages at which the log starts over.
        let commits = 3 * WAL_RESTART_PAGES;
        for i in 0..commits {
            let claims = (0..8u8).map(|n| NonceClaim { key_id: format!("k{i}"), nonce: [n; 16], expires_at: 10_000 });
            store.claim_nonces(claims.collect()).await.expect("claims");
        }
        let frame = 24 + 8192;
        let wal = std::fs::metadata(tmp.path().join("server.db-wal")).expect("the log").len();
        // Without the writer's checkpoint the log holds every commit's pages (3 x 16 MiB);
        // with it, at most the threshold and what one background checkpoint let through.
        assert!(wal <= 2 * u64::from(WAL_RESTART_PAGES) * frame, "the log grew to {wal} bytes over {commits} commits");
    }

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
    async fn every_connection_of_the_store_syncs_each_commit_in_wal_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (path, key) = (tmp.path().join("server.db"), Zeroizing::new([7u8; 32]));
        let store = SqliteStore::open(&path, &key).expect("creates");
        let settings = |c: &Connection| -> Result<(String, i64), StoreError> {
            Ok((
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
            ))
        };
        // 2 is FULL (1 would be NORMAL): the store's connection, and one as the checkpointer
        // opens it.
        assert_eq!(store.run(move |c| settings(c)).await.expect("reads"), ("wal".to_owned(), 2));
        assert_eq!(settings(&connect(&path, &key).expect("connects")).expect("reads"), ("wal".to_owned(), 2));
        // A nonce's own commit is left to the next synced one; the connection is FULL after it,
        // and after a refused (duplicate) nonce too.
        for _ in 0..2 {
            store.insert_nonce("k", &[1; 16], 10).await.expect("nonce");
            assert_eq!(store.run(move |c| settings(c)).await.expect("reads"), ("wal".to_owned(), 2));
        }
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

    fn nonce(key_id: &str, n: u8) -> NonceClaim {
        NonceClaim { key_id: key_id.to_owned(), nonce: [n; 16], expires_at: 10_000 }
    }

    async fn fresh(store: &SqliteStore, claims: &[NonceClaim]) -> Vec<bool> {
        store.claim_nonces(claims.to_vec()).await.expect("claims").fresh
    }

    #[tokio::test]
    async fn every_store_on_the_file_refuses_a_nonce_another_recorded_and_so_does_a_reopened_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (path, key) = (tmp.path().join("server.db"), Zeroizing::new([8u8; 32]));
        // Two stores on one file: `serve` and a `fieldvault-server` process beside it.
        let (a, b) = (SqliteStore::open(&path, &key).expect("a"), SqliteStore::open(&path, &key).expect("b"));
        assert_eq!(fresh(&a, &[nonce("k", 1), nonce("k", 2)]).await, [true, true]);
        assert_eq!(fresh(&b, &[nonce("k", 2), nonce("k", 3), nonce("j", 1)]).await, [false, true, true]);
        assert_eq!(fresh(&a, &[nonce("k", 3), nonce("j", 1), nonce("k", 4)]).await, [false, false, true]);
        assert!(!b.insert_nonce("k", &[4; 16], 10_000).await.expect("insert"), "the single insert reads the log too");
        drop((a, b));
        // A restart reads the log again.
        let c = SqliteStore::open(&path, &key).expect("reopens");
        assert_eq!(fresh(&c, &[nonce("k", 1), nonce("k", 4), nonce("k", 5)]).await, [false, false, true]);
    }

    #[tokio::test]
    async fn a_purge_drops_expired_nonces_from_the_log_and_the_memory_of_every_store() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (path, key) = (tmp.path().join("server.db"), Zeroizing::new([8u8; 32]));
        let (a, b) = (SqliteStore::open(&path, &key).expect("a"), SqliteStore::open(&path, &key).expect("b"));
        let soon = NonceClaim { expires_at: 1_000, ..nonce("k", 1) };
        assert_eq!(fresh(&a, &[soon.clone(), nonce("k", 2)]).await, [true, true]);
        assert_eq!(fresh(&b, std::slice::from_ref(&soon)).await, [false]);
        // Not before its expiry...
        assert_eq!(a.purge_nonces(1_000).await.expect("purge"), 0);
        assert_eq!(fresh(&a, std::slice::from_ref(&soon)).await, [false]);
        // ...then gone from the log; a store that learnt it before forgets it at its own purge.
        assert_eq!(a.purge_nonces(2_000).await.expect("purge"), 1);
        assert_eq!(fresh(&a, &[nonce("k", 2)]).await, [false], "the unexpired one stays");
        b.purge_nonces(2_000).await.expect("purge");
        let rows = |c: &mut Connection| Ok(c.query_row("SELECT count(*) FROM nonces", [], |r| r.get::<_, i64>(0))?);
        assert_eq!(a.run(rows).await.expect("counts"), 1);
        // The last row stays, even expired, so sequence numbers are never reused after a
        // purge and `b` still sees what `a` adds.
        assert_eq!(fresh(&a, &[nonce("k", 6)]).await, [true]);
        assert_eq!(a.purge_nonces(20_000).await.expect("purge"), 1);
        assert_eq!(a.run(rows).await.expect("counts"), 1);
        assert_eq!(fresh(&a, &[nonce("k", 7)]).await, [true]);
        assert_eq!(fresh(&b, &[nonce("k", 7)]).await, [false]);
    }

    #[tokio::test]
    async fn a_purge_that_fails_leaves_the_store_reading_what_others_append_after_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (path, key) = (tmp.path().join("server.db"), Zeroizing::new([6u8; 32]));
        let (a, b) = (SqliteStore::open(&path, &key).expect("a"), SqliteStore::open(&path, &key).expect("b"));
        // Two nonces dated far ahead, which the purge moves to the end, then the last row.
        let far = |n: u8| NonceClaim { expires_at: 1_000_000, ..nonce("k", n) };
        assert_eq!(fresh(&a, &[far(1), far(0xEE), nonce("k", 3)]).await, [true; 3]);
        // The disk fills while the second is moved: the purge fails after the first moved.
        a.run(|c| {
            Ok(c.execute_batch(
                "CREATE TRIGGER full BEFORE INSERT ON nonces WHEN NEW.nonce = x'EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE'
                 BEGIN SELECT RAISE(ABORT, 'the disk is full'); END",
            )?)
        })
        .await
        .expect("trigger");
        assert!(a.purge_nonces(2_000).await.is_err());
        a.run(|c| Ok(c.execute_batch("DROP TRIGGER full")?)).await.expect("drop");
        // The numbers the failed purge used are handed out again, to `b`'s nonce: `a` must
        // still read it, and refuse it.
        assert_eq!(fresh(&b, &[nonce("k", 9)]).await, [true]);
        assert_eq!(fresh(&a, &[nonce("k", 9)]).await, [false]);
    }

    #[tokio::test]
    async fn a_version_10_store_keeps_its_nonces_in_the_log() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (path, key) = (tmp.path().join("server.db"), Zeroizing::new([9u8; 32]));
        {
            let conn = connect(&path, &key).expect("connects");
            let v10 = migration(0, super::super::admission::SCHEMA_VERSION_REVOCATIONS);
            conn.execute_batch(&format!("BEGIN; {v10} PRAGMA user_version = 10; COMMIT;")).expect("v10");
            conn.execute("INSERT INTO nonces (key_id, nonce, expires_at) VALUES ('k', ?1, 10000)", [&[1u8; 16][..]])
                .expect("nonce");
        }
        let store = SqliteStore::open(&path, &key).expect("migrates");
        assert_eq!(fresh(&store, &[nonce("k", 1), nonce("k", 2)]).await, [false, true]);
        let (version, indexes): (i64, i64) = store
            .run(|c| {
                let version = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                let indexes = c.query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE tbl_name = 'nonces' AND type = 'index'",
                    [],
                    |r| r.get(0),
                )?;
                Ok((version, indexes))
            })
            .await
            .expect("version");
        // Version 12: the log alone, no index to write beside it.
        assert_eq!((version, indexes), (12, 0));
    }

    #[tokio::test]
    async fn a_purge_walks_the_log_from_its_start_and_never_drops_an_unexpired_nonce() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (path, key) = (tmp.path().join("server.db"), Zeroizing::new([7u8; 32]));
        let (a, b) = (SqliteStore::open(&path, &key).expect("a"), SqliteStore::open(&path, &key).expect("b"));
        let at = |n: u8, expires_at: u64| NonceClaim { expires_at, ..nonce("k", n) };
        // In log order: a request dated far ahead, then expiries close to increasing.
        let (far, gone, blocks, behind, later, last) =
            (at(1, 1_000_000), at(2, 1_000), at(3, 1_500), at(4, 1_100), at(5, 5_000), at(6, 1_000));
        let claims = [far.clone(), gone.clone(), blocks.clone(), behind.clone(), later.clone(), last.clone()];
        assert_eq!(fresh(&a, &claims).await, [true; 6]);
        let seqs = |c: &mut Connection| {
            let mut q = c.prepare("SELECT nonce, seq FROM nonces ORDER BY seq")?;
            let rows = q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?[0], r.get::<_, i64>(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        };
        // At 1,200: `far` moves to the end, `gone` goes, `blocks` (not expired, within reach)
        // ends the walk, and `behind`, expired, waits behind it.
        assert_eq!(a.purge_nonces(1_200).await.expect("purge"), 1);
        assert_eq!(a.run(seqs).await.expect("rows"), [(3, 3), (4, 4), (5, 5), (6, 6), (1, 7)]);
        // The moved nonce is still refused by this store, the other and a reopened one; the
        // purged one only by none (its timestamp is long stale anyway).
        assert_eq!(fresh(&a, std::slice::from_ref(&far)).await, [false]);
        assert_eq!(fresh(&b, std::slice::from_ref(&far)).await, [false]);
        let c = SqliteStore::open(&path, &key).expect("reopens");
        assert_eq!(fresh(&c, &[far.clone(), blocks.clone(), later.clone()]).await, [false, false, false]);
        assert_eq!(fresh(&a, &[gone]).await, [true], "an expired nonce is forgotten");
        // At 1,600: `blocks` and `behind` go, `later` (5,000, out of reach) moves, `last`
        // goes (no longer the log's last row), `far` moves again.
        // (`gone`, claimed again, is now the last row.)
        assert_eq!(a.purge_nonces(1_600).await.expect("purge"), 3);
        assert_eq!(a.run(seqs).await.expect("rows"), [(2, 8), (5, 9), (1, 10)]);
        assert_eq!(fresh(&c, &[far, later]).await, [false, false]);
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
            let v2 = format!("{SCHEMA_V1} {SCHEMA_V2} {}", attachments::SCHEMA_V2);
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

    #[tokio::test]
    async fn a_version_3_store_keeps_its_documents_and_drops_the_attachments_no_other_device_could_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("server.db");
        let key = Zeroizing::new([5u8; 32]);
        let id = "a".repeat(32);
        {
            // What the previous build wrote: version 3, an attachment with its device-wrapped CEK.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(&sqlcipher::key_pragma("main", &key)).expect("key");
            conn.execute_batch(&sqlcipher::cipher_settings_sql("main")).expect("settings");
            let v3 = format!("{SCHEMA_V1} {SCHEMA_V2} {} {}", attachments::SCHEMA_V2, devices::SCHEMA_V3);
            conn.execute_batch(&format!("BEGIN; {v3} PRAGMA user_version = 3; COMMIT;")).expect("v3");
            conn.execute_batch(&format!(
                "INSERT INTO users (name, password_hash, roles, created_at) VALUES ('alice', 'h', '[]', 1);
                 INSERT INTO documents (collection, id, owner, version, deleted, body, seq, updated_at) VALUES
                     ('notes', 'n1', 'alice', 2, 0, '{{\"text\":\"x\",\"owner\":\"alice\"}}', 7, 1),
                     ('notes', 'n2', 'alice', 3, 1, '{{\"owner\":\"alice\"}}', 8, 1);
                 INSERT INTO attachments (id, user_name, collection, doc_id, header, manifest, wrapped_cek,
                     chunk_count, length, complete, created_at) VALUES
                     ('{id}', 'alice', 'notes', 'n1', x'01', x'02', x'03', 2, 10, 1, 1);
                 INSERT INTO attachment_chunks (attachment_id, idx, bytes) VALUES ('{id}', 0, x'04'), ('{id}', 1, x'05');"
            ))
            .expect("rows");
        }
        let store = SqliteStore::open(&path, &key).expect("migrates");
        let n1 = store.document("notes", "n1").await.expect("reads").expect("kept");
        assert_eq!((n1.version, n1.deleted, n1.attachments.len()), (2, false, 0));
        assert_eq!(n1.body, serde_json::json!({"text": "x", "owner": "alice"}));
        let n2 = store.document("notes", "n2").await.expect("reads").expect("kept");
        assert_eq!((n2.version, n2.deleted), (3, true));
        // The attachment and its chunks are gone: its key opened on one device only.
        assert!(store.attachment(&id).await.expect("reads").is_none());
        let (chunks, wrapped, sealed): (i64, i64, i64) = store
            .run(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM attachment_chunks),
                        (SELECT count(*) FROM pragma_table_info('attachments') WHERE name = 'wrapped_cek'),
                        (SELECT count(*) FROM pragma_table_info('attachments') WHERE name = 'cek_sealed')",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?)
            })
            .await
            .expect("reads");
        assert_eq!((chunks, wrapped, sealed), (0, 0, 1));
        assert!(store.documents_listing(&id).await.expect("the index exists").is_empty());
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
        assert_eq!(store.create_attachment(&record, 2).await.expect("stores"), Some(record));
    }
}
