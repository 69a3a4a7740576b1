//! Request and response signing (SPEC section 5, "Signed requests" and "Signed responses").
//!
//! ```text
//! request:  base64(HMAC-SHA256(secret, METHOD "\n" PATH_AND_QUERY "\n" hex(SHA-256(body)) "\n" TIMESTAMP "\n" NONCE))
//! response: base64(HMAC-SHA256(secret, "FV1-RESPONSE" "\n" STATUS "\n" NONCE "\n" hex(SHA-256(body)) "\n" TIMESTAMP))
//! ```
//!
//! The strings are built from the exact header values as sent (the timestamp's digits, the
//! nonce's base64), never re-rendered from parsed values, so both sides sign the same bytes.
//! HMAC comes from aws-lc-rs (RFC 2104), and verification compares in constant time.

use std::fmt;

use aws_lc_rs::{digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

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
    let d = digest::digest(&digest::SHA256, body);
    let mut out = String::with_capacity(64);
    for b in d.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The bytes a request signature covers.
pub fn request_string(method: &str, path_and_query: &str, body: &[u8], timestamp: &str, nonce: &str) -> Vec<u8> {
    format!("{method}\n{path_and_query}\n{}\n{timestamp}\n{nonce}", body_hash_hex(body)).into_bytes()
}

/// The bytes a response signature covers.
pub fn response_string(status: u16, request_nonce: &str, body: &[u8], timestamp: &str) -> Vec<u8> {
    format!("FV1-RESPONSE\n{status}\n{request_nonce}\n{}\n{timestamp}", body_hash_hex(body)).into_bytes()
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

fn decode_canonical<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = STANDARD.decode(s).ok()?;
    let arr: [u8; N] = bytes.try_into().ok()?;
    (STANDARD.encode(arr) == s).then_some(arr)
}

/// The per-session request-signing secret: 32 random bytes, sent once at login as base64.
pub struct SessionSecret(Zeroizing<[u8; 32]>);

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret([redacted])")
    }
}

impl SessionSecret {
    /// Takes 32 secret bytes (fresh from a CSPRNG, or just unsealed).
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        SessionSecret(bytes)
    }

    /// Decodes the base64 form sent at login.
    ///
    /// # Errors
    /// [`SignatureError::MalformedSecret`].
    pub fn from_base64(s: &str) -> Result<Self, SignatureError> {
        let bytes = Zeroizing::new(STANDARD.decode(s).map_err(|_| SignatureError::MalformedSecret)?);
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| SignatureError::MalformedSecret)?;
        Ok(SessionSecret(Zeroizing::new(arr)))
    }

    /// The base64 form, for the login response only.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// The raw bytes (to seal them for storage).
    ///
    /// # Security
    /// Hand them only to a sealing AEAD, never to a log or a response other than login's.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref())
    }

    fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(hmac::sign(&self.key(), message).as_ref())
    }

    fn verify(&self, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        let tag = decode_canonical::<32>(signature).ok_or(SignatureError::MalformedSignature)?;
        // aws-lc-rs compares the tags in constant time.
        hmac::verify(&self.key(), message, &tag).map_err(|_| SignatureError::Mismatch)
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
        self.sign(&request_string(method, path_and_query, body, timestamp, nonce))
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
        self.verify(&request_string(method, path_and_query, body, timestamp, nonce), signature)
    }

    /// `X-Signature` for a response.
    pub fn sign_response(&self, status: u16, request_nonce: &str, body: &[u8], timestamp: &str) -> String {
        self.sign(&response_string(status, request_nonce, body, timestamp))
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
        self.verify(&response_string(status, request_nonce, body, timestamp), signature)
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
