//! Accounts and tokens: password hashing, login with throttling and device continuity,
//! refresh-token rotation with reuse detection, logout, the JWKS (SPEC section 5, "Devices
//! and sessions", "Tokens" and "Offline lease"). The wire bodies are
//! `fieldvault_core::protocol::auth`, shared with the client.

pub(crate) mod login;
pub mod oidc;
mod passwords;
pub(crate) mod routes;
mod tokens;

pub use login::login;
pub use passwords::{PARAMS as ARGON2_PARAMS, Password, Passwords};
pub use routes::{PeerAddr, device_self, jwks, logout, refresh};
pub use tokens::refresh_token_hash;
