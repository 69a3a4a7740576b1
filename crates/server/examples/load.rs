//! The server under load. N concurrent clients on loopback, each on its own keep-alive TLS
//! connection (pinned, HTTP/1.1) and logged in as its own device, send requests in a closed
//! loop for a fixed time after a warm-up; every response is checked: the expected status and,
//! in the signed build, its `X-Signature` over the request's nonce. Two workloads
//! (`FV_BENCH_MODE`):
//!
//! - `device` (issue 5): signed `GET /v1/devices/self`.
//! - `push` (issue 6): signed `POST /v1/sync/push` of `FV_BENCH_BATCH` new documents per
//!   request, each with its own idempotency key; every result must be `applied`, version 1.
//!   Ops/s counts applied ops, p50/p99 are per batch. After the run (the requests still in
//!   flight at the deadline finish first), one more device per user pulls everything and the
//!   run fails unless every op a client saw applied is there exactly once, with version 1
//!   and its body, and nothing else is.
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
//! Environment: `FV_BENCH_MODE` (device; or push), `FV_BENCH_CLIENTS` (64), `FV_BENCH_USERS`
//! (8), `FV_BENCH_SECS` (10), `FV_BENCH_WARMUP_SECS` (2), `FV_BENCH_BATCH` (100 ops per push),
//! `FV_BENCH_RATE` (0 = closed loop; else the ops per second all clients offer together,
//! paced, with latencies counted from each request's scheduled time and figures named
//! `*_paced_*`), `FV_BENCH_PG_CONNS` (16, as `fieldvault-server serve`), `FV_BENCH_PARTS`
//! (0; 1 adds single-part timings: for `device` the same load on `/healthz`, the store calls
//! (the nonce insert alone and through the group commit),
//! the token check and the HMACs; for `push` the parsing and checking of a batch and the
//! store's push called directly). Prints `figure NAME VALUE UNIT` lines: per run its ops/s,
//! p50 and p99, and the CPU time per op spent in the measured window by this process (server
//! and clients: `*_cpu`) and by the processes named `postgres` (`*_db_cpu`; about 0 on
//! SQLite), read from `/proc`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_client::{Pins, pinned_client_config};
use fieldvault_core::protocol::SessionSecret;
use fieldvault_core::protocol::sync::{
    CheckedOp, MAX_PUSH_OPS, OpKind, OpStatus, PullResponse, PushOp, PushRequest, PushResponse, check_op, uuid_v7,
};
use fieldvault_server::auth::{Password, Passwords};
use fieldvault_server::seal::Purpose;
use fieldvault_server::{
    App, Config, KeyDir, NonceClaim, PgStore, PushOutcome, Server, SqliteStore, Store, accounts, system_clock,
};
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

/// Which build this is: the signed channel, or the benchmark-only baseline without it.
const SIGNED: bool = !cfg!(feature = "bench-unsigned");
const VARIANT: &str = if SIGNED { "signed" } else { "unsigned" };
const PASSWORD: &str = "load benchmark password";
const TARGET: &str = "/v1/devices/self";
const PUSH: &str = "/v1/sync/push";
/// The collection every pushed document goes to.
const COLLECTION: &str = "visits";
/// The largest pull page, read page by page when checking what the server holds.
const PULL_PAGE: u32 = 5000;

/// The workload.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Signed `GET /v1/devices/self` (issue 5).
    Device,
    /// Signed `POST /v1/sync/push` of new documents (issue 6).
    Push,
}

