//! Export and import in the age format (docs/formats/export.md).
//!
//! Export: the account's documents (and, if asked, the attachments whose bytes are on this
//! device) stream through [`fieldvault_core::export::ExportWriter`] into an age
//! encryptor (to X25519 recipients or a passphrase) and out. Nothing is buffered whole:
//! each collection is read twice (once to count its lines' bytes for the manifest and its
//! tar header, once to write them), attachments are decrypted batch by batch into the
//! stream.
//!
//! Import: the file is decrypted and read in one pass inside one database transaction;
//! attachments are encrypted as new attachments (new ids) into files that have no row until
//! that transaction commits, which it does only once the whole age stream has authenticated
//! to its last chunk. A failure removes the new files; a crash leaves them as orphans that
//! the next open removes. So an import leaves all of itself or nothing.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;

use age::secrecy::SecretString;
use fieldvault_core::export::{
    AttachmentEntry, CollectionEntry, ExportVisitor, ExportWriter, ExportedDocument, Manifest,
};
use fieldvault_core::{AccountName, Passphrase};
use rusqlite::{OptionalExtension, params};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::attachments::{Counted, Progress, encrypt_new, file_path, seal_cek};
use crate::changes::{ChangeKind, change};
use crate::documents::{MAX_DOCUMENT_BYTES, check_collection};
use crate::sync::outbox;
use crate::{Error, Unlocked};

/// Whom an export is encrypted to.
pub enum ExportTo {
    /// age X25519 recipients (`age1...`, as `age-keygen` prints them): any one of their
    /// identities opens the export.
    Recipients(Vec<String>),
    /// A passphrase of the export's own (age's scrypt recipient), never the vault's.
    Passphrase(Passphrase),
}

/// What an export holds and whom it is for.
pub struct ExportOptions {
    /// The collections to export; empty for every collection that has documents.
    pub collections: Vec<String>,
    /// Whether to include the bytes of the attachments of the exported documents (those
    /// whose bytes are on this device).
    pub with_attachments: bool,
    /// Whom the export is encrypted to.
    pub to: ExportTo,
}

/// What [`Unlocked::export`] wrote.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExportReport {
    /// Each exported collection with its document count, in name order.
    pub collections: Vec<(String, u64)>,
    /// Documents exported.
    pub documents: u64,
    /// Attachments exported.
    pub attachments: u64,
    /// Attachments of exported documents left out because their bytes are not on this
    /// device (another device made them and they were never downloaded).
    pub attachments_not_here: u64,
    /// Plaintext bytes of the layout (documents and attachments, without tar headers).
    pub bytes: u64,
}

/// What opens an export.
pub enum ImportKey {
    /// The text of an age identity file (`AGE-SECRET-KEY-1...` lines, as `age-keygen`
    /// writes them).
    Identities(Zeroizing<String>),
    /// The export's passphrase.
    Passphrase(Passphrase),
}

/// A document named in an [`ImportReport`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DocRef {
    /// Its collection.
    pub collection: String,
    /// Its id.
    pub id: String,
}

/// What [`Unlocked::import`] did. Documents whose id exists here are never overwritten:
/// the same body is `skipped`, another body is `conflicting` (the vault's stays).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Documents written (new here; each is a local write, queued for the server).
    pub added: u64,
    /// Documents already here with the same body: nothing to do.
    pub skipped: Vec<DocRef>,
    /// Documents already here with another body: left as they are here.
    pub conflicting: Vec<DocRef>,
    /// Attachments written as new attachments (new ids) of added documents.
    pub attachments_added: u64,
    /// Attachments not imported because their document was not added (skipped,
    /// conflicting, or not in the export).
    pub attachments_skipped: u64,
}

/// `collection` is this session's memory-only collection.
fn memory_only(u: &mut Unlocked, account: &AccountName, collection: &str) -> Result<bool, Error> {
    Ok(u.documents(account)?.db.memory.contains(collection))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn parse_doc(id: String, version: i64, body: &str) -> Option<ExportedDocument> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(body)) => Some(ExportedDocument { id, version: version as u64, body }),
        _ => None,
    }
}

