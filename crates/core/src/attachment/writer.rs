//! The streaming encryptor: one pass, two batch buffers in memory plus 32 bytes of hash per
//! chunk for the manifest (512 KiB per GiB at 64 KiB chunks).

use std::io::{self, IoSliceMut, Read, Write};

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

/// Chunks sealed together, shared by two threads: 4 MiB of plaintext at 64 KiB chunks.
/// Two batch buffers: while the threads seal one, the calling thread writes the other out,
/// so the output's IO overlaps the crypto. They bound memory (8 MiB in all) while giving
/// each thread enough work that a thread start is noise.
pub(crate) const BATCH: usize = 64;

/// Encrypts a stream into the attachment format. Write plaintext into it (it implements
/// [`Write`]) or let it read a source ([`Encryptor::read_from`]), then call
/// [`Encryptor::finish`]: without it the file has no final chunk and no manifest, and every
/// reader refuses it as truncated. After an error the output is incomplete and the
/// encryptor's state undefined: drop it (and the output) rather than write more.
pub struct Encryptor<W: Write> {
    out: W,
    header: Vec<u8>,
    prefix: Header,
    keys: FileKeys,
    /// Two buffers of `slots_max` slots of chunk_size + TAG_LEN bytes. Plaintext goes into
    /// `bufs[cur]` and is sealed in place; the other holds `pending` sealed bytes not yet
    /// written.
    bufs: [Vec<u8>; 2],
    cur: usize,
    pending: usize,
    /// Full slots in the current buffer, and bytes in the slot being filled.
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
        let slots = if chunk_size <= 1 << 16 { BATCH } else { 4 };
        let buf = || vec![0u8; slots * (chunk_size + TAG_LEN)];
        Ok(Encryptor {
            out,
            written: bytes.len() as u64,
            header: bytes,
            keys: FileKeys::derive(cek, &header),
            prefix: header,
            bufs: [buf(), buf()],
            cur: 0,
            pending: 0,
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

    fn slots_max(&self) -> usize {
        self.bufs[0].len() / self.slot_len()
    }

    /// Seals the `slots` full slots of the current buffer, plus the partial slot when
    /// `final_len` is given (the final chunk), on two threads, while this thread writes out
    /// the other buffer's pending bytes. With `src`, the slots are empty and each chunk is
    /// copied from `src` by the thread that seals it (no separate pass over the batch).
    /// Swaps the buffers: the sealed batch is pending, to be written by the next call.
    fn seal_batch(&mut self, final_len: Option<usize>, src: Option<&[u8]>) -> io::Result<()> {
        let n = self.slots + usize::from(final_len.is_some());
        if n == 0 {
            return Ok(());
        }
        if self.index + n as u64 > MAX_CHUNKS {
            return Err(io::Error::other("attachment too large: more than 2^32 chunks"));
        }
        let slot = self.slot_len();
        let cs = self.chunk_size;
        let (first, key, aad, prefix) = (self.index, &self.keys.chunk, &self.header[..], &self.prefix);
        let used = n * slot - final_len.map_or(0, |len| cs - len);
        let (a, b) = self.bufs.split_at_mut(1);
        let (buf, other) = if self.cur == 0 { (&mut a[0], &b[0]) } else { (&mut b[0], &a[0]) };
        let (out, pending) = (&mut self.out, self.pending);
        let seal = |i: usize, s: &mut [u8]| -> io::Result<[u8; HASH_LEN]> {
            let len = s.len() - TAG_LEN;
            if let Some(src) = src {
                s[..len].copy_from_slice(&src[i * cs..i * cs + len]);
            }
            let last = final_len.is_some() && i + 1 == n;
            let nonce = Nonce::assume_unique_for_key(prefix.nonce(first + i as u64, last));
            let tag = key
                .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut s[..len])
                .map_err(|_| io::Error::other("chunk sealing failed"))?;
            s[len..].copy_from_slice(tag.as_ref());
            Ok(*blake3::hash(s).as_bytes())
        };
        let (hashes, wrote) = super::batch::share(&mut buf[..used], slot, seal, || out.write_all(&other[..pending]));
        wrote?;
        self.written += pending as u64;
        for h in hashes {
            self.hashes.push(h?);
        }
        self.pending = used;
        self.cur ^= 1;
        self.index += n as u64;
        self.slots = 0;
        self.fill = 0;
        Ok(())
    }

    /// Writes the sealed batch still pending.
    fn write_pending(&mut self) -> io::Result<()> {
        let other = &self.bufs[self.cur ^ 1][..self.pending];
        self.out.write_all(other)?;
        self.written += other.len() as u64;
        self.pending = 0;
        Ok(())
    }

    /// Encrypts everything `input` holds, reading it straight into the batch buffers (no
    /// copy through an intermediate buffer, unlike `io::copy`). Returns the bytes read. Call
    /// [`Encryptor::finish`] afterwards; more writes may come before it.
    pub fn read_from<R: Read>(&mut self, mut input: R) -> io::Result<u64> {
        let (cs, slot, slots_max) = (self.chunk_size, self.slot_len(), self.slots_max());
        let mut total = 0u64;
        loop {
            if self.fill == cs {
                if self.slots + 1 == slots_max {
                    // The batch is full. Whether its last chunk is the final one depends on
                    // what follows: one byte of lookahead tells.
                    let mut probe = [0u8; 1];
                    if read_retrying(&mut input, &mut [IoSliceMut::new(&mut probe)])? == 0 {
                        return Ok(total);
                    }
                    self.slots += 1;
                    self.seal_batch(None, None)?;
                    self.bufs[self.cur][0] = probe[0];
                    self.fill = 1;
                    self.length += 1;
                    total += 1;
                    continue;
                }
                // An empty slot after full ones: finish() knows the last full one is final.
                self.slots += 1;
                self.fill = 0;
            }
            // One read for the rest of the batch: the free part of this slot, then the
            // plaintext part of every slot after it.
            let (fill, rest) = (self.fill, &mut self.bufs[self.cur][self.slots * slot..]);
            let mut parts: Vec<IoSliceMut<'_>> = rest
                .chunks_mut(slot)
                .enumerate()
                .map(|(k, s)| IoSliceMut::new(if k == 0 { &mut s[fill..cs] } else { &mut s[..cs] }))
                .collect();
            let got = read_retrying(&mut input, &mut parts)?;
            if got == 0 {
                return Ok(total);
            }
            // A slot that fills up stays current until more data shows it is not final.
            self.fill += got;
            while self.fill > cs {
                self.slots += 1;
                self.fill -= cs;
            }
            self.length += got as u64;
            total += got as u64;
        }
    }

    /// Seals the final chunk and writes the manifest. Returns what was written; the output
    /// is flushed but not synced (the caller owns durability).
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        // The slot being filled is the final chunk; if it is empty and a full slot precedes
        // it, that full slot is the final chunk instead.
        if self.fill == 0 && self.slots > 0 {
            self.slots -= 1;
            self.seal_batch(Some(self.chunk_size), None)?;
        } else {
            let fill = self.fill;
            self.seal_batch(Some(fill), None)?;
        }
        self.write_pending()?;
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
        let slots_max = self.slots_max();
        while !data.is_empty() {
            if self.fill == self.chunk_size {
                // The slot is full and more data follows: it is not the final chunk.
                self.slots += 1;
                self.fill = 0;
                if self.slots == slots_max {
                    self.seal_batch(None, None)?;
                }
            }
            // At a batch boundary, the whole chunks of `data` that are known not to be the
            // final one (at least a byte follows them), up to a batch, are sealed straight
            // from the caller's buffer, each copied by the thread that seals it.
            let direct = ((data.len() - 1) / self.chunk_size).min(slots_max);
            if self.slots == 0 && self.fill == 0 && direct > 1 {
                self.slots = direct;
                let len = direct * self.chunk_size;
                self.seal_batch(None, Some(&data[..len]))?;
                data = &data[len..];
                continue;
            }
            let take = (self.chunk_size - self.fill).min(data.len());
            let at = self.slots * slot + self.fill;
            self.bufs[self.cur][at..at + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
        }
        self.length += total as u64;
        Ok(total)
    }

    /// Writes out what is sealed and flushes the output. Plaintext of chunks not yet sealed
    /// stays buffered: a chunk is sealed once it is known whether it is the final one.
    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.out.flush()
    }
}

/// One vectored read that retries on interruption; 0 only at the end of the input.
fn read_retrying<R: Read>(input: &mut R, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    loop {
        match input.read_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}
