//! The outbox: local changes waiting for the server, in the account's SQLCipher database.
//!
//! Every put or delete of a document outside the memory-only collections writes its outbox
//! row in the same transaction as the change, so a change and its record of being owed to
//! the server are never apart. A row names the document and the kind of change, never the
//! body: the body is read when the op goes in flight, so later edits of a document fold into
//! its one queued op. Per document there is at most one queued row and at most one row in
//! flight; a row in flight is frozen (body, base version, idempotency key) so that every
//! retry sends the same op and the server's idempotency record answers it.
//!
//! Nothing is signed here: requests are signed when they are sent.

use rusqlite::{Connection, OptionalExtension, params};

use crate::Error;

/// One pending change, as `fieldvault outbox` lists it (never the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// `put` or `delete`.
    pub op: String,
    /// When the change was first queued, Unix milliseconds (device clock).
    pub queued_at_ms: i64,
    /// How many times it has been sent.
    pub attempts: u64,
    /// Whether it is in flight (sent at least once, frozen until answered).
    pub in_flight: bool,
    /// Why it is held back from pushing (`idempotency_mismatch`), if it is.
    pub held: Option<String>,
}

/// The kind of a local change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Put,
    Delete,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Put => "put",
            Change::Delete => "delete",
        }
    }
}

/// A fresh idempotency key: a UUIDv7 from the device clock plus the learned offset.
pub(crate) fn new_key(now_ms: i64, offset_ms: Option<i64>) -> String {
    let at = now_ms.saturating_add(offset_ms.unwrap_or(0)).max(0) as u64;
    fieldvault_core::protocol::sync::uuid_v7(at, crate::random::<10>())
}

/// Keeps the server's copy of a document before its first local change (inside the
/// caller's transaction, before the change): a change the server refuses for good is rolled
/// back to it. While nothing is pending, the local copy is the server's, so nothing is kept.
pub(crate) fn keep_base(tx: &Connection, collection: &str, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE sync_docs SET base_body = (SELECT body FROM main.documents WHERE collection = ?1 AND id = ?2)
         WHERE collection = ?1 AND id = ?2 AND base_body IS NULL",
    )?
    .execute(params![collection, id])
    .map(|_| ())
}

/// Records a local change in the outbox, inside the caller's transaction.
///
/// A put folds into the document's queued op. A delete of a document the server has never
/// acknowledged, with nothing in flight, cancels its queued op: there is nothing to tell.
pub(crate) fn record(
    tx: &Connection,
    collection: &str,
    id: &str,
    change: Change,
    now_ms: i64,
    offset_ms: Option<i64>,
) -> rusqlite::Result<()> {
    if change == Change::Delete {
        let known: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sync_docs WHERE collection = ?1 AND id = ?2)
                 OR EXISTS (SELECT 1 FROM outbox WHERE collection = ?1 AND id = ?2 AND inflight = 1)",
            params![collection, id],
            |r| r.get(0),
        )?;
        if !known {
            tx.execute(
                "DELETE FROM outbox WHERE collection = ?1 AND id = ?2 AND inflight = 0",
                params![collection, id],
            )?;
            return Ok(());
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO outbox (collection, id, op, idempotency_key, queued_at_ms, stamped)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (collection, id, inflight) DO UPDATE SET op = excluded.op",
    )?;
    stmt.execute(params![collection, id, change.as_str(), new_key(now_ms, offset_ms), now_ms, offset_ms.is_some()])?;
    Ok(())
}

/// Every pending change, oldest first.
pub(crate) fn entries(conn: &Connection) -> rusqlite::Result<Vec<OutboxEntry>> {
    let mut stmt =
        conn.prepare("SELECT collection, id, op, queued_at_ms, attempts, inflight, held FROM outbox ORDER BY seq")?;
    let rows = stmt.query_map([], |r| {
        Ok(OutboxEntry {
            collection: r.get(0)?,
            id: r.get(1)?,
            op: r.get(2)?,
            queued_at_ms: r.get(3)?,
            attempts: r.get::<_, i64>(4)? as u64,
            in_flight: r.get(5)?,
            held: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Whether a document has a change pending (queued or in flight).
pub(crate) fn pending(conn: &Connection, collection: &str, id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM outbox WHERE collection = ?1 AND id = ?2 LIMIT 1")?
        .query_row(params![collection, id], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// Gives every queued op that has never been sent a new key dated by the corrected clock,
/// once the offset is known: a device whose clock was far off must not queue ops the server
/// would date outside its idempotency window (`expired`).
pub(crate) fn restamp(tx: &Connection, now_ms: i64, offset_ms: i64) -> rusqlite::Result<usize> {
    let seqs: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare("SELECT seq, queued_at_ms FROM outbox WHERE inflight = 0 AND stamped = 0")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
    };
    for (seq, queued_at) in &seqs {
        // The op is dated when it was queued, in the server's time; never in the future.
        let at = (*queued_at).min(now_ms);
        tx.prepare_cached("UPDATE outbox SET idempotency_key = ?1, stamped = 1 WHERE seq = ?2")?
            .execute(params![new_key(at, Some(offset_ms)), seq])?;
    }
    Ok(seqs.len())
}

pub(crate) fn db_err(path: &std::path::Path) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |source| Error::Database { path: path.to_path_buf(), source }
}
