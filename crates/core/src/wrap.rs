//! The wrapped-key format (`docs/formats/wrapped-key.md`): one 256-bit key sealed with
//! AES-256-GCM under the key above it in the hierarchy.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "FVWK"
//!      4     1  format version = 0x01
//!      5     1  algorithm = 0x01 (AES-256-GCM)
//!      6     1  purpose (1 master, 2 database, 3 files, 4 sync)
//!      7     1  flags = 0x00 (reserved)
//!      8     4  key version, u32 big-endian, >= 1
//!     12    16  key id
//!     28    16  canary of the wrapping key
//!     44    12  nonce
//!     56    48  ciphertext (32) || tag (16)
//! ```
//!
//! The associated data binds the slot: `"fieldvault/v1/wrapped-key" 0x00 || vault id ||
//! len8(account) || account || len16(bound) || bound || bytes 0..44`, so a wrapped key moved
//! to another vault, account, purpose or version, or re-labelled with another key id, fails
//! to open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::section::Reader;
use crate::{ContentKey, DataKey, Error, KEY_LEN, Kek, KeyId, MasterKey, Purpose, VaultId, canary};

const MAGIC: &[u8; 4] = b"FVWK";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 44;
const TAG_LEN: usize = 16;
/// Length of the nonce a caller supplies to every seal: 96 bits, from a CSPRNG.
pub const NONCE_LEN: usize = 12;
const AAD_LABEL: &[u8] = b"fieldvault/v1/wrapped-key\0";

/// The AEAD that seals a wrapped key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapAlgorithm {
    /// AES-256-GCM (NIST SP 800-38D) with a random 96-bit nonce.
    Aes256Gcm = 1,
}

/// Where a wrapped key belongs. Bound into its associated data.
#[derive(Clone, Copy, Debug)]
pub struct SlotContext<'a> {
    /// The vault the key belongs to.
    pub vault: &'a VaultId,
    /// The account (empty for the vault-wide master key).
    pub account: &'a str,
    /// Further bytes the slot is bound to: the keystore parameters for the master key.
    pub bound: &'a [u8],
}

/// What a wrapped key says about the key inside: its purpose, version and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    /// What the key is for.
    pub purpose: Purpose,
    /// Its version: 1 at creation, +1 on every rotation.
    pub version: u32,
    /// Its unique id.
    pub key_id: KeyId,
}

/// A key sealed under the key above it. Holds only ciphertext; safe to store and copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    meta: KeyMeta,
    wrapper_canary: [u8; 16],
    nonce: [u8; NONCE_LEN],
    sealed: [u8; KEY_LEN + TAG_LEN],
}

impl WrappedKey {
    /// Encoded length in bytes.
    pub const LEN: usize = HEADER_LEN + NONCE_LEN + KEY_LEN + TAG_LEN;

    /// Purpose, version and key id (readable without any key).
    pub fn meta(&self) -> KeyMeta {
        self.meta
    }

