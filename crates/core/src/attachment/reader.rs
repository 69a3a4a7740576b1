//! The decryptor: checks the structure and the manifest's MAC when it opens, then releases
//! each chunk's plaintext only after that chunk's hash and tag check out. One chunk in
//! memory at a time, in one pass or by random access.

use std::io::{IoSlice, Read, Seek, SeekFrom, Write};

use aws_lc_rs::aead::{Aad, Nonce};
use aws_lc_rs::hmac;

use super::batch::{Helper, write_all_vectored};
use super::keys::FileKeys;
use super::{
    HASH_LEN, Header, MANIFEST_MAGIC, MANIFEST_VERSION, MAX_CHUNKS, Manifest, Owner, RootHasher, TAG_LEN, chunk_layout,
    manifest_len, manifest_prefix,
};
use crate::{ContentKey, Error};

/// What a manifest MAC that does not verify means (the MAC cannot tell these apart).
const MAC_FAILED: &str = "its MAC does not verify: the header or manifest was edited, or this is not the right key";

pub(crate) fn read_at<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8], what: &'static str) -> Result<(), Error> {
    r.seek(SeekFrom::Start(offset)).map_err(|source| Error::Io { what, source })?;
    r.read_exact(buf).map_err(|source| match source.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Truncated { what, needed: buf.len(), found: 0 },
        _ => Error::Io { what, source },
    })
}

/// Where everything is in one file, read and checked from its structure (no key needed).
pub(crate) struct Layout {
    pub(crate) header: Header,
    pub(crate) header_bytes: Vec<u8>,
    pub(crate) count: u64,
    pub(crate) length: u64,
    pub(crate) root: [u8; HASH_LEN],
    pub(crate) mac: [u8; 32],
    last_len: usize,
    manifest_offset: u64,
}

impl Layout {
    pub(crate) fn read<R: Read + Seek>(file: &mut R) -> Result<Layout, Error> {
        let file_len = file.seek(SeekFrom::End(0)).map_err(|source| Error::Io { what: "attachment", source })?;
        let mut head = vec![0u8; (Header::MAX_LEN as u64).min(file_len) as usize];
        read_at(file, 0, &mut head, "attachment header")?;
        let (header, header_len) = Header::parse(&head)?;
        head.truncate(header_len);
        let truncated = |reason| Error::AttachmentManifest { reason };
        if file_len < header_len as u64 + TAG_LEN as u64 + manifest_len(1) {
            return Err(truncated("the file is truncated: it is shorter than one chunk and a manifest"));
        }
        let mut tail = [0u8; 8];
        read_at(file, file_len - 8, &mut tail, "attachment manifest")?;
        let mlen = u64::from_be_bytes(tail);
        if mlen < manifest_len(1) || mlen > file_len - header_len as u64 {
            return Err(truncated("the file is truncated or has trailing bytes: no manifest at its end"));
        }
        let manifest_offset = file_len - mlen;
        let mut prefix = [0u8; 24];
        read_at(file, manifest_offset, &mut prefix, "attachment manifest")?;
        if &prefix[..4] != MANIFEST_MAGIC {
            return Err(truncated("the file is truncated or has trailing bytes: no manifest at its end"));
        }
        if prefix[4] != MANIFEST_VERSION {
            return Err(Error::UnsupportedVersion { what: "attachment manifest", version: prefix[4] });
        }
        let count = u64::from_be_bytes(prefix[8..16].try_into().expect("8 bytes"));
        let length = u64::from_be_bytes(prefix[16..24].try_into().expect("8 bytes"));
        if prefix != manifest_prefix(count, length) {
            return Err(truncated("reserved bytes are not zero"));
        }
        let (expect_count, last_len) = chunk_layout(length, header.chunk_size());
        if count != expect_count || count > MAX_CHUNKS || mlen != manifest_len(count) {
            return Err(truncated("its chunk count does not fit its length"));
        }
        let chunks_len = length + count * TAG_LEN as u64;
        if header_len as u64 + chunks_len != manifest_offset {
            return Err(truncated("the chunks are truncated, or chunks were added or removed"));
        }
        let mut rm = [0u8; 64];
        read_at(file, manifest_offset + 24 + count * HASH_LEN as u64, &mut rm, "attachment manifest")?;
        Ok(Layout {
            header,
            header_bytes: head,
            count,
            length,
            root: rm[..32].try_into().expect("32 bytes"),
            mac: rm[32..].try_into().expect("32 bytes"),
            last_len,
            manifest_offset,
        })
    }

