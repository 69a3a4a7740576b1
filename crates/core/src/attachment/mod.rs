//! The attachment format (`docs/formats/attachment.md`): one file, encrypted in chunks with
//! the STREAM construction, readable in one pass or by random access, and checkable by a
//! server that holds no key.
//!
//! ```text
//! file    = header || chunk_0 || ... || chunk_{n-1} || manifest
//! header  = "FVAT" | version 0x01 | algorithm | log2(chunk size) | 0x00
//!           | attachment id (16) | len8(account) | account | salt (32) | nonce prefix (7)
//! chunk_i = AEAD(chunk key, nonce_i, aad = header, plaintext_i)      (ciphertext || 16-byte tag)
//! nonce_i = nonce prefix (7) || i as u32 BE || last flag (0x00, or 0x01 on the final chunk)
//! manifest= "FVAM" | version 0x01 | 0 0 0 | chunk count u64 | plaintext length u64
//!           | BLAKE3(chunk_0) ... BLAKE3(chunk_{n-1}) | root (32) | mac (32) | manifest length u64
//! root    = BLAKE3("fieldvault/v1/attachment-root" || len64(header) || header || count || length || hashes)
//! mac     = HMAC-SHA256(manifest key, header || manifest up to and including root)
//! ```
//!
//! Keys: the chunk key and the manifest key come from HKDF-SHA256 (RFC 5869) over the
//! attachment's content key (CEK) with the per-file salt, and labels naming the purpose, the
//! algorithm and the attachment id. Every chunk has the whole header as associated data.

mod batch;
mod keys;
mod reader;
mod writer;

pub use crate::ContentKey;
pub use reader::{Decryptor, Verified};
pub use writer::{Encryptor, HASHES_IN_MEMORY, Spill, Written};

use crate::section::Reader as Bytes;
use crate::{AccountName, Error};

const MAGIC: &[u8; 4] = b"FVAT";
const MANIFEST_MAGIC: &[u8; 4] = b"FVAM";
const VERSION: u8 = 1;
/// AEAD tag length of both algorithms.
pub const TAG_LEN: usize = 16;
/// Length of the random nonce prefix (STREAM, Hoang-Reyhanitabar-Rogaway-Vizár 2015).
pub const NONCE_PREFIX_LEN: usize = 7;
/// Length of the per-file HKDF salt.
pub const SALT_LEN: usize = 32;
/// Hash length (BLAKE3-256).
pub const HASH_LEN: usize = 32;
/// Chunk size writers use: 64 KiB (2^16). A chunk is the unit of random access and of
/// memory use; 64 KiB keeps the per-chunk costs (nonce, tag, AAD, hash finalisation) under
/// 0.1% while a reader holds only one chunk in memory.
pub const DEFAULT_CHUNK_LOG2: u8 = 16;
/// Readers accept chunk sizes from 4 KiB to 16 MiB.
pub const CHUNK_LOG2_RANGE: std::ops::RangeInclusive<u8> = 12..=24;
/// Largest number of chunks (the counter is 32 bits).
pub const MAX_CHUNKS: u64 = 1 << 32;
const ROOT_LABEL: &[u8] = b"fieldvault/v1/attachment-root";

/// The chunk AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// AES-256-GCM (NIST SP 800-38D): the default where the CPU has AES instructions.
    Aes256Gcm = 1,
    /// ChaCha20-Poly1305 (RFC 8439): for CPUs without AES instructions.
    ChaCha20Poly1305 = 2,
}

impl Algorithm {
    fn from_code(code: u8) -> Result<Self, Error> {
        match code {
            1 => Ok(Algorithm::Aes256Gcm),
            2 => Ok(Algorithm::ChaCha20Poly1305),
            code => Err(Error::UnknownCode { what: "attachment algorithm", code }),
        }
    }

    fn aead(self) -> &'static aws_lc_rs::aead::Algorithm {
        match self {
            Algorithm::Aes256Gcm => &aws_lc_rs::aead::AES_256_GCM,
            Algorithm::ChaCha20Poly1305 => &aws_lc_rs::aead::CHACHA20_POLY1305,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }
}

