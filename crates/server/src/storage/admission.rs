//! What admitting a signed request reads and writes (schema version 10 on both backends;
//! docs/adr/0011-verified-session-cache.md): the request nonces, inserted a batch at a time
//! (group commit), and the store-wide revocation epoch.
//!
//! The revocation epoch is one counter in the store. Database triggers raise it in the
//! transaction of every change to what a cached session holds: a session revoked (or its key
//! id, user, device or secret changed), a session deleted, a directive added, acknowledged
//! or deleted. A trigger, not the store's methods, so that no method, console action,
//! `fieldvault-server` subcommand in another process, or later change can revoke without
//! raising it. An instance that read a session at epoch E and reads E again later knows
//! nothing it cached of that session has changed in between.

use super::SessionRecord;

/// Schema version 10 of both backends: the `revocation_epoch` counter (one row) and the
/// triggers that raise it.
pub const SCHEMA_VERSION_REVOCATIONS: i64 = 10;

/// The largest number of nonces one group commit takes; the requests queued beyond it wait
/// for the next.
pub const MAX_NONCE_BATCH: usize = 512;

/// One request's nonce, to be recorded until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NonceClaim {
    /// The session's key id.
    pub key_id: String,
    /// The 16 nonce bytes.
    pub nonce: [u8; 16],
    /// Kept until this time (Unix seconds).
    pub expires_at: u64,
}

/// What one group commit of nonces found ([`Store::claim_nonces`](super::Store::claim_nonces)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedNonces {
    /// One per claim, in order: true when this claim inserted its nonce; false when the
    /// nonce was there before (a replay).
    pub fresh: Vec<bool>,
    /// The revocation epoch as the batch's transaction read it.
    pub revocation_epoch: u64,
}

/// A session as read for a request, with the revocation epoch read in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRead {
    /// The session the key id names, if any.
    pub session: Option<SessionRecord>,
    /// The revocation epoch in the same snapshot as `session`.
    pub revocation_epoch: u64,
}
