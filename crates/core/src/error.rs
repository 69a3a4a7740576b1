use thiserror::Error;

/// Everything the pure core can refuse. Each variant states a fact about the input.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes end before the structure does.
    #[error("{what} is truncated: needs {needed} bytes, found {found}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes available.
        found: usize,
    },
    /// The bytes go on after the structure ends.
    #[error("{what} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Which structure.
        what: &'static str,
        /// How many bytes follow it.
        extra: usize,
    },
    /// The file does not start with the expected magic bytes: it is not this kind of file.
    #[error("{what} has the wrong magic bytes (not a Fieldvault {what})")]
    BadMagic {
        /// Which structure.
        what: &'static str,
    },
    /// A version this build does not know. Never read as a fallback.
    #[error("{what} has unsupported format version {version}")]
    UnsupportedVersion {
        /// Which structure.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// An algorithm, purpose, state or kind code this build does not know.
    #[error("{what} has unknown code {code}")]
    UnknownCode {
        /// Which field.
        what: &'static str,
        /// The code found.
        code: u8,
    },
    /// A structural rule was broken (a reserved byte set, a section out of order, ...).
    #[error("{what}: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// The rule that was broken.
        reason: &'static str,
    },
    /// A section's checksum does not match its bytes: the file was corrupted (a flipped bit,
    /// a bad sector, a partial copy). Checksums detect accidents; authenticity comes from
    /// the AEAD tags.
    #[error("{what} is corrupt: its checksum does not match")]
    ChecksumMismatch {
        /// Which section (named, e.g. "slot 4 (account 'alice', database key v1)").
        what: String,
    },
    /// The canary of the wrapping key does not match: the key offered is not the key this
    /// slot was sealed under (wrong passphrase, another vault's keystore entry, ...).
    #[error("{what} was sealed under a different key")]
    WrongKey {
        /// Which slot.
        what: String,
    },
    /// The wrapping key is the right one (its canary matches) but the AEAD tag fails: the
    /// slot's bytes were edited, or the slot was moved to another place in the hierarchy.
    #[error("{what} failed authentication: it was edited, or moved from another slot or vault")]
    Tampered {
        /// Which slot.
        what: String,
    },
    /// Argon2id parameters outside the range readers accept.
    #[error("key-derivation parameters refused: {0}")]
    KdfParams(String),
    /// An attachment chunk failed its hash against the manifest or its tag (edited,
    /// reordered, swapped in from another file). No byte of it was released. (A wrong key or
    /// a truncated file fails earlier, at the manifest.)
    #[error("attachment chunk {index} {reason}")]
    AttachmentChunk {
        /// The chunk's index.
        index: u64,
        /// What failed.
        reason: &'static str,
    },
    /// The attachment's manifest or header failed: truncated, edited, or sealed under
    /// another key.
    #[error("attachment manifest: {reason}")]
    AttachmentManifest {
        /// What failed.
        reason: &'static str,
    },
    /// The file is another attachment than the one asked for, or bound to another document
    /// (or, in format version 1, another account).
    #[error("this file is attachment {found}, not {expected}")]
    AttachmentMismatch {
        /// What the header says: the hex id, and the document (version 2) or account (version 1).
        found: String,
        /// What was asked for.
        expected: String,
    },
    /// Reading or writing the stream failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Text offered as a recovery key is not one: a character outside the alphabet, the
    /// wrong length, or a checksum that does not match (a typo). Says where, never what.
    #[error("not a valid recovery key: {reason}")]
    RecoveryKeyFormat {
        /// What is wrong with it.
        reason: String,
    },
    /// An export (docs/formats/export.md) breaks its layout: an entry out of order or
    /// unexpected, a count or size that disagrees with the manifest, a malformed line.
    #[error("export layout: {0}")]
    ExportLayout(String),
    /// An export made by a newer build, in a layout version this build does not read.
    #[error(
        "the export uses layout version {found}; this build reads version {supported} only (a newer Fieldvault made it)"
    )]
    ExportNewerLayout {
        /// The manifest's layout version.
        found: u64,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// An account name that cannot be used.
    #[error("invalid account name {name:?}: {reason}")]
    AccountName {
        /// The name offered (names are not secret).
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
}
