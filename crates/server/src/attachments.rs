//! Attachments on the server (signed; ADR 0008): resumable upload and download of the
//! encrypted chunks, each checked against the manifest, stored as ciphertext, and the content
//! key (CEK) passed from the uploader to every reader of the owning document. The server checks
//! the header and manifest (structure, counts, root) when the metadata arrives and each chunk's
//! length and BLAKE3 hash when it arrives. It keeps the CEK sealed ([`Purpose::AttachmentCek`],
//! bound to the attachment id) and opens it only to answer a reader.
//!
//! Access follows the owning document, judged at each request: uploading needs the right to
//! write it and the id on its attachment list; everything else needs the right to read it now,
//! and the id still on its list. A user who may not, and an id that does not exist, get the
//! same answer: 403 `forbidden`.
//!
//! ```text
//! PUT /v1/attachments/{id}              {collection, doc_id, header, manifest, cek} (base64)
//! GET /v1/attachments/{id}              metadata with the CEK, chunks received, the first missing
//! PUT /v1/attachments/{id}/chunks/{n}   chunk n: ciphertext || tag, raw bytes
//! GET /v1/attachments/{id}/chunks/{n}   chunk n, once every chunk has arrived
//! ```

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_core::attachment::{Binding, Manifest, TAG_LEN};
use fieldvault_core::protocol::ProblemCode;
use fieldvault_core::protocol::attachments::{
    AttachmentInfo, AttachmentUpload, ChunkReceipt, MAX_MISSING_LISTED, parse_attachment_id,
};
use fieldvault_core::protocol::sync::{StoredDoc, check_collection, check_id};
use fieldvault_core::rules::RuleUser;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::app::{App, JsonBody};
use crate::problem::ApiError;
use crate::seal::Purpose;
use crate::signed::SignedSession;
use crate::storage::{AttachmentRecord, StoreError};

/// A CEK is an AES-256 key (docs/formats/attachment.md).
const CEK_LEN: usize = 32;

fn attachment_id(id: &str) -> Result<[u8; 16], ApiError> {
    parse_attachment_id(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn chunk_index(text: &str) -> Result<u64, ApiError> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request("a chunk index is decimal digits"));
    }
    text.parse().map_err(|_| ApiError::bad_request("a chunk index is decimal digits"))
}

fn b64(what: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    STANDARD.decode(text).map_err(|_| ApiError::bad_request(format!("{what} is not standard base64")))
}

/// The CEK as sent: exactly 32 bytes of standard base64 (the message never quotes it).
fn cek_bytes(text: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let bad = || ApiError::bad_request(format!("cek is {CEK_LEN} bytes in standard base64"));
    let bytes = Zeroizing::new(STANDARD.decode(text).map_err(|_| bad())?);
    if bytes.len() == CEK_LEN { Ok(bytes) } else { Err(bad()) }
}

/// The answer to an upload the user may not make: the document is not theirs to write, does
/// not exist, or does not list the attachment.
fn may_not_attach() -> ApiError {
    ApiError::new(ProblemCode::Forbidden, "you may not attach this file to this document")
}

/// The one answer for an id the user may not see and for an id that does not exist.
fn not_visible() -> ApiError {
    ApiError::new(ProblemCode::Forbidden, "no attachment with this id is open to you")
}

/// A reader asked for an attachment its document lists before its metadata or chunks arrived.
fn not_uploaded_yet() -> ApiError {
    ApiError::conflict("this attachment is not uploaded yet; ask again later")
}

/// The user as rules see them, read now (roles may have changed since the token).
async fn rule_user(app: &App, name: &str) -> Result<RuleUser, ApiError> {
    let user = app.store.user(name).await?.ok_or_else(|| ApiError::invalid_token("the user no longer exists"))?;
    Ok(RuleUser { id: user.name, roles: user.roles, attributes: user.attributes })
}

/// Whether `user` may read `doc` now: live, in a collection that syncs, the read rule holds.
fn readable(app: &App, user: &RuleUser, collection: &str, doc: &StoredDoc) -> bool {
    !doc.deleted && app.rules.syncs(collection) && app.rules.can_read(user, collection, &doc.body)
}

/// Whether `doc` lists attachment `id` (the list is sorted).
fn lists(doc: &StoredDoc, id: &str) -> bool {
    doc.attachments.binary_search_by(|a| a.as_str().cmp(id)).is_ok()
}

/// The owning document if `user` may read it (None otherwise, or if it is gone).
async fn readable_document(
    app: &App,
    user: &RuleUser,
    collection: &str,
    id: &str,
) -> Result<Option<StoredDoc>, ApiError> {
    let doc = app.store.document(collection, id).await?;
    Ok(doc.filter(|d| readable(app, user, collection, d)))
}

/// An uploaded attachment as a user may see it: its metadata, the indices of the chunks
/// received, and its document, which the user may read now and which lists it.
type Visible = (AttachmentRecord, Vec<u64>, StoredDoc);

