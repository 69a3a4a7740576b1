//! In-process servers over real TLS on loopback, on SQLite and (when
//! `FIELDVAULT_TEST_POSTGRES` is set) PostgreSQL, and a raw HTTP/1.1 client that pins the
//! server's key and signs requests with the session secret, byte for byte as SPEC section 5.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_client::{Pins, pinned_client_config};
use fieldvault_core::protocol::SessionSecret;
use fieldvault_core::protocol::auth::{DeviceProof, DeviceSecret};
use fieldvault_server::auth::{Password, Passwords};
use fieldvault_server::{App, Config, KeyDir, PgStore, Server, SqliteStore, Store, accounts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

pub const PASSWORD: &str = "correct horse battery staple";

/// Which storage a scenario runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres { url: String, schema: String },
}

/// SQLite always; PostgreSQL too when `FIELDVAULT_TEST_POSTGRES` names a server.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    match std::env::var("FIELDVAULT_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => v.push(Backend::Postgres { url, schema: fresh_schema() }),
        _ => eprintln!("PostgreSQL tests skipped: FIELDVAULT_TEST_POSTGRES is not set"),
    }
    v
}

/// PostgreSQL alone (for tests of several instances), or None with a note when unset.
pub fn postgres() -> Option<Backend> {
    match std::env::var("FIELDVAULT_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(Backend::Postgres { url, schema: fresh_schema() }),
        _ => {
            eprintln!("PostgreSQL tests skipped: FIELDVAULT_TEST_POSTGRES is not set");
            None
        }
    }
}

pub fn fresh_schema() -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    format!("fv_it_{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// One server instance.
pub struct Harness {
    pub addr: SocketAddr,
    pub pin: String,
    pub app: Arc<App>,
    /// Seconds added to the system clock, for tests of windows and expiry.
    pub offset: Arc<AtomicI64>,
    /// When non-zero, the server's clock stands still at this time (offset ignored).
    pub frozen: Arc<std::sync::atomic::AtomicU64>,
    pub backend: Backend,
    /// The rules file this instance serves with (None: owner-only).
    pub rules: Option<String>,
    _tmp: Arc<tempfile::TempDir>,
    keys: KeyDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

async fn open(backend: &Backend, tmp: &std::path::Path, store_key: &Zeroizing<[u8; 32]>) -> Arc<dyn Store> {
    match backend {
        Backend::Sqlite => {
            let key = fieldvault_server::seal::sqlite_key(store_key);
            Arc::new(SqliteStore::open(&tmp.join("data/server.db"), &key).expect("sqlite store"))
        }
        Backend::Postgres { url, schema } => Arc::new(
            PgStore::connect_in_schema(url, schema, 8).await.expect("PostgreSQL store (FIELDVAULT_TEST_POSTGRES)"),
        ),
    }
}

/// The server's connection log (why a connection closed) at debug level, into the output of
/// the test that runs it, which is shown when that test fails: a test that meets a
/// connection closed without an answer then says why the server closed it.
fn log_connections() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new("warn,fieldvault_server::listener=debug");
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().with_ansi(false).try_init();
    });
}

impl Harness {
    /// A fresh server with user `alice` (roles inspector) and `bob`.
    pub async fn start(backend: Backend) -> Harness {
        let h = Harness::start_bare(backend).await;
        h.add_user("alice", &["inspector"]).await;
        h.add_user("bob", &[]).await;
        h
    }

    pub async fn start_bare(backend: Backend) -> Harness {
        Harness::start_bare_with_rules(backend, None).await
    }

    /// A fresh server serving these rules, with `alice` and `bob` as in [`Harness::start`].
    pub async fn start_with_rules(backend: Backend, rules: &str) -> Harness {
        let h = Harness::start_bare_with_rules(backend, Some(rules.to_owned())).await;
        h.add_user("alice", &["inspector"]).await;
        h.add_user("bob", &[]).await;
        h
    }

    async fn start_bare_with_rules(backend: Backend, rules: Option<String>) -> Harness {
        Harness::start_bare_with_config(backend, rules, Config::default()).await
    }

    /// A fresh server with no users, serving `rules` under `config`.
    pub async fn start_bare_with_config(backend: Backend, rules: Option<String>, config: Config) -> Harness {
        let tmp = Arc::new(tempfile::tempdir().expect("tempdir"));
        let keys = KeyDir::at(&tmp.path().join("data.keys"));
        let pin = keys.init(&tmp.path().join("data"), &["localhost".into(), "127.0.0.1".into()]).expect("init");
        Harness::start_with(backend, tmp, keys, pin, rules, config, None).await
    }

