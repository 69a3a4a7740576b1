//! Server storage behind one interface, [`Store`], with two implementations:
//! [`SqliteStore`] (the default: one SQLCipher file keyed by a key derived from the store key)
//! and [`PgStore`] (PostgreSQL, shared by any number of server instances).
//!
//! Everything every instance must agree on lives here: users, devices (with their device
//! secrets and lease keys: a device outlives its sessions), sessions, refresh tokens and
//! their spends, request nonces, login throttling, TOTP enrolments, and the audit log (a hash
//! chain, `fieldvault_core::audit`: every audited method takes its [`AuditEvent`] and appends
//! it first in its own transaction, committed only when the action applied). Secrets (session secrets,
//! device secrets, lease keys, a refresh token's successor, attachment content keys, TOTP
//! secrets) reach the store already
//! sealed by
//! [`crate::seal`]; the store keeps bytes. Each method that changes several rows does so in
//! one transaction, and the ones that decide security questions (nonce insert, refresh
//! spend, a login's device and TOTP step, a device's retirement) are single atomic statements or
//! serialised transactions on both backends.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::protocol::attachments::check_attachment_list;
use fieldvault_core::protocol::auth::DeviceReason;
use fieldvault_core::protocol::sync::{CheckedOp, Cursor, OpResult, PullAnswer, StoredDoc};
use fieldvault_core::rules::Rules;

mod admins;
pub mod admission;
mod fleet;

pub use admins::{AdminRecord, AdminSession, Page};
pub use admission::{ClaimedNonces, MAX_NONCE_BATCH, NonceClaim, SessionRead};
pub use fieldvault_core::audit::{AuditEvent, AuditRecord};
pub use fleet::{DIRECTIVES_PER_DEVICE, DeviceFilter, DirectiveRecord, DirectiveState, SessionSummary, Sessions};

pub use postgres::PgStore;
pub use postgres::idempotency_lock_id;
pub use sqlite::SqliteStore;

/// What a storage call can fail with. Never shown to clients (they get `internal`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named user already exists.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// The named administrator already exists.
    #[error("administrator {0:?} already exists")]
    AdminExists(String),
    /// The database failed.
    #[error("storage: {0}")]
    Backend(String),
    /// A stored value is not one its column may hold (a negative version, JSON that does not
    /// parse, an unknown status): the database was changed outside this server, or damaged.
    /// Such a value is refused, never read as a default, which would hide the damage.
    #[error("corrupt {what} in the store")]
    Corrupt {
        /// The column, as `table.column`.
        what: &'static str,
        /// What is wrong with the value (never the value itself where it may be user data).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A number too large for the store's columns (SQL integers are signed 64-bit).
    #[error("{what} {value} is past the largest number the store holds")]
    OutOfRange {
        /// The column, as `table.column`.
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// The store's schema is newer than this build.
    #[error("the store's schema version {found} is newer than this build's ({supported})")]
    SchemaTooNew {
        /// Version found.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
}

impl StoreError {
    /// [`StoreError::Corrupt`]: the column `what` holds a value it may not.
    pub(crate) fn corrupt(what: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Corrupt { what, source: source.into() }
    }

    /// [`StoreError::Corrupt`] for stored JSON that does not parse. Only serde's category and
    /// position are kept: its message can quote the value, which may be a user's data.
    pub(crate) fn corrupt_json(what: &'static str, e: &serde_json::Error) -> Self {
        StoreError::corrupt(what, format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()))
    }
}

/// A stored integer that does not fit the type of what it counts.
#[derive(Debug, thiserror::Error)]
#[error("{0} is out of range")]
struct IntegerOutOfRange(i64);

/// A count, time, version or sequence number as both backends store it (SQL integers are
/// signed 64-bit). One past `i64::MAX` is [`StoreError::OutOfRange`], never clamped.
pub(crate) fn to_column(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// A stored count, time, version or sequence number, as the type it counts in. One that does
/// not fit (a negative version, a count past `u32::MAX`) is [`StoreError::Corrupt`] naming
/// the column `what`, never read as 0 or clamped.
pub(crate) fn from_column<T: TryFrom<i64>>(value: i64, what: &'static str) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| StoreError::corrupt(what, IntegerOutOfRange(value)))
}

/// A user's roles and attributes as both backends store them: JSON text.
pub(crate) fn encode_access(
    roles: &[String],
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> Result<(String, String), StoreError> {
    let text = |r: serde_json::Result<String>| r.map_err(|e| StoreError::Backend(format!("encoding access: {e}")));
    Ok((text(serde_json::to_string(roles))?, text(serde_json::to_string(attributes))?))
}

/// Reads back what [`encode_access`] stored. The error names the column, never its content.
pub(crate) fn decode_access(
    roles: &str,
    attributes: &str,
) -> Result<(Vec<String>, serde_json::Map<String, serde_json::Value>), StoreError> {
    let roles = serde_json::from_str(roles).map_err(|e| StoreError::corrupt_json("users.roles", &e))?;
    let attributes = serde_json::from_str(attributes).map_err(|e| StoreError::corrupt_json("users.attributes", &e))?;
    Ok((roles, attributes))
}

/// A stored document from its columns, as both backends keep them. `attachments` is the
/// list's JSON text ([`attachment_list_column`]); one that does not parse, or breaks the list
/// rules (sorted, distinct, well-formed ids), is [`StoreError::Corrupt`].
pub(crate) fn stored_doc(
    owner: String,
    version: i64,
    deleted: bool,
    body: &str,
    attachments: &str,
) -> Result<StoredDoc, StoreError> {
    let list: Vec<String> =
        serde_json::from_str(attachments).map_err(|e| StoreError::corrupt_json("documents.attachments", &e))?;
    check_attachment_list(&list).map_err(|e| StoreError::corrupt("documents.attachments", e))?;
    Ok(StoredDoc {
        owner,
        version: from_column(version, "documents.version")?,
        deleted,
        body: serde_json::from_str(body).map_err(|e| StoreError::corrupt_json("documents.body", &e))?,
        attachments: list,
    })
}

/// A document's attachment list as both backends store it: JSON text (`[]` when empty).
pub(crate) fn attachment_list_column(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("a list of strings serializes")
}

/// At most this many documents are read to answer which documents list an attachment id
/// ([`Store::documents_listing`]): ids are random, so more than one is already unusual,
/// and a user who lists someone's id on many documents must not make every lookup read them.
pub const MAX_LISTING_DOCUMENTS: u32 = 64;

/// An idempotency record from its columns, as both backends keep them.
pub(crate) fn idempotency_record(
    fingerprint: Vec<u8>,
    status: &str,
    version: Option<i64>,
) -> Result<fieldvault_core::protocol::sync::IdempotencyRecord, StoreError> {
    use fieldvault_core::protocol::sync::{FirstResult, IdempotencyRecord, OpStatus};
    Ok(IdempotencyRecord {
        fingerprint: fingerprint
            .try_into()
            .map_err(|_| StoreError::corrupt("idempotency.fingerprint", "not 32 bytes"))?,
        first: FirstResult {
            status: OpStatus::from_name(status)
                .ok_or_else(|| StoreError::corrupt("idempotency.status", "not an op status"))?,
            version: version.map(|v| from_column(v, "idempotency.version")).transpose()?,
        },
    })
}

/// The user as access rules see them, from the stored name, roles and attributes.
pub(crate) fn rule_user(
    name: &str,
    roles: &str,
    attributes: &str,
) -> Result<fieldvault_core::rules::RuleUser, StoreError> {
    let (roles, attributes) = decode_access(roles, attributes)?;
    Ok(fieldvault_core::rules::RuleUser { id: name.to_owned(), roles, attributes })
}

/// Why a device was retired, from its stored name (None: live).
pub(crate) fn retirement(name: Option<String>) -> Result<Option<DeviceReason>, StoreError> {
    name.map(|n| {
        DeviceReason::from_name(&n)
            .ok_or_else(|| StoreError::corrupt("devices.retired_reason", "not a retirement reason"))
    })
    .transpose()
}

/// A device's lease from its stored columns: None unless both id and sealed key are there.
pub(crate) fn lease(
    id: Option<String>,
    key_sealed: Option<Vec<u8>>,
    expires_at: Option<i64>,
) -> Result<Option<LeaseRecord>, StoreError> {
    Ok(match (id, key_sealed) {
        (Some(id), Some(key_sealed)) => Some(LeaseRecord {
            id,
            key_sealed,
            expires_at: from_column(expires_at.unwrap_or(0), "devices.lease_expires_at")?,
        }),
        _ => None,
    })
}

/// An audit record from its columns, as both backends keep them (`detail` is JSON text).
#[allow(clippy::too_many_arguments)]
pub(crate) fn audit_record(
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    target: String,
    detail: &str,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: from_column(seq, "audit.seq")?,
        at: from_column(at, "audit.at")?,
        actor,
        action,
        target,
        detail: serde_json::from_str(detail).map_err(|e| StoreError::corrupt_json("audit.detail", &e))?,
        prev_hash: prev_hash.try_into().map_err(|_| StoreError::corrupt("audit.prev_hash", "not 32 bytes"))?,
        hash: hash.try_into().map_err(|_| StoreError::corrupt("audit.hash", "not 32 bytes"))?,
    })
}

/// The record a retention cut appends: `cut`'s time and actor, the anchor (the first kept
/// record's seq and prev_hash) and how many records went in its detail.
pub(crate) fn retention_cut_event(cut: &AuditEvent, first_seq: u64, first_prev: &[u8], deleted: u64) -> AuditEvent {
    AuditEvent::new(cut.at, cut.actor.clone(), fieldvault_core::audit::RETENTION_CUT, "")
        .with("first_kept_seq", first_seq)
        .with("first_kept_prev_hash", fieldvault_core::audit::hex(first_prev))
        .with("deleted", deleted)
}

/// What a retention cut did ([`Store::audit_prune`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditCut {
    /// Records deleted.
    pub deleted: u64,
    /// The first record kept (the chain now starts there).
    pub first_kept_seq: u64,
    /// The `audit.retention_cut` record appended.
    pub record: AuditRecord,
}

