//! The vault object the bindings hand to the app.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fieldvault_client::{ConflictPolicy, Keep, LoginOptions, Session, Unlocked};
use fieldvault_core::{AccountName, Passphrase};
use fieldvault_keystore::{HostStore, KeyStore, PassphraseStore};
use zeroize::Zeroizing;

use crate::blocking;
use crate::callbacks::{ConflictMerger, Foreign, Keystore, ProgressListener, foreign_merge, reporter, with_merger};
use crate::error::FieldvaultError;
use crate::records::{
    AttachmentInfo, ConflictInfo, DocumentPage, DocumentRecord, Identity, LoginResult, OutboxItem, SyncResult,
    VaultStatus,
};

enum State {
    /// Unlocked, until the session's idle lock or `lock()`.
    Open(Arc<Session>),
    /// No key in memory; `unlock` again.
    Locked,
    /// Closed for good: every call is `Closed`.
    Closed,
}

/// One account of a vault directory, as an app uses it.
///
/// Lifecycle: `init` (a new vault, unlocked) or `open` (locked) then `unlock`; use; `lock`
/// (keys zeroized, `unlock` again) or after `idle_lock_secs` without a call the vault locks
/// itself; `close` when done (keys zeroized; every later call is `Closed`). Thread-safe: calls
/// from several threads take turns.
#[derive(uniffi::Object)]
pub struct Vault {
    dir: PathBuf,
    account: AccountName,
    idle: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("locked", &self.is_locked()).finish_non_exhaustive()
    }
}

impl Drop for Vault {
    /// The keys go with the object even when the app never called `close` (Kotlin's
    /// `use {}` and `close()` free the object, Python's garbage collector drops it).
    fn drop(&mut self) {
        self.close();
    }
}

fn passphrase_store(passphrase: String) -> PassphraseStore {
    PassphraseStore::new(Passphrase::new(Zeroizing::new(passphrase)))
}

fn host_store(keystore: Arc<dyn Keystore>) -> HostStore<Foreign> {
    HostStore::new(Foreign(keystore))
}

fn idle(secs: u64) -> Duration {
    // Zero would lock before the first call could run.
    Duration::from_secs(secs.max(1))
}

impl Vault {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session(&self) -> Result<Arc<Session>, FieldvaultError> {
        match &*self.state() {
            State::Open(s) => Ok(Arc::clone(s)),
            State::Locked => Err(FieldvaultError::Locked),
            State::Closed => Err(FieldvaultError::Closed),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Unlocked, &AccountName) -> Result<T, fieldvault_client::Error>,
    ) -> Result<T, FieldvaultError> {
        Ok(self.session()?.with(|u| f(u, &self.account))?)
    }

    /// Runs `f` on its own thread (the network calls), as a future the app awaits.
    async fn off_thread<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Unlocked, &AccountName) -> Result<T, fieldvault_client::Error> + Send + 'static,
    ) -> Result<T, FieldvaultError> {
        let session = self.session()?;
        let account = self.account.clone();
        let work =
            blocking::run(name, move || session.with(|u| f(u, &account))).map_err(|_| FieldvaultError::Internal)?;
        Ok(work.await?)
    }

    fn new(dir: PathBuf, account: AccountName, idle_lock_secs: u64, state: State) -> Arc<Self> {
        Arc::new(Vault { dir, account, idle: idle(idle_lock_secs), state: Mutex::new(state) })
    }

    fn create(
        dir: String,
        account: String,
        store: &dyn KeyStore,
        idle_lock_secs: u64,
    ) -> Result<Arc<Self>, FieldvaultError> {
        let dir = PathBuf::from(dir);
        let account = AccountName::new(&account)?;
        let unlocked = fieldvault_client::Vault::init(&dir, store, &account)?;
        let session = Arc::new(Session::new(unlocked, idle(idle_lock_secs)));
        Ok(Vault::new(dir, account, idle_lock_secs, State::Open(session)))
    }

    fn unlock_with_store(&self, store: &dyn KeyStore) -> Result<(), FieldvaultError> {
        let mut state = self.state();
        match &*state {
            State::Closed => return Err(FieldvaultError::Closed),
            State::Open(s) if !s.is_locked() => return Ok(()),
            _ => {}
        }
        let unlocked = fieldvault_client::Vault::open(&self.dir)?.unlock(store)?;
        if !unlocked.vault().accounts().contains(&self.account) {
            return Err(FieldvaultError::NotFound { what: "account".into() });
        }
        *state = State::Open(Arc::new(Session::new(unlocked, self.idle)));
        Ok(())
    }
}

#[uniffi::export]
impl Vault {
    /// Makes a new vault in `dir` (missing or empty) with one account, its key in the app's
    /// `keystore`; returns it unlocked.
    #[uniffi::constructor]
    pub fn init(
        dir: String,
        account: String,
        keystore: Arc<dyn Keystore>,
        idle_lock_secs: u64,
    ) -> Result<Arc<Self>, FieldvaultError> {
        Vault::create(dir, account, &host_store(keystore), idle_lock_secs)
    }