struct Settings {
    mode: Mode,
    clients: usize,
    users: usize,
    warmup: Duration,
    measure: Duration,
    batch: usize,
    /// Ops per second offered by all clients together, paced (open loop); 0: closed loop.
    rate: u64,
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
        let mode = match std::env::var("FV_BENCH_MODE").as_deref() {
            Err(_) | Ok("" | "device") => Mode::Device,
            Ok("push") => Mode::Push,
            Ok(other) => bail!("FV_BENCH_MODE={other}: device or push"),
        };
        let s = Settings {
            mode,
            clients: usize::try_from(env_number("FV_BENCH_CLIENTS", 64)?)?,
            users: usize::try_from(env_number("FV_BENCH_USERS", 8)?)?,
            warmup: Duration::from_secs(env_number("FV_BENCH_WARMUP_SECS", 2)?),
            measure: Duration::from_secs(env_number("FV_BENCH_SECS", 10)?),
            batch: usize::try_from(env_number("FV_BENCH_BATCH", 100)?)?,
            rate: env_number("FV_BENCH_RATE", 0)?,
            pg_conns: u32::try_from(env_number("FV_BENCH_PG_CONNS", 16)?)?,
            parts: env_number("FV_BENCH_PARTS", 0)? != 0,
        };
        ensure!(s.clients > 0 && s.users > 0 && s.pg_conns > 0, "clients, users and connections must be at least 1");
        ensure!(!s.measure.is_zero(), "FV_BENCH_SECS must be at least 1");
        ensure!((1..=MAX_PUSH_OPS).contains(&s.batch), "FV_BENCH_BATCH must be 1 to {MAX_PUSH_OPS}");
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

/// The idempotency key of op `n` of stream `stream` (a client's index, or a part's): a UUIDv7
/// dated when the run started, the same each time it is asked for (a retried push sends the
/// same keys), unique per (stream, n).
fn op_key(stream: u16, n: u64) -> String {
    static START_MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let ms = *START_MS.get_or_init(|| unix_now() * 1000);
    // Bytes 0 and 2 lose bits to the version and variant; stream and n fill the others.
    let [s1, s0] = stream.to_be_bytes();
    let n = n.to_be_bytes();
    uuid_v7(ms, [0, s1, 0, s0, n[2], n[3], n[4], n[5], n[6], n[7]])
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
    let server = Server::bind("127.0.0.1:0".parse()?, keys.tls_config()?, app.clone()).await?;
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
            "cli:load",
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
    let paced = if settings.rate > 0 { "_paced" } else { "" };
    match settings.mode {
        Mode::Device => {
            let device = clients[0].device.clone();
            let (measured, _) = load(clients, settings, Request::Device).await?;
            measured.print(&format!("server{paced}_{VARIANT}_{name}"), settings.measure);
            if settings.parts {
                let clients = connect_plain(&server, settings.clients).await?;
                let (measured, _) = load(clients, settings, Request::Healthz).await?;
                measured.print(&format!("server_healthz_{name}"), settings.measure);
                parts(&server.app, &device, name, settings).await?;
            }
        }
        Mode::Push => {
            let (measured, clients) = load(clients, settings, Request::Push(settings.batch)).await?;
            measured.print(&format!("sync_push{paced}_{VARIANT}_{name}"), settings.measure);
            let t = Instant::now();
            let docs = exactly_once(&server, &clients, settings).await?;
            println!("figure sync_exactly_once_{name} 1 bool");
            eprintln!(
                "{name}: {docs} documents on the server, each pushed op exactly once ({:.1} s to check)",
                t.elapsed().as_secs_f64()
            );
            if settings.parts {
                push_parts(&server.app, &clients, name, settings).await?;
            }
        }
    }
    Ok(())
}

/// The credentials a login returned.
#[derive(Clone)]
struct Device {
    user: String,
    device_id: String,
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
    /// A signed `POST /v1/sync/push` of this many new documents.
    Push(usize),
}

/// One keep-alive connection and the device it is logged in as.
struct Client {
    conn: Connection,
    device: Device,
    request: Vec<u8>,
    /// Names this client's documents (`c{index}-{n}`) and idempotency keys.
    index: usize,
    /// The device's sync counter, raised on every push.
    device_seq: u64,
    /// Documents `c{index}-0` up to here (excluded) came back `applied`: a failed push ends
    /// the run, so they are always a prefix.
    applied: u64,
    /// The push body, reused.
    body: String,
}

/// The id of client `c`'s `n`th document.
fn doc_id(c: usize, n: u64) -> String {
    format!("c{c}-{n}")
}

/// The body of client `c`'s `n`th document: about 150 bytes of JSON.
fn write_doc_body(out: &mut String, c: usize, n: u64) {
    let _ = write!(out, r#"{{"site":"site-{:03}","status":"open","#, n % 977);
    let _ = write!(
        out,
        r#""notes":"visit {n} by client {c}: pump checked, filter replaced, next visit in 4 weeks","n":{n}}}"#
    );
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
            user: user.to_owned(),
            device_id: field("device_id")?,
            key_id: field("key_id")?,
            access_token: field("access_token")?,
            secret: Arc::new(SessionSecret::from_base64(&field("session_secret")?)?),
        };
        Ok(Client {
            conn,
            device,
            request: Vec::with_capacity(512),
            index: i,
            device_seq: 0,
            applied: 0,
            body: String::new(),
        })
    }

