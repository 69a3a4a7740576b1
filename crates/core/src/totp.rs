//! Time-based one-time passwords (TOTP, RFC 6238) as authenticator apps make them: HMAC-SHA-1,
//! six digits, 30-second steps counted from the Unix epoch.
//!
//! ```text
//! step  = floor(now / 30)
//! mac   = HMAC-SHA-1(secret, step as 8 bytes big-endian)            (RFC 4226, section 5.3)
//! value = the 31 bits at offset (mac[19] & 0x0f) of mac, big-endian
//! code  = value mod 10^6, as six ASCII digits with leading zeros
//! ```
//!
//! SHA-1 because that is what every authenticator app computes when the `otpauth://` URI
//! says nothing else, and HMAC-SHA-1 is not weakened by SHA-1's collisions. A code is
//! accepted for the current step and one step either side (a clock up to 30 s off, or a code
//! typed as it turned over), and only for a step later than the last one used, so a code
//! works once. Like the rest of this crate, nothing here reads the clock: `now` is an
//! argument.

use std::fmt;

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::base32;
use crate::protocol::oidc::percent_encode;

/// Bytes in a TOTP secret: 160 bits, the HMAC-SHA-1 output size RFC 4226 recommends.
pub const TOTP_SECRET_LEN: usize = 20;
/// Seconds per step.
pub const TOTP_STEP_SECS: u64 = 30;
/// Digits in a code.
pub const TOTP_DIGITS: usize = 6;
/// Steps accepted either side of the current one.
const WINDOW: u64 = 1;