    /// The canary of the key this was sealed under.
    pub fn wrapper_canary(&self) -> [u8; 16] {
        self.wrapper_canary
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5] = WrapAlgorithm::Aes256Gcm as u8;
        h[6] = self.meta.purpose.code();
        h[7] = 0;
        h[8..12].copy_from_slice(&self.meta.version.to_be_bytes());
        h[12..28].copy_from_slice(self.meta.key_id.as_bytes());
        h[28..44].copy_from_slice(&self.wrapper_canary);
        h
    }

    fn aad(&self, ctx: &SlotContext<'_>) -> Vec<u8> {
        let mut aad =
            Vec::with_capacity(AAD_LABEL.len() + 16 + 1 + ctx.account.len() + 2 + ctx.bound.len() + HEADER_LEN);
        aad.extend_from_slice(AAD_LABEL);
        aad.extend_from_slice(ctx.vault.as_bytes());
        // Account names are at most 64 bytes and bound bytes at most a few dozen: the
        // length prefixes cannot overflow for any slot the vault writes.
        aad.push(u8::try_from(ctx.account.len()).expect("account names are at most 64 bytes"));
        aad.extend_from_slice(ctx.account.as_bytes());
        aad.extend_from_slice(&u16::try_from(ctx.bound.len()).expect("bound bytes are short").to_be_bytes());
        aad.extend_from_slice(ctx.bound);
        aad.extend_from_slice(&self.header());
        aad
    }

    fn seal_raw(
        key: &[u8; KEY_LEN],
        wrapping: &[u8; KEY_LEN],
        meta: KeyMeta,
        ctx: &SlotContext<'_>,
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        let mut w = WrappedKey { meta, wrapper_canary: canary(wrapping), nonce, sealed: [0; KEY_LEN + TAG_LEN] };
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, wrapping).expect("32-byte key fits AES-256"));
        let mut buf = Zeroizing::new(key.to_vec());
        let tag = aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(w.aad(ctx)), &mut buf)
            .expect("sealing 32 bytes cannot exceed AES-GCM limits");
        w.sealed[..KEY_LEN].copy_from_slice(&buf);
        w.sealed[KEY_LEN..].copy_from_slice(tag.as_ref());
        w
    }

    fn open_raw(&self, wrapping: &[u8; KEY_LEN], ctx: &SlotContext<'_>) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
        if !bool::from(self.wrapper_canary.ct_eq(&canary(wrapping))) {
            return Err(Error::WrongKey { what: self.describe(ctx.account) });
        }
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, wrapping).expect("32-byte key fits AES-256"));
        let mut buf = Zeroizing::new(self.sealed.to_vec());
        let plain = aead
            .open_in_place(Nonce::assume_unique_for_key(self.nonce), Aad::from(self.aad(ctx)), &mut buf)
            .map_err(|_| Error::Tampered { what: self.describe(ctx.account) })?;
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(plain);
        Ok(out)
    }

    /// A human name for this slot, for error messages: `master key v1`,
    /// `account 'alice' database key v2`.
    pub fn describe(&self, account: &str) -> String {
        if account.is_empty() {
            format!("{} key v{}", self.meta.purpose, self.meta.version)
        } else {
            format!("account '{account}' {} key v{}", self.meta.purpose, self.meta.version)
        }
    }

    /// Opens the master key.
    ///
    /// # Errors
    /// [`Error::WrongKey`] when `kek` is not the key this was sealed under (the canary
    /// differs: a wrong passphrase); [`Error::Tampered`] when the canary matches but the tag
    /// does not (the bytes were edited or the slot moved); [`Error::Malformed`] when this is
    /// not a master-key slot.
    pub fn open_master(&self, kek: &Kek, ctx: &SlotContext<'_>) -> Result<MasterKey, Error> {
        if self.meta.purpose != Purpose::Master {
            return Err(Error::Malformed { what: "wrapped key", reason: "expected the master key slot" });
        }
        self.open_raw(kek.expose_secret(), ctx).map(MasterKey::from_bytes)
    }

    /// Opens a data key. Errors as for [`WrappedKey::open_master`].
    pub fn open_data_key(&self, master: &MasterKey, ctx: &SlotContext<'_>) -> Result<DataKey, Error> {
        if !Purpose::DATA.contains(&self.meta.purpose) {
            return Err(Error::Malformed { what: "wrapped key", reason: "expected a data-key slot" });
        }
        self.open_raw(master.expose_secret(), ctx).map(DataKey::from_bytes)
    }

    /// Opens a sync secret (a lease key or a device secret) with the master key. `ctx.bound`
    /// must be what it was sealed with ([`lease_bound`], [`device_bound`]). Errors as for
    /// [`WrappedKey::open_master`].
    pub fn open_sync_secret(&self, master: &MasterKey, ctx: &SlotContext<'_>) -> Result<Zeroizing<[u8; 32]>, Error> {
        if !matches!(self.meta.purpose, Purpose::Lease | Purpose::Device) {
            return Err(Error::Malformed { what: "wrapped key", reason: "expected a lease key or a device secret" });
        }
        self.open_raw(master.expose_secret(), ctx)
    }

    /// Opens the recovery wrapping key `K_R` with the master key. Errors as for
    /// [`WrappedKey::open_master`].
    pub fn open_recovery_wrapper(&self, master: &MasterKey, ctx: &SlotContext<'_>) -> Result<Kek, Error> {
        if self.meta.purpose != Purpose::Recovery {
            return Err(Error::Malformed { what: "wrapped key", reason: "expected a recovery wrapping key" });
        }
        self.open_raw(master.expose_secret(), ctx).map(Kek::from_bytes)
    }

    /// Opens an attachment's content key with the account's files key. `ctx.bound` must be
    /// the attachment id. Errors as for [`WrappedKey::open_master`].
    pub fn open_content_key(&self, files_key: &DataKey, ctx: &SlotContext<'_>) -> Result<ContentKey, Error> {
        if self.meta.purpose != Purpose::Attachment {
            return Err(Error::Malformed { what: "wrapped key", reason: "expected an attachment content key" });
        }
        self.open_raw(files_key.expose_secret(), ctx).map(ContentKey::from_bytes)
    }

    /// Encodes to exactly [`WrappedKey::LEN`] bytes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..HEADER_LEN].copy_from_slice(&self.header());
        out[HEADER_LEN..HEADER_LEN + NONCE_LEN].copy_from_slice(&self.nonce);
        out[HEADER_LEN + NONCE_LEN..].copy_from_slice(&self.sealed);
        out
    }

    /// Parses exactly [`WrappedKey::LEN`] bytes. Checks structure only: authenticity is
    /// checked when the key is opened.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "wrapped key";
        let mut r = Reader::new(bytes, WHAT);
        r.header(MAGIC, VERSION)?;
        let alg = r.u8()?;
        if alg != WrapAlgorithm::Aes256Gcm as u8 {
            return Err(Error::UnknownCode { what: "wrapped-key algorithm", code: alg });
        }
        let purpose = Purpose::from_code(r.u8()?)?;
        if r.u8()? != 0 {
            return Err(Error::Malformed { what: WHAT, reason: "reserved flags byte is not zero" });
        }
        let version = r.u32()?;
        if version == 0 {
            return Err(Error::Malformed { what: WHAT, reason: "key version 0 is not allowed" });
        }
        let key_id = KeyId::from_bytes(r.array()?);
        let wrapper_canary = r.array()?;
        let nonce = r.array()?;
        let sealed = r.array()?;
        r.finish()?;
        Ok(WrappedKey { meta: KeyMeta { purpose, version, key_id }, wrapper_canary, nonce, sealed })
    }
}

