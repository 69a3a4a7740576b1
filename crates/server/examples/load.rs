//! The server under load (issue 5): N concurrent clients on loopback, each on its own
//! keep-alive TLS connection (pinned, HTTP/1.1) and logged in as its own device, send signed
//! `GET /v1/devices/self` requests for a fixed time after a warm-up. Every response is checked:
//! status 200 and, in the signed build, its `X-Signature` over the request's nonce.
//!
//! The server runs in this process on 127.0.0.1:0 with the production router, store and
//! defaults; clients and server share the machine's cores. Built twice by `bench/server.sh`:
//! as is (the signed channel) and with `--features bench-unsigned` (the same routes with the
//! signing layer replaced by a key-id and bearer-token check: the baseline).
//!
//! ```text
//! load sqlite
//! load postgres [URL]        # URL defaults to FIELDVAULT_TEST_POSTGRES; fresh schema, dropped after
//! ```
//!
//! Environment: `FV_BENCH_CLIENTS` (64), `FV_BENCH_USERS` (8), `FV_BENCH_SECS` (10),
//! `FV_BENCH_WARMUP_SECS` (2), `FV_BENCH_PG_CONNS` (16, as `fieldvault-server serve`),
//! `FV_BENCH_PARTS` (0; 1 adds the same load on `/healthz` and single-part timings).
//! Prints `figure NAME VALUE UNIT` lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_client::{Pins, pinned_client_config};
use fieldvault_core::protocol::SessionSecret;
use fieldvault_server::auth::{Password, Passwords};
use fieldvault_server::seal::Purpose;
use fieldvault_server::{App, Config, KeyDir, PgStore, Server, SqliteStore, Store, accounts, router, system_clock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

/// Which build this is: the signed channel, or the benchmark-only baseline without it.
const SIGNED: bool = !cfg!(feature = "bench-unsigned");
const VARIANT: &str = if SIGNED { "signed" } else { "unsigned" };
const PASSWORD: &str = "load benchmark password";
const TARGET: &str = "/v1/devices/self";

struct Settings {
    clients: usize,
    users: usize,
    warmup: Duration,
    measure: Duration,
    pg_conns: u32,
    parts: bool,
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().with_context(|| format!("{name}={v} is not a whole number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let s = Settings {
            clients: usize::try_from(env_number("FV_BENCH_CLIENTS", 64)?)?,
            users: usize::try_from(env_number("FV_BENCH_USERS", 8)?)?,
            warmup: Duration::from_secs(env_number("FV_BENCH_WARMUP_SECS", 2)?),
            measure: Duration::from_secs(env_number("FV_BENCH_SECS", 10)?),
            pg_conns: u32::try_from(env_number("FV_BENCH_PG_CONNS", 16)?)?,
            parts: env_number("FV_BENCH_PARTS", 0)? != 0,
        };
        ensure!(s.clients > 0 && s.users > 0 && s.pg_conns > 0, "clients, users and connections must be at least 1");
        ensure!(!s.measure.is_zero(), "FV_BENCH_SECS must be at least 1");
        Ok(s)
    }
}

enum Backend {
    Sqlite,
    Postgres { url: String, schema: String },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("the OS random source works");
    b
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let backend = match args.next().as_deref() {
        Some("sqlite") => Backend::Sqlite,
        Some("postgres") => {
            let url = match args.next() {
                Some(url) => url,
                None => std::env::var("FIELDVAULT_TEST_POSTGRES")
                    .context("postgres needs a URL argument or FIELDVAULT_TEST_POSTGRES")?,
            };
            let schema: String = random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect();
            Backend::Postgres { url, schema: format!("fv_bench_{schema}") }
        }
        _ => bail!("usage: load sqlite | load postgres [URL]"),
    };
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let outcome = run(&backend, &settings).await;
        if let Backend::Postgres { url, schema } = &backend {
            PgStore::drop_schema(url, schema).await.context("dropping the benchmark schema")?;
        }
        outcome
    })
}

/// The server in this process, stopped on drop.
struct Running {
    addr: SocketAddr,
    app: Arc<App>,
    connector: TlsConnector,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _tmp: tempfile::TempDir,
}

