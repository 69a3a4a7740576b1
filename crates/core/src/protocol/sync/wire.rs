//! The push and pull bodies as they travel (docs/protocol.md, "Push" and "Pull").

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Create or update.
    Put,
    /// Delete (leaves a tombstone).
    Delete,
}

/// One mutation as a device sends it. `B` is how the body is held: a parsed [`Value`] (the
/// server, which merges it) or, on a device sending what it stored, the JSON text as it is
/// (`Box<serde_json::value::RawValue>`), which travels byte for byte the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushOp<B = Value> {
    /// Scoped to (user, key); a retry sends the same key.
    pub idempotency_key: String,
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// Put or delete.
    pub op: OpKind,
    /// The projected document (a JSON object) for a put; absent or null for a delete.
    #[serde(default = "Option::default")]
    pub body: Option<B>,
    /// The version the device last saw; 0 for a new document.
    pub base_version: u64,
    /// A put's whole attachment list after the op (ADR 0008): ids sorted and distinct.
    /// Absent, the stored list is kept; always absent on a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<String>>,
}

/// `POST /v1/sync/push` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The ops, applied in order in one transaction.
    pub ops: Vec<Value>,
    /// The account's sync counter (rollback detection).
    pub device_seq: u64,
}

/// The status of one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// Applied; `version` is the new version.
    Applied,
    /// The key was seen before with the same op; `first` holds that first result.
    Duplicate,
    /// `base_version` is not the stored version; the stored document comes back, projected.
    Conflict,
    /// The rules refuse it, or the target is a document the user cannot read.
    Forbidden,
    /// The key was seen before with another op.
    IdempotencyMismatch,
    /// The op is older than the idempotency records are kept.
    Expired,
    /// The document the op would store (after the merge) is past
    /// [`MAX_DOCUMENT_BYTES`](crate::names::MAX_DOCUMENT_BYTES); nothing applied, not recorded.
    TooLarge,
}

impl OpStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::Applied => "applied",
            OpStatus::Duplicate => "duplicate",
            OpStatus::Conflict => "conflict",
            OpStatus::Forbidden => "forbidden",
            OpStatus::IdempotencyMismatch => "idempotency_mismatch",
            OpStatus::Expired => "expired",
            OpStatus::TooLarge => "too_large",
        }
    }

    /// From the wire name (as stored).
    pub fn from_name(s: &str) -> Option<OpStatus> {
        [
            OpStatus::Applied,
            OpStatus::Duplicate,
            OpStatus::Conflict,
            OpStatus::Forbidden,
            OpStatus::IdempotencyMismatch,
            OpStatus::Expired,
            OpStatus::TooLarge,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// The first result of a key, returned with `duplicate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstResult {
    /// `applied` or `forbidden` (the only results recorded).
    pub status: OpStatus,
    /// The version `applied` produced; absent for `forbidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// One op's result, in the order of the ops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// What happened.
    pub status: OpStatus,
    /// `applied`: the new version; `conflict`: the stored version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `conflict`: the stored document as the user may read it (null when it was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// `conflict`: whether the stored document is a deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// `duplicate`: the first result for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<FirstResult>,
    /// `conflict`: the stored document's attachment list (absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
}

impl OpResult {
    /// A result with a status and nothing else.
    pub fn bare(status: OpStatus) -> OpResult {
        OpResult { status, version: None, body: None, deleted: false, first: None, attachments: Vec::new() }
    }
}

/// `POST /v1/sync/push` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// One per op, in order.
    pub results: Vec<OpResult>,
}

/// One change in a pull page. `B` holds the body: a parsed [`Value`], or on a device that
/// stores it as it came, the JSON text (`Box<serde_json::value::RawValue>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change<B = Value> {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// `put`: hold this version; `delete`: drop the document (deleted, or no longer readable).
    pub op: OpKind,
    /// The version (absent on a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The projected document (absent on a tombstone).
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub body: Option<B>,
    /// A put's attachment list (ADR 0008; absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
}

/// `GET /v1/sync/pull` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResponse<B = Value> {
    /// Changes in a stable order.
    pub changes: Vec<Change<B>>,
    /// Pass as `since` next time.
    pub cursor: String,
    /// Whether another page follows at once.
    pub has_more: bool,
}

/// A `GET /v1/sync/pull` answer written as its page is planned: each change is serialized
/// once, straight into the bytes that are hashed, signed and sent (a [`PullResponse`] on the
/// wire), so a page is never held as values and as JSON at once, nor copied to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullAnswer {
    /// `{"changes":[` and the changes so far, comma-separated.
    bytes: Vec<u8>,
    /// How many changes.
    count: usize,
}

/// What opens an answer, before its first change.
const ANSWER_HEAD: &[u8] = b"{\"changes\":[";

impl Default for PullAnswer {
    fn default() -> Self {
        PullAnswer { bytes: ANSWER_HEAD.to_vec(), count: 0 }
    }
}

impl PullAnswer {
    /// An answer with no change yet.
    pub fn new() -> PullAnswer {
        PullAnswer::default()
    }

    /// Appends `change` if the changes then stay within `budget` bytes, or if it is the
    /// first (a page always carries at least one change). False, with nothing appended,
    /// otherwise.
    pub fn push_within(&mut self, change: &Change, budget: usize) -> bool {
        let before = self.bytes.len();
        if self.count > 0 {
            self.bytes.push(b',');
        }
        // Writing a `Change` (strings, numbers and JSON values, whose keys are strings) into
        // memory has no way to fail.
        serde_json::to_writer(&mut self.bytes, change).expect("a change serializes into memory");
        if self.count > 0 && self.changes_len() > budget {
            self.bytes.truncate(before);
            return false;
        }
        self.count += 1;
        true
    }

    /// How many changes the answer holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The bytes of the changes so far (their JSON and the commas between them).
    pub fn changes_len(&self) -> usize {
        self.bytes.len() - ANSWER_HEAD.len()
    }

    /// The whole answer: the changes, then `cursor` and `has_more`.
    pub fn finish(mut self, cursor: &str, has_more: bool) -> Vec<u8> {
        self.bytes.extend_from_slice(b"],\"cursor\":");
        serde_json::to_writer(&mut self.bytes, cursor).expect("a string serializes into memory");
        self.bytes.extend_from_slice(if has_more { b",\"has_more\":true}" } else { b",\"has_more\":false}" });
        self.bytes
    }
}
