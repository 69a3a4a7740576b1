//! The recovery key (`docs/formats/key-file.md`, section 5.8; `docs/keys.md`, "Recovery"):
//! 256 random bits a person writes down, which open the vault's master key when the keystore
//! entry is gone or the passphrase is forgotten.
//!
//! ```text
//! human form = 56 characters of A-Z 2-7 (RFC 4648 base32, no padding), in 14 groups of 4
//!              joined by '-': base32(key (32) || CRC-24(key) (3))
//! K_R        = HKDF-SHA256(IKM = key, salt = none,
//!                          info = "fieldvault/v1/recovery-key" || vault id)      (RFC 5869)
//! section 8  = id (16) || created_at u64 || master key sealed under K_R (104)
//!              || K_R sealed under the master key (104)
//! ```
//!
//! The checksum is CRC-24 (RFC 4880, section 6.1) over the 32 key bytes. A CRC of degree 24
//! detects every error burst of up to 24 bits, so every one-character typo (5 bits) and every
//! swap of two neighbouring characters (10 bits) is caught before any key is derived. It is a
//! check against typing mistakes, not a security control. A wrong key with a valid checksum
//! is caught by the wrapped master key's canary ([`Error::WrongKey`]).

use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use std::fmt;
use zeroize::Zeroizing;

use crate::base32;
use crate::section::Reader;
use crate::{Error, KEY_LEN, Kek, KeyId, KeyMeta, MasterKey, NONCE_LEN, Purpose, SlotContext, VaultId, WrappedKey};

/// Characters in the human form, without separators: (32 + 3) bytes x 8 / 5.
pub const RECOVERY_KEY_CHARS: usize = 56;
const GROUP: usize = 4;
const CHECK_LEN: usize = 3;
const KDF_LABEL: &[u8] = b"fieldvault/v1/recovery-key";
const BOUND_LABEL: &[u8] = b"fieldvault/v1/recovery\0";

/// A vault's recovery key: 32 random bytes. Zeroized on drop; `Debug` prints `[redacted]`.
pub struct RecoveryKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey([redacted])")
    }
}

/// CRC-24 as RFC 4880, section 6.1 (initial value 0xB704CE, generator 0x1864CFB).
fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00B7_04CE;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
        }
    }
    crc & 0x00FF_FFFF
}

fn format_error(reason: String) -> Error {
    Error::RecoveryKeyFormat { reason }
}

impl RecoveryKey {
    /// Takes ownership of 32 key bytes (fresh from a CSPRNG).
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    ///
    /// # Security
    /// For the key derivation only.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The form a person writes down: 14 groups of 4 characters of `A-Z 2-7`, joined by `-`.
    ///
    /// # Security
    /// Show it once, to the person who keeps it; never log it.
    pub fn to_human(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN + CHECK_LEN]);
        raw[..KEY_LEN].copy_from_slice(&self.0[..]);
        raw[KEY_LEN..].copy_from_slice(&crc24(&self.0[..]).to_be_bytes()[1..]);
        let plain = base32::encode(&raw[..]);
        let mut out = Zeroizing::new(String::with_capacity(RECOVERY_KEY_CHARS + RECOVERY_KEY_CHARS / GROUP));
        for (n, c) in plain.chars().enumerate() {
            if n > 0 && n % GROUP == 0 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }

    /// Reads the human form. Case does not matter, and spaces, tabs, line breaks and `-`
    /// anywhere are ignored.
    ///
    /// # Errors
    /// [`Error::RecoveryKeyFormat`] when a character is not in the alphabet (naming its
    /// position, never the text), the length is not 56 characters, or the checksum does not
    /// match (a character was mistyped). Nothing here is a failed unlock.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut plain = Zeroizing::new(String::with_capacity(RECOVERY_KEY_CHARS));
        let mut count = 0usize;
        for c in text.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            count += 1;
            let upper = c.to_ascii_uppercase();
            if base32::value(upper).is_none() {
                return Err(format_error(format!(
                    "character {count} is not one of A-Z and 2-7 (there is no 0, 1, 8 or 9: 0 is O, 1 is I, 8 is B)"
                )));
            }
            if count <= RECOVERY_KEY_CHARS {
                plain.push(upper);
            }
        }
        if count != RECOVERY_KEY_CHARS {
            return Err(format_error(format!("it has {count} characters; a recovery key has {RECOVERY_KEY_CHARS}")));
        }
        // 56 characters are exactly 35 bytes: no bits left over.
        let raw = base32::decode(&plain).expect("56 alphabet characters decode to 35 bytes");
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&raw[..KEY_LEN]);
        if crc24(&key[..]).to_be_bytes()[1..] != raw[KEY_LEN..] {
            return Err(format_error("its checksum does not match: a character was mistyped".to_owned()));
        }
        Ok(RecoveryKey(key))
    }

    /// `K_R`, the key that wraps the master key for this vault: HKDF-SHA256 (RFC 5869) with
    /// the recovery key as input key material, no salt, and `"fieldvault/v1/recovery-key" ||
    /// vault id` as info. Bound to the vault, so one recovery key opens one vault only.
    pub fn wrapping_key(&self, vault: &VaultId) -> Kek {
        let prk = Salt::new(HKDF_SHA256, &[]).extract(&self.0[..]);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        prk.expand(&[KDF_LABEL, vault.as_bytes()], HKDF_SHA256)
            .and_then(|okm| okm.fill(out.as_mut()))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Kek::from_bytes(out)
    }
}

