//! Push and pull (SPEC section 5): the wire types, the idempotency fingerprint, and the
//! decision each op gets. Pure: the stored document and the rules are arguments, so the
//! server's storage (SQLite or PostgreSQL) and the tests apply exactly the same logic.
//!
//! The decision table (docs/protocol.md, "Push"):
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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rules::{RuleUser, Rules};

/// Most ops in one push (`bad_request` beyond; docs/protocol.md, section 14.1).
pub const MAX_PUSH_OPS: usize = 500;
/// Default page size of a pull.
pub const DEFAULT_PULL_LIMIT: u32 = 500;
/// Largest page size of a pull.
pub const MAX_PULL_LIMIT: u32 = 5000;
/// Longest collection name.
pub const MAX_COLLECTION_LEN: usize = 64;
/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Shortest and longest idempotency key.
pub const IDEMPOTENCY_KEY_LEN: std::ops::RangeInclusive<usize> = 16..=128;

/// What an op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Create or update.
    Put,
    /// Delete (leaves a tombstone).
    Delete,
}

/// One mutation as a device sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushOp {
    /// Scoped to (user, key); a retry sends the same key.
    pub idempotency_key: String,
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// Put or delete.
    pub op: OpKind,
    /// The projected document (a JSON object) for a put; absent or null for a delete.
    #[serde(default)]
    pub body: Option<Value>,
    /// The version the device last saw; 0 for a new document.
    pub base_version: u64,
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
}

impl OpResult {
    /// A result with a status and nothing else.
    pub fn bare(status: OpStatus) -> OpResult {
        OpResult { status, version: None, body: None, deleted: false, first: None }
    }
}

/// `POST /v1/sync/push` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// One per op, in order.
    pub results: Vec<OpResult>,
}

/// One change in a pull page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// `GET /v1/sync/pull` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Changes in a stable order.
    pub changes: Vec<Change>,
    /// Pass as `since` next time.
    pub cursor: String,
    /// Whether another page follows at once.
    pub has_more: bool,
}

/// Why a push or an op is malformed (400 `bad_request`, nothing applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

/// Checks a collection name: 1-64 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit
/// (the vault's own rule).
pub fn check_collection(name: &str) -> Result<(), OpError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COLLECTION_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(OpError(format!(
            "a collection name is 1 to {MAX_COLLECTION_LEN} of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )))
    }
}

/// Checks a document id: 1-256 bytes of UTF-8 without control characters.
pub fn check_id(id: &str) -> Result<(), OpError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(OpError(format!("a document id is 1 to {MAX_ID_BYTES} bytes without control characters")));
    }
    Ok(())
}

/// Checks an idempotency key: 16-128 of `A-Z a-z 0-9 - _ . :`.
pub fn check_idempotency_key(key: &str) -> Result<(), OpError> {
    if IDEMPOTENCY_KEY_LEN.contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        Ok(())
    } else {
        Err(OpError("an idempotency_key is 16 to 128 of A-Z a-z 0-9 - _ . :".into()))
    }
}

/// An op checked and fingerprinted, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedOp {
    /// The parsed op.
    pub op: PushOp,
    /// SHA-256 of the op, without its key, in RFC 8785 canonical JSON.
    pub fingerprint: [u8; 32],
    /// When the op was made, if its key says (a UUIDv7 key carries its creation time).
    pub made_at: Option<u64>,
}

/// Parses one op as received: the fingerprint is taken over exactly what the device sent
/// (minus `idempotency_key`), so two clients that serialise the same op differently (key
/// order, number spelling, whitespace) get the same fingerprint.
///
/// # Errors
/// [`OpError`] naming what is malformed: unknown or missing fields, a bad key, collection,
/// id, or a put without an object body.
pub fn check_op(raw: &Value) -> Result<CheckedOp, OpError> {
    check_owned_op(raw.clone())
}

