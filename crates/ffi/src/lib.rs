//! The Fieldvault SDK for Kotlin, Swift and Python: a facade over `fieldvault-client` that
//! uniffi turns into bindings (docs/sdk.md, section 6; docs/adr/0012).
//!
//! Map of the main types, as the bindings name them:
//! - [`Vault`]: one account of a vault directory: init, open, unlock, lock, close;
//!   documents, attachments, login, sync (async), outbox, conflicts, whoami, logout, wipe,
//!   status, and an idle lock. `close()` zeroizes its keys; any later call is
//!   [`FieldvaultError::Closed`].
//! - [`Keystore`]: implemented by the app over Android Keystore or the iOS Keychain, with a
//!   user-presence prompt; a cancelled prompt is [`KeystoreError::Cancelled`].
//! - [`ConflictMerger`], [`ProgressListener`]: callbacks the app writes.
//! - [`FieldvaultError`]: `fieldvault_client::ApiError` for the bindings, plus `Closed`.
//!
//! The only unsafe code in this crate is what uniffi generates for the C ABI.
#![deny(missing_docs)]

mod blocking;
mod callbacks;
mod error;
mod records;
mod vault;

pub use callbacks::{
    ConflictMerger, Keystore, KeystoreError, MergeError, ProgressError, ProgressListener, set_keystore_timeout_secs,
};
pub use error::FieldvaultError;
pub use records::{
    AttachmentInfo, ConflictInfo, DocumentPage, DocumentRecord, Identity, LoginResult, OutboxItem, SyncResult,
    VaultStatus,
};
pub use vault::Vault;

uniffi::setup_scaffolding!("fieldvault");