    pub(crate) fn chunk_len(&self, i: u64) -> usize {
        if i + 1 == self.count { self.last_len } else { self.header.chunk_size() }
    }

    pub(crate) fn chunk_offset(&self, i: u64) -> u64 {
        self.header_bytes.len() as u64 + i * (self.header.chunk_size() + TAG_LEN) as u64
    }

    pub(crate) fn hash<R: Read + Seek>(&self, file: &mut R, i: u64) -> Result<[u8; HASH_LEN], Error> {
        let mut h = [0u8; HASH_LEN];
        read_at(file, self.manifest_offset + 24 + i * HASH_LEN as u64, &mut h, "attachment manifest")?;
        Ok(h)
    }
}

/// What a complete decryption verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Plaintext bytes written.
    pub length: u64,
    /// The manifest root.
    pub root: [u8; HASH_LEN],
}

/// Decrypts one attachment file.
pub struct Decryptor<R: Read + Seek> {
    file: R,
    layout: Layout,
    keys: FileKeys,
    buf: Vec<u8>,
}

impl<R: Read + Seek> Decryptor<R> {
    /// Opens `file` as attachment `id` of `owner` under `cek`: checks the structure, that
    /// the header names that attachment and that owner (a version 2 file its document, a
    /// version 1 file its account), and the manifest's MAC over the header, the counts, every
    /// chunk hash and the root. Nothing is decrypted yet.
    ///
    /// # Errors
    /// [`Error::AttachmentMismatch`] for another attachment's file, or a file bound to
    /// another document (or account), naming what was found and what was expected;
    /// [`Error::AttachmentManifest`] for truncation, trailing bytes, an edited header or
    /// manifest, or a wrong key (the MAC cannot tell these last two apart); format errors
    /// for an unknown version or algorithm.
    pub fn open(mut file: R, cek: &ContentKey, id: &[u8; 16], owner: &Owner<'_>) -> Result<Self, Error> {
        let layout = Layout::read(&mut file)?;
        owner.check(&layout.header, id)?;
        let keys = FileKeys::derive(cek, &layout.header);
        // The MAC covers header || manifest up to and including the root; stream it.
        let mut mac = hmac::Context::with_key(&keys.manifest);
        mac.update(&layout.header_bytes);
        let body_len = 24 + layout.count * HASH_LEN as u64 + HASH_LEN as u64;
        let mut piece = vec![0u8; 64 * 1024];
        let mut done = 0u64;
        while done < body_len {
            let n = (body_len - done).min(piece.len() as u64) as usize;
            read_at(&mut file, layout.manifest_offset + done, &mut piece[..n], "attachment manifest")?;
            mac.update(&piece[..n]);
            done += n as u64;
        }
        if !constant_time_eq(mac.sign().as_ref(), &layout.mac) {
            return Err(Error::AttachmentManifest { reason: MAC_FAILED });
        }
        let cap = layout.header.chunk_size() + TAG_LEN;
        Ok(Decryptor { file, layout, keys, buf: Vec::with_capacity(cap) })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.layout.header
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.layout.length
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.layout.length == 0
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        self.layout.count
    }