/// An I/O error of the age stream: what it says about the export.
fn stream_error(e: &io::Error) -> Option<String> {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Some("it ends early (truncated)".into()),
        io::ErrorKind::InvalidData => Some("it fails authentication (tampered with or corrupted)".into()),
        _ => None,
    }
}

/// A reader that remembers whether the stream under it failed, so that an error that
/// surfaces through another layer (the attachment encryptor) is still known for what it is.
struct Watched<'a, R: ?Sized> {
    inner: &'a mut R,
    failed: &'a mut Option<String>,
}

impl<R: Read + ?Sized> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.failed.is_none() {
                *self.failed = Some(stream_error(e).unwrap_or_else(|| e.to_string()));
            }
        })
    }
}

impl Unlocked {
    /// Exports `account`'s documents (and with `with_attachments` their attachments) to
    /// `out` as an age file (docs/formats/export.md), streaming: memory stays at a few MiB
    /// plus about 150 bytes per exported attachment (the manifest), whatever the size.
    /// `progress(done, total)` counts plaintext bytes. On an error, what was written to
    /// `out` is not an export and must be discarded (the CLI writes to a temporary file).
    ///
    /// # Errors
    /// [`Error::InvalidExport`] for options that cannot be used (nothing written);
    /// [`Error::Attachment`] for an attachment file that fails its checks; [`Error::Io`]
    /// writing `out`; database errors.
    pub fn export(
        &mut self,
        account: &AccountName,
        options: ExportOptions,
        out: impl Write + Send,
        progress: Progress<'_>,
    ) -> Result<ExportReport, Error> {
        let encryptor = match &options.to {
            ExportTo::Recipients(list) => {
                if list.is_empty() {
                    return Err(Error::InvalidExport("no recipient given".into()));
                }
                let mut parsed: Vec<Box<dyn age::Recipient>> = Vec::with_capacity(list.len());
                for r in list {
                    let r = r.trim();
                    let shown: String = r.chars().take(80).collect();
                    // X25519 (`age1...`): what the age 1.x tools make and read, deprecated in
                    // age 0.13 only in favour of the post-quantum kind, accepted too.
                    #[allow(deprecated)]
                    let classic = age::x25519::Recipient::from_str(r).map(|r| Box::new(r) as Box<dyn age::Recipient>);
                    let one = classic
                        .or_else(|_| age::pq::Recipient::from_str(r).map(|r| Box::new(r) as Box<dyn age::Recipient>));
                    parsed.push(one.map_err(|_| {
                        Error::InvalidExport(format!("recipient {shown:?} is not an age recipient (age1...)"))
                    })?);
                }
                age::Encryptor::with_recipients(parsed.iter().map(|r| r.as_ref()))
                    .map_err(|e| Error::InvalidExport(e.to_string()))?
            }
            ExportTo::Passphrase(p) => {
                if p.expose_secret().is_empty() {
                    return Err(Error::InvalidExport("the export passphrase is empty".into()));
                }
                age::Encryptor::with_user_passphrase(SecretString::from(p.expose_secret().to_owned()))
            }
        };

        // The plan: collections, their counts and sizes, the attachments.
        let mut names: Vec<String> = if options.collections.is_empty() {
            let db = self.documents(account)?.db;
            let path = db.path.clone();
            let err = |source| Error::Database { path: path.clone(), source };
            let mut stmt =
                db.conn.prepare("SELECT DISTINCT collection FROM main.documents ORDER BY collection").map_err(err)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)?
        } else {
            options.collections.clone()
        };
        names.sort();
        names.dedup();
        for n in &names {
            check_collection(n).map_err(|e| Error::InvalidExport(e.to_string()))?;
            if memory_only(self, account, n)? {
                return Err(Error::InvalidExport(format!("collection {n} is memory-only and is never exported")));
            }
        }
        let db = self.documents(account)?.db;
        let path = db.path.clone();
        let err = |source| Error::Database { path: path.clone(), source };
        let broken = || Error::Database {
            path: path.clone(),
            source: rusqlite::Error::InvalidColumnType(2, "body".into(), rusqlite::types::Type::Text),
        };
        let mut collections = Vec::with_capacity(names.len());
        let mut report = ExportReport::default();
        {
            let mut stmt = db
                .conn
                .prepare("SELECT id, version, body FROM main.documents WHERE collection = ?1 ORDER BY id")
                .map_err(err)?;
            for name in &names {
                let (mut documents, mut bytes) = (0u64, 0u64);
                let mut rows = stmt.query(params![name]).map_err(err)?;
                while let Some(r) = rows.next().map_err(err)? {
                    let body: String = r.get(2).map_err(err)?;
                    let doc = parse_doc(r.get(0).map_err(err)?, r.get(1).map_err(err)?, &body).ok_or_else(broken)?;
                    documents += 1;
                    bytes += doc.line().len() as u64;
                }
                report.collections.push((name.clone(), documents));
                report.documents += documents;
                report.bytes += bytes;
                collections.push(CollectionEntry { name: name.clone(), documents, bytes });
            }
        }
        let mut attachments = Vec::new();
        if options.with_attachments {
            let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            let mut stmt = db
                .conn
                .prepare("SELECT id, collection, doc_id, size, present FROM attachments ORDER BY id")
                .map_err(err)?;
            let mut rows = stmt.query([]).map_err(err)?;
            while let Some(r) = rows.next().map_err(err)? {
                let collection: String = r.get(1).map_err(err)?;
                if !wanted.contains(collection.as_str()) {
                    continue;
                }
                if !r.get::<_, bool>(4).map_err(err)? {
                    report.attachments_not_here += 1;
                    continue;
                }
                let size = r.get::<_, i64>(3).map_err(err)? as u64;
                report.attachments += 1;
                report.bytes += size;
                attachments.push(AttachmentEntry {
                    id: r.get(0).map_err(err)?,
                    collection,
                    document: r.get(2).map_err(err)?,
                    size,
                });
            }
        }
        let manifest = Manifest::new(now_ms(), collections, attachments);
        let total = report.bytes;

