//! Attachment metadata and ciphertext chunks in the SQLCipher store (so the chunks are
//! encrypted twice at rest: by the client's format and by the store).

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::storage::{AttachmentRecord, StoreError, from_column, to_column};

/// Version 2 tables for attachments.
pub(super) const SCHEMA: &str = "
    CREATE TABLE attachments (
        id          TEXT PRIMARY KEY,
        user_name   TEXT NOT NULL,
        collection  TEXT NOT NULL,
        doc_id      TEXT NOT NULL,
        header      BLOB NOT NULL,
        manifest    BLOB NOT NULL,
        wrapped_cek BLOB NOT NULL,
        chunk_count INTEGER NOT NULL,
        length      INTEGER NOT NULL,
        complete    INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX attachments_by_document ON attachments (collection, doc_id);
    CREATE TABLE attachment_chunks (
        attachment_id TEXT NOT NULL REFERENCES attachments(id),
        idx           INTEGER NOT NULL,
        bytes         BLOB NOT NULL,
        PRIMARY KEY (attachment_id, idx)
    ) WITHOUT ROWID;
";

fn read(c: &Connection, id: &str) -> Result<Option<AttachmentRecord>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT id, user_name, collection, doc_id, header, manifest, wrapped_cek, chunk_count, length, complete,
                created_at FROM attachments WHERE id = ?1",
    )?;
    let mut rows = statement.query([id])?;
    let Some(r) = rows.next()? else { return Ok(None) };
    Ok(Some(AttachmentRecord {
        id: r.get(0)?,
        user: r.get(1)?,
        collection: r.get(2)?,
        doc_id: r.get(3)?,
        header: r.get(4)?,
        manifest: r.get(5)?,
        wrapped_cek: r.get(6)?,
        chunk_count: from_column(r.get(7)?, "attachments.chunk_count")?,
        length: from_column(r.get(8)?, "attachments.length")?,
        complete: r.get(9)?,
        created_at: from_column(r.get(10)?, "attachments.created_at")?,
    }))
}

pub(super) fn create(
    c: &mut Connection,
    a: &AttachmentRecord,
    doc_version: u64,
) -> Result<Option<AttachmentRecord>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The document as the caller checked it, in the insert's transaction (the store's one
    // writer): a push that deleted or changed it since has won, and nothing is stored.
    let live: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM documents WHERE collection = ?1 AND id = ?2 AND deleted = 0 AND version = ?3)",
        params![a.collection, a.doc_id, to_column(doc_version, "documents.version")?],
        |r| r.get(0),
    )?;
    if !live {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO attachments (id, user_name, collection, doc_id, header, manifest, wrapped_cek, chunk_count,
             length, complete, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10)
         ON CONFLICT (id) DO NOTHING",
        params![
            a.id,
            a.user,
            a.collection,
            a.doc_id,
            a.header,
            a.manifest,
            a.wrapped_cek,
            to_column(a.chunk_count, "attachments.chunk_count")?,
            to_column(a.length, "attachments.length")?,
            to_column(a.created_at, "attachments.created_at")?
        ],
    )?;
    let stored = read(&tx, &a.id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    tx.commit()?;
    Ok(Some(stored))
}

pub(super) fn get(c: &mut Connection, id: &str) -> Result<Option<(AttachmentRecord, Vec<u64>)>, StoreError> {
    let Some(a) = read(c, id)? else { return Ok(None) };
    let received: Vec<i64> = c
        .prepare_cached("SELECT idx FROM attachment_chunks WHERE attachment_id = ?1 ORDER BY idx")?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let received = received.into_iter().map(|i| from_column(i, "attachment_chunks.idx")).collect::<Result<_, _>>()?;
    Ok(Some((a, received)))
}

pub(super) fn put_chunk(c: &mut Connection, id: &str, index: u64, bytes: &[u8]) -> Result<(u64, bool), StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO attachment_chunks (attachment_id, idx, bytes) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![id, to_column(index, "attachment_chunks.idx")?, bytes],
    )?;
    let held: i64 =
        tx.query_row("SELECT count(*) FROM attachment_chunks WHERE attachment_id = ?1", [id], |r| r.get(0))?;
    let count: i64 = tx.query_row("SELECT chunk_count FROM attachments WHERE id = ?1", [id], |r| r.get(0))?;
    let complete = held == count;
    if complete {
        tx.execute("UPDATE attachments SET complete = 1 WHERE id = ?1", [id])?;
    }
    tx.commit()?;
    Ok((from_column(held, "attachment_chunks count")?, complete))
}

pub(super) fn chunk(c: &mut Connection, id: &str, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let index = to_column(index, "attachment_chunks.idx")?;
    Ok(c.prepare_cached("SELECT bytes FROM attachment_chunks WHERE attachment_id = ?1 AND idx = ?2")?
        .query_row(params![id, index], |r| r.get(0))
        .optional()?)
}

/// Deletes a document's attachments with their chunks (the document was deleted).
pub(super) fn delete_for_document(tx: &Transaction<'_>, collection: &str, doc_id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM attachment_chunks WHERE attachment_id IN
             (SELECT id FROM attachments WHERE collection = ?1 AND doc_id = ?2)",
    )?
    .execute([collection, doc_id])?;
    tx.prepare_cached("DELETE FROM attachments WHERE collection = ?1 AND doc_id = ?2")?
        .execute([collection, doc_id])?;
    Ok(())
}
