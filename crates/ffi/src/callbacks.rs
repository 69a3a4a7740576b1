//! What the app implements in its own language.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use fieldvault_keystore::{HostKeystore, HostKeystoreError};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// What an app's keystore answers instead of a secret.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
pub enum KeystoreError {
    /// The user cancelled the prompt (biometric or device credential).
    Cancelled,
    /// No entry of that name.
    NotFound,
    /// The keystore failed; `reason` must name no secret.
    Failed {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for KeystoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeystoreError::Cancelled => f.write_str("the keystore prompt was cancelled"),
            KeystoreError::NotFound => f.write_str("no such keystore entry"),
            KeystoreError::Failed { reason } => write!(f, "the keystore failed: {reason}"),
        }
    }
}

impl std::error::Error for KeystoreError {}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeystoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        KeystoreError::Failed { reason: format!("the app's keystore raised an unexpected error: {}", e.reason) }
    }
}

/// The app's keystore (Android Keystore, iOS Keychain), holding one random 32-byte secret
/// per vault under `entry`.
///
/// # Security
/// `load` must show the OS user-presence prompt (biometric or device credential) before it
/// returns the secret, and raise `Cancelled` when the user cancels it (docs/sdk.md,
/// section 4). The secret crosses into the app's memory as bytes: keep it no longer than
/// the call.
#[uniffi::export(foreign)]
pub trait Keystore: Send + Sync {
    /// Keeps `secret` under `entry`, replacing any earlier one.
    fn store(&self, entry: String, secret: Vec<u8>) -> Result<(), KeystoreError>;
    /// Gives the secret under `entry` back after the user-presence prompt.
    fn load(&self, entry: String) -> Result<Vec<u8>, KeystoreError>;
    /// Removes `entry`; absent is fine.
    fn delete(&self, entry: String) -> Result<(), KeystoreError>;
}

/// How long a keystore call may take (the user reading a prompt), in seconds.
static KEYSTORE_TIMEOUT_SECS: AtomicU64 = AtomicU64::new(120);

/// Sets how long the SDK waits for the app's keystore to answer (default 120 s, at least 1).
/// A call that has not answered by then is taken as a cancelled prompt (`Cancelled`); the
/// call itself is left to finish on its own thread, and its answer is dropped.
#[uniffi::export]
pub fn set_keystore_timeout_secs(secs: u64) {
    KEYSTORE_TIMEOUT_SECS.store(secs.max(1), Ordering::Relaxed);
}

/// The app's keystore as the SDK's `HostKeystore`.
pub(crate) struct Foreign(pub(crate) Arc<dyn Keystore>);

impl Foreign {
    /// Runs one keystore call on its own thread and waits for it within the timeout: a
    /// prompt that never returns must not hang the unlock forever.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Keystore) -> Result<T, KeystoreError> + Send + 'static,
    ) -> Result<T, HostKeystoreError> {
        let keystore = Arc::clone(&self.0);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fieldvault-keystore".into())
            .spawn(move || {
                let _ = tx.send(f(keystore.as_ref()));
            })
            .map_err(|e| HostKeystoreError::Failed(format!("cannot start the keystore call: {e}")))?;
        let timeout = Duration::from_secs(KEYSTORE_TIMEOUT_SECS.load(Ordering::Relaxed));
        match rx.recv_timeout(timeout) {
            Ok(answer) => {
                // Wait for the thread to leave the app's runtime (Python's thread state, the
                // JVM's attachment): a process that exits while it is still leaving aborts.
                let _ = thread.join();
                answer.map_err(host_error)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(HostKeystoreError::Cancelled),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(HostKeystoreError::Failed("the app's keystore call ended without an answer".into()))
            }
        }
    }
}

fn host_error(e: KeystoreError) -> HostKeystoreError {
    match e {
        KeystoreError::Cancelled => HostKeystoreError::Cancelled,
        KeystoreError::NotFound => HostKeystoreError::NotFound,
        KeystoreError::Failed { reason } => HostKeystoreError::Failed(reason),
    }
}

impl HostKeystore for Foreign {
    fn store(&self, entry: &str, secret: &[u8]) -> Result<(), HostKeystoreError> {
        let (entry, secret) = (entry.to_owned(), Zeroizing::new(secret.to_vec()));
        self.call(move |k| k.store(entry, secret.to_vec()))
    }

