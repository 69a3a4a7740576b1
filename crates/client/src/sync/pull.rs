//! The pull side of the engine, plan then execute: a page checked and planned as a value
//! ([`plan_pull_page`]), then applied with its cursor in one transaction ([`apply_pull`]);
//! after a pull from the start as a new device, the reconciliation ([`finish_reconcile`]).

use std::collections::HashSet;
use std::path::Path;

use fieldvault_core::names::{self, MAX_DOCUMENT_BYTES};
use fieldvault_core::protocol::attachments::check_attachment_list;
use fieldvault_core::protocol::sync::{Change, OpKind, PullResponse};
use rusqlite::{Connection, params};
use serde_json::value::RawValue;

use super::engine::{now_ms, remove_attachment_files, remove_doc, write_server_doc};
use super::listing;
use super::outbox::{self, db_err};
use super::state;
use crate::Error;
use crate::changes::{ChangeKind, DocumentChange, change};

/// A pull page as the device reads it: each body kept as the JSON text that came (checked
/// to be JSON, never parsed into values and written out again).
pub(crate) type RawPage = PullResponse<Box<RawValue>>;

/// What a pull page changes on the device.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct PullPlan {
    /// Documents to write at the server's version, with their attachment lists.
    pub(crate) puts: Vec<(String, String, u64, String, Vec<String>)>,
    /// Documents to remove (deleted on the server, or no longer readable).
    pub(crate) deletes: Vec<(String, String)>,
    /// Changes not applied because a local change of the document is pending (its op is
    /// decided first; a conflict then brings the server's version).
    pub(crate) skipped: usize,
}

/// A cursor the device can send back in a query string as it came: 1 to 512 characters of
/// RFC 3986's unreserved set (opaque otherwise).
pub(crate) fn check_cursor(cursor: &str) -> Result<(), Error> {
    let unreserved = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~');
    if cursor.is_empty() || cursor.len() > 512 || !cursor.bytes().all(unreserved) {
        return Err(Error::MalformedAnswer("a pull page has no usable cursor".into()));
    }
    Ok(())
}

/// Plans a pull page. `pending` names the documents with a local change pending. A page that
/// breaks the protocol (more changes than asked for, an invalid name, a put without version
/// or object body, a body over 1 MiB) is refused whole.
pub(crate) fn plan_pull_page(
    page: &RawPage,
    limit: u32,
    pending: &HashSet<(String, String)>,
) -> Result<PullPlan, Error> {
    let bad = |what: String| Error::MalformedAnswer(format!("a pull page {what}"));
    if page.changes.len() > limit as usize {
        return Err(bad(format!("holds {} changes where at most {limit} were asked for", page.changes.len())));
    }
    check_cursor(&page.cursor)?;
    let mut plan = PullPlan::default();
    for Change { collection, id, op, version, body, attachments } in &page.changes {
        names::check_collection(collection).map_err(|e| bad(format!("names a bad collection: {e}")))?;
        names::check_id(id).map_err(|e| bad(format!("names a bad id: {e}")))?;
        let at = (collection.clone(), id.clone());
        let change = match (op, version, body) {
            (OpKind::Put, Some(v), Some(b)) if b.get().starts_with('{') => {
                let text = b.get().to_owned();
                if text.len() > MAX_DOCUMENT_BYTES {
                    return Err(bad(format!("holds a document of {} bytes", text.len())));
                }
                check_attachment_list(attachments).map_err(|e| bad(format!("holds a bad attachment list: {e}")))?;
                Some((*v, text))
            }
            (OpKind::Put, _, _) => return Err(bad("holds a put without a version or an object body".into())),
            (OpKind::Delete, _, _) => None,
        };
        if pending.contains(&at) {
            plan.skipped += 1;
            continue;
        }
        match change {
            Some((v, text)) => plan.puts.push((at.0, at.1, v, text, attachments.clone())),
            None => plan.deletes.push(at),
        }
    }
    Ok(plan)
}

/// Documents with a local change pending, among those a page names.
pub(crate) fn pending_among(conn: &Connection, page: &RawPage) -> rusqlite::Result<HashSet<(String, String)>> {
    let mut out = HashSet::new();
    for ch in &page.changes {
        if outbox::pending(conn, &ch.collection, &ch.id)? {
            out.insert((ch.collection.clone(), ch.id.clone()));
        }
    }
    Ok(out)
}

/// Applies a planned pull page and stores its cursor, in one transaction. While
/// `reconciling` (a pull from the start after the device id changed), the documents the page
/// holds are recorded as seen.
pub(crate) fn apply_pull(
    conn: &mut Connection,
    path: &Path,
    plan: &PullPlan,
    cursor: &str,
    reconciling: bool,
) -> Result<Vec<DocumentChange>, Error> {
    let tx = conn.transaction().map_err(db_err(path))?;
    let at = now_ms();
    let mut gone = Vec::new();
    for (c, id, version, text, list) in &plan.puts {
        write_server_doc(&tx, c, id, *version, text, at).map_err(db_err(path))?;
        listing::set_server_list(&tx, c, id, list).map_err(db_err(path))?;
        listing::apply_list(&tx, c, id, list, &mut gone).map_err(db_err(path))?;
        if reconciling {
            tx.prepare_cached("INSERT OR IGNORE INTO sync_seen (collection, id) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![c, id]))
                .map_err(db_err(path))?;
        }
    }
    for (c, id) in &plan.deletes {
        remove_doc(&tx, c, id, &mut gone).map_err(db_err(path))?;
    }
    state::set(&tx, state::CURSOR, cursor).map_err(db_err(path))?;
    tx.commit().map_err(db_err(path))?;
    remove_attachment_files(conn, path, &gone)?;
    let puts = plan.puts.iter().map(|(c, id, _, _, _)| change(c, id, ChangeKind::Put));
    Ok(puts.chain(plan.deletes.iter().map(|(c, id)| change(c, id, ChangeKind::Delete))).collect())
}

/// Ends a reconciliation (a full pull from the start as a new device): documents this device
/// had from the server that the full pull did not return, and that have no local change
/// pending, are removed; local changes stay queued and are pushed. Returns how many went.
pub(crate) fn finish_reconcile(conn: &mut Connection, path: &Path) -> Result<Vec<DocumentChange>, Error> {
    let tx = conn.transaction().map_err(db_err(path))?;
    let stale: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare(
                "SELECT d.collection, d.id FROM sync_docs d
                 WHERE NOT EXISTS (SELECT 1 FROM sync_seen s WHERE s.collection = d.collection AND s.id = d.id)
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.collection = d.collection AND o.id = d.id)",
            )
            .map_err(db_err(path))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err(path))?
            .collect::<Result<_, _>>()
            .map_err(db_err(path))?
    };
    let mut gone = Vec::new();
    for (c, id) in &stale {
        remove_doc(&tx, c, id, &mut gone).map_err(db_err(path))?;
    }
    tx.execute("DELETE FROM sync_seen", []).map_err(db_err(path))?;
    state::clear(&tx, state::RECONCILE).map_err(db_err(path))?;
    tx.commit().map_err(db_err(path))?;
    remove_attachment_files(conn, path, &gone)?;
    Ok(stale.iter().map(|(c, id)| change(c, id, ChangeKind::Delete)).collect())
}
