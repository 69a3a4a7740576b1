//! Push and pull on PostgreSQL, shared by any number of server instances.
//!
//! A push is one transaction that:
//! 1. takes a transaction-scoped advisory lock per idempotency key with
//!    `pg_try_advisory_xact_lock`: a key another request (on any instance) is using right now
//!    fails the whole push with [`PushOutcome::KeyInUse`] (409) before anything happens;
//! 2. raises the device's sync counter atomically (`.. WHERE sync_seq <= $2`), or answers
//!    [`PushOutcome::RollbackDetected`];
//! 3. reads the keys' idempotency records (one statement; the keys are locked, so they
//!    cannot change);
//! 4. takes the change-sequence lock ([`SEQ_LOCK`]) so sequence numbers are handed out in
//!    commit order (a pull that has seen sequence n has seen everything below n) and no two
//!    pushes decide on the same documents at once;
//! 5. reads the named documents (one statement), plans the whole push in memory
//!    (`plan_push`, the same code SQLite runs) and writes documents, idempotency records and
//!    held ids with one multi-row statement each.
//!
//! Held ids, cursors and the two steps of a pull work as on SQLite (`sqlite/sync.rs`).

use std::collections::{HashMap, HashSet};

use fieldvault_core::protocol::sync::{
    AttachmentDrop, CheckedOp, Cursor, DocumentWrite, IdempotencyRecord, MAX_PULL_CHANGE_BYTES, OpResult, OpStatus,
    PullPlan, PullRow, StoredDoc, plan_pull, plan_push,
};
use fieldvault_core::rules::RuleUser;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::storage::{
    PullBatch, PullOutcome, PushBatch, PushOutcome, StoreError, attachment_list_column, from_column,
    idempotency_record, stored_doc, to_column,
};

/// Key of the advisory lock that orders change sequence numbers (ASCII `fvchgseq`).
const SEQ_LOCK: i64 = 0x6676_6368_6773_6571;

/// The advisory-lock key a push holds for (user, idempotency key) while it runs: the first
/// eight bytes of SHA-256 over a label, the user and the key.
pub fn idempotency_lock_id(user: &str, key: &str) -> i64 {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"fieldvault/v1/idempotency-lock\0");
    ctx.update(&(user.len() as u64).to_be_bytes());
    ctx.update(user.as_bytes());
    ctx.update(key.as_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    i64::from_be_bytes(b)
}

