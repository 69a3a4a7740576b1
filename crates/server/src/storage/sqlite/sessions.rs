//! Sessions on the SQLCipher store: each with its sealed secret and its refresh tokens, and
//! the request nonces seen under each key id. Every call runs on the store's one connection,
//! the changes in a `BEGIN IMMEDIATE` transaction, so a refresh spend is atomic against every
//! other spend and revocation.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::devices::pending_directives;
use crate::storage::{SessionRecord, Spend, SpendOutcome, StoreError, from_column, to_column};

/// Revokes a session inside `tx`: marks it revoked (keeping the first time) and spends its live
/// refresh tokens. Its device, and the device's lease, stay.
pub(super) fn revoke_in(tx: &Transaction<'_>, session_id: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute("UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1", params![session_id, now])?;
    tx.execute(
        "UPDATE refresh_tokens SET spent_at = ?2 WHERE session_id = ?1 AND spent_at IS NULL",
        params![session_id, now],
    )?;
    Ok(())
}

/// Revokes every live session of a user inside `tx` (after a password change or disable);
/// devices and their leases stay.
/// Returns how many were live.
pub(super) fn revoke_user_in(tx: &Transaction<'_>, user: &str, now: i64) -> rusqlite::Result<u64> {
    let ids: Vec<String> = tx
        .prepare("SELECT id FROM sessions WHERE user_name = ?1 AND revoked_at IS NULL")?
        .query_map([user], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        revoke_in(tx, id, now)?;
    }
    Ok(ids.len() as u64)
}

pub(super) fn by_key_id(c: &mut Connection, key_id: &str) -> Result<Option<SessionRecord>, StoreError> {
    let tx = c.transaction()?;
    by_key_id_in(&tx, key_id)
}

/// The session a key id names, with its device's pending directives, read on `c` (inside the
/// caller's transaction, so that both reads see one snapshot).
pub(super) fn by_key_id_in(tx: &Connection, key_id: &str) -> Result<Option<SessionRecord>, StoreError> {
    type Row = (String, String, String, String, Vec<u8>, bool, i64);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT id, key_id, user_name, device_id, secret_sealed, revoked_at IS NOT NULL, created_at
             FROM sessions WHERE key_id = ?1",
        )?
        .query_row([key_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .optional()?;
    let Some((id, key_id, user, device_id, secret_sealed, revoked, created_at)) = row else {
        return Ok(None);
    };
    Ok(Some(SessionRecord {
        directives: pending_directives(tx, &device_id)?,
        id,
        key_id,
        user,
        device_id,
        secret_sealed,
        revoked,
        created_at: from_column(created_at, "sessions.created_at")?,
    }))
}

pub(super) fn revoke(c: &mut Connection, session_id: &str, now: u64) -> Result<(), StoreError> {
    let now = to_column(now, "sessions.revoked_at")?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    revoke_in(&tx, session_id, now)?;
    Ok(tx.commit()?)
}

pub(super) fn spend_refresh(c: &mut Connection, spend: &Spend<'_>) -> Result<SpendOutcome, StoreError> {
    let (session_id, hash, successor_hash) = (spend.session_id, &spend.token_hash[..], &spend.successor_hash[..]);
    let now = to_column(spend.now, "refresh_tokens.spent_at")?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let live: Option<bool> =
        tx.query_row("SELECT revoked_at IS NULL FROM sessions WHERE id = ?1", [session_id], |r| r.get(0)).optional()?;
    if live != Some(true) {
        return Ok(SpendOutcome::Unknown);
    }
    let spent = tx.execute(
        "UPDATE refresh_tokens SET spent_at = ?3, attempt_id = ?4, successor_hash = ?5, successor_sealed = ?6
         WHERE hash = ?1 AND session_id = ?2 AND spent_at IS NULL",
        params![hash, session_id, now, spend.attempt_id, successor_hash, spend.successor_sealed],
    )?;
    if spent == 1 {
        tx.execute(
            "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, ?3)",
            params![successor_hash, session_id, now],
        )?;
        tx.commit()?;
        return Ok(SpendOutcome::Spent);
    }
    type Row = (Option<i64>, Option<String>, Option<Vec<u8>>, Option<Vec<u8>>);
    let row: Option<Row> = tx
        .query_row(
            "SELECT spent_at, attempt_id, successor_hash, successor_sealed FROM refresh_tokens
             WHERE hash = ?1 AND session_id = ?2",
            params![hash, session_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((spent_at, previous_attempt, succ_hash, succ_sealed)) = row else {
        return Ok(SpendOutcome::Unknown);
    };
    if let (Some(spent_at), Some(prev), Some(succ_hash), Some(succ_sealed)) =
        (spent_at, previous_attempt, succ_hash, succ_sealed)
    {
        let successor_unused: bool = tx
            .query_row("SELECT spent_at IS NULL FROM refresh_tokens WHERE hash = ?1", [&succ_hash], |r| r.get(0))
            .optional()?
            .unwrap_or(false);
        let spent_at: u64 = from_column(spent_at, "refresh_tokens.spent_at")?;
        if prev == spend.attempt_id && spend.now.saturating_sub(spent_at) <= spend.retry_window && successor_unused {
            return Ok(SpendOutcome::Retry { successor_sealed: succ_sealed });
        }
    }
    // Recorded first, in the transaction that ends the session.
    super::audit::append_in(&tx, spend.on_reuse)?;
    revoke_in(&tx, session_id, now)?;
    tx.commit()?;
    Ok(SpendOutcome::ReuseRevoked)
}