    /// A fresh server with no users that also signs users in through `oidc`'s providers.
    pub async fn start_bare_with_oidc(backend: Backend, oidc: fieldvault_server::auth::oidc::Oidc) -> Harness {
        let tmp = Arc::new(tempfile::tempdir().expect("tempdir"));
        let keys = KeyDir::at(&tmp.path().join("data.keys"));
        let pin = keys.init(&tmp.path().join("data"), &["localhost".into(), "127.0.0.1".into()]).expect("init");
        Harness::start_with(backend, tmp, keys, pin, None, Config::default(), Some(oidc)).await
    }

    /// A second instance over the same store with these providers.
    pub async fn sibling_with_oidc(&self, oidc: fieldvault_server::auth::oidc::Oidc) -> Harness {
        let (tmp, keys, pin) = (self._tmp.clone(), self.keys.clone(), self.pin.clone());
        Harness::start_with(
            self.backend.clone(),
            tmp,
            keys,
            pin,
            self.rules.clone(),
            self.app.config.clone(),
            Some(oidc),
        )
        .await
    }

    /// A second instance over the same key directory and store (PostgreSQL; on SQLite a
    /// second connection to the same file).
    pub async fn sibling(&self) -> Harness {
        self.sibling_with_rules(self.rules.clone()).await
    }

    /// A second instance over the same store serving other rules.
    pub async fn sibling_with_rules(&self, rules: Option<String>) -> Harness {
        let (tmp, keys, pin) = (self._tmp.clone(), self.keys.clone(), self.pin.clone());
        Harness::start_with(self.backend.clone(), tmp, keys, pin, rules, self.app.config.clone(), None).await
    }

    async fn start_with(
        backend: Backend,
        tmp: Arc<tempfile::TempDir>,
        keys: KeyDir,
        pin: String,
        rules: Option<String>,
        config: Config,
        oidc: Option<fieldvault_server::auth::oidc::Oidc>,
    ) -> Harness {
        log_connections();
        let store_key = keys.store_key().expect("store key");
        let store = open(&backend, tmp.path(), &store_key).await;
        let offset = Arc::new(AtomicI64::new(0));
        let frozen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (o, f) = (offset.clone(), frozen.clone());
        let clock: fieldvault_server::Clock = Arc::new(move || match f.load(Ordering::SeqCst) {
            0 => now().saturating_add_signed(o.load(Ordering::SeqCst)),
            t => t,
        });
        let mut app = App::new(store, keys.token_signer().expect("signer"), &store_key, clock, config).expect("app");
        if let Some(text) = &rules {
            app = app.with_rules(fieldvault_core::rules::Rules::from_toml(text).expect("valid rules"));
        }
        if let Some(oidc) = oidc {
            app = app.with_oidc(oidc);
        }
        let app = Arc::new(app);
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"), keys.tls_config().expect("tls"), app.clone())
            .await
            .expect("bind");
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Harness { addr, pin, app, offset, frozen, backend, rules, _tmp: tmp, keys, shutdown: Some(tx) }
    }

    /// Flips one bit of chunk `n` of attachment `id` where the store keeps it: what someone
    /// holding the server's data (and keys) could do.
    pub async fn tamper_chunk(&self, id: &str, n: u64) {
        self.flip_blob("attachment_chunks", "bytes", "attachment_id", id, Some(n), 7).await;
    }

    /// Flips one bit of the last byte of attachment `id`'s manifest MAC as the store keeps
    /// it (a manifest that lies: it still parses, and only the content key can tell).
    pub async fn tamper_manifest(&self, id: &str) {
        self.flip_blob("attachments", "manifest", "id", id, None, -9).await;
    }