/// How many records one read of the audit log takes ([`audit_records`]).
pub const AUDIT_PAGE: u32 = 1000;

/// Every audit record after `after`, in seq order, read [`AUDIT_PAGE`] at a time and handed to
/// `each` (which may stop the walk with an error of its own); the table is never loaded whole.
/// Returns how many records were read.
///
/// # Errors
/// The store's error, or `each`'s.
pub async fn audit_records<E: From<StoreError>>(
    store: &dyn Store,
    after: u64,
    mut each: impl FnMut(&AuditRecord) -> Result<(), E>,
) -> Result<u64, E> {
    let (mut after, mut count) = (after, 0u64);
    loop {
        let page = store.audit_page(after, AUDIT_PAGE).await?;
        for record in &page {
            each(record)?;
            after = record.seq;
            count += 1;
        }
        if page.len() < AUDIT_PAGE as usize {
            return Ok(count);
        }
    }
}

/// What [`verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditCheck {
    /// The chain verifies and ends at the head the store recorded.
    Intact(fieldvault_core::audit::ChainSummary),
    /// The first broken link.
    Broken(fieldvault_core::audit::BrokenLink),
}

/// Walks the whole audit log page by page and checks the chain (`fieldvault_core::audit`),
/// then that it ends where the store's chain head says the last append ended: records deleted
/// from the tail are named unless the head was rewritten too.
///
/// # Errors
/// [`StoreError`] when the store cannot be read or a row is not a record.
pub async fn verify_audit(store: &dyn Store) -> Result<AuditCheck, StoreError> {
    let mut verifier = fieldvault_core::audit::ChainVerifier::new();
    let mut broken = None;
    audit_records::<StoreError>(store, 0, |r| {
        if broken.is_none()
            && let Err(e) = verifier.push(r)
        {
            broken = Some(e);
        }
        Ok(())
    })
    .await?;
    if let Some(e) = broken {
        return Ok(AuditCheck::Broken(e));
    }
    let summary = match verifier.finish() {
        Ok(summary) => summary,
        Err(e) => return Ok(AuditCheck::Broken(e)),
    };
    let head = store.audit_head().await?;
    if head != summary.last {
        let (seq, why) = match (head, summary.last) {
            (Some((seq, _)), Some((last, _))) if seq > last => (
                last + 1,
                format!(
                    "the chain head says seq {seq} was appended, the log ends at {last}: records were deleted from the end"
                ),
            ),
            (Some((seq, _)), None) => (1, format!("the chain head says seq {seq} was appended, the log is empty")),
            (_, Some((last, _))) => (last, "the last record is not the chain head the store recorded".to_owned()),
            (None, None) => unreachable!("equal"),
        };
        return Ok(AuditCheck::Broken(fieldvault_core::audit::BrokenLink { seq, why }));
    }
    Ok(AuditCheck::Intact(summary))
}