/// [`check_op`] on an owned value (no copy of the op).
///
/// # Errors
/// As [`check_op`].
pub fn check_owned_op(raw: Value) -> Result<CheckedOp, OpError> {
    let Value::Object(mut map) = raw else { return Err(OpError("each op is a JSON object".into())) };
    let key = map.remove("idempotency_key");
    let fingerprint = digest_canonical(&map)?;
    if let Some(k) = key {
        map.insert("idempotency_key".into(), k);
    }
    let op: PushOp = serde_json::from_value(Value::Object(map)).map_err(|e| OpError(shape_error(&e)))?;
    check_idempotency_key(&op.idempotency_key)?;
    check_collection(&op.collection)?;
    check_id(&op.id)?;
    match (op.op, &op.body) {
        (OpKind::Put, Some(Value::Object(_))) | (OpKind::Delete, None | Some(Value::Null)) => {}
        (OpKind::Put, _) => return Err(OpError("a put carries a JSON object as body".into())),
        (OpKind::Delete, _) => return Err(OpError("a delete carries no body".into())),
    }
    Ok(CheckedOp { fingerprint, made_at: uuid_v7_time(&op.idempotency_key), op })
}

/// What is wrong with an op's shape, naming fields but never echoing a value (serde's
/// "invalid type" messages quote the value, which may be document content).
fn shape_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("unknown field") || text.starts_with("missing field") {
        let field = text.split('`').nth(1).unwrap_or("?");
        let what = if text.starts_with("unknown") { "unknown" } else { "missing" };
        format!("malformed op: {what} field {field:?}")
    } else {
        "malformed op: a field has the wrong type or value".to_owned()
    }
}

/// SHA-256 over the RFC 8785 canonical form of `op`.
///
/// # Errors
/// A value JCS cannot represent (never the case for parsed JSON).
pub fn fingerprint(op: &Value) -> Result<[u8; 32], OpError> {
    digest_canonical(op)
}

fn digest_canonical<T: Serialize>(op: &T) -> Result<[u8; 32], OpError> {
    let canonical = serde_jcs::to_vec(op).map_err(|e| OpError(format!("the op has no canonical form: {e}")))?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Ok(out)
}

/// The creation time (Unix seconds) of a key written as a UUIDv7 in its canonical text
/// form (RFC 9562: 48-bit Unix milliseconds first, version nibble 7, variant 10); None for
/// any other key.
pub fn uuid_v7_time(key: &str) -> Option<u64> {
    let b = key.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: String = key.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let version = hex.as_bytes()[12];
    let variant = u8::from_str_radix(&hex[16..17], 16).ok()?;
    if version != b'7' || variant & 0b1100 != 0b1000 {
        return None;
    }
    u64::from_str_radix(&hex[..12], 16).ok().map(|ms| ms / 1000)
}

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
    },
    /// Answer `conflict` (not recorded against the key).
    Conflict(OpResult),
    /// Answer `forbidden` (recorded against the key).
    Forbidden,
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
            if rules.can_write(user, coll, Some(&s.body), Some(&new)) {
                Decision::Apply { version: s.version + 1, body: new, deleted: false, owner: s.owner.clone() }
            } else {
                Decision::Forbidden
            }
        }
        (OpKind::Delete, Some(s)) => {
            if rules.can_write(user, coll, Some(&s.body), None) {
                Decision::Apply {
                    version: s.version + 1,
                    body: tombstone_body(&s.owner),
                    deleted: true,
                    owner: s.owner.clone(),
                }
            } else {
                Decision::Forbidden
            }
        }
    }
}

/// A create (or a re-create over a tombstone, which keeps the counting going).
fn create(rules: &Rules, user: &RuleUser, op: &PushOp, tombstone: Option<&StoredDoc>) -> Decision {
    let Some(new) = merged(rules, op, None, &user.id) else { return Decision::Forbidden };
    if !rules.can_write(user, &op.collection, None, Some(&new)) {
        return Decision::Forbidden;
    }
    let version = tombstone.map_or(1, |t| t.version + 1);
    Decision::Apply { version, body: new, deleted: false, owner: user.id.clone() }
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
    /// The change sequence number of its last change in this push.
    pub seq: u64,
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
    /// (collection, id) deleted by this push: their attachments go too.
    pub deleted: Vec<(String, String)>,
    /// The next unused change sequence number.
    pub next_seq: u64,
}