/// The bytes both wrapped keys of a recovery section are bound to besides their slot:
/// `"fieldvault/v1/recovery" || 0x00 || id || created_at`.
fn bound(id: &KeyId, created_at: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(BOUND_LABEL.len() + 16 + 8);
    b.extend_from_slice(BOUND_LABEL);
    b.extend_from_slice(id.as_bytes());
    b.extend_from_slice(&created_at.to_be_bytes());
    b
}

/// The key file's recovery section: the master key wrapped under the recovery key's `K_R`,
/// and `K_R` wrapped under the master key. Holds only ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverySlot {
    /// Random id of this recovery key (shown by `status`; a new recovery key has a new id).
    pub id: KeyId,
    /// When it was made, Unix seconds.
    pub created_at: u64,
    master: WrappedKey,
    escrow: WrappedKey,
}

impl RecoverySlot {
    /// Body length in bytes.
    pub const BODY_LEN: usize = 16 + 8 + 2 * WrappedKey::LEN;

    /// Seals `master` (whose metadata is `master_meta`) under `recovery`'s `K_R`, and `K_R`
    /// under `master`. `nonces` must be fresh random bytes.
    pub fn seal(
        recovery: &RecoveryKey,
        master: &MasterKey,
        master_meta: KeyMeta,
        vault: &VaultId,
        id: KeyId,
        created_at: u64,
        nonces: [[u8; NONCE_LEN]; 2],
    ) -> Self {
        Self::seal_with(&recovery.wrapping_key(vault), master, master_meta, vault, id, created_at, nonces)
    }

    fn seal_with(
        wrapper: &Kek,
        master: &MasterKey,
        master_meta: KeyMeta,
        vault: &VaultId,
        id: KeyId,
        created_at: u64,
        nonces: [[u8; NONCE_LEN]; 2],
    ) -> Self {
        let b = bound(&id, created_at);
        let ctx = SlotContext { vault, account: "", bound: &b };
        let escrow_meta = KeyMeta { purpose: Purpose::Recovery, version: 1, key_id: id };
        RecoverySlot {
            id,
            created_at,
            master: wrapper.seal_master(master, master_meta, &ctx, nonces[0]),
            escrow: master.seal_recovery_wrapper(wrapper, escrow_meta, &ctx, nonces[1]),
        }
    }

    /// Opens the master key with the recovery key.
    ///
    /// # Errors
    /// [`Error::WrongKey`] when the recovery key is not the one this section was made for
    /// (its `K_R`'s canary differs: nothing is decrypted); [`Error::Tampered`] when the
    /// canary matches but the tag does not (the section was edited or moved).
    pub fn open(&self, recovery: &RecoveryKey, vault: &VaultId) -> Result<MasterKey, Error> {
        let b = bound(&self.id, self.created_at);
        let ctx = SlotContext { vault, account: "", bound: &b };
        self.master.open_master(&recovery.wrapping_key(vault), &ctx).map_err(|e| match e {
            Error::WrongKey { .. } => Error::WrongKey { what: "the recovery section's master key".to_owned() },
            Error::Tampered { .. } => Error::Tampered { what: "the recovery section's master key".to_owned() },
            other => other,
        })
    }