    /// Makes a new vault whose key comes from `passphrase` (Argon2id; a weak one is
    /// `Invalid`); returns it unlocked.
    #[uniffi::constructor]
    pub fn init_with_passphrase(
        dir: String,
        account: String,
        passphrase: String,
        idle_lock_secs: u64,
    ) -> Result<Arc<Self>, FieldvaultError> {
        Vault::create(dir, account, &passphrase_store(passphrase), idle_lock_secs)
    }

    /// Opens the vault in `dir`, locked: `unlock` next. `NotFound` when `dir` holds no vault.
    #[uniffi::constructor]
    pub fn open(dir: String, account: String, idle_lock_secs: u64) -> Result<Arc<Self>, FieldvaultError> {
        let dir = PathBuf::from(dir);
        let account = AccountName::new(&account)?;
        let vault = fieldvault_client::Vault::open(&dir)?;
        if !vault.accounts().contains(&account) {
            return Err(FieldvaultError::NotFound { what: "account".into() });
        }
        drop(vault);
        Ok(Vault::new(dir, account, idle_lock_secs, State::Locked))
    }

    /// Unlocks with the app's keystore (its prompt shows). `Cancelled` when the user
    /// cancelled it; `InUse` when another handle holds the vault.
    pub fn unlock(&self, keystore: Arc<dyn Keystore>) -> Result<(), FieldvaultError> {
        self.unlock_with_store(&host_store(keystore))
    }

    /// Unlocks with the passphrase. `WrongPassphrase { retry_after_secs }` is counted.
    pub fn unlock_with_passphrase(&self, passphrase: String) -> Result<(), FieldvaultError> {
        self.unlock_with_store(&passphrase_store(passphrase))
    }

    /// Locks now: the keys are zeroized and the vault released; `unlock` again.
    pub fn lock(&self) {
        let mut state = self.state();
        if let State::Open(s) = &*state {
            s.lock();
            *state = State::Locked;
        }
    }

    /// Whether the vault is locked (by `lock`, its idle lock, or `close`).
    pub fn is_locked(&self) -> bool {
        match &*self.state() {
            State::Open(s) => s.is_locked(),
            State::Locked | State::Closed => true,
        }
    }

    /// Closes for good: the keys are zeroized and the vault released. Every later call is
    /// `Closed`; closing twice is fine.
    pub fn close(&self) {
        let mut state = self.state();
        if let State::Open(s) = &*state {
            s.lock();
        }
        *state = State::Closed;
    }

    /// Writes a document (a JSON object as text) and queues it for the server.
    pub fn put(&self, collection: String, id: String, json: String) -> Result<DocumentRecord, FieldvaultError> {
        let body = fieldvault_client::parse_body(&json)?;
        self.with(|u, a| Ok(u.documents(a)?.put(&collection, &id, body)?.into()))
    }

    /// The document, or none.
    pub fn get(&self, collection: String, id: String) -> Result<Option<DocumentRecord>, FieldvaultError> {
        self.with(|u, a| Ok(u.documents(a)?.get(&collection, &id)?.map(Into::into)))
    }

    /// Up to `limit` documents (0: the SDK's default page) after the id `after`, in id order.
    pub fn list(&self, collection: String, limit: u32, after: Option<String>) -> Result<DocumentPage, FieldvaultError> {
        let limit = std::num::NonZeroUsize::new(limit as usize);
        self.with(|u, a| {
            let page = u.documents(a)?.list(&collection, limit, after.as_deref())?;
            Ok(DocumentPage { documents: page.documents.into_iter().map(Into::into).collect(), next: page.next })
        })
    }

    /// Deletes a document (queued for the server); false when there was none.
    pub fn delete(&self, collection: String, id: String) -> Result<bool, FieldvaultError> {
        self.with(|u, a| u.documents(a)?.delete(&collection, &id))
    }

