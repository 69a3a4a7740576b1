//! Byte-level reading and the checksummed section framing shared by the small on-disk
//! records (key file, vault marker, unlock counter).
//!
//! A checksum here detects accidents (a flipped bit, a torn copy) so that corruption is
//! reported as corruption and never mistaken for a wrong passphrase. It is not a security
//! control: authenticity comes from AEAD tags.

use aws_lc_rs::digest;

use crate::Error;

/// Length of a section checksum.
pub(crate) const CHECK_LEN: usize = 8;

/// First 8 bytes of SHA-256("fieldvault/v1/check" || 0x00 || label || 0x00 || body).
pub(crate) fn checksum(label: &[u8], body: &[u8]) -> [u8; CHECK_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"fieldvault/v1/check\0");
    ctx.update(label);
    ctx.update(b"\0");
    ctx.update(body);
    let d = ctx.finish();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&d.as_ref()[..CHECK_LEN]);
    out
}

/// A cursor over untrusted bytes: every read is bounds-checked and names what it reads.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, pos: 0, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(Error::Truncated {
            what: self.what,
            needed: self.pos.saturating_add(n),
            found: self.bytes.len(),
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Checks the magic bytes and the version byte that open every format.
    pub(crate) fn header(&mut self, magic: &[u8; 4], version: u8) -> Result<(), Error> {
        // A short file is truncated, whatever its first bytes say.
        if self.take(4)? != magic {
            return Err(Error::BadMagic { what: self.what });
        }
        let v = self.u8()?;
        if v != version {
            return Err(Error::UnsupportedVersion { what: self.what, version: v });
        }
        Ok(())
    }

    /// Reads the magic and a version byte that must be one of `versions`; returns it.
    pub(crate) fn header_any(&mut self, magic: &[u8; 4], versions: &[u8]) -> Result<u8, Error> {
        if self.take(4)? != magic {
            return Err(Error::BadMagic { what: self.what });
        }
        let v = self.u8()?;
        if !versions.contains(&v) {
            return Err(Error::UnsupportedVersion { what: self.what, version: v });
        }
        Ok(v)
    }

    /// Fails if anything is left.
    pub(crate) fn finish(self) -> Result<(), Error> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(Error::TrailingBytes { what: self.what, extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_truncation_errors_not_panics() {
        let mut r = Reader::new(&[1, 2, 3], "thing");
        assert_eq!(r.u16().expect("two bytes"), 0x0102);
        assert!(matches!(r.u32(), Err(Error::Truncated { what: "thing", needed: 6, found: 3 })));
        assert!(matches!(r.take(usize::MAX), Err(Error::Truncated { .. })));
    }

    #[test]
    fn checksum_depends_on_label_and_body() {
        assert_ne!(checksum(b"a", b"x"), checksum(b"b", b"x"));
        assert_ne!(checksum(b"a", b"x"), checksum(b"a", b"y"));
    }
}
