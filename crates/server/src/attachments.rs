//! Attachments on the server (signed): resumable upload and download of the encrypted chunks,
//! each checked against the manifest, stored as ciphertext. The server holds no key: it checks
//! the header and manifest (structure, counts, root) when the metadata arrives and each chunk's
//! length and BLAKE3 hash when it arrives. Access follows the owning document: uploading needs
//! the right to write it, reading needs the right to read it; the wrapped CEK travels only in
//! the metadata, so only to readers.
//!
//! ```text
//! PUT /v1/attachments/{id}              {collection, doc_id, header, manifest, wrapped_cek} (base64)
//! GET /v1/attachments/{id}              metadata, chunks received, the first missing ones
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
use fieldvault_core::attachment::{Manifest, TAG_LEN};
use fieldvault_core::protocol::ProblemCode;
use fieldvault_core::protocol::sync::{StoredDoc, check_collection, check_id};
use fieldvault_core::rules::RuleUser;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::{App, JsonBody};
use crate::problem::ApiError;
use crate::signed::SignedSession;
use crate::storage::AttachmentRecord;

/// Largest wrapped CEK accepted, in bytes.
const MAX_WRAPPED_CEK: usize = 1024;
/// Most missing chunk indices listed in one metadata answer.
const MAX_MISSING_LISTED: usize = 1000;

/// `PUT /v1/attachments/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentUpload {
    /// The owning document's collection.
    pub collection: String,
    /// The owning document's id.
    pub doc_id: String,
    /// The attachment header, standard base64.
    pub header: String,
    /// The manifest (trailer), standard base64.
    pub manifest: String,
    /// The CEK as the client wrapped it, standard base64 (opaque to the server).
    pub wrapped_cek: String,
}

/// An attachment's metadata and upload state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttachmentInfo {
    /// 32 lowercase hex digits.
    pub id: String,
    /// The owning document's collection.
    pub collection: String,
    /// The owning document's id.
    pub doc_id: String,
    /// Plaintext length.
    pub length: u64,
    /// Number of chunks.
    pub chunk_count: u64,
    /// Chunks the server holds.
    pub received: u64,
    /// The first missing chunk indices (at most 1000): what a resumed upload sends next.
    pub missing: Vec<u64>,
    /// Every chunk has arrived: downloads may start.
    pub complete: bool,
    /// The header, standard base64.
    pub header: String,
    /// The manifest, standard base64.
    pub manifest: String,
    /// The wrapped CEK, standard base64.
    pub wrapped_cek: String,
}

/// `PUT /v1/attachments/{id}/chunks/{n}` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChunkReceipt {
    /// Chunks the server holds.
    pub received: u64,
    /// Every chunk has arrived.
    pub complete: bool,
}

fn check_attachment_id(id: &str) -> Result<[u8; 16], ApiError> {
    let ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut out = [0u8; 16];
    if ok {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).map_err(|_| ApiError::not_found())?;
        }
        Ok(out)
    } else {
        Err(ApiError::bad_request("an attachment id is 32 lowercase hex digits"))
    }
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

fn forbidden() -> ApiError {
    ApiError::new(ProblemCode::Forbidden, "you may not attach files to this document")
}

/// The user as rules see them, read now (roles may have changed since the token).
async fn rule_user(app: &App, name: &str) -> Result<RuleUser, ApiError> {
    let user = app.store.user(name).await?.ok_or_else(|| ApiError::invalid_token("the user no longer exists"))?;
    Ok(RuleUser { id: user.name, roles: user.roles, attributes: user.attributes })
}

/// The owning document if `user` may read it (None otherwise, or if it is gone).
async fn readable_document(
    app: &App,
    user: &RuleUser,
    collection: &str,
    id: &str,
) -> Result<Option<StoredDoc>, ApiError> {
    let doc = app.store.document(collection, id).await?;
    Ok(doc.filter(|d| !d.deleted && app.rules.syncs(collection) && app.rules.can_read(user, collection, &d.body)))
}

/// The attachment if it exists and `user` may read its document; 404 otherwise, the same
/// answer whether it does not exist or is not the user's to see.
async fn visible(app: &App, user: &RuleUser, id: &str) -> Result<(AttachmentRecord, Vec<u64>, StoredDoc), ApiError> {
    let (record, received) = app.store.attachment(id).await?.ok_or_else(ApiError::not_found)?;
    let doc =
        readable_document(app, user, &record.collection, &record.doc_id).await?.ok_or_else(ApiError::not_found)?;
    Ok((record, received, doc))
}

fn info(record: &AttachmentRecord, received: &[u64]) -> AttachmentInfo {
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
        wrapped_cek: STANDARD.encode(&record.wrapped_cek),
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Start (or resume) an upload: the metadata, checked against the header and manifest.
#[utoipa::path(put, path = "/v1/attachments/{id}", tag = "attachments",
    params(("id" = String, Path, description = "32 lowercase hex digits"),
        ("Authorization" = String, Header), ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header),
        ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    request_body = AttachmentUpload,
    responses((status = 200, body = AttachmentInfo), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "the id is taken by another attachment")))]
