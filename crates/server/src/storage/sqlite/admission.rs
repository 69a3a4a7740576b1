//! Admission on the SQLCipher store: a batch of request nonces appended to the nonce log in one
//! write transaction (their uniqueness decided by the connection's `NonceIndex`), the
//! revocation epoch read inside it, and a session read together with the epoch
//! (`crate::storage::admission`).

use std::collections::HashMap;

use fieldvault_core::protocol::{MAX_SKEW_SECS, TIMESTAMP_WINDOW_SECS};
use rusqlite::{Connection, TransactionBehavior, params};

use super::nonce_index::{self, Digest, NonceIndex};
use super::sessions;
use crate::storage::admission::{ClaimedNonces, NonceClaim, SessionRead};
use crate::storage::{StoreError, from_column, to_column};

/// Schema version 10: the revocation epoch and the triggers that raise it. `UPDATE OF` names
/// the columns a cached session holds, so that recording when directives were sent, say,
/// raises nothing.
pub(super) const SCHEMA_V10: &str = "
    CREATE TABLE revocation_epoch (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        epoch INTEGER NOT NULL
    );
    INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0);
    CREATE TRIGGER sessions_changed_epoch AFTER UPDATE OF revoked_at, key_id, user_name, device_id, secret_sealed
        ON sessions BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER sessions_deleted_epoch AFTER DELETE ON sessions
        BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER directives_added_epoch AFTER INSERT ON directives
        BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER directives_acked_epoch AFTER UPDATE OF acked_at, device_id, token ON directives
        BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER directives_deleted_epoch AFTER DELETE ON directives
        BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
";

fn epoch(c: &Connection) -> Result<u64, StoreError> {
    let epoch: i64 =
        c.prepare_cached("SELECT epoch FROM revocation_epoch WHERE id = 1")?.query_row([], |r| r.get(0))?;
    from_column(epoch, "revocation_epoch.epoch")
}

