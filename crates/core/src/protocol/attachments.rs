//! The attachment routes' bodies (docs/protocol.md, section 18) and the rules for attachment
//! ids and a document's attachment list (ADR 0008). One definition, shared by the server and
//! the device.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most attachments one document lists.
pub const MAX_ATTACHMENTS_PER_DOCUMENT: usize = 1000;
/// Most missing chunk indices listed in one metadata answer.
pub const MAX_MISSING_LISTED: usize = 1000;

/// Why an attachment id or list is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AttachmentListError(pub &'static str);

/// The 16 bytes of an attachment id written as 32 lowercase hex digits (the only form).
///
/// # Errors
/// [`AttachmentListError`] for any other text (never quoting it).
pub fn parse_attachment_id(id: &str) -> Result<[u8; 16], AttachmentListError> {
    const BAD: AttachmentListError = AttachmentListError("an attachment id is 32 lowercase hex digits");
    let b = id.as_bytes();
    if b.len() != 32 || !b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
        return Err(BAD);
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).map_err(|_| BAD)?;
    }
    Ok(out)
}

/// An attachment id as it travels: 32 lowercase hex digits.
pub fn attachment_id_text(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a document's attachment list as it travels: every id well formed, the ids in
/// strictly increasing order (so sorted and distinct: one spelling per set, which the op's
/// fingerprint relies on), at most [`MAX_ATTACHMENTS_PER_DOCUMENT`].
///
/// # Errors
/// [`AttachmentListError`] saying which rule is broken.
pub fn check_attachment_list(ids: &[String]) -> Result<(), AttachmentListError> {
    if ids.len() > MAX_ATTACHMENTS_PER_DOCUMENT {
        return Err(AttachmentListError("a document lists at most 1000 attachments"));
    }
    for id in ids {
        parse_attachment_id(id)?;
    }
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(AttachmentListError("an attachment list is sorted and has no id twice"));
    }
    Ok(())
}

/// `PUT /v1/attachments/{id}` body: start or resume an upload. `Debug` prints `[redacted]`
/// for the CEK.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The content key, 32 bytes, standard base64 (ADR 0008: the server keeps it sealed and
    /// gives it to readers of the document).
    pub cek: String,
}

/// An attachment's metadata and upload state (`GET` and `PUT /v1/attachments/{id}`). `Debug`
/// prints `[redacted]` for the CEK.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The first missing chunk indices (at most [`MAX_MISSING_LISTED`]): what a resumed
    /// upload sends next.
    pub missing: Vec<u64>,
    /// Every chunk has arrived: downloads may start.
    pub complete: bool,
    /// The header, standard base64.
    pub header: String,
    /// The manifest, standard base64.
    pub manifest: String,
    /// The content key, standard base64.
    pub cek: String,
}

/// `PUT /v1/attachments/{id}/chunks/{n}` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkReceipt {
    /// Chunks the server holds.
    pub received: u64,
    /// Every chunk has arrived.
    pub complete: bool,
}

// The CEK opens the attachment: never in a log line or a panic message.
impl fmt::Debug for AttachmentUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentUpload")
            .field("collection", &self.collection)
            .field("doc_id", &self.doc_id)
            .field("header", &self.header)
            .field("manifest", &self.manifest)
            .field("cek", &"[redacted]")
            .finish()
    }
}

impl fmt::Debug for AttachmentInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentInfo")
            .field("id", &self.id)
            .field("collection", &self.collection)
            .field("doc_id", &self.doc_id)
            .field("length", &self.length)
            .field("chunk_count", &self.chunk_count)
            .field("received", &self.received)
            .field("missing", &self.missing)
            .field("complete", &self.complete)
            .field("header", &self.header)
            .field("manifest", &self.manifest)
            .field("cek", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_lists_are_checked() {
        let a = "0".repeat(31) + "1";
        let b = "0".repeat(31) + "2";
        assert_eq!(parse_attachment_id(&a).expect("an id")[15], 1);
        assert_eq!(attachment_id_text(&parse_attachment_id(&b).expect("an id")), b);
        for bad in ["", "0", &"A".repeat(32), &"g".repeat(32), &"0".repeat(33)] {
            assert!(parse_attachment_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_attachment_list(&[]).is_ok());
        assert!(check_attachment_list(&[a.clone(), b.clone()]).is_ok());
        assert!(check_attachment_list(&[b.clone(), a.clone()]).is_err(), "unsorted");
        assert!(check_attachment_list(&[a.clone(), a.clone()]).is_err(), "twice");
        let many: Vec<String> = (0..=MAX_ATTACHMENTS_PER_DOCUMENT).map(|i| format!("{i:032x}")).collect();
        assert!(check_attachment_list(&many[..MAX_ATTACHMENTS_PER_DOCUMENT]).is_ok());
        assert!(check_attachment_list(&many).is_err(), "too many");
    }

    #[test]
    fn the_cek_stays_out_of_debug_output() {
        let cek = "c2VjcmV0IGtleSBieXRlcyBmb3IgdGhlIGF0dGFjaG0=".to_owned();
        let upload = AttachmentUpload {
            collection: "visits".into(),
            doc_id: "v1".into(),
            header: "aA==".into(),
            manifest: "bQ==".into(),
            cek: cek.clone(),
        };
        let info = AttachmentInfo {
            id: "0".repeat(32),
            collection: "visits".into(),
            doc_id: "v1".into(),
            length: 1,
            chunk_count: 1,
            received: 0,
            missing: vec![0],
            complete: false,
            header: "aA==".into(),
            manifest: "bQ==".into(),
            cek: cek.clone(),
        };
        for text in [format!("{upload:?}"), format!("{info:?}")] {
            assert!(!text.contains(&cek) && text.contains("[redacted]") && text.contains("visits"), "{text}");
        }
    }
}
