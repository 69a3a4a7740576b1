//! [`PgStore`]: the [`Store`] on PostgreSQL, for deployments that run several server
//! instances against one database.
//!
//! It keeps the same rows as the SQLCipher store: users, devices (with their sealed secrets
//! and leases), sessions (with their sealed secrets), refresh tokens and their spends, request
//! nonces and login failures.
//! Every instance reads and writes the same tables, so each decision that must hold across
//! instances is made by the database: a nonce insert is one `INSERT .. ON CONFLICT DO NOTHING`,
//! a failed login one upsert, and a refresh spend one transaction that first locks the
//! session row (`SELECT .. FOR UPDATE`), so two spends of one session run one after the other.
//!
//! The schema is versioned in `fv_schema`. [`PgStore::connect`] migrates it in one
//! transaction that first takes a transaction-scoped advisory lock, so instances that start
//! together migrate one at a time and the later ones find the work done. A schema newer than
//! this build is refused ([`StoreError::SchemaTooNew`]), never written to.
//!
//! Times are Unix seconds in `BIGINT` columns; values past `i64::MAX` are refused.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};

use fieldvault_core::protocol::sync::StoredDoc;

use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::protocol::auth::DeviceReason;

mod attachments;
mod devices;
mod sync;

pub use sync::idempotency_lock_id;

use super::{
    AttachmentRecord, DeviceRecord, DeviceState, LeaseRecord, LoginFailures, NewDirective, NewLogin, PullBatch,
    PullOutcome, PushBatch, PushOutcome, SessionRecord, Spend, SpendOutcome, Store, StoreError, UserRecord,
    decode_access, encode_access, from_column, to_column,
};

/// The newest schema version this build knows.
const SCHEMA_VERSION: i64 = 3;

/// Key of the advisory lock held while migrating (the ASCII bytes of `fvschema`, to stay clear of
/// other applications' keys in a shared database).
const MIGRATION_LOCK: i64 = 0x6676_7363_6865_6d61;

/// Postgres' SQLSTATE for a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// Schema version 1, one statement each (prepared statements take one statement).
const SCHEMA_V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        roles TEXT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT false,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS devices (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL UNIQUE,
        user_name TEXT NOT NULL REFERENCES users(name),
        device_id TEXT NOT NULL REFERENCES devices(id),
        secret_sealed BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT NULL,
        lease_id TEXT NULL,
        lease_sealed BYTEA NULL,
        lease_issued_at BIGINT NULL,
        lease_expires_at BIGINT NULL
    )",
    "CREATE INDEX IF NOT EXISTS sessions_user_name ON sessions (user_name)",
    "CREATE TABLE IF NOT EXISTS refresh_tokens (
        hash BYTEA PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id),
        issued_at BIGINT NOT NULL,
        spent_at BIGINT NULL,
        attempt_id TEXT NULL,
        successor_hash BYTEA NULL,
        successor_sealed BYTEA NULL
    )",
    "CREATE INDEX IF NOT EXISTS refresh_tokens_session_id ON refresh_tokens (session_id)",
    "CREATE TABLE IF NOT EXISTS nonces (
        key_id TEXT NOT NULL,
        nonce BYTEA NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (key_id, nonce)
    )",
    "CREATE INDEX IF NOT EXISTS nonces_expires_at ON nonces (expires_at)",
    "CREATE TABLE IF NOT EXISTS login_failures (
        user_name TEXT NOT NULL,
        address TEXT NOT NULL,
        failures INTEGER NOT NULL,
        last_at BIGINT NOT NULL,
        PRIMARY KEY (user_name, address)
    )",
];