        // The stream: layout -> counted -> age -> buffered -> out.
        let write_err = |e: io::Error| Error::Io { op: "write", path: PathBuf::from("the export output"), source: e };
        let sealed = encryptor.wrap_output(BufWriter::with_capacity(64 << 10, out)).map_err(write_err)?;
        let counted = Counted { inner: sealed, done: 0, total, progress };
        let layout_err = |e: fieldvault_core::Error| match e {
            fieldvault_core::Error::Io { source, .. } => write_err(source),
            other => Error::Core(other),
        };
        let mut w = ExportWriter::new(counted, manifest.clone()).map_err(layout_err)?;
        {
            let db = self.documents(account)?.db;
            let mut stmt = db
                .conn
                .prepare("SELECT id, version, body FROM main.documents WHERE collection = ?1 ORDER BY id")
                .map_err(err)?;
            for c in &manifest.collections {
                w.begin_collection(&c.name).map_err(layout_err)?;
                let mut rows = stmt.query(params![c.name]).map_err(err)?;
                while let Some(r) = rows.next().map_err(err)? {
                    let body: String = r.get(2).map_err(err)?;
                    let doc = parse_doc(r.get(0).map_err(err)?, r.get(1).map_err(err)?, &body).ok_or_else(broken)?;
                    w.write_document(&doc).map_err(layout_err)?;
                }
            }
        }
        for a in &manifest.attachments {
            w.begin_attachment(&a.id).map_err(layout_err)?;
            self.decrypt_attachment_to(account, &a.id, &mut w)?;
        }
        let counted = w.finish().map_err(layout_err)?;
        let buffered = counted.inner.finish().map_err(write_err)?;
        let mut out = buffered.into_inner().map_err(|e| write_err(e.into_error()))?;
        out.flush().map_err(write_err)?;
        Ok(report)
    }

    /// Imports an export (made by [`Unlocked::export`]) into `account`: documents keep
    /// their ids and become local writes (queued for the server of a syncing account);
    /// attachments of the documents added become new attachments with new ids, queued for
    /// upload. A document whose id exists here is never overwritten (see [`ImportReport`]).
    /// All or nothing: on any error, or a crash, nothing of the import stays.
    /// `progress(done, total)` counts plaintext bytes of the layout.
    ///
    /// # Errors
    /// [`Error::ExportKeyRefused`], [`Error::ExportDamaged`], [`Error::ExportNewerLayout`];
    /// [`Error::InvalidDocument`] for a document this vault cannot hold; [`Error::NoSpace`]
    /// and database errors. Nothing imported in every case.
    pub fn import(
        &mut self,
        account: &AccountName,
        input: impl Read,
        key: ImportKey,
        progress: Progress<'_>,
    ) -> Result<ImportReport, Error> {
        let damaged = |what: String| Error::ExportDamaged(what);
        let decryptor =
            age::Decryptor::new_buffered(BufReader::with_capacity(64 << 10, input)).map_err(|e| match e {
                age::DecryptError::Io(e)
                    if e.kind() != io::ErrorKind::UnexpectedEof && e.kind() != io::ErrorKind::InvalidData =>
                {
                    Error::Io { op: "read", path: PathBuf::from("the export"), source: e }
                }
                other => damaged(format!("it is not an age file Fieldvault can read ({other})")),
            })?;
        let refused = |e: age::DecryptError| match e {
            age::DecryptError::NoMatchingKeys
            | age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed => Error::ExportKeyRefused(match &key {
                ImportKey::Identities(_) => "none of the identities given is one of its recipients".into(),
                ImportKey::Passphrase(_) => "the passphrase is wrong".into(),
            }),
            other => damaged(format!("its age header is refused ({other})")),
        };
        let plain: Box<dyn Read> = match (&key, decryptor.is_scrypt()) {
            (ImportKey::Passphrase(p), true) => {
                let id = age::scrypt::Identity::new(SecretString::from(p.expose_secret().to_owned()));
                Box::new(decryptor.decrypt(std::iter::once(&id as &dyn age::Identity)).map_err(refused)?)
            }
            (ImportKey::Identities(text), false) => {
                let file = age::IdentityFile::from_buffer(text.as_bytes())
                    .map_err(|_| Error::ExportKeyRefused("the identity file is not an age identity file".into()))?;
                let ids = file.into_identities().map_err(|_| {
                    Error::ExportKeyRefused("the identity file holds an identity this build cannot use".into())
                })?;
                if ids.is_empty() {
                    return Err(Error::ExportKeyRefused("the identity file holds no identity".into()));
                }
                Box::new(decryptor.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(refused)?)
            }
            (ImportKey::Passphrase(_), false) => {
                return Err(Error::ExportKeyRefused(
                    "it was made for age recipients; give an identity file, not a passphrase".into(),
                ));
            }
            (ImportKey::Identities(_), true) => {
                return Err(Error::ExportKeyRefused("it is protected by a passphrase; give the passphrase".into()));
            }
        };

        let memory = self.documents(account)?.db.memory.clone();
        let (db, files_key, version, vault) = self.db_with_files_key(account)?;
        let files = vault.account_dir(account).join(crate::attachments::FILES_DIR);
        let path = db.path.clone();
        let offset = db.clock_offset_ms;
        let listening = db.listeners.any();
        let tx = db.conn.transaction().map_err(|source| Error::Database { path: path.clone(), source })?;
        let mut failed = None;
        let mut visitor = Importer {
            tx: &tx,
            path: &path,
            memory: &memory,
            offset,
            at: now_ms(),
            files: &files,
            disk: &vault.disk,
            files_key,
            version,
            vault_id: vault.id(),
            account,
            report: ImportReport::default(),
            not_added: BTreeSet::new(),
            new_files: Vec::new(),
            changed: Vec::new(),
            listening,
            progress,
            done: 0,
            total: 0,
            failed: &mut failed,
        };
        let mut plain = plain;
        let mut watched = Watched { inner: &mut plain, failed: &mut None };
        let result = fieldvault_core::export::read_export(&mut watched, &mut visitor);
        let stream_failed = watched.failed.take();
        let Importer { report, new_files, changed, .. } = visitor;
        let result = result.and_then(|_| tx.commit().map_err(|source| Error::Database { path: path.clone(), source }));
        if let Err(e) = result {
            // The transaction rolled back (dropped); the new files have no row: remove them.
            for f in &new_files {
                let _ = std::fs::remove_file(f);
            }
            let damaged_by = stream_failed.or(failed);
            return Err(match e {
                Error::Core(fieldvault_core::Error::ExportNewerLayout { found, supported }) => {
                    Error::ExportNewerLayout { found, supported }
                }
                Error::Core(fieldvault_core::Error::ExportLayout(what)) => damaged(what),
                Error::Core(fieldvault_core::Error::Io { source, .. }) => match stream_error(&source) {
                    Some(what) => damaged(what),
                    None => Error::Io { op: "read", path: PathBuf::from("the export"), source },
                },
                other => match damaged_by {
                    Some(what) => damaged(what),
                    None => other,
                },
            });
        }
        self.documents(account)?.db.listeners.notify(&changed);
        Ok(report)
    }

    /// Decrypts one attachment of this device into `out`, checking every chunk.
    fn decrypt_attachment_to(
        &mut self,
        account: &AccountName,
        id: &str,
        out: &mut (impl Write + Send),
    ) -> Result<(), Error> {
        let (info, wrapped) = self.row(account, id)?;
        let cek = self.content_key(account, &info, &wrapped)?;
        let src = file_path(&self.vault.account_dir(account).join(crate::attachments::FILES_DIR), id);
        let file = crate::disk::open_read_private(&src)?;
        let fail = |source| Error::Attachment { id: id.to_owned(), source };
        let id_bytes = crate::attachments::parse_id(id)?;
        let owner =
            fieldvault_core::attachment::Owner { account, collection: &info.collection, doc_id: &info.document };
        let dec = fieldvault_core::attachment::Decryptor::open(file, &cek, &id_bytes, &owner).map_err(fail)?;
        dec.decrypt_to(out).map_err(fail)?;
        Ok(())
    }
}

