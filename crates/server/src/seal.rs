//! Keys derived from the store key, and sealing of the secrets the server must be able to
//! read back (session secrets, device secrets, lease keys, a spent refresh token's successor,
//! attachment content keys, TOTP secrets).
//!
//! ```text
//! sqlite key = HKDF-SHA256(store key, salt = "", info = "fieldvault/v1/server/sqlite")
//! seal key   = HKDF-SHA256(store key, salt = "", info = "fieldvault/v1/server/seal")
//! cursor key = HKDF-SHA256(store key, salt = "", info = "fieldvault/v1/server/cursor")
//! sealed     = nonce (12 random bytes) || AES-256-GCM(seal key, nonce, plaintext, aad = purpose || 0x00 || owner id)
//! ```
//!
//! On PostgreSQL the database is not encrypted by us, so sealing is what keeps a dump from
//! yielding a session secret, a device secret, a lease key or an attachment's CEK; on SQLite it
//! is a second layer under SQLCipher.
//! The associated data binds each sealed value to its purpose and row, so a value copied into
//! another row or column does not open.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

/// What sealed values are for; part of the associated data.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// A session's request-signing secret (owner: session id).
    SessionSecret,
    /// A lease key L (owner: lease id, so that it moves unchanged to the device that takes
    /// it over after a rollback).
    LeaseKey,
    /// A device secret (owner: device id).
    DeviceSecret,
    /// A refresh token's successor (owner: session id).
    RefreshSuccessor,
    /// An attachment's content key, as its uploader sent it for the readers of its document
    /// (owner: the attachment id, 32 lowercase hex digits; ADR 0008).
    AttachmentCek,
    /// An identity provider's refresh token, kept for `--oidc-recheck` (owner: session id).
    ProviderRefresh,
    /// A user's TOTP secret for multi-factor login (owner: the user name).
    TotpSecret,
    /// A console administrator's TOTP secret (owner: the administrator's name; a purpose of
    /// its own, so a user's secret copied into an administrator of the same name does not open).
    AdminTotpSecret,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::SessionSecret => b"session-secret",
            Purpose::LeaseKey => b"lease-key",
            Purpose::DeviceSecret => b"device-secret",
            Purpose::RefreshSuccessor => b"refresh-successor",
            Purpose::AttachmentCek => b"attachment-cek",
            Purpose::ProviderRefresh => b"provider-refresh",
            Purpose::TotpSecret => b"totp-secret",
            Purpose::AdminTotpSecret => b"admin-totp-secret",
        }
    }
}

/// Sealing failed to open: wrong store key, or the bytes were changed or moved.
#[derive(Debug, thiserror::Error)]
#[error("a sealed value does not open under this store key")]
pub struct Unsealed;

/// Seals and opens secrets under the key derived from the store key.
pub struct Sealer {
    key: LessSafeKey,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 (RFC 5869) of the store key with an empty salt and `info`.
fn derive(store_key: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(store_key);
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&[info], Len32).and_then(|okm| okm.fill(out.as_mut())).expect("HKDF-SHA256 can always expand 32 bytes");
    out
}

/// The SQLCipher key of the embedded store.
pub fn sqlite_key(store_key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    derive(store_key, b"fieldvault/v1/server/sqlite")
}

/// The key that authenticates pull cursors (shared by every instance on one store).
pub fn cursor_key(store_key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    derive(store_key, b"fieldvault/v1/server/cursor")
}

fn aad(purpose: Purpose, owner: &str) -> Vec<u8> {
    let mut a = purpose.label().to_vec();
    a.push(0);
    a.extend_from_slice(owner.as_bytes());
    a
}

impl Sealer {
    /// The sealer for a store key.
    pub fn new(store_key: &[u8; 32]) -> Sealer {
        let k = derive(store_key, b"fieldvault/v1/server/seal");
        Sealer { key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k.as_ref()).expect("32 bytes is an AES-256 key")) }
    }

    /// Seals `secret` for `purpose` and `owner` with a fresh random nonce.
    pub fn seal(&self, purpose: Purpose, owner: &str, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the OS random source works");
        let mut out = Vec::with_capacity(NONCE_LEN + secret.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = Zeroizing::new(secret.to_vec());
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(purpose, owner)), &mut *body)
            .expect("AES-GCM seals any length we use");
        out.extend_from_slice(&body);
        out
    }

    /// Opens what [`Sealer::seal`] made for the same purpose and owner.
    ///
    /// # Errors
    /// [`Unsealed`] for another key, purpose or owner, or changed bytes.
    pub fn open(&self, purpose: Purpose, owner: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unsealed> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(Unsealed);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealed)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let n = self.key.open_in_place(nonce, Aad::from(aad(purpose, owner)), &mut buf).map_err(|_| Unsealed)?.len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_value_opens_only_for_its_purpose_and_owner() {
        let s = Sealer::new(&[7; 32]);
        let sealed = s.seal(Purpose::SessionSecret, "s1", b"secret");
        assert_eq!(s.open(Purpose::SessionSecret, "s1", &sealed).expect("opens").as_slice(), b"secret");
        assert!(s.open(Purpose::SessionSecret, "s2", &sealed).is_err());
        assert!(s.open(Purpose::LeaseKey, "s1", &sealed).is_err());
        assert!(s.open(Purpose::DeviceSecret, "s1", &sealed).is_err());
        assert!(s.open(Purpose::AttachmentCek, "s1", &sealed).is_err());
        assert!(s.open(Purpose::TotpSecret, "s1", &sealed).is_err());
        let cek = s.seal(Purpose::AttachmentCek, &"a".repeat(32), &[9; 32]);
        assert_eq!(s.open(Purpose::AttachmentCek, &"a".repeat(32), &cek).expect("opens").as_slice(), &[9; 32]);
        assert!(s.open(Purpose::AttachmentCek, &"b".repeat(32), &cek).is_err(), "moved to another attachment");
        assert!(Sealer::new(&[8; 32]).open(Purpose::SessionSecret, "s1", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(s.open(Purpose::SessionSecret, "s1", &flipped).is_err());
    }

    #[test]
    fn sqlite_and_seal_keys_differ() {
        let k = [1u8; 32];
        assert_ne!(*sqlite_key(&k), *derive(&k, b"fieldvault/v1/server/seal"));
    }
}
