//! Push and pull on the SQLCipher store. A push runs in one `BEGIN IMMEDIATE` transaction on
//! the store's one connection, so ops, idempotency records, held ids and the change sequence
//! move together or not at all, and sequence numbers are handed out in commit order. A pull
//! reads its page in one transaction, lets go of the connection while the rules judge the
//! rows and the answer is written, and records what the device holds in a second.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use fieldvault_core::protocol::sync::{
    AttachmentDrop, CheckedOp, Cursor, DocumentWrite, IdempotencyRecord, MAX_PULL_CHANGE_BYTES, OpResult, OpStatus,
    PullPlan, PullRow, StoredDoc, plan_pull, plan_push,
};
use fieldvault_core::rules::RuleUser;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::storage::{
    PullBatch, PullOutcome, PushBatch, PushOutcome, StoreError, attachment_list_column, from_column,
    idempotency_record, stored_doc, to_column,
};

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
    let row: Option<(String, i64, bool, String, String)> = tx
        .prepare_cached(
            "SELECT owner, version, deleted, body, attachments FROM documents WHERE collection = ?1 AND id = ?2",
        )?
        .query_row([collection, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()?;
    row.map(|(owner, version, deleted, body, list)| stored_doc(owner, version, deleted, &body, &list)).transpose()
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
    let records = load_records(&tx, b)?;
    let documents = load_documents(&tx, &b.ops)?;
    let next_seq: i64 =
        tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM documents")?.query_row([], |r| r.get(0))?;
    let next_seq = from_column(next_seq, "documents.seq")?;
    let plan = plan_push(&b.rules, &user, &b.ops, &documents, &records, b.expired_before, next_seq);
    let now = to_column(b.now, "documents.updated_at")?;
    write_documents(&tx, &plan.documents, now)?;
    write_records(&tx, &b.user, &plan.records, now)?;
    hold_ids(&tx, &b.device_id, &plan.held)?;
    release_ids(&tx, &b.device_id, &plan.dropped)?;
    for drop in &plan.drop_attachments {
        match drop {
            AttachmentDrop::Document { collection, id } => {
                super::attachments::delete_for_document(&tx, collection, id)?;
            }
            AttachmentDrop::Ids { collection, id, ids } => {
                super::attachments::delete_listed_off(&tx, collection, id, ids)?;
            }
        }
    }
    tx.commit()?;
    Ok(PushOutcome::Results(plan.results))
}

/// The stored idempotency records of the push's keys, by key.
fn load_records(tx: &Transaction<'_>, b: &PushBatch) -> Result<HashMap<String, IdempotencyRecord>, StoreError> {
    let mut records = HashMap::new();
    for checked in &b.ops {
        let key = &checked.op.idempotency_key;
        if records.contains_key(key) {
            continue;
        }
        let row: Option<(Vec<u8>, String, Option<i64>)> = tx
            .prepare_cached("SELECT fingerprint, status, version FROM idempotency WHERE user_name = ?1 AND key = ?2")?
            .query_row([&b.user, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((fingerprint, status, version)) = row {
            records.insert(key.clone(), idempotency_record(fingerprint, &status, version)?);
        }
    }
    Ok(records)
}

/// The stored state of every document the ops name, by (collection, id).
fn load_documents(tx: &Transaction<'_>, ops: &[CheckedOp]) -> Result<HashMap<(String, String), StoredDoc>, StoreError> {
    let mut documents = HashMap::new();
    for checked in ops {
        let op = &checked.op;
        let at = (op.collection.clone(), op.id.clone());
        if !documents.contains_key(&at)
            && let Some(doc) = load_doc(tx, &op.collection, &op.id)?
        {
            documents.insert(at, doc);
        }
    }
    Ok(documents)
}

/// Writes the documents a push changed, each with its change sequence number and attachment
/// list (and, where the list changed, the index of which documents list an id). The owner is
/// written too: it changes only when a document is re-created over a tombstone (a new
/// incarnation, owned by its creator); every other write carries the stored owner.
fn write_documents(tx: &Transaction<'_>, documents: &[DocumentWrite], now: i64) -> Result<(), StoreError> {
    for d in documents {
        tx.prepare_cached(
            "INSERT INTO documents (collection, id, owner, version, deleted, body, seq, updated_at, attachments)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, version = excluded.version,
                 deleted = excluded.deleted, body = excluded.body, seq = excluded.seq,
                 updated_at = excluded.updated_at, attachments = excluded.attachments",
        )?
        .execute(params![
            d.collection,
            d.id,
            d.owner,
            to_column(d.version, "documents.version")?,
            d.deleted,
            d.body.to_string(),
            to_column(d.seq, "documents.seq")?,
            now,
            attachment_list_column(&d.attachments)
        ])?;
        if d.attachments_changed {
            super::attachments::relist(tx, &d.collection, &d.id, &d.attachments)?;
        }
    }
    Ok(())
}

/// Records the first result of each new idempotency key.
fn write_records(
    tx: &Transaction<'_>,
    user: &str,
    records: &[(String, IdempotencyRecord)],
    now: i64,
) -> Result<(), StoreError> {
    for (key, r) in records {
        tx.prepare_cached(
            "INSERT INTO idempotency (user_name, key, fingerprint, status, version, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            user,
            key,
            &r.fingerprint[..],
            r.first.status.as_str(),
            r.first.version.map(|v| to_column(v, "idempotency.version")).transpose()?,
            now
        ])?;
    }
    Ok(())
}

/// Records that `device` holds these documents.
fn hold_ids(tx: &Transaction<'_>, device: &str, ids: &[(String, String)]) -> rusqlite::Result<()> {
    for (collection, id) in ids {
        tx.prepare_cached("INSERT OR IGNORE INTO held (device_id, collection, id) VALUES (?1, ?2, ?3)")?
            .execute([device, collection, id])?;
    }
    Ok(())
}

/// Forgets that `device` holds these documents (after a push that deleted them).
fn release_ids(tx: &Transaction<'_>, device: &str, ids: &[(String, String)]) -> rusqlite::Result<()> {
    for (collection, id) in ids {
        tx.prepare_cached("DELETE FROM held WHERE device_id = ?1 AND collection = ?2 AND id = ?3")?
            .execute([device, collection, id])?;
    }
    Ok(())
}

/// Forgets that `device` holds these documents, each only while it is still at the change
/// (sequence number) the pull page saw: a document changed since is judged again by a later
/// page, which must find it held if the device has it.
fn release_unchanged(tx: &Transaction<'_>, device: &str, ids: &[(String, String, u64)]) -> Result<(), StoreError> {
    for (collection, id, seq) in ids {
        tx.prepare_cached(
            "DELETE FROM held WHERE device_id = ?1 AND collection = ?2 AND id = ?3
               AND EXISTS (SELECT 1 FROM documents d WHERE d.collection = ?2 AND d.id = ?3 AND d.seq = ?4)",
        )?
        .execute(params![device, collection, id, to_column(*seq, "documents.seq")?])?;
    }
    Ok(())
}

/// What a pull page read under the store's lock: enough to plan it without the store.
struct PageRead {
    user: RuleUser,
    epoch: [u8; 8],
    page: Vec<PullRow>,
    full: bool,
    end: u64,
    held: HashSet<(String, String)>,
}

/// A pull page: read under the store's lock, planned (rules, projections, the answer's
/// JSON) with the lock released, then what the device holds recorded under it again.
pub(super) fn pull(conn: &Mutex<super::Locked>, b: PullBatch) -> Result<PullOutcome, StoreError> {
    let read = {
        let mut held = super::lock(conn)?;
        read_page(&mut held.conn, &b)?
    };
    let PageRead { user, epoch, page, full, end, held } = match read {
        Ok(read) => read,
        Err(outcome) => return Ok(outcome),
    };
    let PullPlan { answer, hold, release, cut_after } = plan_pull(&b.rules, &user, page, &held, MAX_PULL_CHANGE_BYTES);
    {
        let mut held = super::lock(conn)?;
        let tx = held.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        hold_ids(&tx, &b.device_id, &hold)?;
        release_unchanged(&tx, &b.device_id, &release)?;
        tx.commit()?;
    }
    let (seq, has_more) = match cut_after {
        Some(seq) => (seq, true),
        None => (end, full),
    };
    Ok(PullOutcome::Page { answer, next: Cursor { seq, epoch }, has_more })
}

/// The first step of a pull, in one transaction: the `device_seq` check, the user, where the
/// scan starts (decided here, before anything is held or released: see [`PullBatch::after`]),
/// the page and which of its documents the device holds. `Err` is the answer when there is
/// no page to plan.
fn read_page(c: &mut Connection, b: &PullBatch) -> Result<Result<PageRead, PullOutcome>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !bump_device_seq(&tx, &b.device_id, b.device_seq, b.now)? {
        return Ok(Err(PullOutcome::RollbackDetected));
    }
    let Some(user) = rule_user(&tx, &b.user)? else { return Ok(Err(PullOutcome::UnknownUser)) };
    let (epoch, since) = crate::storage::scan_from(b, &user);
    let (page, full, end) =
        if b.rules.owner_only_scope() { scan_own_and_held(&tx, b, since)? } else { scan(&tx, b, since)? };
    let held = held_of(&tx, &b.device_id, &page)?;
    tx.commit()?;
    Ok(Ok(PageRead { user, epoch, page, full, end, held }))
}

/// One page of stored changes after `since`: the rows, whether the page is full (by count or
/// by the bytes read), and the last sequence number it covers.
type Scanned = (Vec<PullRow>, bool, u64);

/// Reads scanned rows (collection, id, owner, version, deleted, body, seq, attachments) until `limit` of
/// them, or until their bodies reach [`MAX_PULL_CHANGE_BYTES`]; whether it stopped there.
fn read_rows(mut rows: rusqlite::Rows<'_>, limit: u32) -> Result<(Vec<PullRow>, bool), StoreError> {
    let mut page = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        let body: String = r.get(5)?;
        let list: String = r.get(7)?;
        bytes += body.len();
        let doc = stored_doc(r.get(2)?, r.get(3)?, r.get(4)?, &body, &list)?;
        page.push(PullRow { collection: r.get(0)?, id: r.get(1)?, seq: from_column(r.get(6)?, "documents.seq")?, doc });
        if page.len() >= limit as usize || bytes >= MAX_PULL_CHANGE_BYTES {
            return Ok((page, true));
        }
    }
    Ok((page, false))
}