    /// One signed request; fails unless the answer is 200 and, in the signed build, its
    /// signature verifies over this request's nonce.
    async fn signed(&mut self, method: &str, target: &str, body: &[u8]) -> Result<Answer> {
        let timestamp = unix_now().to_string();
        let nonce = STANDARD.encode(random_bytes::<16>());
        let d = &self.device;
        let who = Credentials { access_token: &d.access_token, key_id: &d.key_id, secret: &d.secret };
        // The baseline build ignores the X- headers but gets the same bytes, so both builds
        // cost the clients the same to send.
        frame_signed(&mut self.request, &who, (method, target, body), &timestamp, &nonce);
        let r = self.conn.exchange(&self.request).await?;
        ensure!(r.status == 200, "{method} {target} answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        if SIGNED {
            check_signed(&r, &self.device.secret, &nonce)?;
        }
        Ok(r)
    }

    /// One signed `GET /v1/devices/self` and its checked answer.
    async fn device_self(&mut self, first: bool) -> Result<()> {
        let r = self.signed("GET", TARGET, b"").await?;
        if first {
            let v: serde_json::Value = serde_json::from_slice(&r.body)?;
            ensure!(v["key_id"] == self.device.key_id.as_str(), "{TARGET} named another session: {v}");
        }
        Ok(())
    }