    /// Reads, checks and decrypts chunk `i`; returns its plaintext (valid until the next call).
    ///
    /// # Errors
    /// [`Error::AttachmentChunk`] when its hash or tag fails; nothing of it is returned.
    pub fn chunk(&mut self, i: u64) -> Result<&[u8], Error> {
        if i >= self.layout.count {
            return Err(Error::AttachmentChunk { index: i, reason: "does not exist" });
        }
        let n = self.layout.chunk_len(i) + TAG_LEN;
        self.buf.resize(n, 0);
        read_at(&mut self.file, self.layout.chunk_offset(i), &mut self.buf, "attachment chunk")?;
        let expected = self.layout.hash(&mut self.file, i)?;
        if *blake3::hash(&self.buf).as_bytes() != expected {
            self.buf.clear();
            return Err(Error::AttachmentChunk { index: i, reason: "differs from the manifest's hash" });
        }
        let nonce = Nonce::assume_unique_for_key(self.layout.header.nonce(i, i + 1 == self.layout.count));
        let plain_len = match self.keys.chunk.open_in_place(nonce, Aad::from(&self.layout.header_bytes), &mut self.buf)
        {
            Ok(plain) => plain.len(),
            Err(_) => {
                self.buf.clear();
                return Err(Error::AttachmentChunk { index: i, reason: "failed authentication" });
            }
        };
        Ok(&self.buf[..plain_len])
    }

    /// Decrypts every chunk in order into `out`, in batches shared by two threads: a
    /// batch's hashes and chunks are read with one read each, checked and opened, and only
    /// then written. While the threads check one batch, this thread reads the one after it
    /// and the helper thread writes out the one before it (three batch buffers; the output
    /// is why `W` must be `Send`). Stops at the first failure; what was written before it
    /// had been verified, but the caller must treat the output as incomplete (write to a
    /// temporary file, keep it only on success).
    pub fn decrypt_to<W: Write + Send>(mut self, mut out: W) -> Result<Verified, Error> {
        let l = &self.layout;
        let (cs, count) = (l.header.chunk_size(), l.count);
        let slot = cs + TAG_LEN;
        let per_batch = super::batch::chunks_per_batch(cs) as u64;
        let buffer = || (vec![0u8; per_batch as usize * slot], vec![0u8; per_batch as usize * HASH_LEN]);
        let mut bufs = [buffer(), buffer(), buffer()];
        let helper = Helper::default();
        let mut root = RootHasher::new(&l.header_bytes, count, l.length);
        let (key, aad, header) = (&self.keys.chunk, &l.header_bytes[..], &l.header);
        let file = &mut self.file;
        // The batch that starts at chunk `first`: its chunk count and its length in bytes.
        let span = |first: u64| {
            let n = (count - first).min(per_batch);
            (n, (first..first + n).map(|i| l.chunk_len(i) + TAG_LEN).sum::<usize>())
        };
        // Reads that batch's chunks and their manifest hashes into `to`, one read each.
        let read = |file: &mut R, first: u64, to: &mut (Vec<u8>, Vec<u8>)| -> Result<(), Error> {
            let (n, bytes) = span(first);
            read_at(file, l.chunk_offset(first), &mut to.0[..bytes], "attachment chunk")?;
            let at = l.manifest_offset + 24 + first * HASH_LEN as u64;
            read_at(file, at, &mut to.1[..n as usize * HASH_LEN], "attachment manifest")
        };
        // The plaintext of a checked batch, without its tags, in one vectored write.
        let write = |out: &mut W, first: u64, from: &[u8]| -> Result<(), Error> {
            let (n, _) = span(first);
            let mut parts: Vec<IoSlice<'_>> = from
                .chunks(slot)
                .take(n as usize)
                .enumerate()
                .map(|(k, s)| IoSlice::new(&s[..l.chunk_len(first + k as u64)]))
                .collect();
            write_all_vectored(out, &mut parts).map_err(|source| Error::Io { what: "attachment output", source })
        };
        if count > 0 {
            read(file, 0, &mut bufs[0])?;
        }
        // Batch buffers by role: `cur` is being checked, `pend` holds the checked batch
        // starting at chunk `pending` until it is written, and the third is read ahead into.
        let (mut first, mut cur, mut pend, mut pending) = (0u64, 0usize, 1usize, None::<u64>);
        while first < count {
            let (n, bytes) = span(first);
            let next = first + n;
            let ahead = 3 - cur - pend;
            let [(chunks, hashes), (plain, _), to] = bufs.get_disjoint_mut([cur, pend, ahead]).expect("three buffers");
            let hs = &hashes[..n as usize * HASH_LEN];
            let open = |k: usize, s: &mut [u8]| -> Result<(), Error> {
                let i = first + k as u64;
                if blake3::hash(s).as_bytes() != &hs[k * HASH_LEN..(k + 1) * HASH_LEN] {
                    return Err(Error::AttachmentChunk { index: i, reason: "differs from the manifest's hash" });
                }
                let nonce = Nonce::assume_unique_for_key(header.nonce(i, i + 1 == count));
                key.open_in_place(nonce, Aad::from(aad), s)
                    .map(|_| ())
                    .map_err(|_| Error::AttachmentChunk { index: i, reason: "failed authentication" })
            };
            let read_next = || if next < count { read(file, next, to) } else { Ok(()) };
            let out = &mut out;
            let write_prev = || pending.map_or(Ok(()), |prev| write(out, prev, plain));
            let (opened, read, wrote) = helper.share(&mut chunks[..bytes], slot, open, read_next, write_prev);
            // The earliest failure is the one to report; nothing of this batch is written.
            opened.into_iter().collect::<Result<(), Error>>()?;
            wrote?;
            read?;
            for h in hs.chunks(HASH_LEN) {
                root.update(h.try_into().expect("32 bytes"));
            }
            pending = Some(first);
            (cur, pend) = (ahead, cur);
            first = next;
        }
        if let Some(prev) = pending {
            write(&mut out, prev, &bufs[pend].0)?;
        }
        if root.finish() != l.root {
            return Err(Error::AttachmentManifest { reason: "the root does not match the chunk hashes" });
        }
        out.flush().map_err(|source| Error::Io { what: "attachment output", source })?;
        Ok(Verified { length: l.length, root: l.root })
    }
}

