//! The attachment format (`docs/formats/attachment.md`): one file, encrypted in chunks with
//! the STREAM construction, readable in one pass or by random access, and checkable by a
//! server that holds no key.
//!
//! ```text
//! file    = header || chunk_0 || ... || chunk_{n-1} || manifest
//! header  = "FVAT" | version | algorithm | log2(chunk size) | 0x00 | attachment id (16)
//!           | binding | salt (32) | nonce prefix (7)
//! binding = v2: len8(collection) | collection | len16(document id) | document id
//!           v1 (read only for legacy files): len8(account) | account
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
//! algorithm and the attachment id. Every chunk has the whole header as associated data, so
//! the binding (the owning document in version 2, the device-local account in version 1) is
//! authenticated with every chunk and under the manifest's MAC.

mod batch;
mod keys;
mod reader;
mod writer;

pub use crate::ContentKey;
pub use reader::{Decryptor, Verified, verify_manifest};
pub use writer::{Encryptor, HASHES_IN_MEMORY, Spill, Written, reencrypt};

use crate::names::{MAX_COLLECTION_LEN, MAX_ID_BYTES, check_collection, check_id};
use crate::section::Reader as Bytes;
use crate::{AccountName, Error};

const MAGIC: &[u8; 4] = b"FVAT";
const MANIFEST_MAGIC: &[u8; 4] = b"FVAM";
/// Header version 1: the header binds the device-local account name (read only).
const VERSION_ACCOUNT: u8 = 1;
/// Header version 2: the header binds the owning document (ADR 0008, section 2).
const VERSION_DOCUMENT: u8 = 2;
/// The manifest's own version, the same under both header versions.
const MANIFEST_VERSION: u8 = 1;
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

/// What a file is bound to. It is part of the header, so it is in the associated data of
/// every chunk and under the manifest's MAC: a file cannot be presented as bound to
/// anything else without failing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Version 1: the device-local account name. Legacy: still read, never written for a new
    /// attachment (the name means nothing on another device).
    Account(AccountName),
    /// Version 2: the owning document.
    Document {
        /// The document's collection (a valid collection name, [`crate::names::check_collection`]).
        collection: String,
        /// The document's id (1 to 256 bytes of UTF-8, [`crate::names::check_id`]).
        id: String,
    },
}

impl Binding {
    /// The header version that carries this binding: 1 for an account, 2 for a document.
    pub fn version(&self) -> u8 {
        match self {
            Binding::Account(_) => VERSION_ACCOUNT,
            Binding::Document { .. } => VERSION_DOCUMENT,
        }
    }

    /// Whether the binding follows the rules of its version.
    fn check(&self) -> Result<(), Error> {
        match self {
            Binding::Account(_) => Ok(()),
            Binding::Document { collection, id } => check_document(collection, id),
        }
    }

    /// Reads the binding of a header of `version` (1 or 2), after the attachment id.
    fn read(r: &mut Bytes<'_>, version: u8) -> Result<Binding, Error> {
        let malformed = |reason| Error::Malformed { what: "attachment header", reason };
        if version == VERSION_ACCOUNT {
            let len = r.u8()?;
            let name =
                std::str::from_utf8(r.take(usize::from(len))?).map_err(|_| malformed("account name is not UTF-8"))?;
            return Ok(Binding::Account(AccountName::new(name)?));
        }
        let len = usize::from(r.u8()?);
        if !(1..=MAX_COLLECTION_LEN).contains(&len) {
            return Err(malformed("the collection is not 1 to 64 bytes"));
        }
        let collection =
            std::str::from_utf8(r.take(len)?).map_err(|_| malformed("the collection is not UTF-8"))?.to_owned();
        let len = usize::from(r.u16()?);
        if !(1..=MAX_ID_BYTES).contains(&len) {
            return Err(malformed("the document id is not 1 to 256 bytes"));
        }
        let id = std::str::from_utf8(r.take(len)?).map_err(|_| malformed("the document id is not UTF-8"))?.to_owned();
        check_document(&collection, &id)?;
        Ok(Binding::Document { collection, id })
    }

    /// How an error names it: "of account 'alice'" or "of document "v1" in "visits"".
    fn describe(&self) -> String {
        match self {
            Binding::Account(account) => format!("of account '{account}'"),
            Binding::Document { collection, id } => format!("of document {id:?} in {collection:?}"),
        }
    }
}

/// A version 2 binding's rules: the names' own rules (one home: [`crate::names`]).
fn check_document(collection: &str, id: &str) -> Result<(), Error> {
    let bad = |reason| Error::Malformed { what: "attachment header", reason };
    check_collection(collection).map_err(|_| bad("the collection is not a valid collection name"))?;
    check_id(id).map_err(|_| bad("the document id is not a valid document id"))
}

