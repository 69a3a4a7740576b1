//! Fieldvault's pure core: the types and byte formats every other crate builds on.
//!
//! Nothing here touches the file system, the network, the clock or a global random number
//! generator: nonces, salts, fresh keys and "now" are arguments. That keeps every format
//! testable byte for byte and fuzzable on its own.
//!
//! Map of the main types:
//! - [`Kek`], [`MasterKey`], [`DataKey`], [`Passphrase`]: secrets. Zeroized on drop, `Debug`
//!   prints `[redacted]`, no `Serialize`, no `PartialEq`.
//! - [`WrappedKey`]: one key sealed (AES-256-GCM) under the key above it, bound to its slot
//!   (vault, account, purpose, version, key id). Format: `docs/formats/wrapped-key.md`.
//! - [`KeyFile`]: the vault's key file, a container of wrapped-key slots plus the keystore
//!   parameters. Format: `docs/formats/key-file.md`.
//! - [`RecoveryKey`], [`RecoverySlot`]: the recovery key a person writes down (base32 with a
//!   CRC-24 checksum) and the key-file section that wraps the master key under it.
//! - [`TotpSecret`], [`totp_verify`], [`otpauth_uri`]: one-time codes for multi-factor login
//!   (RFC 6238: HMAC-SHA-1, six digits, 30-second steps), each usable once.
//! - [`audit::AuditRecord`], [`audit::verify`]: the tamper-evident audit log, a SHA-256 hash
//!   chain over RFC 8785 JSON. Format: `docs/formats/audit.md`.
//! - [`KdfParams`]: Argon2id parameters for the passphrase keystore, range-checked on read.
//! - [`strength`]: the zxcvbn floor every new passphrase and server password must reach.
//! - [`UnlockCounter`]: durable count of failed passphrase unlocks and the growing wait.
//! - [`rules::Rules`]: the server's access rules, CEL expressions per collection (who reads
//!   and writes what) with the fields that sync to devices. Format: `docs/rules.md`.
//! - [`export::ExportWriter`], [`export::read_export`]: the plaintext layout inside an
//!   age-encrypted export (a tar of a manifest, documents and attachments). Format:
//!   `docs/formats/export.md`.
//!
//! ```
//! use fieldvault_core::{DataKey, KeyId, KeyMeta, MasterKey, Purpose, SlotContext, VaultId};
//! use zeroize::Zeroizing;
//!
//! let master = MasterKey::from_bytes(Zeroizing::new([7u8; 32]));
//! let db_key = DataKey::from_bytes(Zeroizing::new([9u8; 32]));
//! let vault = VaultId::from_bytes([1; 16]);
//! let ctx = SlotContext { vault: &vault, account: "alice", bound: b"" };
//! let meta = KeyMeta { purpose: Purpose::Database, version: 1, key_id: KeyId::from_bytes([2; 16]) };
//! let wrapped = master.seal_data_key(&db_key, meta, &ctx, [0u8; 12]);
//! let back = wrapped.open_data_key(&master, &ctx).expect("same slot, same master");
//! assert_eq!(back.expose_secret(), db_key.expose_secret());
//!
//! // The same bytes presented as another account's key fail to open.
//! let other = SlotContext { vault: &vault, account: "bob", bound: b"" };
//! assert!(wrapped.open_data_key(&master, &other).is_err());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attachment;
pub mod audit;
mod base32;
pub mod body;
mod error;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod kdf;
mod keyfile;
mod marker;
pub mod names;
mod owed;
mod pin;
pub mod protocol;
mod recovery;
pub mod rules;
mod secret;
mod section;
pub mod sqlcipher;
mod strength;
mod throttle;
mod totp;
mod wrap;

pub use error::Error;
pub use ids::{AccountName, KeyId, Purpose, VaultId};
pub use kdf::KdfParams;
pub use keyfile::{DataSlot, DeviceSlot, KeyFile, KeystoreKind, KeystoreParams, LeaseSlot, SlotState};
pub use marker::VaultMarker;
pub use names::NameError;
pub use owed::OwedLogout;
pub use pin::{Pin, PinError};
pub use recovery::{RECOVERY_KEY_CHARS, RecoveryKey, RecoverySlot};
pub use secret::{ContentKey, DataKey, KEY_LEN, Kek, MasterKey, Passphrase, canary};
pub use strength::{MIN_SECRET_SCORE, Strength, strength};
pub use throttle::{FREE_FAILURES, UnlockCounter, unlock_delay};
pub use totp::{
    TOTP_DIGITS, TOTP_SECRET_LEN, TOTP_STEP_SECS, TotpSecret, otpauth_uri, totp_code, totp_step, totp_verify,
};
pub use wrap::{KeyMeta, NONCE_LEN, SlotContext, WrapAlgorithm, WrappedKey, device_bound, lease_bound};
