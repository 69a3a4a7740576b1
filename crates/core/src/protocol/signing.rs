//! Request and response signing (SPEC section 5, "Signed requests" and "Signed responses").
//!
//! ```text
//! request:  base64(HMAC-SHA256(secret, METHOD "\n" PATH_AND_QUERY "\n" hex(SHA-256(body)) "\n" TIMESTAMP "\n" NONCE))
//! response: base64(HMAC-SHA256(secret, "FV1-RESPONSE" "\n" STATUS "\n" NONCE "\n" hex(SHA-256(body)) "\n" TIMESTAMP))
//! ```
//!
//! The strings are built from the exact header values as sent (the timestamp's digits, the
//! nonce's base64), never re-rendered from parsed values, so both sides sign the same bytes.
//! HMAC comes from aws-lc-rs (RFC 2104), and verification compares in constant time
//! (`subtle`). Signing allocates nothing but the signature's base64: the fields go to HMAC
//! one by one, and the body hash's hex is built on the stack.

use std::fmt;

use aws_lc_rs::{digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::decode_canonical;

/// Bytes of a request nonce before base64.
pub const NONCE_LEN: usize = 16;

/// A request's `X-Timestamp` may differ from the server's clock by at most this much.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// The clock difference allowed between server instances sharing one store. A nonce is kept
/// until its timestamp + [`TIMESTAMP_WINDOW_SECS`] + this, so that no instance whose clock is
/// that far ahead can accept it again.
pub const MAX_SKEW_SECS: u64 = 60;

/// Why a signed message or one of its headers was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// `X-Timestamp` is empty, has a non-digit, or is too long to be a time.
    #[error("X-Timestamp must be Unix seconds, digits only")]
    MalformedTimestamp,
    /// `X-Nonce` is not the canonical standard base64 of 16 bytes.
    #[error("X-Nonce must be 16 random bytes in canonical standard base64")]
    MalformedNonce,
    /// `X-Signature` is not the canonical standard base64 of 32 bytes.
    #[error("X-Signature must be an HMAC-SHA256 in canonical standard base64")]
    MalformedSignature,
    /// The signature is well formed but does not verify.
    #[error("the signature does not verify")]
    Mismatch,
    /// The session secret is not 32 bytes of canonical base64.
    #[error("the session secret must be 32 bytes in standard base64")]
    MalformedSecret,
}

/// Lower-case hex of SHA-256 over `body` (the empty body hashes the empty string).
pub fn body_hash_hex(body: &[u8]) -> String {
    String::from_utf8_lossy(&body_hash(body)).into_owned()
}

/// [`body_hash_hex`] as ASCII bytes, without an allocation.
fn body_hash(body: &[u8]) -> [u8; 64] {
    let d = digest::digest(&digest::SHA256, body);
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(d.as_ref()) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The fields a request signature covers, in order, newline-separated: the one definition of
/// the layout, which [`request_string`] concatenates and signing feeds to HMAC piece by piece.
fn request_pieces<'a>(
    method: &'a str,
    path_and_query: &'a str,
    body_hash: &'a [u8; 64],
    timestamp: &'a str,
    nonce: &'a str,
) -> [&'a [u8]; 9] {
    let nl = b"\n".as_slice();
    [method.as_bytes(), nl, path_and_query.as_bytes(), nl, body_hash, nl, timestamp.as_bytes(), nl, nonce.as_bytes()]
}

/// The label a response signature starts with.
const RESPONSE_LABEL: &[u8] = b"FV1-RESPONSE";

/// The fields a response signature covers, in order (as [`request_pieces`]).
fn response_pieces<'a>(
    status: &'a Digits,
    request_nonce: &'a str,
    body_hash: &'a [u8; 64],
    timestamp: &'a str,
) -> [&'a [u8]; 9] {
    let nl = b"\n".as_slice();
    [RESPONSE_LABEL, nl, status.as_bytes(), nl, request_nonce.as_bytes(), nl, body_hash, nl, timestamp.as_bytes()]
}

/// A status code's decimal digits, on the stack.
struct Digits {
    buf: [u8; 5],
    start: usize,
}

impl Digits {
    fn of(mut n: u16) -> Digits {
        let mut buf = [0u8; 5];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Digits { buf, start };
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// The bytes a request signature covers.
pub fn request_string(method: &str, path_and_query: &str, body: &[u8], timestamp: &str, nonce: &str) -> Vec<u8> {
    request_pieces(method, path_and_query, &body_hash(body), timestamp, nonce).concat()
}

/// The bytes a response signature covers.
pub fn response_string(status: u16, request_nonce: &str, body: &[u8], timestamp: &str) -> Vec<u8> {
    response_pieces(&Digits::of(status), request_nonce, &body_hash(body), timestamp).concat()
}

/// Parses `X-Timestamp`: ASCII digits only (no sign, no space), at most 19 of them.
///
/// # Errors
/// [`SignatureError::MalformedTimestamp`].
pub fn parse_timestamp(s: &str) -> Result<u64, SignatureError> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedTimestamp);
    }
    s.parse().map_err(|_| SignatureError::MalformedTimestamp)
}

