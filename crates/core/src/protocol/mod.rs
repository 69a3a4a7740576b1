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

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

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

/// Decodes `s` as the canonical standard base64 (padded, no stray trailing bits) of exactly
/// `N` bytes, else None: one value has one spelling, so a nonce or a signature cannot come
/// back under another. No allocation; the working buffers are wiped (the value may be a
/// secret).
pub(crate) fn decode_canonical<const N: usize>(s: &str) -> Option<[u8; N]> {
    const { assert!(N <= 48, "the buffers below hold 48 bytes and their base64") };
    if s.len() != N.div_ceil(3) * 4 {
        return None;
    }
    let mut decoded = Zeroizing::new([0u8; 48]);
    if STANDARD.decode_slice(s, &mut decoded[..]).ok()? != N {
        return None;
    }
    let value: [u8; N] = decoded[..N].try_into().ok()?;
    let mut again = Zeroizing::new([0u8; 64]);
    let len = STANDARD.encode_slice(value, &mut again[..]).ok()?;
    (again[..len] == *s.as_bytes()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_base64_decodes_to_exactly_its_length_and_nothing_else_does() {
        let value: [u8; 32] = core::array::from_fn(|i| i as u8 * 7);
        let spelled = STANDARD.encode(value);
        assert_eq!(decode_canonical::<32>(&spelled), Some(value));
        // Too short, too long, unpadded, URL-safe, stray trailing bits, other lengths, a
        // valid spelling of other bytes with junk after it.
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode([0xfb; 32]);
        let stray = format!("{}B=", &STANDARD.encode([0u8; 32])[..42]);
        for bad in [
            &spelled[..40],
            &format!("{spelled}AAAA"),
            spelled.trim_end_matches('='),
            url_safe.as_str(),
            stray.as_str(),
            &STANDARD.encode([0u8; 31]),
            &STANDARD.encode([0u8; 33]),
            &"A".repeat(4096),
            "",
        ] {
            assert_eq!(decode_canonical::<32>(bad), None, "{bad}");
        }
    }
}
