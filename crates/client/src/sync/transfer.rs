//! Attachment transfer over the signed channel (ADR 0008, docs/sync.md section 13): the
//! uploads a device owes, the keys of attachments other devices made, and their bytes.
//!
//! - **Upload**, after the document's own op: the metadata with the content key, then each
//!   chunk the server's answer lists as missing, one signed request at a time. The server's
//!   receipts are the resume point, so a killed upload sends only what is still missing.
//! - **Keying**: an attachment a pulled document lists gets its metadata fetched; the content
//!   key in it must verify the manifest's MAC (and the header must name this attachment and
//!   document) before it is wrapped under this device's files key.
//! - **Download**: every chunk checked against the authenticated manifest as it arrives,
//!   written into a temporary file in `files/`, the whole file decrypted to nowhere (every
//!   tag), and only then linked into place. An interrupted download leaves nothing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_core::attachment::{
    Algorithm, Binding, DEFAULT_CHUNK_LOG2, Decryptor, Header, Manifest, Owner, TAG_LEN, reencrypt, verify_manifest,
};
use fieldvault_core::protocol::attachments::{AttachmentInfo, AttachmentUpload, ChunkReceipt, parse_attachment_id};
use fieldvault_core::{AccountName, ContentKey};
use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use super::channel::{Channel, refused, signed};
use super::outbox::{self, db_err};
use super::{engine, listing};
use crate::attachments::{FILES_DIR, TempFile, file_path};
use crate::disk::io_err;
use crate::transport::Method;
use crate::{Error, Unlocked, random};

/// What the attachment step of a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Attachments whose upload finished.
    pub uploaded: usize,
    /// Uploads the server refused for good (the attachment stays on this device).
    pub upload_refused: usize,
    /// Attachments of other devices whose key arrived.
    pub keyed: usize,
    /// Attachments downloaded (prefetched collections).
    pub downloaded: usize,
}

/// How an attempt ended when it did not fail outright.
enum Attempt {
    Done,
    /// Not yet: the server does not have it (an upload not finished), try at a later sync.
    Later(String),
    /// Refused for good, with the reason.
    Refused(String),
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(what: &str, text: &str) -> Result<Vec<u8>, Error> {
    STANDARD.decode(text).map_err(|_| Error::MalformedAnswer(format!("attachment metadata: {what} is not base64")))
}

/// One attachment's outcome: a failure of that attachment alone (a file or an answer that
/// does not check out) is logged and leaves it for a later sync, so one bad attachment
/// never stops the others; anything else (offline, a refused session) ends the step.
fn per_attachment(r: Result<Attempt, Error>) -> Result<Attempt, Error> {
    match r {
        Err(e @ (Error::Attachment { .. } | Error::MalformedAnswer(_) | Error::NoSpace { .. })) => {
            tracing::warn!(error = %e, "an attachment could not be transferred");
            Ok(Attempt::Later(e.to_string()))
        }
        other => other,
    }
}

/// The header and manifest bytes of an attachment file, and its parsed manifest.
fn read_ends(file: &mut File, path: &Path) -> Result<(Vec<u8>, Vec<u8>, Manifest), Error> {
    let len = file.metadata().map_err(io_err("read", path))?.len();
    let mut head = vec![0u8; len.min(Header::MAX_LEN as u64) as usize];
    file.seek(SeekFrom::Start(0)).and_then(|_| file.read_exact(&mut head)).map_err(io_err("read", path))?;
    let corrupt = |source| Error::Attachment { id: path.display().to_string(), source };
    let (_, header_len) = Header::parse(&head).map_err(corrupt)?;
    head.truncate(header_len);
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::Start(len.saturating_sub(8)))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(io_err("read", path))?;
    let m = u64::from_be_bytes(tail);
    if m > len {
        return Err(corrupt(fieldvault_core::Error::AttachmentManifest {
            reason: "the manifest length field is wrong",
        }));
    }
    let mut manifest = vec![0u8; m as usize];
    file.seek(SeekFrom::Start(len - m)).and_then(|_| file.read_exact(&mut manifest)).map_err(io_err("read", path))?;
    let parsed = Manifest::parse(&head, &manifest).map_err(corrupt)?;
    Ok((head, manifest, parsed))
}

