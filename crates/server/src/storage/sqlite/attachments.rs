//! Attachment metadata and ciphertext chunks in the SQLCipher store (so the chunks are
//! encrypted twice at rest: by the client's format and by the store; the CEK is sealed under
//! a key derived from the store key before it reaches the store), and the index of which
//! documents list which attachment ids (ADR 0008).

use fieldvault_core::protocol::sync::StoredDoc;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::storage::{AttachmentRecord, MAX_LISTING_DOCUMENTS, StoreError, from_column, stored_doc, to_column};

/// Version 2 tables for attachments (the CEK as the uploading device wrapped it).
pub(super) const SCHEMA_V2: &str = "
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

/// Version 4 (ADR 0008): the CEK sealed by the server (`cek_sealed`) instead of wrapped by the
/// uploading device, which no other device could use: the attachments stored before are
/// deleted with their chunks (their devices upload them again; their ids are free). Each
/// document gains its attachment list, and `listed_attachments` indexes which documents
/// list an id (kept with the list, in each push's transaction).
///
/// `attachment_chunks` is a rowid table with its key in a separate index, not `WITHOUT
/// ROWID` as in version 2: in a `WITHOUT ROWID` B-tree the whole row is the key, so every
/// key comparison of a seek and every step of a range scan read a chunk's 64 KiB from its
/// overflow pages (each decrypted and HMAC-checked), and each chunk request (which counts
/// and lists the chunks received) read every chunk stored so far: 100 s of server CPU for a
/// 64 MiB upload (`docs/performance.md`, "Attachment sync"). The index holds only
/// (attachment_id, idx); the bytes are read only when a chunk is served.
pub(super) const SCHEMA_V4: &str = "
    DROP TABLE attachment_chunks;
    DROP TABLE attachments;
    CREATE TABLE attachments (
        id          TEXT PRIMARY KEY,
        user_name   TEXT NOT NULL,
        collection  TEXT NOT NULL,
        doc_id      TEXT NOT NULL,
        header      BLOB NOT NULL,
        manifest    BLOB NOT NULL,
        cek_sealed  BLOB NOT NULL,
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
    );
    ALTER TABLE documents ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE listed_attachments (
        attachment_id TEXT NOT NULL,
        collection    TEXT NOT NULL,
        doc_id        TEXT NOT NULL,
        PRIMARY KEY (attachment_id, collection, doc_id)
    ) WITHOUT ROWID;
    CREATE INDEX listed_attachments_by_document ON listed_attachments (collection, doc_id);
";