async fn start(backend: &Backend, settings: &Settings) -> Result<Running> {
    let tmp = tempfile::tempdir()?;
    let keys = KeyDir::at(&tmp.path().join("data.keys"));
    let pin = keys.init(&tmp.path().join("data"), &["localhost".into(), "127.0.0.1".into()])?;
    let store_key = keys.store_key()?;
    let store: Arc<dyn Store> = match backend {
        Backend::Sqlite => {
            let key = fieldvault_server::seal::sqlite_key(&store_key);
            Arc::new(SqliteStore::open(&tmp.path().join("data/server.db"), &key)?)
        }
        Backend::Postgres { url, schema } => Arc::new(
            PgStore::connect_in_schema(url, schema, settings.pg_conns).await.context("connecting to PostgreSQL")?,
        ),
    };
    let app = Arc::new(
        App::new(store, keys.token_signer()?, &store_key, system_clock(), Config::default()).map_err(|e| anyhow!(e))?,
    );
    let server = Server::bind("127.0.0.1:0".parse()?, keys.tls_config()?, router(app.clone())).await?;
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let mut config = pinned_client_config(Pins::parse(&[&pin])?);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    Ok(Running { addr, app, connector, _shutdown: tx, _tmp: tmp })
}

async fn run(backend: &Backend, settings: &Settings) -> Result<()> {
    let server = start(backend, settings).await?;
    let passwords = Passwords::new(1).map_err(|e| anyhow!(e))?;
    for u in 0..settings.users {
        let password = Password::new(Zeroizing::new(PASSWORD.into()));
        accounts::add_user(
            &server.app.store,
            &passwords,
            &format!("load{u}"),
            Default::default(),
            password,
            unix_now(),
        )
        .await?;
    }
    // Every client logs in as its own device, all at once (the server queues the hashing).
    let logins = (0..settings.clients).map(|i| {
        let (addr, connector) = (server.addr, server.connector.clone());
        let user = format!("load{}", i % settings.users);
        tokio::spawn(async move { Client::login(addr, &connector, &user, i).await })
    });
    let mut clients = Vec::with_capacity(settings.clients);
    for login in logins {
        clients.push(login.await??);
    }
    let name = backend.name();
    let device = clients[0].device.clone();
    let measured = load(clients, settings, Request::Device).await?;
    measured.print(&format!("server_{VARIANT}_{name}"), settings.measure);

    if settings.parts {
        let clients = connect_plain(&server, settings.clients).await?;
        load(clients, settings, Request::Healthz).await?.print(&format!("server_healthz_{name}"), settings.measure);
        parts(&server.app, &device, name, settings).await?;
    }
    Ok(())
}

/// The credentials a login returned.
#[derive(Clone)]
struct Device {
    key_id: String,
    access_token: String,
    secret: Arc<SessionSecret>,
}

/// What each client sends in the measured loop.
#[derive(Clone, Copy)]
enum Request {
    /// The signed `GET /v1/devices/self`.
    Device,
    /// `GET /healthz`: the same TLS, HTTP and router path with no store and no checks.
    Healthz,
}

/// One keep-alive connection and the device it is logged in as.
struct Client {
    conn: Connection,
    device: Device,
    request: Vec<u8>,
}