    /// One signed push of `batch` new documents, the next ones of this client, each with its
    /// own idempotency key. Fails unless every op comes back `applied` at version 1; returns
    /// the number of ops applied.
    async fn push(&mut self, batch: usize) -> Result<u64> {
        let c = self.index;
        self.device_seq += 1;
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        body.push_str(r#"{"ops":["#);
        for n in self.applied..self.applied + batch as u64 {
            if n > self.applied {
                body.push(',');
            }
            let _ = write!(
                body,
                r#"{{"idempotency_key":"{}","collection":"{COLLECTION}","id":"{}","op":"put","body":"#,
                op_key(u16::try_from(c)?, n),
                doc_id(c, n)
            );
            write_doc_body(&mut body, c, n);
            body.push_str(r#","base_version":0}"#);
        }
        let _ = write!(body, r#"],"device_seq":{}}}"#, self.device_seq);
        let answer = self.signed("POST", PUSH, body.as_bytes()).await;
        self.body = body;
        let r: PushResponse = serde_json::from_slice(&answer?.body).context("a push answer")?;
        ensure!(r.results.len() == batch, "a push of {batch} ops answered {} results", r.results.len());
        for (k, result) in r.results.iter().enumerate() {
            ensure!(
                result.status == OpStatus::Applied && result.version == Some(1),
                "op {} of client {c} came back {result:?}, not applied at version 1",
                self.applied + k as u64
            );
        }
        self.applied += batch as u64;
        Ok(batch as u64)
    }

    /// Every change the server has for this device's user, page by page.
    async fn pull_all(&mut self) -> Result<Vec<fieldvault_core::protocol::sync::Change>> {
        let mut changes = Vec::new();
        let mut since: Option<String> = None;
        loop {
            let target = match &since {
                None => format!("/v1/sync/pull?device_seq=1&limit={PULL_PAGE}"),
                Some(cursor) => format!("/v1/sync/pull?since={cursor}&device_seq=1&limit={PULL_PAGE}"),
            };
            let r = self.signed("GET", &target, b"").await?;
            let page: PullResponse = serde_json::from_slice(&r.body).context("a pull answer")?;
            changes.extend(page.changes);
            if !page.has_more {
                return Ok(changes);
            }
            since = Some(page.cursor);
        }
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
    for i in 0..n {
        let conn = Connection::open(server.addr, &server.connector).await?;
        let secret = Arc::new(SessionSecret::from_bytes(Zeroizing::new([0; 32])));
        let device = Device {
            user: String::new(),
            device_id: String::new(),
            key_id: String::new(),
            access_token: String::new(),
            secret,
        };
        clients.push(Client {
            conn,
            device,
            request: Vec::new(),
            index: i,
            device_seq: 0,
            applied: 0,
            body: String::new(),
        });
    }
    Ok(clients)
}

/// What finished inside the measured window: each request's latency in nanoseconds, the ops
/// those requests carried (one per request, a batch's size per push), and the CPU time spent
/// in the window (None where `/proc` cannot tell).
struct Measured {
    latencies: Vec<u64>,
    ops: u64,
    cpu: Option<Cpu>,
}

/// CPU seconds: this process (server and load clients), and every process on the machine
/// named `postgres` (the database server, its backends and its background writers).
#[derive(Clone, Copy)]
struct Cpu {
    process: f64,
    database: f64,
}

impl Cpu {
    /// Now, from `/proc` (Linux; its clock ticks are 100 a second, `USER_HZ`, on every
    /// architecture's ABI).
    fn read() -> Option<Cpu> {
        /// utime + stime of one `/proc/PID/stat`, in seconds.
        fn of(stat: &str) -> Option<f64> {
            // The fields after the command name (which may hold spaces) end with ") ".
            let mut fields = stat.rsplit_once(") ")?.1.split(' ');
            let utime: u64 = fields.nth(11)?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some((utime + stime) as f64 / 100.0)
        }
        let process = of(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let mut database = 0.0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let dir = entry.path();
            if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim_end() == "postgres") {
                // A backend that exits in between is simply not counted.
                database += std::fs::read_to_string(dir.join("stat")).ok().as_deref().and_then(of).unwrap_or(0.0);
            }
        }
        Some(Cpu { process, database })
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu { process: self.process - before.process, database: self.database - before.database }
    }
}

impl Measured {
    fn print(mut self, prefix: &str, window: Duration) {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        let at = |q: f64| {
            let i = ((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
            self.latencies.get(i).map_or(0.0, |&ns| ns as f64 / 1e6)
        };
        println!("figure {prefix}_ops {:.0} ops/s", self.ops as f64 / window.as_secs_f64());
        println!("figure {prefix}_p50 {:.2} ms", at(0.50));
        println!("figure {prefix}_p99 {:.2} ms", at(0.99));
        if let Some(cpu) = self.cpu.filter(|_| self.ops > 0) {
            // Per op, so that runs of different speed compare: where the CPU went.
            let per_op = |secs: f64| secs * 1e6 / self.ops as f64;
            println!("figure {prefix}_cpu {:.1} us", per_op(cpu.process));
            println!("figure {prefix}_db_cpu {:.1} us", per_op(cpu.database));
        }
    }
}

/// Runs every client until the warm-up and the window have passed: in a closed loop (next
/// request as soon as the answer is checked), or with `FV_BENCH_RATE` paced, each client
/// sending on a fixed schedule (staggered between clients) and a request's latency counted
/// from its scheduled time, so that falling behind shows. Keeps the latencies and ops of
/// requests that finished in the window. A request in flight at the deadline still finishes
/// (and its ops are applied) but is not counted. Any failed request fails the run. Hands
/// the clients back for what comes after.
async fn load(clients: Vec<Client>, settings: &Settings, kind: Request) -> Result<(Measured, Vec<Client>)> {
    let begin = Instant::now();
    let (from, until) = (begin + settings.warmup, begin + settings.warmup + settings.measure);
    let per_request = match kind {
        Request::Push(batch) => batch as f64,
        Request::Device | Request::Healthz => 1.0,
    };
    let n = clients.len();
    let interval = (settings.rate > 0).then(|| Duration::from_secs_f64(per_request * n as f64 / settings.rate as f64));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let mut due = begin + interval.unwrap_or_default().mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut ops = 0u64;
                let mut first = true;
                loop {
                    let t0 = match interval {
                        None => Instant::now(),
                        Some(interval) => {
                            let scheduled = due;
                            due += interval;
                            tokio::time::sleep_until(scheduled.into()).await;
                            scheduled
                        }
                    };
                    if t0 >= until {
                        return Ok::<_, anyhow::Error>((client, latencies, ops));
                    }
                    let done = match kind {
                        Request::Device => client.device_self(first).await.map(|()| 1)?,
                        Request::Healthz => client.healthz().await.map(|()| 1)?,
                        Request::Push(batch) => client.push(batch).await?,
                    };
                    first = false;
                    let t1 = Instant::now();
                    if t1 >= from && t1 < until {
                        latencies.push(u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX));
                        ops += done;
                    }
                }
            })
        })
        .collect();
    // The CPU of the measured window, read at its start and its end.
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let start = Cpu::read();
        tokio::time::sleep_until(until.into()).await;
        Some(Cpu::read()?.since(start?))
    });
    let mut measured = Measured { latencies: Vec::new(), ops: 0, cpu: None };
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (client, latencies, ops) = task.await??;
        measured.latencies.extend(latencies);
        measured.ops += ops;
        clients.push(client);
    }
    measured.cpu = cpu.await?;
    Ok((measured, clients))
}