impl Unlocked {
    /// Before a sync pushes: an owed upload whose id the server's copy of its document does
    /// not list (an attachment made before lists travelled, or one whose document's change
    /// was rolled back) gets the document's put queued, once, so that the server lists it.
    pub(crate) fn relist_owed_uploads(&mut self, account: &AccountName) -> Result<(), Error> {
        let db = self.documents(account)?.db;
        let path = db.path.clone();
        let offset = db.clock_offset_ms;
        let tx = db.conn.transaction().map_err(db_err(&path))?;
        let owed: Vec<(String, String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT u.id, a.collection, a.doc_id FROM attachment_uploads u JOIN attachments a ON a.id = u.id
                     WHERE u.refused IS NULL AND u.relisted = 0",
                )
                .map_err(db_err(&path))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db_err(&path))?
                .collect::<Result<_, _>>()
                .map_err(db_err(&path))?
        };
        let now = engine::now_ms();
        for (id, c, doc) in owed {
            if outbox::pending(&tx, &c, &doc).map_err(db_err(&path))? {
                continue; // its op carries the list
            }
            if !listing::server_list(&tx, &c, &doc).map_err(db_err(&path))?.contains(&id) {
                outbox::keep_base(&tx, &c, &doc).map_err(db_err(&path))?;
                outbox::record(&tx, &c, &doc, outbox::Change::Put, now, offset).map_err(db_err(&path))?;
                tx.execute("UPDATE attachment_uploads SET relisted = 1 WHERE id = ?1", [&id]).map_err(db_err(&path))?;
            }
        }
        tx.commit().map_err(db_err(&path))
    }

    /// After a sync's push and pull: the owed uploads, the keys of announced attachments,
    /// and the downloads of prefetched collections. A transport error ends the step (the
    /// rest waits for the next sync); a refusal ends only its attachment.
    pub(super) fn transfer_attachments(
        &mut self,
        account: &AccountName,
        channel: &mut Channel,
    ) -> Result<TransferReport, Error> {
        let mut report = TransferReport::default();
        // Uploads whose document the server holds with this id listed, nothing pending.
        let ready: Vec<(String, String, String)> = {
            let db = self.documents(account)?.db;
            let path = db.path.clone();
            let mut stmt = db
                .conn
                .prepare(
                    "SELECT u.id, a.collection, a.doc_id, u.relisted FROM attachment_uploads u
                     JOIN attachments a ON a.id = u.id
                     WHERE u.refused IS NULL AND a.present = 1 ORDER BY u.queued_at_ms, u.id",
                )
                .map_err(db_err(&path))?;
            let rows: Vec<(String, String, String, bool)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(db_err(&path))?
                .collect::<Result<_, _>>()
                .map_err(db_err(&path))?;
            drop(stmt);
            let mut ready = Vec::new();
            for (id, c, doc, relisted) in rows {
                if outbox::pending(&db.conn, &c, &doc).map_err(db_err(&path))? {
                    continue; // the document's op goes first
                }
                if listing::server_list(&db.conn, &c, &doc).map_err(db_err(&path))?.contains(&id) {
                    ready.push((id, c, doc));
                } else if relisted {
                    // Its document's put was sent to list it, and the server still does not:
                    // that change was refused. The attachment stays here, unsent.
                    db.conn
                        .execute(
                            "UPDATE attachment_uploads SET refused = 'the server refused to list it on its document'
                             WHERE id = ?1",
                            [&id],
                        )
                        .map_err(db_err(&path))?;
                    report.upload_refused += 1;
                }
            }
            ready
        };
        for (id, c, doc) in ready {
            self.bump(account, "attachment_uploads", &id)?;
            match per_attachment(self.upload(account, channel, &id, &c, &doc))? {
                Attempt::Done => {
                    self.exec(account, "DELETE FROM attachment_uploads WHERE id = ?1", &id, None)?;
                    report.uploaded += 1;
                }
                Attempt::Refused(why) => {
                    self.exec(account, "UPDATE attachment_uploads SET refused = ?2 WHERE id = ?1", &id, Some(&why))?;
                    tracing::warn!(attachment = %id, reason = %why, "the server refused an attachment upload");
                    report.upload_refused += 1;
                }
                Attempt::Later(_) => {}
            }
        }
        // Keys of attachments other devices made.
        let announced: Vec<String> = {
            let db = self.documents(account)?.db;
            let path = db.path.clone();
            let mut stmt = db.conn.prepare("SELECT id FROM attachment_remote ORDER BY id").map_err(db_err(&path))?;
            stmt.query_map([], |r| r.get(0)).map_err(db_err(&path))?.collect::<Result<_, _>>().map_err(db_err(&path))?
        };
        for id in announced {
            self.bump(account, "attachment_remote", &id)?;
            let why = match per_attachment(self.key_announced(account, channel, &id))? {
                Attempt::Done => {
                    report.keyed += 1;
                    continue;
                }
                Attempt::Later(why) | Attempt::Refused(why) => why,
            };
            self.exec(account, "UPDATE attachment_remote SET error = ?2 WHERE id = ?1", &id, Some(&why))?;
        }
        // Downloads of the collections the app asked for.
        let wanted: Vec<String> = {
            let db = self.documents(account)?.db;
            let path = db.path.clone();
            let mut stmt = db
                .conn
                .prepare(
                    "SELECT a.id FROM attachments a JOIN attachment_prefetch p ON p.collection = a.collection
                     WHERE a.present = 0 ORDER BY a.id",
                )
                .map_err(db_err(&path))?;
            stmt.query_map([], |r| r.get(0)).map_err(db_err(&path))?.collect::<Result<_, _>>().map_err(db_err(&path))?
        };
        for id in wanted {
            if let Attempt::Done = per_attachment(self.download(account, channel, &id, &mut |_, _| {}))? {
                report.downloaded += 1;
            }
        }
        Ok(report)
    }

    fn bump(&mut self, account: &AccountName, table: &'static str, id: &str) -> Result<(), Error> {
        let sql = format!("UPDATE {table} SET attempts = attempts + 1 WHERE id = ?1");
        let db = self.documents(account)?.db;
        db.conn.execute(&sql, [id]).map(|_| ()).map_err(db_err(&db.path))
    }

    fn exec(&mut self, account: &AccountName, sql: &str, id: &str, text: Option<&str>) -> Result<(), Error> {
        let db = self.documents(account)?.db;
        let r = match text {
            Some(t) => db.conn.execute(sql, params![id, t]),
            None => db.conn.execute(sql, [id]),
        };
        r.map(|_| ()).map_err(db_err(&db.path))
    }

    /// One signed request on the account's channel.
    fn request(
        &mut self,
        account: &AccountName,
        channel: &mut Channel,
        method: Method,
        target: &str,
        body: &[u8],
    ) -> Result<crate::transport::Response, Error> {
        let db = self.documents(account)?.db;
        signed(channel, &db.conn, &db.path, method, target, body)
    }

    /// Uploads one attachment (the metadata, then every chunk the server lacks).
    fn upload(
        &mut self,
        account: &AccountName,
        channel: &mut Channel,
        id: &str,
        collection: &str,
        doc_id: &str,
    ) -> Result<Attempt, Error> {
        let (info, wrapped) = self.row(account, id)?;
        let cek = self.content_key(account, &info, &wrapped)?;
        let files = self.vault.account_dir(account).join(FILES_DIR);
        let path = file_path(&files, id);
        let mut file = crate::disk::open_read_private(&path)?;
        let mut ends = read_ends(&mut file, &path)?;
        if !matches!(ends.2.header.binding, Binding::Document { .. }) {
            // Made before files named their document: re-encrypted to version 2 first.
            drop(file);
            self.rebind(account, &info, &cek, &path)?;
            file = crate::disk::open_read_private(&path)?;
            ends = read_ends(&mut file, &path)?;
        }
        let (header_bytes, manifest_bytes, manifest) = ends;
        let body = Zeroizing::new(
            serde_json::to_vec(&AttachmentUpload {
                collection: collection.to_owned(),
                doc_id: doc_id.to_owned(),
                header: b64(&header_bytes),
                manifest: b64(&manifest_bytes),
                cek: b64(cek.expose_secret()),
            })
            .expect("strings serialize"),
        );
        let target = format!("/v1/attachments/{id}");
        let mut state = match self.upload_metadata(account, channel, &target, &body)? {
            Ok(state) => state,
            Err(attempt) => return Ok(attempt),
        };
        let chunk_span = (manifest.header.chunk_size() + TAG_LEN) as u64;
        let mut buf = vec![0u8; manifest.header.chunk_size() + TAG_LEN];
        while !state.complete {
            if state.missing.is_empty() {
                return Err(Error::MalformedAnswer("an incomplete attachment with no chunk missing".into()));
            }
            for n in std::mem::take(&mut state.missing) {
                if n >= manifest.count {
                    return Err(Error::MalformedAnswer(format!("the server asks for chunk {n} of {}", manifest.count)));
                }
                let len = manifest.chunk_len(n);
                let at = header_bytes.len() as u64 + n * chunk_span;
                file.seek(SeekFrom::Start(at))
                    .and_then(|_| file.read_exact(&mut buf[..len]))
                    .map_err(io_err("read", &path))?;
                let resp = self.request(account, channel, Method::Put, &format!("{target}/chunks/{n}"), &buf[..len])?;
                if resp.status != 200 {
                    return Err(refused(&resp));
                }
                let receipt: ChunkReceipt = serde_json::from_slice(&resp.body)
                    .map_err(|_| Error::MalformedAnswer("a chunk receipt is not one".into()))?;
                state.complete = receipt.complete;
            }
            if !state.complete {
                state = match self.upload_metadata(account, channel, &target, &body)? {
                    Ok(state) => state,
                    Err(attempt) => return Ok(attempt),
                };
            }
        }
        Ok(Attempt::Done)
    }

    /// `PUT /v1/attachments/{id}`: the server's state of the upload, or how it ended.
    fn upload_metadata(
        &mut self,
        account: &AccountName,
        channel: &mut Channel,
        target: &str,
        body: &[u8],
    ) -> Result<Result<AttachmentInfo, Attempt>, Error> {
        let resp = self.request(account, channel, Method::Put, target, body)?;
        match resp.status {
            200 => serde_json::from_slice(&resp.body)
                .map(Ok)
                .map_err(|_| Error::MalformedAnswer("an attachment's metadata answer is not one".into())),
            403 => Ok(Err(Attempt::Refused("forbidden: the user may not write the document".into()))),
            409 => Ok(Err(Attempt::Refused("the attachment id is taken on the server".into()))),
            _ => Err(refused(&resp)),
        }
    }

    /// Re-encrypts a version-1 file (bound to this device's account name) to version 2
    /// (bound to its document), under the same content key with a fresh salt and nonce
    /// prefix, replacing it atomically.
    fn rebind(
        &mut self,
        account: &AccountName,
        info: &crate::Attachment,
        cek: &ContentKey,
        path: &Path,
    ) -> Result<(), Error> {
        let id_bytes = parse_attachment_id(&info.id).map_err(|_| Error::NoSuchAttachment(info.id.clone()))?;
        let src = crate::disk::open_read_private(path)?;
        let (mut tmp, out) = TempFile::create(path)?;
        let header = Header {
            algorithm: Algorithm::Aes256Gcm,
            chunk_log2: DEFAULT_CHUNK_LOG2,
            attachment: id_bytes,
            binding: Binding::Document { collection: info.collection.clone(), id: info.document.clone() },
            salt: random(),
            nonce_prefix: random(),
        };
        let owner = Owner { account, collection: &info.collection, doc_id: &info.document };
        let (out, _) = reencrypt(src, cek, &id_bytes, &owner, header, out)
            .map_err(|source| Error::Attachment { id: info.id.clone(), source })?;
        out.sync_all().map_err(io_err("fsync", &tmp.path))?;
        drop(out);
        self.vault.disk.rename(&tmp.path, path)?;
        tmp.keep = true;
        Ok(())
    }

    /// Fetches an announced attachment's metadata and keeps its content key, wrapped under
    /// this device's files key, once the key verifies the manifest.
    fn key_announced(&mut self, account: &AccountName, channel: &mut Channel, id: &str) -> Result<Attempt, Error> {
        let Some(known) = self.announced(account, id)? else { return Ok(Attempt::Later("gone".into())) };
        let (meta, header, manifest) = match self.fetch_metadata(account, channel, id, &known)? {
            Ok(m) => m,
            Err(attempt) => return Ok(attempt),
        };
        let cek_bytes = Zeroizing::new(unb64("cek", &meta.cek)?);
        let cek_arr: Zeroizing<[u8; 32]> = Zeroizing::new(
            cek_bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::MalformedAnswer("attachment metadata: the content key is not 32 bytes".into()))?,
        );
        let cek = ContentKey::from_bytes(cek_arr);
        let id_bytes = parse_attachment_id(id).map_err(|_| Error::NoSuchAttachment(id.to_owned()))?;
        let owner = Owner { account, collection: &known.collection, doc_id: &known.document };
        let checked = verify_manifest(&header, &manifest, &cek, &id_bytes, &owner)
            .map_err(|source| Error::Attachment { id: id.to_owned(), source })?;
        let (wrapped, version) = self.wrap_content_key(account, &id_bytes, &cek)?;
        let db = self.documents(account)?.db;
        let path = db.path.clone();
        let tx = db.conn.transaction().map_err(db_err(&path))?;
        // Still announced (a pull in between may have removed it): recorded with its key.
        let still: Option<i64> = tx
            .query_row("SELECT 1 FROM attachment_remote WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(db_err(&path))?;
        if still.is_some() {
            tx.execute(
                "INSERT INTO attachments (id, collection, doc_id, size, wrapped_cek, key_version, root, created_at, present)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
                params![
                    id,
                    known.collection,
                    known.document,
                    checked.length as i64,
                    wrapped.to_bytes().to_vec(),
                    version,
                    checked.root.to_vec(),
                    engine::now_ms()
                ],
            )
            .map_err(db_err(&path))?;
            tx.execute("DELETE FROM attachment_remote WHERE id = ?1", [id]).map_err(db_err(&path))?;
        }
        tx.commit().map_err(db_err(&path))?;
        Ok(Attempt::Done)
    }

    /// `GET /v1/attachments/{id}`, checked to be the attachment of the document it is
    /// listed under: the metadata, the header and the manifest bytes.
    #[allow(clippy::type_complexity)]
    fn fetch_metadata(
        &mut self,
        account: &AccountName,
        channel: &mut Channel,
        id: &str,
        known: &crate::Attachment,
    ) -> Result<Result<(AttachmentInfo, Vec<u8>, Vec<u8>), Attempt>, Error> {
        let resp = self.request(account, channel, Method::Get, &format!("/v1/attachments/{id}"), &[])?;
        match resp.status {
            200 => {}
            409 => return Ok(Err(Attempt::Later("not uploaded yet".into()))),
            403 => return Ok(Err(Attempt::Later("not readable now".into()))),
            _ => return Err(refused(&resp)),
        }
        let meta: AttachmentInfo = serde_json::from_slice(&resp.body)
            .map_err(|_| Error::MalformedAnswer("an attachment's metadata answer is not one".into()))?;
        if meta.id != id || meta.collection != known.collection || meta.doc_id != known.document {
            return Err(Error::MalformedAnswer(format!("the server's metadata for attachment {id} names another")));
        }
        let header = unb64("header", &meta.header)?;
        let manifest = unb64("manifest", &meta.manifest)?;
        Ok(Ok((meta, header, manifest)))
    }

    /// Downloads attachment `id` (its key is here, its bytes are not): see the module.
    fn download(
        &mut self,
        account: &AccountName,
        channel: &mut Channel,
        id: &str,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Attempt, Error> {
        let (info, wrapped) = self.row(account, id)?;
        if info.downloaded {
            return Ok(Attempt::Done);
        }
        let cek = self.content_key(account, &info, &wrapped)?;
        let (meta, header, manifest_bytes) = match self.fetch_metadata(account, channel, id, &info)? {
            Ok(m) => m,
            Err(attempt) => return Ok(attempt),
        };
        if !meta.complete {
            return Ok(Attempt::Later("not uploaded yet".into()));
        }
        let id_bytes = parse_attachment_id(id).map_err(|_| Error::NoSuchAttachment(id.to_owned()))?;
        let fail = |source| Error::Attachment { id: id.to_owned(), source };
        let owner = Owner { account, collection: &info.collection, doc_id: &info.document };
        let manifest = verify_manifest(&header, &manifest_bytes, &cek, &id_bytes, &owner).map_err(fail)?;
        let files = self.vault.account_dir(account).join(FILES_DIR);
        if !files.exists() {
            self.vault.disk.create_dir(&files)?;
        }
        let total =
            header.len() as u64 + manifest.length + TAG_LEN as u64 * manifest.count + manifest_bytes.len() as u64;
        self.vault.disk.ensure_free_space(&files, total + (1 << 20))?;
        let target = file_path(&files, id);
        let (mut tmp, mut out) = TempFile::create(&target)?;
        out.write_all(&header).map_err(io_err("write", &tmp.path))?;
        let mut done = header.len() as u64;
        for n in 0..manifest.count {
            let resp = self.request(account, channel, Method::Get, &format!("/v1/attachments/{id}/chunks/{n}"), &[])?;
            if resp.status != 200 {
                return Err(refused(&resp));
            }
            if !manifest.chunk_matches(n, &resp.body) {
                return Err(fail(fieldvault_core::Error::AttachmentChunk {
                    index: n,
                    reason: "the server sent a chunk that does not match the manifest",
                }));
            }
            out.write_all(&resp.body).map_err(io_err("write", &tmp.path))?;
            done += resp.body.len() as u64;
            progress(done, total);
        }
        out.write_all(&manifest_bytes).map_err(io_err("write", &tmp.path))?;
        out.sync_all().map_err(io_err("fsync", &tmp.path))?;
        drop(out);
        // Every tag, before the file counts as here.
        let file = crate::disk::open_read_private(&tmp.path)?;
        Decryptor::open(file, &cek, &id_bytes, &owner).and_then(|d| d.decrypt_to(std::io::sink())).map_err(fail)?;
        self.vault.disk.rename(&tmp.path, &target)?;
        tmp.keep = true;
        let db = self.documents(account)?.db;
        db.conn.execute("UPDATE attachments SET present = 1 WHERE id = ?1", [id]).map_err(db_err(&db.path))?;
        Ok(Attempt::Done)
    }

    /// Makes a sync download `collection`'s attachments as soon as their keys arrive
    /// (`true`), or only when [`Unlocked::attachment_get`] asks (`false`, the default).
    ///
    /// # Errors
    /// [`Error::InvalidDocument`] for a bad collection name; database errors.
    pub fn set_prefetch(&mut self, account: &AccountName, collection: &str, on: bool) -> Result<(), Error> {
        fieldvault_core::names::check_collection(collection)
            .map_err(|e| Error::InvalidDocument(format!("collection: {e}")))?;
        let db = self.documents(account)?.db;
        let sql = if on {
            "INSERT OR IGNORE INTO attachment_prefetch (collection) VALUES (?1)"
        } else {
            "DELETE FROM attachment_prefetch WHERE collection = ?1"
        };
        db.conn.execute(sql, [collection]).map(|_| ()).map_err(db_err(&db.path))
    }

    /// Makes sure attachment `id`'s bytes are here: its key fetched and its bytes downloaded
    /// if another device made it. Used by [`Unlocked::attachment_get`].
    pub(crate) fn fetch_attachment(
        &mut self,
        account: &AccountName,
        id: &str,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), Error> {
        let info = self.attachment(account, id)?;
        if info.downloaded {
            return Ok(());
        }
        let mut channel = {
            let db = self.documents(account)?.db;
            super::channel::open_channel(&db.conn, &db.path, account)?
        };
        if info.key_version == 0 && info.root.is_empty() {
            match self.key_announced(account, &mut channel, id)? {
                Attempt::Done => {}
                Attempt::Later(why) | Attempt::Refused(why) => {
                    return Err(Error::AttachmentNotReady { id: id.to_owned(), reason: why });
                }
            }
        }
        match self.download(account, &mut channel, id, progress)? {
            Attempt::Done => Ok(()),
            Attempt::Later(why) | Attempt::Refused(why) => {
                Err(Error::AttachmentNotReady { id: id.to_owned(), reason: why })
            }
        }
    }
}
