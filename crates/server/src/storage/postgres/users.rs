//! Users on PostgreSQL: accounts with their roles and attributes, their TOTP enrolment, and
//! the failed-login counts that throttle guessing. A failed login is counted by one upsert, so
//! concurrent failures on several instances each count; a login's TOTP step is used up by one
//! conditional `UPDATE` in the login's transaction, so of two logins with one code on any
//! instances, one wins.

use sqlx::{PgConnection, PgPool, Row};

use super::sessions::revoke_user_in;
use crate::storage::{
    LoginFailures, StoreError, TotpRecord, TotpUse, UserRecord, decode_access, encode_access, to_column,
};

/// Version 5 (see `sqlite/users.rs`), one statement each.
pub(super) const SCHEMA_V5: &[&str] = &[
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS totp_secret_sealed BYTEA NULL",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS totp_last_step BIGINT NULL",
];

/// Postgres' SQLSTATE for a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|code| code == UNIQUE_VIOLATION)
}

pub(super) async fn add(pool: impl sqlx::PgExecutor<'_>, user: &UserRecord, now: u64) -> Result<(), StoreError> {
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
    .execute(pool)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::UserExists(user.name.clone())),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn get(pool: &PgPool, name: &str) -> Result<Option<UserRecord>, StoreError> {
    let row = sqlx::query("SELECT name, password_hash, roles, disabled, attributes FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
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

pub(super) async fn set_password(
    tx: &mut PgConnection,
    name: &str,
    password_hash: &str,
    now: u64,
) -> Result<bool, StoreError> {
    let now = to_column(now, "sessions.revoked_at")?;
    let updated = sqlx::query("UPDATE users SET password_hash = $2 WHERE name = $1")
        .bind(name)
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    revoke_user_in(&mut *tx, name, now).await?;
    Ok(true)
}

pub(super) async fn disable(tx: &mut PgConnection, name: &str, now: u64) -> Result<bool, StoreError> {
    let now = to_column(now, "sessions.revoked_at")?;
    let updated = sqlx::query("UPDATE users SET disabled = true WHERE name = $1").bind(name).execute(&mut *tx).await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    revoke_user_in(&mut *tx, name, now).await?;
    Ok(true)
}

pub(super) async fn enable(tx: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    let updated = sqlx::query("UPDATE users SET disabled = false WHERE name = $1").bind(name).execute(&mut *tx).await?;
    Ok(updated.rows_affected() == 1)
}

pub(super) async fn set_access(
    tx: &mut PgConnection,
    name: &str,
    roles: &[String],
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> Result<bool, StoreError> {
    let (roles, attributes) = encode_access(roles, attributes)?;
    let r = sqlx::query("UPDATE users SET roles = $2, attributes = $3 WHERE name = $1")
        .bind(name)
        .bind(roles)
        .bind(attributes)
        .execute(&mut *tx)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn failures(pool: &PgPool, user: &str, address: &str) -> Result<LoginFailures, StoreError> {
    let row = sqlx::query("SELECT failures, last_at FROM login_failures WHERE user_name = $1 AND address = $2")
        .bind(user)
        .bind(address)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => failures_from_row(&row),
        None => Ok(LoginFailures::default()),
    }
}

pub(super) async fn record_failure(
    pool: &PgPool,
    user: &str,
    address: &str,
    now: u64,
) -> Result<LoginFailures, StoreError> {
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
    .fetch_one(pool)
    .await?;
    failures_from_row(&row)
}

pub(super) async fn clear_failures(pool: &PgPool, user: &str, address: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM login_failures WHERE user_name = $1 AND address = $2")
        .bind(user)
        .bind(address)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn remove(tx: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    for statement in [
        // The user row, then the device rows, the order a login with a TOTP code takes them,
        // so that a login or retirement running now waits. NO KEY UPDATE: a login without a
        // code holds a device row and references the user (a key-share lock) meanwhile.
        "SELECT 1 FROM users WHERE name = $1 FOR NO KEY UPDATE",
        "SELECT 1 FROM devices WHERE user_name = $1 FOR UPDATE",
        super::identities::REMOVE_USER[0],
        super::identities::REMOVE_USER[1],
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_name = $1)",
        "DELETE FROM sessions WHERE user_name = $1",
        "DELETE FROM held WHERE device_id IN (SELECT id FROM devices WHERE user_name = $1)",
        "DELETE FROM directives WHERE device_id IN (SELECT id FROM devices WHERE user_name = $1)",
        "DELETE FROM devices WHERE user_name = $1",
        "DELETE FROM idempotency WHERE user_name = $1",
        "DELETE FROM login_failures WHERE user_name = $1",
    ] {
        sqlx::query(statement).bind(name).execute(&mut *tx).await?;
    }
    let removed = sqlx::query("DELETE FROM users WHERE name = $1").bind(name).execute(&mut *tx).await?;
    Ok(removed.rows_affected() == 1)
}

/// Enrolls (a sealed secret; the last step forgotten) or unenrolls (None) a user.
pub(super) async fn set_totp(
    tx: &mut PgConnection,
    name: &str,
    secret_sealed: Option<&[u8]>,
) -> Result<bool, StoreError> {
    let updated = sqlx::query("UPDATE users SET totp_secret_sealed = $2, totp_last_step = NULL WHERE name = $1")
        .bind(name)
        .bind(secret_sealed)
        .execute(&mut *tx)
        .await?;
    Ok(updated.rows_affected() == 1)
}

pub(super) async fn totp(pool: &PgPool, name: &str) -> Result<Option<TotpRecord>, StoreError> {
    let row = sqlx::query("SELECT totp_secret_sealed, totp_last_step FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => TotpRecord::from_columns(row.try_get("totp_secret_sealed")?, row.try_get("totp_last_step")?),
        None => Ok(None),
    }
}

/// Uses up a login's TOTP step inside its transaction: true when the user is still enrolled
/// with the secret the code was checked against and had used no step as late. It locks the
/// user row before the login touches any device row.
pub(super) async fn use_totp_step(conn: &mut PgConnection, user: &str, code: &TotpUse) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE users SET totp_last_step = $3
         WHERE name = $1 AND totp_secret_sealed = $2 AND (totp_last_step IS NULL OR totp_last_step < $3)",
    )
    .bind(user)
    .bind(&code.secret_sealed[..])
    .bind(to_column(code.step, "users.totp_last_step")?)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

fn failures_from_row(row: &sqlx::postgres::PgRow) -> Result<LoginFailures, StoreError> {
    LoginFailures::from_columns(i64::from(row.try_get::<i32, _>("failures")?), row.try_get("last_at")?)
}
