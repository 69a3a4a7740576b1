//! Plan, then execute: what a push or a pull page writes, computed as a value before the
//! store writes anything.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::check::CheckedOp;
use super::decide::{Decision, StoredDoc, View, decide, view};
use super::wire::{Change, FirstResult, OpKind, OpResult, OpStatus, PullAnswer};
use crate::rules::{RuleUser, Rules};

/// An idempotency record as stored: the op's fingerprint and its first result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 of the canonical op without its key.
    pub fingerprint: [u8; 32],
    /// `applied` (with its version) or `forbidden`.
    pub first: FirstResult,
}

/// A document's state after a push, to be written with its change sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentWrite {
    /// The collection.
    pub collection: String,
    /// The id.
    pub id: String,
    /// The owner.
    pub owner: String,
    /// The new version.
    pub version: u64,
    /// A tombstone.
    pub deleted: bool,
    /// The full document.
    pub body: Value,
    /// Its attachment list (ADR 0008).
    pub attachments: Vec<String>,
    /// Whether the list differs from the one stored before the push (so a store that keeps
    /// an index of which documents list an id updates it only then).
    pub attachments_changed: bool,
    /// The change sequence number of its last change in this push.
    pub seq: u64,
}

/// Attachments a push deletes, metadata and chunks, in its transaction (ADR 0008, section 3).
/// Only attachments whose metadata names the document are deleted: an id listed by another
/// document too is that document's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentDrop {
    /// Every attachment of the document: it was deleted, or re-created over a tombstone (a new
    /// incarnation starts with none of the old one's).
    Document {
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
    },
    /// These attachments of the document: ids its list no longer names after the push
    /// (sorted). An id removed by one op and listed again by a later op of the same push
    /// stays.
    Ids {
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
        /// The attachment ids.
        ids: Vec<String>,
    },
}

/// Everything one push writes, computed before anything is written ("plan, then execute").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushPlan {
    /// One result per op, in order.
    pub results: Vec<OpResult>,
    /// The final state of every document the push changed (once each).
    pub documents: Vec<DocumentWrite>,
    /// New idempotency records: key and record.
    pub records: Vec<(String, IdempotencyRecord)>,
    /// (collection, id) the pushing device now holds.
    pub held: Vec<(String, String)>,
    /// (collection, id) the pushing device no longer holds (deleted by it).
    pub dropped: Vec<(String, String)>,
    /// The attachments that go with this push, at most one entry per document.
    pub drop_attachments: Vec<AttachmentDrop>,
    /// The next unused change sequence number.
    pub next_seq: u64,
}

/// What a push drops of one document's attachments, gathered op by op.
enum Dropping {
    /// All of them (deleted, or re-created over a tombstone).
    All,
    /// The ids that left its list.
    Ids(BTreeSet<String>),
}

