//! Attachments in the vault: one encrypted file per attachment under
//! `accounts/<name>/files/<id>.fva` (format: `docs/formats/attachment.md`), its metadata and
//! wrapped content key in the account's database.
//!
//! Attach: the file is encrypted into a temporary file, synced and renamed into place,
//! then its metadata row is written. A crash before the row leaves an orphan file that the
//! next open removes. Get: the whole stream is verified into a temporary file next to the
//! output, which is renamed into place only after the last chunk authenticates.

use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fieldvault_core::attachment::{
    Algorithm, Binding, DEFAULT_CHUNK_LOG2, Decryptor, Encryptor, Header, Owner, Written,
};
use fieldvault_core::{AccountName, ContentKey, DataKey, KeyId, KeyMeta, Purpose, SlotContext, VaultId, WrappedKey};
use rusqlite::{OptionalExtension, params};

use crate::database::DB_FILE;
use crate::disk::{FILE_MODE, TMP_SUFFIX, io_err};
use crate::{Error, Unlocked, random, random_key};

/// The directory of an account's attachment files.
pub(crate) const FILES_DIR: &str = "files";
const FILE_SUFFIX: &str = ".fva";

/// An attachment's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Its id, 32 hex digits.
    pub id: String,
    /// The owning document's collection.
    pub collection: String,
    /// The owning document's id.
    pub document: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Version of the files key its content key is wrapped under.
    pub key_version: u32,
    /// Manifest root (hex): what a server checks without a key.
    pub root: String,
    /// When it was attached (on the device that made it), Unix milliseconds; 0 while only
    /// its id is known.
    pub created_at_ms: i64,
    /// Whether its encrypted bytes are on this device. False for one another device made:
    /// [`Unlocked::attachment_get`] downloads it (a sync does for collections set with
    /// [`Unlocked::set_prefetch`]). Until its metadata arrives with a sync, only its id is
    /// known: size 0, key version 0, root empty.
    pub downloaded: bool,
    /// Whether an upload to the server is still owed (a sync sends it after the document's
    /// own change).
    pub upload_pending: bool,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn parse_id(id: &str) -> Result<[u8; 16], Error> {
    let bad = || Error::NoSuchAttachment(id.chars().take(64).collect());
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

pub(crate) fn file_path(files: &Path, id: &str) -> PathBuf {
    files.join(format!("{id}{FILE_SUFFIX}"))
}

/// Reports bytes done out of a total; the attachment stream may call it from its helper
/// thread (it writes a batch there while the calling thread reads the next).
pub type Progress<'p> = &'p mut (dyn FnMut(u64, u64) + Send);

/// A reader or writer that reports the bytes through it to `progress(done, total)`,
/// passing vectored calls through whole (the attachment stream reads and writes a batch in
/// one vectored call).
pub(crate) struct Counted<'p, T> {
    pub(crate) inner: T,
    pub(crate) done: u64,
    pub(crate) total: u64,
    pub(crate) progress: Progress<'p>,
}

impl<T> Counted<'_, T> {
    fn count(&mut self, n: usize) -> usize {
        self.done += n as u64;
        (self.progress)(self.done, self.total);
        n
    }
}

impl<T: Read> Read for Counted<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        Ok(self.count(n))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> std::io::Result<usize> {
        let n = self.inner.read_vectored(bufs)?;
        Ok(self.count(n))
    }
}

