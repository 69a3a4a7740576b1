//! The decision each op gets, and what a pull shows of a stored document. The table
//! (docs/protocol.md, "Push"):
//!
//! | op     | target                   | answer                                                   |
//! |--------|--------------------------|----------------------------------------------------------|
//! | put    | absent or tombstone, base 0 | create if `write(old = null, doc = new)`, else forbidden |
//! | put    | live, not readable       | forbidden (never conflict: that would reveal it)         |
//! | put    | live, version != base    | conflict with the stored document, projected             |
//! | put    | live, version == base    | apply if `write` holds for the old and the new document  |
//! | delete | live, not readable       | forbidden                                                |
//! | delete | live, version != base    | conflict                                                 |
//! | delete | live, version == base    | apply (tombstone) if `write` holds for the old document  |
//! | any    | tombstone, other cases   | conflict showing the deletion if the user could read it  |
//! | any    | absent, base > 0 / delete| forbidden: the same answer as a document one cannot read |
//!
//! A put that would apply but leaves a stored document past [`MAX_DOCUMENT_BYTES`] of JSON
//! (after the merge with the fields the device does not hold) answers `too_large` instead.
//!
//! A create over a tombstone starts a new incarnation of the id (ADR 0007): owned by its
//! creator, whether or not the creator could read the deleted one, with none of the old
//! document's fields or attachments, and versions continuing from the tombstone's so that a
//! `base_version` of the old incarnation never matches the new one.
//!
//! The attachment list (ADR 0008) moves with the document: an applied put with `attachments`
//! stores that list, one without keeps the stored list (a create without one starts empty),
//! and a delete empties it. A conflict shows the stored list (empty for a tombstone).

use serde_json::{Map, Value};

use super::wire::{OpKind, OpResult, OpStatus, PushOp};
use crate::names::MAX_DOCUMENT_BYTES;
use crate::rules::{RuleUser, Rules};

/// A document as the server stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    /// The owner (set by the server at creation, immutable).
    pub owner: String,
    /// 1 on create, +1 on every put or delete.
    pub version: u64,
    /// A tombstone.
    pub deleted: bool,
    /// The full document, `owner` included (for a tombstone: only `owner`).
    pub body: Value,
    /// The attachment ids the document lists (ADR 0008), sorted and distinct; empty for a
    /// tombstone. Beside the body, never in it, and never projected: every reader sees it.
    pub attachments: Vec<String>,
}

/// What the store should do with one op.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Write this document (or tombstone) at this version.
    Apply {
        /// The new version.
        version: u64,
        /// The full new document; for a delete, the tombstone body (`owner` only).
        body: Value,
        /// Whether it is a deletion.
        deleted: bool,
        /// The owner.
        owner: String,
        /// The attachment list after the op (empty for a delete).
        attachments: Vec<String>,
    },
    /// Answer `conflict` (not recorded against the key).
    Conflict(OpResult),
    /// Answer `forbidden` (recorded against the key).
    Forbidden,
    /// Answer `too_large`: the stored document would pass [`MAX_DOCUMENT_BYTES`] (not
    /// recorded: nothing happened).
    TooLarge,
}

/// The tombstone body: only the owner survives a delete.
pub fn tombstone_body(owner: &str) -> Value {
    let mut m = Map::new();
    m.insert("owner".into(), Value::String(owner.to_owned()));
    Value::Object(m)
}

/// Whether `user` may read `stored` (a tombstone is read by its owner stub).
pub fn readable(rules: &Rules, user: &RuleUser, collection: &str, stored: &StoredDoc) -> bool {
    rules.can_read(user, collection, &stored.body)
}

