//! Conflicts: the per-collection policy that decides one (server-wins, client-wins, an
//! app's merge), the conflicts table where the losing version waits, its resolution, and the
//! list of changes the server refused for good.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::engine::{now_ms, write_local};
use super::outbox::{self, db_err};
use super::state;
use crate::Error;

/// A merge of two versions of a document: (local, server) -> the version to keep.
pub type MergeFn = fn(&Map<String, Value>, &Map<String, Value>) -> Map<String, Value>;

/// What the device does when the server's copy of a document won over its own change.
#[derive(Debug, Clone, Copy, Default)]
pub enum ConflictPolicy {
    /// The server's version is kept on the device; the local change is kept in the
    /// conflicts table until resolved.
    #[default]
    ServerWins,
    /// The local change is sent again, rebased on the server's version (a new op with a new
    /// key); the server's version is kept in the conflicts table.
    ClientWins,
    /// The app merges: `merge(local, server)` is written here and sent, rebased on the
    /// server's version, and the server's version is kept in the conflicts table. When
    /// either side deleted the document there is nothing to merge, and the server wins.
    Merge(MergeFn),
}

#[allow(clippy::too_many_arguments)]
pub(super) fn keep_conflict(
    tx: &Connection,
    c: &str,
    id: &str,
    local_op: &str,
    local_body: Option<&str>,
    server_version: u64,
    server_body: Option<&str>,
    at: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO conflicts (collection, id, local_op, local_body, server_version, server_body, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (collection, id) DO UPDATE SET local_op = excluded.local_op, local_body = excluded.local_body,
           server_version = excluded.server_version, server_body = excluded.server_body, at_ms = excluded.at_ms",
        params![c, id, local_op, local_body, server_version as i64, server_body, at],
    )
    .map(|_| ())
}

/// A conflict kept for the app: the losing version of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// The local version that lost (`None`: the local change was a delete); under
    /// client-wins, the server's version that was overwritten.
    pub local: Option<Value>,
    /// The server's version number when the conflict was found.
    pub server_version: u64,
    /// When it was found, Unix milliseconds.
    pub at_ms: i64,
}

/// Which version a resolved conflict keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The version set aside: written again as a local change (a new op, rebased on the
    /// server's version).
    Local,
    /// What the document is now: the conflict is forgotten.
    Server,
}

/// A change the server refused for good, rolled back here and kept for the app.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// `put` or `delete`.
    pub op: String,
    /// The body that was refused (a put's).
    pub body: Option<Value>,
    /// Why: `forbidden`, `expired`, `too_large` or `bad_request`.
    pub status: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

pub(super) fn parse_json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// Every kept conflict, oldest first.
pub(crate) fn conflicts(conn: &Connection) -> rusqlite::Result<Vec<Conflict>> {
    let mut stmt = conn.prepare(
        "SELECT collection, id, local_body, server_version, at_ms FROM conflicts ORDER BY at_ms, collection, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Conflict {
            collection: r.get(0)?,
            id: r.get(1)?,
            local: parse_json(r.get(2)?),
            server_version: r.get::<_, i64>(3)? as u64,
            at_ms: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Every refused change, oldest first.
pub(crate) fn rejected(conn: &Connection) -> rusqlite::Result<Vec<Rejected>> {
    let mut stmt = conn.prepare("SELECT collection, id, op, body, status, at_ms FROM rejected ORDER BY seq")?;
    let rows = stmt.query_map([], |r| {
        Ok(Rejected {
            collection: r.get(0)?,
            id: r.get(1)?,
            op: r.get(2)?,
            body: parse_json(r.get(3)?),
            status: r.get(4)?,
            at_ms: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Resolves a kept conflict. Returns false if there was none for the document.
pub(crate) fn resolve(
    conn: &mut Connection,
    path: &Path,
    collection: &str,
    id: &str,
    keep: Keep,
) -> Result<bool, Error> {
    let tx = conn.transaction().map_err(db_err(path))?;
    let kept: Option<(String, Option<String>)> = tx
        .query_row(
            "SELECT local_op, local_body FROM conflicts WHERE collection = ?1 AND id = ?2",
            params![collection, id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err(path))?;
    let Some((local_op, local_body)) = kept else { return Ok(false) };
    if keep == Keep::Local {
        let at = now_ms();
        outbox::keep_base(&tx, collection, id).map_err(db_err(path))?;
        match (local_op.as_str(), local_body) {
            ("delete", _) | (_, None) => {
                tx.execute("DELETE FROM main.documents WHERE collection = ?1 AND id = ?2", params![collection, id])
                    .map_err(db_err(path))?;
                outbox::record(
                    &tx,
                    collection,
                    id,
                    outbox::Change::Delete,
                    at,
                    state::clock_offset_ms(&tx).map_err(db_err(path))?,
                )
                .map_err(db_err(path))?;
            }
            (_, Some(body)) => {
                write_local(&tx, collection, id, &body, at).map_err(db_err(path))?;
                outbox::record(
                    &tx,
                    collection,
                    id,
                    outbox::Change::Put,
                    at,
                    state::clock_offset_ms(&tx).map_err(db_err(path))?,
                )
                .map_err(db_err(path))?;
            }
        }
    }
    tx.execute("DELETE FROM conflicts WHERE collection = ?1 AND id = ?2", params![collection, id])
        .map_err(db_err(path))?;
    tx.commit().map_err(db_err(path))?;
    Ok(true)
}
