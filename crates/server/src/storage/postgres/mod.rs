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
//!
//! One file per noun, as on SQLite: `users.rs`, `sessions.rs`, `devices.rs`, `sync.rs`,
//! `attachments.rs`. This file connects, migrates the schema and routes each [`Store`] call
//! to its noun.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};

use fieldvault_core::protocol::auth::DeviceReason;
use fieldvault_core::protocol::sync::StoredDoc;

mod admins;
mod admission;
mod attachments;
mod audit;
mod devices;
mod fleet;
mod identities;
mod sessions;
mod sync;
mod users;

pub use sync::idempotency_lock_id;

use super::admission::{ClaimedNonces, NonceClaim, SessionRead};
use super::{AdminRecord, AdminSession, DeviceFilter, LinkOutcome, OidcSession, Page, SessionSummary, Sessions};
use super::{
    AttachmentRecord, DeviceRecord, DeviceState, LeaseRecord, LoginFailures, LoginOutcome, NewDirective, NewLogin,
    PullBatch, PullOutcome, PushBatch, PushOutcome, SessionRecord, Spend, SpendOutcome, Store, StoreError, TotpRecord,
    UserRecord,
};
use super::{AuditCut, AuditEvent, AuditRecord};

/// Runs `$action` (an expression on `$tx: &mut PgConnection` that yields a future) in one
/// transaction whose first statement appends `$event`'s record (taking the chain head);
/// commits only when `$applied(&outcome)`, else nothing is written, the record neither.
macro_rules! audited {
    ($pool:expr, $event:expr, |$tx:ident| $action:expr, $applied:expr) => {{
        let mut tx = $pool.begin().await?;
        audit::append_in(&mut tx, $event).await?;
        let outcome = {
            let $tx: &mut PgConnection = &mut tx;
            $action.await?
        };
        if ($applied)(&outcome) {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(outcome)
    }};
}

/// The newest schema version this build knows.
const SCHEMA_VERSION: i64 = super::admission::SCHEMA_VERSION_REVOCATIONS;

/// Key of the advisory lock held while migrating (the ASCII bytes of `fvschema`, to stay clear of
/// other applications' keys in a shared database).
const MIGRATION_LOCK: i64 = 0x6676_7363_6865_6d61;

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
        for statement in sync::SCHEMA_V2.iter().chain(attachments::SCHEMA_V2) {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < 3 {
        for statement in devices::SCHEMA_V3 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < 4 {
        for statement in attachments::SCHEMA_V4 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < 5 {
        for statement in users::SCHEMA_V5 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < 6 {
        for statement in identities::SCHEMA_V6 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < 7 {
        for statement in audit::SCHEMA_V7 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < 8 {
        for statement in admins::SCHEMA_V8 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < super::fleet::SCHEMA_VERSION_FLEET {
        for statement in fleet::SCHEMA_V9 {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    if found < super::admission::SCHEMA_VERSION_REVOCATIONS {
        for statement in admission::SCHEMA_V10 {
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

#[async_trait]
impl Store for PgStore {
    async fn add_user(&self, user: &UserRecord, now: u64, audit: &AuditEvent) -> Result<(), StoreError> {
        audited!(self.pool, audit, |tx| users::add(tx, user, now), |_: &()| true)
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        users::get(&self.pool, name).await
    }

    async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| users::set_password(tx, name, password_hash, now), |done: &bool| *done)
    }

    async fn disable_user(&self, name: &str, now: u64, audit: &AuditEvent) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| users::disable(tx, name, now), |done: &bool| *done)
    }

    async fn enable_user(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| users::enable(tx, name), |done: &bool| *done)
    }

    async fn remove_user(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| users::remove(tx, name), |done: &bool| *done)
    }

    async fn oidc_user(&self, issuer: &str, subject: &str) -> Result<Option<String>, StoreError> {
        identities::user(&self.pool, issuer, subject).await
    }

    async fn link_oidc(
        &self,
        issuer: &str,
        subject: &str,
        user: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<LinkOutcome, StoreError> {
        audited!(self.pool, audit, |tx| identities::link(tx, issuer, subject, user, now), |o: &LinkOutcome| {
            *o == LinkOutcome::Linked
        })
    }

    async fn unlink_oidc(&self, issuer: &str, subject: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| identities::unlink(tx, issuer, subject), |done: &bool| *done)
    }

    async fn add_oidc_user(
        &self,
        user: &UserRecord,
        issuer: &str,
        subject: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        audited!(self.pool, audit, |tx| identities::add_user(tx, user, issuer, subject, now), |_: &()| true)
    }

    async fn set_oidc_session(
        &self,
        session_id: &str,
        issuer: &str,
        refresh_sealed: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        identities::set_session(&self.pool, session_id, issuer, refresh_sealed).await
    }

    async fn oidc_session(&self, session_id: &str) -> Result<Option<OidcSession>, StoreError> {
        identities::session(&self.pool, session_id).await
    }

    async fn enroll_totp(&self, name: &str, secret_sealed: &[u8], audit: &AuditEvent) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| users::set_totp(tx, name, Some(secret_sealed)), |done: &bool| *done)
    }

    async fn disable_totp(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| users::set_totp(tx, name, None), |done: &bool| *done)
    }

    async fn totp(&self, name: &str) -> Result<Option<TotpRecord>, StoreError> {
        users::totp(&self.pool, name).await
    }

    async fn login_failures(&self, user: &str, address: &str) -> Result<LoginFailures, StoreError> {
        users::failures(&self.pool, user, address).await
    }

    async fn record_login_failure(&self, user: &str, address: &str, now: u64) -> Result<LoginFailures, StoreError> {
        users::record_failure(&self.pool, user, address, now).await
    }

    async fn clear_login_failures(&self, user: &str, address: &str) -> Result<(), StoreError> {
        users::clear_failures(&self.pool, user, address).await
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceState>, StoreError> {
        devices::device(&self.pool, id).await
    }

    async fn login(&self, login: &NewLogin, audit: &AuditEvent) -> Result<LoginOutcome, StoreError> {
        audited!(self.pool, audit, |tx| devices::login(tx, login), |o: &LoginOutcome| *o == LoginOutcome::Recorded)
    }

    async fn session_by_key_id(&self, key_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        sessions::by_key_id(&self.pool, key_id).await
    }

    async fn revoke_session(&self, session_id: &str, now: u64) -> Result<(), StoreError> {
        sessions::revoke(&self.pool, session_id, now).await
    }

    async fn retire_device(&self, device_id: &str, reason: DeviceReason, now: u64) -> Result<(), StoreError> {
        devices::retire(&self.pool, device_id, reason, now).await
    }

    async fn renew_lease(&self, device_id: &str, expires_at: u64, now: u64) -> Result<Option<LeaseRecord>, StoreError> {
        devices::renew_lease(&self.pool, device_id, expires_at, now).await
    }

    async fn spend_refresh(&self, spend: Spend<'_>) -> Result<SpendOutcome, StoreError> {
        sessions::spend_refresh(&self.pool, spend).await
    }

    async fn insert_nonce(&self, key_id: &str, nonce: &[u8; 16], expires_at: u64) -> Result<bool, StoreError> {
        sessions::insert_nonce(&self.pool, key_id, nonce, expires_at).await
    }

    async fn purge_nonces(&self, now: u64) -> Result<u64, StoreError> {
        sessions::purge_nonces(&self.pool, now).await
    }

    async fn claim_nonces(&self, claims: Vec<NonceClaim>) -> Result<ClaimedNonces, StoreError> {
        admission::claim_nonces(&self.pool, &claims).await
    }

    async fn session_read(&self, key_id: &str) -> Result<SessionRead, StoreError> {
        admission::session_read(&self.pool, key_id).await
    }

    async fn clock(&self) -> Result<Option<u64>, StoreError> {
        sessions::clock(&self.pool).await.map(Some)
    }

    async fn set_user_access(
        &self,
        name: &str,
        roles: &[String],
        attributes: &serde_json::Map<String, serde_json::Value>,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| users::set_access(tx, name, roles, attributes), |done: &bool| *done)
    }

    fn backend(&self) -> &'static str {
        "PostgreSQL"
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        fleet::devices(&self.pool, None, None, None).await
    }

    async fn devices_page(&self, filter: DeviceFilter<'_>, page: Page) -> Result<Vec<DeviceRecord>, StoreError> {
        let (user, id) = filter.columns();
        fleet::devices(&self.pool, user, id, Some(page)).await
    }

    async fn mark_directives_sent(&self, device_id: &str, tokens: &[String], now: u64) -> Result<(), StoreError> {
        fleet::mark_sent(&self.pool, device_id, tokens, now).await
    }

    async fn sessions_page(&self, user: &str, page: Page) -> Result<Vec<SessionSummary>, StoreError> {
        fleet::sessions_page(&self.pool, user, page).await
    }

    async fn revoke_sessions(
        &self,
        user: &str,
        which: Sessions<'_>,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<u64, StoreError> {
        audited!(self.pool, audit, |tx| fleet::revoke_sessions(tx, user, which, now), |n: &u64| *n > 0)
    }

    async fn add_directive(&self, d: &NewDirective, audit: &AuditEvent) -> Result<bool, StoreError> {
        audited!(self.pool, audit, |tx| devices::add_directive(tx, d), |done: &bool| *done)
    }

    async fn ack_directives(
        &self,
        device_id: &str,
        jtis: &[String],
        now: u64,
        audit: &AuditEvent,
    ) -> Result<u64, StoreError> {
        audited!(self.pool, audit, |tx| devices::ack_directives(tx, device_id, jtis, now), |n: &u64| *n > 0)
    }

    async fn document(&self, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        sync::document(&self.pool, collection, id).await
    }

    async fn documents_listing(&self, attachment_id: &str) -> Result<Vec<(String, String, StoredDoc)>, StoreError> {
        attachments::documents_listing(&self.pool, attachment_id).await
    }

    async fn create_attachment(
        &self,
        record: &AttachmentRecord,
        doc_version: u64,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        attachments::create(&self.pool, record, doc_version).await
    }

    async fn attachment(&self, id: &str) -> Result<Option<(AttachmentRecord, Vec<u64>)>, StoreError> {
        attachments::get(&self.pool, id).await
    }

    async fn put_chunk(&self, id: &str, index: u64, bytes: &[u8]) -> Result<Option<(u64, bool)>, StoreError> {
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
        sync::purge_idempotency(&self.pool, before).await
    }

    async fn users_page(&self, prefix: &str, page: Page) -> Result<Vec<UserRecord>, StoreError> {
        admins::users_page(&self.pool, prefix, page).await
    }

    async fn add_admin(&self, name: &str, password_hash: &str, now: u64, audit: &AuditEvent) -> Result<(), StoreError> {
        audited!(self.pool, audit, |tx| admins::add(tx, name, password_hash, now), |_: &()| true)
    }

    async fn admin(&self, name: &str) -> Result<Option<AdminRecord>, StoreError> {
        admins::get(&self.pool, name).await
    }

    async fn set_admin_totp(&self, name: &str, secret_sealed: &[u8]) -> Result<bool, StoreError> {
        admins::set_totp(&self.pool, name, secret_sealed).await
    }

    async fn use_admin_totp(&self, name: &str, secret_sealed: &[u8], step: u64) -> Result<bool, StoreError> {
        admins::use_totp(&self.pool, name, secret_sealed, step).await
    }

    async fn put_admin_session(&self, session: &AdminSession) -> Result<(), StoreError> {
        admins::put_session(&self.pool, session).await
    }

    async fn admin_session(&self, id_hash: &[u8; 32]) -> Result<Option<AdminSession>, StoreError> {
        admins::session(&self.pool, id_hash).await
    }

    async fn delete_admin_session(&self, id_hash: &[u8; 32]) -> Result<(), StoreError> {
        admins::delete_session(&self.pool, id_hash).await
    }

    async fn purge_admin_sessions(&self, before: u64) -> Result<u64, StoreError> {
        admins::purge_sessions(&self.pool, before).await
    }

    async fn audit_append(&self, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
        audit::append(&self.pool, event).await
    }

    async fn audit_page(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        audit::page(&self.pool, after_seq, limit).await
    }

    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        audit::head(&self.pool).await
    }

    async fn audit_prune(&self, before: u64, cut: &AuditEvent) -> Result<Option<AuditCut>, StoreError> {
        audit::prune(&self.pool, before, cut).await
    }
}

#[cfg(test)]
mod tests;