    /// Flips bit 0 of byte `at` (from the end when negative) of `table.column` in the row
    /// whose `key` is `id` (and `idx` is `n`, when given).
    async fn flip_blob(&self, table: &str, column: &str, key: &str, id: &str, n: Option<u64>, at: i64) {
        let flip = |mut bytes: Vec<u8>| {
            let i = if at < 0 { bytes.len() - at.unsigned_abs() as usize } else { at as usize };
            bytes[i] ^= 1;
            bytes
        };
        let idx = n.map(|n| n as i64).unwrap_or(-1);
        let filter = if n.is_some() { " AND idx = ?2" } else { " AND ?2 = -1" };
        match &self.backend {
            Backend::Sqlite => {
                let conn = self.sqlite_connection();
                let select = format!("SELECT {column} FROM {table} WHERE {key} = ?1{filter}");
                let bytes: Vec<u8> =
                    conn.query_row(&select, rusqlite::params![id, idx], |r| r.get(0)).expect("the row is stored");
                let update = format!("UPDATE {table} SET {column} = ?3 WHERE {key} = ?1{filter}");
                conn.execute(&update, rusqlite::params![id, idx, flip(bytes)]).expect("tamper");
            }
            Backend::Postgres { url, schema } => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
                sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("schema");
                let filter = if n.is_some() { " AND idx = $2" } else { " AND $2 = -1" };
                let select = format!("SELECT {column} FROM {table} WHERE {key} = $1{filter}");
                let row: (Vec<u8>,) = sqlx::query_as(sqlx::AssertSqlSafe(select))
                    .bind(id)
                    .bind(idx)
                    .fetch_one(&mut conn)
                    .await
                    .expect("the row is stored");
                let update = format!("UPDATE {table} SET {column} = $3 WHERE {key} = $1{filter}");
                sqlx::query(sqlx::AssertSqlSafe(update))
                    .bind(id)
                    .bind(idx)
                    .bind(flip(row.0))
                    .execute(&mut conn)
                    .await
                    .expect("tamper");
            }
        }
    }

    /// A connection to the SQLite store's file past the server, keyed as the store is: what
    /// someone holding the data directory and the store key could open.
    fn sqlite_connection(&self) -> rusqlite::Connection {
        use fieldvault_core::sqlcipher;
        let key_bytes = fieldvault_server::seal::sqlite_key(&self.keys.store_key().expect("store key"));
        let conn = rusqlite::Connection::open(self._tmp.path().join("data/server.db")).expect("open");
        conn.execute_batch(&sqlcipher::cipher_default_settings_sql()).expect("settings");
        conn.execute_batch(&sqlcipher::key_pragma("main", &key_bytes)).expect("key");
        conn.execute_batch(&sqlcipher::cipher_settings_sql("main")).expect("settings");
        conn.execute_batch("PRAGMA busy_timeout = 5000;").expect("busy timeout");
        conn
    }

    /// Runs `sql` on the store's database past the server, as someone holding the database
    /// (and on SQLite the store key) could: one statement on PostgreSQL, a batch on SQLite.
    pub async fn raw_sql(&self, sql: &str) -> Result<(), String> {
        match &self.backend {
            Backend::Sqlite => {
                let conn = self.sqlite_connection();
                conn.execute_batch(sql).map_err(|e| e.to_string())
            }
            Backend::Postgres { url, schema } => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
                sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("schema");
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The `--database-url` that reaches this store from the command line (None on SQLite).
    pub fn database_url(&self) -> Option<String> {
        match &self.backend {
            Backend::Sqlite => None,
            Backend::Postgres { url, schema } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
            }
        }
    }

    /// The data directory (on SQLite, `server.db` is in it).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._tmp.path().join("data")
    }

    /// The store key from the key directory.
    pub fn store_key(&self) -> Zeroizing<[u8; 32]> {
        self.keys.store_key().expect("store key")
    }

    /// The server's own TLS configuration (certificate and key): what a party holding the
    /// server's key could present.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.keys.tls_config().expect("tls")
    }

    pub async fn add_user(&self, name: &str, roles: &[&str]) {
        self.add_user_with(name, roles, &[]).await;
    }

    /// Adds a user with roles and `key=value` attributes.
    pub async fn add_user_with(&self, name: &str, roles: &[&str], attributes: &[&str]) {
        let access = access(roles, attributes);
        let passwords = Passwords::new(1).expect("hasher");
        accounts::add_user(
            &self.app.store,
            "cli:test",
            &passwords,
            name,
            access,
            Password::new(Zeroizing::new(PASSWORD.into())),
            now(),
        )
        .await
        .expect("add user");
    }

    /// A signed request from `device`, sent now; the response, checked to be signed.
    pub async fn signed(&self, device: &Device, method: &str, target: &str, body: &[u8]) -> Response {
        let req = Signed::new(device, method, target, body, now());
        let r = self.send(&req.raw()).await;
        r.verify(&device.secret, &req.nonce).expect("a signed response");
        r
    }

    /// `POST /v1/sync/push` with these ops.
    pub async fn push(&self, device: &Device, ops: serde_json::Value, device_seq: u64) -> Response {
        let body = serde_json::json!({ "ops": ops, "device_seq": device_seq }).to_string();
        self.signed(device, "POST", "/v1/sync/push", body.as_bytes()).await
    }

    /// `GET /v1/sync/pull`.
    pub async fn pull(&self, device: &Device, since: Option<&str>, limit: Option<u32>, device_seq: u64) -> Response {
        let mut target = format!("/v1/sync/pull?device_seq={device_seq}");
        if let Some(s) = since {
            target.push_str(&format!("&since={s}"));
        }
        if let Some(l) = limit {
            target.push_str(&format!("&limit={l}"));
        }
        self.signed(device, "GET", &target, b"").await
    }

    /// Sends raw request bytes over a fresh pinned TLS connection; the parsed response.
    /// A server that refuses a request before reading its body (413) answers and closes: the
    /// rest of the write may then meet a closed connection, and the answer is read anyway.
    pub async fn send(&self, raw: &[u8]) -> Response {
        self.send_to(self.addr, raw).await
    }

    /// [`Harness::send`] to another listener of this server (the admin console's), pinned
    /// to the same certificate.
    pub async fn send_to(&self, addr: SocketAddr, raw: &[u8]) -> Response {
        let mut tls = self.connect_to(addr).await;
        let closed = |e: &std::io::Error| {
            matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
        };
        if let Err(e) = tls.write_all(raw).await {
            assert!(closed(&e), "write: {e}");
        }
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(20), async {
            let mut buf = [0u8; 16 << 10];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) => return Ok("closed (close_notify)"),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if closed(&e) && !out.is_empty() => return Ok("reset"),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("response in time");
        let ended = read.expect("read");
        if !out.windows(4).any(|w| w == b"\r\n\r\n") {
            // The server's log of this connection is in the test's output above.
            panic!(
                "no complete response head: the connection was {ended} after {} bytes and {:?} ({:?}...)",
                out.len(),
                started.elapsed(),
                String::from_utf8_lossy(&out[..out.len().min(200)])
            );
        }
        Response::parse(&out)
    }

    /// A pinned HTTP/1.1-over-TLS connection to the server, handshake done.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        self.connect_to(self.addr).await
    }

    /// A pinned HTTP/1.1-over-TLS connection to `addr`, handshake done.
    pub async fn connect_to(&self, addr: SocketAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut config = pinned_client_config(Pins::parse(&[&self.pin]).expect("pin"));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .expect("handshake in time")
            .expect("pinned handshake")
    }

    /// An unsigned request.
    pub async fn plain(&self, method: &str, target: &str, body: &[u8]) -> Response {
        let raw = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(body);
        self.send(&raw).await
    }

    pub async fn login(&self, user: &str, password: &str) -> Response {
        let body = serde_json::json!({ "user": user, "password": password, "device_name": "field tablet" });
        self.plain("POST", "/v1/auth/login", body.to_string().as_bytes()).await
    }

    /// A login naming device `device_id` with a proof made with `secret` at `ts`.
    pub async fn relogin_at(
        &self,
        user: &str,
        password: &str,
        device_id: &str,
        secret: &DeviceSecret,
        ts: u64,
    ) -> Response {
        let proof = DeviceProof::new(secret, device_id, ts);
        let body = serde_json::json!({ "user": user, "password": password, "device_name": "field tablet",
            "device": proof });
        self.plain("POST", "/v1/auth/login", body.to_string().as_bytes()).await
    }

    /// `device` logging in again, with the password and a proof made now by the server's clock.
    pub async fn relogin(&self, user: &str, device: &Device) -> Response {
        let secret = device.device_secret.as_ref().expect("a device that logged in before holds its secret");
        self.relogin_at(user, PASSWORD, &device.device_id, secret, self.app.now()).await
    }

    /// `device` logs in again, successfully; its new credentials (keeping the device secret
    /// unless the answer carries a new one).
    pub async fn device_again(&self, user: &str, device: &Device) -> Device {
        let r = self.relogin(user, device).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let mut next = Device::from_tokens(&r.json());
        if next.device_secret.is_none() {
            let kept = device.device_secret.as_ref().expect("secret").expose_secret();
            next.device_secret = Some(DeviceSecret::from_bytes(Zeroizing::new(*kept)));
        }
        next
    }

    /// Logs in and returns the device's credentials.
    pub async fn device(&self, user: &str) -> Device {
        let r = self.login(user, PASSWORD).await;
        assert_eq!(r.status, 200, "{}", r.text());
        Device::from_tokens(&r.json())
    }
}