/// A user's TOTP secret, shared with their authenticator app. Zeroized on drop; `Debug`
/// prints `[redacted]`.
pub struct TotpSecret(Zeroizing<[u8; TOTP_SECRET_LEN]>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

impl TotpSecret {
    /// Takes ownership of 20 secret bytes (fresh from a CSPRNG at enrolment).
    pub fn from_bytes(bytes: Zeroizing<[u8; TOTP_SECRET_LEN]>) -> Self {
        Self(bytes)
    }

    /// Reads the `secret` parameter of an `otpauth://` URI: 32 characters of RFC 4648
    /// base32 (upper case, no padding). None for anything else.
    pub fn from_base32(text: &str) -> Option<Self> {
        let raw = base32::decode(text)?;
        let bytes: [u8; TOTP_SECRET_LEN] = raw.as_slice().try_into().ok()?;
        Some(Self(Zeroizing::new(bytes)))
    }

    /// The raw bytes.
    ///
    /// # Security
    /// For sealing at rest only; never log them.
    pub fn expose_secret(&self) -> &[u8; TOTP_SECRET_LEN] {
        &self.0
    }
}

/// The step `now` (Unix seconds) falls in.
pub fn totp_step(now: u64) -> u64 {
    now / TOTP_STEP_SECS
}

/// RFC 4226's dynamic truncation of HMAC-SHA-1(secret, counter): a 31-bit number.
fn truncated(secret: &[u8], counter: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bytes: [u8; 4] = mac[offset..offset + 4].try_into().expect("offset + 4 <= 19 + 1 in a 20-byte MAC");
    u32::from_be_bytes(bytes) & 0x7fff_ffff
}

/// The code for `step`, as `digits` ASCII digits with leading zeros.
fn code_with(secret: &[u8], step: u64, digits: usize) -> Zeroizing<String> {
    let modulus = 10u32.pow(digits as u32);
    Zeroizing::new(format!("{:0digits$}", truncated(secret, step) % modulus))
}

/// The six-digit code for `step` (see [`totp_step`]): what the authenticator app shows
/// during that step.
///
/// # Security
/// A code is a credential for its step and the next; never log it.
pub fn totp_code(secret: &TotpSecret, step: u64) -> Zeroizing<String> {
    code_with(&secret.0[..], step, TOTP_DIGITS)
}

/// Checks `code` at time `now`: accepted when it is the code of the current step or of one
/// step either side, and that step is later than `last_used_step` (None: no code used yet).
/// Returns the step it matched, which the caller records as used; None when the code is
/// malformed (not exactly six ASCII digits), wrong, or already used (or older than one used).
///
/// # Security
/// Record the returned step atomically with the effect the code grants, refusing when the
/// stored last step is no longer below it: otherwise two requests can each use the same code.
pub fn totp_verify(secret: &TotpSecret, code: &str, now: u64, last_used_step: Option<u64>) -> Option<u64> {
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = totp_step(now);
    let mut matched = None;
    // Every step of the window is computed and compared in constant time, whichever matches,
    // so the time taken says nothing about which one did.
    for step in current.saturating_sub(WINDOW)..=current.saturating_add(WINDOW) {
        let fresh = last_used_step.is_none_or(|last| step > last);
        let equal = bool::from(totp_code(secret, step).as_bytes().ct_eq(code.as_bytes()));
        if equal && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://totp/` URI an authenticator app reads (usually from a QR code): label
/// `issuer:account`, the secret in base32, and the parameters spelled out.
///
/// # Security
/// It carries the secret: show it to the user being enrolled, never log it.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &TotpSecret) -> Zeroizing<String> {
    let issuer = percent_encode(issuer);
    let secret = base32::encode(&secret.0[..]);
    Zeroizing::new(format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECS}",
        percent_encode(account),
        secret.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, Appendix B: the SHA-1 seed, ASCII "12345678901234567890".
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(Zeroizing::new(*b"12345678901234567890"))
    }

    #[test]
    fn the_rfc_6238_sha1_vectors_hold_with_eight_digits_and_truncate_to_six() {
        // (time, the 8-digit TOTP of Appendix B)
        for (time, eight) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            let s = rfc_secret();
            assert_eq!(*code_with(&s.0[..], totp_step(time), 8), eight, "t = {time}");
            // Six digits are the same number mod 10^6: the last six digits.
            assert_eq!(*totp_code(&s, totp_step(time)), eight[2..], "t = {time}");
            assert_eq!(totp_verify(&s, &eight[2..], time, None), Some(totp_step(time)));
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_no_further() {
        let s = rfc_secret();
        let now = 1_111_111_111;
        let step = totp_step(now);
        for (delta, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let at = step.checked_add_signed(delta).expect("in range");
            let code = totp_code(&s, at);
            assert_eq!(totp_verify(&s, &code, now, None), accepted.then_some(at), "step {delta:+}");
        }
    }

    #[test]
    fn a_used_step_and_every_earlier_one_are_refused() {
        let s = rfc_secret();
        let now = 1_234_567_890;
        let step = totp_step(now);
        let code = totp_code(&s, step);
        assert_eq!(totp_verify(&s, &code, now, Some(step - 1)), Some(step));
        assert_eq!(totp_verify(&s, &code, now, Some(step)), None, "used once");
        assert_eq!(totp_verify(&s, &code, now, Some(step + 1)), None, "a later code was used");
        // The previous step's code is refused once the current one was used.
        assert_eq!(totp_verify(&s, &totp_code(&s, step - 1), now, Some(step)), None);
        // The next step's code still works.
        assert_eq!(totp_verify(&s, &totp_code(&s, step + 1), now, Some(step)), Some(step + 1));
    }

    #[test]
    fn malformed_codes_are_refused() {
        let s = rfc_secret();
        let now = 59;
        let right = totp_code(&s, totp_step(now));
        assert_eq!(&*right, "287082");
        for bad in ["", "28708", "2870820", " 287082", "287082 ", "２８７０８２", "28708a", "-87082", "+87082"] {
            assert_eq!(totp_verify(&s, bad, now, None), None, "{bad:?}");
        }
        let other = TotpSecret::from_bytes(Zeroizing::new([0; TOTP_SECRET_LEN]));
        assert_eq!(totp_verify(&other, &right, now, None), None, "another secret's code");
    }

    #[test]
    fn the_uri_names_issuer_and_account_and_its_secret_reads_back() {
        let s = rfc_secret();
        let uri = otpauth_uri("Fieldvault", "alice", &s);
        assert_eq!(
            &*uri,
            "otpauth://totp/Fieldvault:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Fieldvault&algorithm=SHA1&digits=6&period=30"
        );
        let back = TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("32 characters");
        assert_eq!(back.expose_secret(), s.expose_secret());
        assert!(TotpSecret::from_base32("GEZDGNBVGY3TQOJQ").is_none(), "10 bytes is not a secret");
        let spaced = otpauth_uri("Field vault", "ann marie/ops", &s);
        assert!(spaced.starts_with("otpauth://totp/Field%20vault:ann%20marie%2Fops?"), "{}", &*spaced);
        assert!(spaced.contains("&issuer=Field%20vault&"), "{}", &*spaced);
        assert_eq!(format!("{s:?}"), "TotpSecret([redacted])");
    }
}
