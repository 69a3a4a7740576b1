//! The Fieldvault sync server (SPEC section 5): HTTPS only, accounts, tokens, the signed
//! channel, storage on SQLite (SQLCipher) or PostgreSQL.
//!
//! Map:
//! - [`certs`]: the TLS certificate over time: `cert status | renew | next | rotate`.
//! - [`KeyDir`]: the directory apart from the data that holds the store key, the
//!   token-signing key and the TLS certificate and key; 0700, files 0600.
//! - [`Store`]: the storage interface; [`SqliteStore`] (default) and [`PgStore`].
//! - [`App`]: shared state; [`router`] the routes; [`Server`] the TLS-only listener, with
//!   its handshake and connection pools, per-address caps and idle timers.
//! - [`signed`]: the signed-channel layer in front of every protected route.
//! - [`auth`]: passwords, login throttling and device continuity, tokens, refresh rotation,
//!   logout. The wire bodies are `fieldvault_core::protocol::auth`.
//! - [`attachments`]: resumable upload and download of encrypted chunks, checked against the
//!   manifest without a key; access follows the owning document.
//! - [`devices`]: `device list | revoke | wipe` and the directives devices acknowledge.
//! - [`accounts`]: `user add | passwd | disable | enable | remove | access` for the command
//!   line.
//! - `sync`: `POST /v1/sync/push` and `GET /v1/sync/pull`; the decisions themselves are
//!   `fieldvault_core::protocol::sync` and the rules `fieldvault_core::rules`.
//! - [`console`]: the admin console on its own listener ([`Server::bind_console`]):
//!   administrators with TOTP, sessions, CSRF, the users page.
//! - [`health`]: connection and error-answer counters for the console's health page.
//! - [`spki_pin`]: the `sha256/BASE64` pin of a SubjectPublicKeyInfo, as clients pin it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounts;
mod app;
pub mod attachments;
pub mod auth;
pub mod certs;
pub mod console;
pub mod devices;
pub mod health;
mod keydir;
mod listener;
mod openapi;
mod problem;
pub mod seal;
mod serve;
pub mod signed;
mod storage;
mod sync;
mod tls;

pub use app::{App, Clock, Config, InFlight, InFlightGuard, JsonBody, clock_skew, random_id, system_clock};
pub use keydir::{Error, KeyDir, default_key_dir, spki_pin};
pub use listener::Server;
pub use openapi::ApiDoc;
pub use problem::{ApiError, PROBLEM_JSON, ProblemStatus};
pub use serve::router;
pub use storage::{
    AUDIT_PAGE, AdminRecord, AdminSession, AttachmentRecord, AuditCheck, AuditCut, AuditEvent, AuditRecord,
    ClaimedNonces, DeviceFilter, DeviceRecord, DeviceState, DirectiveRecord, DirectiveState, LeaseRecord, LoginDevice,
    LoginFailures, LoginOutcome, MAX_NONCE_BATCH, NewDirective, NewLogin, NonceClaim, Page, PgStore, PullBatch,
    PullOutcome, PushBatch, PushOutcome, SessionRead, SessionRecord, SessionSummary, Sessions, Spend, SpendOutcome,
    SqliteStore, Store, StoreError, TotpRecord, TotpUse, UserRecord, audit_records, idempotency_lock_id, open_store,
    verify_audit,
};