/// What a reader expects a file to be bound to: a version 1 file must name `account`, a
/// version 2 file must name `collection` and `doc_id`.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// The device-local account the attachment is in (what a version 1 file names).
    pub account: &'a AccountName,
    /// The owning document's collection (what a version 2 file names).
    pub collection: &'a str,
    /// The owning document's id (what a version 2 file names).
    pub doc_id: &'a str,
}

impl Owner<'_> {
    /// Whether `header` names attachment `id` and this owner, in the terms of its version.
    ///
    /// # Errors
    /// [`Error::AttachmentMismatch`] naming what the header says and what was expected.
    fn check(&self, header: &Header, id: &[u8; 16]) -> Result<(), Error> {
        let expected = match header.binding {
            Binding::Account(_) => Binding::Account(self.account.clone()),
            Binding::Document { .. } => {
                Binding::Document { collection: self.collection.to_owned(), id: self.doc_id.to_owned() }
            }
        };
        if &header.attachment == id && header.binding == expected {
            return Ok(());
        }
        Err(Error::AttachmentMismatch {
            found: format!("{} {}", hex(&header.attachment), header.binding.describe()),
            expected: format!("{} {}", hex(id), expected.describe()),
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
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
    /// What the file is bound to; its variant is the header's version.
    pub binding: Binding,
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

    /// The format version this header is written in (by its binding): 1 or 2.
    pub fn version(&self) -> u8 {
        self.binding.version()
    }

    /// Whether the header can be written: a chunk size in [`CHUNK_LOG2_RANGE`] and a binding
    /// that follows its version's rules. [`Encryptor::new`] checks it.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the rule broken (never quoting the names).
    pub fn check(&self) -> Result<(), Error> {
        if !CHUNK_LOG2_RANGE.contains(&self.chunk_log2) {
            return Err(Error::Malformed { what: "attachment header", reason: "chunk size outside 4 KiB..16 MiB" });
        }
        self.binding.check()
    }

    /// Encodes the header, in version 1 or 2 by its binding. A header that
    /// [`Header::check`] refuses encodes to bytes that [`Header::parse`] refuses (a length
    /// that does not fit its field is written as 0), never to another valid header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::MAX_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[self.version(), self.algorithm as u8, self.chunk_log2, 0]);
        out.extend_from_slice(&self.attachment);
        match &self.binding {
            Binding::Account(account) => {
                out.push(u8::try_from(account.as_str().len()).expect("account names are at most 64 bytes"));
                out.extend_from_slice(account.as_str().as_bytes());
            }
            Binding::Document { collection, id } => {
                out.push(u8::try_from(collection.len()).unwrap_or(0));
                out.extend_from_slice(collection.as_bytes());
                out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(0).to_be_bytes());
                out.extend_from_slice(id.as_bytes());
            }
        }
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce_prefix);
        out
    }

    /// Parses a header of either version from the start of `bytes`; returns it and its
    /// length.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadMagic`], [`Error::UnsupportedVersion`] (a version
    /// other than 1 and 2), [`Error::UnknownCode`] (the algorithm), [`Error::Malformed`] (chunk
    /// size, reserved byte, a collection or document id that breaks its rules),
    /// [`Error::AccountName`] (version 1).
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize), Error> {
        let malformed = |reason| Error::Malformed { what: "attachment header", reason };
        let mut r = Bytes::new(bytes, "attachment header");
        let version = r.header_any(MAGIC, &[VERSION_ACCOUNT, VERSION_DOCUMENT])?;
        let algorithm = Algorithm::from_code(r.u8()?)?;
        let chunk_log2 = r.u8()?;
        if !CHUNK_LOG2_RANGE.contains(&chunk_log2) {
            return Err(malformed("chunk size outside 4 KiB..16 MiB"));
        }
        if r.u8()? != 0 {
            return Err(malformed("reserved byte is not zero"));
        }
        let attachment = r.array()?;
        let binding = Binding::read(&mut r, version)?;
        let salt = r.array()?;
        let nonce_prefix = r.array()?;
        let used = bytes.len() - r.remaining();
        Ok((Header { algorithm, chunk_log2, attachment, binding, salt, nonce_prefix }, used))
    }

    /// The most bytes a header can take (for readers that fetch it first): 386, a version 2
    /// header with a 64-byte collection and a 256-byte document id (version 1 headers are at
    /// most 128 bytes).
    pub const MAX_LEN: usize = 4 + 4 + 16 + 1 + MAX_COLLECTION_LEN + 2 + MAX_ID_BYTES + SALT_LEN + NONCE_PREFIX_LEN;

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
    p[4] = MANIFEST_VERSION;
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
        if manifest[4] != MANIFEST_VERSION {
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
