//! Documents: JSON objects in named collections, each with an id, a version (1 on create,
//! +1 on every write) and the time of its last write.
//!
//! Limits, checked before anything is written: collection names 1-64 characters from
//! `A-Z a-z 0-9 _ . -` starting with a letter or digit; ids 1-256 bytes of UTF-8 without
//! control characters; bodies JSON objects of at most 1 MiB (large content belongs in
//! attachments).

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use crate::Error;
use crate::changes::{ChangeKind, change};
use crate::sync::outbox;

pub use fieldvault_core::names::{MAX_DOCUMENT_BYTES, MAX_ID_BYTES};

/// One document. Its `Debug` leaves the body out (`[redacted]`): a decrypted document is
/// what the vault protects, and a stray `{:?}` in a log must not show it.
#[derive(Clone, PartialEq)]
pub struct Document {
    /// Its collection.
    pub collection: String,
    /// Its id within the collection.
    pub id: String,
    /// 1 when created, +1 on every write.
    pub version: u64,
    /// Time of the last write, Unix milliseconds.
    pub updated_at_ms: i64,
    /// The JSON object.
    pub body: Map<String, Value>,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("collection", &self.collection)
            .field("id", &self.id)
            .field("version", &self.version)
            .field("updated_at_ms", &self.updated_at_ms)
            .field("body", &"[redacted]")
            .finish()
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// Documents in id order.
    pub documents: Vec<Document>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<String>,
}

fn invalid(msg: String) -> Error {
    Error::InvalidDocument(msg)
}

/// Checks a collection name ([`fieldvault_core::names::check_collection`], the one rule the
/// vault, the outbox and the server share).
///
/// # Errors
/// [`Error::InvalidDocument`] naming the collection (shortened) and the rule.
pub fn check_collection(name: &str) -> Result<(), Error> {
    fieldvault_core::names::check_collection(name).map_err(|e| {
        let shown: String = name.chars().take(40).collect();
        invalid(format!("collection name {shown:?}: {e}"))
    })
}

/// Checks a document id ([`fieldvault_core::names::check_id`]).
///
/// # Errors
/// [`Error::InvalidDocument`] saying what the rule is.
pub fn check_id(id: &str) -> Result<(), Error> {
    fieldvault_core::names::check_id(id).map_err(|e| invalid(e.to_string()))
}

/// Parses a document body: at most [`MAX_DOCUMENT_BYTES`], valid JSON, an object in which
/// no object names a key twice ([`fieldvault_core::body`]). Key order is not kept.
///
/// # Errors
/// [`Error::InvalidDocument`] saying what is wrong (with the line and column for JSON).
pub fn parse_body(text: &str) -> Result<Map<String, Value>, Error> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(invalid(format!("document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}", text.len())));
    }
    match fieldvault_core::body::parse_unique_keys(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("a document must be a JSON object".into())),
        Err(e) => Err(invalid(format!("malformed JSON: {e}"))),
    }
}

/// Create, or replace the body and raise the version; returns the version.
fn upsert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (collection, id, version, updated_at, body) VALUES (?1, ?2, 1, ?3, ?4)
         ON CONFLICT (collection, id) DO UPDATE
         SET version = version + 1, updated_at = excluded.updated_at, body = excluded.body
         RETURNING version"
    )
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One account's open database and its memory-only collections.
pub(crate) struct AccountDb {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    pub(crate) memory: BTreeSet<String>,
    /// The server's clock minus this device's, once learned from a verified answer: new
    /// outbox keys are dated with it.
    pub(crate) clock_offset_ms: Option<i64>,
    /// The app's change subscriptions for this account.
    pub(crate) listeners: crate::changes::Listeners,
}

impl AccountDb {
    /// Wraps an open connection, reading the account's learned clock offset.
    pub(crate) fn new(conn: Connection, path: PathBuf) -> Result<AccountDb, Error> {
        let clock_offset_ms = crate::sync::state::clock_offset_ms(&conn).map_err(db_err(&path))?;
        Ok(AccountDb { conn, path, memory: BTreeSet::new(), clock_offset_ms, listeners: Default::default() })
    }
}

