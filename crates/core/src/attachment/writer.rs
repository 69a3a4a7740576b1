//! The streaming encryptor: one pass, two or three batch buffers in memory, plus the
//! manifest's 32-byte hash per chunk until `finish` writes them: in memory (512 KiB per GiB
//! at 64 KiB chunks), or, with a [`Spill`], at most [`HASHES_IN_MEMORY`] of them in memory
//! and the rest in the spill, so memory stays the same whatever the size.

use std::io::{self, IoSliceMut, Read, Seek, SeekFrom, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce};
use aws_lc_rs::hmac;

use super::batch::Helper;
use super::keys::FileKeys;
use super::{Decryptor, HASH_LEN, Header, MAX_CHUNKS, Owner, RootHasher, TAG_LEN, manifest_len, manifest_prefix};
use crate::{ContentKey, Error};

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

/// Chunk hashes an encryptor with a [`Spill`] keeps in memory before it moves them to the
/// spill: 32 KiB, a run of 64 MiB of plaintext at 64 KiB chunks.
pub const HASHES_IN_MEMORY: usize = 1024;

/// Storage for the manifest's chunk hashes while an attachment is written (a temporary
/// file, say): the manifest comes after the chunks and its MAC covers the chunk count
/// first, so every hash must wait for `finish`. The hashes are of ciphertext and appear in
/// the finished file's manifest anyway: a spill holds nothing secret.
pub trait Spill: Read + Write + Seek + Send {}

impl<T: Read + Write + Seek + Send> Spill for T {}

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
    /// Buffers of `slots_max` slots of chunk_size + TAG_LEN bytes. Plaintext goes into
    /// `bufs[cur]` and is sealed in place; `bufs[pend]` holds `pending` sealed bytes not yet
    /// written; the third is empty until `read_from` reads ahead into it.
    bufs: [Vec<u8>; 3],
    cur: usize,
    pend: usize,
    pending: usize,
    /// Full slots in the current buffer, and bytes in the slot being filled.
    slots: usize,
    fill: usize,
    chunk_size: usize,
    index: u64,
    length: u64,
    hashes: Vec<[u8; HASH_LEN]>,
    /// Where hashes go beyond [`HASHES_IN_MEMORY`], and how many went there.
    spill: Option<(Box<dyn Spill>, u64)>,
    written: u64,
    helper: Helper,
}