/// Checks a manifest's MAC with the CEK given only the header and manifest bytes (as the
/// server's metadata carries them), before any chunk is fetched: the structure as
/// [`Manifest::parse`] checks it, the identity against `id` and `owner` as
/// [`Decryptor::open`] checks it, then the HMAC-SHA256 over the header and the manifest up
/// to and including the root, compared in constant time. Returns the parsed manifest, whose
/// chunk hashes a download then checks every chunk against.
///
/// # Errors
/// As [`Manifest::parse`] for a malformed header or manifest; [`Error::AttachmentMismatch`]
/// for a file of another attachment or bound to another document (or account);
/// [`Error::AttachmentManifest`] when the MAC does not verify: an edited header or manifest,
/// or the wrong key (the MAC cannot tell them apart).
///
/// # Security
/// Only a manifest this accepts authenticates its chunk hashes: a download that checks
/// chunks against a manifest it has not verified here checks them against whatever the
/// server sent.
pub fn verify_manifest(
    header: &[u8],
    manifest: &[u8],
    cek: &ContentKey,
    id: &[u8; 16],
    owner: &Owner<'_>,
) -> Result<Manifest, Error> {
    let parsed = Manifest::parse(header, manifest)?;
    owner.check(&parsed.header, id)?;
    let keys = FileKeys::derive(cek, &parsed.header);
    // Manifest::parse checked the length: 24 bytes, the hashes, the root, the MAC, 8 bytes.
    let body_len = 24 + parsed.hashes.len() * HASH_LEN + HASH_LEN;
    let mut mac = hmac::Context::with_key(&keys.manifest);
    mac.update(header);
    mac.update(&manifest[..body_len]);
    if !constant_time_eq(mac.sign().as_ref(), &manifest[body_len..body_len + 32]) {
        return Err(Error::AttachmentManifest { reason: MAC_FAILED });
    }
    Ok(parsed)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
