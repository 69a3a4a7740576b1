//! The audit log on PostgreSQL: the `audit` table (append-only: an `UPDATE` trigger refuses
//! changes) and its chain head, the one-row `audit_head`. Every instance appends to the same
//! chain: an append locks the head row (`SELECT .. FOR UPDATE`) first thing in the action's
//! transaction, so appends on all instances take their turn and each record follows the one
//! committed before it. That orders every audited write across instances: an audited
//! transaction holds the head from its first statement to its commit, so two audited actions
//! (two logins on two instances, say) never commit at the same time.

use sqlx::{PgConnection, PgPool, Row};

use fieldvault_core::audit::{AUDIT_HASH_LEN, AuditEvent, AuditRecord};

use crate::storage::{AuditCut, StoreError, audit_record, from_column, retention_cut_event, to_column};

/// Version 7 (see `sqlite/audit.rs`), one statement each.
pub(super) const SCHEMA_V7: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit (
        seq BIGINT PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash BYTEA NOT NULL,
        hash BYTEA NOT NULL
    )",
    "CREATE OR REPLACE FUNCTION fv_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$",
    "DROP TRIGGER IF EXISTS audit_append_only ON audit",
    "CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION fv_audit_append_only()",
    "CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash BYTEA NOT NULL
    )",
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex')) ON CONFLICT DO NOTHING",
];

fn hash_column(bytes: Vec<u8>, what: &'static str) -> Result<[u8; AUDIT_HASH_LEN], StoreError> {
    bytes.try_into().map_err(|_| StoreError::corrupt(what, "not 32 bytes"))
}

/// The chain head, locked for the rest of the transaction: (last seq, its hash).
pub(super) async fn lock_head(tx: &mut PgConnection) -> Result<(u64, [u8; AUDIT_HASH_LEN]), StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE").fetch_one(&mut *tx).await?;
    Ok((from_column(row.try_get("seq")?, "audit_head.seq")?, hash_column(row.try_get("hash")?, "audit_head.hash")?))
}

/// Appends `event` after the head, inside `tx`, which holds the head until it ends.
pub(super) async fn append_in(tx: &mut PgConnection, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
    let (seq, prev) = lock_head(tx).await?;
    let record = event.clone().chain(seq + 1, prev).map_err(|e| StoreError::Backend(e.to_string()))?;
    let seq = to_column(record.seq, "audit.seq")?;
    let detail = serde_json::to_string(&record.detail).map_err(|e| StoreError::Backend(e.to_string()))?;
    sqlx::query(
        "INSERT INTO audit (seq, at, actor, action, target, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(to_column(record.at, "audit.at")?)
    .bind(&record.actor)
    .bind(&record.action)
    .bind(&record.target)
    .bind(detail)
    .bind(&record.prev_hash[..])
    .bind(&record.hash[..])
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&record.hash[..])
        .execute(&mut *tx)
        .await?;
    Ok(record)
}

pub(super) async fn append(pool: &PgPool, event: &AuditEvent) -> Result<AuditRecord, StoreError> {
    let mut tx = pool.begin().await?;
    let record = append_in(&mut tx, event).await?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn head(pool: &PgPool) -> Result<Option<(u64, [u8; AUDIT_HASH_LEN])>, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(pool).await?;
    let seq: u64 = from_column(row.try_get("seq")?, "audit_head.seq")?;
    Ok(if seq == 0 { None } else { Some((seq, hash_column(row.try_get("hash")?, "audit_head.hash")?)) })
}

pub(super) async fn page(pool: &PgPool, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(to_column(after, "audit.seq")?)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            audit_record(
                r.try_get("seq")?,
                r.try_get("at")?,
                r.try_get("actor")?,
                r.try_get("action")?,
                r.try_get("target")?,
                &r.try_get::<String, _>("detail")?,
                r.try_get("prev_hash")?,
                r.try_get("hash")?,
            )
        })
        .collect()
}

/// The retention cut (see [`crate::storage::Store::audit_prune`]), under the head's lock.
pub(super) async fn prune(pool: &PgPool, before: u64, cut: &AuditEvent) -> Result<Option<AuditCut>, StoreError> {
    let mut tx = pool.begin().await?;
    let (head_seq, head_hash) = lock_head(&mut tx).await?;
    let first = sqlx::query("SELECT seq, prev_hash FROM audit WHERE at >= $1 ORDER BY seq LIMIT 1")
        .bind(to_column(before, "audit.at")?)
        .fetch_optional(&mut *tx)
        .await?;
    let (first_seq, first_prev) = match first {
        Some(r) => {
            (from_column(r.try_get("seq")?, "audit.seq")?, hash_column(r.try_get("prev_hash")?, "audit.prev_hash")?)
        }
        // Everything is older: the cut record itself is the first kept.
        None => (head_seq + 1, head_hash),
    };
    let deleted = sqlx::query("DELETE FROM audit WHERE seq < $1")
        .bind(to_column(first_seq, "audit.seq")?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let record = append_in(&mut tx, &retention_cut_event(cut, first_seq, &first_prev, deleted)).await?;
    tx.commit().await?;
    Ok(Some(AuditCut { deleted, first_kept_seq: first_seq, record }))
}
