//! Attachment metadata and ciphertext chunks on PostgreSQL (`BYTEA`), shared by every
//! instance: an upload may resume on another instance. The CEK arrives sealed under a key
//! derived from the store key, so a dump of the database alone does not give it. Also the
//! index of which documents list which attachment ids (ADR 0008).

use fieldvault_core::protocol::sync::StoredDoc;
use sqlx::{PgConnection, PgPool, Row};

use crate::storage::{AttachmentRecord, MAX_LISTING_DOCUMENTS, StoreError, from_column, stored_doc, to_column};

/// Version 2 tables for attachments (the CEK as the uploading device wrapped it).
pub(super) const SCHEMA_V2: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS attachments (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        collection TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        header BYTEA NOT NULL,
        manifest BYTEA NOT NULL,
        wrapped_cek BYTEA NOT NULL,
        chunk_count BIGINT NOT NULL,
        length BIGINT NOT NULL,
        complete BOOLEAN NOT NULL DEFAULT false,
        created_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS attachments_by_document ON attachments (collection, doc_id)",
    "CREATE TABLE IF NOT EXISTS attachment_chunks (
        attachment_id TEXT NOT NULL REFERENCES attachments(id),
        idx BIGINT NOT NULL,
        bytes BYTEA NOT NULL,
        PRIMARY KEY (attachment_id, idx)
    )",
];

/// Version 4 (ADR 0008): the CEK sealed by the server (`cek_sealed`) instead of wrapped by the
/// uploading device, which no other device could use: the attachments stored before are
/// deleted with their chunks (their devices upload them again; their ids are free). Each
/// document gains its attachment list, and `listed_attachments` indexes which documents
/// list an id (kept with the list, in each push's transaction).
pub(super) const SCHEMA_V4: &[&str] = &[
    "DROP TABLE IF EXISTS attachment_chunks",
    "DROP TABLE IF EXISTS attachments",
    "CREATE TABLE attachments (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        collection TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        header BYTEA NOT NULL,
        manifest BYTEA NOT NULL,
        cek_sealed BYTEA NOT NULL,
        chunk_count BIGINT NOT NULL,
        length BIGINT NOT NULL,
        complete BOOLEAN NOT NULL DEFAULT false,
        created_at BIGINT NOT NULL
    )",
    "CREATE INDEX attachments_by_document ON attachments (collection, doc_id)",
    "CREATE TABLE attachment_chunks (
        attachment_id TEXT NOT NULL REFERENCES attachments(id),
        idx BIGINT NOT NULL,
        bytes BYTEA NOT NULL,
        PRIMARY KEY (attachment_id, idx)
    )",
    "ALTER TABLE documents ADD COLUMN IF NOT EXISTS attachments TEXT NOT NULL DEFAULT '[]'",
    "CREATE TABLE IF NOT EXISTS listed_attachments (
        attachment_id TEXT NOT NULL,
        collection TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        PRIMARY KEY (attachment_id, collection, doc_id)
    )",
    "CREATE INDEX IF NOT EXISTS listed_attachments_by_document ON listed_attachments (collection, doc_id)",
];

async fn read(conn: &mut PgConnection, id: &str) -> Result<Option<AttachmentRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT id, user_name, collection, doc_id, header, manifest, cek_sealed, chunk_count, length, complete,
                created_at FROM attachments WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(AttachmentRecord {
        id: r.try_get(0)?,
        user: r.try_get(1)?,
        collection: r.try_get(2)?,
        doc_id: r.try_get(3)?,
        header: r.try_get(4)?,
        manifest: r.try_get(5)?,
        cek_sealed: r.try_get(6)?,
        chunk_count: from_column(r.try_get(7)?, "attachments.chunk_count")?,
        length: from_column(r.try_get(8)?, "attachments.length")?,
        complete: r.try_get(9)?,
        created_at: from_column(r.try_get(10)?, "attachments.created_at")?,
    }))
}

pub(super) async fn create(
    pool: &PgPool,
    a: &AttachmentRecord,
    doc_version: u64,
) -> Result<Option<AttachmentRecord>, StoreError> {
    let mut tx = pool.begin().await?;
    // The document as the caller checked it, locked (FOR SHARE) in the insert's transaction:
    // a push deleting or changing it waits for this commit and then deletes the attachment
    // with the document; one that got there first has changed the row, which then no longer
    // matches, and nothing is stored.
    let live = sqlx::query(
        "SELECT 1 FROM documents WHERE collection = $1 AND id = $2 AND NOT deleted AND version = $3 FOR SHARE",
    )
    .bind(&a.collection)
    .bind(&a.doc_id)
    .bind(to_column(doc_version, "documents.version")?)
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if !live {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO attachments (id, user_name, collection, doc_id, header, manifest, cek_sealed, chunk_count,
             length, complete, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, false, $10)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&a.id)
    .bind(&a.user)
    .bind(&a.collection)
    .bind(&a.doc_id)
    .bind(&a.header)
    .bind(&a.manifest)
    .bind(&a.cek_sealed)
    .bind(to_column(a.chunk_count, "attachments.chunk_count")?)
    .bind(to_column(a.length, "attachments.length")?)
    .bind(to_column(a.created_at, "attachments.created_at")?)
    .execute(&mut *tx)
    .await?;
    let stored = read(&mut tx, &a.id).await?.ok_or_else(|| StoreError::Backend("attachment vanished".to_owned()))?;
    tx.commit().await?;
    Ok(Some(stored))
}

