//! Users on the SQLCipher store: accounts with their roles and attributes, their TOTP
//! enrolment, and the failed-login counts that throttle guessing.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::sessions::revoke_user_in;
use crate::storage::{
    LoginFailures, StoreError, TotpRecord, TotpUse, UserRecord, decode_access, encode_access, to_column,
};

/// Version 5: multi-factor login. A user's TOTP secret (sealed; NULL: not enrolled) and the
/// last step a login used up (NULL: none since enrolment).
pub(super) const SCHEMA_V5: &str = "
    ALTER TABLE users ADD COLUMN totp_secret_sealed BLOB;
    ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
";

pub(super) fn add(c: &Connection, user: &UserRecord, now: u64) -> Result<(), StoreError> {
    let (roles, attributes) = encode_access(&user.roles, &user.attributes)?;
    let inserted = c.execute(
        "INSERT INTO users (name, password_hash, roles, disabled, created_at, attributes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
        params![user.name, user.password_hash, roles, user.disabled, to_column(now, "users.created_at")?, attributes],
    )?;
    if inserted == 0 { Err(StoreError::UserExists(user.name.clone())) } else { Ok(()) }
}

pub(super) fn get(c: &mut Connection, name: &str) -> Result<Option<UserRecord>, StoreError> {
    let row = c
        .query_row("SELECT name, password_hash, roles, disabled, attributes FROM users WHERE name = ?1", [name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    row.map(|(name, password_hash, roles, disabled, attributes)| {
        let (roles, attributes) = decode_access(&roles, &attributes)?;
        Ok(UserRecord { name, password_hash, roles, disabled, attributes })
    })
    .transpose()
}

pub(super) fn set_password(
    tx: &Transaction<'_>,
    name: &str,
    password_hash: &str,
    now: u64,
) -> Result<bool, StoreError> {
    let now = to_column(now, "sessions.revoked_at")?;
    if tx.execute("UPDATE users SET password_hash = ?2 WHERE name = ?1", params![name, password_hash])? == 0 {
        return Ok(false);
    }
    revoke_user_in(tx, name, now)?;
    Ok(true)
}

pub(super) fn disable(tx: &Transaction<'_>, name: &str, now: u64) -> Result<bool, StoreError> {
    let now = to_column(now, "sessions.revoked_at")?;
    if tx.execute("UPDATE users SET disabled = 1 WHERE name = ?1", [name])? == 0 {
        return Ok(false);
    }
    revoke_user_in(tx, name, now)?;
    Ok(true)
}

pub(super) fn enable(c: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(c.execute("UPDATE users SET disabled = 0 WHERE name = ?1", [name])? == 1)
}

pub(super) fn set_access(
    c: &Connection,
    name: &str,
    roles: &[String],
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> Result<bool, StoreError> {
    let (roles, attributes) = encode_access(roles, attributes)?;
    let updated =
        c.execute("UPDATE users SET roles = ?2, attributes = ?3 WHERE name = ?1", params![name, roles, attributes])?;
    Ok(updated == 1)
}

pub(super) fn remove(tx: &Transaction<'_>, name: &str) -> Result<bool, StoreError> {
    for statement in super::identities::REMOVE_USER.into_iter().chain([
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_name = ?1)",
        "DELETE FROM sessions WHERE user_name = ?1",
        "DELETE FROM held WHERE device_id IN (SELECT id FROM devices WHERE user_name = ?1)",
        "DELETE FROM directives WHERE device_id IN (SELECT id FROM devices WHERE user_name = ?1)",
        "DELETE FROM devices WHERE user_name = ?1",
        "DELETE FROM idempotency WHERE user_name = ?1",
        "DELETE FROM login_failures WHERE user_name = ?1",
    ]) {
        tx.execute(statement, [name])?;
    }
    let removed = tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
    Ok(removed == 1)
}

pub(super) fn failures(c: &mut Connection, user: &str, address: &str) -> Result<LoginFailures, StoreError> {
    let row = c
        .query_row(
            "SELECT failures, last_at FROM login_failures WHERE user_name = ?1 AND address = ?2",
            [user, address],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map_or(Ok(LoginFailures::default()), |(failures, last_at)| LoginFailures::from_columns(failures, last_at))
}

pub(super) fn record_failure(
    c: &mut Connection,
    user: &str,
    address: &str,
    now: u64,
) -> Result<LoginFailures, StoreError> {
    let (failures, last_at) = c.query_row(
        "INSERT INTO login_failures (user_name, address, failures, last_at) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (user_name, address) DO UPDATE SET failures = failures + 1, last_at = excluded.last_at
         RETURNING failures, last_at",
        params![user, address, to_column(now, "login_failures.last_at")?],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    LoginFailures::from_columns(failures, last_at)
}

pub(super) fn clear_failures(c: &mut Connection, user: &str, address: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM login_failures WHERE user_name = ?1 AND address = ?2", [user, address])?;
    Ok(())
}

/// Enrolls (a sealed secret; the last step forgotten) or unenrolls (None) a user.
pub(super) fn set_totp(c: &Connection, name: &str, secret_sealed: Option<&[u8]>) -> Result<bool, StoreError> {
    let updated = c.execute(
        "UPDATE users SET totp_secret_sealed = ?2, totp_last_step = NULL WHERE name = ?1",
        params![name, secret_sealed],
    )?;
    Ok(updated == 1)
}

pub(super) fn totp(c: &mut Connection, name: &str) -> Result<Option<TotpRecord>, StoreError> {
    let row = c
        .query_row("SELECT totp_secret_sealed, totp_last_step FROM users WHERE name = ?1", [name], |r| {
            Ok((r.get::<_, Option<Vec<u8>>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    match row {
        Some((sealed, last)) => TotpRecord::from_columns(sealed, last),
        None => Ok(None),
    }
}

/// Uses up a login's TOTP step inside its transaction: true when the user is still enrolled
/// with the secret the code was checked against and had used no step as late.
pub(super) fn use_totp_step(tx: &Transaction<'_>, user: &str, code: &TotpUse) -> Result<bool, StoreError> {
    let step = to_column(code.step, "users.totp_last_step")?;
    let updated = tx.execute(
        "UPDATE users SET totp_last_step = ?3
         WHERE name = ?1 AND totp_secret_sealed = ?2 AND (totp_last_step IS NULL OR totp_last_step < ?3)",
        params![user, code.secret_sealed, step],
    )?;
    Ok(updated == 1)
}