/// Decodes `X-Nonce`, which must be canonical: standard alphabet, padded, 16 bytes, and
/// re-encoding gives the same string (so one nonce has one spelling in the replay store).
///
/// # Errors
/// [`SignatureError::MalformedNonce`].
pub fn decode_nonce(s: &str) -> Result<[u8; NONCE_LEN], SignatureError> {
    decode_canonical::<NONCE_LEN>(s).ok_or(SignatureError::MalformedNonce)
}

/// The per-session request-signing secret: 32 random bytes, sent once at login as base64.
/// Holds its HMAC key ready (the pads hashed once per session, not once per message);
/// aws-lc-rs wipes the key's state when it is dropped.
pub struct SessionSecret {
    bytes: Zeroizing<[u8; 32]>,
    key: hmac::Key,
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret([redacted])")
    }
}

impl SessionSecret {
    /// Takes 32 secret bytes (fresh from a CSPRNG, or just unsealed).
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes.as_ref());
        SessionSecret { bytes, key }
    }

    /// Decodes the base64 form sent at login.
    ///
    /// # Errors
    /// [`SignatureError::MalformedSecret`].
    pub fn from_base64(s: &str) -> Result<Self, SignatureError> {
        let bytes = Zeroizing::new(STANDARD.decode(s).map_err(|_| SignatureError::MalformedSecret)?);
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| SignatureError::MalformedSecret)?;
        Ok(SessionSecret::from_bytes(Zeroizing::new(arr)))
    }

    /// The base64 form, for the login response only.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    /// The raw bytes (to seal them for storage).
    ///
    /// # Security
    /// Hand them only to a sealing AEAD, never to a log or a response other than login's.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// HMAC-SHA256 over the concatenation of `pieces`, fed as they are (no message buffer).
    fn tag(&self, pieces: &[&[u8]]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        for piece in pieces {
            ctx.update(piece);
        }
        ctx.sign()
    }

    fn sign(&self, pieces: &[&[u8]]) -> String {
        STANDARD.encode(self.tag(pieces).as_ref())
    }

    fn verify(&self, pieces: &[&[u8]], signature: &str) -> Result<(), SignatureError> {
        let expected = decode_canonical::<32>(signature).ok_or(SignatureError::MalformedSignature)?;
        let tag = self.tag(pieces);
        if bool::from(tag.as_ref().ct_eq(expected.as_slice())) { Ok(()) } else { Err(SignatureError::Mismatch) }
    }

    /// `X-Signature` for a request.
    pub fn sign_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp: &str,
        nonce: &str,
    ) -> String {
        self.sign(&request_pieces(method, path_and_query, &body_hash(body), timestamp, nonce))
    }

    /// Checks a request's `X-Signature`.
    ///
    /// # Errors
    /// [`SignatureError::MalformedSignature`] or [`SignatureError::Mismatch`].
    pub fn verify_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp: &str,
        nonce: &str,
        signature: &str,
    ) -> Result<(), SignatureError> {
        self.verify(&request_pieces(method, path_and_query, &body_hash(body), timestamp, nonce), signature)
    }

    /// `X-Signature` for a response.
    pub fn sign_response(&self, status: u16, request_nonce: &str, body: &[u8], timestamp: &str) -> String {
        self.sign(&response_pieces(&Digits::of(status), request_nonce, &body_hash(body), timestamp))
    }

    /// Checks a response's `X-Signature` (the client does this before acting on a response).
    ///
    /// # Errors
    /// [`SignatureError::MalformedSignature`] or [`SignatureError::Mismatch`].
    pub fn verify_response(
        &self,
        status: u16,
        request_nonce: &str,
        body: &[u8],
        timestamp: &str,
        signature: &str,
    ) -> Result<(), SignatureError> {
        self.verify(&response_pieces(&Digits::of(status), request_nonce, &body_hash(body), timestamp), signature)
    }
}