/// The documents of one account. Borrowed from an [`Unlocked`](crate::Unlocked) vault.
pub struct Documents<'a> {
    pub(crate) db: &'a mut AccountDb,
}

fn db_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |source| Error::Database { path: path.to_path_buf(), source }
}

fn row_to_doc(
    collection: &str,
    id: String,
    version: i64,
    updated_at_ms: i64,
    body: String,
    path: &Path,
) -> Result<Document, Error> {
    let body = match serde_json::from_str::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(Error::Database {
                path: path.to_path_buf(),
                source: rusqlite::Error::InvalidColumnType(4, "body".into(), rusqlite::types::Type::Text),
            });
        }
    };
    Ok(Document { collection: collection.to_owned(), id, version: version as u64, updated_at_ms, body })
}

impl Documents<'_> {
    fn table(&self, collection: &str) -> &'static str {
        if self.db.memory.contains(collection) { "mem.documents" } else { "main.documents" }
    }

    /// Declares `collection` memory-only for this session: its documents live in an attached
    /// in-memory database, never touch disk (no file, journal or temporary file) and are
    /// gone when the vault locks or closes. Declare before the first write.
    pub fn declare_memory_only(&mut self, collection: &str) -> Result<(), Error> {
        check_collection(collection)?;
        self.db.memory.insert(collection.to_owned());
        Ok(())
    }

    /// Writes a document (creating it, or replacing its body and raising its version).
    ///
    /// # Errors
    /// [`Error::InvalidDocument`] for a bad collection, id or body (nothing written).
    pub fn put(&mut self, collection: &str, id: &str, body: Map<String, Value>) -> Result<Document, Error> {
        check_collection(collection)?;
        check_id(id)?;
        let text = Value::Object(body).to_string();
        let body = parse_body(&text)?; // the size limit applies to what is stored
        let at = now_ms();
        let sql = upsert_sql(self.table(collection));
        let path = self.db.path.clone();
        let version: i64 = if self.db.memory.contains(collection) {
            self.db.conn.query_row(&sql, params![collection, id, at, text], |r| r.get(0)).map_err(db_err(&path))?
        } else {
            // The change and its outbox row commit together or not at all.
            let offset = self.db.clock_offset_ms;
            let tx = self.db.conn.transaction().map_err(db_err(&path))?;
            outbox::keep_base(&tx, collection, id).map_err(db_err(&path))?;
            let version = tx.query_row(&sql, params![collection, id, at, text], |r| r.get(0)).map_err(db_err(&path))?;
            outbox::record(&tx, collection, id, outbox::Change::Put, at, offset).map_err(db_err(&path))?;
            tx.commit().map_err(db_err(&path))?;
            version
        };
        self.db.listeners.notify(&[change(collection, id, ChangeKind::Put)]);
        Ok(Document {
            collection: collection.to_owned(),
            id: id.to_owned(),
            version: version as u64,
            updated_at_ms: at,
            body,
        })
    }

    /// Reads a document; `None` if there is none.
    pub fn get(&self, collection: &str, id: &str) -> Result<Option<Document>, Error> {
        check_collection(collection)?;
        check_id(id)?;
        let sql = format!(
            "SELECT version, updated_at, body FROM {} WHERE collection = ?1 AND id = ?2",
            self.table(collection)
        );
        let row = self
            .db
            .conn
            .query_row(&sql, params![collection, id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
            })
            .optional()
            .map_err(db_err(&self.db.path))?;
        row.map(|(v, at, body)| row_to_doc(collection, id.to_owned(), v, at, body, &self.db.path)).transpose()
    }

    /// Lists a collection in id order: up to `limit` documents (all when `None`) after the
    /// id `after`. The page's `next` is set only when more documents follow it.
    pub fn list(&self, collection: &str, limit: Option<NonZeroUsize>, after: Option<&str>) -> Result<Page, Error> {
        check_collection(collection)?;
        // One row more than asked for says whether another page exists; it is not returned.
        let limit = limit.map_or(-1, |l| i64::try_from(l.get()).unwrap_or(i64::MAX).saturating_add(1));
        let sql = format!(
            "SELECT id, version, updated_at, body FROM {} WHERE collection = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            self.table(collection)
        );
        let mut stmt = self.db.conn.prepare_cached(&sql).map_err(db_err(&self.db.path))?;
        let rows = stmt
            .query_map(params![collection, after.unwrap_or(""), limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
            })
            .map_err(db_err(&self.db.path))?;
        let mut documents = Vec::new();
        for row in rows {
            let (id, v, at, body) = row.map_err(db_err(&self.db.path))?;
            documents.push(row_to_doc(collection, id, v, at, body, &self.db.path)?);
        }
        let next = if limit >= 0 && documents.len() as i64 == limit {
            documents.pop();
            documents.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(Page { documents, next })
    }

    /// Deletes a document; `false` if there was none.
    pub fn delete(&mut self, collection: &str, id: &str) -> Result<bool, Error> {
        check_collection(collection)?;
        check_id(id)?;
        let table = self.table(collection);
        let path = self.db.path.clone();
        if table == "mem.documents" {
            let n = self
                .db
                .conn
                .execute("DELETE FROM mem.documents WHERE collection = ?1 AND id = ?2", params![collection, id]);
            let removed = n.map_err(db_err(&path))? > 0;
            if removed {
                self.db.listeners.notify(&[change(collection, id, ChangeKind::Delete)]);
            }
            return Ok(removed);
        }
        // The document and its attachments' rows go in one transaction; the files after it
        // (a crash in between leaves orphan files, removed on the next open).
        let tx = self.db.conn.transaction().map_err(db_err(&path))?;
        let mut ids = Vec::new();
        crate::sync::listing::forget_all(&tx, collection, id, &mut ids).map_err(db_err(&path))?;
        outbox::keep_base(&tx, collection, id).map_err(db_err(&path))?;
        let n = tx
            .execute("DELETE FROM main.documents WHERE collection = ?1 AND id = ?2", params![collection, id])
            .map_err(db_err(&path))?;
        if n > 0 {
            outbox::record(&tx, collection, id, outbox::Change::Delete, now_ms(), self.db.clock_offset_ms)
                .map_err(db_err(&path))?;
        }
        tx.commit().map_err(db_err(&path))?;
        if !ids.is_empty() {
            // The rows' deletion on disk for good before the files go: after a power cut a
            // document must not come back with attachment rows whose files are gone.
            crate::database::make_durable(&self.db.conn, &path)?;
        }
        for f in crate::attachments::files_of(&path, &ids) {
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Io { op: "remove", path: f, source: e });
                }
                _ => {}
            }
        }
        if n > 0 {
            self.db.listeners.notify(&[change(collection, id, ChangeKind::Delete)]);
        }
        Ok(n > 0)
    }

    /// Writes many documents in one transaction (all or nothing).
    pub fn put_many(
        &mut self,
        collection: &str,
        docs: impl IntoIterator<Item = (String, Map<String, Value>)>,
    ) -> Result<usize, Error> {
        check_collection(collection)?;
        let path = self.db.path.clone();
        let table = self.table(collection);
        let memory = self.db.memory.contains(collection);
        let offset = self.db.clock_offset_ms;
        let listening = self.db.listeners.any();
        let mut changed = Vec::new();
        let tx = self.db.conn.transaction().map_err(db_err(&path))?;
        let mut n = 0;
        {
            let sql = upsert_sql(table);
            let mut stmt = tx.prepare_cached(&sql).map_err(db_err(&path))?;
            let at = now_ms();
            for (id, body) in docs {
                check_id(&id)?;
                let text = Value::Object(body).to_string();
                if text.len() > MAX_DOCUMENT_BYTES {
                    return Err(invalid(format!(
                        "document {id:?} is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                        text.len()
                    )));
                }
                if !memory {
                    outbox::keep_base(&tx, collection, &id).map_err(db_err(&path))?;
                }
                stmt.query_row(params![collection, id, at, text], |r| r.get::<_, i64>(0)).map_err(db_err(&path))?;
                if !memory {
                    outbox::record(&tx, collection, &id, outbox::Change::Put, at, offset).map_err(db_err(&path))?;
                }
                if listening {
                    changed.push(change(collection, &id, ChangeKind::Put));
                }
                n += 1;
            }
        }
        tx.commit().map_err(db_err(&path))?;
        self.db.listeners.notify(&changed);
        Ok(n)
    }
}
