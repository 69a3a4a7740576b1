//! Migration: an existing plaintext SQLite database imported into an account's encrypted
//! database with no row lost, then removed.
//!
//! Each table with an `id` column becomes a collection of the same name and each row a
//! document of its other columns (a text column holding a JSON object stays an object).
//! Any other shape (no `id`, a NULL or binary id, duplicate ids, binary data, a virtual
//! table, a table name that is not a collection name) refuses the whole import before
//! anything is written. The import is one transaction; counts are checked before it
//! commits; only then is the plaintext file (and its -wal, -shm, -journal) removed. A kill
//! midway leaves the plaintext file in place and no half import. Running it again after a
//! kill between the commit and the removal finds every row already imported, identical,
//! and finishes by removing the file.

use std::collections::BTreeMap;
use std::path::Path;

use fieldvault_core::AccountName;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Map, Value};

use crate::database::{DB_FILE, journal_path, suffixed, wal_path};
use crate::documents::{MAX_DOCUMENT_BYTES, check_collection, check_id};
use crate::{Error, Unlocked};

/// What a migration imported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migration {
    /// Rows imported per collection (rows found already imported count too).
    pub collections: BTreeMap<String, u64>,
    /// Schema objects that hold no rows and were not imported (views, indexes, triggers).
    pub not_imported: Vec<String>,
}

fn refuse(msg: String) -> Error {
    Error::Migration(msg)
}

fn src_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |source| Error::Database { path: path.to_path_buf(), source }
}

struct Table {
    name: String,
    columns: Vec<String>,
    rows: u64,
}

/// Reads the plaintext database's shape and refuses anything that is not importable.
fn plan(src: &Connection, path: &Path) -> Result<(Vec<Table>, Vec<String>), Error> {
    let mut stmt = src
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(src_err(path))?;
    let objects: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(src_err(path))?
        .collect::<Result<_, _>>()
        .map_err(src_err(path))?;
    let mut tables = Vec::new();
    let mut not_imported = Vec::new();
    for (kind, name, sql) in objects {
        if kind != "table" {
            not_imported.push(format!("{kind} {name}"));
            continue;
        }
        if sql.to_ascii_uppercase().starts_with("CREATE VIRTUAL TABLE") {
            return Err(refuse(format!("table {name:?} is a virtual table; only plain tables can be imported")));
        }
        check_collection(&name).map_err(|_| refuse(format!("table name {name:?} is not a valid collection name")))?;
        let mut info =
            src.prepare(&format!("PRAGMA table_info(\"{}\")", name.replace('"', "\"\""))).map_err(src_err(path))?;
        let columns: Vec<String> = info
            .query_map([], |r| r.get::<_, String>(1))
            .map_err(src_err(path))?
            .collect::<Result<_, _>>()
            .map_err(src_err(path))?;
        if !columns.iter().any(|c| c == "id") {
            return Err(refuse(format!("table {name:?} has no `id` column; every table must have one")));
        }
        let q = quote(&name);
        let rows = src
            .query_row(&format!("SELECT count(*) FROM {q}"), [], |r| r.get::<_, i64>(0))
            .map_err(src_err(path))? as u64;
        let distinct = src
            .query_row(&format!("SELECT count(DISTINCT id) FROM {q} WHERE id IS NOT NULL"), [], |r| r.get::<_, i64>(0))
            .map_err(src_err(path))? as u64;
        if distinct != rows {
            return Err(refuse(format!(
                "table {name:?} has NULL or duplicate ids ({rows} rows, {distinct} distinct ids)"
            )));
        }
        tables.push(Table { name, columns, rows });
    }
    Ok((tables, not_imported))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One row as (id, document body).
fn row_to_doc(table: &str, columns: &[String], row: &rusqlite::Row<'_>) -> Result<(String, Map<String, Value>), Error> {
    let mut id = None;
    let mut body = Map::new();
    for (i, col) in columns.iter().enumerate() {
        let v = row.get_ref(i).map_err(|e| refuse(format!("table {table:?} column {col:?}: {e}")))?;
        let value = match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::from(n),
            ValueRef::Real(x) => serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(|| refuse(format!("table {table:?} column {col:?} holds a non-finite number")))?,
            ValueRef::Text(t) => {
                let s = std::str::from_utf8(t)
                    .map_err(|_| refuse(format!("table {table:?} column {col:?} holds text that is not UTF-8")))?;
                match serde_json::from_str::<Value>(s) {
                    Ok(obj @ Value::Object(_)) => obj,
                    _ => Value::String(s.to_owned()),
                }
            }
            ValueRef::Blob(_) => {
                return Err(refuse(format!(
                    "table {table:?} column {col:?} holds binary data; import it as attachments instead"
                )));
            }
        };
        if col == "id" {
            id = Some(match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                other => return Err(refuse(format!("table {table:?}: id {other} is neither text nor a number"))),
            });
        } else {
            body.insert(col.clone(), value);
        }
    }
    let id = id.expect("the id column was checked");
    check_id(&id).map_err(|e| refuse(format!("table {table:?}: {e}")))?;
    Ok((id, body))
}