/// Plans a push: every op decided in order against the stored state as earlier ops of the
/// same push leave it. `documents` holds the stored state of every (collection, id) the ops
/// name (absent = none), `records` the stored idempotency records of their keys.
pub fn plan_push(
    rules: &Rules,
    user: &RuleUser,
    ops: &[CheckedOp],
    documents: &std::collections::HashMap<(String, String), StoredDoc>,
    records: &std::collections::HashMap<String, IdempotencyRecord>,
    expired_before: u64,
    first_seq: u64,
) -> PushPlan {
    use std::collections::HashMap;
    let mut docs: HashMap<(&str, &str), (StoredDoc, Option<u64>)> = HashMap::new();
    let mut new_records: HashMap<&str, IdempotencyRecord> = HashMap::new();
    let mut held: HashMap<(&str, &str), bool> = HashMap::new();
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
        if checked.made_at.is_some_and(|t| t < expired_before) {
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
            Decision::Forbidden => FirstResult { status: OpStatus::Forbidden, version: None },
            Decision::Apply { version, body, deleted, owner } => {
                let seq = plan.next_seq;
                plan.next_seq += 1;
                if !docs.contains_key(&at) {
                    order.push(at);
                }
                docs.insert(at, (StoredDoc { owner, version, deleted, body }, Some(seq)));
                held.insert(at, !deleted);
                if deleted {
                    plan.deleted.push((at.0.to_owned(), at.1.to_owned()));
                }
                FirstResult { status: OpStatus::Applied, version: Some(version) }
            }
        };
        new_records.insert(key, IdempotencyRecord { fingerprint: checked.fingerprint, first });
        plan.records.push((key.to_owned(), IdempotencyRecord { fingerprint: checked.fingerprint, first }));
        plan.results.push(OpResult { version: first.version, ..OpResult::bare(first.status) });
    }
    for at in order {
        let Some((doc, Some(seq))) = docs.remove(&at) else { continue };
        plan.documents.push(DocumentWrite {
            collection: at.0.to_owned(),
            id: at.1.to_owned(),
            owner: doc.owner,
            version: doc.version,
            deleted: doc.deleted,
            body: doc.body,
            seq,
        });
        match held.get(&at) {
            Some(true) => plan.held.push((at.0.to_owned(), at.1.to_owned())),
            Some(false) => plan.dropped.push((at.0.to_owned(), at.1.to_owned())),
            None => {}
        }
    }
    plan
}

/// What a pull shows of one stored document to one device.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// Send it, projected; the device now holds it.
    Put(Value),
    /// Send a tombstone if the device holds it.
    Gone,
}

/// One stored document a pull page examines.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRow {
    /// The collection.
    pub collection: String,
    /// The id.
    pub id: String,
    /// Its stored state.
    pub doc: StoredDoc,
}

/// What one pull page sends and records, computed before anything is written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PullPlan {
    /// The changes, in the rows' order.
    pub changes: Vec<Change>,
    /// (collection, id) the device holds from now on and did not before.
    pub hold: Vec<(String, String)>,
    /// (collection, id) the device held and is told to drop.
    pub release: Vec<(String, String)>,
}

/// Plans a pull page: each row the user may read is sent projected and recorded as held;
/// each other row is sent as a tombstone only if the device holds it (`held` says which of
/// the rows it holds), and then forgotten.
pub fn plan_pull(
    rules: &Rules,
    user: &RuleUser,
    rows: Vec<PullRow>,
    held: &std::collections::HashSet<(String, String)>,
) -> PullPlan {
    let mut plan = PullPlan::default();
    for row in rows {
        let at = (row.collection, row.id);
        match view(rules, user, &at.0, &row.doc) {
            View::Put(body) => {
                plan.changes.push(Change {
                    collection: at.0.clone(),
                    id: at.1.clone(),
                    op: OpKind::Put,
                    version: Some(row.doc.version),
                    body: Some(body),
                });
                if !held.contains(&at) {
                    plan.hold.push(at);
                }
            }
            View::Gone if held.contains(&at) => {
                plan.changes.push(Change {
                    collection: at.0.clone(),
                    id: at.1.clone(),
                    op: OpKind::Delete,
                    version: None,
                    body: None,
                });
                plan.release.push(at);
            }
            View::Gone => {}
        }
    }
    plan
}

