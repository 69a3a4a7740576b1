//! One device for the scenarios that drive the real client library against the real server:
//! a vault of its own, unlocked, whose calls run on a plain thread (the client is blocking
//! and owns a small runtime, as in an app).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fieldvault_client::{ConflictPolicy, Error, LoginOptions, SyncReport, Unlocked, Vault};
use fieldvault_core::AccountName;
use fieldvault_keystore::MemoryStore;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::harness::{Harness, PASSWORD};

/// One device: a vault of its own, unlocked, with account `default`.
#[derive(Clone)]
pub(crate) struct Phone {
    pub(crate) vault: Arc<Mutex<Option<Unlocked>>>,
    pub(crate) account: AccountName,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) path: PathBuf,
    pub(crate) _dir: Arc<tempfile::TempDir>,
}

impl Phone {
    pub(crate) fn new() -> Phone {
        Phone::in_dir(None)
    }

    /// A device whose vault lives under `parent` (a temporary directory when None).
    pub(crate) fn in_dir(parent: Option<&std::path::Path>) -> Phone {
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p).expect("tempdir"),
            None => tempfile::tempdir().expect("tempdir"),
        };
        let account = AccountName::new("default").expect("name");
        let path: PathBuf = dir.path().join("vault");
        let store = Arc::new(MemoryStore::default());
        let vault = Vault::init(&path, store.as_ref(), &account).expect("init");
        Phone { vault: Arc::new(Mutex::new(Some(vault))), account, store, path, _dir: Arc::new(dir) }
    }

    /// A device around a vault already unlocked (with another keystore) at `path` in `dir`.
    pub(crate) fn adopt(vault: Unlocked, path: PathBuf, dir: tempfile::TempDir) -> Phone {
        Phone {
            vault: Arc::new(Mutex::new(Some(vault))),
            account: AccountName::new("default").expect("name"),
            store: Arc::new(MemoryStore::default()),
            path,
            _dir: Arc::new(dir),
        }
    }

    /// Closes the vault, lets `f` change its files, and unlocks it again.
    pub(crate) fn closed(&self, f: impl FnOnce(&std::path::Path)) {
        let mut slot = self.vault.lock().expect("not poisoned");
        drop(slot.take().expect("open").lock());
        f(&self.path);
        *slot = Some(Vault::open(&self.path).expect("open").unlock(self.store.as_ref()).expect("unlock"));
    }

    /// Runs `f` on the vault on a plain thread of its own (outside the test's runtime: the
    /// client runs a runtime of its own, as in an app).
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Unlocked, &AccountName) -> T + Send + 'static,
    ) -> T {
        let (vault, account) = (self.vault.clone(), self.account.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut slot = vault.lock().expect("not poisoned");
            let _ = tx.send(f(slot.as_mut().expect("open"), &account));
        });
        rx.await.expect("the client call did not panic")
    }

    pub(crate) async fn login_with(
        &self,
        h: &Harness,
        user: &str,
        pin: &str,
    ) -> Result<fieldvault_client::LoginSummary, Error> {
        self.login_at(&format!("https://127.0.0.1:{}", h.addr.port()), pin, user).await
    }

    pub(crate) async fn login_to(
        &self,
        h: &Harness,
        server: &str,
        user: &str,
    ) -> Result<fieldvault_client::LoginSummary, Error> {
        self.login_at(server, &h.pin, user).await
    }

    pub(crate) async fn login_at(
        &self,
        server: &str,
        pin: &str,
        user: &str,
    ) -> Result<fieldvault_client::LoginSummary, Error> {
        let (server, pins, user) = (server.to_owned(), vec![pin.to_owned()], user.to_owned());
        self.with(move |v, a| {
            v.login(
                a,
                LoginOptions {
                    server: &server,
                    pins: &pins,
                    user: &user,
                    password: Zeroizing::new(PASSWORD.to_owned()),
                    device_name: "phone",
                    totp: None,
                },
            )
        })
        .await
    }

    pub(crate) async fn login(&self, h: &Harness, user: &str) -> fieldvault_client::LoginSummary {
        self.login_with(h, user, &h.pin.clone()).await.expect("login")
    }

    pub(crate) async fn sync(&self) -> Result<SyncReport, Error> {
        self.with(|v, a| v.sync(a, &|_| ConflictPolicy::ServerWins)).await
    }

    pub(crate) async fn put(&self, collection: &str, id: &str, body: Value) {
        let (c, i) = (collection.to_owned(), id.to_owned());
        let body: Map<String, Value> = body.as_object().expect("object").clone();
        self.with(move |v, a| v.documents(a).expect("documents").put(&c, &i, body).map(|_| ())).await.expect("put");
    }

    pub(crate) async fn delete(&self, collection: &str, id: &str) {
        let (c, i) = (collection.to_owned(), id.to_owned());
        self.with(move |v, a| v.documents(a).expect("documents").delete(&c, &i)).await.expect("delete");
    }

    pub(crate) async fn get(&self, collection: &str, id: &str) -> Option<Value> {
        let (c, i) = (collection.to_owned(), id.to_owned());
        self.with(move |v, a| v.documents(a).expect("documents").get(&c, &i))
            .await
            .expect("get")
            .map(|d| Value::Object(d.body))
    }

    pub(crate) async fn outbox_len(&self) -> usize {
        self.with(|v, a| v.outbox(a)).await.expect("outbox").len()
    }
}

/// Without rules a user holds only what they own: the server stamps `owner`.
pub(crate) fn owned(by: &str, body: Value) -> Value {
    let mut b = body;
    b["owner"] = json!(by);
    b
}
