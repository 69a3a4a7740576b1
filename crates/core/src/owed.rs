//! A logout the server has not yet been told of (`docs/formats/key-file.md`, section 7).
//!
//! A plain logout shreds the account's keys first and tells the server after, so the session
//! it needs to tell the server with (server, pins, key id, session secret, tokens) must
//! outlive the shred, a crash and a long time offline. It is kept in the key file, written in
//! the same atomic write that removes the account's keys, sealed under the master key:
//!
//! ```text
//! body    = len8(account) | account | len8(device_id) | device_id | nonce 12 | sealed
//! sealed  = AES-256-GCM(key, nonce, aad, record) || tag 16
//! key     = HKDF-SHA256(ikm = master key, salt = none,
//!                       info = "fieldvault/v1/owed-logout" | vault | len8(account) | account
//!                              | len8(device_id) | device_id)
//! aad     = "fieldvault/v1/owed-logout" 0x00 | vault | len8(account) | account
//!           | len8(device_id) | device_id
//! ```
//!
//! `record` is opaque here (the client writes JSON; `docs/formats/key-file.md` lists its
//! fields). A record moved to another vault, account or device fails to open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use zeroize::Zeroizing;

use crate::section::Reader;
use crate::{AccountName, Error, MasterKey, NONCE_LEN, VaultId};

const LABEL: &[u8] = b"fieldvault/v1/owed-logout";
const TAG_LEN: usize = 16;
/// The largest record sealed: the section's length field is 16 bits.
pub const MAX_RECORD: usize = 16 * 1024;

/// A sealed owed logout, as the key file holds it. Holds only ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwedLogout {
    /// The account that was logged out.
    pub account: AccountName,
    /// The device the server must retire (or whose session it must end).
    pub device_id: String,
    nonce: [u8; NONCE_LEN],
    sealed: Vec<u8>,
}

fn bound(vault: &VaultId, account: &str, device_id: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + 2 + account.len() + device_id.len());
    b.extend_from_slice(vault.as_bytes());
    b.push(u8::try_from(account.len()).unwrap_or(u8::MAX));
    b.extend_from_slice(account.as_bytes());
    b.push(u8::try_from(device_id.len()).unwrap_or(u8::MAX));
    b.extend_from_slice(device_id.as_bytes());
    b
}

fn record_key(master: &MasterKey, bound: &[u8]) -> LessSafeKey {
    let prk = Salt::new(HKDF_SHA256, &[]).extract(master.expose_secret());
    let mut key = Zeroizing::new([0u8; 32]);
    prk.expand(&[LABEL, bound], HKDF_SHA256)
        .and_then(|okm| okm.fill(key.as_mut()))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_ref()).expect("32-byte key fits AES-256"))
}

fn aad(bound: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(LABEL.len() + 1 + bound.len());
    a.extend_from_slice(LABEL);
    a.push(0);
    a.extend_from_slice(bound);
    a
}

