//! Push and pull (SPEC section 5), by noun: the wire bodies ([`wire`]), checking an op as
//! received and its idempotency fingerprint ([`check`]), the decision each op gets and what
//! a pull shows ([`decide`](mod@decide)), the plans a store executes ([`plan`]), and pull cursors
//! ([`cursor`]). Pure: the stored document and the rules are arguments, so the server's
//! storage (SQLite or PostgreSQL), the device and the tests apply exactly the same logic.

pub mod check;
pub mod cursor;
pub mod decide;
pub mod plan;
#[cfg(test)]
mod tests;
pub mod wire;

pub use check::{
    CheckedOp, OpError, check_collection, check_id, check_idempotency_key, check_op, check_owned_op, fingerprint,
    uuid_v7, uuid_v7_time,
};
pub use cursor::{Cursor, CursorKey, access_epoch};
pub use decide::{Decision, StoredDoc, View, decide, json_len, readable, tombstone_body, view};
pub use plan::{AttachmentDrop, DocumentWrite, IdempotencyRecord, PullPlan, PullRow, PushPlan, plan_pull, plan_push};
pub use wire::{
    Change, FirstResult, OpKind, OpResult, OpStatus, PullAnswer, PullResponse, PushOp, PushRequest, PushResponse,
};

pub use crate::names::{MAX_COLLECTION_LEN, MAX_ID_BYTES};

/// Most ops in one push (`bad_request` beyond; docs/protocol.md, section 14.1).
pub const MAX_PUSH_OPS: usize = 500;
/// Default page size of a pull.
pub const DEFAULT_PULL_LIMIT: u32 = 500;
/// Largest page size of a pull.
pub const MAX_PULL_LIMIT: u32 = 5000;
/// How far after the server's time of receipt an idempotency key may be dated (a device
/// clock that jumped back after it learned its offset). A later key is refused: the record
/// of an op is kept for the retention plus this, counted from receipt, so that it outlives
/// every retry that is not `expired`.
pub const MAX_KEY_AHEAD_SECS: u64 = 86_400;
/// A pull page stops before the change that would take its changes past this many bytes of
/// JSON (SPEC section 5: a pull answer stays under 4 MiB of changes; a page always carries at
/// least one change, and a stored document is at most 1 MiB).
pub const MAX_PULL_CHANGE_BYTES: usize = 4 << 20;
/// No pull answer is larger than this, whatever `limit` asked for: the most a page can be is
/// [`MAX_PULL_CHANGE_BYTES`] plus one change, and a change is at most a 1 MiB document with
/// its names and its attachment list (at most 1000 ids, about 34 KiB); a larger one (stored
/// before documents were bounded) is refused, not sent.
pub const MAX_PULL_ANSWER_BYTES: usize = 16 << 20;