async fn bump_device_seq(conn: &mut PgConnection, device: &str, seq: u64, now: u64) -> Result<bool, StoreError> {
    let r = sqlx::query("UPDATE devices SET sync_seq = $2, last_seen_at = $3 WHERE id = $1 AND sync_seq <= $2")
        .bind(device)
        .bind(to_column(seq, "devices.sync_seq")?)
        .bind(to_column(now, "devices.last_seen_at")?)
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

async fn rule_user(conn: &mut PgConnection, name: &str) -> Result<Option<RuleUser>, StoreError> {
    let row = sqlx::query("SELECT roles, attributes FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(crate::storage::rule_user(name, row.try_get(0)?, row.try_get(1)?)?))
}

async fn load_doc(conn: &mut PgConnection, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
    let row = sqlx::query(
        "SELECT owner, version, deleted, body, attachments FROM documents WHERE collection = $1 AND id = $2",
    )
    .bind(collection)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => Ok(Some(stored_doc(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)?)),
        None => Ok(None),
    }
}

/// Records that `device` holds these documents (one statement).
async fn hold_ids(conn: &mut PgConnection, device: &str, ids: &[(String, String)]) -> Result<(), StoreError> {
    held_statement(
        conn,
        "INSERT INTO held (device_id, collection, id) SELECT $1, c, i FROM unnest($2::text[], $3::text[]) AS t(c, i)
         ON CONFLICT DO NOTHING",
        device,
        ids,
    )
    .await
}

/// Forgets that `device` holds these documents (one statement).
async fn release_ids(conn: &mut PgConnection, device: &str, ids: &[(String, String)]) -> Result<(), StoreError> {
    held_statement(
        conn,
        "DELETE FROM held h USING unnest($2::text[], $3::text[]) AS t(c, i)
         WHERE h.device_id = $1 AND h.collection = t.c AND h.id = t.i",
        device,
        ids,
    )
    .await
}

/// Runs `sql` over (device, collections, ids); nothing for an empty list.
async fn held_statement(
    conn: &mut PgConnection,
    sql: &'static str,
    device: &str,
    ids: &[(String, String)],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(sql)
        .bind(device)
        .bind(ids.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>())
        .bind(ids.iter().map(|(_, i)| i.as_str()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn document(pool: &PgPool, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
    let mut conn = pool.acquire().await?;
    load_doc(&mut conn, collection, id).await
}

pub(super) async fn push(pool: &PgPool, b: PushBatch) -> Result<PushOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    if !lock_keys(&mut tx, &b).await? {
        return Ok(PushOutcome::KeyInUse);
    }
    if !bump_device_seq(&mut tx, &b.device_id, b.device_seq, b.now).await? {
        return Ok(PushOutcome::RollbackDetected);
    }
    let Some(user) = rule_user(&mut tx, &b.user).await? else {
        return Ok(PushOutcome::Results(b.ops.iter().map(|_| OpResult::bare(OpStatus::Forbidden)).collect()));
    };
    let records = load_records(&mut tx, &b).await?;
    // From here to the commit, pushes that change documents run one at a time, so change
    // numbers are handed out in commit order and no two pushes decide on the same state.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SEQ_LOCK).execute(&mut *tx).await?;
    let documents = load_documents(&mut tx, &b.ops).await?;
    let next_seq: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM documents").fetch_one(&mut *tx).await?;
    let next_seq = from_column(next_seq, "documents.seq")?;
    let plan = plan_push(&b.rules, &user, &b.ops, &documents, &records, b.expired_before, next_seq);
    let now = to_column(b.now, "documents.updated_at")?;
    write_documents(&mut tx, &plan.documents, now).await?;
    write_records(&mut tx, &b.user, &plan.records, now).await?;
    hold_ids(&mut tx, &b.device_id, &plan.held).await?;
    release_ids(&mut tx, &b.device_id, &plan.dropped).await?;
    for drop in &plan.drop_attachments {
        match drop {
            AttachmentDrop::Document { collection, id } => {
                super::attachments::delete_for_document(&mut tx, collection, id).await?;
            }
            AttachmentDrop::Ids { collection, id, ids } => {
                super::attachments::delete_listed_off(&mut tx, collection, id, ids).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(PushOutcome::Results(plan.results))
}

/// Takes the push's idempotency-key locks (one statement); false if another request holds
/// one of them right now.
async fn lock_keys(conn: &mut PgConnection, b: &PushBatch) -> Result<bool, StoreError> {
    let locks: Vec<i64> = b.ops.iter().map(|o| idempotency_lock_id(&b.user, &o.op.idempotency_key)).collect();
    let all_locked = sqlx::query_scalar(
        "SELECT COALESCE(bool_and(pg_try_advisory_xact_lock(k)), true) FROM unnest($1::bigint[]) AS k",
    )
    .bind(&locks)
    .fetch_one(&mut *conn)
    .await?;
    Ok(all_locked)
}

/// The stored idempotency records of the push's keys, by key (one statement). The keys are
/// locked ([`lock_keys`]): their records cannot change under the push.
async fn load_records(
    conn: &mut PgConnection,
    b: &PushBatch,
) -> Result<HashMap<String, IdempotencyRecord>, StoreError> {
    let keys: Vec<&str> = b.ops.iter().map(|o| o.op.idempotency_key.as_str()).collect();
    let rows =
        sqlx::query("SELECT key, fingerprint, status, version FROM idempotency WHERE user_name = $1 AND key = ANY($2)")
            .bind(&b.user)
            .bind(&keys)
            .fetch_all(&mut *conn)
            .await?;
    let mut records = HashMap::with_capacity(rows.len());
    for r in rows {
        let record = idempotency_record(r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)?;
        records.insert(r.try_get(0)?, record);
    }
    Ok(records)
}

/// The stored state of every document the ops name, by (collection, id) (one statement).
async fn load_documents(
    conn: &mut PgConnection,
    ops: &[CheckedOp],
) -> Result<HashMap<(String, String), StoredDoc>, StoreError> {
    let collections: Vec<&str> = ops.iter().map(|o| o.op.collection.as_str()).collect();
    let ids: Vec<&str> = ops.iter().map(|o| o.op.id.as_str()).collect();
    let rows = sqlx::query(
        "SELECT d.collection, d.id, d.owner, d.version, d.deleted, d.body, d.attachments FROM documents d
         JOIN (SELECT DISTINCT c, i FROM unnest($1::text[], $2::text[]) AS t(c, i)) t
           ON d.collection = t.c AND d.id = t.i",
    )
    .bind(&collections)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut documents = HashMap::with_capacity(rows.len());
    for r in rows {
        let doc = stored_doc(r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?)?;
        documents.insert((r.try_get(0)?, r.try_get(1)?), doc);
    }
    Ok(documents)
}

/// Writes the documents a push changed, each with its change sequence number and attachment
/// list (one statement), and, for those whose list changed, the index of which documents list
/// an id. The owner changes only when a document is re-created over a tombstone (a new
/// incarnation, owned by its creator); every other write carries the stored owner.
async fn write_documents(conn: &mut PgConnection, d: &[DocumentWrite], now: i64) -> Result<(), StoreError> {
    if d.is_empty() {
        return Ok(());
    }
    let versions: Vec<i64> = d.iter().map(|x| to_column(x.version, "documents.version")).collect::<Result<_, _>>()?;
    let seqs: Vec<i64> = d.iter().map(|x| to_column(x.seq, "documents.seq")).collect::<Result<_, _>>()?;
    sqlx::query(
        "INSERT INTO documents (collection, id, owner, version, deleted, body, seq, updated_at, attachments)
         SELECT c, i, o, v, x, b, s, $8, a FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
             $5::bool[], $6::text[], $7::bigint[], $9::text[]) AS t(c, i, o, v, x, b, s, a)
         ON CONFLICT (collection, id) DO UPDATE SET owner = excluded.owner, version = excluded.version,
             deleted = excluded.deleted, body = excluded.body, seq = excluded.seq,
             updated_at = excluded.updated_at, attachments = excluded.attachments",
    )
    .bind(d.iter().map(|x| x.collection.as_str()).collect::<Vec<_>>())
    .bind(d.iter().map(|x| x.id.as_str()).collect::<Vec<_>>())
    .bind(d.iter().map(|x| x.owner.as_str()).collect::<Vec<_>>())
    .bind(versions)
    .bind(d.iter().map(|x| x.deleted).collect::<Vec<_>>())
    .bind(d.iter().map(|x| x.body.to_string()).collect::<Vec<_>>())
    .bind(seqs)
    .bind(now)
    .bind(d.iter().map(|x| attachment_list_column(&x.attachments)).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    let relisted: Vec<(&str, &str, &[String])> = d
        .iter()
        .filter(|x| x.attachments_changed)
        .map(|x| (x.collection.as_str(), x.id.as_str(), x.attachments.as_slice()))
        .collect();
    super::attachments::relist(conn, &relisted).await
}

/// Records the first result of each new idempotency key (one statement).
async fn write_records(
    conn: &mut PgConnection,
    user: &str,
    r: &[(String, IdempotencyRecord)],
    now: i64,
) -> Result<(), StoreError> {
    if r.is_empty() {
        return Ok(());
    }
    let versions: Vec<Option<i64>> = r
        .iter()
        .map(|(_, x)| x.first.version.map(|v| to_column(v, "idempotency.version")).transpose())
        .collect::<Result<_, _>>()?;
    sqlx::query(
        "INSERT INTO idempotency (user_name, key, fingerprint, status, version, created_at)
         SELECT $1, k, f, s, v, $6 FROM unnest($2::text[], $3::bytea[], $4::text[], $5::bigint[]) AS t(k, f, s, v)",
    )
    .bind(user)
    .bind(r.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|(_, x)| x.fingerprint.to_vec()).collect::<Vec<_>>())
    .bind(r.iter().map(|(_, x)| x.first.status.as_str()).collect::<Vec<_>>())
    .bind(versions)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A pull page: read in one transaction, planned (rules, projections, the answer's JSON)
/// with no transaction open, then what the device holds recorded in a second.
pub(super) async fn pull(pool: &PgPool, b: PullBatch) -> Result<PullOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    if !bump_device_seq(&mut tx, &b.device_id, b.device_seq, b.now).await? {
        return Ok(PullOutcome::RollbackDetected);
    }
    let Some(user) = rule_user(&mut tx, &b.user).await? else { return Ok(PullOutcome::UnknownUser) };
    // Decided here, before anything is held or released (see `PullBatch::after`).
    let (epoch, since) = crate::storage::scan_from(&b, &user);
    let (page, full, end) = if b.rules.owner_only_scope() {
        scan_own_and_held(&mut tx, &b, since).await?
    } else {
        scan(&mut tx, &b, since).await?
    };
    let held = held_of(&mut tx, &b.device_id, &page).await?;
    tx.commit().await?;
    let PullPlan { answer, hold, release, cut_after } = plan_pull(&b.rules, &user, page, &held, MAX_PULL_CHANGE_BYTES);
    let mut tx = pool.begin().await?;
    hold_ids(&mut tx, &b.device_id, &hold).await?;
    release_unchanged(&mut tx, &b.device_id, &release).await?;
    tx.commit().await?;
    let (seq, has_more) = match cut_after {
        Some(seq) => (seq, true),
        None => (end, full),
    };
    Ok(PullOutcome::Page { answer, next: Cursor { seq, epoch }, has_more })
}

/// Forgets that `device` holds these documents, each only while it is still at the change
/// (sequence number) the pull page saw (one statement; see `sqlite/sync.rs`).
async fn release_unchanged(
    conn: &mut PgConnection,
    device: &str,
    ids: &[(String, String, u64)],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = ids.iter().map(|(_, _, s)| to_column(*s, "documents.seq")).collect::<Result<_, _>>()?;
    sqlx::query(
        "DELETE FROM held h USING unnest($2::text[], $3::text[], $4::bigint[]) AS t(c, i, s), documents d
         WHERE h.device_id = $1 AND h.collection = t.c AND h.id = t.i
           AND d.collection = t.c AND d.id = t.i AND d.seq = t.s",
    )
    .bind(device)
    .bind(ids.iter().map(|(c, _, _)| c.as_str()).collect::<Vec<_>>())
    .bind(ids.iter().map(|(_, i, _)| i.as_str()).collect::<Vec<_>>())
    .bind(seqs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One page of stored changes after `since`: the rows, whether the page is full (by count or
/// by the bytes read), and the last sequence number it covers.
type Scanned = (Vec<PullRow>, bool, u64);

/// The rows of a scan (collection, id, owner, version, deleted, body, seq, attachments), which the query
/// already ends at the row whose body brings the bodies to [`MAX_PULL_CHANGE_BYTES`] (so no
/// more is sent over the connection); whether the page stopped at `limit` or at the bytes.
fn read_rows(rows: Vec<PgRow>, limit: u32) -> Result<(Vec<PullRow>, bool), StoreError> {
    let count = rows.len();
    let mut page = Vec::with_capacity(count);
    let mut bytes = 0usize;
    // Each row is dropped once parsed: the page is not held twice.
    for r in rows {
        let body: &str = r.try_get(5)?;
        let list: &str = r.try_get(7)?;
        bytes += body.len();
        let doc = stored_doc(r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, body, list)?;
        page.push(PullRow {
            collection: r.try_get(0)?,
            id: r.try_get(1)?,
            seq: from_column(r.try_get(6)?, "documents.seq")?,
            doc,
        });
    }
    Ok((page, count >= limit as usize || bytes >= MAX_PULL_CHANGE_BYTES))
}

/// The bytes of stored bodies a scan stops at ([`MAX_PULL_CHANGE_BYTES`]): the rows before
/// the one that reaches it are kept, and that one.
const PAGE_BYTES: i64 = MAX_PULL_CHANGE_BYTES as i64;

/// Every stored change after `since`, up to the page limit.
async fn scan(conn: &mut PgConnection, b: &PullBatch, since: u64) -> Result<Scanned, StoreError> {
    let rows = sqlx::query(
        "SELECT collection, id, owner, version, deleted, body, seq, attachments FROM (
             SELECT collection, id, owner, version, deleted, body, seq, attachments,
                 SUM(octet_length(body)) OVER (ORDER BY seq) - octet_length(body) AS before
             FROM (SELECT * FROM documents WHERE seq > $1 ORDER BY seq LIMIT $2) l
         ) t WHERE before < $3 ORDER BY seq",
    )
    .bind(to_column(since, "documents.seq")?)
    .bind(i64::from(b.limit))
    .bind(PAGE_BYTES)
    .fetch_all(&mut *conn)
    .await?;
    let (page, full) = read_rows(rows, b.limit)?;
    let end = page.last().map_or(since, |r| r.seq);
    Ok((page, full, end))
}

/// The owner-only rules' page: only the user's own documents can be readable, and only held
/// ones need a tombstone. `top` is read first: every number up to it is committed (they are
/// handed out in commit order), so the filtered scan may move the cursor up to it.
async fn scan_own_and_held(conn: &mut PgConnection, b: &PullBatch, since: u64) -> Result<Scanned, StoreError> {
    let top: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM documents").fetch_one(&mut *conn).await?;
    let rows = sqlx::query(
        "SELECT collection, id, owner, version, deleted, body, seq, attachments FROM (
             SELECT collection, id, owner, version, deleted, body, seq, attachments,
                 SUM(octet_length(body)) OVER (ORDER BY seq) - octet_length(body) AS before
             FROM (SELECT d.* FROM documents d
                 WHERE d.seq > $1 AND d.seq <= $2 AND (d.owner = $3 OR EXISTS (SELECT 1 FROM held h
                     WHERE h.device_id = $4 AND h.collection = d.collection AND h.id = d.id))
                 ORDER BY d.seq LIMIT $5) l
         ) t WHERE before < $6 ORDER BY seq",
    )
    .bind(to_column(since, "documents.seq")?)
    .bind(top)
    .bind(&b.user)
    .bind(&b.device_id)
    .bind(i64::from(b.limit))
    .bind(PAGE_BYTES)
    .fetch_all(&mut *conn)
    .await?;
    let (page, full) = read_rows(rows, b.limit)?;
    let end = match page.last() {
        Some(r) if full => r.seq,
        _ => from_column::<u64>(top, "documents.seq")?.max(since),
    };
    Ok((page, full, end))
}

/// Which of the page's documents the device holds (one statement).
async fn held_of(
    conn: &mut PgConnection,
    device: &str,
    page: &[PullRow],
) -> Result<HashSet<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT h.collection, h.id FROM held h JOIN unnest($2::text[], $3::text[]) AS t(c, i)
             ON h.collection = t.c AND h.id = t.i
         WHERE h.device_id = $1",
    )
    .bind(device)
    .bind(page.iter().map(|p| p.collection.as_str()).collect::<Vec<_>>())
    .bind(page.iter().map(|p| p.id.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

pub(super) async fn purge_idempotency(pool: &PgPool, before: u64) -> Result<u64, StoreError> {
    let r = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
        .bind(to_column(before, "idempotency.created_at")?)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// PostgreSQL schema version 2 (see the SQLite store for what each table holds).
pub(super) const SCHEMA_V2: &[&str] = &[
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS attributes TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS sync_seq BIGINT NOT NULL DEFAULT 0",
    "CREATE TABLE IF NOT EXISTS documents (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        owner TEXT NOT NULL,
        version BIGINT NOT NULL,
        deleted BOOLEAN NOT NULL,
        body TEXT NOT NULL,
        seq BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (collection, id)
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS documents_by_seq ON documents (seq)",
    "CREATE TABLE IF NOT EXISTS idempotency (
        user_name TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint BYTEA NOT NULL,
        status TEXT NOT NULL,
        version BIGINT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (user_name, key)
    )",
    "CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at)",
    "CREATE TABLE IF NOT EXISTS held (
        device_id TEXT NOT NULL,
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (device_id, collection, id)
    )",
    "CREATE TABLE IF NOT EXISTS directives (
        jti TEXT PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id),
        kind TEXT NOT NULL,
        token TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        acked_at BIGINT NULL
    )",
    "CREATE INDEX IF NOT EXISTS directives_pending ON directives (device_id) WHERE acked_at IS NULL",
];