pub async fn put_metadata(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AttachmentUpload>,
) -> Result<Response, ApiError> {
    let id_bytes = check_attachment_id(&id)?;
    check_collection(&req.collection).map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_id(&req.doc_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let header_bytes = b64("header", &req.header)?;
    let manifest_bytes = b64("manifest", &req.manifest)?;
    let wrapped_cek = b64("wrapped_cek", &req.wrapped_cek)?;
    if wrapped_cek.is_empty() || wrapped_cek.len() > MAX_WRAPPED_CEK {
        return Err(ApiError::bad_request(format!("wrapped_cek is 1 to {MAX_WRAPPED_CEK} bytes")));
    }
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
    let doc = readable_document(&app, &user, &req.collection, &req.doc_id).await?.ok_or_else(forbidden)?;
    if !app.rules.can_write(&user, &req.collection, Some(&doc.body), Some(&doc.body)) {
        return Err(forbidden());
    }
    let record = AttachmentRecord {
        id: id.clone(),
        user: user.id.clone(),
        collection: req.collection,
        doc_id: req.doc_id,
        header: header_bytes,
        manifest: manifest_bytes,
        wrapped_cek,
        chunk_count: manifest.count,
        length: manifest.length,
        complete: false,
        created_at: app.now(),
    };
    // Checked again in the insert's transaction: deleted or changed since, it is forbidden.
    let stored = app.store.create_attachment(&record, doc.version).await?.ok_or_else(forbidden)?;
    let same =
        (&stored.user, &stored.collection, &stored.doc_id, &stored.header, &stored.manifest, &stored.wrapped_cek)
            == (
                &record.user,
                &record.collection,
                &record.doc_id,
                &record.header,
                &record.manifest,
                &record.wrapped_cek,
            );
    if !same {
        return Err(ApiError::conflict("this attachment id is taken by another upload; make a new id"));
    }
    let (stored, received) = app.store.attachment(&id).await?.ok_or_else(ApiError::not_found)?;
    Ok(no_store(Json(info(&stored, &received)).into_response()))
}

/// An attachment's metadata (with the wrapped CEK) and upload state, for readers of its
/// document.
#[utoipa::path(get, path = "/v1/attachments/{id}", tag = "attachments",
    params(("id" = String, Path), ("Authorization" = String, Header), ("X-Key-Id" = String, Header),
        ("X-Timestamp" = String, Header), ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    responses((status = 200, body = AttachmentInfo), (status = 401), (status = 404)))]
pub async fn get_metadata(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_attachment_id(&id)?;
    let user = rule_user(&app, &signed.session.user).await?;
    let (record, received, _) = visible(&app, &user, &id).await?;
    Ok(no_store(Json(info(&record, &received)).into_response()))
}

/// Upload chunk `n`: its length and hash must be the manifest's.
#[utoipa::path(put, path = "/v1/attachments/{id}/chunks/{n}", tag = "attachments",
    params(("id" = String, Path), ("n" = u64, Path), ("Authorization" = String, Header),
        ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header), ("X-Nonce" = String, Header),
        ("X-Signature" = String, Header)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ChunkReceipt), (status = 400), (status = 401), (status = 404)))]
pub async fn put_chunk(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    Path((id, n)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ChunkReceipt>, ApiError> {
    check_attachment_id(&id)?;
    let n = chunk_index(&n)?;
    let user = rule_user(&app, &signed.session.user).await?;
    let (record, _, doc) = visible(&app, &user, &id).await?;
    if record.user != user.id || !app.rules.can_write(&user, &record.collection, Some(&doc.body), Some(&doc.body)) {
        return Err(ApiError::not_found());
    }
    if n >= record.chunk_count {
        return Err(ApiError::bad_request(format!("the attachment has {} chunks", record.chunk_count)));
    }
    // The manifest was checked in full (root included) when the metadata arrived; here only
    // chunk n's length and hash are looked up, so an upload costs O(chunks), not O(chunks^2).
    if !Manifest::stored_chunk_matches(&record.header, &record.manifest, n, &body) {
        return Err(ApiError::bad_request(format!("chunk {n} does not match the manifest (length or hash)")));
    }
    let (received, complete) = app.store.put_chunk(&id, n, &body).await?;
    Ok(Json(ChunkReceipt { received, complete }))
}

/// Download chunk `n` (ciphertext and tag), once the upload is complete.
#[utoipa::path(get, path = "/v1/attachments/{id}/chunks/{n}", tag = "attachments",
    params(("id" = String, Path), ("n" = u64, Path), ("Authorization" = String, Header),
        ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header), ("X-Nonce" = String, Header),
        ("X-Signature" = String, Header)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 401), (status = 404),
        (status = 409, description = "the upload is not complete")))]
pub async fn get_chunk(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_attachment_id(&id)?;
    let n = chunk_index(&n)?;
    let user = rule_user(&app, &signed.session.user).await?;
    let (record, _, _) = visible(&app, &user, &id).await?;
    if !record.complete {
        return Err(ApiError::conflict("the upload is not complete yet"));
    }
    let bytes = app.store.chunk(&id, n).await?.ok_or_else(ApiError::not_found)?;
    let mut r = bytes.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(no_store(r))
}