/// Every stored change after `since`, up to the page limit.
fn scan(tx: &Transaction<'_>, b: &PullBatch, since: u64) -> Result<Scanned, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT collection, id, owner, version, deleted, body, seq, attachments FROM documents
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let (page, full) = read_rows(stmt.query(params![to_column(since, "documents.seq")?, b.limit])?, b.limit)?;
    let end = page.last().map_or(since, |r| r.seq);
    Ok((page, full, end))
}

/// The owner-only rules' page: only the user's own documents can be readable, and only held
/// ones need a tombstone: the rest is skipped inside SQLite, and the cursor moves past it.
fn scan_own_and_held(tx: &Transaction<'_>, b: &PullBatch, since: u64) -> Result<Scanned, StoreError> {
    let top: i64 = tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM documents")?.query_row([], |r| r.get(0))?;
    let mut stmt = tx.prepare_cached(
        "SELECT d.collection, d.id, d.owner, d.version, d.deleted, d.body, d.seq, d.attachments FROM documents d
         WHERE d.seq > ?1 AND d.seq <= ?2 AND (d.owner = ?3 OR EXISTS (SELECT 1 FROM held h
             WHERE h.device_id = ?4 AND h.collection = d.collection AND h.id = d.id))
         ORDER BY d.seq LIMIT ?5",
    )?;
    let rows = stmt.query(params![to_column(since, "documents.seq")?, top, b.user, b.device_id, b.limit])?;
    let (page, full) = read_rows(rows, b.limit)?;
    let end = match page.last() {
        Some(r) if full => r.seq,
        _ => from_column::<u64>(top, "documents.seq")?.max(since),
    };
    Ok((page, full, end))
}

/// Which of the page's documents the device holds.
fn held_of(tx: &Transaction<'_>, device: &str, page: &[PullRow]) -> Result<HashSet<(String, String)>, StoreError> {
    let mut held = HashSet::new();
    for row in page {
        let is_held = tx
            .prepare_cached("SELECT 1 FROM held WHERE device_id = ?1 AND collection = ?2 AND id = ?3")?
            .exists([device, &row.collection, &row.id])?;
        if is_held {
            held.insert((row.collection.clone(), row.id.clone()));
        }
    }
    Ok(held)
}

pub(super) fn purge_idempotency(c: &mut Connection, before: u64) -> Result<u64, StoreError> {
    let before = to_column(before, "idempotency.created_at")?;
    Ok(c.execute("DELETE FROM idempotency WHERE created_at < ?1", [before])? as u64)
}
