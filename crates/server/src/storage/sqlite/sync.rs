//! Push and pull on the SQLCipher store. Each runs in one `BEGIN IMMEDIATE` transaction on
//! the store's one connection, so ops, idempotency records, held ids and the change sequence
//! move together or not at all, and sequence numbers are handed out in commit order.

use std::collections::{HashMap, HashSet};

use fieldvault_core::protocol::sync::{
    FirstResult, IdempotencyRecord, OpResult, OpStatus, PullPlan, PullRow, StoredDoc, plan_pull, plan_push,
};
use fieldvault_core::rules::RuleUser;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::storage::{PullBatch, PullOutcome, PushBatch, PushOutcome, StoreError, from_column, stored_doc, to_column};

/// Raises the device's sync counter to `seq` and notes the contact; false if `seq` is
/// below the stored one (a rolled-back vault) or the device is unknown.
pub(super) fn bump_device_seq(tx: &Transaction<'_>, device: &str, seq: u64, now: u64) -> Result<bool, StoreError> {
    let n = tx
        .prepare_cached("UPDATE devices SET sync_seq = ?2, last_seen_at = ?3 WHERE id = ?1 AND sync_seq <= ?2")?
        .execute(params![device, to_column(seq, "devices.sync_seq")?, to_column(now, "devices.last_seen_at")?])?;
    Ok(n == 1)
}

