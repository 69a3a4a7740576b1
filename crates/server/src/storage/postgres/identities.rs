//! OpenID Connect identities on PostgreSQL: which user an (issuer, `sub`) signs in as, and
//! which sessions were signed in through a provider (with the provider's refresh token,
//! sealed, for `--oidc-recheck`).

use sqlx::{PgConnection, PgPool, Row};

use super::users;
use crate::storage::{LinkOutcome, OidcSession, StoreError, UserRecord, to_column};

/// Schema version 6: identities and provider sessions.
pub(super) const SCHEMA_V6: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS oidc_identities (
        issuer     TEXT NOT NULL,
        subject    TEXT NOT NULL,
        user_name  TEXT NOT NULL REFERENCES users(name),
        created_at BIGINT NOT NULL,
        PRIMARY KEY (issuer, subject)
    )",
    "CREATE INDEX IF NOT EXISTS oidc_identities_user ON oidc_identities (user_name)",
    "CREATE TABLE IF NOT EXISTS oidc_sessions (
        session_id     TEXT PRIMARY KEY REFERENCES sessions(id),
        issuer         TEXT NOT NULL,
        refresh_sealed BYTEA
    )",
];

/// What `users::remove` deletes first, for one user (`$1`).
pub(super) const REMOVE_USER: [&str; 2] = [
    "DELETE FROM oidc_sessions WHERE session_id IN (SELECT id FROM sessions WHERE user_name = $1)",
    "DELETE FROM oidc_identities WHERE user_name = $1",
];

pub(super) async fn user(pool: &PgPool, issuer: &str, subject: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT user_name FROM oidc_identities WHERE issuer = $1 AND subject = $2")
        .bind(issuer)
        .bind(subject)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.try_get("user_name")).transpose()?)
}

pub(super) async fn link(
    tx: &mut PgConnection,
    issuer: &str,
    subject: &str,
    user: &str,
    now: u64,
) -> Result<LinkOutcome, StoreError> {
    // The user's row locked: a `user remove` running now waits, or has already run.
    let exists =
        sqlx::query("SELECT 1 FROM users WHERE name = $1 FOR UPDATE").bind(user).fetch_optional(&mut *tx).await?;
    if exists.is_none() {
        return Ok(LinkOutcome::NoSuchUser);
    }
    let inserted = sqlx::query(
        "INSERT INTO oidc_identities (issuer, subject, user_name, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (issuer, subject) DO NOTHING",
    )
    .bind(issuer)
    .bind(subject)
    .bind(user)
    .bind(to_column(now, "oidc_identities.created_at")?)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        let linked: String = sqlx::query("SELECT user_name FROM oidc_identities WHERE issuer = $1 AND subject = $2")
            .bind(issuer)
            .bind(subject)
            .fetch_one(&mut *tx)
            .await?
            .try_get("user_name")?;
        if linked != user {
            return Ok(LinkOutcome::LinkedToOther(linked));
        }
    }
    Ok(LinkOutcome::Linked)
}

pub(super) async fn unlink(tx: &mut PgConnection, issuer: &str, subject: &str) -> Result<bool, StoreError> {
    let deleted = sqlx::query("DELETE FROM oidc_identities WHERE issuer = $1 AND subject = $2")
        .bind(issuer)
        .bind(subject)
        .execute(&mut *tx)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

pub(super) async fn add_user(
    tx: &mut PgConnection,
    user: &UserRecord,
    issuer: &str,
    subject: &str,
    now: u64,
) -> Result<(), StoreError> {
    users::add(&mut *tx, user, now).await?;
    sqlx::query("INSERT INTO oidc_identities (issuer, subject, user_name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(issuer)
        .bind(subject)
        .bind(&user.name)
        .bind(to_column(now, "oidc_identities.created_at")?)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub(super) async fn set_session(
    pool: &PgPool,
    session_id: &str,
    issuer: &str,
    refresh_sealed: Option<&[u8]>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO oidc_sessions (session_id, issuer, refresh_sealed) VALUES ($1, $2, $3)
         ON CONFLICT (session_id) DO UPDATE SET issuer = excluded.issuer, refresh_sealed = excluded.refresh_sealed",
    )
    .bind(session_id)
    .bind(issuer)
    .bind(refresh_sealed)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn session(pool: &PgPool, session_id: &str) -> Result<Option<OidcSession>, StoreError> {
    let row = sqlx::query("SELECT issuer, refresh_sealed FROM oidc_sessions WHERE session_id = $1")
        .bind(session_id)
        .fetch_optional(pool)
        .await?;
    row.map(|r| Ok(OidcSession { issuer: r.try_get("issuer")?, refresh_sealed: r.try_get("refresh_sealed")? }))
        .transpose()
}