impl Kek {
    /// Seals the master key under this keystore key. `nonce` must be fresh random bytes.
    pub fn seal_master(
        &self,
        master: &MasterKey,
        meta: KeyMeta,
        ctx: &SlotContext<'_>,
        nonce: [u8; NONCE_LEN],
    ) -> WrappedKey {
        debug_assert_eq!(meta.purpose, Purpose::Master);
        WrappedKey::seal_raw(master.expose_secret(), self.expose_secret(), meta, ctx, nonce)
    }
}

impl DataKey {
    /// Seals an attachment's content key under this files key. `meta.version` is this files
    /// key's version, `ctx.bound` the attachment id; `nonce` must be fresh random bytes.
    pub fn seal_content_key(
        &self,
        cek: &ContentKey,
        meta: KeyMeta,
        ctx: &SlotContext<'_>,
        nonce: [u8; NONCE_LEN],
    ) -> WrappedKey {
        debug_assert_eq!(meta.purpose, Purpose::Attachment);
        WrappedKey::seal_raw(cek.expose_secret(), self.expose_secret(), meta, ctx, nonce)
    }
}

/// The associated data a lease key is bound to besides its slot: its id and its expiry, so
/// that an expiry moved on disk fails to open.
pub fn lease_bound(lease_id: &str, expires_at: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(lease_id.len() + 9);
    b.push(u8::try_from(lease_id.len()).unwrap_or(u8::MAX));
    b.extend_from_slice(lease_id.as_bytes());
    b.extend_from_slice(&expires_at.to_be_bytes());
    b
}

