//! Sessions on PostgreSQL: each with its sealed secret and its refresh tokens, and the
//! request nonces seen under each key id. A refresh spend is one transaction that first locks
//! the session row (`SELECT .. FOR UPDATE`), so two spends of one session, on any instances,
//! run one after the other; a nonce insert is one `INSERT .. ON CONFLICT DO NOTHING`.

use sqlx::{PgConnection, PgPool, Row};

use crate::storage::{SessionRecord, Spend, SpendOutcome, StoreError, from_column, to_column};

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
/// Returns how many were live.
pub(super) async fn revoke_user_in(conn: &mut PgConnection, user: &str, now: i64) -> Result<u64, StoreError> {
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

/// Revokes every live session of one user or device and spends their refresh tokens;
/// returns how many were live.
pub(super) async fn revoke_sessions_where(
    conn: &mut PgConnection,
    of: SessionsOf,
    value: &str,
    now: i64,
) -> Result<u64, StoreError> {
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
    // Sessions, then their refresh tokens: the lock order of every path.
    let live = sqlx::query(sessions).bind(value).bind(now).execute(&mut *conn).await?.rows_affected();
    sqlx::query(refresh).bind(value).bind(now).execute(&mut *conn).await?;
    Ok(live)
}

pub(super) async fn by_key_id(pool: &PgPool, key_id: &str) -> Result<Option<SessionRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT id, key_id, user_name, device_id, secret_sealed, revoked_at IS NOT NULL AS revoked, created_at,
             COALESCE((SELECT array_agg(d.token ORDER BY d.issued_at, d.jti) FROM directives d
                       WHERE d.device_id = sessions.device_id AND d.acked_at IS NULL), ARRAY[]::text[])
                 AS directives
         FROM sessions WHERE key_id = $1",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(session_record(row.try_get("id")?, &row)?))
}

/// A session from a row with its columns (`revoked` a boolean, `directives` an array).
pub(super) fn session_record(id: String, row: &sqlx::postgres::PgRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id,
        key_id: row.try_get("key_id")?,
        user: row.try_get("user_name")?,
        device_id: row.try_get("device_id")?,
        secret_sealed: row.try_get("secret_sealed")?,
        revoked: row.try_get("revoked")?,
        created_at: from_column(row.try_get("created_at")?, "sessions.created_at")?,
        directives: row.try_get("directives")?,
    })
}

pub(super) async fn revoke(pool: &PgPool, session_id: &str, now: u64) -> Result<(), StoreError> {
    let now = to_column(now, "sessions.revoked_at")?;
    let mut tx = pool.begin().await?;
    revoke_in(&mut tx, session_id, now).await?;
    Ok(tx.commit().await?)
}

pub(super) async fn spend_refresh(pool: &PgPool, spend: Spend<'_>) -> Result<SpendOutcome, StoreError> {
    let now = to_column(spend.now, "refresh_tokens.spent_at")?;
    // A reuse is recorded in the audit log, whose chain head every audited transaction locks
    // first. This one has locked the session row already, so it does not wait for the head
    // (another audited transaction may hold the head and wait for this session's row): it
    // gives up, and a second transaction takes the head first, then the session, and decides
    // again. Only a reuse, which ends the session, pays for that.
    let mut tx = pool.begin().await?;
    match spend_in(&mut tx, &spend, now, false).await? {
        Some(outcome) => {
            tx.commit().await?;
            Ok(outcome)
        }
        None => {
            tx.rollback().await?;
            let mut tx = pool.begin().await?;
            super::audit::lock_head(&mut tx).await?;
            let outcome = spend_in(&mut tx, &spend, now, true).await?.expect("a reuse is decided with the head held");
            tx.commit().await?;
            Ok(outcome)
        }
    }
}

/// One spend attempt in `tx`. A reuse is decided (the record appended, the session revoked)
/// only when `reuse_allowed` (the caller holds the audit head); otherwise it is None and the
/// caller rolls back and tries again that way. Whatever else is decided, the caller commits
/// (an outcome that changed nothing commits nothing).
async fn spend_in(
    tx: &mut PgConnection,
    spend: &Spend<'_>,
    now: i64,
    reuse_allowed: bool,
) -> Result<Option<SpendOutcome>, StoreError> {
    if !lock_live_session(tx, spend.session_id).await? {
        return Ok(Some(SpendOutcome::Unknown));
    }
    if spend_live_token(tx, spend, now).await? {
        return Ok(Some(SpendOutcome::Spent));
    }
    let Some(token) = stored_token(tx, spend).await? else {
        return Ok(Some(SpendOutcome::Unknown));
    };
    if let Some(successor_sealed) = retried_successor(tx, spend, token).await? {
        return Ok(Some(SpendOutcome::Retry { successor_sealed }));
    }
    if !reuse_allowed {
        return Ok(None);
    }
    // Anything else is a spent token presented again: assume it was stolen, end the session.
    super::audit::append_in(tx, spend.on_reuse).await?;
    revoke_in(tx, spend.session_id, now).await?;
    Ok(Some(SpendOutcome::ReuseRevoked))
}