/// The user as rules see them; None if unknown.
pub(super) fn rule_user(tx: &Transaction<'_>, name: &str) -> Result<Option<RuleUser>, StoreError> {
    let row: Option<(String, String)> = tx
        .prepare_cached("SELECT roles, attributes FROM users WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(roles, attributes)| crate::storage::rule_user(name, &roles, &attributes)).transpose()
}

pub(super) fn load_doc(tx: &Transaction<'_>, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
    let row: Option<(String, i64, bool, String)> = tx
        .prepare_cached("SELECT owner, version, deleted, body FROM documents WHERE collection = ?1 AND id = ?2")?
        .query_row([collection, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    row.map(|(owner, version, deleted, body)| stored_doc(owner, version, deleted, &body)).transpose()
}

pub(super) fn document(c: &mut Connection, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
    load_doc(&c.transaction()?, collection, id)
}

pub(super) fn push(c: &mut Connection, b: &PushBatch) -> Result<PushOutcome, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !bump_device_seq(&tx, &b.device_id, b.device_seq, b.now)? {
        return Ok(PushOutcome::RollbackDetected);
    }
    let Some(user) = rule_user(&tx, &b.user)? else {
        return Ok(PushOutcome::Results(b.ops.iter().map(|_| OpResult::bare(OpStatus::Forbidden)).collect()));
    };
    // Read what the ops name, decide everything in memory, then write.
    let mut records = HashMap::new();
    let mut documents = HashMap::new();
    for checked in &b.ops {
        let op = &checked.op;
        if !records.contains_key(&op.idempotency_key) {
            let row: Option<(Vec<u8>, String, Option<i64>)> = tx
                .prepare_cached(
                    "SELECT fingerprint, status, version FROM idempotency WHERE user_name = ?1 AND key = ?2",
                )?
                .query_row([&b.user, &op.idempotency_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((fingerprint, status, version)) = row {
                let record = IdempotencyRecord {
                    fingerprint: fingerprint
                        .try_into()
                        .map_err(|_| StoreError::corrupt("idempotency.fingerprint", "not 32 bytes"))?,
                    first: FirstResult {
                        status: OpStatus::from_name(&status)
                            .ok_or_else(|| StoreError::corrupt("idempotency.status", "not an op status"))?,
                        version: version.map(|v| from_column(v, "idempotency.version")).transpose()?,
                    },
                };
                records.insert(op.idempotency_key.clone(), record);
            }
        }
        let at = (op.collection.clone(), op.id.clone());
        if !documents.contains_key(&at)
            && let Some(doc) = load_doc(&tx, &op.collection, &op.id)?
        {
            documents.insert(at, doc);
        }
    }
    let next_seq: i64 =
        tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM documents")?.query_row([], |r| r.get(0))?;
    let plan = plan_push(
        &b.rules,
        &user,
        &b.ops,
        &documents,
        &records,
        b.expired_before,
        from_column(next_seq, "documents.seq")?,
    );
    let now = to_column(b.now, "documents.updated_at")?;
    for d in &plan.documents {
        let body = d.body.to_string();
        tx.prepare_cached(
            "INSERT INTO documents (collection, id, owner, version, deleted, body, seq, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version,
                 deleted = excluded.deleted, body = excluded.body, seq = excluded.seq,
                 updated_at = excluded.updated_at",
        )?
        .execute(params![
            d.collection,
            d.id,
            d.owner,
            to_column(d.version, "documents.version")?,
            d.deleted,
            body,
            to_column(d.seq, "documents.seq")?,
            now
        ])?;
    }
    for (key, r) in &plan.records {
        tx.prepare_cached(
            "INSERT INTO idempotency (user_name, key, fingerprint, status, version, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            b.user,
            key,
            &r.fingerprint[..],
            r.first.status.as_str(),
            r.first.version.map(|v| to_column(v, "idempotency.version")).transpose()?,
            now
        ])?;
    }
    for (collection, id) in &plan.held {
        tx.prepare_cached("INSERT OR IGNORE INTO held (device_id, collection, id) VALUES (?1, ?2, ?3)")?.execute([
            &b.device_id,
            collection,
            id,
        ])?;
    }
    for (collection, id) in &plan.dropped {
        tx.prepare_cached("DELETE FROM held WHERE device_id = ?1 AND collection = ?2 AND id = ?3")?.execute([
            &b.device_id,
            collection,
            id,
        ])?;
    }
    for (collection, id) in &plan.deleted {
        super::attachments::delete_for_document(&tx, collection, id)?;
    }
    tx.commit()?;
    Ok(PushOutcome::Results(plan.results))
}

pub(super) fn pull(c: &mut Connection, b: PullBatch) -> Result<PullOutcome, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !bump_device_seq(&tx, &b.device_id, b.device_seq, b.now)? {
        return Ok(PullOutcome::RollbackDetected);
    }
    let Some(user) = rule_user(&tx, &b.user)? else { return Ok(PullOutcome::UnknownUser) };
    let (epoch, since) = crate::storage::scan_from(&b, &user);
    type Row = (String, String, String, i64, bool, String, i64);
    let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Row> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
    };
    let (rows, has_more, last_seq): (Vec<Row>, bool, u64) = if b.rules.owner_only_scope() {
        // Only the user's own documents can be readable, and only held ones need a
        // tombstone: the rest is skipped inside SQLite, and the cursor moves past it.
        let top: i64 = tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM documents")?.query_row([], |r| r.get(0))?;
        let rows: Vec<Row> = tx
            .prepare_cached(
                "SELECT d.collection, d.id, d.owner, d.version, d.deleted, d.body, d.seq FROM documents d
                 WHERE d.seq > ?1 AND d.seq <= ?2 AND (d.owner = ?3 OR EXISTS (SELECT 1 FROM held h
                     WHERE h.device_id = ?4 AND h.collection = d.collection AND h.id = d.id))
                 ORDER BY d.seq LIMIT ?5",
            )?
            .query_map(params![to_column(since, "documents.seq")?, top, b.user, b.device_id, b.limit], read)?
            .collect::<Result<_, _>>()?;
        let full = rows.len() == b.limit as usize;
        let end = match rows.last() {
            Some(r) if full => from_column(r.6, "documents.seq")?,
            _ => from_column::<u64>(top, "documents.seq")?.max(since),
        };
        (rows, full, end)
    } else {
        let rows: Vec<Row> = tx
            .prepare_cached(
                "SELECT collection, id, owner, version, deleted, body, seq FROM documents
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![to_column(since, "documents.seq")?, b.limit], read)?
            .collect::<Result<_, _>>()?;
        let full = rows.len() == b.limit as usize;
        let end = match rows.last() {
            Some(r) => from_column(r.6, "documents.seq")?,
            None => since,
        };
        (rows, full, end)
    };
    let mut held = HashSet::new();
    let mut page = Vec::with_capacity(rows.len());
    for (collection, id, owner, version, deleted, body, _) in rows {
        let is_held = tx
            .prepare_cached("SELECT 1 FROM held WHERE device_id = ?1 AND collection = ?2 AND id = ?3")?
            .exists([&b.device_id, &collection, &id])?;
        let doc = stored_doc(owner, version, deleted, &body)?;
        if is_held {
            held.insert((collection.clone(), id.clone()));
        }
        page.push(PullRow { collection, id, doc });
    }
    let PullPlan { changes, hold, release } = plan_pull(&b.rules, &user, page, &held);
    for (collection, id) in &hold {
        tx.prepare_cached("INSERT OR IGNORE INTO held (device_id, collection, id) VALUES (?1, ?2, ?3)")?.execute([
            &b.device_id,
            collection,
            id,
        ])?;
    }
    for (collection, id) in &release {
        tx.prepare_cached("DELETE FROM held WHERE device_id = ?1 AND collection = ?2 AND id = ?3")?.execute([
            &b.device_id,
            collection,
            id,
        ])?;
    }
    tx.commit()?;
    Ok(PullOutcome::Page { changes, next: fieldvault_core::protocol::sync::Cursor { seq: last_seq, epoch }, has_more })
}

pub(super) fn purge_idempotency(c: &mut Connection, before: u64) -> Result<u64, StoreError> {
    let before = to_column(before, "idempotency.created_at")?;
    Ok(c.execute("DELETE FROM idempotency WHERE created_at < ?1", [before])? as u64)
}