/// Looks an id up for `user`. An id that a document the user may read lists, and whose
/// metadata has not arrived yet, is [`not_uploaded_yet`] (409: ask again later). Every other
/// case (no such id, a document the user may not read now, an id its document no longer
/// lists) is [`not_visible`], one answer for all.
async fn find(app: &App, user: &RuleUser, id: &str) -> Result<Visible, ApiError> {
    if let Some((record, received)) = app.store.attachment(id).await? {
        let doc = readable_document(app, user, &record.collection, &record.doc_id)
            .await?
            .filter(|d| lists(d, id))
            .ok_or_else(not_visible)?;
        return Ok((record, received, doc));
    }
    let listing = app.store.documents_listing(id).await?;
    if listing.iter().any(|(collection, _, doc)| lists(doc, id) && readable(app, user, collection, doc)) {
        Err(not_uploaded_yet())
    } else {
        Err(not_visible())
    }
}

/// The stored CEK, opened. One that does not open (another store key, changed or moved bytes)
/// or is not 32 bytes is a storage error: never a wrong key handed out.
fn open_cek(app: &App, record: &AttachmentRecord) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let cek = app
        .sealer
        .open(Purpose::AttachmentCek, &record.id, &record.cek_sealed)
        .map_err(|e| StoreError::corrupt("attachments.cek_sealed", e))?;
    if cek.len() != CEK_LEN {
        return Err(StoreError::corrupt("attachments.cek_sealed", "not a 32-byte key").into());
    }
    Ok(cek)
}

fn info(record: &AttachmentRecord, received: &[u64], cek: &[u8]) -> AttachmentInfo {
    let mut have = received.iter().copied().peekable();
    let mut missing = Vec::new();
    for i in 0..record.chunk_count {
        if have.peek() == Some(&i) {
            have.next();
        } else if missing.len() < MAX_MISSING_LISTED {
            missing.push(i);
        } else {
            break;
        }
    }
    AttachmentInfo {
        id: record.id.clone(),
        collection: record.collection.clone(),
        doc_id: record.doc_id.clone(),
        length: record.length,
        chunk_count: record.chunk_count,
        received: received.len() as u64,
        missing,
        complete: record.complete,
        header: STANDARD.encode(&record.header),
        manifest: STANDARD.encode(&record.manifest),
        cek: STANDARD.encode(cek),
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Start (or resume) an upload: the metadata, checked against the header and manifest, with
/// the CEK for the document's readers. The id must be on the document's attachment list.
#[utoipa::path(put, path = "/v1/attachments/{id}", tag = "attachments",
    params(("id" = String, Path, description = "32 lowercase hex digits"),
        ("Authorization" = String, Header), ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header),
        ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    request_body = AttachmentUpload,
    responses((status = 200, body = AttachmentInfo), (status = 400), (status = 401),
        (status = 403, description = "the document is not the user's to write, does not exist, or does not list the id"),
        (status = 409, description = "the id is taken by another attachment")))]
pub async fn put_metadata(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AttachmentUpload>,
) -> Result<Response, ApiError> {
    let id_bytes = attachment_id(&id)?;
    check_collection(&req.collection).map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_id(&req.doc_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let header_bytes = b64("header", &req.header)?;
    let manifest_bytes = b64("manifest", &req.manifest)?;
    let cek = cek_bytes(&req.cek)?;
    let manifest = Manifest::parse(&header_bytes, &manifest_bytes)
        .map_err(|e| ApiError::bad_request(format!("the header and manifest do not check out: {e}")))?;
    if manifest.header.attachment != id_bytes {
        return Err(ApiError::bad_request("the header names another attachment id"));
    }
    if manifest.header.chunk_size() + TAG_LEN > app.config.body_limit {
        return Err(ApiError::bad_request(format!(
            "chunks of {} bytes do not fit in one request (at most {} bytes)",
            manifest.header.chunk_size(),
            app.config.body_limit
        )));
    }
    let user = rule_user(&app, &signed.session.user).await?;
    let doc = readable_document(&app, &user, &req.collection, &req.doc_id).await?.ok_or_else(may_not_attach)?;
    if !app.rules.can_write(&user, &req.collection, Some(&doc.body), Some(&doc.body)) || !lists(&doc, &id) {
        return Err(may_not_attach());
    }
    // Format version 2 only (ADR 0008): the file must name the document it is uploaded for,
    // so no one can present it as another document's; a version-1 file names a device's
    // account, which means nothing to any other device.
    match &manifest.header.binding {
        Binding::Document { collection, id } if *collection == req.collection && *id == req.doc_id => {}
        Binding::Document { .. } => {
            return Err(ApiError::bad_request("the header names another document than collection and doc_id"));
        }
        Binding::Account(_) => {
            return Err(ApiError::bad_request(
                "attachments travel in format version 2, whose header names their document",
            ));
        }
    }
    let record = AttachmentRecord {
        id: id.clone(),
        user: user.id.clone(),
        collection: req.collection,
        doc_id: req.doc_id,
        header: header_bytes,
        manifest: manifest_bytes,
        cek_sealed: app.sealer.seal(Purpose::AttachmentCek, &id, &cek),
        chunk_count: manifest.count,
        length: manifest.length,
        complete: false,
        created_at: app.now(),
    };
    // Checked again in the insert's transaction: deleted or changed since (its list with it),
    // it is forbidden.
    let stored = app.store.create_attachment(&record, doc.version).await?.ok_or_else(may_not_attach)?;
    let stored_cek = open_cek(&app, &stored)?;
    let same = (&stored.user, &stored.collection, &stored.doc_id, &stored.header, &stored.manifest)
        == (&record.user, &record.collection, &record.doc_id, &record.header, &record.manifest)
        && bool::from(stored_cek.as_slice().ct_eq(cek.as_slice()));
    if !same {
        return Err(ApiError::conflict("this attachment id is taken by another upload; make a new id"));
    }
    // Gone since (a push took it off the list): the same answer as any id not open to the user.
    let (stored, received) = app.store.attachment(&id).await?.ok_or_else(not_visible)?;
    Ok(no_store(Json(info(&stored, &received, &stored_cek)).into_response()))
}

/// An attachment's metadata, with its CEK, and upload state, for readers of its document.
#[utoipa::path(get, path = "/v1/attachments/{id}", tag = "attachments",
    params(("id" = String, Path), ("Authorization" = String, Header), ("X-Key-Id" = String, Header),
        ("X-Timestamp" = String, Header), ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    responses((status = 200, body = AttachmentInfo), (status = 400), (status = 401),
        (status = 403, description = "no such id, or its document is not the user's to read (one answer)"),
        (status = 409, description = "a document the user reads lists it, and its metadata has not arrived yet")))]
