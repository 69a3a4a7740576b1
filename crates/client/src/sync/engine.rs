//! The push side of the engine, plan then execute: what the next push sends, and what its
//! answers change here, applied in one SQLCipher transaction; and the document writes the
//! push, the pull ([`super::pull`]) and conflicts ([`super::conflicts`]) share.
//!
//! The pure part ([`classify`]) takes an answer and returns what it means; [`prepare_push`]
//! and [`apply_push`] read the local facts and write the result. Nothing here does IO other
//! than the database, so the whole cycle is tested without a network.

use std::path::Path;

use fieldvault_core::protocol::sync::{OpKind, OpResult, OpStatus, PushOp};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use serde_json::value::RawValue;

use super::conflicts::{ConflictPolicy, keep_conflict};
use super::listing;
use super::outbox::{self, db_err};
use super::state;
use crate::Error;
use crate::changes::{ChangeKind, change};

/// Largest push body, in bytes (SPEC section 5: 4 MiB). Batches are cut below it.
pub const MAX_PUSH_BYTES: usize = 4 << 20;
/// Most ops in one push (the server's limit).
pub const MAX_PUSH_OPS: usize = fieldvault_core::protocol::sync::MAX_PUSH_OPS;

/// How one conflict ends under the collection's policy.
enum Resolution {
    /// The server's version is kept here.
    Server,
    /// The local version is sent again.
    Local,
    /// This merge of both is written here and sent.
    Merged(String),
}

/// One op in flight, as frozen when it was first sent: its body is the document's JSON text
/// as stored, sent as it is (never parsed and written again).
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub(crate) seq: i64,
    pub(crate) op: PushOp<Box<RawValue>>,
}

impl InFlight {
    /// The body's JSON text, for a put.
    pub(crate) fn body_text(&self) -> Option<String> {
        self.op.body.as_ref().map(|b| b.get().to_owned())
    }
}

/// What one answer means for its op.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The server holds the change: `version` is the document's version (a delete's too).
    Acked { version: u64 },
    /// The server's document won: its version, its body (None: it is deleted) and its
    /// attachment list.
    Conflict { version: u64, body: Option<serde_json::Map<String, Value>>, attachments: Vec<String> },
    /// Final refusal (`forbidden`, `expired`, `too_large`, `bad_request`): roll back, keep.
    Rejected { status: &'static str },
    /// `idempotency_mismatch`: stop pushing it, keep it, report it.
    Held,
}

