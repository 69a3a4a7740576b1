//! Accounts and tokens: password hashing, login with throttling, refresh-token rotation with
//! reuse detection, logout, the JWKS (SPEC section 5, "Tokens" and "Offline lease").

mod passwords;
pub(crate) mod routes;
mod tokens;

pub use passwords::{PARAMS as ARGON2_PARAMS, Password, Passwords};
pub use routes::{
    DeviceSelf, JwksResponse, LeaseBody, LoginRequest, LogoutResponse, PeerAddr, RefreshRequest, TokenResponse,
    device_self, jwks, login, logout, refresh,
};
pub use tokens::refresh_token_hash;
