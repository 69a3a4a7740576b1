//! The sync protocol's pure parts (SPEC section 5): request and response signing, the
//! session secret, token claims and their checks, and the stable error codes. No IO and no
//! clock: "now" is an argument everywhere, so the server, the client and the tests compute
//! the same bytes. The wire is described in `docs/protocol.md`.

pub mod attachments;
pub mod auth;
pub mod oidc;
mod problem;
mod signing;
pub mod sync;
mod token;

pub use problem::ProblemCode;
pub use signing::{
    MAX_SKEW_SECS, NONCE_LEN, SessionSecret, SignatureError, TIMESTAMP_WINDOW_SECS, body_hash_hex, decode_nonce,
    parse_timestamp, request_string, response_string, timestamp_is_fresh,
};
pub use token::{
    ACCESS_AUDIENCE, ACCESS_TYP, AccessClaims, DIRECTIVE_AUDIENCE, DIRECTIVE_TYP, DirectiveClaims, DirectiveKind,
    MAX_PINS, OFFLINE_AUDIENCE, OFFLINE_TYP, OfflineClaims, PINS_LIFETIME_SECS, PINS_TYP, PinsClaims, TokenError,
    TokenSigner, TokenVerifier, merge_pins,
};