/// Reads one op's answer. An answer that breaks the protocol (an `applied` without a
/// version, a `duplicate` without its first answer, a conflict body that is not an object)
/// is an error: nothing of the push is applied.
pub(crate) fn classify(result: &OpResult) -> Result<Outcome, Error> {
    let bad = |what: &str| Error::MalformedAnswer(format!("a push result {what}"));
    let status = match (result.status, result.first) {
        (OpStatus::Duplicate, Some(first)) => first.status,
        (OpStatus::Duplicate, None) => return Err(bad("says duplicate without the first answer")),
        (s, _) => s,
    };
    let version = match result.status {
        OpStatus::Duplicate => result.first.and_then(|f| f.version),
        _ => result.version,
    };
    Ok(match status {
        OpStatus::Applied => Outcome::Acked { version: version.ok_or_else(|| bad("says applied without a version"))? },
        OpStatus::Conflict => {
            let version = version.ok_or_else(|| bad("says conflict without a version"))?;
            let body = match (&result.body, result.deleted) {
                (_, true) => None,
                (Some(Value::Object(m)), false) => Some(m.clone()),
                _ => return Err(bad("says conflict without the server's document")),
            };
            fieldvault_core::protocol::attachments::check_attachment_list(&result.attachments)
                .map_err(|e| bad(&format!("holds a bad attachment list: {e}")))?;
            Outcome::Conflict { version, body, attachments: result.attachments.clone() }
        }
        OpStatus::Forbidden => Outcome::Rejected { status: "forbidden" },
        OpStatus::Expired => Outcome::Rejected { status: "expired" },
        OpStatus::TooLarge => Outcome::Rejected { status: "too_large" },
        OpStatus::IdempotencyMismatch => Outcome::Held,
        OpStatus::Duplicate => return Err(bad("says duplicate of a duplicate")),
    })
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A queued outbox row with its document now (None: deleted) and the version the server
/// last sent (None: never): seq, collection, id, key, body, base.
type Queued = (i64, String, String, String, Option<String>, Option<i64>);

/// Reads the ops of the next push: those in flight first (sent again exactly as before),
/// but for `sending` (a batch with the server right now), then queued changes frozen now, up
/// to [`MAX_PUSH_OPS`] and [`MAX_PUSH_BYTES`]. Each op's attempt count rises. Committed
/// before the request is made, so a crash between here and the answer resends the same ops
/// with the same keys.
pub(crate) fn prepare_push(conn: &mut Connection, path: &Path, sending: &[InFlight]) -> Result<Vec<InFlight>, Error> {
    let sending: std::collections::HashSet<i64> = sending.iter().map(|o| o.seq).collect();
    let tx = conn.transaction().map_err(db_err(path))?;
    let mut ops = Vec::new();
    let mut resent = Vec::new();
    // Room for `{"ops":[...],"device_seq":N}` and the commas.
    let mut bytes = 64usize;
    let fits = |bytes: usize, op: &PushOp<Box<RawValue>>, n: usize| {
        let size = serde_json::to_vec(op).map_or(usize::MAX, |v| v.len()) + 1;
        (n < MAX_PUSH_OPS && bytes + size <= MAX_PUSH_BYTES).then_some(size)
    };
    {
        let mut stmt = tx
            .prepare(
                "SELECT seq, collection, id, op, idempotency_key, base_version, body, attachments FROM outbox
                 WHERE inflight = 1 AND held IS NULL ORDER BY seq",
            )
            .map_err(db_err(path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(db_err(path))?;
        for row in rows {
            let (seq, collection, id, op, key, base, body, list) = row.map_err(db_err(path))?;
            if sending.contains(&seq) {
                continue;
            }
            // Frozen with the op: NULL for a delete, or an op frozen before lists travelled.
            let list = list.map(|t| listing::parse(Some(&t)));
            let op = frozen_op(collection, id, &op, key, base, body.as_deref(), list)?;
            let Some(size) = fits(bytes, &op, ops.len()) else { break };
            bytes += size;
            resent.push(seq);
            ops.push(InFlight { seq, op });
        }
    }
    for seq in resent {
        tx.prepare_cached("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?1")
            .and_then(|mut st| st.execute([seq]))
            .map_err(db_err(path))?;
    }
    // Queued changes of documents with nothing in flight, oldest first, read a batch at a
    // time (reading the whole outbox for every batch made a long drain quadratic), each
    // with what its document is now and the version the server last sent.
    let mut full = false;
    while !full && ops.len() < MAX_PUSH_OPS {
        let room = MAX_PUSH_OPS - ops.len();
        let queued: Vec<Queued> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT q.seq, q.collection, q.id, q.idempotency_key, d.body, s.server_version FROM outbox q
                     LEFT JOIN main.documents d ON d.collection = q.collection AND d.id = q.id
                     LEFT JOIN sync_docs s ON s.collection = q.collection AND s.id = q.id
                     WHERE q.inflight = 0 AND q.held IS NULL AND NOT EXISTS
                       (SELECT 1 FROM outbox f WHERE f.collection = q.collection AND f.id = q.id AND f.inflight = 1)
                     ORDER BY q.seq LIMIT ?1",
                )
                .map_err(db_err(path))?;
            stmt.query_map([room as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                .map_err(db_err(path))?
                .collect::<Result<_, _>>()
                .map_err(db_err(path))?
        };
        let last_read = queued.len() < room;
        for (seq, collection, id, key, body, base) in queued {
            if body.is_none() && base.is_none() {
                // Never known to the server and gone here: nothing to tell.
                tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                    .and_then(|mut st| st.execute([seq]))
                    .map_err(db_err(path))?;
                continue;
            }
            // What the document is now decides the op: the queued kind may be older. A put
            // carries the document's whole attachment list as it is now.
            let kind = if body.is_some() { "put" } else { "delete" };
            let list = match kind {
                "put" => Some(listing::local_list(&tx, &collection, &id).map_err(db_err(path))?),
                _ => None,
            };
            let list_text = list.as_deref().map(|l| serde_json::to_string(l).expect("strings serialize"));
            let op = frozen_op(collection, id, kind, key, Some(base.unwrap_or(0)), body.as_deref(), list)?;
            let Some(size) = fits(bytes, &op, ops.len()) else {
                full = true;
                break;
            };
            bytes += size;
            tx.prepare_cached(
                "UPDATE outbox SET inflight = 1, op = ?2, base_version = ?3, body = ?4, attachments = ?5,
                 attempts = attempts + 1 WHERE seq = ?1",
            )
            .and_then(|mut st| st.execute(params![seq, kind, base.unwrap_or(0), body, list_text]))
            .map_err(db_err(path))?;
            ops.push(InFlight { seq, op });
        }
        if last_read {
            break;
        }
    }
    tx.commit().map_err(db_err(path))?;
    Ok(ops)
}

fn frozen_op(
    collection: String,
    id: String,
    op: &str,
    key: String,
    base: Option<i64>,
    body: Option<&str>,
    attachments: Option<Vec<String>>,
) -> Result<PushOp<Box<RawValue>>, Error> {
    let body = match body {
        Some(text) => Some(
            RawValue::from_string(text.to_owned())
                .map_err(|_| Error::MalformedAnswer("an outbox body is not JSON".into()))?,
        ),
        None => None,
    };
    Ok(PushOp {
        idempotency_key: key,
        collection,
        id,
        op: if op == "put" { OpKind::Put } else { OpKind::Delete },
        body: if op == "put" { body } else { None },
        base_version: base.unwrap_or(0).max(0) as u64,
        attachments: if op == "put" { attachments } else { None },
    })
}

/// What a push did, for the app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Ops the server now holds.
    pub applied: usize,
    /// Ops whose document the server had changed first (kept in the conflicts table).
    pub conflicts: usize,
    /// Ops refused for good (rolled back here, kept in the rejected list).
    pub rejected: usize,
    /// Ops held back (`idempotency_mismatch`).
    pub held: usize,
    /// Every document whose local state changed, and how.
    pub changed: Vec<crate::DocumentChange>,
}

/// Applies a push's answers in one transaction. `results` must be one per op, in order.
pub(crate) fn apply_push(
    conn: &mut Connection,
    path: &Path,
    ops: &[InFlight],
    results: &[OpResult],
    policy: &dyn Fn(&str) -> ConflictPolicy,
) -> Result<PushSummary, Error> {
    if results.len() != ops.len() {
        return Err(Error::MalformedAnswer(format!("a push of {} ops got {} results", ops.len(), results.len())));
    }
    let outcomes = results.iter().map(classify).collect::<Result<Vec<_>, _>>()?;
    let tx = conn.transaction().map_err(db_err(path))?;
    let at = now_ms();
    let mut summary = PushSummary::default();
    let mut gone = Vec::new();
    for (inflight, outcome) in ops.iter().zip(outcomes) {
        let op = &inflight.op;
        let (c, id) = (op.collection.as_str(), op.id.as_str());
        let db = |e| db_err(path)(e);
        match outcome {
            Outcome::Acked { version } => {
                tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                    .and_then(|mut st| st.execute([inflight.seq]))
                    .map_err(db)?;
                if op.op == OpKind::Delete {
                    tx.execute("DELETE FROM sync_docs WHERE collection = ?1 AND id = ?2", params![c, id])
                        .map_err(db)?;
                } else {
                    set_server_version(&tx, c, id, version).map_err(db)?;
                    if let Some(list) = &op.attachments {
                        listing::set_server_list(&tx, c, id, list).map_err(db)?;
                    }
                    // A later local change is still queued: the server's copy is now what
                    // this op sent, which a refusal of that change would restore.
                    if outbox::pending(&tx, c, id).map_err(db)? {
                        let sent = inflight.body_text();
                        tx.execute(
                            "UPDATE sync_docs SET base_body = ?3 WHERE collection = ?1 AND id = ?2",
                            params![c, id, sent],
                        )
                        .map_err(db)?;
                    }
                }
                summary.applied += 1;
            }
            Outcome::Conflict { version, body, attachments: server_list } => {
                tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                    .and_then(|mut st| st.execute([inflight.seq]))
                    .map_err(db)?;
                let local = local_body(&tx, c, id).map_err(db)?;
                // The attachment lists merge three ways whatever the policy (ADR 0008): an
                // attachment added on either side is kept.
                let base_list = listing::server_list(&tx, c, id).map_err(db)?;
                let local_list = match &op.attachments {
                    Some(l) => l.clone(),
                    None => listing::local_list(&tx, c, id).map_err(db)?,
                };
                let merged = listing::merge3(&base_list, &local_list, &server_list);
                let server_text = body.as_ref().map(|b| Value::Object(b.clone()).to_string());
                let as_map = |t: &Option<String>| match t.as_deref().map(serde_json::from_str::<Value>) {
                    Some(Ok(Value::Object(m))) => Some(m),
                    _ => None,
                };
                let resolution = match policy(c) {
                    // Nothing to merge against a deletion: the server wins.
                    ConflictPolicy::Merge(f) => match (as_map(&local), &body) {
                        (Some(l), Some(srv)) => Resolution::Merged(Value::Object(f(&l, srv)).to_string()),
                        _ => Resolution::Server,
                    },
                    ConflictPolicy::ClientWins => Resolution::Local,
                    ConflictPolicy::ServerWins => Resolution::Server,
                };
                match resolution {
                    Resolution::Server => {
                        // The server's version here; the local one kept for the app.
                        tx.execute("DELETE FROM outbox WHERE collection = ?1 AND id = ?2", params![c, id])
                            .map_err(db)?;
                        let local_op = if local.is_some() { "put" } else { "delete" };
                        keep_conflict(&tx, c, id, local_op, local.as_deref(), version, server_text.as_deref(), at)
                            .map_err(db)?;
                        match &server_text {
                            Some(text) => {
                                write_server_doc(&tx, c, id, version, text, at).map_err(db)?;
                                listing::set_server_list(&tx, c, id, &server_list).map_err(db)?;
                                listing::apply_list(&tx, c, id, &merged, &mut gone).map_err(db)?;
                                if merged != server_list {
                                    // The server's body, with the attachments this device
                                    // added: sent again on the server's version.
                                    let offset = state::clock_offset_ms(&tx).map_err(db)?;
                                    outbox::record(&tx, c, id, outbox::Change::Put, at, offset).map_err(db)?;
                                }
                            }
                            None => {
                                remove_doc(&tx, c, id, &mut gone).map_err(db)?;
                            }
                        }
                        summary.changed.push(change(c, id, ChangeKind::Conflict));
                    }
                    Resolution::Local | Resolution::Merged(_) => {
                        // Rebased: the next op names the server's version as its base, and a
                        // refusal of it would restore the server's version.
                        keep_conflict(
                            &tx,
                            c,
                            id,
                            "server",
                            server_text.as_deref(),
                            version,
                            server_text.as_deref(),
                            at,
                        )
                        .map_err(db)?;
                        match &server_text {
                            Some(text) => {
                                set_server_version(&tx, c, id, version).map_err(db)?;
                                tx.execute(
                                    "UPDATE sync_docs SET base_body = ?3 WHERE collection = ?1 AND id = ?2",
                                    params![c, id, text],
                                )
                                .map_err(db)?;
                                listing::set_server_list(&tx, c, id, &server_list).map_err(db)?;
                                if local.is_some() {
                                    listing::apply_list(&tx, c, id, &merged, &mut gone).map_err(db)?;
                                }
                            }
                            None => {
                                tx.execute("DELETE FROM sync_docs WHERE collection = ?1 AND id = ?2", params![c, id])
                                    .map_err(db)?;
                            }
                        }
                        // A merge writes its result here; client-wins keeps what is here.
                        if let Resolution::Merged(text) = &resolution {
                            write_local(&tx, c, id, text, at).map_err(db)?;
                            summary.changed.push(change(c, id, ChangeKind::Conflict));
                        }
                        let kind = if local.is_some() { outbox::Change::Put } else { outbox::Change::Delete };
                        let offset = state::clock_offset_ms(&tx).map_err(db)?;
                        outbox::record(&tx, c, id, kind, at, offset).map_err(db)?;
                    }
                }
                summary.conflicts += 1;
            }
            Outcome::Rejected { status } => {
                tx.execute("DELETE FROM outbox WHERE collection = ?1 AND id = ?2", params![c, id]).map_err(db)?;
                let body = inflight.body_text();
                tx.execute(
                    "INSERT INTO rejected (collection, id, op, body, status, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![c, id, if op.op == OpKind::Put { "put" } else { "delete" }, body, status, at],
                )
                .map_err(db)?;
                roll_back(&tx, c, id, at, &mut gone).map_err(db)?;
                summary.rejected += 1;
                let kind =
                    if local_body(&tx, c, id).map_err(db)?.is_some() { ChangeKind::Put } else { ChangeKind::Delete };
                summary.changed.push(change(c, id, kind));
            }
            Outcome::Held => {
                tx.execute("UPDATE outbox SET held = 'idempotency_mismatch' WHERE seq = ?1", [inflight.seq])
                    .map_err(db)?;
                summary.held += 1;
            }
        }
    }
    tx.commit().map_err(db_err(path))?;
    remove_attachment_files(conn, path, &gone)?;
    Ok(summary)
}

/// Removes the files of attachments whose rows a committed transaction deleted, once that
/// commit is durable (a power cut must not bring rows back whose files are gone).
pub(crate) fn remove_attachment_files(conn: &Connection, path: &Path, ids: &[String]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    crate::database::make_durable(conn, path)?;
    for f in crate::attachments::files_of(path, ids) {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io { op: "remove", path: f, source: e });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses one op for good after the server refused a push holding only it (`bad_request`).
pub(crate) fn reject_op(conn: &mut Connection, path: &Path, op: &InFlight, status: &'static str) -> Result<(), Error> {
    let tx = conn.transaction().map_err(db_err(path))?;
    let (c, id) = (op.op.collection.as_str(), op.op.id.as_str());
    let at = now_ms();
    tx.execute("DELETE FROM outbox WHERE collection = ?1 AND id = ?2", params![c, id]).map_err(db_err(path))?;
    tx.execute(
        "INSERT INTO rejected (collection, id, op, body, status, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![c, id, if op.op.op == OpKind::Put { "put" } else { "delete" }, op.body_text(), status, at],
    )
    .map_err(db_err(path))?;
    let mut gone = Vec::new();
    roll_back(&tx, c, id, at, &mut gone).map_err(db_err(path))?;
    tx.commit().map_err(db_err(path))?;
    remove_attachment_files(conn, path, &gone)
}

pub(super) fn local_body(tx: &Connection, c: &str, id: &str) -> rusqlite::Result<Option<String>> {
    tx.query_row("SELECT body FROM main.documents WHERE collection = ?1 AND id = ?2", params![c, id], |r| r.get(0))
        .optional()
}

pub(super) fn set_server_version(tx: &Connection, c: &str, id: &str, version: u64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO sync_docs (collection, id, server_version, base_body) VALUES (?1, ?2, ?3, NULL)
         ON CONFLICT (collection, id) DO UPDATE SET server_version = excluded.server_version, base_body = NULL",
    )?
    .execute(params![c, id, version as i64])
    .map(|_| ())
}

/// Writes the server's document locally (no outbox entry: it came from the server).
pub(super) fn write_server_doc(
    tx: &Connection,
    c: &str,
    id: &str,
    version: u64,
    text: &str,
    at: i64,
) -> rusqlite::Result<()> {
    write_local(tx, c, id, text, at)?;
    set_server_version(tx, c, id, version)
}

/// Writes a document here as the device's own version (its outbox row is the caller's).
pub(super) fn write_local(tx: &Connection, c: &str, id: &str, text: &str, at: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO main.documents (collection, id, version, updated_at, body) VALUES (?1, ?2, 1, ?3, ?4)
         ON CONFLICT (collection, id) DO UPDATE
         SET version = version + 1, updated_at = excluded.updated_at, body = excluded.body",
    )?
    .execute(params![c, id, at, text])
    .map(|_| ())
}

/// Removes a document here because the server says it is gone (no outbox entry), with its
/// attachments' rows; their ids go to `gone`, whose files go once the transaction is durable.
pub(super) fn remove_doc(tx: &Connection, c: &str, id: &str, gone: &mut Vec<String>) -> rusqlite::Result<()> {
    listing::forget_all(tx, c, id, gone)?;
    tx.execute("DELETE FROM main.documents WHERE collection = ?1 AND id = ?2", params![c, id])?;
    tx.execute("DELETE FROM sync_docs WHERE collection = ?1 AND id = ?2", params![c, id])?;
    Ok(())
}

/// Puts a document back as the server last sent it (its base copy), or removes it when the
/// server never had it.
pub(super) fn roll_back(tx: &Connection, c: &str, id: &str, at: i64, gone: &mut Vec<String>) -> rusqlite::Result<()> {
    let base: Option<(i64, Option<String>)> = tx
        .query_row(
            "SELECT server_version, base_body FROM sync_docs WHERE collection = ?1 AND id = ?2",
            params![c, id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match base {
        Some((version, Some(body))) => write_server_doc(tx, c, id, version as u64, &body, at),
        // The local copy was never changed since the server's version: nothing to undo.
        Some((_, None)) => Ok(()),
        None => remove_doc(tx, c, id, gone),
    }
}