/// The attachment header: who the file is and how it is sealed. Not secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The chunk AEAD.
    pub algorithm: Algorithm,
    /// log2 of the chunk size.
    pub chunk_log2: u8,
    /// The attachment's id.
    pub attachment: [u8; 16],
    /// The account it belongs to.
    pub account: AccountName,
    /// The per-file HKDF salt (random).
    pub salt: [u8; SALT_LEN],
    /// The STREAM nonce prefix (random).
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl Header {
    /// The chunk size in bytes.
    pub fn chunk_size(&self) -> usize {
        1usize << self.chunk_log2
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.account.as_str().len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, self.algorithm as u8, self.chunk_log2, 0]);
        out.extend_from_slice(&self.attachment);
        out.push(u8::try_from(self.account.as_str().len()).expect("account names are at most 64 bytes"));
        out.extend_from_slice(self.account.as_str().as_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce_prefix);
        out
    }

    /// Parses a header from the start of `bytes`; returns it and its length.
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize), Error> {
        let mut r = Bytes::new(bytes, "attachment header");
        r.header(MAGIC, VERSION)?;
        let algorithm = Algorithm::from_code(r.u8()?)?;
        let chunk_log2 = r.u8()?;
        if !CHUNK_LOG2_RANGE.contains(&chunk_log2) {
            return Err(Error::Malformed { what: "attachment header", reason: "chunk size outside 4 KiB..16 MiB" });
        }
        if r.u8()? != 0 {
            return Err(Error::Malformed { what: "attachment header", reason: "reserved byte is not zero" });
        }
        let attachment = r.array()?;
        let len = r.u8()?;
        let name = std::str::from_utf8(r.take(usize::from(len))?)
            .map_err(|_| Error::Malformed { what: "attachment header", reason: "account name is not UTF-8" })?;
        let account = AccountName::new(name)?;
        let salt = r.array()?;
        let nonce_prefix = r.array()?;
        let used = bytes.len() - r.remaining();
        Ok((Header { algorithm, chunk_log2, attachment, account, salt, nonce_prefix }, used))
    }

    /// The most bytes a header can take (for readers that fetch it first).
    pub const MAX_LEN: usize = 4 + 4 + 16 + 1 + AccountName::MAX_LEN + SALT_LEN + NONCE_PREFIX_LEN;

    fn nonce(&self, index: u64, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        n[NONCE_PREFIX_LEN..11]
            .copy_from_slice(&u32::try_from(index).expect("chunk index checked below 2^32").to_be_bytes());
        n[11] = u8::from(last);
        n
    }
}

/// Number of chunks and the length of the final chunk for a plaintext of `len` bytes.
/// An empty plaintext is one empty final chunk.
pub fn chunk_layout(len: u64, chunk_size: usize) -> (u64, usize) {
    let cs = chunk_size as u64;
    if len == 0 {
        return (1, 0);
    }
    let count = len.div_ceil(cs);
    let last = (len - (count - 1) * cs) as usize;
    (count, last)
}

/// Computes the root incrementally: constant memory whatever the number of chunks.
pub(crate) struct RootHasher(blake3::Hasher);

impl RootHasher {
    pub(crate) fn new(header: &[u8], count: u64, length: u64) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(ROOT_LABEL);
        h.update(&(header.len() as u64).to_be_bytes());
        h.update(header);
        h.update(&count.to_be_bytes());
        h.update(&length.to_be_bytes());
        RootHasher(h)
    }
    pub(crate) fn update(&mut self, chunk_hash: &[u8; HASH_LEN]) {
        self.0.update(chunk_hash);
    }
    pub(crate) fn finish(self) -> [u8; HASH_LEN] {
        *self.0.finalize().as_bytes()
    }
}

/// The root over the header, the counts and the chunk hashes: what a server checks without
/// a key.
pub fn root(
    header: &[u8],
    count: u64,
    length: u64,
    hashes: impl IntoIterator<Item = [u8; HASH_LEN]>,
) -> [u8; HASH_LEN] {
    let mut h = RootHasher::new(header, count, length);
    for x in hashes {
        h.update(&x);
    }
    h.finish()
}

/// Manifest bytes before the hash list.
fn manifest_prefix(count: u64, length: u64) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[..4].copy_from_slice(MANIFEST_MAGIC);
    p[4] = VERSION;
    p[8..16].copy_from_slice(&count.to_be_bytes());
    p[16..24].copy_from_slice(&length.to_be_bytes());
    p
}

/// Length of the manifest for `count` chunks.
pub fn manifest_len(count: u64) -> u64 {
    24 + count * HASH_LEN as u64 + 32 + 32 + 8
}

/// The header and manifest of an attachment as a server checks them without a key, before
/// any chunk arrives: the structure is sound, the counts fit the length and chunk size, and
/// the root matches the chunk hashes. Each uploaded chunk is then checked against its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The parsed header.
    pub header: Header,
    /// Number of chunks.
    pub count: u64,
    /// Plaintext length.
    pub length: u64,
    /// BLAKE3 of each chunk's ciphertext and tag.
    pub hashes: Vec<[u8; HASH_LEN]>,
    /// The root over header, counts and hashes.
    pub root: [u8; HASH_LEN],
}