/// Whether a request timestamp is within [`TIMESTAMP_WINDOW_SECS`] of `now` either way
/// (both Unix seconds).
pub fn timestamp_is_fresh(timestamp: u64, now: u64) -> bool {
    timestamp.abs_diff(now) <= TIMESTAMP_WINDOW_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SessionSecret {
        SessionSecret::from_bytes(Zeroizing::new(core::array::from_fn(|i| i as u8)))
    }

    #[test]
    fn request_string_is_the_spec_layout() {
        let s =
            request_string("GET", "/v1/sync/pull?since=c1&limit=100", b"", "1700000000", "AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(
            String::from_utf8(s).expect("ascii"),
            "GET\n/v1/sync/pull?since=c1&limit=100\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n1700000000\nAAAAAAAAAAAAAAAAAAAAAA=="
        );
    }

    #[test]
    fn response_string_binds_status_and_nonce() {
        let s = response_string(200, "n", b"{}", "5");
        assert_eq!(
            String::from_utf8(s).expect("ascii"),
            "FV1-RESPONSE\n200\nn\n44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\n5"
        );
    }

    #[test]
    fn signatures_are_hmac_over_exactly_the_documented_strings() {
        let k = secret();
        let key = hmac::Key::new(hmac::HMAC_SHA256, k.expose_secret());
        let over = |message: Vec<u8>| STANDARD.encode(hmac::sign(&key, &message).as_ref());
        let (target, body, ts, nonce) =
            ("/v1/sync/pull?since=c1", &b"{\"a\":1}"[..], "1700000000", "AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(
            k.sign_request("POST", target, body, ts, nonce),
            over(request_string("POST", target, body, ts, nonce))
        );
        for status in [0, 7, 200, 401, 65535] {
            assert_eq!(k.sign_response(status, nonce, body, ts), over(response_string(status, nonce, body, ts)));
        }
        assert!(
            String::from_utf8(response_string(65535, "n", b"", "1"))
                .expect("ascii")
                .starts_with("FV1-RESPONSE\n65535\nn\n")
        );
    }

    #[test]
    fn a_signed_request_verifies_and_any_changed_field_does_not() {
        let k = secret();
        let sig = k.sign_request("POST", "/v1/auth/logout", b"{}", "10", "AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(k.verify_request("POST", "/v1/auth/logout", b"{}", "10", "AAAAAAAAAAAAAAAAAAAAAA==", &sig), Ok(()));
        for (m, p, b, t, n) in [
            ("GET", "/v1/auth/logout", &b"{}"[..], "10", "AAAAAAAAAAAAAAAAAAAAAA=="),
            ("POST", "/v1/auth/logout?x", b"{}", "10", "AAAAAAAAAAAAAAAAAAAAAA=="),
            ("POST", "/v1/auth/logout", b"{ }", "10", "AAAAAAAAAAAAAAAAAAAAAA=="),
            ("POST", "/v1/auth/logout", b"{}", "11", "AAAAAAAAAAAAAAAAAAAAAA=="),
            ("POST", "/v1/auth/logout", b"{}", "10", "AAAAAAAAAAAAAAAAAAAAAQ=="),
        ] {
            assert_eq!(k.verify_request(m, p, b, t, n, &sig), Err(SignatureError::Mismatch));
        }
    }

    #[test]
    fn response_signature_for_another_status_does_not_verify() {
        let k = secret();
        let sig = k.sign_response(200, "n", b"{}", "5");
        assert_eq!(k.verify_response(200, "n", b"{}", "5", &sig), Ok(()));
        assert_eq!(k.verify_response(401, "n", b"{}", "5", &sig), Err(SignatureError::Mismatch));
        assert_eq!(k.verify_response(200, "m", b"{}", "5", &sig), Err(SignatureError::Mismatch));
    }

    #[test]
    fn non_canonical_base64_is_refused() {
        assert_eq!(decode_nonce("AAAAAAAAAAAAAAAAAAAAAA=="), Ok([0; 16]));
        // Unpadded, URL-safe, too short, and non-zero trailing bits are all other spellings.
        for bad in ["AAAAAAAAAAAAAAAAAAAAAA", "____________________AA==", "AAAA", "AAAAAAAAAAAAAAAAAAAAAB==", ""] {
            assert_eq!(decode_nonce(bad), Err(SignatureError::MalformedNonce), "{bad}");
        }
        let k = secret();
        let sig = k.sign_request("GET", "/", b"", "1", "AAAAAAAAAAAAAAAAAAAAAA==");
        let unpadded = sig.trim_end_matches('=');
        assert_eq!(
            k.verify_request("GET", "/", b"", "1", "AAAAAAAAAAAAAAAAAAAAAA==", unpadded),
            Err(SignatureError::MalformedSignature)
        );
    }

    #[test]
    fn timestamps_are_digits_only() {
        assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000));
        for bad in ["", "+1", "-1", " 1", "1.0", "0x10", "12345678901234567890"] {
            assert_eq!(parse_timestamp(bad), Err(SignatureError::MalformedTimestamp), "{bad:?}");
        }
    }

    #[test]
    fn window_is_inclusive_at_300_seconds() {
        assert!(timestamp_is_fresh(1000, 1300));
        assert!(timestamp_is_fresh(1300, 1000));
        assert!(!timestamp_is_fresh(1000, 1301));
        assert!(!timestamp_is_fresh(1301, 1000));
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", secret()), "SessionSecret([redacted])");
    }
}