/// What linking an OpenID Connect identity to a user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The identity now signs in as the user (or already did).
    Linked,
    /// There is no such user.
    NoSuchUser,
    /// The identity is linked to this other user; nothing changed.
    LinkedToOther(String),
}

/// A session signed in through an OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSession {
    /// The provider's issuer.
    pub issuer: String,
    /// The provider's refresh token, sealed (owner: the session id), if it gave one.
    pub refresh_sealed: Option<Vec<u8>>,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Unique name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Roles, for access rules.
    pub roles: Vec<String>,
    /// A disabled user cannot log in or refresh.
    pub disabled: bool,
    /// Attributes, for access rules (`user.attributes`).
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// A login as the store records it, in one transaction: the session, its first refresh token,
/// and what happens to the device (SPEC section 5, "Devices and sessions").
#[derive(Debug, Clone)]
pub struct NewLogin {
    /// Session id (`sid` in tokens).
    pub session_id: String,
    /// The key id the device names in `X-Key-Id`.
    pub key_id: String,
    /// The user.
    pub user: String,
    /// The session's request-signing secret, sealed.
    pub secret_sealed: Vec<u8>,
    /// SHA-256 of the first refresh token.
    pub refresh_hash: [u8; 32],
    /// The client's label for the device (replaces the label of a continued device).
    pub device_name: String,
    /// The device the session belongs to.
    pub device: LoginDevice,
    /// The TOTP code the login uses up, for a user enrolled in multi-factor login.
    pub totp: Option<TotpUse>,
    /// Now (Unix seconds).
    pub now: u64,
}

/// A TOTP code a login uses up: the store records `step` as the user's last used step, in the
/// login's transaction, only while the user is still enrolled with `secret_sealed` (the
/// enrolment the code was checked against) and their last used step is below `step`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpUse {
    /// The step the code matched.
    pub step: u64,
    /// The sealed secret the code was checked against, as read.
    pub secret_sealed: Vec<u8>,
}

/// What [`Store::login`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum LoginOutcome {
    /// The session, its refresh token and the device are recorded (and the code used up).
    Recorded,
    /// Nothing changed: the device is no longer what the login read (retired, wiped, taken
    /// over meanwhile). Read it again and decide again.
    DeviceChanged,
    /// Nothing changed: the login's TOTP step is no longer above the user's last used one (the
    /// same code was used meanwhile), or the user was re-enrolled or unenrolled meanwhile.
    CodeUsed,
}

/// A user's enrolment in multi-factor login (TOTP, RFC 6238).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRecord {
    /// The 20-byte secret, sealed ([`crate::seal::Purpose::TotpSecret`], owner: the user name).
    pub secret_sealed: Vec<u8>,
    /// The last step a login used up (None: no code used since enrolment).
    pub last_step: Option<u64>,
}

impl TotpRecord {
    /// The stored columns (both backends keep a blob and a nullable integer): None when the
    /// user is not enrolled.
    pub(crate) fn from_columns(
        secret_sealed: Option<Vec<u8>>,
        last_step: Option<i64>,
    ) -> Result<Option<TotpRecord>, StoreError> {
        let Some(secret_sealed) = secret_sealed else { return Ok(None) };
        let last_step = last_step.map(|s| from_column(s, "users.totp_last_step")).transpose()?;
        Ok(Some(TotpRecord { secret_sealed, last_step }))
    }
}

/// What a login does with its device.
#[derive(Debug, Clone)]
pub enum LoginDevice {
    /// A new device (a first login, or a named device that was wiped or retired), with its
    /// sealed device secret and a new lease.
    New {
        /// Server-assigned device id.
        id: String,
        /// The device secret, sealed.
        secret_sealed: Vec<u8>,
        /// Its lease.
        lease: LeaseRecord,
    },
    /// The named device goes on: same id, held ids, `device_seq` and lease key, which gets
    /// `lease`'s expiry. Applies only while the device is live, is the user's, and still holds
    /// the lease `expected_lease` (None: it held none, and gets `lease`). The device's earlier
    /// sessions are revoked: a device has one live session.
    Continue {
        /// The device id.
        id: String,
        /// The lease id the device held when the login read it.
        expected_lease: Option<String>,
        /// The lease it holds after the login.
        lease: LeaseRecord,
    },
    /// After a rollback: a new device that takes over the lease of `from`, which must still
    /// be the user's, retired by a rollback, and holding exactly `lease` (by id). `from` keeps
    /// no lease: one holder only.
    TakeOver {
        /// The new device id.
        id: String,
        /// Its device secret, sealed.
        secret_sealed: Vec<u8>,
        /// The device retired by the rollback.
        from: String,
        /// `from`'s lease (same id and sealed key), with the new expiry.
        lease: LeaseRecord,
    },
}

impl LoginDevice {
    /// The device id the session belongs to.
    pub fn id(&self) -> &str {
        match self {
            LoginDevice::New { id, .. } | LoginDevice::Continue { id, .. } | LoginDevice::TakeOver { id, .. } => id,
        }
    }

    /// The lease the device holds after the login.
    pub fn lease(&self) -> &LeaseRecord {
        match self {
            LoginDevice::New { lease, .. }
            | LoginDevice::Continue { lease, .. }
            | LoginDevice::TakeOver { lease, .. } => lease,
        }
    }
}