    /// Encrypts the file at `source_path` into the vault as an attachment of the document;
    /// a sync uploads it. The bytes never cross into the app's memory.
    pub fn attach(
        &self,
        collection: String,
        document_id: String,
        source_path: String,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<AttachmentInfo, FieldvaultError> {
        let mut report = reporter(progress);
        self.with(|u, a| {
            Ok(u.attach_with_progress(a, &collection, &document_id, std::path::Path::new(&source_path), &mut report)?
                .into())
        })
    }

    /// Writes the attachment's checked plaintext to `out_path` (downloading it first when
    /// another device made it). No output is left on a failure.
    pub fn attachment_get(
        &self,
        attachment_id: String,
        out_path: String,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<AttachmentInfo, FieldvaultError> {
        let mut report = reporter(progress);
        self.with(|u, a| {
            Ok(u.attachment_get_with_progress(a, &attachment_id, std::path::Path::new(&out_path), &mut report)?.into())
        })
    }

    /// Logs this account in to the sync server (once per device and user). `pins` are the
    /// server's `sha256/BASE64` pins.
    pub async fn login(
        &self,
        server: String,
        pins: Vec<String>,
        user: String,
        password: String,
        device_name: String,
    ) -> Result<LoginResult, FieldvaultError> {
        let password = Zeroizing::new(password);
        self.off_thread("fieldvault-login", move |u, a| {
            let opts = LoginOptions {
                server: &server,
                pins: &pins,
                user: &user,
                password,
                device_name: &device_name,
                totp: None,
            };
            let s = u.login(a, opts)?;
            Ok(LoginResult {
                user: s.user,
                device_id: s.device_id,
                continued: s.continued,
                lease_expires_at: s.lease_expires_at,
            })
        })
        .await
    }

    /// Pushes pending changes and pulls the server's. With a `merger`, conflicts in every
    /// collection are merged by it; without, the server's version wins and this device's is
    /// kept in `conflicts()`. `Wiped` when the server ordered this device wiped.
    pub async fn sync(&self, merger: Option<Arc<dyn ConflictMerger>>) -> Result<SyncResult, FieldvaultError> {
        self.off_thread("fieldvault-sync", move |u, a| {
            let merging = merger.is_some();
            let policy =
                move |_: &str| if merging { ConflictPolicy::Merge(foreign_merge) } else { ConflictPolicy::ServerWins };
            let (report, merge_failures) = with_merger(merger, || u.sync(a, &policy));
            let r = report?;
            Ok(SyncResult {
                pushed: r.pushed as u64,
                pulled: r.pulled as u64,
                conflicts: r.conflicts as u64,
                rejected: r.rejected as u64,
                merge_failures,
            })
        })
        .await
    }

    /// The changes waiting for the server, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxItem>, FieldvaultError> {
        self.with(|u, a| {
            Ok(u.outbox(a)?
                .into_iter()
                .map(|e| OutboxItem { collection: e.collection, id: e.id, op: e.op, attempts: e.attempts })
                .collect())
        })
    }

    /// The conflicts kept for the app to settle.
    pub fn conflicts(&self) -> Result<Vec<ConflictInfo>, FieldvaultError> {
        self.with(|u, a| {
            Ok(u.conflicts(a)?
                .into_iter()
                .map(|c| ConflictInfo {
                    collection: c.collection,
                    id: c.id,
                    local_json: c.local.map(|v| v.to_string()),
                    server_version: c.server_version,
                })
                .collect())
        })
    }

    /// Settles a conflict: `keep_local` writes the set-aside version again (queued), false
    /// keeps what the document is now.
    pub fn resolve_conflict(&self, collection: String, id: String, keep_local: bool) -> Result<(), FieldvaultError> {
        let keep = if keep_local { Keep::Local } else { Keep::Server };
        self.with(|u, a| u.resolve_conflict(a, &collection, &id, keep))
    }

    /// Who this device is signed in as, offline (from the last token). `AuthRequired` when
    /// never logged in or the authorization ended.
    pub fn whoami(&self) -> Result<Identity, FieldvaultError> {
        self.with(|u, a| {
            let i = u.whoami(a)?;
            Ok(Identity { user: i.user, roles: i.roles, device_id: i.device_id, expires_at: i.expires_at })
        })
    }

    /// Logs out: tells the server (or owes it), and with `keep_data` false wipes the
    /// account's data here. `Conflict` when changes wait in the outbox, unless `force`.
    pub async fn logout(&self, keep_data: bool, force: bool) -> Result<(), FieldvaultError> {
        self.off_thread("fieldvault-logout", move |u, a| u.logout(a, keep_data, force).map(|_| ())).await
    }

    /// Wipes the whole vault directory (keys first) and closes this object. Give the app's
    /// `keystore` to delete its entry too.
    pub fn wipe(&self, keystore: Option<Arc<dyn Keystore>>) -> Result<(), FieldvaultError> {
        self.close();
        let store = keystore.map(host_store);
        fieldvault_client::Vault::wipe(&self.dir, store.as_ref().map(|s| s as &dyn KeyStore))?;
        Ok(())
    }

    /// The account's state for a status screen; a locked vault says only that.
    pub fn status(&self) -> Result<VaultStatus, FieldvaultError> {
        match self.with(|u, a| u.sync_status(a)) {
            Ok(s) => Ok(VaultStatus {
                locked: false,
                server: s.server,
                user: s.user,
                outbox: s.outbox as u64,
                conflicts: s.conflicts as u64,
                last_sync_ms: s.last_sync_ms,
                lease_expires_at: s.lease_expires_at,
            }),
            Err(FieldvaultError::Locked) => Ok(VaultStatus {
                locked: true,
                server: None,
                user: None,
                outbox: 0,
                conflicts: 0,
                last_sync_ms: None,
                lease_expires_at: None,
            }),
            Err(e) => Err(e),
        }
    }
}