/// Decides one op against the stored state (see the table in the module docs).
pub fn decide(rules: &Rules, user: &RuleUser, op: &PushOp, stored: Option<&StoredDoc>) -> Decision {
    let coll = op.collection.as_str();
    if !rules.syncs(coll) {
        return Decision::Forbidden;
    }
    let conflict = |s: &StoredDoc| {
        Decision::Conflict(OpResult {
            status: OpStatus::Conflict,
            version: Some(s.version),
            body: (!s.deleted).then(|| rules.project(coll, &s.body)),
            deleted: s.deleted,
            first: None,
            attachments: if s.deleted { Vec::new() } else { s.attachments.clone() },
        })
    };
    match (op.op, stored) {
        // A create: nothing live there.
        (OpKind::Put, None) if op.base_version == 0 => create(rules, user, op, None),
        (OpKind::Put, Some(s)) if s.deleted && op.base_version == 0 => create(rules, user, op, Some(s)),
        (_, None) => Decision::Forbidden,
        (_, Some(s)) if !readable(rules, user, coll, s) => Decision::Forbidden,
        (_, Some(s)) if s.deleted || s.version != op.base_version => conflict(s),
        (OpKind::Put, Some(s)) => {
            let Some(new) = merged(rules, op, Some(&s.body), &s.owner) else { return Decision::Forbidden };
            if !rules.can_write(user, coll, Some(&s.body), Some(&new)) {
                Decision::Forbidden
            } else if json_len(&new) > MAX_DOCUMENT_BYTES {
                Decision::TooLarge
            } else {
                // Without a list, the stored one stays: a device that does not send it (one
                // written before the field) never drops an attachment.
                let attachments = op.attachments.clone().unwrap_or_else(|| s.attachments.clone());
                Decision::Apply {
                    version: s.version + 1,
                    body: new,
                    deleted: false,
                    owner: s.owner.clone(),
                    attachments,
                }
            }
        }
        (OpKind::Delete, Some(s)) => {
            if rules.can_write(user, coll, Some(&s.body), None) {
                Decision::Apply {
                    version: s.version + 1,
                    body: tombstone_body(&s.owner),
                    deleted: true,
                    owner: s.owner.clone(),
                    attachments: Vec::new(),
                }
            } else {
                Decision::Forbidden
            }
        }
    }
}

/// A create, or a re-create over a tombstone: a new incarnation, merged over nothing and
/// owned by its creator, whose versions continue from the tombstone's.
fn create(rules: &Rules, user: &RuleUser, op: &PushOp, tombstone: Option<&StoredDoc>) -> Decision {
    let Some(new) = merged(rules, op, None, &user.id) else { return Decision::Forbidden };
    if !rules.can_write(user, &op.collection, None, Some(&new)) {
        return Decision::Forbidden;
    }
    if json_len(&new) > MAX_DOCUMENT_BYTES {
        return Decision::TooLarge;
    }
    let version = tombstone.map_or(1, |t| t.version + 1);
    let attachments = op.attachments.clone().unwrap_or_default();
    Decision::Apply { version, body: new, deleted: false, owner: user.id.clone(), attachments }
}

/// The length of `value` as stored (compact JSON), counted without writing it out.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A JSON value (its keys are strings) always serializes, and counting never fails.
    serde_json::to_writer(&mut count, value).expect("a JSON value serializes");
    count.0
}

/// The device's projected body merged into the stored document with the owner set; None if
/// the body names a field the device may not hold or claims another owner.
fn merged(rules: &Rules, op: &PushOp, stored: Option<&Value>, owner: &str) -> Option<Value> {
    let body = op.body.as_ref()?;
    if let Some(claimed) = body.get("owner")
        && claimed.as_str() != Some(owner)
    {
        return None;
    }
    let mut new = rules.merge(&op.collection, stored, body).ok()?;
    new.as_object_mut()?.insert("owner".into(), Value::String(owner.to_owned()));
    Some(new)
}
/// What a pull shows of one stored document to one device.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// Send it, projected; the device now holds it.
    Put(Value),
    /// Send a tombstone if the device holds it.
    Gone,
}

/// The pull view of a stored document for `user`.
pub fn view(rules: &Rules, user: &RuleUser, collection: &str, stored: &StoredDoc) -> View {
    if !stored.deleted && rules.syncs(collection) && readable(rules, user, collection, stored) {
        View::Put(rules.project(collection, &stored.body))
    } else {
        View::Gone
    }
}