/// The [`Store`] on PostgreSQL: a connection pool over a migrated schema.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects with a pool of at most `max_connections` (at least one) and migrates the
    /// schema to this build's version.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the URL is invalid, the database cannot be reached or a
    /// migration fails; [`StoreError::SchemaTooNew`] if a newer build already migrated it.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        PgStore::open(options, None, max_connections).await
    }

    /// Like [`PgStore::connect`], but every connection uses `search_path = schema`, and the
    /// schema is created if missing. Tests use a fresh schema each so that they can run in
    /// parallel on one database.
    ///
    /// # Errors
    /// As [`PgStore::connect`]; also [`StoreError::Backend`] if `schema` is not a name of
    /// 1 to 63 characters from `[a-z0-9_]`.
    pub async fn connect_in_schema(url: &str, schema: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        check_schema_name(schema)?;
        let options = PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
        PgStore::open(options, Some(schema), max_connections).await
    }

    /// Drops `schema` and everything in it, if it exists (tests' cleanup).
    ///
    /// # Errors
    /// [`StoreError::Backend`] if `schema` is not a valid name (see
    /// [`PgStore::connect_in_schema`]) or the database fails.
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        check_schema_name(schema)?;
        let options = PgConnectOptions::from_str(url)?;
        let mut conn = PgConnection::connect_with(&options).await?;
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))).execute(&mut conn).await?;
        Ok(conn.close().await?)
    }

    async fn open(
        options: PgConnectOptions,
        schema: Option<&str>,
        max_connections: u32,
    ) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new().max_connections(max_connections.max(1)).connect_with(options).await?;
        migrate(&pool, schema).await?;
        Ok(PgStore { pool })
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction under [`MIGRATION_LOCK`].
async fn migrate(pool: &PgPool, schema: Option<&str>) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    if let Some(schema) = schema {
        // Under the lock: two `CREATE SCHEMA IF NOT EXISTS` at once can still collide.
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))).execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS fv_schema (version BIGINT NOT NULL)").execute(&mut *tx).await?;
    let found: Option<i64> = sqlx::query("SELECT max(version) FROM fv_schema").fetch_one(&mut *tx).await?.try_get(0)?;
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    if found < 1 {
        for statement in SCHEMA_V1 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < 2 {
        for statement in sync::SCHEMA_V2.iter().chain(attachments::SCHEMA) {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < 3 {
        for statement in devices::SCHEMA_V3 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < SCHEMA_VERSION {
        sqlx::query("DELETE FROM fv_schema").execute(&mut *tx).await?;
        sqlx::query("INSERT INTO fv_schema (version) VALUES ($1)").bind(SCHEMA_VERSION).execute(&mut *tx).await?;
    }
    Ok(tx.commit().await?)
}

/// Schema names are ours (`[a-z0-9_]+`); anything else is refused rather than quoted.
fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid { Ok(()) } else { Err(StoreError::Backend("invalid schema name".to_owned())) }
}

/// A database failure. sqlx's messages carry Postgres' message and never the bound values
/// (those appear only in the error's `detail`, which is not displayed).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|code| code == UNIQUE_VIOLATION)
}

/// Revokes a session inside `tx`: marks it revoked (keeping the first time) and spends its live
/// refresh tokens. Its device, and the device's lease, stay.
async fn revoke_in(conn: &mut PgConnection, session_id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
        .bind(session_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE refresh_tokens SET spent_at = $2 WHERE session_id = $1 AND spent_at IS NULL")
        .bind(session_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Revokes every live session of a user inside `tx` (after a password change or disable);
/// devices and their leases stay.
async fn revoke_user_in(conn: &mut PgConnection, user: &str, now: i64) -> Result<(), StoreError> {
    revoke_sessions_where(conn, SessionsOf::User, user, now).await
}

/// Whose sessions [`revoke_sessions_where`] revokes.
#[derive(Clone, Copy)]
pub(super) enum SessionsOf {
    /// A user's (`user_name`).
    User,
    /// A device's (`device_id`).
    Device,
}

/// Revokes every live session of one user or device and spends their refresh tokens.
pub(super) async fn revoke_sessions_where(
    conn: &mut PgConnection,
    of: SessionsOf,
    value: &str,
    now: i64,
) -> Result<(), StoreError> {
    // Static statements (sqlx refuses SQL built at run time): one pair per owner kind.
    let (sessions, refresh) = match of {
        SessionsOf::User => (
            "UPDATE sessions SET revoked_at = $2 WHERE user_name = $1 AND revoked_at IS NULL",
            "UPDATE refresh_tokens SET spent_at = $2
             WHERE spent_at IS NULL AND session_id IN (SELECT id FROM sessions WHERE user_name = $1)",
        ),
        SessionsOf::Device => (
            "UPDATE sessions SET revoked_at = $2 WHERE device_id = $1 AND revoked_at IS NULL",
            "UPDATE refresh_tokens SET spent_at = $2
             WHERE spent_at IS NULL AND session_id IN (SELECT id FROM sessions WHERE device_id = $1)",
        ),
    };
    for statement in [sessions, refresh] {
        sqlx::query(statement).bind(value).bind(now).execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn add_user(&self, user: &UserRecord, now: u64) -> Result<(), StoreError> {
        let (roles, attributes) = encode_access(&user.roles, &user.attributes)?;
        let result = sqlx::query(
            "INSERT INTO users (name, password_hash, roles, disabled, created_at, attributes)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(roles)
        .bind(user.disabled)
        .bind(to_column(now, "users.created_at")?)
        .bind(attributes)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::UserExists(user.name.clone())),
            Err(e) => Err(e.into()),
        }
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT name, password_hash, roles, disabled, attributes FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let (roles, attributes) =
            decode_access(&row.try_get::<String, _>("roles")?, &row.try_get::<String, _>("attributes")?)?;
        Ok(Some(UserRecord {
            attributes,
            name: row.try_get("name")?,
            password_hash: row.try_get("password_hash")?,
            roles,
            disabled: row.try_get("disabled")?,
        }))
    }

    async fn set_password(&self, name: &str, password_hash: &str, now: u64) -> Result<bool, StoreError> {
        let now = to_column(now, "sessions.revoked_at")?;
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE users SET password_hash = $2 WHERE name = $1")
            .bind(name)
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        revoke_user_in(&mut tx, name, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn disable_user(&self, name: &str, now: u64) -> Result<bool, StoreError> {
        let now = to_column(now, "sessions.revoked_at")?;
        let mut tx = self.pool.begin().await?;
        let updated =
            sqlx::query("UPDATE users SET disabled = true WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        revoke_user_in(&mut tx, name, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn enable_user(&self, name: &str) -> Result<bool, StoreError> {
        let updated =
            sqlx::query("UPDATE users SET disabled = false WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        devices::remove_user(&self.pool, name).await
    }

    async fn login_failures(&self, user: &str, address: &str) -> Result<LoginFailures, StoreError> {
        let row = sqlx::query("SELECT failures, last_at FROM login_failures WHERE user_name = $1 AND address = $2")
            .bind(user)
            .bind(address)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => failures_from_row(&row),
            None => Ok(LoginFailures::default()),
        }
    }

    async fn record_login_failure(&self, user: &str, address: &str, now: u64) -> Result<LoginFailures, StoreError> {
        // One statement, so concurrent failures on several instances each count.
        let row = sqlx::query(
            "INSERT INTO login_failures (user_name, address, failures, last_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (user_name, address)
             DO UPDATE SET failures = login_failures.failures + 1, last_at = EXCLUDED.last_at
             RETURNING failures, last_at",
        )
        .bind(user)
        .bind(address)
        .bind(to_column(now, "login_failures.last_at")?)
        .fetch_one(&self.pool)
        .await?;
        failures_from_row(&row)
    }

    async fn clear_login_failures(&self, user: &str, address: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE user_name = $1 AND address = $2")
            .bind(user)
            .bind(address)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceState>, StoreError> {
        devices::device(&self.pool, id).await
    }

    async fn login(&self, login: &NewLogin) -> Result<bool, StoreError> {
        devices::login(&self.pool, login).await
    }

    async fn session_by_key_id(&self, key_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, key_id, user_name, device_id, secret_sealed, revoked_at IS NOT NULL AS revoked, created_at,
                 COALESCE((SELECT array_agg(d.token ORDER BY d.issued_at, d.jti) FROM directives d
                           WHERE d.device_id = sessions.device_id AND d.acked_at IS NULL), ARRAY[]::text[])
                     AS directives
             FROM sessions WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SessionRecord {
            id: row.try_get("id")?,
            key_id: row.try_get("key_id")?,
            user: row.try_get("user_name")?,
            device_id: row.try_get("device_id")?,
            secret_sealed: row.try_get("secret_sealed")?,
            revoked: row.try_get("revoked")?,
            created_at: from_column(row.try_get("created_at")?, "sessions.created_at")?,
            directives: row.try_get("directives")?,
        }))
    }

    async fn revoke_session(&self, session_id: &str, now: u64) -> Result<(), StoreError> {
        let now = to_column(now, "sessions.revoked_at")?;
        let mut tx = self.pool.begin().await?;
        revoke_in(&mut tx, session_id, now).await?;
        Ok(tx.commit().await?)
    }

    async fn retire_device(&self, device_id: &str, reason: DeviceReason, now: u64) -> Result<(), StoreError> {
        let now = to_column(now, "devices.retired_at")?;
        let mut tx = self.pool.begin().await?;
        devices::retire_in(&mut tx, device_id, reason, now).await?;
        Ok(tx.commit().await?)
    }

    async fn renew_lease(&self, device_id: &str, expires_at: u64, now: u64) -> Result<Option<LeaseRecord>, StoreError> {
        devices::renew_lease(&self.pool, device_id, expires_at, now).await
    }

    async fn spend_refresh(&self, spend: Spend<'_>) -> Result<SpendOutcome, StoreError> {
        let now = to_column(spend.now, "refresh_tokens.spent_at")?;
        let mut tx = self.pool.begin().await?;

        // The row lock serialises every spend (and revocation) of this session across
        // instances; under READ COMMITTED each later statement sees what the previous holder
        // committed.
        let session = sqlx::query("SELECT revoked_at FROM sessions WHERE id = $1 FOR UPDATE")
            .bind(spend.session_id)
            .fetch_optional(&mut *tx)
            .await?;
        let live = match session {
            None => false,
            Some(row) => row.try_get::<Option<i64>, _>("revoked_at")?.is_none(),
        };
        if !live {
            tx.rollback().await?;
            return Ok(SpendOutcome::Unknown);
        }

        let spent = sqlx::query(
            "UPDATE refresh_tokens SET spent_at = $3, attempt_id = $4, successor_hash = $5, successor_sealed = $6
             WHERE hash = $1 AND session_id = $2 AND spent_at IS NULL",
        )
        .bind(&spend.token_hash[..])
        .bind(spend.session_id)
        .bind(now)
        .bind(spend.attempt_id)
        .bind(&spend.successor_hash[..])
        .bind(&spend.successor_sealed[..])
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() == 1 {
            sqlx::query("INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)")
                .bind(&spend.successor_hash[..])
                .bind(spend.session_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(SpendOutcome::Spent);
        }

        let token = sqlx::query(
            "SELECT spent_at, attempt_id, successor_hash, successor_sealed
             FROM refresh_tokens WHERE hash = $1 AND session_id = $2",
        )
        .bind(&spend.token_hash[..])
        .bind(spend.session_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = token else {
            tx.rollback().await?;
            return Ok(SpendOutcome::Unknown);
        };
        let spent_at: Option<i64> = token.try_get("spent_at")?;
        let attempt_id: Option<String> = token.try_get("attempt_id")?;
        let successor_hash: Option<Vec<u8>> = token.try_get("successor_hash")?;
        let successor_sealed: Option<Vec<u8>> = token.try_get("successor_sealed")?;

        // A retry: the same attempt, within the window, and the successor never used. Then the
        // client lost our answer, and gets the same successor again.
        let within_window = match spent_at {
            Some(spent_at) => {
                spend.now.saturating_sub(from_column(spent_at, "refresh_tokens.spent_at")?) <= spend.retry_window
            }
            None => false,
        };
        if attempt_id.as_deref() == Some(spend.attempt_id)
            && within_window
            && let (Some(successor_hash), Some(successor_sealed)) = (successor_hash, successor_sealed)
        {
            let successor_live =
                sqlx::query("SELECT 1 FROM refresh_tokens WHERE hash = $1 AND session_id = $2 AND spent_at IS NULL")
                    .bind(&successor_hash[..])
                    .bind(spend.session_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
            if successor_live {
                tx.commit().await?;
                return Ok(SpendOutcome::Retry { successor_sealed });
            }
        }

        // Anything else is a spent token presented again: assume it was stolen, end the session.
        revoke_in(&mut tx, spend.session_id, now).await?;
        tx.commit().await?;
        Ok(SpendOutcome::ReuseRevoked)
    }

    async fn insert_nonce(&self, key_id: &str, nonce: &[u8; 16], expires_at: u64) -> Result<bool, StoreError> {
        // One autocommitted statement: of two instances inserting the same nonce, exactly one
        // gets the row.
        let inserted =
            sqlx::query("INSERT INTO nonces (key_id, nonce, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(key_id)
                .bind(&nonce[..])
                .bind(to_column(expires_at, "nonces.expires_at")?)
                .execute(&self.pool)
                .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn purge_nonces(&self, now: u64) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM nonces WHERE expires_at < $1")
            .bind(to_column(now, "nonces.expires_at")?)
            .execute(&self.pool)
            .await?;
        Ok(purged.rows_affected())
    }

    async fn set_user_access(
        &self,
        name: &str,
        roles: &[String],
        attributes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, StoreError> {
        let (roles, attributes) = encode_access(roles, attributes)?;
        let r = sqlx::query("UPDATE users SET roles = $2, attributes = $3 WHERE name = $1")
            .bind(name)
            .bind(roles)
            .bind(attributes)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        devices::devices(&self.pool).await
    }

    async fn add_directive(&self, d: &NewDirective) -> Result<bool, StoreError> {
        let now = to_column(d.now, "directives.issued_at")?;
        let mut tx = self.pool.begin().await?;
        // The device row is locked first, as by every path that changes a device.
        let exists = sqlx::query("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE")
            .bind(&d.device_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO directives (jti, device_id, kind, token, issued_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&d.jti)
            .bind(&d.device_id)
            .bind(d.kind.as_str())
            .bind(&d.token)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        match d.kind {
            DirectiveKind::Wipe => devices::retire_in(&mut tx, &d.device_id, DeviceReason::Wiped, now).await?,
            DirectiveKind::Revoke => devices::revoke_device_sessions(&mut tx, &d.device_id, now).await?,
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn ack_directives(&self, device_id: &str, jtis: &[String], now: u64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE directives SET acked_at = $3 WHERE device_id = $1 AND jti = ANY($2) AND acked_at IS NULL",
        )
        .bind(device_id)
        .bind(jtis)
        .bind(to_column(now, "directives.acked_at")?)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn document(&self, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        sync::document(&self.pool, collection, id).await
    }

    async fn create_attachment(&self, record: &AttachmentRecord) -> Result<AttachmentRecord, StoreError> {
        attachments::create(&self.pool, record).await
    }

    async fn attachment(&self, id: &str) -> Result<Option<(AttachmentRecord, Vec<u64>)>, StoreError> {
        attachments::get(&self.pool, id).await
    }

    async fn put_chunk(&self, id: &str, index: u64, bytes: &[u8]) -> Result<(u64, bool), StoreError> {
        attachments::put_chunk(&self.pool, id, index, bytes).await
    }

    async fn chunk(&self, id: &str, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        attachments::chunk(&self.pool, id, index).await
    }

    async fn push(&self, batch: PushBatch) -> Result<PushOutcome, StoreError> {
        sync::push(&self.pool, batch).await
    }

    async fn pull(&self, batch: PullBatch) -> Result<PullOutcome, StoreError> {
        sync::pull(&self.pool, batch).await
    }

    async fn purge_idempotency(&self, before: u64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
            .bind(to_column(before, "idempotency.created_at")?)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

fn failures_from_row(row: &sqlx::postgres::PgRow) -> Result<LoginFailures, StoreError> {
    LoginFailures::from_columns(i64::from(row.try_get::<i32, _>("failures")?), row.try_get("last_at")?)
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::storage::LoginDevice;

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
        }
    }

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
            store.add_user(&user("alice"), 100).await.expect("first add");
            let again = store.add_user(&user("alice"), 101).await;
            assert!(matches!(again, Err(StoreError::UserExists(ref name)) if name == "alice"), "{again:?}");
            assert_eq!(store.user("alice").await.expect("reads"), Some(user("alice")));
            assert_eq!(store.user("bob").await.expect("reads"), None);
        })
        .await;
    }

    #[tokio::test]
    async fn setting_a_password_revokes_every_session_of_the_user() {
        with_store(|_, _, store| async move {
            store.add_user(&user("alice"), 100).await.expect("adds");
            store.add_user(&user("bob"), 100).await.expect("adds");
            let a1 = new_session(1, "alice", 100);
            let a2 = new_session(2, "alice", 100);
            let b3 = new_session(3, "bob", 100);
            for s in [&a1, &a2, &b3] {
                assert!(store.login(s).await.expect("creates session"));
            }
            let found = store.session_by_key_id("kid1").await.expect("reads").expect("exists");
            assert!(!found.revoked);
            assert_eq!(found.secret_sealed, vec![1; 60]);
            let device = store.device("dev1").await.expect("reads").expect("exists");
            assert_eq!((device.lease, device.secret_sealed), (Some(lease("lease1", 100)), Some(vec![1; 61])));

            assert!(store.set_password("alice", "new-hash", 200).await.expect("sets"));
            assert!(!store.set_password("carol", "new-hash", 200).await.expect("no such user"));
            assert_eq!(store.user("alice").await.expect("reads").expect("exists").password_hash, "new-hash");
            for kid in ["kid1", "kid2"] {
                assert!(store.session_by_key_id(kid).await.expect("reads").expect("exists").revoked, "{kid}");
            }
            assert!(!store.session_by_key_id("kid3").await.expect("reads").expect("exists").revoked);
            // A revoked session's token no longer spends.
            assert_eq!(
                store.spend_refresh(spend(&a1, [1; 32], "a", 9, 201)).await.expect("spends"),
                SpendOutcome::Unknown
            );

            assert!(store.disable_user("bob", 300).await.expect("disables"));
            assert!(store.user("bob").await.expect("reads").expect("exists").disabled);
            assert!(store.session_by_key_id("kid3").await.expect("reads").expect("exists").revoked);
            // Devices and their leases outlive the sessions.
            for dev in ["dev1", "dev2", "dev3"] {
                let d = store.device(dev).await.expect("reads").expect("kept");
                assert!(d.lease.is_some() && d.retired.is_none(), "{d:?}");
            }
            assert!(store.enable_user("bob").await.expect("enables"));
            assert!(!store.user("bob").await.expect("reads").expect("exists").disabled);
            assert!(!store.enable_user("carol").await.expect("no such user"));
        })
        .await;
    }

    #[tokio::test]
    async fn a_retried_spend_gets_the_same_successor_and_any_other_reuse_revokes() {
        with_store(|_, _, store| async move {
            store.add_user(&user("alice"), 100).await.expect("adds");
            let s = new_session(1, "alice", 100);
            assert!(store.login(&s).await.expect("creates session"));

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
            store.add_user(&user("alice"), 100).await.expect("adds");
            let s1 = new_session(1, "alice", 100);
            let s2 = new_session(2, "alice", 100);
            assert!(store.login(&s1).await.expect("creates session"));
            assert!(store.login(&s2).await.expect("creates session"));

            assert_eq!(
                store.spend_refresh(spend(&s1, [1; 32], "a", 11, 100)).await.expect("spends"),
                SpendOutcome::Spent
            );
            assert_eq!(
                store.spend_refresh(spend(&s1, [1; 32], "a", 12, 161)).await.expect("spends"),
                SpendOutcome::ReuseRevoked
            );

            assert_eq!(
                store.spend_refresh(spend(&s2, [2; 32], "b", 21, 100)).await.expect("spends"),
                SpendOutcome::Spent
            );
            assert_eq!(
                store.spend_refresh(spend(&s2, [21; 32], "c", 22, 101)).await.expect("spends"),
                SpendOutcome::Spent
            );
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
            store.add_user(&user("alice"), 100).await.expect("adds");
            let s = new_session(1, "alice", 100);
            assert!(store.login(&s).await.expect("creates session"));
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
            store.add_user(&user("alice"), 100).await.expect("adds");
            let s = new_session(1, "alice", 100);
            assert!(store.login(&s).await.expect("creates session"));
            let renewed = store.renew_lease("dev1", 5_000, 150).await.expect("renews");
            assert_eq!(renewed, Some(LeaseRecord { expires_at: 5_000, ..lease("lease1", 100) }));
            store.revoke_session(&s.session_id, 200).await.expect("revokes");
            store.revoke_session(&s.session_id, 300).await.expect("revokes again");
            store.revoke_session("no-such-session", 300).await.expect("revoking nothing is fine");
            let found = store.session_by_key_id("kid1").await.expect("reads").expect("exists");
            assert!(found.revoked);
            assert_eq!(store.device("dev1").await.expect("reads").expect("kept").lease, renewed);
            assert_eq!(
                store.spend_refresh(spend(&s, [1; 32], "a", 2, 301)).await.expect("spends"),
                SpendOutcome::Unknown
            );
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
            for statement in BACK_TO_V2.iter().chain(&[
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
            for statement in BACK_TO_V2.iter().chain(&[
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
}