/// Plans a push: every op decided in order against the stored state as earlier ops of the
/// same push leave it. `documents` holds the stored state of every (collection, id) the ops
/// name (absent = none), `records` the stored idempotency records of their keys.
pub fn plan_push(
    rules: &Rules,
    user: &RuleUser,
    ops: &[CheckedOp],
    documents: &HashMap<(String, String), StoredDoc>,
    records: &HashMap<String, IdempotencyRecord>,
    expired_before: u64,
    first_seq: u64,
) -> PushPlan {
    let mut docs: HashMap<(&str, &str), (StoredDoc, Option<u64>)> = HashMap::new();
    let mut new_records: HashMap<&str, IdempotencyRecord> = HashMap::new();
    let mut held: HashMap<(&str, &str), bool> = HashMap::new();
    let mut dropping: HashMap<(&str, &str), Dropping> = HashMap::new();
    let mut plan = PushPlan { next_seq: first_seq, ..PushPlan::default() };
    let mut order: Vec<(&str, &str)> = Vec::new();
    for checked in ops {
        let op = &checked.op;
        let key = op.idempotency_key.as_str();
        if let Some(r) = new_records.get(key).or_else(|| records.get(key)) {
            plan.results.push(if r.fingerprint == checked.fingerprint {
                OpResult { first: Some(r.first), ..OpResult::bare(OpStatus::Duplicate) }
            } else {
                OpResult::bare(OpStatus::IdempotencyMismatch)
            });
            continue;
        }
        if checked.made_at < expired_before {
            plan.results.push(OpResult::bare(OpStatus::Expired));
            continue;
        }
        let at = (op.collection.as_str(), op.id.as_str());
        let current = match docs.get(&at) {
            Some((d, _)) => Some(d),
            None => documents.get(&(op.collection.clone(), op.id.clone())),
        };
        let first = match decide(rules, user, op, current) {
            Decision::Conflict(r) => {
                plan.results.push(r);
                continue;
            }
            Decision::TooLarge => {
                plan.results.push(OpResult::bare(OpStatus::TooLarge));
                continue;
            }
            Decision::Forbidden => FirstResult { status: OpStatus::Forbidden, version: None },
            Decision::Apply { version, body, deleted, owner, attachments } => {
                let recreated = current.is_some_and(|c| c.deleted);
                if deleted || recreated {
                    dropping.insert(at, Dropping::All);
                } else if let Some(before) = current {
                    let gone = before.attachments.iter().filter(|a| attachments.binary_search(a).is_err());
                    match dropping.entry(at).or_insert_with(|| Dropping::Ids(BTreeSet::new())) {
                        Dropping::All => {}
                        Dropping::Ids(ids) => ids.extend(gone.cloned()),
                    }
                }
                let seq = plan.next_seq;
                plan.next_seq += 1;
                if !docs.contains_key(&at) {
                    order.push(at);
                }
                docs.insert(at, (StoredDoc { owner, version, deleted, body, attachments }, Some(seq)));
                held.insert(at, !deleted);
                FirstResult { status: OpStatus::Applied, version: Some(version) }
            }
        };
        new_records.insert(key, IdempotencyRecord { fingerprint: checked.fingerprint, first });
        plan.records.push((key.to_owned(), IdempotencyRecord { fingerprint: checked.fingerprint, first }));
        plan.results.push(OpResult { version: first.version, ..OpResult::bare(first.status) });
    }
    for at in order {
        let Some((doc, Some(seq))) = docs.remove(&at) else { continue };
        let (collection, id) = (at.0.to_owned(), at.1.to_owned());
        match dropping.remove(&at) {
            Some(Dropping::All) => {
                plan.drop_attachments.push(AttachmentDrop::Document { collection: collection.clone(), id: id.clone() })
            }
            Some(Dropping::Ids(mut ids)) => {
                // Listed again by a later op of the push: it stays.
                ids.retain(|a| doc.attachments.binary_search(a).is_err());
                if !ids.is_empty() {
                    let ids = ids.into_iter().collect();
                    plan.drop_attachments.push(AttachmentDrop::Ids {
                        collection: collection.clone(),
                        id: id.clone(),
                        ids,
                    });
                }
            }
            None => {}
        }
        let stored_before = documents.get(&(collection.clone(), id.clone())).map(|d| d.attachments.as_slice());
        let attachments_changed = stored_before.unwrap_or_default() != doc.attachments.as_slice();
        match held.get(&at) {
            Some(true) => plan.held.push((collection.clone(), id.clone())),
            Some(false) => plan.dropped.push((collection.clone(), id.clone())),
            None => {}
        }
        plan.documents.push(DocumentWrite {
            collection,
            id,
            owner: doc.owner,
            version: doc.version,
            deleted: doc.deleted,
            body: doc.body,
            attachments: doc.attachments,
            attachments_changed,
            seq,
        });
    }
    plan
}

/// One stored document a pull page examines.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRow {
    /// The collection.
    pub collection: String,
    /// The id.
    pub id: String,
    /// Its change sequence number.
    pub seq: u64,
    /// Its stored state.
    pub doc: StoredDoc,
}

/// What one pull page sends and records, computed before anything is written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PullPlan {
    /// The changes, already serialized as the answer carries them.
    pub answer: PullAnswer,
    /// (collection, id) the device holds from now on and did not before.
    pub hold: Vec<(String, String)>,
    /// (collection, id, seq) the device held and is told to drop, with the sequence number
    /// of the change that dropped it: the store forgets the id only while the document is
    /// still at that change (a later change is judged by a later pull).
    pub release: Vec<(String, String, u64)>,
    /// The sequence number of the last row the page covers when it was cut by size before
    /// the end of the rows (the next page starts after it); None when it covers every row.
    pub cut_after: Option<u64>,
}

/// Plans a pull page: each row the user may read is sent projected and recorded as held;
/// each other row is sent as a tombstone only if the device holds it (`held` says which of
/// the rows it holds), and then forgotten. The page stops before the change that would take
/// its changes past `budget` bytes of JSON (never before its first change); the rows after
/// the cut are neither sent nor recorded.
pub fn plan_pull(
    rules: &Rules,
    user: &RuleUser,
    rows: Vec<PullRow>,
    held: &HashSet<(String, String)>,
    budget: usize,
) -> PullPlan {
    let mut plan = PullPlan::default();
    let mut covered: Option<u64> = None;
    for mut row in rows {
        let at = (row.collection, row.id);
        let change = match view(rules, user, &at.0, &row.doc) {
            View::Put(body) => Some(Change {
                collection: at.0.clone(),
                id: at.1.clone(),
                op: OpKind::Put,
                version: Some(row.doc.version),
                body: Some(body),
                attachments: std::mem::take(&mut row.doc.attachments),
            }),
            View::Gone if held.contains(&at) => Some(Change {
                collection: at.0.clone(),
                id: at.1.clone(),
                op: OpKind::Delete,
                version: None,
                body: None,
                attachments: Vec::new(),
            }),
            View::Gone => None,
        };
        if let Some(change) = change {
            if !plan.answer.push_within(&change, budget) {
                plan.cut_after = covered;
                break;
            }
            match change.op {
                OpKind::Put if !held.contains(&at) => plan.hold.push(at),
                OpKind::Put => {}
                OpKind::Delete => plan.release.push((at.0, at.1, row.seq)),
            }
        }
        covered = Some(row.seq);
    }
    plan
}
