//! Migration: an existing plaintext SQLite database imported into an account's encrypted
//! database with no row lost, then removed.
//!
//! Each table with an `id` column becomes a collection of the same name and each row a
//! document of its other columns. A text cell holding a JSON object becomes that object only
//! when parsing it changes nothing (no key twice in any object, every number read back as
//! written: see [`parses_as_written`]); otherwise it stays its text, as any other text does.
//! Any other shape (no `id`, a NULL or binary id, duplicate ids, binary data, text that is
//! not UTF-8, a virtual table, a table name that is not a collection name) refuses the whole
//! import before anything is committed. The import is one transaction; counts are checked before it
//! commits; only then is the plaintext file (and its -wal, -shm, -journal) removed. A kill
//! midway leaves the plaintext file in place and no half import. Running it again after a
//! kill between the commit and the removal finds every row already imported, identical,
//! and finishes by removing the file.

use std::collections::{BTreeMap, HashSet};
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
    /// Text cells holding a JSON object that were imported as their text, because parsing
    /// them would have changed them (a key twice, a number that does not read back as written).
    pub kept_as_text: Vec<KeptAsText>,
}

/// A text cell holding a JSON object that was imported as its text (a string) rather than as
/// an object, because parsing it would have changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptAsText {
    /// The collection (the table's name).
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// The column, now the document's field.
    pub column: String,
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

/// What a text cell holds.
enum TextCell {
    /// A JSON object that parsing left as written.
    Object(Value),
    /// A JSON object that parsing would change: kept as its text.
    ObjectNotAsWritten,
    /// Anything else: kept as its text.
    Text,
}

/// What a text cell holds: a JSON object only when it parses to exactly what it says
/// ([`parses_as_written`] has the rule).
fn text_cell(text: &str) -> TextCell {
    match serde_json::from_str::<Value>(text) {
        Ok(object @ Value::Object(_)) if parses_as_written(text) => TextCell::Object(object),
        Ok(Value::Object(_)) => TextCell::ObjectNotAsWritten,
        _ => TextCell::Text,
    }
}