impl<T: Write> Write for Counted<'_, T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        Ok(self.count(n))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        Ok(self.count(n))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A temporary file next to `target` that is removed on drop unless kept.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl TempFile {
    pub(crate) fn create(target: &Path) -> Result<(TempFile, File), Error> {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = target.with_file_name(format!(".{name}.{}{TMP_SUFFIX}", hex(&random::<4>())));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok((TempFile { path, keep: false }, f))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Encrypts `input` (`len` bytes) into a new attachment file of document
/// `collection/doc_id` under `files`: a temporary file, synced and renamed into place (its
/// metadata row is the caller's). Returns the new id, its bytes, the content key and what
/// was written. On failure nothing is left behind.
pub(crate) fn encrypt_new(
    disk: &crate::disk::Disk,
    files: &Path,
    collection: &str,
    doc_id: &str,
    input: impl Read,
    len: u64,
    progress: Progress<'_>,
) -> Result<(String, [u8; 16], ContentKey, Written), Error> {
    if !files.exists() {
        disk.create_dir(files)?;
    }
    disk.ensure_free_space(files, len + len / 1000 + (1 << 20))?;
    let id_bytes: [u8; 16] = random();
    let id = hex(&id_bytes);
    let cek = ContentKey::from_bytes(random_key());
    let header = Header {
        algorithm: Algorithm::Aes256Gcm,
        chunk_log2: DEFAULT_CHUNK_LOG2,
        attachment: id_bytes,
        binding: Binding::Document { collection: collection.to_owned(), id: doc_id.to_owned() },
        salt: random(),
        nonce_prefix: random(),
    };
    let target = file_path(files, &id);
    let (mut tmp, file) = TempFile::create(&target)?;
    // The encryptor reads the source straight into its 3 MiB batches and writes whole
    // batches out (small I/O calls are what cost most on a slow kernel path:
    // docs/performance.md).
    // The manifest's chunk hashes wait in a temporary file beside it (hashes of
    // ciphertext, nothing secret), so memory stays the same whatever the size.
    let (_spill_guard, spill) = TempFile::create(&target.with_extension("hashes"))?;
    let mut enc = Encryptor::with_spill(file, &cek, header, Box::new(spill)).map_err(io_err("write", &tmp.path))?;
    enc.read_from(Counted { inner: input, done: 0, total: len, progress }).map_err(io_err("encrypt", &tmp.path))?;
    let (file, written) = enc.finish().map_err(io_err("write", &tmp.path))?;
    file.sync_all().map_err(io_err("fsync", &tmp.path))?;
    drop(file);
    disk.rename(&tmp.path, &target)?;
    tmp.keep = true;
    Ok((id, id_bytes, cek, written))
}

/// Wraps a new attachment's content key under the account's files key (version `version`).
pub(crate) fn seal_cek(
    files_key: &DataKey,
    version: u32,
    vault: &VaultId,
    account: &AccountName,
    id_bytes: &[u8; 16],
    cek: &ContentKey,
) -> WrappedKey {
    files_key.seal_content_key(
        cek,
        KeyMeta { purpose: Purpose::Attachment, version, key_id: KeyId::from_bytes(*id_bytes) },
        &SlotContext { vault, account: account.as_str(), bound: id_bytes },
        random(),
    )
}

/// Records a new attachment made here and the upload owed for it, inside the caller's
/// transaction (which also records the owning document's op).
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_new(
    tx: &rusqlite::Connection,
    id: &str,
    collection: &str,
    doc_id: &str,
    written: &Written,
    wrapped: &WrappedKey,
    version: u32,
    now_ms: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO attachments (id, collection, doc_id, size, wrapped_cek, key_version, root, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            id,
            collection,
            doc_id,
            written.length as i64,
            wrapped.to_bytes().to_vec(),
            version,
            written.root.to_vec(),
            now_ms
        ],
    )?;
    tx.execute("INSERT INTO attachment_uploads (id, queued_at_ms) VALUES (?1, ?2)", params![id, now_ms])?;
    Ok(())
}

impl Unlocked {
    fn files_dir(&self, account: &AccountName) -> PathBuf {
        self.vault.account_dir(account).join(FILES_DIR)
    }

