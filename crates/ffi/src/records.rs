//! The plain values the bindings pass (Kotlin data classes, Python dataclasses, Swift structs).

/// A document: its body is JSON text (an object). `Debug` leaves the body out.
#[derive(Clone, uniffi::Record)]
pub struct DocumentRecord {
    /// Its collection.
    pub collection: String,
    /// Its id.
    pub id: String,
    /// Its version (bumped by every write here or on the server).
    pub version: u64,
    /// When it was last written, Unix milliseconds.
    pub updated_at_ms: i64,
    /// The body, a JSON object as text.
    pub json: String,
}

impl std::fmt::Debug for DocumentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentRecord")
            .field("collection", &self.collection)
            .field("id", &self.id)
            .field("version", &self.version)
            .field("json", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl From<fieldvault_client::Document> for DocumentRecord {
    fn from(d: fieldvault_client::Document) -> Self {
        DocumentRecord {
            json: serde_json::Value::Object(d.body).to_string(),
            collection: d.collection,
            id: d.id,
            version: d.version,
            updated_at_ms: d.updated_at_ms,
        }
    }
}

/// One page of a listing, in id order; pass `next` as `after` for the following page.
#[derive(Debug, Clone, uniffi::Record)]
pub struct DocumentPage {
    /// The documents.
    pub documents: Vec<DocumentRecord>,
    /// The id to continue after, when there is more.
    pub next: Option<String>,
}

/// An attachment's metadata (its bytes move by file path, never across the boundary).
#[derive(Debug, Clone, uniffi::Record)]
pub struct AttachmentInfo {
    /// Its id.
    pub id: String,
    /// The document it belongs to.
    pub collection: String,
    /// The document's id.
    pub document: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Whether its bytes are on this device.
    pub downloaded: bool,
    /// Whether a sync still has to upload it.
    pub upload_pending: bool,
}

impl From<fieldvault_client::Attachment> for AttachmentInfo {
    fn from(a: fieldvault_client::Attachment) -> Self {
        AttachmentInfo {
            id: a.id,
            collection: a.collection,
            document: a.document,
            size: a.size,
            downloaded: a.downloaded,
            upload_pending: a.upload_pending,
        }
    }
}

/// What a login did.
#[derive(Debug, Clone, uniffi::Record)]
pub struct LoginResult {
    /// The user the server logged in.
    pub user: String,
    /// This device's id on the server.
    pub device_id: String,
    /// Whether an earlier device of this vault was continued.
    pub continued: bool,
    /// When the offline lease ends, Unix seconds.
    pub lease_expires_at: u64,
}

/// What a sync did.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncResult {
    /// Local changes the server accepted.
    pub pushed: u64,
    /// Changes from the server applied here.
    pub pulled: u64,
    /// Conflicts met (see `conflicts()`).
    pub conflicts: u64,
    /// Local changes the server refused for good.
    pub rejected: u64,
    /// Merges the app's merger could not do (this device's version was kept).
    pub merge_failures: u32,
}

/// A change waiting for the server.
#[derive(Debug, Clone, uniffi::Record)]
pub struct OutboxItem {
    /// Its collection.
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// `put` or `delete`.
    pub op: String,
    /// Failed attempts so far.
    pub attempts: u64,
}

/// A conflict kept for the app to settle. `Debug` leaves the set-aside body out.
#[derive(Clone, uniffi::Record)]
pub struct ConflictInfo {
    /// Its collection.
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// The version set aside (JSON text), or none when it was a delete.
    pub local_json: Option<String>,
    /// The server's version number that won.
    pub server_version: u64,
}

impl std::fmt::Debug for ConflictInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConflictInfo")
            .field("collection", &self.collection)
            .field("id", &self.id)
            .field("local_json", &self.local_json.as_ref().map(|_| "[redacted]"))
            .field("server_version", &self.server_version)
            .finish()
    }
}

/// Who this device is signed in as (offline: from the last token).
#[derive(Debug, Clone, uniffi::Record)]
pub struct Identity {
    /// The user.
    pub user: String,
    /// Their roles.
    pub roles: Vec<String>,
    /// This device's id.
    pub device_id: String,
    /// When the offline authorization ends, Unix seconds.
    pub expires_at: u64,
}

/// The account's state, for a status screen.
#[derive(Debug, Clone, uniffi::Record)]
pub struct VaultStatus {
    /// Whether the vault is locked (a locked vault reports nothing else).
    pub locked: bool,
    /// The sync server, once logged in.
    pub server: Option<String>,
    /// The user, once logged in.
    pub user: Option<String>,
    /// Changes waiting for the server.
    pub outbox: u64,
    /// Conflicts waiting for the app.
    pub conflicts: u64,
    /// The last successful sync, Unix milliseconds.
    pub last_sync_ms: Option<i64>,
    /// When the offline lease ends, Unix seconds.
    pub lease_expires_at: Option<u64>,
}