/// Locks the session's row; false if there is no such session or it is revoked. The row
/// lock serialises every spend (and revocation) of this session across instances; under
/// READ COMMITTED each later statement sees what the previous holder committed.
async fn lock_live_session(conn: &mut PgConnection, session_id: &str) -> Result<bool, StoreError> {
    let session = sqlx::query("SELECT revoked_at FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(session_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match session {
        None => false,
        Some(row) => row.try_get::<Option<i64>, _>("revoked_at")?.is_none(),
    })
}

/// Spends the presented token if it is this session's and live, and stores its successor;
/// false if it was not.
async fn spend_live_token(conn: &mut PgConnection, spend: &Spend<'_>, now: i64) -> Result<bool, StoreError> {
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
    .execute(&mut *conn)
    .await?;
    if spent.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)")
        .bind(&spend.successor_hash[..])
        .bind(spend.session_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// A presented token that is not live, as stored: when it was spent, by which attempt, and
/// the successor it was spent for.
struct SpentToken {
    spent_at: Option<i64>,
    attempt_id: Option<String>,
    successor_hash: Option<Vec<u8>>,
    successor_sealed: Option<Vec<u8>>,
}

/// The presented token, if it is this session's.
async fn stored_token(conn: &mut PgConnection, spend: &Spend<'_>) -> Result<Option<SpentToken>, StoreError> {
    let token = sqlx::query(
        "SELECT spent_at, attempt_id, successor_hash, successor_sealed
         FROM refresh_tokens WHERE hash = $1 AND session_id = $2",
    )
    .bind(&spend.token_hash[..])
    .bind(spend.session_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(token) = token else { return Ok(None) };
    Ok(Some(SpentToken {
        spent_at: token.try_get("spent_at")?,
        attempt_id: token.try_get("attempt_id")?,
        successor_hash: token.try_get("successor_hash")?,
        successor_sealed: token.try_get("successor_sealed")?,
    }))
}

/// The successor to answer again when this spend is a retry: the same attempt, within the
/// window, and the successor never used. Then the client lost our answer.
async fn retried_successor(
    conn: &mut PgConnection,
    spend: &Spend<'_>,
    token: SpentToken,
) -> Result<Option<Vec<u8>>, StoreError> {
    let within_window = match token.spent_at {
        Some(spent_at) => {
            spend.now.saturating_sub(from_column(spent_at, "refresh_tokens.spent_at")?) <= spend.retry_window
        }
        None => false,
    };
    if token.attempt_id.as_deref() != Some(spend.attempt_id) || !within_window {
        return Ok(None);
    }
    let (Some(successor_hash), Some(successor_sealed)) = (token.successor_hash, token.successor_sealed) else {
        return Ok(None);
    };
    let successor_live =
        sqlx::query("SELECT 1 FROM refresh_tokens WHERE hash = $1 AND session_id = $2 AND spent_at IS NULL")
            .bind(&successor_hash[..])
            .bind(spend.session_id)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
    Ok(successor_live.then_some(successor_sealed))
}

pub(super) async fn insert_nonce(
    pool: &PgPool,
    key_id: &str,
    nonce: &[u8; 16],
    expires_at: u64,
) -> Result<bool, StoreError> {
    // One autocommitted statement: of two instances inserting the same nonce, exactly one
    // gets the row.
    let inserted =
        sqlx::query("INSERT INTO nonces (key_id, nonce, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(key_id)
            .bind(&nonce[..])
            .bind(to_column(expires_at, "nonces.expires_at")?)
            .execute(pool)
            .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Deletes the nonces expired by both clocks: the caller's `now` and the database's. Every
/// instance judges timestamps by its own clock, held within `MAX_SKEW_SECS` of the
/// database's, and a nonce is kept for that skew: so the purge follows the database's clock,
/// and an instance running fast never deletes a row another instance still needs.
pub(super) async fn purge_nonces(pool: &PgPool, now: u64) -> Result<u64, StoreError> {
    let purged =
        sqlx::query("DELETE FROM nonces WHERE expires_at < LEAST($1, floor(extract(epoch FROM now()))::bigint)")
            .bind(to_column(now, "nonces.expires_at")?)
            .execute(pool)
            .await?;
    Ok(purged.rows_affected())
}

/// The database's clock, Unix seconds.
pub(super) async fn clock(pool: &PgPool) -> Result<u64, StoreError> {
    let now: i64 = sqlx::query_scalar("SELECT floor(extract(epoch FROM now()))::bigint").fetch_one(pool).await?;
    from_column(now, "now()")
}