impl<W: Write> Encryptor<W> {
    /// Writes the header and gets ready for plaintext. `header.salt` and
    /// `header.nonce_prefix` must be fresh random bytes. The header's binding chooses the
    /// version: new attachments are bound to their document ([`super::Binding::Document`],
    /// version 2).
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for a header that [`Header::check`] refuses (a chunk
    /// size out of range, a collection or document id that breaks its rules); the output's
    /// error if writing the header fails.
    pub fn new(mut out: W, cek: &ContentKey, header: Header) -> io::Result<Self> {
        header.check().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let bytes = header.to_bytes();
        out.write_all(&bytes)?;
        let chunk_size = header.chunk_size();
        let slots = super::batch::chunks_per_batch(chunk_size);
        let buf = || vec![0u8; slots * (chunk_size + TAG_LEN)];
        Ok(Encryptor {
            out,
            written: bytes.len() as u64,
            header: bytes,
            keys: FileKeys::derive(cek, &header),
            prefix: header,
            bufs: [buf(), buf(), Vec::new()],
            cur: 0,
            pend: 1,
            pending: 0,
            slots: 0,
            fill: 0,
            chunk_size,
            index: 0,
            length: 0,
            hashes: Vec::new(),
            spill: None,
            helper: Helper::default(),
        })
    }

    /// [`Encryptor::new`], keeping at most [`HASHES_IN_MEMORY`] chunk hashes in memory and
    /// the rest in `spill` (empty, read back by `finish`), so that memory stays the same
    /// whatever the attachment's size. The output's bytes are the same either way.
    pub fn with_spill(out: W, cek: &ContentKey, header: Header, spill: Box<dyn Spill>) -> io::Result<Self> {
        let mut enc = Self::new(out, cek, header)?;
        enc.spill = Some((spill, 0));
        Ok(enc)
    }

    fn slot_len(&self) -> usize {
        self.chunk_size + TAG_LEN
    }

    fn slots_max(&self) -> usize {
        self.bufs[0].len() / self.slot_len()
    }

    /// The chunks of the batch to seal now (the `slots` full slots, plus the partial slot
    /// when `final_len` is given) and its length in bytes, or `None` when it is empty.
    fn span(&self, final_len: Option<usize>) -> io::Result<Option<(usize, usize)>> {
        let n = self.slots + usize::from(final_len.is_some());
        if n == 0 {
            return Ok(None);
        }
        if self.index + n as u64 > MAX_CHUNKS {
            return Err(io::Error::other("attachment too large: more than 2^32 chunks"));
        }
        Ok(Some((n, n * self.slot_len() - final_len.map_or(0, |len| self.chunk_size - len))))
    }

    /// Seals the current batch (see [`Encryptor::span`]) on two threads, while this thread
    /// writes out the pending batch. With `src`, the slots are empty and each chunk is sealed
    /// from `src` straight into its slot by the thread that takes it (no copy first). The
    /// sealed batch becomes the pending one, to be written by the next call.
    fn seal_batch(&mut self, final_len: Option<usize>, src: Option<&[u8]>) -> io::Result<()> {
        let Some((n, used)) = self.span(final_len)? else { return Ok(()) };
        let seal = Sealer {
            key: &self.keys.chunk,
            aad: &self.header,
            prefix: &self.prefix,
            first: self.index,
            n,
            final_len,
            src,
        };
        let slot = self.slot_len();
        let [buf, pending] = self.bufs.get_disjoint_mut([self.cur, self.pend]).expect("two buffers");
        let pending = &pending[..self.pending];
        let out = &mut self.out;
        let (hashes, wrote, ()) =
            self.helper.share(&mut buf[..used], slot, |i, s| seal.seal(i, s), || out.write_all(pending), || ());
        wrote?;
        (self.cur, self.pend) = (self.pend, self.cur);
        self.sealed(hashes, n, used)
    }

    /// Bookkeeping after a batch of `n` chunks (`used` bytes) was sealed and the previous
    /// pending batch written; the sealed batch is now the pending one, in `bufs[pend]`.
    fn sealed(&mut self, hashes: Vec<io::Result<[u8; HASH_LEN]>>, n: usize, used: usize) -> io::Result<()> {
        self.written += self.pending as u64;
        for h in hashes {
            self.hashes.push(h?);
        }
        if let Some((spill, spilled)) = self.spill.as_mut().filter(|_| self.hashes.len() >= HASHES_IN_MEMORY) {
            spill.write_all(self.hashes.as_flattened())?;
            *spilled += self.hashes.len() as u64;
            self.hashes.clear();
        }
        self.pending = used;
        self.index += n as u64;
        self.slots = 0;
        self.fill = 0;
        Ok(())
    }

    /// Writes the sealed batch still pending.
    fn write_pending(&mut self) -> io::Result<()> {
        let pending = &self.bufs[self.pend][..self.pending];
        self.out.write_all(pending)?;
        self.written += pending.len() as u64;
        self.pending = 0;
        Ok(())
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
        let mut mac = hmac::Context::with_key(&self.keys.manifest);
        mac.update(&self.header);
        let prefix = manifest_prefix(count, self.length);
        mac.update(&prefix);
        self.out.write_all(&prefix)?;
        // Every chunk hash in order (those in the spill first), each into the root, the
        // MAC and the manifest, in pieces of up to HASHES_IN_MEMORY hashes.
        let out = &mut self.out;
        let mut emit = |piece: &[u8]| -> io::Result<()> {
            for h in piece.chunks_exact(HASH_LEN) {
                root.update(h.try_into().expect("32 bytes"));
            }
            mac.update(piece);
            out.write_all(piece)
        };
        if let Some((spill, spilled)) = self.spill.as_mut() {
            spill.seek(SeekFrom::Start(0))?;
            let mut piece = vec![0u8; HASHES_IN_MEMORY * HASH_LEN];
            let mut left = *spilled as usize * HASH_LEN;
            while left > 0 {
                let n = left.min(piece.len());
                spill.read_exact(&mut piece[..n])?;
                emit(&piece[..n])?;
                left -= n;
            }
        }
        emit(self.hashes.as_flattened())?;
        let root = root.finish();
        mac.update(&root);
        self.out.write_all(&root)?;
        self.out.write_all(mac.sign().as_ref())?;
        self.out.write_all(&manifest_len(count).to_be_bytes())?;
        self.out.flush()?;
        let file_len = self.written + manifest_len(count);
        Ok((self.out, Written { length: self.length, chunks: count, root, file_len }))
    }
}

impl<W: Write + Send> Encryptor<W> {
    /// Encrypts everything `input` holds, reading it straight into the batch buffers (no
    /// copy through an intermediate buffer, unlike `io::copy`). Returns the bytes read. Call
    /// [`Encryptor::finish`] afterwards; more writes may come before it.
    ///
    /// While a full batch is sealed, this thread reads the next one into a third buffer and
    /// the helper thread writes the previous one out, so reading, writing and sealing run
    /// at once (the output is why `W` must be `Send`).
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
                    let got = self.seal_batch_reading_ahead(|next| {
                        next[0] = probe[0];
                        Ok(1 + read_slots(&mut input, next, 1, cs, slot)?)
                    })?;
                    total += self.took(got) as u64;
                    continue;
                }
                // An empty slot after full ones: finish() knows the last full one is final.
                self.slots += 1;
                self.fill = 0;
            }
            // One read for the rest of the batch: the free part of this slot, then the
            // plaintext part of every slot after it.
            let rest = &mut self.bufs[self.cur][self.slots * slot..];
            let got = read_slots(&mut input, rest, self.fill, cs, slot)?;
            if got == 0 {
                return Ok(total);
            }
            total += self.took(got) as u64;
        }
    }

    /// Seals the current batch, whose slots are all full, on two threads, while the helper
    /// writes out the pending batch and this thread runs `read` on the third buffer. That
    /// buffer becomes the current one; returns what `read` put into it.
    fn seal_batch_reading_ahead(&mut self, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
        let Some((n, used)) = self.span(None)? else { return Ok(0) };
        let next = 3 - self.cur - self.pend;
        if self.bufs[next].is_empty() {
            self.bufs[next] = vec![0u8; self.bufs[self.cur].len()];
        }
        let seal = Sealer {
            key: &self.keys.chunk,
            aad: &self.header,
            prefix: &self.prefix,
            first: self.index,
            n,
            final_len: None,
            src: None,
        };
        let slot = self.slot_len();
        let [buf, pending, ahead] = self.bufs.get_disjoint_mut([self.cur, self.pend, next]).expect("three buffers");
        let pending = &pending[..self.pending];
        let out = &mut self.out;
        let (hashes, got, wrote) = self.helper.share(
            &mut buf[..used],
            slot,
            |i, s| seal.seal(i, s),
            || read(ahead),
            || out.write_all(pending),
        );
        wrote?;
        let got = got?;
        (self.cur, self.pend) = (next, self.cur);
        self.sealed(hashes, n, used)?;
        Ok(got)
    }

    /// Counts `got` bytes just read into the current buffer after `fill`; a slot that fills
    /// up stays current until more data shows it is not the final chunk. Returns `got`.
    fn took(&mut self, got: usize) -> usize {
        self.fill += got;
        while self.fill > self.chunk_size {
            self.slots += 1;
            self.fill -= self.chunk_size;
        }
        self.length += got as u64;
        got
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

/// Re-encrypts attachment `id` of `owner` under a new header (a fresh salt and nonce prefix,
/// e.g. to move a version 1 file to version 2), under the same CEK: every chunk of `src` is
/// verified (as [`Decryptor::open`] and [`Decryptor::decrypt_to`] do) and sealed again into
/// `out`. Plaintext is only in memory, a few batches at a time (the decryptor's and the
/// encryptor's buffers), whatever the size. Returns `out` and the new file's [`Written`].
///
/// # Errors
/// [`Error::Malformed`] for a new header that [`Header::check`] refuses or that reuses the
/// source's salt (the same CEK, salt and algorithm would give the same chunk key and
/// nonces); [`Error::AttachmentMismatch`] when the source, or the new header, is not
/// attachment `id` of `owner`; the source's errors as [`Decryptor::open`] and
/// [`Decryptor::decrypt_to`] give them; [`Error::Io`] when writing `out` fails.
///
/// # Security
/// On an error, `out` holds an incomplete file (no final chunk, no manifest, which every
/// reader refuses): discard it, and keep the source. Replace the source with `out` only
/// after this returns `Ok` and `out` is durable.
pub fn reencrypt<R: Read + Seek, W: Write + Send>(
    src: R,
    cek: &ContentKey,
    id: &[u8; 16],
    owner: &Owner<'_>,
    new_header: Header,
    out: W,
) -> Result<(W, Written), Error> {
    new_header.check()?;
    owner.check(&new_header, id)?;
    let source = Decryptor::open(src, cek, id, owner)?;
    if source.header().salt == new_header.salt {
        return Err(Error::Malformed {
            what: "attachment header",
            reason: "the new header reuses the source's salt: a re-encryption needs a fresh salt",
        });
    }
    let output = |source| Error::Io { what: "attachment output", source };
    let mut enc = Encryptor::new(out, cek, new_header).map_err(output)?;
    // The decryptor writes each verified batch into the encryptor, which seals it again.
    source.decrypt_to(&mut enc)?;
    enc.finish().map_err(output)
}

/// Seals the chunks of one batch: chunk `i` of it is chunk `first + i` of the file.
struct Sealer<'a> {
    key: &'a LessSafeKey,
    aad: &'a [u8],
    prefix: &'a Header,
    first: u64,
    n: usize,
    /// The final chunk's length, when the batch ends with it.
    final_len: Option<usize>,
    /// The plaintext, when it is sealed straight from the caller's buffer.
    src: Option<&'a [u8]>,
}