impl OwedLogout {
    /// Seals `record` for `account`'s device `device_id`. `nonce` must be fresh random bytes.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the record is larger than `MAX_RECORD` or the device id
    /// longer than 255 bytes.
    pub fn seal(
        master: &MasterKey,
        vault: &VaultId,
        account: &AccountName,
        device_id: &str,
        record: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Self, Error> {
        if record.len() > MAX_RECORD || device_id.len() > 255 {
            return Err(Error::Malformed { what: "owed logout", reason: "the record is too large" });
        }
        let b = bound(vault, account.as_str(), device_id);
        let mut sealed = Zeroizing::new(record.to_vec());
        let tag = record_key(master, &b)
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(&b)), &mut sealed)
            .expect("a record of at most 16 KiB is within AES-GCM limits");
        let mut out = sealed.to_vec();
        out.extend_from_slice(tag.as_ref());
        Ok(OwedLogout { account: account.clone(), device_id: device_id.to_owned(), nonce, sealed: out })
    }

    /// Opens the record.
    ///
    /// # Errors
    /// [`Error::Tampered`] when it was changed, moved, or sealed under another master key.
    pub fn open(&self, master: &MasterKey, vault: &VaultId) -> Result<Zeroizing<Vec<u8>>, Error> {
        let b = bound(vault, self.account.as_str(), &self.device_id);
        let mut buf = Zeroizing::new(self.sealed.clone());
        let len = record_key(master, &b)
            .open_in_place(Nonce::assume_unique_for_key(self.nonce), Aad::from(aad(&b)), &mut buf)
            .map_err(|_| Error::Tampered { what: format!("account '{}' owed logout", self.account) })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// The section body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(2 + self.account.as_str().len() + self.device_id.len() + 12 + self.sealed.len());
        out.push(u8::try_from(self.account.as_str().len()).expect("account names are at most 64 bytes"));
        out.extend_from_slice(self.account.as_str().as_bytes());
        out.push(u8::try_from(self.device_id.len()).expect("checked at sealing"));
        out.extend_from_slice(self.device_id.as_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses a section body (nothing is decrypted).
    ///
    /// # Errors
    /// Structure errors.
    pub fn from_bytes(body: &[u8]) -> Result<Self, Error> {
        const W: &str = "owed logout";
        let mut r = Reader::new(body, W);
        let name = |r: &mut Reader<'_>| -> Result<String, Error> {
            let len = r.u8()?;
            std::str::from_utf8(r.take(usize::from(len))?)
                .map(str::to_owned)
                .map_err(|_| Error::Malformed { what: W, reason: "a name is not UTF-8" })
        };
        let account = AccountName::new(&name(&mut r)?)?;
        let device_id = name(&mut r)?;
        let nonce = r.array()?;
        let rest = r.remaining();
        if rest < TAG_LEN {
            return Err(Error::Truncated { what: W, needed: TAG_LEN, found: rest });
        }
        let sealed = r.take(rest)?.to_vec();
        Ok(OwedLogout { account, device_id, nonce, sealed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(b: u8) -> MasterKey {
        MasterKey::from_bytes(Zeroizing::new([b; 32]))
    }

    #[test]
    fn a_record_round_trips_and_opens_only_where_it_was_sealed() {
        let vault = VaultId::from_bytes([1; 16]);
        let alice = AccountName::new("alice").expect("name");
        let owed = OwedLogout::seal(&master(3), &vault, &alice, "dev-1", b"{\"k\":1}", [7; 12]).expect("seals");
        let back = OwedLogout::from_bytes(&owed.to_bytes()).expect("parses");
        assert_eq!(back, owed);
        assert_eq!(back.open(&master(3), &vault).expect("opens").as_slice(), b"{\"k\":1}");
        // Another master key, vault, account or device: refused.
        assert!(matches!(back.open(&master(4), &vault), Err(Error::Tampered { .. })));
        assert!(matches!(back.open(&master(3), &VaultId::from_bytes([2; 16])), Err(Error::Tampered { .. })));
        for (account, device) in [("bob", "dev-1"), ("alice", "dev-2")] {
            let moved = OwedLogout {
                account: AccountName::new(account).expect("name"),
                device_id: device.into(),
                ..back.clone()
            };
            assert!(matches!(moved.open(&master(3), &vault), Err(Error::Tampered { .. })), "{account}/{device}");
        }
        // A flipped bit anywhere in the sealed part.
        let bytes = owed.to_bytes();
        for i in (bytes.len() - 23)..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            let edited = OwedLogout::from_bytes(&b).expect("well-formed");
            assert!(edited.open(&master(3), &vault).is_err(), "byte {i}");
        }
        // Truncated anywhere: an error, never a panic.
        for len in 0..bytes.len() {
            let _ = OwedLogout::from_bytes(&bytes[..len]).map(|o| o.open(&master(3), &vault));
        }
        assert!(OwedLogout::seal(&master(3), &vault, &alice, "d", &vec![0; MAX_RECORD + 1], [0; 12]).is_err());
    }
}