/// A device's offline lease as stored: the key L is sealed (owner: the lease id, so the
/// sealed bytes move unchanged when a new device takes the lease over after a rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Lease id.
    pub id: String,
    /// The lease key L, sealed.
    pub key_sealed: Vec<u8>,
    /// When the device must delete its copy, as last sent (every login and refresh moves it).
    pub expires_at: u64,
}

/// A device as a login that names it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// Server-assigned id.
    pub id: String,
    /// Its user.
    pub user: String,
    /// The device secret, sealed (None for a device made before device secrets existed:
    /// such a device cannot be named).
    pub secret_sealed: Option<Vec<u8>>,
    /// Its lease, if it still has one.
    pub lease: Option<LeaseRecord>,
    /// Why it was retired (None: live).
    pub retired: Option<DeviceReason>,
    /// Directives not yet acknowledged (compact JWS), oldest first.
    pub directives: Vec<String>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// Its key id.
    pub key_id: String,
    /// The user.
    pub user: String,
    /// The device.
    pub device_id: String,
    /// The request-signing secret, sealed.
    pub secret_sealed: Vec<u8>,
    /// Revoked sessions stay for the record; nothing signed with them is accepted.
    pub revoked: bool,
    /// When the session began (login).
    pub created_at: u64,
    /// Directives for this session's device not yet acknowledged (compact JWS), oldest first.
    pub directives: Vec<String>,
}

/// What a refresh spend found (SPEC section 5, `POST /v1/auth/refresh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendOutcome {
    /// The token was live and is now spent; the successor is stored.
    Spent,
    /// The same token and `attempt_id` again within the retry window while the successor is
    /// unused: here is that successor (sealed), to be returned again.
    Retry {
        /// The successor token, sealed.
        successor_sealed: Vec<u8>,
    },
    /// Any other reuse: the whole session has been revoked.
    ReuseRevoked,
    /// No such token in this session (or the session is revoked). Nothing changed.
    Unknown,
}

/// A refresh spend request.
#[derive(Debug, Clone)]
pub struct Spend<'a> {
    /// SHA-256 of the presented refresh token.
    pub token_hash: [u8; 32],
    /// The session named by `X-Key-Id`.
    pub session_id: &'a str,
    /// The client's attempt id.
    pub attempt_id: &'a str,
    /// SHA-256 of the successor token.
    pub successor_hash: [u8; 32],
    /// The successor token, sealed (kept so a retry can be answered).
    pub successor_sealed: Vec<u8>,
    /// Now.
    pub now: u64,
    /// How long a retry with the same attempt id gets the same successor.
    pub retry_window: u64,
    /// The audit record of a reuse detection, appended in the transaction that revokes the
    /// session ([`SpendOutcome::ReuseRevoked`] only).
    pub on_reuse: &'a AuditEvent,
}

/// Failed logins for one (user, address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginFailures {
    /// Consecutive failures.
    pub failures: u32,
    /// Time of the last one.
    pub last_at: u64,
}

impl LoginFailures {
    /// The stored row (both backends keep the same two integers).
    pub(crate) fn from_columns(failures: i64, last_at: i64) -> Result<LoginFailures, StoreError> {
        Ok(LoginFailures {
            failures: from_column(failures, "login_failures.failures")?,
            last_at: from_column(last_at, "login_failures.last_at")?,
        })
    }
}

/// A device as `device list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Server-assigned id.
    pub id: String,
    /// Its user.
    pub user: String,
    /// The client's label.
    pub name: String,
    /// First login.
    pub created_at: u64,
    /// Last login, push or pull.
    pub last_seen_at: u64,
    /// The newest session of the device.
    pub session_id: Option<String>,
    /// Whether any session of the device is still live.
    pub active: bool,
    /// Why the device was retired (None: live).
    pub retired: Option<DeviceReason>,
    /// The expiry last sent with its lease key (None: the server holds no lease key for it).
    pub lease_expires_at: Option<u64>,
    /// Its directives, newest first: every one not yet acknowledged, then acknowledged ones
    /// while fewer than `DIRECTIVES_PER_DEVICE` (20) are listed.
    pub directives: Vec<DirectiveRecord>,
}

impl DeviceRecord {
    /// The directives not yet acknowledged, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &DirectiveRecord> {
        self.directives.iter().rev().filter(|d| d.acked_at.is_none())
    }
}

/// A directive to store.
#[derive(Debug, Clone)]
pub struct NewDirective {
    /// Its id.
    pub jti: String,
    /// The device.
    pub device_id: String,
    /// `revoke` (the device's sessions end) or `wipe` (the device is retired as wiped and its
    /// lease key deleted, too).
    pub kind: DirectiveKind,
    /// The signed JWS.
    pub token: String,
    /// Now.
    pub now: u64,
}

/// An attachment's metadata as the server keeps it: what it belongs to, the header and
/// manifest it is checked against, and its content key sealed by [`crate::seal`] (purpose
/// `AttachmentCek`, owner: the attachment id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRecord {
    /// 32 lowercase hex digits (the header's attachment id).
    pub id: String,
    /// The user who uploaded it.
    pub user: String,
    /// The owning document's collection.
    pub collection: String,
    /// The owning document's id.
    pub doc_id: String,
    /// The attachment header bytes.
    pub header: Vec<u8>,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The CEK (32 bytes), sealed.
    pub cek_sealed: Vec<u8>,
    /// Number of chunks.
    pub chunk_count: u64,
    /// Plaintext length.
    pub length: u64,
    /// Every chunk has arrived.
    pub complete: bool,
    /// When the metadata arrived.
    pub created_at: u64,
}