    /// The same recovery key's section for a new master key (a master-key rotation): `K_R`
    /// is opened with the old master key and seals the new one.
    ///
    /// # Errors
    /// [`Error::WrongKey`] or [`Error::Tampered`] when `old` does not open `K_R`.
    pub fn rewrap(
        &self,
        old: &MasterKey,
        new: &MasterKey,
        new_meta: KeyMeta,
        vault: &VaultId,
        nonces: [[u8; NONCE_LEN]; 2],
    ) -> Result<Self, Error> {
        let b = bound(&self.id, self.created_at);
        let ctx = SlotContext { vault, account: "", bound: &b };
        let wrapper = self.escrow.open_recovery_wrapper(old, &ctx)?;
        Ok(Self::seal_with(&wrapper, new, new_meta, vault, self.id, self.created_at, nonces))
    }

    /// The master key's metadata as this section holds it.
    pub fn master_meta(&self) -> KeyMeta {
        self.master.meta()
    }

    /// The section body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BODY_LEN);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.master.to_bytes());
        out.extend_from_slice(&self.escrow.to_bytes());
        out
    }

    /// Parses a section body (nothing is decrypted).
    ///
    /// # Errors
    /// Structure errors; [`Error::Malformed`] when the first wrapped key is not a master key,
    /// the second not a recovery wrapping key, or the second's key id is not the section's.
    pub fn from_bytes(body: &[u8]) -> Result<Self, Error> {
        const W: &str = "recovery section";
        let mut r = Reader::new(body, W);
        let id = KeyId::from_bytes(r.array()?);
        let created_at = r.u64()?;
        let master = WrappedKey::from_bytes(r.take(WrappedKey::LEN)?)?;
        let escrow = WrappedKey::from_bytes(r.take(WrappedKey::LEN)?)?;
        r.finish()?;
        if master.meta().purpose != Purpose::Master {
            return Err(Error::Malformed { what: W, reason: "its first key is not the master key" });
        }
        let e = escrow.meta();
        if e.purpose != Purpose::Recovery || e.version != 1 || e.key_id != id {
            return Err(Error::Malformed { what: W, reason: "its second key is not this recovery key's K_R" });
        }
        Ok(RecoverySlot { id, created_at, master, escrow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base32::ALPHABET;

    fn key(b: u8) -> RecoveryKey {
        RecoveryKey::from_bytes(Zeroizing::new([b; 32]))
    }

    fn counting() -> RecoveryKey {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        RecoveryKey::from_bytes(Zeroizing::new(k))
    }

    /// The vectors of `docs/formats/key-file.md`, section 5.8.
    #[test]
    fn the_documented_vectors_hold() {
        assert_eq!(crc24(b""), 0xB704CE);
        assert_eq!(
            counting().to_human().as_str(),
            "AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO-B4IB-CEQT-CQKR-MFYY-DENB-WHA5-DYP2-F4PH"
        );
        assert_eq!(
            key(0xff).to_human().as_str(),
            "7777-7777-7777-7777-7777-7777-7777-7777-7777-7777-7777-7777-777S-ROPR"
        );
        let kr = counting().wrapping_key(&VaultId::from_bytes([1; 16]));
        assert_eq!(
            kr.expose_secret().iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "56acbce5235b7773c6139df688bb0f01981417e8ff6eb8d6f814a82c6722e927"
        );
    }

    #[test]
    fn the_human_form_round_trips_whatever_the_case_and_separators() {
        let k = counting();
        let human = k.to_human();
        assert_eq!(human.len(), 56 + 13);
        for text in [human.to_string(), human.to_lowercase(), human.replace('-', " "), human.replace('-', "")] {
            let back = RecoveryKey::parse(&text).expect("parses");
            assert_eq!(back.expose_secret(), k.expose_secret());
        }
        let spaced = format!("  {}\n", human.replace('-', " - "));
        assert_eq!(RecoveryKey::parse(&spaced).expect("parses").expose_secret(), k.expose_secret());
    }

    #[test]
    fn every_one_character_typo_and_every_neighbour_swap_is_caught_by_the_checksum() {
        for k in [counting(), key(0), key(0xa5)] {
            let plain: Vec<u8> = k.to_human().replace('-', "").into_bytes();
            for i in 0..plain.len() {
                for &c in ALPHABET {
                    if c == plain[i] {
                        continue;
                    }
                    let mut typo = plain.clone();
                    typo[i] = c;
                    let err = RecoveryKey::parse(std::str::from_utf8(&typo).expect("ascii")).expect_err("typo");
                    assert!(err.to_string().contains("checksum"), "{i}: {err}");
                }
                if i + 1 < plain.len() && plain[i] != plain[i + 1] {
                    let mut swapped = plain.clone();
                    swapped.swap(i, i + 1);
                    assert!(RecoveryKey::parse(std::str::from_utf8(&swapped).expect("ascii")).is_err(), "swap {i}");
                }
            }
        }
    }

    #[test]
    fn bad_characters_and_lengths_are_refused_without_echoing_the_key() {
        let human = counting().to_human().replace('-', "");
        let with_zero = format!("{}0{}", &human[..5], &human[6..]);
        let err = RecoveryKey::parse(&with_zero).expect_err("0 is not base32").to_string();
        assert!(err.contains("character 6"), "{err}");
        assert!(!err.contains(&human[..5]), "the key is not echoed: {err}");
        let err = RecoveryKey::parse(&human[..55]).expect_err("short").to_string();
        assert!(err.contains("55 characters"), "{err}");
        assert!(RecoveryKey::parse(&format!("{human}A")).is_err());
        assert!(RecoveryKey::parse("").is_err());
        assert!(RecoveryKey::parse("é").is_err());
        assert_eq!(format!("{:?}", counting()), "RecoveryKey([redacted])");
    }

    fn slot(recovery: &RecoveryKey, master: &MasterKey, vault: &VaultId) -> RecoverySlot {
        let meta = KeyMeta { purpose: Purpose::Master, version: 1, key_id: KeyId::from_bytes([3; 16]) };
        RecoverySlot::seal(recovery, master, meta, vault, KeyId::from_bytes([4; 16]), 1_700_000_000, [[5; 12], [6; 12]])
    }

    #[test]
    fn the_right_key_opens_the_master_a_wrong_one_fails_its_canary_and_an_edit_fails_its_tag() {
        let vault = VaultId::from_bytes([1; 16]);
        let master = MasterKey::from_bytes(Zeroizing::new([2; 32]));
        let s = slot(&counting(), &master, &vault);
        let back = RecoverySlot::from_bytes(&s.to_bytes()).expect("parses");
        assert_eq!(back, s);
        assert_eq!(back.to_bytes(), s.to_bytes());
        assert_eq!(back.open(&counting(), &vault).expect("opens").expose_secret(), &[2; 32]);
        assert!(matches!(back.open(&key(9), &vault), Err(Error::WrongKey { .. })));
        // Bound to the vault: K_R differs, so the canary already says no.
        assert!(matches!(back.open(&counting(), &VaultId::from_bytes([2; 16])), Err(Error::WrongKey { .. })));
        // An edited id no longer names its K_R: refused when parsed.
        let bytes = s.to_bytes();
        let mut b = bytes.clone();
        b[0] ^= 1;
        assert!(matches!(RecoverySlot::from_bytes(&b), Err(Error::Malformed { .. })));
        // An edited creation time, or a flipped ciphertext or tag bit: the tag fails.
        for i in [20, 24 + 60, 24 + 100] {
            let mut b = bytes.clone();
            b[i] ^= 1;
            let edited = RecoverySlot::from_bytes(&b).expect("well-formed");
            assert!(matches!(edited.open(&counting(), &vault), Err(Error::Tampered { .. })), "byte {i}");
        }
        for len in 0..bytes.len() {
            assert!(RecoverySlot::from_bytes(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn a_master_rotation_rewraps_the_section_without_the_recovery_key() {
        let vault = VaultId::from_bytes([1; 16]);
        let old = MasterKey::from_bytes(Zeroizing::new([2; 32]));
        let new = MasterKey::from_bytes(Zeroizing::new([7; 32]));
        let s = slot(&counting(), &old, &vault);
        let meta = KeyMeta { purpose: Purpose::Master, version: 2, key_id: KeyId::from_bytes([8; 16]) };
        let moved = s.rewrap(&old, &new, meta, &vault, [[1; 12], [2; 12]]).expect("rewraps");
        assert_eq!((moved.id, moved.created_at), (s.id, s.created_at));
        assert_eq!(moved.master_meta(), meta);
        assert_eq!(moved.open(&counting(), &vault).expect("opens").expose_secret(), &[7; 32]);
        assert!(s.rewrap(&new, &new, meta, &vault, [[1; 12], [2; 12]]).is_err(), "K_R opens only with the old master");
    }
}