fn read(c: &Connection, id: &str) -> Result<Option<AttachmentRecord>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT id, user_name, collection, doc_id, header, manifest, cek_sealed, chunk_count, length, complete,
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
        cek_sealed: r.get(6)?,
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
        "INSERT INTO attachments (id, user_name, collection, doc_id, header, manifest, cek_sealed, chunk_count,
             length, complete, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10)
         ON CONFLICT (id) DO NOTHING",
        params![
            a.id,
            a.user,
            a.collection,
            a.doc_id,
            a.header,
            a.manifest,
            a.cek_sealed,
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

pub(super) fn put_chunk(
    c: &mut Connection,
    id: &str,
    index: u64,
    bytes: &[u8],
) -> Result<Option<(u64, bool)>, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let count: Option<i64> =
        tx.query_row("SELECT chunk_count FROM attachments WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    let Some(count) = count else { return Ok(None) };
    tx.execute(
        "INSERT INTO attachment_chunks (attachment_id, idx, bytes) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![id, to_column(index, "attachment_chunks.idx")?, bytes],
    )?;
    let held: i64 =
        tx.query_row("SELECT count(*) FROM attachment_chunks WHERE attachment_id = ?1", [id], |r| r.get(0))?;
    let complete = held == count;
    if complete {
        tx.execute("UPDATE attachments SET complete = 1 WHERE id = ?1", [id])?;
    }
    tx.commit()?;
    Ok(Some((from_column(held, "attachment_chunks count")?, complete)))
}

pub(super) fn chunk(c: &mut Connection, id: &str, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let index = to_column(index, "attachment_chunks.idx")?;
    Ok(c.prepare_cached("SELECT bytes FROM attachment_chunks WHERE attachment_id = ?1 AND idx = ?2")?
        .query_row(params![id, index], |r| r.get(0))
        .optional()?)
}

/// Deletes a document's attachments with their chunks (the document was deleted, or
/// re-created over its tombstone).
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

/// Deletes these attachments of a document with their chunks (ids its list no longer names).
/// An attachment of the same id stored for another document is left alone.
pub(super) fn delete_listed_off(
    tx: &Transaction<'_>,
    collection: &str,
    doc_id: &str,
    ids: &[String],
) -> rusqlite::Result<()> {
    for id in ids {
        let owned = tx
            .prepare_cached("SELECT 1 FROM attachments WHERE id = ?1 AND collection = ?2 AND doc_id = ?3")?
            .exists([id, collection, doc_id])?;
        if owned {
            tx.prepare_cached("DELETE FROM attachment_chunks WHERE attachment_id = ?1")?.execute([id])?;
            tx.prepare_cached("DELETE FROM attachments WHERE id = ?1")?.execute([id])?;
        }
    }
    Ok(())
}

/// Replaces the index rows of a document with its list now (in the push's transaction).
pub(super) fn relist(tx: &Transaction<'_>, collection: &str, doc_id: &str, ids: &[String]) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM listed_attachments WHERE collection = ?1 AND doc_id = ?2")?
        .execute([collection, doc_id])?;
    for id in ids {
        tx.prepare_cached("INSERT INTO listed_attachments (attachment_id, collection, doc_id) VALUES (?1, ?2, ?3)")?
            .execute([id, collection, doc_id])?;
    }
    Ok(())
}

/// The live documents that list `attachment_id` (at most [`MAX_LISTING_DOCUMENTS`]).
pub(super) fn documents_listing(
    c: &mut Connection,
    attachment_id: &str,
) -> Result<Vec<(String, String, StoredDoc)>, StoreError> {
    let tx = c.transaction()?;
    let mut statement = tx.prepare_cached(
        "SELECT d.collection, d.id, d.owner, d.version, d.deleted, d.body, d.attachments
         FROM listed_attachments l JOIN documents d ON d.collection = l.collection AND d.id = l.doc_id
         WHERE l.attachment_id = ?1 AND d.deleted = 0 ORDER BY d.collection, d.id LIMIT ?2",
    )?;
    let mut rows = statement.query(params![attachment_id, MAX_LISTING_DOCUMENTS])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let body: String = r.get(5)?;
        let list: String = r.get(6)?;
        out.push((r.get(0)?, r.get(1)?, stored_doc(r.get(2)?, r.get(3)?, r.get(4)?, &body, &list)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::super::SqliteStore;

    #[tokio::test]
    async fn counting_and_listing_chunks_reads_only_their_index_never_their_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&tmp.path().join("server.db"), &Zeroizing::new([5u8; 32])).expect("opens");
        let plans: Vec<String> = store
            .run(|c| {
                let mut plans = Vec::new();
                for sql in [
                    "SELECT count(*) FROM attachment_chunks WHERE attachment_id = 'a'",
                    "SELECT idx FROM attachment_chunks WHERE attachment_id = 'a' ORDER BY idx",
                ] {
                    let plan: Vec<String> = c
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                        .query_map([], |r| r.get(3))?
                        .collect::<Result<_, _>>()?;
                    plans.push(plan.join("; "));
                }
                Ok(plans)
            })
            .await
            .expect("plans");
        for plan in plans {
            assert!(plan.contains("USING COVERING INDEX"), "a scan that reads chunk bytes: {plan}");
        }
    }
}