pub(super) async fn get(pool: &PgPool, id: &str) -> Result<Option<(AttachmentRecord, Vec<u64>)>, StoreError> {
    let mut conn = pool.acquire().await?;
    let Some(a) = read(&mut conn, id).await? else { return Ok(None) };
    let idx: Vec<i64> = sqlx::query_scalar("SELECT idx FROM attachment_chunks WHERE attachment_id = $1 ORDER BY idx")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(Some((a, idx.into_iter().map(|i| from_column(i, "attachment_chunks.idx")).collect::<Result<_, _>>()?)))
}

pub(super) async fn put_chunk(
    pool: &PgPool,
    id: &str,
    index: u64,
    bytes: &[u8],
) -> Result<Option<(u64, bool)>, StoreError> {
    let mut tx = pool.begin().await?;
    // One upload's chunks are counted one transaction at a time, so the last one sees them
    // all; a push deleting the attachment waits for this one, or has already deleted it.
    let count: Option<i64> = sqlx::query_scalar("SELECT chunk_count FROM attachments WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(count) = count else { return Ok(None) };
    sqlx::query("INSERT INTO attachment_chunks (attachment_id, idx, bytes) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(to_column(index, "attachment_chunks.idx")?)
        .bind(bytes)
        .execute(&mut *tx)
        .await?;
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM attachment_chunks WHERE attachment_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let complete = held == count;
    if complete {
        sqlx::query("UPDATE attachments SET complete = true WHERE id = $1").bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Some((from_column(held, "attachment_chunks count")?, complete)))
}

pub(super) async fn chunk(pool: &PgPool, id: &str, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let bytes = sqlx::query_scalar("SELECT bytes FROM attachment_chunks WHERE attachment_id = $1 AND idx = $2")
        .bind(id)
        .bind(to_column(index, "attachment_chunks.idx")?)
        .fetch_optional(pool)
        .await?;
    Ok(bytes)
}

/// Deletes a document's attachments with their chunks (the document was deleted, or
/// re-created over its tombstone).
pub(super) async fn delete_for_document(
    conn: &mut PgConnection,
    collection: &str,
    doc_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM attachment_chunks WHERE attachment_id IN
             (SELECT id FROM attachments WHERE collection = $1 AND doc_id = $2)",
    )
    .bind(collection)
    .bind(doc_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM attachments WHERE collection = $1 AND doc_id = $2")
        .bind(collection)
        .bind(doc_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes these attachments of a document with their chunks (ids its list no longer names),
/// two statements. An attachment of the same id stored for another document is left alone.
pub(super) async fn delete_listed_off(
    conn: &mut PgConnection,
    collection: &str,
    doc_id: &str,
    ids: &[String],
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM attachment_chunks WHERE attachment_id IN
             (SELECT id FROM attachments WHERE id = ANY($3) AND collection = $1 AND doc_id = $2)",
    )
    .bind(collection)
    .bind(doc_id)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM attachments WHERE id = ANY($3) AND collection = $1 AND doc_id = $2")
        .bind(collection)
        .bind(doc_id)
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Replaces the index rows of these documents with their lists now (two statements), in the
/// push's transaction: (collection, id, list) each.
pub(super) async fn relist(conn: &mut PgConnection, documents: &[(&str, &str, &[String])]) -> Result<(), StoreError> {
    if documents.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM listed_attachments l USING unnest($1::text[], $2::text[]) AS t(c, i)
         WHERE l.collection = t.c AND l.doc_id = t.i",
    )
    .bind(documents.iter().map(|(c, _, _)| *c).collect::<Vec<_>>())
    .bind(documents.iter().map(|(_, i, _)| *i).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    let rows: Vec<(&str, &str, &str)> =
        documents.iter().flat_map(|(c, i, ids)| ids.iter().map(move |a| (a.as_str(), *c, *i))).collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO listed_attachments (attachment_id, collection, doc_id)
         SELECT a, c, i FROM unnest($1::text[], $2::text[], $3::text[]) AS t(a, c, i)",
    )
    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The live documents that list `attachment_id` (at most [`MAX_LISTING_DOCUMENTS`]).
pub(super) async fn documents_listing(
    pool: &PgPool,
    attachment_id: &str,
) -> Result<Vec<(String, String, StoredDoc)>, StoreError> {
    let rows = sqlx::query(
        "SELECT d.collection, d.id, d.owner, d.version, d.deleted, d.body, d.attachments
         FROM listed_attachments l JOIN documents d ON d.collection = l.collection AND d.id = l.doc_id
         WHERE l.attachment_id = $1 AND NOT d.deleted ORDER BY d.collection, d.id LIMIT $2",
    )
    .bind(attachment_id)
    .bind(i64::from(MAX_LISTING_DOCUMENTS))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let doc = stored_doc(r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?)?;
            Ok((r.try_get(0)?, r.try_get(1)?, doc))
        })
        .collect()
}