/// After a push run: one new device per user pulls everything its user may read, and the
/// pulled documents must be exactly the ones the clients saw `applied`: each once, version
/// 1, its body as pushed plus the owner, and nothing else. Returns the number of documents.
async fn exactly_once(server: &Running, clients: &[Client], settings: &Settings) -> Result<u64> {
    // Per user, the documents its clients pushed: (client, count), ids `c{client}-0..count`.
    let mut pushed: Vec<Vec<(usize, u64)>> = vec![Vec::new(); settings.users];
    for c in clients {
        pushed[c.index % settings.users].push((c.index, c.applied));
    }
    let tasks: Vec<_> = pushed
        .into_iter()
        .enumerate()
        .map(|(u, pushed)| {
            let (addr, connector) = (server.addr, server.connector.clone());
            let checker = settings.clients + u;
            tokio::spawn(async move {
                let user = format!("load{u}");
                let mut device = Client::login(addr, &connector, &user, checker).await?;
                let changes = device.pull_all().await?;
                check_user(&user, &pushed, changes)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total)
}

/// One user's pulled changes against what their clients pushed.
fn check_user(
    user: &str,
    pushed: &[(usize, u64)],
    changes: Vec<fieldvault_core::protocol::sync::Change>,
) -> Result<u64> {
    let mut expected: HashSet<String> = HashSet::new();
    for &(c, count) in pushed {
        expected.extend((0..count).map(|n| doc_id(c, n)));
    }
    let (mut seen, mut duplicates, mut unexpected, mut wrong) = (HashSet::new(), Vec::new(), Vec::new(), Vec::new());
    let mut body = String::new();
    for change in &changes {
        if !seen.insert(change.id.as_str()) {
            duplicates.push(change.id.as_str());
            continue;
        }
        if change.collection != COLLECTION || !expected.contains(&change.id) {
            unexpected.push(change.id.as_str());
            continue;
        }
        // The body as pushed, with the owner the server set.
        let (c, n) = change.id[1..]
            .split_once('-')
            .and_then(|(c, n)| Some((c.parse().ok()?, n.parse().ok()?)))
            .ok_or_else(|| anyhow!("an expected id {} that is not c-n", change.id))?;
        body.clear();
        write_doc_body(&mut body, c, n);
        let mut want: serde_json::Value = serde_json::from_str(&body)?;
        want["owner"] = serde_json::Value::String(user.to_owned());
        if change.op != OpKind::Put || change.version != Some(1) || change.body.as_ref() != Some(&want) {
            wrong.push(change.id.as_str());
        }
    }
    let missing: Vec<&String> = expected.iter().filter(|id| !seen.contains(id.as_str())).collect();
    ensure!(
        duplicates.is_empty()
            && unexpected.is_empty()
            && wrong.is_empty()
            && missing.is_empty()
            && changes.len() == expected.len(),
        "{user}: NOT exactly once: {} ops applied, {} changes pulled; {} duplicated (e.g. {:?}), {} unexpected \
         (e.g. {:?}), {} with the wrong version or body (e.g. {:?}), {} missing (e.g. {:?})",
        expected.len(),
        changes.len(),
        duplicates.len(),
        duplicates.iter().take(3).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(3).collect::<Vec<_>>(),
        wrong.len(),
        wrong.iter().take(3).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
    );
    Ok(changes.len() as u64)
}

/// Single parts of a push, timed apart: parsing and checking a batch as the route does
/// (JSON, each op's check and RFC 8785 fingerprint), and the store's push of a batch called
/// directly (`n` at a time, as the load has, and alone). Evidence for where the time goes.
async fn push_parts(app: &Arc<App>, clients: &[Client], name: &str, settings: &Settings) -> Result<()> {
    let batch = settings.batch;
    let window = Duration::from_secs(2);

    // The route's work before the store, on one core.
    let mut body = String::new();
    let _ = write!(body, r#"{{"ops":["#);
    for n in 0..batch as u64 {
        if n > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"idempotency_key":"{}","collection":"{COLLECTION}","id":"x-{n}","op":"put","body":"#,
            op_key(u16::MAX, n)
        );
        write_doc_body(&mut body, 0, n);
        body.push_str(r#","base_version":0}"#);
    }
    body.push_str(r#"],"device_seq":1}"#);
    let rounds = 500u32;
    let t = Instant::now();
    for _ in 0..rounds {
        let req: PushRequest = serde_json::from_slice(body.as_bytes())?;
        for raw in &req.ops {
            check_op(raw).map_err(|e| anyhow!(e))?;
        }
    }
    let per_batch = t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!("figure sync_part_parse_check_batch {per_batch:.0} us");
    println!("figure sync_part_parse_check_op {:.2} us", per_batch / batch as f64);

    // The store's push, called directly: new documents, devices of the logged-in clients
    // (their counter set far ahead of the run's), no HTTP, no signing, no parsing.
    let devices: Arc<Vec<(String, String)>> =
        Arc::new(clients.iter().map(|c| (c.device.user.clone(), c.device.device_id.clone())).collect());
    let next = Arc::new(AtomicU64::new(0));
    let store_push = {
        let (app, devices, next) = (app.clone(), devices.clone(), next.clone());
        move || {
            let (app, devices, next) = (app.clone(), devices.clone(), next.clone());
            async move {
                let call = next.fetch_add(1, Ordering::Relaxed);
                let (user, device_id) = devices[usize::try_from(call)? % devices.len()].clone();
                let ops = (0..batch as u64)
                    .map(|k| {
                        let mut body = String::new();
                        write_doc_body(&mut body, 0, k);
                        Ok(CheckedOp {
                            op: PushOp {
                                idempotency_key: op_key(u16::MAX - 1, call * batch as u64 + k),
                                collection: COLLECTION.to_owned(),
                                id: format!("p{call}-{k}"),
                                op: OpKind::Put,
                                body: Some(serde_json::from_str(&body)?),
                                base_version: 0,
                                attachments: None,
                            },
                            // Stored as given; its computation is part of parse_check above.
                            fingerprint: random_bytes::<32>(),
                            made_at: unix_now(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let now = unix_now();
                let outcome = app.store.push(app.push_batch(user, device_id, 1 << 40, ops, now)).await?;
                match outcome {
                    PushOutcome::Results(r) if r.iter().all(|r| r.status == OpStatus::Applied) => Ok(()),
                    other => bail!("a direct store push answered {other:?}"),
                }
            }
        }
    };
    let calls = concurrent(settings.clients, window, store_push.clone()).await?;
    println!("figure sync_part_store_push_{name} {:.0} ops/s", calls * batch as f64);
    let calls = concurrent(1, window, store_push).await?;
    println!("figure sync_part_store_push_{name}_alone {:.0} us", 1e6 / calls);
    println!("figure sync_part_store_push_{name}_alone_ops {:.0} ops/s", calls * batch as f64);
    Ok(())
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
    // The same nonces through the group commit the signed layer uses (issue 20).
    let claim = {
        let (app, key_id) = (app.clone(), key_id.clone());
        move || {
            let (app, key_id) = (app.clone(), key_id.clone());
            async move {
                let claim = NonceClaim {
                    key_id: key_id.to_string(),
                    nonce: random_bytes::<16>(),
                    expires_at: unix_now() + 600,
                };
                ensure!(app.replay.claim(claim).await?.fresh, "a random nonce was already there");
                Ok(())
            }
        }
    };
    // As many callers as clients (the store's throughput under this load), then one caller
    // alone (the cost of one call with nobody waiting).
    let ops = concurrent(settings.clients, window, claim).await?;
    println!("figure server_part_nonce_group_commit_{name} {ops:.0} ops/s");
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

#[path = "shared/raw_http.rs"]
mod raw_http;
use raw_http::{Answer, Connection, Credentials, check_signed, frame_signed};

#[cfg(test)]
mod tests {
    use fieldvault_core::protocol::sync::Change;

    use super::*;

    /// What a pull shows of client `c`'s `n`th document, pushed by `user`.
    fn pulled(user: &str, c: usize, n: u64) -> Change {
        let mut body = String::new();
        write_doc_body(&mut body, c, n);
        let mut body: serde_json::Value = serde_json::from_str(&body).expect("the body is JSON");
        body["owner"] = user.into();
        Change { collection: COLLECTION.into(), id: doc_id(c, n), op: OpKind::Put, version: Some(1), body: Some(body) }
    }

    fn all(user: &str) -> Vec<Change> {
        (0..3).map(|n| pulled(user, 1, n)).chain((0..2).map(|n| pulled(user, 9, n))).collect()
    }

    const PUSHED: &[(usize, u64)] = &[(1, 3), (9, 2)];

    #[test]
    fn every_applied_op_pulled_once_passes() {
        assert_eq!(check_user("load1", PUSHED, all("load1")).expect("exactly once"), 5);
    }

    #[test]
    fn a_document_pulled_twice_fails() {
        let mut changes = all("load1");
        changes.push(pulled("load1", 9, 1));
        assert!(check_user("load1", PUSHED, changes).is_err());
    }

    #[test]
    fn a_missing_document_fails() {
        let mut changes = all("load1");
        changes.remove(1);
        assert!(check_user("load1", PUSHED, changes).is_err());
    }

    #[test]
    fn a_document_no_client_saw_applied_fails() {
        let mut changes = all("load1");
        changes.push(pulled("load1", 9, 2));
        assert!(check_user("load1", PUSHED, changes).is_err());
    }

    #[test]
    fn a_second_version_or_another_body_fails() {
        let mut changes = all("load1");
        changes[0].version = Some(2);
        assert!(check_user("load1", PUSHED, changes).is_err());
        assert!(check_user("load1", PUSHED, all("load2")).is_err());
    }
}
