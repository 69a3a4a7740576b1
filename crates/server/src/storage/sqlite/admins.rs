//! The admin console's rows on the SQLCipher store: administrators, their console sessions,
//! and the users listing read one page at a time.

use rusqlite::{Connection, OptionalExtension, params};

use crate::storage::{AdminRecord, AdminSession, Page, StoreError, UserRecord, decode_access, from_column, to_column};

/// Schema version 8: administrators and console sessions.
pub(super) const SCHEMA_V8: &str = "
    CREATE TABLE admins (
        name               TEXT PRIMARY KEY,
        password_hash      TEXT NOT NULL,
        totp_secret_sealed BLOB,
        totp_confirmed     INTEGER NOT NULL DEFAULT 0,
        totp_last_step     INTEGER,
        created_at         INTEGER NOT NULL
    );
    CREATE TABLE admin_sessions (
        id_hash    BLOB PRIMARY KEY,
        admin_name TEXT NOT NULL REFERENCES admins(name),
        csrf       TEXT NOT NULL,
        full       INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        seen_at    INTEGER NOT NULL,
        stepup_at  INTEGER
    );
    CREATE INDEX admin_sessions_seen ON admin_sessions (seen_at);
";

pub(super) fn users_page(c: &mut Connection, prefix: &str, page: Page) -> Result<Vec<UserRecord>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT name, password_hash, roles, disabled, attributes FROM users
         WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name LIMIT ?2 OFFSET ?3",
    )?;
    let offset = to_column(page.offset, "page offset")?;
    let rows = statement.query_map(params![prefix, page.limit, offset], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get::<_, String>(4)?))
    })?;
    let mut users = Vec::new();
    for row in rows {
        let (name, password_hash, roles, disabled, attributes) = row?;
        let (roles, attributes) = decode_access(&roles, &attributes)?;
        users.push(UserRecord { name, password_hash, roles, disabled, attributes });
    }
    Ok(users)
}

pub(super) fn add(c: &Connection, name: &str, password_hash: &str, now: u64) -> Result<(), StoreError> {
    let inserted = c.execute(
        "INSERT INTO admins (name, password_hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        params![name, password_hash, to_column(now, "admins.created_at")?],
    )?;
    if inserted == 0 { Err(StoreError::AdminExists(name.to_owned())) } else { Ok(()) }
}

pub(super) fn get(c: &mut Connection, name: &str) -> Result<Option<AdminRecord>, StoreError> {
    let row = c
        .query_row(
            "SELECT name, password_hash, totp_secret_sealed, totp_confirmed, totp_last_step FROM admins WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            },
        )
        .optional()?;
    row.map(|(name, password_hash, totp_sealed, totp_confirmed, last)| {
        let totp_last_step = last.map(|s| from_column(s, "admins.totp_last_step")).transpose()?;
        Ok(AdminRecord { name, password_hash, totp_sealed, totp_confirmed, totp_last_step })
    })
    .transpose()
}

pub(super) fn set_totp(c: &mut Connection, name: &str, sealed: &[u8]) -> Result<bool, StoreError> {
    let updated = c.execute(
        "UPDATE admins SET totp_secret_sealed = ?2, totp_last_step = NULL WHERE name = ?1 AND totp_confirmed = 0",
        params![name, sealed],
    )?;
    Ok(updated == 1)
}

pub(super) fn use_totp(c: &mut Connection, name: &str, sealed: &[u8], step: u64) -> Result<bool, StoreError> {
    let step = to_column(step, "admins.totp_last_step")?;
    let updated = c.execute(
        "UPDATE admins SET totp_last_step = ?3, totp_confirmed = 1
         WHERE name = ?1 AND totp_secret_sealed = ?2 AND (totp_last_step IS NULL OR totp_last_step < ?3)",
        params![name, sealed, step],
    )?;
    Ok(updated == 1)
}

pub(super) fn put_session(c: &mut Connection, s: &AdminSession) -> Result<(), StoreError> {
    let stepup = s.stepup_at.map(|t| to_column(t, "admin_sessions.stepup_at")).transpose()?;
    c.execute(
        "INSERT INTO admin_sessions (id_hash, admin_name, csrf, full, created_at, seen_at, stepup_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id_hash) DO UPDATE SET full = excluded.full, seen_at = excluded.seen_at,
             stepup_at = excluded.stepup_at",
        params![
            &s.id_hash[..],
            s.admin,
            s.csrf,
            s.full,
            to_column(s.created_at, "admin_sessions.created_at")?,
            to_column(s.seen_at, "admin_sessions.seen_at")?,
            stepup
        ],
    )?;
    Ok(())
}

pub(super) fn session(c: &mut Connection, id_hash: &[u8; 32]) -> Result<Option<AdminSession>, StoreError> {
    let row = c
        .query_row(
            "SELECT admin_name, csrf, full, created_at, seen_at, stepup_at FROM admin_sessions WHERE id_hash = ?1",
            [&id_hash[..]],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            },
        )
        .optional()?;
    row.map(|(admin, csrf, full, created, seen, stepup)| {
        Ok(AdminSession {
            id_hash: *id_hash,
            admin,
            csrf,
            full,
            created_at: from_column(created, "admin_sessions.created_at")?,
            seen_at: from_column(seen, "admin_sessions.seen_at")?,
            stepup_at: stepup.map(|t| from_column(t, "admin_sessions.stepup_at")).transpose()?,
        })
    })
    .transpose()
}

pub(super) fn delete_session(c: &mut Connection, id_hash: &[u8; 32]) -> Result<(), StoreError> {
    c.execute("DELETE FROM admin_sessions WHERE id_hash = ?1", [&id_hash[..]])?;
    Ok(())
}

pub(super) fn purge_sessions(c: &mut Connection, before: u64) -> Result<u64, StoreError> {
    let n =
        c.execute("DELETE FROM admin_sessions WHERE seen_at < ?1", [to_column(before, "admin_sessions.seen_at")?])?;
    Ok(n as u64)
}