/// Whether parsing `json` (valid JSON) into a [`Value`] keeps everything it says: no object
/// names a key twice (the parser would keep one value; keys compare after unescaping, so
/// `"a"` and `"\u0061"` are the same key), and every number reads back as written
/// ([`number_as_written`]). Key order and white space are not kept, and need not be: the
/// order of an object's keys carries no meaning in JSON.
fn parses_as_written(json: &str) -> bool {
    // Per open object the keys seen so far; `None` for an open array.
    let mut open: Vec<Option<HashSet<String>>> = Vec::new();
    let mut key_next = false;
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                open.push(Some(HashSet::new()));
                key_next = true;
            }
            b'[' => open.push(None),
            b'}' | b']' => {
                open.pop();
            }
            b',' => key_next = matches!(open.last(), Some(Some(_))),
            b'"' => {
                let end = string_end(bytes, i);
                if key_next {
                    key_next = false;
                    let Ok(key) = serde_json::from_str::<String>(&json[i..end]) else { return false };
                    if let Some(Some(keys)) = open.last_mut()
                        && !keys.insert(key)
                    {
                        return false;
                    }
                }
                i = end;
                continue;
            }
            b'-' | b'0'..=b'9' => {
                let len = bytes[i..]
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .unwrap_or(bytes.len() - i);
                if !number_as_written(&json[i..i + len]) {
                    return false;
                }
                i += len;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// The index just past the string that opens with the quote at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Whether a JSON number, parsed and written again, is the number written: an integer stays
/// an integer of the same value (serde_json holds one exactly only within 64 bits: past them
/// it becomes an approximate float, and `-0` becomes the float `-0.0`), and a number with a
/// fraction or an exponent is written again as the same decimal value (`1.0` stays `1.0`,
/// `1.50` becomes `1.5`, `2e3` becomes `2000.0`; `0.10000000000000000001` would become `0.1`,
/// `1e-400` would become `0.0`). Out of range (`1e400`) the whole text does not parse.
fn number_as_written(token: &str) -> bool {
    let Ok(n) = serde_json::from_str::<serde_json::Number>(token) else { return false };
    if !token.contains(['.', 'e', 'E']) {
        return n.is_i64() || n.is_u64();
    }
    let written = n.to_string();
    n.is_f64() && decimal(token).is_some_and(|d| decimal(&written) == Some(d))
}

/// A JSON number's sign, significant digits and the power of ten of its last significant
/// digit: `-1.50e2` is `(true, "15", 1)`, `0.0` is `(false, "", 0)`.
fn decimal(token: &str) -> Option<(bool, String, i64)> {
    let (negative, unsigned) = match token.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    let trimmed = all.trim_end_matches('0');
    let mut power = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
    power = power.checked_add(i64::try_from(all.len() - trimmed.len()).ok()?)?;
    let digits = trimmed.trim_start_matches('0');
    if digits.is_empty() {
        power = 0;
    }
    Some((negative, digits.to_owned(), power))
}

/// One source row as a document.
struct RowDocument {
    id: String,
    body: Map<String, Value>,
    /// The columns whose JSON object was kept as text.
    kept_as_text: Vec<String>,
}

fn row_to_doc(table: &str, columns: &[String], row: &rusqlite::Row<'_>) -> Result<RowDocument, Error> {
    let mut id = None;
    let mut body = Map::new();
    let mut kept = Vec::new();
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
                // An id is its text; a field is a JSON object only when that loses nothing.
                match if col == "id" { TextCell::Text } else { text_cell(s) } {
                    TextCell::Object(object) => object,
                    TextCell::ObjectNotAsWritten => {
                        kept.push(col.clone());
                        Value::String(s.to_owned())
                    }
                    TextCell::Text => Value::String(s.to_owned()),
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
    Ok(RowDocument { id, body, kept_as_text: kept })
}

impl Unlocked {
    /// Imports the plaintext SQLite database at `plain` into `account`, then removes it.
    /// `progress(done, total)` is called as rows are imported.
    ///
    /// Each row becomes a document of its columns but `id`. A text cell holding a JSON
    /// object becomes that object only when parsing it changes nothing (no key twice in any
    /// object, every number read back as written: a big integer, `-0` or
    /// `0.10000000000000000001` would change); otherwise it is imported as its text and
    /// listed in [`Migration::kept_as_text`].
    ///
    /// # Errors
    /// [`Error::Migration`] for a shape that cannot be imported (binary data and text that is
    /// not UTF-8 included), a row that conflicts with a document already in the vault, or a
    /// file that is not plaintext SQLite: nothing is written and the file stays. [`Error::NoSpace`] before anything is written.
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
        let mut report = Migration { collections: BTreeMap::new(), not_imported, kept_as_text: Vec::new() };

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
                let RowDocument { id, body, kept_as_text } = row_to_doc(&t.name, &t.columns, row)?;
                report.kept_as_text.extend(kept_as_text.into_iter().map(|column| KeptAsText {
                    collection: t.name.clone(),
                    id: id.clone(),
                    column,
                }));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_numbers_inside_strings_are_text() {
        let json = r#"{"s":"\",\"s\":1e400, -0 \\","t":["{\"t\":1,\"t\":2}"],"u":"\u0073"}"#;
        assert!(serde_json::from_str::<Value>(json).is_ok());
        assert!(parses_as_written(json));
    }

    #[test]
    fn a_key_may_repeat_across_objects_but_not_within_one() {
        assert!(parses_as_written(r#"{"a":{"a":1},"b":[{"a":1},{"a":2}],"c":{"a":{"a":null}}}"#));
        assert!(!parses_as_written(r#"{"a":{"b":1},"c":2,"a":3}"#), "after a nested object closes");
        assert!(!parses_as_written(r#"{"a":[1,{"b":1,"b":1}]}"#), "inside an array");
    }

    #[test]
    fn numbers_compare_by_decimal_value_sign_and_kind() {
        assert_eq!(decimal("-1.50e2"), Some((true, "15".to_owned(), 1)));
        assert_eq!(decimal("0.000"), Some((false, String::new(), 0)));
        assert_eq!(decimal("1200"), decimal("1.2E+3"));
        for same in ["0", "-1", "1.0", "-0.0", "0.5", "1e-7", "5e-324", "1.7976931348623157e308", "9007199254740992.0"]
        {
            assert!(number_as_written(same), "{same}");
        }
        // 2^53 + 1 has no f64: it reads back as 2^53.
        for changed in ["-0", "18446744073709551616", "9007199254740993.0", "1e-400", "1e99999999999999999999"] {
            assert!(!number_as_written(changed), "{changed}");
        }
    }
}