/// Roles and `key=value` attributes as the command line takes them.
pub fn access(roles: &[&str], attributes: &[&str]) -> accounts::Access {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    let attributes: Vec<String> = attributes.iter().map(|a| (*a).to_owned()).collect();
    accounts::Access::parse(&roles, &attributes).expect("valid access")
}

/// A logged-in device's credentials.
pub struct Device {
    pub key_id: String,
    pub secret: SessionSecret,
    pub access_token: String,
    pub refresh_token: String,
    pub offline_token: String,
    pub device_id: String,
    /// Sent at the device's first login only.
    pub device_secret: Option<DeviceSecret>,
    /// The lease as the answer gave it: id, key L (base64), expiry.
    pub lease: (String, String, u64),
}

impl Device {
    pub fn from_tokens(v: &serde_json::Value) -> Device {
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_owned();
        let lease = &v["lease"];
        Device {
            key_id: s("key_id"),
            secret: SessionSecret::from_base64(&s("session_secret")).expect("secret"),
            access_token: s("access_token"),
            refresh_token: s("refresh_token"),
            offline_token: s("offline_token"),
            device_id: s("device_id"),
            device_secret: v["device_secret"].as_str().map(|d| DeviceSecret::from_base64(d).expect("device secret")),
            lease: (
                lease["lease_id"].as_str().expect("lease id").to_owned(),
                lease["key"].as_str().expect("lease key").to_owned(),
                lease["expires_at"].as_u64().expect("lease expiry"),
            ),
        }
    }
}

