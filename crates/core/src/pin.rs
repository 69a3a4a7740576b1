//! SPKI pins (SPEC section 5): `sha256/` followed by the standard base64 (with padding) of
//! SHA-256 over a certificate's DER SubjectPublicKeyInfo. The server prints its pin at
//! `init`; a device accepts a TLS certificate only if its key hashes to one of its pins.
//! One type, one parser and one writer for both sides.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// One SPKI SHA-256 pin. Written and read as `sha256/BASE64` (44 base64 characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin([u8; 32]);

/// Why a pin's text is refused. The message quotes at most the text's first 60 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pin {shown:?} is not sha256/ followed by the base64 of 32 bytes")]
pub struct PinError {
    shown: String,
}

const PREFIX: &str = "sha256/";

impl Pin {
    /// The pin of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Pin {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Pin(out)
    }

    /// A pin from the 32 bytes of a SHA-256.
    pub fn from_bytes(bytes: [u8; 32]) -> Pin {
        Pin(bytes)
    }

    /// The SHA-256 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether a DER SubjectPublicKeyInfo hashes to this pin (pins are public: no secret is
    /// compared here).
    pub fn matches_spki(&self, spki_der: &[u8]) -> bool {
        Pin::of_spki(spki_der) == *self
    }
}

impl FromStr for Pin {
    type Err = PinError;

    fn from_str(text: &str) -> Result<Pin, PinError> {
        let bad = || PinError { shown: text.chars().take(60).collect() };
        let b64 = text.strip_prefix(PREFIX).ok_or_else(bad)?;
        // The canonical form only: 44 characters of standard, padded base64.
        if b64.len() != 44 {
            return Err(bad());
        }
        let raw = STANDARD.decode(b64).map_err(|_| bad())?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        Ok(Pin(bytes))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

impl serde::Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pin, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_reads_back_exactly_as_written() {
        let pin = Pin::of_spki(b"any DER bytes");
        let text = pin.to_string();
        assert!(text.starts_with("sha256/") && text.len() == 7 + 44, "{text}");
        assert_eq!(text.parse::<Pin>(), Ok(pin));
        assert_eq!(serde_json::to_string(&pin).expect("a string"), format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Pin>(&format!("\"{text}\"")).expect("parses"), pin);
    }

    #[test]
    fn the_pin_is_sha256_of_the_spki() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let pin = Pin::of_spki(b"abc");
        assert_eq!(pin.to_string(), "sha256/ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
        assert!(pin.matches_spki(b"abc") && !pin.matches_spki(b"abd"));
    }

    #[test]
    fn other_forms_are_refused() {
        let b32 = STANDARD.encode([7u8; 32]);
        for bad in [
            "".to_owned(),
            format!("sha1/{b32}"),
            format!("SHA256/{b32}"),
            format!("sha256//{b32}"),
            format!("sha256/{}", STANDARD.encode([7u8; 31])),
            format!("sha256/{}", b32.trim_end_matches('=')),
            "sha256/not base64 at all, not at all, not at all!!".to_owned(),
        ] {
            assert!(bad.parse::<Pin>().is_err(), "{bad}");
        }
    }
}