/// Schema version 11 (this store alone): request nonces in an append-only log, their
/// uniqueness decided by the writer's [`NonceIndex`] (docs/adr/0014-sqlite-nonce-log.md).
/// A new row's sequence number is one past the largest present, and the purge never deletes
/// the row holding the largest, so a number is never reused and every connection can read
/// what others appended since the last number it saw (`AUTOINCREMENT` would do the same at
/// the cost of one more page written per batch).
pub(super) const SCHEMA_V11: &str = "
    ALTER TABLE nonces RENAME TO nonces_v10;
    DROP INDEX nonces_by_expiry;
    CREATE TABLE nonces (
        seq        INTEGER PRIMARY KEY,
        key_id     TEXT NOT NULL,
        nonce      BLOB NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX nonces_by_expiry ON nonces (expires_at);
    INSERT INTO nonces (key_id, nonce, expires_at)
        SELECT key_id, nonce, expires_at FROM nonces_v10 ORDER BY expires_at;
    DROP TABLE nonces_v10;
";

/// The SQLite schema version with the nonce log.
pub(super) const SCHEMA_VERSION_NONCE_LOG: i64 = 11;

/// Schema version 12: the log without its expiry index, so that a batch's commit writes the
/// log's last page alone, not that and the index's (one page encrypted and written per batch
/// instead of two). The purge walks the log from its start instead ([`purge_nonces`]).
pub(super) const SCHEMA_V12: &str = "
    DROP INDEX nonces_by_expiry;
";

/// The SQLite schema version whose nonce log has no expiry index.
pub(super) const SCHEMA_VERSION_UNINDEXED_LOG: i64 = 12;

/// A row at the log's start that expires further ahead than this is moved to its end by the
/// purge rather than left to hold back the rows behind it. A nonce recorded now by a request
/// that was in time expires at most this far ahead: its timestamp at most the window ahead of
/// an instance's clock, that clock at most the skew ahead of the store's, then kept for the
/// window and the skew again.
const MOVE_AHEAD_OF_SECS: u64 = 2 * (TIMESTAMP_WINDOW_SECS + MAX_SKEW_SECS);

pub(super) fn claim_nonces(
    c: &mut Connection,
    index: &mut NonceIndex,
    claims: &[NonceClaim],
) -> Result<ClaimedNonces, StoreError> {
    if claims.is_empty() {
        // Nothing to write: one read, no write transaction.
        return Ok(ClaimedNonces { fresh: Vec::new(), revocation_epoch: epoch(c)? });
    }
    // Not synced on its own (`synchronous = NORMAL` for this transaction): in WAL mode its
    // frames reach the disk with the next commit that is, and every request that changes
    // anything commits (fully synced) after its nonce. A power cut can only lose the nonces
    // of requests that changed nothing.
    c.prepare_cached("PRAGMA synchronous = NORMAL")?.execute([])?;
    let claimed = claim_in(c, index, claims);
    c.prepare_cached("PRAGMA synchronous = FULL")?.execute([])?;
    claimed
}

/// The batch's transaction: the log read up to its end (what other connections appended),
/// every new nonce appended, and the epoch, committed together or not at all. The index
/// learns the batch's nonces only once they are committed.
fn claim_in(c: &mut Connection, index: &mut NonceIndex, claims: &[NonceClaim]) -> Result<ClaimedNonces, StoreError> {
    // Immediate: the write lock is held from the read of the log's end to the commit, so no
    // other connection appends in between.
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    catch_up(&tx, index)?;
    let mut fresh = Vec::with_capacity(claims.len());
    let mut batch: HashMap<Digest, u64> = HashMap::with_capacity(claims.len());
    let mut last = None;
    {
        let mut append = tx.prepare_cached(APPEND)?;
        for claim in claims {
            let d = nonce_index::digest(&claim.key_id, &claim.nonce);
            // A repeat within the batch is a replay of its first occurrence.
            let new = !index.contains(&d) && !batch.contains_key(&d);
            if new {
                let expires_at = to_column(claim.expires_at, "nonces.expires_at")?;
                last = Some(append.insert(params![claim.key_id, &claim.nonce[..], expires_at])?);
                batch.insert(d, claim.expires_at);
            }
            fresh.push(new);
        }
    }
    let revocation_epoch = epoch(&tx)?;
    tx.commit()?;
    for (d, expires_at) in batch {
        index.insert(d, expires_at);
    }
    if let Some(last) = last {
        index.advance(last);
    }
    Ok(ClaimedNonces { fresh, revocation_epoch })
}

/// Appends one nonce to the log (its sequence number is one past the largest present).
const APPEND: &str = "INSERT INTO nonces (key_id, nonce, expires_at) VALUES (?1, ?2, ?3)";

/// One row of the log, as [`LogRow::read`] takes it from `SELECT seq, key_id, nonce,
/// expires_at`.
struct LogRow {
    seq: i64,
    key_id: String,
    nonce: [u8; 16],
    expires_at: u64,
}

impl LogRow {
    fn read(row: &rusqlite::Row<'_>) -> Result<LogRow, StoreError> {
        let nonce: Vec<u8> = row.get(2)?;
        Ok(LogRow {
            seq: row.get(0)?,
            key_id: row.get(1)?,
            nonce: nonce.try_into().map_err(|_| StoreError::corrupt("nonces.nonce", "not 16 bytes"))?,
            expires_at: from_column(row.get(3)?, "nonces.expires_at")?,
        })
    }
}

/// Reads into `index` every nonce appended since it last looked (by other connections: a
/// `fieldvault-server` process beside `serve`, or this store before it restarted).
fn catch_up(tx: &rusqlite::Transaction<'_>, index: &mut NonceIndex) -> Result<(), StoreError> {
    let mut read =
        tx.prepare_cached("SELECT seq, key_id, nonce, expires_at FROM nonces WHERE seq > ?1 ORDER BY seq")?;
    let mut rows = read.query([index.seen()])?;
    while let Some(row) = rows.next()? {
        let row = LogRow::read(row)?;
        index.insert(nonce_index::digest(&row.key_id, &row.nonce), row.expires_at);
        index.advance(row.seq);
    }
    Ok(())
}

/// Deletes expired nonces from the start of the log and forgets every nonce expired at `now`
/// (docs/adr/0014-sqlite-nonce-log.md). The log is in the order nonces were recorded, and
/// their expiries nearly so, so the purge walks it from its start: an expired row goes; a row
/// that expires further ahead than a request in time can ([`MOVE_AHEAD_OF_SECS`]: a request
/// dated far ahead) is appended again at the end and goes from here; the first row that
/// expires within that reach ends the walk, and the expired rows behind it go at a later
/// purge (at most that long later). No unexpired nonce ever leaves the log. The log's last row
/// stays whatever its expiry, so that the next sequence number is past every one handed out.
/// Returns how many expired rows were deleted.
pub(super) fn purge_nonces(c: &mut Connection, index: &mut NonceIndex, now: u64) -> Result<u64, StoreError> {
    // Immediate: nothing is appended between the walk and the deletion.
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    catch_up(&tx, index)?;
    let Some(last) = tx.query_row("SELECT max(seq) FROM nonces", [], |r| r.get::<_, Option<i64>>(0))? else {
        return Ok(0);
    };
    let reach = now.saturating_add(MOVE_AHEAD_OF_SECS);
    let (mut upto, mut purged, mut moved) = (None, 0u64, Vec::new());
    {
        let mut walk = tx.prepare("SELECT seq, key_id, nonce, expires_at FROM nonces WHERE seq < ?1 ORDER BY seq")?;
        let mut rows = walk.query([last])?;
        while let Some(row) = rows.next()? {
            let row = LogRow::read(row)?;
            let seq = row.seq;
            if row.expires_at < now {
                purged += 1;
            } else if row.expires_at > reach {
                moved.push(row);
            } else {
                break;
            }
            upto = Some(seq);
        }
    }
    let mut appended = None;
    if let Some(upto) = upto {
        tx.execute("DELETE FROM nonces WHERE seq <= ?1", [upto])?;
        let mut append = tx.prepare_cached(APPEND)?;
        for row in &moved {
            let expires_at = to_column(row.expires_at, "nonces.expires_at")?;
            appended = Some(append.insert(params![row.key_id, &row.nonce[..], expires_at])?);
        }
    }
    tx.commit()?;
    // Only once committed: a rolled-back append's numbers are handed out again, and the index
    // must still read whatever another connection appends under them.
    if let Some(seq) = appended {
        index.advance(seq);
    }
    index.forget_before(now);
    tracing::debug!(purged, moved = moved.len(), held = index.len(), "request nonces purged");
    Ok(purged)
}

pub(super) fn session_read(c: &mut Connection, key_id: &str) -> Result<SessionRead, StoreError> {
    // One read transaction: the epoch and the session in the same snapshot.
    let tx = c.transaction()?;
    let revocation_epoch = epoch(&tx)?;
    let session = sessions::by_key_id_in(&tx, key_id)?;
    tx.commit()?;
    Ok(SessionRead { session, revocation_epoch })
}
