//! The audit log on the SQLCipher store: the `audit` table (append-only: an `UPDATE` trigger
//! refuses changes) and its chain head, the one-row `audit_head`. Every audited action runs
//! in [`audited`]: one immediate transaction whose first write appends the record, committed
//! only when the action applied. The store's one connection serialises appends.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use fieldvault_core::audit::{AUDIT_HASH_LEN, AuditEvent, AuditRecord};

use crate::storage::{AuditCut, StoreError, from_column, retention_cut_event, to_column};

/// Version 7: the audit log and its chain head (seq 0 and the genesis hash: empty).
pub(super) const SCHEMA_V7: &str = "
    CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        target    TEXT NOT NULL,
        detail    TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash      BLOB NOT NULL
    );
    CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash BLOB NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
";

/// Runs `action` in one immediate transaction that first appends `event`'s record; commits
/// only when `applied` says the action did something (else nothing is written, the record
/// neither).
pub(super) fn audited<T>(
    c: &mut Connection,
    event: &AuditEvent,
    action: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    applied: impl FnOnce(&T) -> bool,
) -> Result<T, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    append_in(&tx, event)?;
    let outcome = action(&tx)?;
    if applied(&outcome) {
        tx.commit()?;
    }
    Ok(outcome)
}

/// The chain head: (last seq, its hash); (0, genesis) when nothing was ever appended.
fn head(c: &Connection) -> Result<(u64, [u8; AUDIT_HASH_LEN]), StoreError> {
    let (seq, hash): (i64, Vec<u8>) =
        c.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((from_column(seq, "audit_head.seq")?, hash_column(hash, "audit_head.hash")?))
}

pub(super) fn stored_head(c: &mut Connection) -> Result<Option<(u64, [u8; AUDIT_HASH_LEN])>, StoreError> {
    let (seq, hash) = head(c)?;
    Ok((seq > 0).then_some((seq, hash)))
}

fn hash_column(bytes: Vec<u8>, what: &'static str) -> Result<[u8; AUDIT_HASH_LEN], StoreError> {
    bytes.try_into().map_err(|_| StoreError::corrupt(what, "not 32 bytes"))
}

/// Appends `event` after the head, inside `tx`.
pub(super) fn append_in(tx: &Connection, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
    let (seq, prev) = head(tx)?;
    let record = event.clone().chain(seq + 1, prev).map_err(|e| StoreError::Backend(e.to_string()))?;
    insert(tx, &record)?;
    Ok(record)
}

fn insert(tx: &Connection, r: &AuditRecord) -> Result<(), StoreError> {
    let seq = to_column(r.seq, "audit.seq")?;
    let detail = serde_json::to_string(&r.detail).map_err(|e| StoreError::Backend(e.to_string()))?;
    tx.execute(
        "INSERT INTO audit (seq, at, actor, action, target, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, to_column(r.at, "audit.at")?, r.actor, r.action, r.target, detail, &r.prev_hash[..], &r.hash[..]],
    )?;
    tx.execute("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1", params![seq, &r.hash[..]])?;
    Ok(())
}

/// Appends one record on its own (an event that changes nothing else).
pub(super) fn append(c: &mut Connection, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let record = append_in(&tx, event)?;
    tx.commit()?;
    Ok(record)
}

pub(super) fn page(c: &mut Connection, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
    let mut statement = c.prepare(
        "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = statement.query_map(params![to_column(after, "audit.seq")?, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Vec<u8>>(6)?,
            r.get::<_, Vec<u8>>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at, actor, action, target, detail, prev_hash, hash) = row?;
        out.push(crate::storage::audit_record(seq, at, actor, action, target, &detail, prev_hash, hash)?);
    }
    Ok(out)
}

/// The retention cut (see [`crate::storage::Store::audit_prune`]).
pub(super) fn prune(c: &mut Connection, before: u64, cut: &AuditEvent) -> Result<Option<AuditCut>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let before = to_column(before, "audit.at")?;
    let (head_seq, head_hash) = head(&tx)?;
    let first_kept: Option<(i64, Vec<u8>)> = tx
        .query_row("SELECT seq, prev_hash FROM audit WHERE at >= ?1 ORDER BY seq LIMIT 1", [before], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let (first_seq, first_prev) = match first_kept {
        Some((seq, prev)) => (from_column(seq, "audit.seq")?, hash_column(prev, "audit.prev_hash")?),
        // Everything is older: the cut record itself is the first kept.
        None => (head_seq + 1, head_hash),
    };
    let deleted = tx.execute("DELETE FROM audit WHERE seq < ?1", [to_column(first_seq, "audit.seq")?])? as u64;
    if deleted == 0 {
        return Ok(None);
    }
    let record = append_in(&tx, &retention_cut_event(cut, first_seq, &first_prev, deleted))?;
    tx.commit()?;
    Ok(Some(AuditCut { deleted, first_kept_seq: first_seq, record }))
}