/// The pull view of a stored document for `user`.
pub fn view(rules: &Rules, user: &RuleUser, collection: &str, stored: &StoredDoc) -> View {
    if !stored.deleted && rules.syncs(collection) && readable(rules, user, collection, stored) {
        View::Put(rules.project(collection, &stored.body))
    } else {
        View::Gone
    }
}

/// The cursor MAC key (the server derives it from its store key).
pub struct CursorKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey([redacted])")
    }
}

/// Where a pull stands: the last change sequence sent and the access epoch it was computed
/// under. A cursor from another epoch (the rules, or the user's roles or attributes, have
/// changed since) restarts the scan from the beginning, which re-checks everything the
/// device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last change sequence number covered.
    pub seq: u64,
    /// The access epoch ([`access_epoch`]).
    pub epoch: [u8; 8],
}

const CURSOR_LABEL: &[u8] = b"fieldvault/v1/cursor";

impl CursorKey {
    /// A key from 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> CursorKey {
        CursorKey(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes))
    }

    fn tag(&self, user: &str, body: &[u8; 16]) -> aws_lc_rs::hmac::Tag {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.0);
        ctx.update(CURSOR_LABEL);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user.as_bytes());
        ctx.update(body);
        ctx.sign()
    }

    /// The opaque text of a cursor, bound to `user`: base64url(seq || epoch || tag[..16]).
    pub fn encode(&self, user: &str, cursor: Cursor) -> String {
        use base64::Engine;
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&cursor.seq.to_be_bytes());
        body[8..].copy_from_slice(&cursor.epoch);
        let tag = self.tag(user, &body);
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&body);
        out[16..].copy_from_slice(&tag.as_ref()[..16]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// Reads a cursor this server issued to `user`.
    ///
    /// # Errors
    /// Anything else: malformed, another user's, forged.
    pub fn decode(&self, user: &str, text: &str) -> Result<Cursor, OpError> {
        use base64::Engine;
        let bad = || OpError("the cursor is not one this server issued to this user".into());
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        let body: [u8; 16] = raw[..16].try_into().map_err(|_| bad())?;
        let tag = self.tag(user, &body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&tag.as_ref()[..16], &raw[16..])) {
            return Err(bad());
        }
        let seq = u64::from_be_bytes(body[..8].try_into().map_err(|_| bad())?);
        let epoch: [u8; 8] = body[8..].try_into().map_err(|_| bad())?;
        Ok(Cursor { seq, epoch })
    }
}