    /// An attachment whose key is here, with its wrapped key.
    pub(crate) fn row(&mut self, account: &AccountName, id: &str) -> Result<(Attachment, Vec<u8>), Error> {
        let db = self.documents(account)?.db;
        let path = db.path.clone();
        let row = db
            .conn
            .query_row(
                "SELECT collection, doc_id, size, key_version, root, created_at, wrapped_cek, present,
                   EXISTS (SELECT 1 FROM attachment_uploads u WHERE u.id = a.id AND u.refused IS NULL)
                 FROM attachments a WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        Attachment {
                            id: id.to_owned(),
                            collection: r.get(0)?,
                            document: r.get(1)?,
                            size: r.get::<_, i64>(2)? as u64,
                            key_version: r.get(3)?,
                            root: hex(&r.get::<_, Vec<u8>>(4)?),
                            created_at_ms: r.get(5)?,
                            downloaded: r.get(7)?,
                            upload_pending: r.get(8)?,
                        },
                        r.get::<_, Vec<u8>>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(|source| Error::Database { path, source })?;
        row.ok_or_else(|| Error::NoSuchAttachment(id.to_owned()))
    }

    /// An attachment the server listed whose key is not here yet: only its id and document.
    pub(crate) fn announced(&mut self, account: &AccountName, id: &str) -> Result<Option<Attachment>, Error> {
        let db = self.documents(account)?.db;
        let path = db.path.clone();
        db.conn
            .query_row("SELECT collection, doc_id FROM attachment_remote WHERE id = ?1", params![id], |r| {
                Ok(Attachment {
                    id: id.to_owned(),
                    collection: r.get(0)?,
                    document: r.get(1)?,
                    size: 0,
                    key_version: 0,
                    root: String::new(),
                    created_at_ms: 0,
                    downloaded: false,
                    upload_pending: false,
                })
            })
            .optional()
            .map_err(|source| Error::Database { path, source })
    }

    pub(crate) fn content_key(
        &self,
        account: &AccountName,
        info: &Attachment,
        wrapped: &[u8],
    ) -> Result<ContentKey, Error> {
        let id = parse_id(&info.id)?;
        let corrupt = |source| Error::Attachment { id: info.id.clone(), source };
        let wrapped = WrappedKey::from_bytes(wrapped).map_err(corrupt)?;
        let files_key =
            self.data_key_version(account, Purpose::Files, info.key_version).ok_or_else(|| Error::Attachment {
                id: info.id.clone(),
                source: fieldvault_core::Error::WrongKey { what: format!("files key v{}", info.key_version) },
            })?;
        let vault = self.vault.id();
        wrapped
            .open_content_key(files_key, &SlotContext { vault: &vault, account: account.as_str(), bound: &id })
            .map_err(corrupt)
    }

    /// `cek` wrapped under the account's live files key for attachment `id` (purpose 5 of
    /// the wrapped-key format, bound to the vault, account and id), with that key's version.
    pub(crate) fn wrap_content_key(
        &self,
        account: &AccountName,
        id: &[u8; 16],
        cek: &ContentKey,
    ) -> Result<(WrappedKey, u32), Error> {
        let version =
            self.live_version(account, Purpose::Files).ok_or_else(|| Error::NoSuchAccount(account.to_string()))?;
        let files_key = self.data_key(account, Purpose::Files)?;
        Ok((seal_cek(files_key, version, &self.vault.id(), account, id, cek), version))
    }

    /// Encrypts the file at `source` as an attachment of document `collection/doc_id`.
    ///
    /// # Errors
    /// [`Error::NoSuchDocument`]; [`Error::InvalidAttachment`] for a source that is missing,
    /// a directory or not a regular file, or a memory-only collection; [`Error::NoSpace`].
    /// On a failure before the encrypted file is in place no file is left behind; after it
    /// (the metadata row not written), the file is an orphan that the next open removes.
    pub fn attach(
        &mut self,
        account: &AccountName,
        collection: &str,
        doc_id: &str,
        source: &Path,
    ) -> Result<Attachment, Error> {
        self.attach_with_progress(account, collection, doc_id, source, &mut |_, _| {})
    }

    /// [`Unlocked::attach`], calling `progress(bytes_read, total)` as the source is read.
    /// `progress` must be `Send`: the stream may call it from its helper thread.
    ///
    /// # Errors
    /// As [`Unlocked::attach`].
    pub fn attach_with_progress(
        &mut self,
        account: &AccountName,
        collection: &str,
        doc_id: &str,
        source: &Path,
        progress: Progress<'_>,
    ) -> Result<Attachment, Error> {
        let docs = self.documents(account)?;
        if docs.db.memory.contains(collection) {
            return Err(Error::InvalidAttachment(format!(
                "collection {collection} is memory-only; attachments live on disk"
            )));
        }
        if docs.get(collection, doc_id)?.is_none() {
            return Err(Error::NoSuchDocument { collection: collection.to_owned(), id: doc_id.to_owned() });
        }
        let meta = fs::metadata(source)
            .map_err(|e| Error::InvalidAttachment(format!("cannot read {}: {e}", source.display())))?;
        if !meta.is_file() {
            return Err(Error::InvalidAttachment(format!("{} is not a regular file", source.display())));
        }
        let files = self.files_dir(account);
        let input = File::open(source).map_err(io_err("open", source))?;
        let (id, id_bytes, cek, written) =
            encrypt_new(&self.vault.disk, &files, collection, doc_id, input, meta.len(), progress)?;
        let target = file_path(&files, &id);

        let (wrapped, version) = self.wrap_content_key(account, &id_bytes, &cek)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        // A crash point of its own (crash tests): the file is in place, its row not yet.
        self.vault.disk.step("record", &target)?;
        let db = self.documents(account)?.db;
        let path = db.path.clone();
        let offset = db.clock_offset_ms;
        let err = |source| Error::Database { path: path.clone(), source };
        // The attachment, the upload owed to the server and the document's op (its list
        // changed) commit together or not at all (ADR 0008).
        let tx = db.conn.transaction().map_err(err)?;
        insert_new(&tx, &id, collection, doc_id, &written, &wrapped, version, now).map_err(err)?;
        crate::sync::outbox::keep_base(&tx, collection, doc_id).map_err(err)?;
        crate::sync::outbox::record(&tx, collection, doc_id, crate::sync::outbox::Change::Put, now, offset)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        db.listeners.notify(&[crate::changes::change(collection, doc_id, crate::changes::ChangeKind::Put)]);
        Ok(Attachment {
            id,
            collection: collection.to_owned(),
            document: doc_id.to_owned(),
            size: written.length,
            key_version: version,
            root: hex(&written.root),
            created_at_ms: now,
            downloaded: true,
            upload_pending: true,
        })
    }

    /// The metadata of one attachment.
    pub fn attachment(&mut self, account: &AccountName, id: &str) -> Result<Attachment, Error> {
        parse_id(id)?;
        match self.row(account, id) {
            Err(Error::NoSuchAttachment(_)) => {
                self.announced(account, id)?.ok_or_else(|| Error::NoSuchAttachment(id.to_owned()))
            }
            other => Ok(other?.0),
        }
    }

    /// Deletes attachment `id` from its document: its row and file here, and, once the
    /// document's change is pushed, from the server and every other device (ADR 0008).
    ///
    /// # Errors
    /// [`Error::NoSuchAttachment`].
    pub fn attachment_delete(&mut self, account: &AccountName, id: &str) -> Result<Attachment, Error> {
        let info = self.attachment(account, id)?;
        let db = self.documents(account)?.db;
        let path = db.path.clone();
        let offset = db.clock_offset_ms;
        let err = |source| Error::Database { path: path.clone(), source };
        let tx = db.conn.transaction().map_err(err)?;
        crate::sync::outbox::keep_base(&tx, &info.collection, &info.document).map_err(err)?;
        crate::sync::listing::forget(&tx, id).map_err(err)?;
        let now = crate::sync::engine::now_ms();
        crate::sync::outbox::record(
            &tx,
            &info.collection,
            &info.document,
            crate::sync::outbox::Change::Put,
            now,
            offset,
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        db.listeners.notify(&[crate::changes::change(
            &info.collection,
            &info.document,
            crate::changes::ChangeKind::Put,
        )]);
        crate::sync::engine::remove_attachment_files(&db.conn, &path, &[id.to_owned()])?;
        Ok(info)
    }

    /// The attachments of one document.
    pub fn attachments_of(
        &mut self,
        account: &AccountName,
        collection: &str,
        doc_id: &str,
    ) -> Result<Vec<Attachment>, Error> {
        let db = self.documents(account)?.db;
        let err = |source| Error::Database { path: db.path.clone(), source };
        let mut stmt = db
            .conn
            .prepare(
                "SELECT id FROM (SELECT id, created_at FROM attachments WHERE collection = ?1 AND doc_id = ?2
                 UNION ALL SELECT id, 0 FROM attachment_remote WHERE collection = ?1 AND doc_id = ?2)
                 ORDER BY created_at, id",
            )
            .map_err(err)?;
        let ids: Vec<String> = stmt
            .query_map(params![collection, doc_id], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        drop(stmt);
        ids.iter().map(|id| self.attachment(account, id)).collect()
    }

    /// Decrypts attachment `id` to `out`: into a temporary file in `out`'s directory that is
    /// renamed over `out` only after every chunk and the manifest authenticate. The output is
    /// created with mode 0600.
    ///
    /// # Errors
    /// [`Error::NoSuchAttachment`]; [`Error::Attachment`] naming what failed (a tampered
    /// chunk, a truncated file, the file of another attachment); I/O errors for an output
    /// directory that does not exist or a disk that fills while the output is written;
    /// [`Error::NoSpace`] when the output directory's file system has less room than the
    /// plaintext plus 1 MiB (checked before anything is written); [`Error::InvalidAttachment`]
    /// for an output inside the vault directory. On failure no output file is left, and an
    /// existing file at `out` is untouched.
    pub fn attachment_get(&mut self, account: &AccountName, id: &str, out: &Path) -> Result<Attachment, Error> {
        self.attachment_get_with_progress(account, id, out, &mut |_, _| {})
    }

    /// [`Unlocked::attachment_get`], calling `progress(bytes_written, total)` as verified
    /// plaintext is written (from the stream's helper thread, which writes it).
    ///
    /// # Errors
    /// As [`Unlocked::attachment_get`].
    pub fn attachment_get_with_progress(
        &mut self,
        account: &AccountName,
        id: &str,
        out: &Path,
        progress: Progress<'_>,
    ) -> Result<Attachment, Error> {
        let id_bytes = parse_id(id)?;
        if !self.attachment(account, id)?.downloaded {
            // Another device made it: its key and bytes come from the server first.
            self.fetch_attachment(account, id, &mut |done, total| progress(done, total))?;
        }
        let (info, wrapped) = self.row(account, id)?;
        let cek = self.content_key(account, &info, &wrapped)?;
        let src = file_path(&self.files_dir(account), id);
        let file = crate::disk::open_read_private(&src)?;
        let fail = |source| Error::Attachment { id: id.to_owned(), source };
        let owner = Owner { account, collection: &info.collection, doc_id: &info.document };
        let dec = Decryptor::open(file, &cek, &id_bytes, &owner).map_err(fail)?;
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::Io {
                op: "write to",
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "the output directory does not exist"),
            });
        }
        if out.is_dir() {
            return Err(Error::InvalidAttachment(format!("{} is a directory", out.display())));
        }
        // Plaintext never goes under the vault directory (nor over the vault's own files).
        let vault = self.vault.dir().canonicalize().map_err(io_err("open", self.vault.dir()))?;
        if dir.canonicalize().map_err(io_err("open", dir))?.starts_with(&vault) {
            return Err(Error::InvalidAttachment(format!(
                "{} is inside the vault, where nothing is kept in plaintext",
                out.display()
            )));
        }
        let total = dec.len();
        self.vault.disk.ensure_free_space(out, total + (1 << 20))?;
        let (mut tmp, file) = TempFile::create(out)?;
        // The decryptor writes each checked batch's plaintext in one call: no buffer needed.
        let mut counted = Counted { inner: file, done: 0, total, progress };
        dec.decrypt_to(&mut counted).map_err(fail)?;
        let file = counted.inner;
        file.sync_all().map_err(io_err("fsync", &tmp.path))?;
        drop(file);
        self.vault.disk.rename(&tmp.path, out)?;
        tmp.keep = true;
        Ok(info)
    }

    /// Rotates the account's files key: every content key is re-wrapped under the new key
    /// in one transaction; no attachment file is rewritten.
    pub(crate) fn rotate_files_key(&mut self, account: &AccountName) -> Result<KeyMeta, Error> {
        let old_version =
            self.live_version(account, Purpose::Files).ok_or_else(|| Error::NoSuchAccount(account.to_string()))?;
        self.documents(account)?;
        let mut db = self.dbs.remove(account).expect("opened above");
        let vault = self.vault.id();
        let result = self.rotate_data_key(account, Purpose::Files, |old, new, new_version| {
            let err = |source| Error::Database { path: db.path.clone(), source };
            let tx = db.conn.transaction().map_err(err)?;
            let rows: Vec<(String, Vec<u8>, u32)> = {
                let mut stmt = tx.prepare("SELECT id, wrapped_cek, key_version FROM attachments").map_err(err)?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(err)?
                    .collect::<Result<_, _>>()
                    .map_err(err)?
            };
            for (id, wrapped, version) in rows {
                if version == new_version {
                    continue; // re-wrapped before an interruption
                }
                let id_bytes = parse_id(&id)?;
                let ctx = SlotContext { vault: &vault, account: account.as_str(), bound: &id_bytes };
                let corrupt = |source| Error::Attachment { id: id.clone(), source };
                if version != old_version {
                    return Err(corrupt(fieldvault_core::Error::WrongKey { what: format!("files key v{version}") }));
                }
                let cek =
                    WrappedKey::from_bytes(&wrapped).and_then(|w| w.open_content_key(old, &ctx)).map_err(corrupt)?;
                let meta =
                    KeyMeta { purpose: Purpose::Attachment, version: new_version, key_id: KeyId::from_bytes(id_bytes) };
                let sealed = new.seal_content_key(&cek, meta, &ctx, random());
                tx.execute(
                    "UPDATE attachments SET wrapped_cek = ?1, key_version = ?2 WHERE id = ?3",
                    params![sealed.to_bytes().to_vec(), new_version, id],
                )
                .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            // The re-wrapped keys on disk for good before the old files key is retired: a
            // power cut must not leave rows wrapped under a key that no longer exists.
            crate::database::make_durable(&db.conn, &db.path)
        });
        self.dbs.insert(account.clone(), db);
        result
    }

    /// Checks every attachment of `account` end to end (decrypting to nowhere); returns the
    /// problems found and the number checked. `progress(done, total)` follows along.
    pub(crate) fn verify_attachments(
        &mut self,
        account: &AccountName,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(u64, Vec<(PathBuf, String)>), Error> {
        let db = self.documents(account)?.db;
        let err = |source| Error::Database { path: db.path.clone(), source };
        let ids: Vec<String> = {
            let mut stmt = db.conn.prepare("SELECT id FROM attachments WHERE present = 1 ORDER BY id").map_err(err)?;
            stmt.query_map([], |r| r.get(0)).map_err(err)?.collect::<Result<_, _>>().map_err(err)?
        };
        let mut findings = Vec::new();
        let files = self.files_dir(account);
        let total = ids.len() as u64;
        for (n, id) in ids.iter().enumerate() {
            let path = file_path(&files, id);
            let checked = (|| -> Result<(), Error> {
                let (info, wrapped) = self.row(account, id)?;
                let cek = self.content_key(account, &info, &wrapped)?;
                let id_bytes = parse_id(id)?;
                let file = crate::disk::open_read_private(&path)?;
                let fail = |source| Error::Attachment { id: id.clone(), source };
                let owner = Owner { account, collection: &info.collection, doc_id: &info.document };
                let dec = Decryptor::open(file, &cek, &id_bytes, &owner).map_err(fail)?;
                dec.decrypt_to(std::io::sink()).map_err(fail)?;
                Ok(())
            })();
            if let Err(e) = checked {
                findings.push((path, e.to_string()));
            }
            progress(n as u64 + 1, total);
        }
        Ok((total, findings))
    }
}

/// Removes attachment files nobody refers to (a crash between writing the file and its
/// metadata row, or between deleting a row and its file) and temporary files.
pub(crate) fn remove_orphans(
    conn: &rusqlite::Connection,
    db_path: &Path,
    disk: &crate::disk::Disk,
) -> Result<(), Error> {
    let files = db_path.parent().expect("the database lives in an account directory").join(FILES_DIR);
    let Ok(entries) = fs::read_dir(&files) else { return Ok(()) };
    let err = |source| Error::Database { path: db_path.to_path_buf(), source };
    let mut known = conn.prepare("SELECT 1 FROM attachments WHERE id = ?1").map_err(err)?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Only plain files: a directory or link by such a name was not made by Fieldvault
        // and must not stop the account from opening (`verify` reports it).
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let orphan = if name.ends_with(TMP_SUFFIX) {
            true
        } else if let Some(id) = name.strip_suffix(FILE_SUFFIX) {
            !known.exists(params![id]).map_err(err)?
        } else {
            false
        };
        if orphan {
            disk.remove_file(&e.path())?;
        }
    }
    Ok(())
}

/// How many encrypted attachment files the account directory `account_dir` holds.
pub(crate) fn stored_files(account_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(account_dir.join(FILES_DIR)) else { return 0 };
    entries.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(FILE_SUFFIX)).count()
}

/// Whether `name` is the name of an attachment file (`<id>.fva`).
pub(crate) fn is_attachment_file(name: &str) -> bool {
    name.strip_suffix(FILE_SUFFIX).is_some_and(|id| parse_id(id).is_ok())
}

/// The files of the given attachment ids, for deletion after their rows are gone.
pub(crate) fn files_of(db_path: &Path, ids: &[String]) -> Vec<PathBuf> {
    let files = db_path.with_file_name(FILES_DIR);
    debug_assert!(db_path.file_name().is_some_and(|n| n == DB_FILE));
    ids.iter().map(|id| file_path(&files, id)).collect()
}