/// Writes what [`fieldvault_core::export::read_export`] hands over into the open
/// transaction.
struct Importer<'a, 'p> {
    tx: &'a rusqlite::Connection,
    path: &'a PathBuf,
    memory: &'a BTreeSet<String>,
    offset: Option<i64>,
    at: i64,
    files: &'a std::path::Path,
    disk: &'a crate::disk::Disk,
    files_key: &'a fieldvault_core::DataKey,
    version: u32,
    vault_id: fieldvault_core::VaultId,
    account: &'a AccountName,
    report: ImportReport,
    /// Documents of the export that are here already (their attachments are not imported).
    not_added: BTreeSet<(String, String)>,
    new_files: Vec<PathBuf>,
    changed: Vec<crate::DocumentChange>,
    listening: bool,
    progress: Progress<'p>,
    done: u64,
    total: u64,
    failed: &'a mut Option<String>,
}

impl Importer<'_, '_> {
    fn db(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |source| Error::Database { path: self.path.clone(), source }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        (self.progress)(self.done, self.total);
    }
}

impl ExportVisitor for Importer<'_, '_> {
    type Error = Error;

    fn manifest(&mut self, m: &Manifest) -> Result<(), Error> {
        for c in &m.collections {
            if self.memory.contains(&c.name) {
                return Err(Error::InvalidDocument(format!(
                    "collection {} is memory-only in this session; an import writes to disk",
                    c.name
                )));
            }
        }
        self.total =
            m.collections.iter().map(|c| c.bytes).sum::<u64>() + m.attachments.iter().map(|a| a.size).sum::<u64>();
        Ok(())
    }