impl Client {
    async fn login(addr: SocketAddr, connector: &TlsConnector, user: &str, i: usize) -> Result<Client> {
        let mut conn = Connection::open(addr, connector).await?;
        let body = serde_json::json!({ "user": user, "password": PASSWORD, "device_name": format!("load client {i}") })
            .to_string();
        let request = format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = conn.exchange(request.as_bytes()).await?;
        ensure!(r.status == 200, "login answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body)?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no {k} in the login answer"));
        let device = Device {
            key_id: field("key_id")?,
            access_token: field("access_token")?,
            secret: Arc::new(SessionSecret::from_base64(&field("session_secret")?)?),
        };
        Ok(Client { conn, device, request: Vec::with_capacity(512) })
    }

    /// One signed request and its checked answer.
    async fn device_self(&mut self, first: bool) -> Result<()> {
        let timestamp = unix_now().to_string();
        let nonce = STANDARD.encode(random_bytes::<16>());
        let signature = self.device.secret.sign_request("GET", TARGET, b"", &timestamp, &nonce);
        self.request.clear();
        // The baseline build ignores the X- headers but gets the same bytes, so both builds
        // cost the clients the same to send.
        self.request.extend_from_slice(
            format!(
                "GET {TARGET} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nX-Key-Id: {}\r\n\
                 X-Timestamp: {timestamp}\r\nX-Nonce: {nonce}\r\nX-Signature: {signature}\r\n\r\n",
                self.device.access_token, self.device.key_id
            )
            .as_bytes(),
        );
        let r = self.conn.exchange(&self.request).await?;
        ensure!(r.status == 200, "{TARGET} answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        if SIGNED {
            let ts = r.timestamp.as_deref().ok_or_else(|| anyhow!("a signed answer without X-Timestamp"))?;
            let sig = r.signature.as_deref().ok_or_else(|| anyhow!("a signed answer without X-Signature"))?;
            self.device.secret.verify_response(r.status, &nonce, &r.body, ts, sig)?;
        }
        if first {
            let v: serde_json::Value = serde_json::from_slice(&r.body)?;
            ensure!(v["key_id"] == self.device.key_id.as_str(), "{TARGET} named another session: {v}");
        }
        Ok(())
    }

    async fn healthz(&mut self) -> Result<()> {
        let r = self.conn.exchange(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await?;
        ensure!(r.status == 200, "/healthz answered {}", r.status);
        Ok(())
    }
}

/// Clients for `/healthz`: connections only, no login.
async fn connect_plain(server: &Running, n: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let conn = Connection::open(server.addr, &server.connector).await?;
        let secret = Arc::new(SessionSecret::from_bytes(Zeroizing::new([0; 32])));
        let device = Device { key_id: String::new(), access_token: String::new(), secret };
        clients.push(Client { conn, device, request: Vec::new() });
    }
    Ok(clients)
}

/// Latencies of the requests that finished inside the measured window, in nanoseconds.
struct Measured {
    latencies: Vec<u64>,
}

impl Measured {
    fn print(mut self, prefix: &str, window: Duration) {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        let at = |q: f64| {
            let i = ((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
            self.latencies.get(i).map_or(0.0, |&ns| ns as f64 / 1e6)
        };
        println!("figure {prefix}_ops {:.0} ops/s", n as f64 / window.as_secs_f64());
        println!("figure {prefix}_p50 {:.2} ms", at(0.50));
        println!("figure {prefix}_p99 {:.2} ms", at(0.99));
    }
}

/// Runs every client in a closed loop (next request as soon as the answer is checked) until
/// the warm-up and the window have passed; keeps the latencies of requests that finished in
/// the window. Any failed request fails the run.
async fn load(clients: Vec<Client>, settings: &Settings, kind: Request) -> Result<Measured> {
    let begin = Instant::now();
    let (from, until) = (begin + settings.warmup, begin + settings.warmup + settings.measure);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut first = true;
                loop {
                    let t0 = Instant::now();
                    if t0 >= until {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    match kind {
                        Request::Device => client.device_self(first).await?,
                        Request::Healthz => client.healthz().await?,
                    }
                    first = false;
                    let t1 = Instant::now();
                    if t1 >= from && t1 < until {
                        latencies.push(u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX));
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Measured { latencies })
}

/// Single parts of a signed request, timed apart: the store's two calls (`n` at a time, as the
/// load has, and alone), the access-token check, the session secret's unsealing and the
/// HMACs. Evidence for where the time goes.
async fn parts(app: &Arc<App>, device: &Device, name: &str, settings: &Settings) -> Result<()> {
    let window = Duration::from_secs(2);
    let key_id: Arc<str> = device.key_id.clone().into();

    let insert = {
        let (store, key_id) = (app.store.clone(), key_id.clone());
        move || {
            let (store, key_id) = (store.clone(), key_id.clone());
            async move {
                let fresh = store.insert_nonce(&key_id, &random_bytes::<16>(), unix_now() + 600).await?;
                ensure!(fresh, "a random nonce was already there");
                Ok(())
            }
        }
    };
    let lookup = {
        let (store, key_id) = (app.store.clone(), key_id.clone());
        move || {
            let (store, key_id) = (store.clone(), key_id.clone());
            async move {
                ensure!(store.session_by_key_id(&key_id).await?.is_some(), "the session is gone");
                Ok(())
            }
        }
    };
    // As many callers as clients (the store's throughput under this load), then one caller
    // alone (the cost of one call with nobody waiting).
    let ops = concurrent(settings.clients, window, insert.clone()).await?;
    println!("figure server_part_nonce_insert_{name} {ops:.0} ops/s");
    let ops = concurrent(1, window, insert).await?;
    println!("figure server_part_nonce_insert_{name}_alone {:.0} us", 1e6 / ops);
    let ops = concurrent(settings.clients, window, lookup.clone()).await?;
    println!("figure server_part_session_lookup_{name} {ops:.0} ops/s");
    let ops = concurrent(1, window, lookup).await?;
    println!("figure server_part_session_lookup_{name}_alone {:.0} us", 1e6 / ops);

    let rounds = 20_000u32;
    let t = Instant::now();
    for _ in 0..rounds {
        app.verifier.access(&device.access_token, unix_now())?;
    }
    println!("figure server_part_token_check {:.1} us", t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds));

    let session = app.store.session_by_key_id(&key_id).await?.ok_or_else(|| anyhow!("the session is gone"))?;
    let t = Instant::now();
    for _ in 0..rounds {
        app.sealer
            .open(Purpose::SessionSecret, &session.id, &session.secret_sealed)
            .map_err(|_| anyhow!("the session secret does not unseal"))?;
    }
    println!("figure server_part_secret_unseal {:.2} us", t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds));

    let (ts, nonce) = (unix_now().to_string(), STANDARD.encode(random_bytes::<16>()));
    let t = Instant::now();
    for _ in 0..rounds {
        let sig = device.secret.sign_request("GET", TARGET, b"", &ts, &nonce);
        device.secret.verify_request("GET", TARGET, b"", &ts, &nonce, &sig)?;
        let body = br#"{"user":"load0","device_id":"d_xxxxxxxxxxxxxxxxxxxxxx","key_id":"k_xxxxxxxxxxxxxxxxxxxxxx","roles":[]}"#;
        let sig = device.secret.sign_response(200, &nonce, body, &ts);
        device.secret.verify_response(200, &nonce, body, &ts, &sig)?;
    }
    // Four HMAC-SHA256 per round: per request, the client signs and verifies one each and so
    // does the server.
    println!("figure server_part_hmac {:.2} us", t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds * 4));
    Ok(())
}