impl Sealer<'_> {
    /// Seals chunk `i` of the batch into slot `s` (room for the chunk and its tag): from
    /// `src` when there is one, else in place (the slot holds the plaintext). Returns the
    /// hash of its ciphertext and tag, for the manifest.
    fn seal(&self, i: usize, s: &mut [u8]) -> io::Result<[u8; HASH_LEN]> {
        let len = s.len() - TAG_LEN;
        let last = self.final_len.is_some() && i + 1 == self.n;
        let nonce = Nonce::assume_unique_for_key(self.prefix.nonce(self.first + i as u64, last));
        let failed = |_| io::Error::other("chunk sealing failed");
        if let Some(src) = self.src {
            // Straight from the caller's buffer into the slot: no copy before sealing.
            let cs = self.prefix.chunk_size();
            let (body, tag) = s.split_at_mut(len);
            let plain = &src[i * cs..i * cs + len];
            self.key.seal_out_of_place_scatter(nonce, Aad::from(self.aad), plain, body, &[], tag).map_err(failed)?;
        } else {
            let tag = self.key.seal_in_place_separate_tag(nonce, Aad::from(self.aad), &mut s[..len]).map_err(failed)?;
            s[len..].copy_from_slice(tag.as_ref());
        }
        Ok(*blake3::hash(s).as_bytes())
    }
}

/// One vectored read into the plaintext part of the slots of `rest` (from byte `fill` of
/// the first slot), so a whole batch takes one call.
fn read_slots<R: Read>(
    input: &mut R,
    rest: &mut [u8],
    fill: usize,
    chunk_size: usize,
    slot: usize,
) -> io::Result<usize> {
    let mut parts: Vec<IoSliceMut<'_>> = rest
        .chunks_mut(slot)
        .enumerate()
        .map(|(k, s)| IoSliceMut::new(if k == 0 { &mut s[fill..chunk_size] } else { &mut s[..chunk_size] }))
        .collect();
    read_retrying(input, &mut parts)
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
