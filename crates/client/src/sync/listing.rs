//! A document's attachment list on the device (ADR 0008): what the device lists (its own
//! attachments and those the server announced that it has no key for yet), what the server
//! held at the version the device last received, and the three-way merge that settles a
//! conflict without losing an attachment either side added.
//!
//! Every function here works inside the caller's transaction. Files of attachments whose
//! rows go are named in `gone`, for removal once the transaction is durable.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};

/// The ids of a document's attachments on the device, sorted: those whose key is here
/// (bytes here or not) and those announced by the server and not yet keyed.
pub(crate) fn local_list(tx: &Connection, c: &str, id: &str) -> rusqlite::Result<Vec<String>> {
    let mut out = BTreeSet::new();
    let mut stmt = tx.prepare_cached(
        "SELECT id FROM attachments WHERE collection = ?1 AND doc_id = ?2
         UNION SELECT id FROM attachment_remote WHERE collection = ?1 AND doc_id = ?2",
    )?;
    for row in stmt.query_map(params![c, id], |r| r.get::<_, String>(0))? {
        out.insert(row?);
    }
    Ok(out.into_iter().collect())
}

/// The list the server held at the version the device last received (empty when none).
pub(crate) fn server_list(tx: &Connection, c: &str, id: &str) -> rusqlite::Result<Vec<String>> {
    let text: Option<Option<String>> = tx
        .prepare_cached("SELECT attachments FROM sync_docs WHERE collection = ?1 AND id = ?2")?
        .query_row(params![c, id], |r| r.get(0))
        .optional()?;
    Ok(parse(text.flatten().as_deref()))
}

/// Records the list the server holds with the document's version (the row must exist).
pub(crate) fn set_server_list(tx: &Connection, c: &str, id: &str, list: &[String]) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE sync_docs SET attachments = ?3 WHERE collection = ?1 AND id = ?2")?
        .execute(params![c, id, to_text(list)])
        .map(|_| ())
}

/// A list as stored: JSON text, NULL when empty.
pub(crate) fn to_text(list: &[String]) -> Option<String> {
    (!list.is_empty()).then(|| serde_json::to_string(list).expect("strings serialize"))
}

/// A stored list (a column the device wrote itself; anything unreadable is empty).
pub(crate) fn parse(text: Option<&str>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
}

/// Makes the device's list of a document `target`: an id it lacks is recorded as announced
/// (its key and bytes come from the server later); an id it has that `target` lacks goes,
/// with its rows and its upload, and its file once the transaction is durable.
pub(crate) fn apply_list(
    tx: &Connection,
    c: &str,
    id: &str,
    target: &[String],
    gone: &mut Vec<String>,
) -> rusqlite::Result<()> {
    let have = local_list(tx, c, id)?;
    let want: BTreeSet<&String> = target.iter().collect();
    for att in &have {
        if !want.contains(att) {
            forget(tx, att)?;
            gone.push(att.clone());
        }
    }
    let have: BTreeSet<&String> = have.iter().collect();
    for att in target {
        if !have.contains(att) {
            // An id on another document here (the server would never list one twice) is
            // left where it is.
            tx.prepare_cached(
                "INSERT INTO attachment_remote (id, collection, doc_id) SELECT ?1, ?2, ?3
                 WHERE NOT EXISTS (SELECT 1 FROM attachments WHERE id = ?1)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![att, c, id])?;
        }
    }
    Ok(())
}

/// Forgets one attachment: its row, its announcement, its upload.
pub(crate) fn forget(tx: &Connection, att: &str) -> rusqlite::Result<()> {
    for sql in [
        "DELETE FROM attachments WHERE id = ?1",
        "DELETE FROM attachment_remote WHERE id = ?1",
        "DELETE FROM attachment_uploads WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([att])?;
    }
    Ok(())
}

/// Forgets every attachment of a document (it is deleted here); their ids go to `gone`.
pub(crate) fn forget_all(tx: &Connection, c: &str, id: &str, gone: &mut Vec<String>) -> rusqlite::Result<()> {
    for att in local_list(tx, c, id)? {
        forget(tx, &att)?;
        gone.push(att);
    }
    Ok(())
}

/// The three-way merge of a document's attachment list after a conflict: what the device
/// added since `base` (the server's list at the version it last received) is kept, what it
/// removed is removed, and the server's own changes stand. So an attachment added on either
/// side survives, whatever the conflict policy decides for the body.
pub(crate) fn merge3(base: &[String], local: &[String], server: &[String]) -> Vec<String> {
    let base: BTreeSet<&String> = base.iter().collect();
    let local: BTreeSet<&String> = local.iter().collect();
    let mut out: BTreeSet<&String> = server.iter().filter(|s| !base.contains(s) || local.contains(s)).collect();
    out.extend(local.iter().filter(|l| !base.contains(*l)));
    out.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::merge3;

    fn l(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_merge_keeps_what_either_side_added_and_drops_what_either_removed() {
        // Both added one: both kept.
        assert_eq!(merge3(&l(&["a"]), &l(&["a", "d"]), &l(&["a", "s"])), l(&["a", "d", "s"]));
        // The device removed a, the server kept it: removed.
        assert_eq!(merge3(&l(&["a", "b"]), &l(&["b"]), &l(&["a", "b", "s"])), l(&["b", "s"]));
        // The server removed b, the device kept it: removed.
        assert_eq!(merge3(&l(&["a", "b"]), &l(&["a", "b", "d"]), &l(&["a"])), l(&["a", "d"]));
        // A device that never received the document (base empty): the union.
        assert_eq!(merge3(&[], &l(&["d"]), &l(&["s"])), l(&["d", "s"]));
        // Nothing changed anywhere.
        assert_eq!(merge3(&l(&["a"]), &l(&["a"]), &l(&["a"])), l(&["a"]));
    }
}
