//! The vault marker (`vault.fv`): says "this directory is a Fieldvault vault" and which one.
//!
//! ```text
//! "FVVT" | version 0x01 | vault id (16) | check[8]
//! ```
//! It is compared with the key file's vault id, so a key file copied in from another vault
//! is named as such instead of failing later with a confusing error.

use crate::section::{CHECK_LEN, Reader, checksum};
use crate::{Error, VaultId};

const MAGIC: &[u8; 4] = b"FVVT";
const VERSION: u8 = 1;
const LABEL: &[u8] = b"vault-marker";

/// The parsed marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaultMarker {
    /// The vault's id.
    pub vault: VaultId,
}

impl VaultMarker {
    /// Encoded length.
    pub const LEN: usize = 4 + 1 + 16 + CHECK_LEN;

    /// Encodes the marker.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        out.extend_from_slice(self.vault.as_bytes());
        let check = checksum(LABEL, &out);
        out.extend_from_slice(&check);
        out
    }

    /// Parses the marker.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, "vault marker");
        r.header(MAGIC, VERSION)?;
        let vault = VaultId::from_bytes(r.array()?);
        let check: [u8; CHECK_LEN] = r.array()?;
        r.finish()?;
        if checksum(LABEL, &bytes[..Self::LEN - CHECK_LEN]) != check {
            return Err(Error::ChecksumMismatch { what: "vault marker".into() });
        }
        Ok(VaultMarker { vault })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_detects_damage() {
        let m = VaultMarker { vault: VaultId::from_bytes([3; 16]) };
        let b = m.to_bytes();
        assert_eq!(b.len(), VaultMarker::LEN);
        assert_eq!(VaultMarker::from_bytes(&b).expect("parses"), m);
        let mut bad = b.clone();
        bad[10] ^= 1;
        assert!(matches!(VaultMarker::from_bytes(&bad), Err(Error::ChecksumMismatch { .. })));
        assert!(matches!(VaultMarker::from_bytes(b"SQLite format 3\0"), Err(Error::BadMagic { .. })));
    }
}