/// Calls `op` from `n` tasks at once for `window`; completed calls per second.
async fn concurrent<F, Fut>(n: usize, window: Duration, op: F) -> Result<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let until = Instant::now() + window;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    op().await?;
                    done += 1;
                }
                Ok::<_, anyhow::Error>(done)
            })
        })
        .collect();
    let mut total = 0u64;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / window.as_secs_f64())
}

/// A response as the load loop needs it.
struct Answer {
    status: u16,
    timestamp: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

/// A pinned TLS 1.3 connection speaking HTTP/1.1 with keep-alive: one request at a time,
/// bodies framed by `Content-Length` (what the server sends for every buffered body). Framed
/// by hand: the workspace builds hyper without its client, and this keeps the clients' share
/// of the shared cores small.
struct Connection {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr, connector: &TlsConnector) -> Result<Connection> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let tls = connector.connect(name, tcp).await.context("pinned TLS handshake")?;
        ensure!(tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3), "not TLS 1.3");
        Ok(Connection { tls, buf: Vec::with_capacity(4096) })
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Answer> {
        self.tls.write_all(request).await?;
        self.tls.flush().await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("a response head that is not ASCII")?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("a malformed status line"))?;
        let (mut length, mut timestamp, mut signature) = (None, None, None);
        for line in lines.filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').ok_or_else(|| anyhow!("a malformed header line"))?;
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(v.parse::<usize>()?);
            } else if k.eq_ignore_ascii_case("x-timestamp") {
                timestamp = Some(v.to_owned());
            } else if k.eq_ignore_ascii_case("x-signature") {
                signature = Some(v.to_owned());
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                bail!("the server closed a keep-alive connection");
            }
        }
        let length = length.ok_or_else(|| anyhow!("a response without Content-Length"))?;
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        ensure!(self.buf.len() == head_end + length, "bytes after the response on a one-at-a-time connection");
        Ok(Answer { status, timestamp, signature, body: self.buf[head_end..].to_vec() })
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.tls.read(&mut chunk).await?;
        ensure!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