pub fn random_nonce() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    STANDARD.encode(b)
}

/// A signed request, built field by field so tests can break any one of them.
#[derive(Clone)]
pub struct Signed {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
    pub timestamp: String,
    pub nonce: String,
    pub key_id: String,
    pub bearer: Option<String>,
    pub signature: String,
    pub extra_headers: Vec<(String, String)>,
}

impl Signed {
    pub fn new(device: &Device, method: &str, target: &str, body: &[u8], at: u64) -> Signed {
        let timestamp = at.to_string();
        let nonce = random_nonce();
        let signature = device.secret.sign_request(method, target, body, &timestamp, &nonce);
        Signed {
            method: method.into(),
            target: target.into(),
            body: body.to_vec(),
            timestamp,
            nonce,
            key_id: device.key_id.clone(),
            bearer: Some(device.access_token.clone()),
            signature,
            extra_headers: vec![],
        }
    }

    pub fn raw(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", self.method, self.target);
        if let Some(b) = &self.bearer {
            head.push_str(&format!("Authorization: Bearer {b}\r\n"));
        }
        head.push_str(&format!(
            "X-Key-Id: {}\r\nX-Timestamp: {}\r\nX-Nonce: {}\r\nX-Signature: {}\r\n",
            self.key_id, self.timestamp, self.nonce, self.signature
        ));
        for (k, v) in &self.extra_headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", self.body.len()));
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&self.body);
        raw
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn parse(raw: &[u8]) -> Response {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
        let head = String::from_utf8(raw[..split].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line.split(' ').nth(1).expect("status").parse().expect("numeric status");
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').expect("header line");
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
            body = dechunk(&body);
        }
        Response { status, headers, body }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.text()))
    }

    /// The problem code of an error response, after checking it is problem+json.
    pub fn code(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        self.json()["code"].as_str().expect("code").to_owned()
    }

    /// Checks the response signature as a client must before acting on it.
    pub fn verify(&self, secret: &SessionSecret, request_nonce: &str) -> Result<(), String> {
        let ts = self.header("x-timestamp").ok_or("no X-Timestamp")?;
        let sig = self.header("x-signature").ok_or("no X-Signature")?;
        secret.verify_response(self.status, request_nonce, &self.body, ts, sig).map_err(|e| e.to_string())
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&b[..end]).expect("hex").trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + size]);
        b = &b[end + 2 + size + 2..];
    }
}
