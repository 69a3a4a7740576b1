//! The streaming encryptor: one pass, one chunk in memory plus 32 bytes of hash per chunk
//! for the manifest (512 KiB per GiB at 64 KiB chunks).

use std::io::{self, Write};

use aws_lc_rs::aead::{Aad, Nonce};
use aws_lc_rs::hmac;

use super::keys::FileKeys;
use super::{HASH_LEN, Header, MAX_CHUNKS, RootHasher, TAG_LEN, manifest_len, manifest_prefix};
use crate::ContentKey;

/// What a finished encryption produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Plaintext length.
    pub length: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// The manifest root (checkable without a key).
    pub root: [u8; HASH_LEN],
    /// Total bytes written (header, chunks, manifest).
    pub file_len: u64,
}

/// Encrypts a stream into the attachment format. Write plaintext into it (it implements
/// [`Write`]), then call [`Encryptor::finish`]: without it the file has no final chunk and
/// no manifest, and every reader refuses it as truncated.
pub struct Encryptor<W: Write> {
    out: W,
    header: Vec<u8>,
    prefix: Header,
    keys: FileKeys,
    buf: Vec<u8>,
    chunk_size: usize,
    index: u64,
    length: u64,
    hashes: Vec<[u8; HASH_LEN]>,
    written: u64,
}

impl<W: Write> Encryptor<W> {
    /// Writes the header and gets ready for plaintext. `header.salt` and
    /// `header.nonce_prefix` must be fresh random bytes.
    pub fn new(mut out: W, cek: &ContentKey, header: Header) -> io::Result<Self> {
        if !super::CHUNK_LOG2_RANGE.contains(&header.chunk_log2) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "chunk size outside 4 KiB..16 MiB"));
        }
        let bytes = header.to_bytes();
        out.write_all(&bytes)?;
        let chunk_size = header.chunk_size();
        Ok(Encryptor {
            out,
            written: bytes.len() as u64,
            header: bytes,
            keys: FileKeys::derive(cek, &header),
            prefix: header,
            buf: Vec::with_capacity(chunk_size + TAG_LEN),
            chunk_size,
            index: 0,
            length: 0,
            hashes: Vec::new(),
        })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        if self.index >= MAX_CHUNKS {
            return Err(io::Error::other("attachment too large: more than 2^32 chunks"));
        }
        let nonce = Nonce::assume_unique_for_key(self.prefix.nonce(self.index, last));
        let tag = self
            .keys
            .chunk
            .seal_in_place_separate_tag(nonce, Aad::from(&self.header), &mut self.buf)
            .map_err(|_| io::Error::other("chunk sealing failed"))?;
        self.buf.extend_from_slice(tag.as_ref());
        self.out.write_all(&self.buf)?;
        self.hashes.push(*blake3::hash(&self.buf).as_bytes());
        self.written += self.buf.len() as u64;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the final chunk and writes the manifest. Returns what was written; the output
    /// is flushed but not synced (the caller owns durability).
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        self.seal(true)?;
        let count = self.index;
        let mut root = RootHasher::new(&self.header, count, self.length);
        for h in &self.hashes {
            root.update(h);
        }
        let root = root.finish();
        let mut mac = hmac::Context::with_key(&self.keys.manifest);
        mac.update(&self.header);
        let prefix = manifest_prefix(count, self.length);
        mac.update(&prefix);
        self.out.write_all(&prefix)?;
        for h in &self.hashes {
            mac.update(h);
            self.out.write_all(h)?;
        }
        mac.update(&root);
        self.out.write_all(&root)?;
        self.out.write_all(mac.sign().as_ref())?;
        self.out.write_all(&manifest_len(count).to_be_bytes())?;
        self.out.flush()?;
        let file_len = self.written + manifest_len(count);
        Ok((self.out, Written { length: self.length, chunks: count, root, file_len }))
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            // A full buffer is sealed only once more data shows it is not the final chunk.
            if self.buf.len() == self.chunk_size {
                self.seal(false)?;
            }
            let take = (self.chunk_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        self.length += total as u64;
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