    fn load(&self, entry: &str) -> Result<Zeroizing<Vec<u8>>, HostKeystoreError> {
        let entry = entry.to_owned();
        self.call(move |k| k.load(entry).map(Zeroizing::new))
    }

    fn delete(&self, entry: &str) -> Result<(), HostKeystoreError> {
        let entry = entry.to_owned();
        self.call(move |k| k.delete(entry))
    }
}

/// A merge callback that could not merge.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
pub enum MergeError {
    /// The app could not merge these two versions.
    Failed {
        /// Why (never document content).
        reason: String,
    },
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let MergeError::Failed { reason } = self;
        write!(f, "the merge failed: {reason}")
    }
}

impl std::error::Error for MergeError {}

impl From<uniffi::UnexpectedUniFFICallbackError> for MergeError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        MergeError::Failed { reason: format!("the merge callback raised an unexpected error: {}", e.reason) }
    }
}

/// Merges two versions of a document edited on two devices (JSON objects as text); returns
/// the merged object as JSON text. Called on the sync's thread, during `sync`.
///
/// A merge that raises, or returns text that is not a JSON object, loses nothing: this
/// device's version is kept and sent, the server's stays in `conflicts()` to resolve, and the
/// failure is counted in `SyncResult.merge_failures`.
#[uniffi::export(foreign)]
pub trait ConflictMerger: Send + Sync {
    /// The merged document.
    fn merge(&self, local_json: String, server_json: String) -> Result<String, MergeError>;
}

/// A progress listener that failed: the transfer goes on, and the listener is not called
/// again during it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
pub enum ProgressError {
    /// The listener raised.
    Failed {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for ProgressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ProgressError::Failed { reason } = self;
        write!(f, "the progress listener failed: {reason}")
    }
}

impl std::error::Error for ProgressError {}

impl From<uniffi::UnexpectedUniFFICallbackError> for ProgressError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        ProgressError::Failed { reason: e.reason }
    }
}

/// Told how far a transfer has come (`done` of `total` bytes), from the SDK's thread. A
/// listener that raises is not called again for that transfer, which goes on.
#[uniffi::export(foreign)]
pub trait ProgressListener: Send + Sync {
    /// Progress so far.
    fn progress(&self, done: u64, total: u64) -> Result<(), ProgressError>;
}

/// The SDK's progress closure over an optional app listener: a listener that fails is
/// dropped for the rest of the transfer.
pub(crate) fn reporter(listener: Option<Arc<dyn ProgressListener>>) -> impl FnMut(u64, u64) + Send {
    let mut listener = listener;
    move |done, total| {
        if let Some(l) = &listener
            && l.progress(done, total).is_err()
        {
            listener = None;
        }
    }
}

thread_local! {
    /// The merger of the sync running on this thread, and the merges that failed. The SDK's
    /// merge hook is a plain `fn` (no state), so the foreign merger reaches it through the
    /// thread the sync runs on, which is its own.
    static MERGER: RefCell<(Option<Arc<dyn ConflictMerger>>, u32)> = const { RefCell::new((None, 0)) };
}

/// Runs `f` with `merger` as this thread's merger; returns what `f` returns and the count of
/// failed merges.
pub(crate) fn with_merger<T>(merger: Option<Arc<dyn ConflictMerger>>, f: impl FnOnce() -> T) -> (T, u32) {
    MERGER.with(|m| *m.borrow_mut() = (merger, 0));
    let out = f();
    let failures = MERGER.with(|m| std::mem::take(&mut *m.borrow_mut()).1);
    (out, failures)
}

/// The SDK's `MergeFn`: asks this thread's foreign merger.
pub(crate) fn foreign_merge(local: &Map<String, Value>, server: &Map<String, Value>) -> Map<String, Value> {
    let merger = MERGER.with(|m| m.borrow().0.clone());
    let merged = merger.and_then(|m| {
        let text = m.merge(Value::Object(local.clone()).to_string(), Value::Object(server.clone()).to_string()).ok()?;
        match serde_json::from_str::<Value>(&text).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    });
    merged.unwrap_or_else(|| {
        MERGER.with(|m| m.borrow_mut().1 += 1);
        local.clone()
    })
}