impl Unlocked {
    /// Imports the plaintext SQLite database at `plain` into `account`, then removes it.
    /// `progress(done, total)` is called as rows are imported.
    ///
    /// # Errors
    /// [`Error::Migration`] for a shape that cannot be imported, a row that conflicts with a
    /// document already in the vault, or a file that is not plaintext SQLite: nothing is
    /// written and the file stays. [`Error::NoSpace`] before anything is written.
    pub fn migrate_from(
        &mut self,
        account: &AccountName,
        plain: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Migration, Error> {
        let plain =
            plain.canonicalize().map_err(|source| Error::Io { op: "open", path: plain.to_path_buf(), source })?;
        if plain.starts_with(self.vault.dir().canonicalize().unwrap_or_default()) {
            return Err(refuse("the file to import is inside the vault".into()));
        }
        let mut head = [0u8; 16];
        let n = std::io::Read::read(
            &mut std::fs::File::open(&plain).map_err(|source| Error::Io { op: "open", path: plain.clone(), source })?,
            &mut head,
        )
        .map_err(|source| Error::Io { op: "read", path: plain.clone(), source })?;
        if n < 16 || &head != b"SQLite format 3\0" {
            return Err(refuse(format!("{} is not a plaintext SQLite database", plain.display())));
        }
        let src =
            Connection::open_with_flags(&plain, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(src_err(&plain))?;
        let (tables, not_imported) = plan(&src, &plain)?;
        let size = std::fs::metadata(&plain).map(|m| m.len()).unwrap_or(0);
        let target = self.vault.account_dir(account).join(DB_FILE);
        self.vault.disk.ensure_free_space(&target, size.saturating_mul(2) + (1 << 20))?;
        let total: u64 = tables.iter().map(|t| t.rows).sum();
        let mut report = Migration { collections: BTreeMap::new(), not_imported };

        let disk = self.vault.disk.clone();
        let docs = self.documents(account)?;
        let db_path = docs.db.path.clone();
        let derr = |source| Error::Database { path: db_path.clone(), source };
        let tx = docs.db.conn.transaction().map_err(derr)?;
        let mut done = 0u64;
        for t in &tables {
            let cols = t.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
            let mut read = src.prepare(&format!("SELECT {cols} FROM {}", quote(&t.name))).map_err(src_err(&plain))?;
            let mut rows = read.query([]).map_err(src_err(&plain))?;
            let mut existing =
                tx.prepare_cached("SELECT body FROM documents WHERE collection = ?1 AND id = ?2").map_err(derr)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO documents (collection, id, version, updated_at, body) VALUES (?1, ?2, 1, ?3, ?4)",
                )
                .map_err(derr)?;
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            while let Some(row) = rows.next().map_err(src_err(&plain))? {
                let (id, body) = row_to_doc(&t.name, &t.columns, row)?;
                let text = Value::Object(body).to_string();
                if text.len() > MAX_DOCUMENT_BYTES {
                    return Err(refuse(format!(
                        "table {:?} row {id:?} is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                        t.name,
                        text.len()
                    )));
                }
                match existing.query_row(params![t.name, id], |r| r.get::<_, String>(0)).optional().map_err(derr)? {
                    None => {
                        insert.execute(params![t.name, id, at, text]).map_err(derr)?;
                    }
                    // Imported before a kill that came after the commit: identical, fine.
                    Some(old)
                        if serde_json::from_str::<Value>(&old).ok() == serde_json::from_str::<Value>(&text).ok() => {}
                    Some(_) => {
                        return Err(refuse(format!(
                            "collection {:?} already holds a different document {id:?}; nothing was imported",
                            t.name
                        )));
                    }
                }
                done += 1;
                if done.is_multiple_of(1000) || done == total {
                    progress(done, total);
                }
            }
            report.collections.insert(t.name.clone(), t.rows);
        }
        // Every source row must now be a document before anything is committed.
        for t in &tables {
            let mut count = tx.prepare_cached("SELECT count(*) FROM documents WHERE collection = ?1").map_err(derr)?;
            let have = count.query_row(params![t.name], |r| r.get::<_, i64>(0)).map_err(derr)? as u64;
            if have < t.rows {
                return Err(refuse(format!(
                    "collection {:?} has {have} documents after import, expected {}",
                    t.name, t.rows
                )));
            }
        }
        // A crash point of its own (crash tests): everything imported, nothing committed.
        disk.step("commit", &db_path)?;
        tx.commit().map_err(derr)?;
        // On disk for good before the plaintext copy goes (a commit alone is not synced).
        crate::database::make_durable(&docs.db.conn, &db_path)?;
        drop(src);
        for p in [journal_path(&plain), wal_path(&plain), suffixed(&plain, "-shm"), plain.clone()] {
            disk.remove_file(&p)?;
        }
        progress(total, total);
        Ok(report)
    }
}