pub async fn get_metadata(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    attachment_id(&id)?;
    let user = rule_user(&app, &signed.session.user).await?;
    let (record, received, _) = find(&app, &user, &id).await?;
    let cek = open_cek(&app, &record)?;
    Ok(no_store(Json(info(&record, &received, &cek)).into_response()))
}

/// Upload chunk `n`: its length and hash must be the manifest's.
#[utoipa::path(put, path = "/v1/attachments/{id}/chunks/{n}", tag = "attachments",
    params(("id" = String, Path), ("n" = u64, Path), ("Authorization" = String, Header),
        ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header), ("X-Nonce" = String, Header),
        ("X-Signature" = String, Header)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ChunkReceipt), (status = 400), (status = 401),
        (status = 403, description = "no such id, or not the uploader allowed to write its document (one answer)"),
        (status = 409, description = "its metadata has not arrived yet")))]
pub async fn put_chunk(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    Path((id, n)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ChunkReceipt>, ApiError> {
    attachment_id(&id)?;
    let n = chunk_index(&n)?;
    let user = rule_user(&app, &signed.session.user).await?;
    let (record, _, doc) = find(&app, &user, &id).await?;
    if record.user != user.id || !app.rules.can_write(&user, &record.collection, Some(&doc.body), Some(&doc.body)) {
        return Err(not_visible());
    }
    if n >= record.chunk_count {
        return Err(ApiError::bad_request(format!("the attachment has {} chunks", record.chunk_count)));
    }
    // The manifest was checked in full (root included) when the metadata arrived; here only
    // chunk n's length and hash are looked up, so an upload costs O(chunks), not O(chunks^2).
    if !Manifest::stored_chunk_matches(&record.header, &record.manifest, n, &body) {
        return Err(ApiError::bad_request(format!("chunk {n} does not match the manifest (length or hash)")));
    }
    let (received, complete) = app.store.put_chunk(&id, n, &body).await?.ok_or_else(not_visible)?;
    Ok(Json(ChunkReceipt { received, complete }))
}

/// Download chunk `n` (ciphertext and tag), once the upload is complete.
#[utoipa::path(get, path = "/v1/attachments/{id}/chunks/{n}", tag = "attachments",
    params(("id" = String, Path), ("n" = u64, Path), ("Authorization" = String, Header),
        ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header), ("X-Nonce" = String, Header),
        ("X-Signature" = String, Header)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 400), (status = 401),
        (status = 403, description = "no such id, or its document is not the user's to read (one answer)"),
        (status = 409, description = "the upload is not complete")))]
pub async fn get_chunk(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    attachment_id(&id)?;
    let n = chunk_index(&n)?;
    let user = rule_user(&app, &signed.session.user).await?;
    let (record, _, _) = find(&app, &user, &id).await?;
    if !record.complete {
        return Err(not_uploaded_yet());
    }
    if n >= record.chunk_count {
        return Err(ApiError::bad_request(format!("the attachment has {} chunks", record.chunk_count)));
    }
    // Complete means every chunk is stored; none here means it was deleted since.
    let bytes = app.store.chunk(&id, n).await?.ok_or_else(not_visible)?;
    let mut r = bytes.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(no_store(r))
}
