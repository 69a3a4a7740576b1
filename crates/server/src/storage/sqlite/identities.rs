//! OpenID Connect identities on the SQLCipher store: which user an (issuer, `sub`) signs in
//! as, and which sessions were signed in through a provider (with the provider's refresh
//! token, sealed, for `--oidc-recheck`).

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::users;
use crate::storage::{LinkOutcome, OidcSession, StoreError, UserRecord, to_column};

/// Schema version 6: identities and provider sessions.
pub(super) const SCHEMA_V6: &str = "
    CREATE TABLE oidc_identities (
        issuer     TEXT NOT NULL,
        subject    TEXT NOT NULL,
        user_name  TEXT NOT NULL REFERENCES users(name),
        created_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, subject)
    );
    CREATE INDEX oidc_identities_user ON oidc_identities (user_name);
    CREATE TABLE oidc_sessions (
        session_id     TEXT PRIMARY KEY REFERENCES sessions(id),
        issuer         TEXT NOT NULL,
        refresh_sealed BLOB
    );
";

/// What `users::remove` deletes first, for one user (`?1`).
pub(super) const REMOVE_USER: [&str; 2] = [
    "DELETE FROM oidc_sessions WHERE session_id IN (SELECT id FROM sessions WHERE user_name = ?1)",
    "DELETE FROM oidc_identities WHERE user_name = ?1",
];

pub(super) fn user(c: &mut Connection, issuer: &str, subject: &str) -> Result<Option<String>, StoreError> {
    Ok(c.query_row(
        "SELECT user_name FROM oidc_identities WHERE issuer = ?1 AND subject = ?2",
        [issuer, subject],
        |r| r.get(0),
    )
    .optional()?)
}

pub(super) fn link(
    tx: &Transaction<'_>,
    issuer: &str,
    subject: &str,
    user: &str,
    now: u64,
) -> Result<LinkOutcome, StoreError> {
    let exists: Option<i64> = tx.query_row("SELECT 1 FROM users WHERE name = ?1", [user], |r| r.get(0)).optional()?;
    if exists.is_none() {
        return Ok(LinkOutcome::NoSuchUser);
    }
    let linked: Option<String> = tx
        .query_row("SELECT user_name FROM oidc_identities WHERE issuer = ?1 AND subject = ?2", [issuer, subject], |r| {
            r.get(0)
        })
        .optional()?;
    match linked {
        Some(other) if other != user => return Ok(LinkOutcome::LinkedToOther(other)),
        Some(_) => {}
        None => {
            tx.execute(
                "INSERT INTO oidc_identities (issuer, subject, user_name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![issuer, subject, user, to_column(now, "oidc_identities.created_at")?],
            )?;
        }
    }
    Ok(LinkOutcome::Linked)
}

pub(super) fn unlink(c: &Connection, issuer: &str, subject: &str) -> Result<bool, StoreError> {
    Ok(c.execute("DELETE FROM oidc_identities WHERE issuer = ?1 AND subject = ?2", [issuer, subject])? == 1)
}

pub(super) fn add_user(
    tx: &Transaction<'_>,
    user: &UserRecord,
    issuer: &str,
    subject: &str,
    now: u64,
) -> Result<(), StoreError> {
    users::add(tx, user, now)?;
    tx.execute(
        "INSERT INTO oidc_identities (issuer, subject, user_name, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![issuer, subject, user.name, to_column(now, "oidc_identities.created_at")?],
    )?;
    Ok(())
}

pub(super) fn set_session(
    c: &mut Connection,
    session_id: &str,
    issuer: &str,
    refresh_sealed: Option<&[u8]>,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO oidc_sessions (session_id, issuer, refresh_sealed) VALUES (?1, ?2, ?3)
         ON CONFLICT (session_id) DO UPDATE SET issuer = excluded.issuer, refresh_sealed = excluded.refresh_sealed",
        params![session_id, issuer, refresh_sealed],
    )?;
    Ok(())
}

pub(super) fn session(c: &mut Connection, session_id: &str) -> Result<Option<OidcSession>, StoreError> {
    Ok(c.query_row("SELECT issuer, refresh_sealed FROM oidc_sessions WHERE session_id = ?1", [session_id], |r| {
        Ok(OidcSession { issuer: r.get(0)?, refresh_sealed: r.get(1)? })
    })
    .optional()?)
}
