//! The admin console's rows on PostgreSQL (see `sqlite/admins.rs`): administrators, their
//! console sessions (shared by every instance, so a login on one serves on all), and the
//! users listing read one page at a time.

use sqlx::{PgPool, Row};

use super::users::is_unique_violation;
use crate::storage::{AdminRecord, AdminSession, Page, StoreError, UserRecord, decode_access, from_column, to_column};

/// Version 8, one statement each.
pub(super) const SCHEMA_V8: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS admins (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        totp_secret_sealed BYTEA NULL,
        totp_confirmed BOOLEAN NOT NULL DEFAULT FALSE,
        totp_last_step BIGINT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS admin_sessions (
        id_hash BYTEA PRIMARY KEY,
        admin_name TEXT NOT NULL REFERENCES admins(name),
        csrf TEXT NOT NULL,
        full_session BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        seen_at BIGINT NOT NULL,
        stepup_at BIGINT NULL
    )",
    "CREATE INDEX IF NOT EXISTS admin_sessions_seen ON admin_sessions (seen_at)",
];

pub(super) async fn users_page(pool: &PgPool, prefix: &str, page: Page) -> Result<Vec<UserRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, password_hash, roles, disabled, attributes FROM users
         WHERE substr(name, 1, length($1)) = $1 ORDER BY name COLLATE \"C\" LIMIT $2 OFFSET $3",
    )
    .bind(prefix)
    .bind(i64::from(page.limit))
    .bind(to_column(page.offset, "page offset")?)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let (roles, attributes) =
                decode_access(&row.try_get::<String, _>("roles")?, &row.try_get::<String, _>("attributes")?)?;
            Ok(UserRecord {
                name: row.try_get("name")?,
                password_hash: row.try_get("password_hash")?,
                roles,
                disabled: row.try_get("disabled")?,
                attributes,
            })
        })
        .collect()
}

pub(super) async fn add(
    pool: impl sqlx::PgExecutor<'_>,
    name: &str,
    password_hash: &str,
    now: u64,
) -> Result<(), StoreError> {
    let result = sqlx::query("INSERT INTO admins (name, password_hash, created_at) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(password_hash)
        .bind(to_column(now, "admins.created_at")?)
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::AdminExists(name.to_owned())),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn get(pool: &PgPool, name: &str) -> Result<Option<AdminRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT name, password_hash, totp_secret_sealed, totp_confirmed, totp_last_step FROM admins WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let last: Option<i64> = row.try_get("totp_last_step")?;
    Ok(Some(AdminRecord {
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        totp_sealed: row.try_get("totp_secret_sealed")?,
        totp_confirmed: row.try_get("totp_confirmed")?,
        totp_last_step: last.map(|s| from_column(s, "admins.totp_last_step")).transpose()?,
    }))
}

pub(super) async fn set_totp(pool: &PgPool, name: &str, sealed: &[u8]) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE admins SET totp_secret_sealed = $2, totp_last_step = NULL WHERE name = $1 AND NOT totp_confirmed",
    )
    .bind(name)
    .bind(sealed)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub(super) async fn use_totp(pool: &PgPool, name: &str, sealed: &[u8], step: u64) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE admins SET totp_last_step = $3, totp_confirmed = TRUE
         WHERE name = $1 AND totp_secret_sealed = $2 AND (totp_last_step IS NULL OR totp_last_step < $3)",
    )
    .bind(name)
    .bind(sealed)
    .bind(to_column(step, "admins.totp_last_step")?)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub(super) async fn put_session(pool: &PgPool, s: &AdminSession) -> Result<(), StoreError> {
    let stepup = s.stepup_at.map(|t| to_column(t, "admin_sessions.stepup_at")).transpose()?;
    sqlx::query(
        "INSERT INTO admin_sessions (id_hash, admin_name, csrf, full_session, created_at, seen_at, stepup_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id_hash) DO UPDATE SET full_session = excluded.full_session, seen_at = excluded.seen_at,
             stepup_at = excluded.stepup_at",
    )
    .bind(&s.id_hash[..])
    .bind(&s.admin)
    .bind(&s.csrf)
    .bind(s.full)
    .bind(to_column(s.created_at, "admin_sessions.created_at")?)
    .bind(to_column(s.seen_at, "admin_sessions.seen_at")?)
    .bind(stepup)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn session(pool: &PgPool, id_hash: &[u8; 32]) -> Result<Option<AdminSession>, StoreError> {
    let row = sqlx::query(
        "SELECT admin_name, csrf, full_session, created_at, seen_at, stepup_at FROM admin_sessions WHERE id_hash = $1",
    )
    .bind(&id_hash[..])
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stepup: Option<i64> = row.try_get("stepup_at")?;
    Ok(Some(AdminSession {
        id_hash: *id_hash,
        admin: row.try_get("admin_name")?,
        csrf: row.try_get("csrf")?,
        full: row.try_get("full_session")?,
        created_at: from_column(row.try_get("created_at")?, "admin_sessions.created_at")?,
        seen_at: from_column(row.try_get("seen_at")?, "admin_sessions.seen_at")?,
        stepup_at: stepup.map(|t| from_column(t, "admin_sessions.stepup_at")).transpose()?,
    }))
}

pub(super) async fn delete_session(pool: &PgPool, id_hash: &[u8; 32]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1").bind(&id_hash[..]).execute(pool).await?;
    Ok(())
}

pub(super) async fn purge_sessions(pool: &PgPool, before: u64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM admin_sessions WHERE seen_at < $1")
        .bind(to_column(before, "admin_sessions.seen_at")?)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
