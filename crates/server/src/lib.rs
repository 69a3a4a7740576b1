//! The Fieldvault sync server (SPEC section 5).
//!
//! So far: the key directory (`fieldvault-server init`) and the HTTPS-only listener with
//! `/healthz` (`serve`). Accounts, tokens and the signed channel build on them (issue 5).
//!
//! Map:
//! - [`KeyDir`]: the directory apart from the data that holds the store key, the
//!   token-signing key and the TLS certificate and key; 0700, files 0600.
//! - [`Server`]: the TLS-only listener; [`router`] its routes.
//! - [`spki_pin`]: the `sha256/BASE64` pin of a SubjectPublicKeyInfo, as clients pin it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod keydir;
mod serve;
mod tls;

pub use keydir::{Error, KeyDir, default_key_dir, spki_pin};
pub use serve::{Server, router};