    fn document(&mut self, collection: &str, doc: ExportedDocument) -> Result<(), Error> {
        let line_len = doc.line().len() as u64;
        let text = Value::Object(doc.body).to_string();
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::InvalidDocument(format!(
                "document {collection}/{} is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                doc.id,
                text.len()
            )));
        }
        let here: Option<String> = self
            .tx
            .prepare_cached("SELECT body FROM main.documents WHERE collection = ?1 AND id = ?2")
            .and_then(|mut s| s.query_row(params![collection, doc.id], |r| r.get(0)).optional())
            .map_err(self.db())?;
        match here {
            Some(body) => {
                // Compared as JSON values: the same document, whatever its key order here.
                let same = serde_json::from_str::<Map<String, Value>>(&body)
                    .is_ok_and(|b| serde_json::to_string(&b).is_ok_and(|t| t == text));
                let r = DocRef { collection: collection.to_owned(), id: doc.id.clone() };
                if same {
                    self.report.skipped.push(r)
                } else {
                    self.report.conflicting.push(r)
                }
                self.not_added.insert((collection.to_owned(), doc.id));
            }
            None => {
                outbox::keep_base(self.tx, collection, &doc.id).map_err(self.db())?;
                self.tx
                    .prepare_cached(
                        "INSERT INTO main.documents (collection, id, version, updated_at, body) VALUES (?1, ?2, 1, ?3, ?4)",
                    )
                    .and_then(|mut s| s.execute(params![collection, doc.id, self.at, text]))
                    .map_err(self.db())?;
                outbox::record(self.tx, collection, &doc.id, outbox::Change::Put, self.at, self.offset)
                    .map_err(self.db())?;
                if self.listening {
                    self.changed.push(change(collection, &doc.id, ChangeKind::Put));
                }
                self.report.added += 1;
            }
        }
        self.advance(line_len);
        Ok(())
    }

    fn attachment(&mut self, entry: &AttachmentEntry, bytes: &mut dyn Read) -> Result<(), Error> {
        let key = (entry.collection.clone(), entry.document.clone());
        let exists: bool = self
            .tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM main.documents WHERE collection = ?1 AND id = ?2)")
            .and_then(|mut s| s.query_row(params![entry.collection, entry.document], |r| r.get(0)))
            .map_err(self.db())?;
        if self.not_added.contains(&key) || !exists {
            self.report.attachments_skipped += 1;
            self.advance(entry.size);
            return Ok(()); // the reader reads (and so checks) the bytes it skips
        }
        let base = self.done;
        let total = self.total;
        let progress = &mut self.progress;
        let mut failed = None;
        let made = encrypt_new(
            self.disk,
            self.files,
            &entry.collection,
            &entry.document,
            Watched { inner: bytes, failed: &mut failed },
            entry.size,
            &mut |done, _| progress(base + done, total),
        );
        if failed.is_some() {
            *self.failed = failed;
        }
        let (id, id_bytes, cek, written) = made?;
        self.new_files.push(file_path(self.files, &id));
        if written.length != entry.size {
            return Err(Error::ExportDamaged(format!("attachment {} is not the size its entry says", entry.id)));
        }
        let wrapped = seal_cek(self.files_key, self.version, &self.vault_id, self.account, &id_bytes, &cek);
        crate::attachments::insert_new(
            self.tx,
            &id,
            &entry.collection,
            &entry.document,
            &written,
            &wrapped,
            self.version,
            self.at,
        )
        .map_err(self.db())?;
        self.report.attachments_added += 1;
        self.done = base + entry.size;
        Ok(())
    }
}

/// Reads an age identity file's text (for [`ImportKey::Identities`]) from `r`.
///
/// # Errors
/// The read's I/O error.
pub fn read_identities(mut r: impl BufRead) -> io::Result<Zeroizing<String>> {
    let mut s = Zeroizing::new(String::new());
    r.read_to_string(&mut s)?;
    Ok(s)
}
