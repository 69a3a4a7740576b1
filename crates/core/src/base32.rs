//! RFC 4648 base32 (section 6) without padding: the alphabet `A-Z 2-7`, five bits a
//! character. One encoder and one decoder for the recovery key's human form and TOTP secrets.

use zeroize::{Zeroize, Zeroizing};

/// RFC 4648 base32 alphabet.
pub(crate) const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The value of one upper-case alphabet character.
pub(crate) fn value(c: char) -> Option<u8> {
    ALPHABET.iter().position(|&a| char::from(a) == c).map(|v| v as u8)
}

/// `data` as base32 without padding. Zeroized on drop: it may spell a secret.
pub(crate) fn encode(data: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(data.len().div_ceil(5) * 8));
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in data {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    acc.zeroize();
    out
}

/// Reads what [`encode`] wrote: upper-case alphabet characters only, no padding, no
/// separators. None for any other character, a length no encoding has, or left-over bits
/// that are not zero (so each byte string has exactly one text).
pub(crate) fn decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    // Lengths mod 8 that an unpadded encoding can end with: 0, 2, 4, 5, 7.
    if matches!(text.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8));
    let (mut acc, mut bits) = (0u64, 0u32);
    for c in text.chars() {
        let Some(v) = value(c) else {
            acc.zeroize();
            return None;
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    let clean = acc & ((1 << bits) - 1) == 0;
    acc.zeroize();
    clean.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_4648_vectors_hold_without_padding() {
        // RFC 4648, section 10, with the padding left off.
        for (plain, b32) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(*encode(plain.as_bytes()), b32);
            assert_eq!(decode(b32).expect(b32).as_slice(), plain.as_bytes());
        }
    }

    #[test]
    fn other_characters_impossible_lengths_and_stray_bits_are_refused() {
        assert!(decode("mzxw6").is_none(), "lower case");
        assert!(decode("MZXW6=").is_none(), "padding");
        assert!(decode("MZXW1").is_none(), "1 is not in the alphabet");
        assert!(decode("MZX").is_none(), "3 characters end no encoding");
        assert!(decode("MY").is_some());
        assert!(decode("M3").is_none(), "bits left over after the last byte must be zero");
    }
}