impl Manifest {
    /// Parses `header` (exactly the header bytes) and `manifest` (exactly the trailer bytes,
    /// from `"FVAM"` through the manifest length).
    ///
    /// # Errors
    /// A malformed header or manifest, counts that do not fit, a root that does not match.
    /// The manifest's MAC (which needs the key) is not checked.
    pub fn parse(header: &[u8], manifest: &[u8]) -> Result<Manifest, Error> {
        let bad = |reason| Error::AttachmentManifest { reason };
        let (parsed, used) = Header::parse(header)?;
        if used != header.len() {
            return Err(Error::Malformed { what: "attachment header", reason: "trailing bytes after the header" });
        }
        if manifest.len() < 24 || &manifest[..4] != MANIFEST_MAGIC {
            return Err(bad("it does not start with the manifest magic"));
        }
        if manifest[4] != VERSION {
            return Err(Error::UnsupportedVersion { what: "attachment manifest", version: manifest[4] });
        }
        let count = u64::from_be_bytes(manifest[8..16].try_into().expect("8 bytes"));
        let length = u64::from_be_bytes(manifest[16..24].try_into().expect("8 bytes"));
        if manifest[..24] != manifest_prefix(count, length) {
            return Err(bad("reserved bytes are not zero"));
        }
        let (expect_count, _) = chunk_layout(length, parsed.chunk_size());
        if count != expect_count || count > MAX_CHUNKS || manifest.len() as u64 != manifest_len(count) {
            return Err(bad("its chunk count does not fit its length"));
        }
        let tail = u64::from_be_bytes(manifest[manifest.len() - 8..].try_into().expect("8 bytes"));
        if tail != manifest_len(count) {
            return Err(bad("the manifest length field is wrong"));
        }
        let n = usize::try_from(count).map_err(|_| bad("too many chunks for this machine"))?;
        let hashes: Vec<[u8; HASH_LEN]> = manifest[24..24 + n * HASH_LEN]
            .chunks_exact(HASH_LEN)
            .map(|c| c.try_into().expect("HASH_LEN bytes"))
            .collect();
        let stored: [u8; HASH_LEN] = manifest[24 + n * HASH_LEN..56 + n * HASH_LEN].try_into().expect("32 bytes");
        let computed = root(header, count, length, hashes.iter().copied());
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&computed[..], &stored[..])) {
            return Err(bad("the root does not match the chunk hashes"));
        }
        Ok(Manifest { header: parsed, count, length, hashes, root: stored })
    }

    /// Length of chunk `i` as stored: ciphertext and tag.
    pub fn chunk_len(&self, i: u64) -> usize {
        stored_chunk_len(self.header.chunk_size(), self.count, self.length, i)
    }

    /// Whether `bytes` is chunk `i` as the manifest names it (length and BLAKE3 hash).
    pub fn chunk_matches(&self, i: u64, bytes: &[u8]) -> bool {
        let Some(expected) = usize::try_from(i).ok().and_then(|i| self.hashes.get(i)) else { return false };
        bytes.len() == self.chunk_len(i) && blake3::hash(bytes).as_bytes() == expected
    }

    /// [`Manifest::chunk_matches`] against a header and manifest that [`Manifest::parse`]
    /// accepted earlier (a server checking each uploaded chunk against what it stored): only
    /// the header and chunk `i`'s hash are read, so the work does not grow with the number of
    /// chunks. False for anything malformed or out of range.
    pub fn stored_chunk_matches(header: &[u8], manifest: &[u8], i: u64, bytes: &[u8]) -> bool {
        let Ok((parsed, _)) = Header::parse(header) else { return false };
        let (Some(count), Some(length)) = (manifest.get(8..16), manifest.get(16..24)) else { return false };
        let count = u64::from_be_bytes(count.try_into().expect("8 bytes"));
        let length = u64::from_be_bytes(length.try_into().expect("8 bytes"));
        let at = i.checked_mul(HASH_LEN as u64).and_then(|o| o.checked_add(24)).and_then(|o| usize::try_from(o).ok());
        let Some(expected) = at.and_then(|at| manifest.get(at..at + HASH_LEN)) else { return false };
        i < count
            && bytes.len() == stored_chunk_len(parsed.chunk_size(), count, length, i)
            && blake3::hash(bytes).as_bytes()[..] == expected[..]
    }
}

/// Length of chunk `i` (ciphertext and tag) of a file of `count` chunks and `length`
/// plaintext bytes.
fn stored_chunk_len(chunk_size: usize, count: u64, length: u64, i: u64) -> usize {
    let (_, last) = chunk_layout(length, chunk_size);
    if i + 1 == count { last + TAG_LEN } else { chunk_size + TAG_LEN }
}

/// What a server can check without any key: the file's structure, every chunk's hash and
/// the root. Returns (header, plaintext length, root).
///
/// # Errors
/// Truncation, trailing bytes, a chunk whose hash differs from the manifest, a root that
/// does not match. The manifest's MAC (which needs the key) is not checked here.
pub fn check_without_key<R: std::io::Read + std::io::Seek>(
    mut file: R,
) -> Result<(Header, u64, [u8; HASH_LEN]), Error> {
    let layout = reader::Layout::read(&mut file)?;
    let mut buf = vec![0u8; layout.header.chunk_size() + TAG_LEN];
    let mut root_hasher = RootHasher::new(&layout.header_bytes, layout.count, layout.length);
    for i in 0..layout.count {
        let n = layout.chunk_len(i) + TAG_LEN;
        reader::read_at(&mut file, layout.chunk_offset(i), &mut buf[..n], "attachment chunk")?;
        let h = *blake3::hash(&buf[..n]).as_bytes();
        if h != layout.hash(&mut file, i)? {
            return Err(Error::AttachmentChunk { index: i, reason: "its hash differs from the manifest" });
        }
        root_hasher.update(&h);
    }
    if root_hasher.finish() != layout.root {
        return Err(Error::AttachmentManifest { reason: "the root does not match the chunk hashes" });
    }
    Ok((layout.header.clone(), layout.length, layout.root))
}