/// One push, checked and fingerprinted: applied in one transaction.
#[derive(Debug, Clone)]
pub struct PushBatch {
    /// The user (their roles and attributes are read inside the transaction).
    pub user: String,
    /// The pushing device.
    pub device_id: String,
    /// The device's sync counter.
    pub device_seq: u64,
    /// The ops, in order.
    pub ops: Vec<CheckedOp>,
    /// Ops made before this time (by their key) get `expired` unless their key is on record.
    pub expired_before: u64,
    /// The access rules in force.
    pub rules: Arc<Rules>,
    /// Now.
    pub now: u64,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    /// One result per op, in order; everything recorded is committed.
    Results(Vec<OpResult>),
    /// `device_seq` went backwards: nothing applied.
    RollbackDetected,
    /// Another request is using one of these idempotency keys right now: nothing applied.
    KeyInUse,
}

/// One pull page request.
#[derive(Debug, Clone)]
pub struct PullBatch {
    /// The user.
    pub user: String,
    /// The pulling device (whose held ids are updated).
    pub device_id: String,
    /// The device's sync counter.
    pub device_seq: u64,
    /// Where the previous pull stopped (none: from the start). Its changes after `seq` are
    /// scanned; but when its access epoch is not the user's epoch now (the rules, or this
    /// user's roles or attributes, changed), the scan starts from the beginning, so that
    /// everything the device holds is re-checked. Decided in the same transaction that reads
    /// the user, before anything is held or released: a scan from the cursor that released
    /// documents and was then thrown away would lose their tombstones.
    pub after: Option<Cursor>,
    /// Most stored changes to examine. The scan also stops once the stored bodies it read
    /// reach [`MAX_PULL_CHANGE_BYTES`](fieldvault_core::protocol::sync::MAX_PULL_CHANGE_BYTES)
    /// (a page never sends more than that, and projections are never larger than what they
    /// project), so a page never reads 5000 documents of 1 MiB.
    pub limit: u32,
    /// The access rules in force. With the owner-only rules the store examines only the
    /// user's own documents and those the device holds (nothing else can be readable or need
    /// a tombstone), so a pull does not read every user's documents.
    pub rules: Arc<Rules>,
    /// Now.
    pub now: u64,
}

/// The user's access epoch now, and where the pull's scan starts: after the cursor, or from
/// the beginning when the cursor's epoch is another ([`PullBatch::after`]).
pub(crate) fn scan_from(b: &PullBatch, user: &fieldvault_core::rules::RuleUser) -> ([u8; 8], u64) {
    let epoch = fieldvault_core::protocol::sync::access_epoch(&b.rules, user);
    let since = b.after.filter(|c| c.epoch == epoch).map_or(0, |c| c.seq);
    (epoch, since)
}

/// A pull page.
#[derive(Debug, Clone, PartialEq)]
pub enum PullOutcome {
    /// The page.
    Page {
        /// What the device must apply, in sequence order, already serialized (at most
        /// [`MAX_PULL_CHANGE_BYTES`](fieldvault_core::protocol::sync::MAX_PULL_CHANGE_BYTES)
        /// of them, or one change).
        answer: PullAnswer,
        /// Where the next page starts: the last sequence number covered, and the user's
        /// access epoch as read for this page.
        next: Cursor,
        /// Whether the page is full, or was cut by size (more may follow at once).
        has_more: bool,
    },
    /// `device_seq` went backwards: nothing changed.
    RollbackDetected,
    /// The user no longer exists.
    UnknownUser,
}

