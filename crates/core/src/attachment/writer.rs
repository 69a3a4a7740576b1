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

/// Chunks sealed together, split across two threads: 4 MiB of plaintext at 64 KiB chunks.
/// The batch bounds memory (one batch buffer) while giving each thread enough work that a
/// thread start is noise.
pub(crate) const BATCH: usize = 64;

/// Encrypts a stream into the attachment format. Write plaintext into it (it implements
/// [`Write`]), then call [`Encryptor::finish`]: without it the file has no final chunk and
/// no manifest, and every reader refuses it as truncated.
pub struct Encryptor<W: Write> {
    out: W,
    header: Vec<u8>,
    prefix: Header,
    keys: FileKeys,
    /// BATCH slots of chunk_size + TAG_LEN bytes; plaintext goes in, sealed chunks come out.
    batch: Vec<u8>,
    /// Full slots in `batch`, and bytes in the slot being filled.
    slots: usize,
    fill: usize,
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
        let batch = if chunk_size <= 1 << 16 { BATCH } else { 4 };
        Ok(Encryptor {
            out,
            written: bytes.len() as u64,
            header: bytes,
            keys: FileKeys::derive(cek, &header),
            prefix: header,
            batch: vec![0u8; batch * (chunk_size + TAG_LEN)],
            slots: 0,
            fill: 0,
            chunk_size,
            index: 0,
            length: 0,
            hashes: Vec::new(),
        })
    }

    fn slot_len(&self) -> usize {
        self.chunk_size + TAG_LEN
    }

    /// Seals the `slots` full slots, plus the partial slot when `final_len` is given (the
    /// final chunk), on two threads; writes them in order.
    fn seal_batch(&mut self, final_len: Option<usize>) -> io::Result<()> {
        let n = self.slots + usize::from(final_len.is_some());
        if n == 0 {
            return Ok(());
        }
        if self.index + n as u64 > MAX_CHUNKS {
            return Err(io::Error::other("attachment too large: more than 2^32 chunks"));
        }
        let slot = self.slot_len();
        let (cs, first, count) = (self.chunk_size, self.index, n as u64);
        let (key, aad, prefix) = (&self.keys.chunk, &self.header[..], &self.prefix);
        let len_of = |i: usize| if i + 1 == n { final_len.unwrap_or(cs) } else { cs };
        let seal_range = |buf: &mut [u8], from: usize| -> io::Result<Vec<[u8; HASH_LEN]>> {
            buf.chunks_mut(slot)
                .enumerate()
                .map(|(k, s)| {
                    let i = from + k;
                    let len = len_of(i);
                    let last = final_len.is_some() && i + 1 == n;
                    let nonce = Nonce::assume_unique_for_key(prefix.nonce(first + i as u64, last));
                    let tag = key
                        .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut s[..len])
                        .map_err(|_| io::Error::other("chunk sealing failed"))?;
                    s[len..len + TAG_LEN].copy_from_slice(tag.as_ref());
                    Ok(*blake3::hash(&s[..len + TAG_LEN]).as_bytes())
                })
                .collect()
        };
        let used = &mut self.batch[..n * slot];
        let hashes = if n == 1 {
            seal_range(used, 0)?
        } else {
            let half = n / 2;
            let (a, b) = used.split_at_mut(half * slot);
            let (ha, hb) = std::thread::scope(|sc| {
                let other = sc.spawn(|| seal_range(b, half));
                let mine = seal_range(a, 0);
                (mine, other.join().expect("the sealing thread does not panic"))
            });
            let mut h = ha?;
            h.extend(hb?);
            h
        };
        // Full slots are contiguous; a short final chunk is followed by its tag.
        let full = if final_len.is_some() { n - 1 } else { n };
        self.out.write_all(&self.batch[..full * slot])?;
        let mut bytes = (full * slot) as u64;
        if let Some(len) = final_len {
            let s = &self.batch[full * slot..full * slot + len + TAG_LEN];
            self.out.write_all(s)?;
            bytes += s.len() as u64;
        }
        self.written += bytes;
        self.hashes.extend(hashes);
        self.index += count;
        self.slots = 0;
        self.fill = 0;
        Ok(())
    }

    /// Seals the final chunk and writes the manifest. Returns what was written; the output
    /// is flushed but not synced (the caller owns durability).
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        // The slot being filled is the final chunk; if it is empty and a full slot precedes
        // it, that full slot is the final chunk instead.
        if self.fill == 0 && self.slots > 0 {
            self.slots -= 1;
            self.seal_batch(Some(self.chunk_size))?;
        } else {
            let fill = self.fill;
            self.seal_batch(Some(fill))?;
        }
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
        let slot = self.slot_len();
        let slots_max = self.batch.len() / slot;
        while !data.is_empty() {
            if self.fill == self.chunk_size {
                // The slot is full and more data follows: it is not the final chunk.
                self.slots += 1;
                self.fill = 0;
                if self.slots == slots_max {
                    self.seal_batch(None)?;
                }
            }
            let take = (self.chunk_size - self.fill).min(data.len());
            let at = self.slots * slot + self.fill;
            self.batch[at..at + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
        }
        self.length += total as u64;
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