/// The access epoch of `user` under `rules`: changes whenever the rules or the user's roles
/// or attributes change.
pub fn access_epoch(rules: &Rules, user: &RuleUser) -> [u8; 8] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"fieldvault/v1/access-epoch");
    ctx.update(&rules.fingerprint());
    let who = serde_json::json!({ "id": user.id, "roles": user.roles, "attributes": user.attributes });
    ctx.update(&serde_jcs::to_vec(&who).unwrap_or_default());
    let d = ctx.finish();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d.as_ref()[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(id: &str) -> RuleUser {
        RuleUser { id: id.into(), roles: vec![], attributes: Map::new() }
    }

    fn op(kind: &str, base: u64, body: Option<Value>) -> PushOp {
        let mut v = json!({ "idempotency_key": "k-0123456789abcdef", "collection": "visits", "id": "v1",
            "op": kind, "base_version": base });
        if let Some(b) = body {
            v["body"] = b;
        }
        check_op(&v).expect("valid op").op
    }

    fn stored(owner: &str, version: u64, deleted: bool, body: Value) -> StoredDoc {
        StoredDoc { owner: owner.into(), version, deleted, body }
    }

    #[test]
    fn the_fingerprint_ignores_key_order_spacing_number_spelling_and_the_key_itself() {
        let a: Value = serde_json::from_str(
            r#"{"idempotency_key":"k-0123456789abcdef","collection":"c","id":"x","op":"put","body":{"n":1,"s":"é"},"base_version":0}"#,
        )
        .expect("json");
        let b: Value = serde_json::from_str(
            r#"{ "base_version": 0, "body": {"s": "\u00e9", "n": 1.0e0}, "op": "put", "id": "x", "collection": "c", "idempotency_key": "k-other-key-000000" }"#,
        )
        .expect("json");
        assert_eq!(check_op(&a).expect("a").fingerprint, check_op(&b).expect("b").fingerprint);
        let mut c = a.clone();
        c["body"]["n"] = json!(2);
        assert_ne!(check_op(&a).expect("a").fingerprint, check_op(&c).expect("c").fingerprint);
    }

    #[test]
    fn malformed_ops_are_refused_with_the_reason() {
        let base = json!({ "idempotency_key": "k-0123456789abcdef", "collection": "visits", "id": "v1",
            "op": "put", "body": {}, "base_version": 0 });
        let cases: [(&str, Value); 8] = [
            ("idempotency_key", json!("short")),
            ("idempotency_key", json!("k-0123456789abcdef with spaces")),
            ("collection", json!(".hidden")),
            ("id", json!("a\u{0}b")),
            ("op", json!("patch")),
            ("body", json!([1])),
            ("base_version", json!(-1)),
            ("extra", json!(true)),
        ];
        for (field, value) in cases {
            let mut v = base.clone();
            v[field] = value;
            assert!(check_op(&v).is_err(), "{field}");
        }
        let mut leaky = base.clone();
        leaky["base_version"] = json!("patient Jane Roe, HIV+");
        let err = check_op(&leaky).expect_err("a string base_version");
        assert!(!err.0.contains("Jane"), "the value is not echoed: {err}");
        let mut unknown = base.clone();
        unknown["extra"] = json!(1);
        assert_eq!(check_op(&unknown).expect_err("unknown").0, "malformed op: unknown field \"extra\"");
        let mut del = base.clone();
        del["op"] = json!("delete");
        assert!(check_op(&del).is_err(), "a delete with a body");
        del["body"] = Value::Null;
        assert!(check_op(&del).is_ok());
        assert!(check_op(&json!([])).is_err());
    }

    #[test]
    fn uuid_v7_keys_carry_their_time_and_other_keys_none() {
        assert_eq!(uuid_v7_time("0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5f"), Some(0x0190_f3c2_7b1e / 1000));
        assert_eq!(uuid_v7_time("0190f3c2-7b1e-4c3a-9f00-5a1b2c3d4e5f"), None, "version 4");
        assert_eq!(uuid_v7_time("0190f3c2-7b1e-7c3a-cf00-5a1b2c3d4e5f"), None, "wrong variant");
        assert_eq!(uuid_v7_time("0190f3c27b1e7c3a9f005a1b2c3d4e5f"), None, "no dashes");
        assert_eq!(uuid_v7_time("0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5g"), None);
    }

    #[test]
    fn decisions_follow_the_table_and_never_reveal_an_unreadable_document() {
        let rules = Rules::owner_only();
        let (alice, bob) = (user("alice"), user("bob"));
        let live = stored("alice", 3, false, json!({"owner": "alice", "x": 1}));
        let gone = stored("alice", 4, true, tombstone_body("alice"));
        // Creates.
        match decide(&rules, &alice, &op("put", 0, Some(json!({"x": 1}))), None) {
            Decision::Apply { version: 1, owner, body, deleted: false } => {
                assert_eq!((owner.as_str(), body), ("alice", json!({"x": 1, "owner": "alice"})));
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            decide(&rules, &bob, &op("put", 0, Some(json!({}))), Some(&gone)),
            Decision::Apply { version: 5, .. }
        ));
        // Another user's document: forbidden whatever the base or the op.
        for o in [
            op("put", 3, Some(json!({}))),
            op("put", 9, Some(json!({}))),
            op("put", 0, Some(json!({}))),
            op("delete", 3, None),
        ] {
            assert_eq!(decide(&rules, &bob, &o, Some(&live)), Decision::Forbidden, "{o:?}");
        }
        // Absent with a base, or a delete of nothing: forbidden too.
        assert_eq!(decide(&rules, &alice, &op("put", 2, Some(json!({}))), None), Decision::Forbidden);
        assert_eq!(decide(&rules, &alice, &op("delete", 0, None), None), Decision::Forbidden);
        // Own document: conflict shows the stored version projected; a tombstone as deleted.
        match decide(&rules, &alice, &op("put", 2, Some(json!({"x": 2}))), Some(&live)) {
            Decision::Conflict(r) => {
                assert_eq!((r.version, r.body, r.deleted), (Some(3), Some(json!({"owner": "alice", "x": 1})), false))
            }
            d => panic!("{d:?}"),
        }
        match decide(&rules, &alice, &op("delete", 3, None), Some(&gone)) {
            Decision::Conflict(r) => assert_eq!((r.version, r.body, r.deleted), (Some(4), None, true)),
            d => panic!("{d:?}"),
        }
        // Right base: applied; a delete leaves only the owner.
        assert!(matches!(
            decide(&rules, &alice, &op("put", 3, Some(json!({"x": 2}))), Some(&live)),
            Decision::Apply { version: 4, deleted: false, .. }
        ));
        match decide(&rules, &alice, &op("delete", 3, None), Some(&live)) {
            Decision::Apply { version: 4, deleted: true, body, .. } => assert_eq!(body, json!({"owner": "alice"})),
            d => panic!("{d:?}"),
        }
        // The owner is the server's.
        assert_eq!(
            decide(&rules, &alice, &op("put", 3, Some(json!({"owner": "bob"}))), Some(&live)),
            Decision::Forbidden
        );
        assert!(matches!(
            decide(&rules, &alice, &op("put", 3, Some(json!({"owner": "alice"}))), Some(&live)),
            Decision::Apply { .. }
        ));
    }

    fn checked(key: &str, id: &str, kind: &str, base: u64, body: Option<Value>) -> CheckedOp {
        let mut v =
            json!({ "idempotency_key": key, "collection": "visits", "id": id, "op": kind, "base_version": base });
        if let Some(b) = body {
            v["body"] = b;
        }
        check_op(&v).expect("valid op")
    }

    #[test]
    fn a_plan_sees_earlier_ops_of_its_own_push_and_writes_each_document_once() {
        use std::collections::HashMap;
        let rules = Rules::owner_only();
        let alice = user("alice");
        let ops = [
            checked("key-0000000000000001", "a", "put", 0, Some(json!({"n": 1}))),
            checked("key-0000000000000002", "a", "put", 1, Some(json!({"n": 2}))),
            checked("key-0000000000000001", "a", "put", 0, Some(json!({"n": 1}))),
            checked("key-0000000000000003", "b", "delete", 4, None),
            checked("key-0000000000000004", "a", "put", 1, Some(json!({"n": 3}))),
            checked("key-0000000000000005", "c", "put", 0, Some(json!({"owner": "bob"}))),
        ];
        let mut documents = HashMap::new();
        documents.insert(("visits".into(), "b".into()), stored("alice", 4, false, json!({"owner": "alice"})));
        let mut records = HashMap::new();
        let old = IdempotencyRecord {
            fingerprint: [9; 32],
            first: FirstResult { status: OpStatus::Applied, version: Some(1) },
        };
        records.insert("key-0000000000000004".to_owned(), old);
        let plan = plan_push(&rules, &alice, &ops, &documents, &records, 0, 100);
        let statuses: Vec<OpStatus> = plan.results.iter().map(|r| r.status).collect();
        use OpStatus::*;
        assert_eq!(statuses, [Applied, Applied, Duplicate, Applied, IdempotencyMismatch, Forbidden]);
        assert_eq!(plan.results[1].version, Some(2));
        assert_eq!(plan.results[2].first, Some(FirstResult { status: Applied, version: Some(1) }));
        // "a" is written once, at its last state and the number of its last change.
        let a = plan.documents.iter().find(|d| d.id == "a").expect("a");
        assert_eq!((a.version, a.seq, &a.body), (2, 101, &json!({"n": 2, "owner": "alice"})));
        let b = plan.documents.iter().find(|d| d.id == "b").expect("b");
        assert_eq!((b.version, b.deleted, b.seq), (5, true, 102));
        assert_eq!(plan.documents.len(), 2);
        assert_eq!(plan.next_seq, 103);
        assert_eq!(plan.held, [("visits".to_owned(), "a".to_owned())]);
        assert_eq!(plan.dropped, [("visits".to_owned(), "b".to_owned())]);
        assert_eq!(plan.deleted, [("visits".to_owned(), "b".to_owned())]);
        // Recorded: the three applied and the forbidden, each key once; not the mismatch.
        let keys: Vec<&str> = plan.records.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["key-0000000000000001", "key-0000000000000002", "key-0000000000000003", "key-0000000000000005"]
        );
    }

    #[test]
    fn a_pull_plan_sends_what_is_readable_and_tombstones_only_what_the_device_holds() {
        use std::collections::HashSet;
        let rules = Rules::owner_only();
        let alice = user("alice");
        let row = |id: &str, owner: &str, deleted: bool| PullRow {
            collection: "visits".into(),
            id: id.into(),
            doc: stored(
                owner,
                2,
                deleted,
                if deleted { tombstone_body(owner) } else { json!({"owner": owner, "n": 1}) },
            ),
        };
        let rows = vec![
            row("mine", "alice", false),
            row("mine-held", "alice", false),
            row("gone-held", "alice", true),
            row("gone-never-held", "alice", true),
            row("bobs-held", "bob", false),
            row("bobs-never-held", "bob", false),
        ];
        let held: HashSet<(String, String)> =
            ["mine-held", "gone-held", "bobs-held"].iter().map(|id| ("visits".to_owned(), (*id).to_owned())).collect();
        let plan = plan_pull(&rules, &alice, rows, &held);
        let shown: Vec<(&str, OpKind)> = plan.changes.iter().map(|c| (c.id.as_str(), c.op)).collect();
        assert_eq!(
            shown,
            [
                ("mine", OpKind::Put),
                ("mine-held", OpKind::Put),
                ("gone-held", OpKind::Delete),
                ("bobs-held", OpKind::Delete)
            ]
        );
        assert_eq!(plan.changes[0].body, Some(json!({"owner": "alice", "n": 1})));
        assert_eq!(plan.changes[0].version, Some(2));
        assert_eq!(plan.hold, [("visits".to_owned(), "mine".to_owned())], "only what was not held yet");
        let released: Vec<&str> = plan.release.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(released, ["gone-held", "bobs-held"]);
    }

    #[test]
    fn cursors_are_bound_to_their_user_and_refuse_any_change() {
        let key = CursorKey::new(&[7; 32]);
        let c = Cursor { seq: 42, epoch: [1; 8] };
        let text = key.encode("alice", c);
        assert_eq!(key.decode("alice", &text), Ok(c));
        assert!(key.decode("bob", &text).is_err());
        assert!(CursorKey::new(&[8; 32]).decode("alice", &text).is_err());
        for i in 0..text.len() {
            let mut b = text.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            if let Ok(t) = String::from_utf8(b)
                && t != text
            {
                assert!(key.decode("alice", &t).is_err(), "changed at {i}");
            }
        }
        assert!(key.decode("alice", "").is_err());
        assert!(key.decode("alice", "not base64 at all!").is_err());
    }

    #[test]
    fn the_access_epoch_changes_with_roles_attributes_and_rules() {
        let rules = Rules::owner_only();
        let a = user("alice");
        let mut b = a.clone();
        b.roles.push("supervisor".into());
        let mut c = a.clone();
        c.attributes.insert("region".into(), json!("north"));
        let other =
            Rules::from_toml("version = 1\n[collections.v]\nread = \"true\"\nwrite = \"true\"\n").expect("rules");
        let epochs =
            [access_epoch(&rules, &a), access_epoch(&rules, &b), access_epoch(&rules, &c), access_epoch(&other, &a)];
        for i in 0..epochs.len() {
            for j in i + 1..epochs.len() {
                assert_ne!(epochs[i], epochs[j], "{i} vs {j}");
            }
        }
        assert_eq!(access_epoch(&rules, &a), access_epoch(&Rules::owner_only(), &a.clone()));
    }
}