/// The storage interface. Both implementations pass the same test suite
/// (`tests/it/storage.rs`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Adds a user. [`StoreError::UserExists`] if the name is taken.
    async fn add_user(&self, user: &UserRecord, now: u64, audit: &AuditEvent) -> Result<(), StoreError>;
    /// A user by name.
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Sets a user's password hash and revokes every session of the user, in one transaction;
    /// devices and their lease keys stay. False if there is no such user.
    async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError>;
    /// Disables a user and revokes every session of the user; devices and their lease keys
    /// stay. False if there is no such user.
    async fn disable_user(&self, name: &str, now: u64, audit: &AuditEvent) -> Result<bool, StoreError>;
    /// Enables a disabled user. False if there is no such user.
    async fn enable_user(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError>;
    /// Enrolls a user in multi-factor login, or re-enrolls them: stores the sealed TOTP secret
    /// (replacing any earlier one) and forgets the last used step. Sessions stay. False if
    /// there is no such user.
    async fn enroll_totp(&self, name: &str, secret_sealed: &[u8], audit: &AuditEvent) -> Result<bool, StoreError>;
    /// Ends a user's multi-factor login: forgets the secret and the last used step. False if
    /// there is no such user.
    async fn disable_totp(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError>;
    /// A user's TOTP enrolment; None when the user is not enrolled or does not exist.
    async fn totp(&self, name: &str) -> Result<Option<TotpRecord>, StoreError>;
    /// Removes a user with everything that lets anyone act as them: sessions, refresh
    /// tokens, devices with their device secrets and lease keys, held ids, directives,
    /// idempotency records and login failures. Documents and attachments stay. False if
    /// there is no such user.
    async fn remove_user(&self, name: &str, audit: &AuditEvent) -> Result<bool, StoreError>;

    /// The user an OpenID Connect identity (issuer, `sub`) is linked to.
    async fn oidc_user(&self, issuer: &str, subject: &str) -> Result<Option<String>, StoreError>;
    /// Links an identity to an existing user (an identity has one user; a user may have
    /// several identities).
    async fn link_oidc(
        &self,
        issuer: &str,
        subject: &str,
        user: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<LinkOutcome, StoreError>;
    /// Removes a link; false if there was none.
    async fn unlink_oidc(&self, issuer: &str, subject: &str, audit: &AuditEvent) -> Result<bool, StoreError>;
    /// Creates a user and links the identity to it, in one transaction (the provider's
    /// first sign-in of a user, where the server is configured to create users).
    /// [`StoreError::UserExists`] if the name is taken; nothing is written then.
    async fn add_oidc_user(
        &self,
        user: &UserRecord,
        issuer: &str,
        subject: &str,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Records that a session was signed in through `issuer`, with the provider's refresh
    /// token (sealed) when it gave one; replaces the token of an earlier record.
    async fn set_oidc_session(
        &self,
        session_id: &str,
        issuer: &str,
        refresh_sealed: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    /// How a session was signed in through a provider (None: with a password).
    async fn oidc_session(&self, session_id: &str) -> Result<Option<OidcSession>, StoreError>;

    /// Failed logins recorded for (user, address).
    async fn login_failures(&self, user: &str, address: &str) -> Result<LoginFailures, StoreError>;
    /// Counts one more failure; returns the new state.
    async fn record_login_failure(&self, user: &str, address: &str, now: u64) -> Result<LoginFailures, StoreError>;
    /// Forgets the failures after a successful login.
    async fn clear_login_failures(&self, user: &str, address: &str) -> Result<(), StoreError>;

    /// A device, as a login naming it needs it.
    async fn device(&self, id: &str) -> Result<Option<DeviceState>, StoreError>;
    /// Records a login in one transaction: the TOTP code used up (see [`TotpUse`]), the device
    /// (see [`LoginDevice`]), the session and its first refresh token. Nothing changes unless
    /// the answer is [`LoginOutcome::Recorded`].
    async fn login(&self, login: &NewLogin, audit: &AuditEvent) -> Result<LoginOutcome, StoreError>;
    /// The session a key id names.
    async fn session_by_key_id(&self, key_id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Revokes a session and spends all its refresh tokens; its device stays. Idempotent.
    async fn revoke_session(&self, session_id: &str, now: u64) -> Result<(), StoreError>;
    /// Retires a device: revokes every session of it and records `reason`. `Wiped` and
    /// `Retired` (a plain logout) also delete its lease key; `Rollback` keeps it for the
    /// device's next login to pass on, and applies only to a live device. Idempotent.
    async fn retire_device(&self, device_id: &str, reason: DeviceReason, now: u64) -> Result<(), StoreError>;
    /// Moves the expiry of a live device's lease to `expires_at` (a refresh) and returns the
    /// lease; None if the device is retired or holds no lease.
    async fn renew_lease(&self, device_id: &str, expires_at: u64, now: u64) -> Result<Option<LeaseRecord>, StoreError>;
    /// Spends a refresh token atomically (see [`SpendOutcome`]).
    async fn spend_refresh(&self, spend: Spend<'_>) -> Result<SpendOutcome, StoreError>;

    /// Inserts `(key_id, nonce)` unless present, committed before returning. False if it was
    /// seen before (a replay). Kept until `expires_at`.
    async fn insert_nonce(&self, key_id: &str, nonce: &[u8; 16], expires_at: u64) -> Result<bool, StoreError>;
    /// Group commit of request nonces: inserts each claim's `(key_id, nonce)` unless present,
    /// all in one transaction committed before returning, and reads the revocation epoch in
    /// that transaction (`storage::admission`). `fresh[i]` is false when claim `i`'s nonce was seen
    /// before (a replay; a second claim of one nonce within the batch too: exactly one of
    /// them is fresh). All or nothing: on an error no claim of the batch is recorded. With no
    /// claims, only the epoch is read. The claims are taken (a store that works on another
    /// thread moves them there without a copy).
    async fn claim_nonces(&self, claims: Vec<NonceClaim>) -> Result<ClaimedNonces, StoreError>;
    /// The session a key id names (as [`Store::session_by_key_id`]) and the revocation epoch,
    /// read in one snapshot: a later read of the same epoch shows the session unchanged.
    async fn session_read(&self, key_id: &str) -> Result<SessionRead, StoreError>;
    /// Deletes nonces whose `expires_at` is before `now` (the caller's clock) and, on a store
    /// with a clock of its own, before the store's time too: an instance whose clock runs
    /// fast never purges a nonce that other instances still accept. Returns how many.
    async fn purge_nonces(&self, now: u64) -> Result<u64, StoreError>;
    /// The store's own clock, Unix seconds, when it is not this process's: PostgreSQL's
    /// `now()`, which every instance sharing it must be within `MAX_SKEW_SECS` of. None for
    /// the embedded store (one instance, one clock).
    async fn clock(&self) -> Result<Option<u64>, StoreError>;

    /// Replaces a user's roles and attributes. False if there is no such user.
    async fn set_user_access(
        &self,
        name: &str,
        roles: &[String],
        attributes: &serde_json::Map<String, serde_json::Value>,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// The backend, in words: `SQLite (SQLCipher)` or `PostgreSQL`.
    fn backend(&self) -> &'static str;

    /// Every device, by user then first login.
    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
    /// One page of the devices `filter` names, by user then first login; a page past the end
    /// is empty.
    async fn devices_page(&self, filter: DeviceFilter<'_>, page: Page) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Records that these directives (compact JWS, as [`SessionRecord::directives`] and
    /// [`DeviceState::directives`] hold them) rode an answer to `device_id` at `now`; a
    /// directive keeps the first such time.
    async fn mark_directives_sent(&self, device_id: &str, tokens: &[String], now: u64) -> Result<(), StoreError>;
    /// One page of a user's sessions, newest first.
    async fn sessions_page(&self, user: &str, page: Page) -> Result<Vec<SessionSummary>, StoreError>;
    /// Revokes `which` of `user`'s live sessions and spends their refresh tokens, recording
    /// `audit` in the same transaction; returns how many were live. With none, nothing is
    /// written (the record neither). Devices and their leases stay.
    async fn revoke_sessions(
        &self,
        user: &str,
        which: Sessions<'_>,
        now: u64,
        audit: &AuditEvent,
    ) -> Result<u64, StoreError>;
    /// Stores a directive and, in the same transaction, revokes every session of its device;
    /// a wipe also retires the device as wiped and deletes its lease key. False if there is no
    /// such device.
    async fn add_directive(&self, directive: &NewDirective, audit: &AuditEvent) -> Result<bool, StoreError>;
    /// Marks these directives of this device acknowledged; returns how many were pending.
    async fn ack_directives(
        &self,
        device_id: &str,
        jtis: &[String],
        now: u64,
        audit: &AuditEvent,
    ) -> Result<u64, StoreError>;

    /// A stored document (live or tombstone).
    async fn document(&self, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError>;
    /// The live documents whose attachment list names `attachment_id`: (collection, id,
    /// document), at most `MAX_LISTING_DOCUMENTS` of them. Read from an index kept in each
    /// push's transaction, so it never scans the documents.
    async fn documents_listing(&self, attachment_id: &str) -> Result<Vec<(String, String, StoredDoc)>, StoreError>;
    /// Records an attachment's metadata unless the id is taken; returns the stored record
    /// (the new one, or the one already there). In the same transaction, first: its document
    /// is live at `doc_version` (the version the caller checked the rules against), else
    /// nothing is stored and the answer is None, so a document deleted or changed since its
    /// check never gets the attachment.
    async fn create_attachment(
        &self,
        record: &AttachmentRecord,
        doc_version: u64,
    ) -> Result<Option<AttachmentRecord>, StoreError>;
    /// An attachment and the indices of the chunks received so far.
    async fn attachment(&self, id: &str) -> Result<Option<(AttachmentRecord, Vec<u64>)>, StoreError>;
    /// Stores chunk `index` (already checked against the manifest) unless present; marks the
    /// attachment complete when it was the last missing one. Returns (chunks held, complete);
    /// None, with nothing stored, when the attachment is gone (its document dropped it since
    /// the caller read it).
    async fn put_chunk(&self, id: &str, index: u64, bytes: &[u8]) -> Result<Option<(u64, bool)>, StoreError>;
    /// One stored chunk.
    async fn chunk(&self, id: &str, index: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies a push in one transaction (SPEC section 5, "Idempotency").
    async fn push(&self, batch: PushBatch) -> Result<PushOutcome, StoreError>;
    /// Reads one pull page and records what the device now holds. The scan (with the
    /// `device_seq` check, the user and the held ids of its rows) is one transaction; the
    /// rules run after it (on SQLite outside the store's lock); what the device now holds is
    /// recorded in a second, which forgets an id only while its document is still at the
    /// change the page saw (a later change is judged by a later page, so the device never
    /// keeps a document the server forgot it holds).
    async fn pull(&self, batch: PullBatch) -> Result<PullOutcome, StoreError>;
    /// Deletes idempotency records made before `before`; returns how many.
    async fn purge_idempotency(&self, before: u64) -> Result<u64, StoreError>;

    /// One page of users by name, those whose name starts with `prefix` (exactly, case
    /// and all); a page past the end is empty.
    async fn users_page(&self, prefix: &str, page: Page) -> Result<Vec<UserRecord>, StoreError>;

    /// Adds an administrator (without a TOTP secret), recording `audit` in the same
    /// transaction. [`StoreError::AdminExists`] if the name is taken (nothing is written).
    async fn add_admin(&self, name: &str, password_hash: &str, now: u64, audit: &AuditEvent) -> Result<(), StoreError>;
    /// An administrator by name.
    async fn admin(&self, name: &str) -> Result<Option<AdminRecord>, StoreError>;
    /// Gives an administrator whose secret no code has confirmed yet a new one (sealed),
    /// forgetting the last used step. False if there is no such administrator or a code has
    /// confirmed the secret already (then nothing changes).
    async fn set_admin_totp(&self, name: &str, secret_sealed: &[u8]) -> Result<bool, StoreError>;
    /// Uses up a code's `step`: true when the administrator still holds `secret_sealed` and
    /// used no step as late; the secret is confirmed from then on. False changes nothing.
    async fn use_admin_totp(&self, name: &str, secret_sealed: &[u8], step: u64) -> Result<bool, StoreError>;
    /// Writes a console session (new, or an update of the one with its `id_hash`).
    async fn put_admin_session(&self, session: &AdminSession) -> Result<(), StoreError>;
    /// The console session with this id hash.
    async fn admin_session(&self, id_hash: &[u8; 32]) -> Result<Option<AdminSession>, StoreError>;
    /// Ends a console session (idempotent).
    async fn delete_admin_session(&self, id_hash: &[u8; 32]) -> Result<(), StoreError>;
    /// Deletes the console sessions last seen before `before`; returns how many.
    async fn purge_admin_sessions(&self, before: u64) -> Result<u64, StoreError>;

    /// Appends an audit record on its own, for an event that changes nothing else in the store
    /// (a refused login, a console sign-in). An action that changes the store records itself:
    /// its method takes the [`AuditEvent`] and appends it in the action's transaction.
    async fn audit_append(&self, event: &AuditEvent) -> Result<AuditRecord, StoreError>;
    /// At most `limit` audit records after seq `after`, in seq order.
    async fn audit_page(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
    /// The chain head: the last appended (seq, hash), kept apart from the records; None when
    /// nothing was ever appended.
    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError>;
    /// The retention cut, in one transaction: deletes the records before the first whose `at`
    /// is at or after `before` (all of them when none is) and appends an
    /// `audit.retention_cut` record (time and actor from `cut`) naming the first kept seq and
    /// its prev_hash, so the rest still verifies. None, with nothing changed, when no record
    /// is older.
    async fn audit_prune(&self, before: u64, cut: &AuditEvent) -> Result<Option<AuditCut>, StoreError>;
}

/// Opens the store the command line asks for: PostgreSQL at `database_url`, or else the
/// SQLCipher file `<data>/server.db` keyed from the store key.
///
/// # Errors
/// [`StoreError`] when the database cannot be reached, opened or migrated.
pub async fn open_store(
    data: &std::path::Path,
    store_key: &zeroize::Zeroizing<[u8; 32]>,
    database_url: Option<&str>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match database_url {
        Some(url) => Ok(std::sync::Arc::new(PgStore::connect(url, 16).await?)),
        None => {
            let key = crate::seal::sqlite_key(store_key);
            let path = data.join("server.db");
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, &key))
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))??;
            Ok(std::sync::Arc::new(store))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Rows each holding a value its column may not hold, written past the store as damage or
    /// an outside hand would; one statement each, valid on both backends (`blob` is the
    /// backend's literal for a one-byte blob).
    pub(crate) fn corrupt_rows(blob: &str) -> Vec<String> {
        vec![
            "INSERT INTO users (name, password_hash, roles, created_at) VALUES ('alice', 'h', '[]', 1)".to_owned(),
            "INSERT INTO users (name, password_hash, roles, created_at) VALUES ('bob', 'h', '\"hunter2\"', 1)"
                .to_owned(),
            "INSERT INTO devices (id, user_name, name, created_at, last_seen_at) VALUES ('d1', 'alice', 'tablet', -5, 1)"
                .to_owned(),
            "INSERT INTO documents (collection, id, owner, version, deleted, body, seq, updated_at)
             VALUES ('notes', 'x', 'alice', -1, false, '{}', 1, 1)"
                .to_owned(),
            "INSERT INTO documents (collection, id, owner, version, deleted, body, seq, updated_at, attachments)
             VALUES ('notes', 'y', 'alice', 1, false, '{}', 2, 1, '[\"B0\"]')"
                .to_owned(),
            "INSERT INTO login_failures (user_name, address, failures, last_at) VALUES ('alice', '10.0.0.1', -1, 1)"
                .to_owned(),
            format!("UPDATE users SET totp_secret_sealed = {blob}, totp_last_step = -1 WHERE name = 'alice'"),
            format!(
                "INSERT INTO sessions (id, key_id, user_name, device_id, secret_sealed, created_at)
                 VALUES ('s1', 'k1', 'alice', 'd1', {blob}, -1)"
            ),
            format!(
                "INSERT INTO attachments (id, user_name, collection, doc_id, header, manifest, cek_sealed,
                     chunk_count, length, created_at)
                 VALUES ('a1', 'alice', 'notes', 'x', {blob}, {blob}, {blob}, -1, 0, 1)"
            ),
        ]
    }

    /// The column a read reported corrupt; panics on anything else.
    fn corrupt_column<T: std::fmt::Debug>(read: Result<T, StoreError>) -> &'static str {
        match read {
            Err(StoreError::Corrupt { what, .. }) => what,
            other => panic!("expected a corrupt column, got {other:?}"),
        }
    }

    /// Reads each of [`corrupt_rows`] back through `store`: every read is refused as
    /// [`StoreError::Corrupt`] naming the column, none is read as a default.
    pub(crate) async fn each_corrupt_row_is_refused_naming_its_column(store: &dyn Store) {
        assert_eq!(corrupt_column(store.document("notes", "x").await), "documents.version");
        assert_eq!(corrupt_column(store.document("notes", "y").await), "documents.attachments");
        assert_eq!(corrupt_column(store.devices().await), "devices.created_at");
        assert_eq!(corrupt_column(store.login_failures("alice", "10.0.0.1").await), "login_failures.failures");
        assert_eq!(corrupt_column(store.session_by_key_id("k1").await), "sessions.created_at");
        assert_eq!(corrupt_column(store.attachment("a1").await), "attachments.chunk_count");
        assert_eq!(corrupt_column(store.totp("alice").await), "users.totp_last_step");
        let roles = store.user("bob").await.expect_err("corrupt roles");
        assert!(matches!(roles, StoreError::Corrupt { what: "users.roles", .. }), "{roles:?}");
        assert!(!chain(&roles).contains("hunter2"), "the value stays out of the error: {}", chain(&roles));
    }

    /// An error with its sources, as a log line shows it.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }

    #[test]
    fn a_negative_stored_number_is_corrupt_naming_its_column_never_zero() {
        let e = from_column::<u64>(-1, "documents.version").expect_err("negative");
        assert!(matches!(e, StoreError::Corrupt { what: "documents.version", .. }), "{e:?}");
        assert_eq!(chain(&e), "corrupt documents.version in the store: -1 is out of range");
        assert_eq!(from_column::<u64>(0, "documents.version").expect("zero"), 0);
        assert_eq!(from_column::<u64>(i64::MAX, "documents.version").expect("largest"), i64::MAX as u64);
    }

    #[test]
    fn a_stored_number_past_its_type_is_corrupt_never_clamped() {
        let e = from_column::<u32>(1 << 32, "login_failures.failures").expect_err("past u32");
        assert!(matches!(e, StoreError::Corrupt { what: "login_failures.failures", .. }), "{e:?}");
        assert_eq!(from_column::<u32>(u32::MAX.into(), "login_failures.failures").expect("largest"), u32::MAX);
    }

    #[test]
    fn a_number_past_the_largest_column_value_is_refused_never_clamped() {
        let e = to_column(i64::MAX as u64 + 1, "devices.sync_seq").expect_err("past i64::MAX");
        assert!(matches!(e, StoreError::OutOfRange { what: "devices.sync_seq", value } if value == 1 << 63), "{e:?}");
        assert_eq!(to_column(i64::MAX as u64, "devices.sync_seq").expect("largest"), i64::MAX);
    }

    #[test]
    fn corrupt_json_is_named_by_its_column_without_its_content() {
        let e = decode_access("[]", "{\"pin\": \"1234\"").expect_err("truncated");
        assert!(matches!(e, StoreError::Corrupt { what: "users.attributes", .. }), "{e:?}");
        let e = stored_doc("alice".into(), 1, false, "[\"hunter2\", 5", "[]").expect_err("truncated");
        assert!(matches!(e, StoreError::Corrupt { what: "documents.body", .. }), "{e:?}");
        for list in ["[\"hunter2\"", "[\"hunter2\"]", "{}"] {
            let e = stored_doc("alice".into(), 1, false, "{}", list).expect_err(list);
            assert!(matches!(e, StoreError::Corrupt { what: "documents.attachments", .. }), "{e:?}");
            assert!(!chain(&e).contains("hunter2"), "{}", chain(&e));
        }
        let ids = vec!["0".repeat(31) + "1", "0".repeat(31) + "2"];
        let doc = stored_doc("alice".into(), 1, false, "{}", &attachment_list_column(&ids)).expect("a list");
        assert_eq!(doc.attachments, ids);
        // serde's own message would quote the value: `invalid type: string "hunter2", ...`.
        let e = decode_access("\"hunter2\"", "{}").expect_err("not a list");
        assert_eq!(chain(&e), "corrupt users.roles in the store: Data error at line 1 column 9");
    }
}