/// The associated data a device secret is bound to besides its slot: the device id.
pub fn device_bound(device_id: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(device_id.len() + 1);
    b.push(u8::try_from(device_id.len()).unwrap_or(u8::MAX));
    b.extend_from_slice(device_id.as_bytes());
    b
}

/// The label of the lease-wrapping key derivation.
const LEASE_LABEL: &[u8] = b"fieldvault/v1/lease";

impl MasterKey {
    /// The key that wraps a synced account's data keys (SPEC section 5): HKDF-SHA256
    /// (RFC 5869) with the master key as input key material, the lease key `L` as salt, and
    /// `"fieldvault/v1/lease" || vault || len8(account) || account || len8(lease_id) ||
    /// lease_id` as info. Without `L` (gone at the lease's end) the data keys stay shut.
    pub fn lease_wrapping_key(&self, lease: &[u8; 32], vault: &VaultId, account: &str, lease_id: &str) -> MasterKey {
        let mut info = Vec::with_capacity(LEASE_LABEL.len() + 16 + 2 + account.len() + lease_id.len());
        info.extend_from_slice(LEASE_LABEL);
        info.extend_from_slice(vault.as_bytes());
        info.push(u8::try_from(account.len()).unwrap_or(u8::MAX));
        info.extend_from_slice(account.as_bytes());
        info.push(u8::try_from(lease_id.len()).unwrap_or(u8::MAX));
        info.extend_from_slice(lease_id.as_bytes());
        let prk = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, lease).extract(self.expose_secret());
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(&[&info], aws_lc_rs::hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(out.as_mut()))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        MasterKey::from_bytes(out)
    }

    /// Seals a sync secret (lease key or device secret) under this master key.
    pub fn seal_sync_secret(
        &self,
        secret: &[u8; 32],
        meta: KeyMeta,
        ctx: &SlotContext<'_>,
        nonce: [u8; NONCE_LEN],
    ) -> WrappedKey {
        debug_assert!(matches!(meta.purpose, Purpose::Lease | Purpose::Device));
        WrappedKey::seal_raw(secret, self.expose_secret(), meta, ctx, nonce)
    }

    /// Seals the recovery wrapping key `K_R` under this master key (purpose
    /// [`Purpose::Recovery`]), so that a master-key rotation can wrap the new master key under
    /// `K_R` without the recovery key. `nonce` must be fresh random bytes.
    pub fn seal_recovery_wrapper(
        &self,
        wrapper: &Kek,
        meta: KeyMeta,
        ctx: &SlotContext<'_>,
        nonce: [u8; NONCE_LEN],
    ) -> WrappedKey {
        debug_assert_eq!(meta.purpose, Purpose::Recovery);
        WrappedKey::seal_raw(wrapper.expose_secret(), self.expose_secret(), meta, ctx, nonce)
    }

    /// Seals a data key under this master key. `nonce` must be fresh random bytes.
    pub fn seal_data_key(
        &self,
        key: &DataKey,
        meta: KeyMeta,
        ctx: &SlotContext<'_>,
        nonce: [u8; NONCE_LEN],
    ) -> WrappedKey {
        debug_assert_ne!(meta.purpose, Purpose::Master);
        WrappedKey::seal_raw(key.expose_secret(), self.expose_secret(), meta, ctx, nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(purpose: Purpose, version: u32) -> KeyMeta {
        KeyMeta { purpose, version, key_id: KeyId::from_bytes([0x11; 16]) }
    }

    fn keys() -> (MasterKey, DataKey) {
        (MasterKey::from_bytes(Zeroizing::new([3; 32])), DataKey::from_bytes(Zeroizing::new([4; 32])))
    }

    #[test]
    fn wrapped_key_round_trips_exactly_to_the_byte() {
        let (m, d) = keys();
        let vault = VaultId::from_bytes([1; 16]);
        let ctx = SlotContext { vault: &vault, account: "a", bound: b"" };
        let w = m.seal_data_key(&d, meta(Purpose::Files, 7), &ctx, [9; 12]);
        let bytes = w.to_bytes();
        let back = WrappedKey::from_bytes(&bytes).expect("parses");
        assert_eq!(back, w);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.open_data_key(&m, &ctx).expect("opens").expose_secret(), d.expose_secret());
    }

    #[test]
    fn a_key_moved_to_any_other_slot_fails_to_open() {
        let (m, d) = keys();
        let v1 = VaultId::from_bytes([1; 16]);
        let v2 = VaultId::from_bytes([2; 16]);
        let ctx = SlotContext { vault: &v1, account: "a", bound: b"" };
        let w = m.seal_data_key(&d, meta(Purpose::Database, 1), &ctx, [9; 12]);
        for other in [
            SlotContext { vault: &v2, account: "a", bound: b"" },
            SlotContext { vault: &v1, account: "b", bound: b"" },
            SlotContext { vault: &v1, account: "a", bound: b"x" },
        ] {
            assert!(matches!(w.open_data_key(&m, &other), Err(Error::Tampered { .. })));
        }
        // Relabelling purpose, version or key id in the header also breaks the tag.
        let mut bytes = w.to_bytes();
        for (i, v) in [(6usize, 3u8), (11, 2), (12, 0x12)] {
            let mut b = bytes;
            b[i] = v;
            let edited = WrappedKey::from_bytes(&b).expect("still well-formed");
            assert!(matches!(edited.open_data_key(&m, &ctx), Err(Error::Tampered { .. })), "byte {i}");
        }
        bytes[70] ^= 1;
        let flipped = WrappedKey::from_bytes(&bytes).expect("well-formed");
        assert!(matches!(flipped.open_data_key(&m, &ctx), Err(Error::Tampered { .. })));
    }

    #[test]
    fn a_wrong_wrapping_key_is_reported_as_wrong_key_not_tampering() {
        let (m, d) = keys();
        let vault = VaultId::from_bytes([1; 16]);
        let ctx = SlotContext { vault: &vault, account: "a", bound: b"" };
        let w = m.seal_data_key(&d, meta(Purpose::Sync, 1), &ctx, [9; 12]);
        let other = MasterKey::from_bytes(Zeroizing::new([5; 32]));
        let err = w.open_data_key(&other, &ctx).expect_err("wrong key");
        assert!(matches!(err, Error::WrongKey { .. }));
        assert_eq!(err.to_string(), "account 'a' sync key v1 was sealed under a different key");
    }

    #[test]
    fn unknown_versions_algorithms_and_flags_are_errors() {
        let (m, d) = keys();
        let vault = VaultId::from_bytes([1; 16]);
        let ctx = SlotContext { vault: &vault, account: "", bound: b"" };
        let good = m.seal_data_key(&d, meta(Purpose::Files, 1), &ctx, [0; 12]).to_bytes();
        for (i, v, want) in [(4usize, 2u8, "version"), (5, 2, "algorithm"), (6, 9, "purpose"), (7, 1, "flags")] {
            let mut b = good;
            b[i] = v;
            let err = WrappedKey::from_bytes(&b).expect_err("refused").to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(matches!(WrappedKey::from_bytes(&good[..50]), Err(Error::Truncated { .. })));
        let mut long = good.to_vec();
        long.push(0);
        assert!(matches!(WrappedKey::from_bytes(&long), Err(Error::TrailingBytes { extra: 1, .. })));
    }
}
