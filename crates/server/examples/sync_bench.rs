//! The device's sync client against a running `fieldvault-server`, beside a bare protocol
//! client doing the same exchanges (issue 14). Run by `bench/sync.sh`, which starts the real
//! server binary on 127.0.0.1 and runs each step below as a process of its own, so that
//! `/usr/bin/time -v` gives each step's peak RSS. Prints `figure NAME VALUE UNIT` lines.
//!
//! ```text
//! sync_bench prepare DIR                    # device vaults; N documents queued offline in one
//! sync_bench drain DIR SERVER PIN           # the device logs in and syncs: its outbox drains
//! sync_bench pull DIR SERVER PIN            # a fresh device logs in and pulls everything
//! sync_bench baseline-push DIR SERVER PIN   # raw signed pushes of the same N ops, 500 a batch
//! sync_bench baseline-pull DIR SERVER PIN   # raw signed pulls (limit 5000), then put_many
//! sync_bench verify DIR                     # both devices hold the N documents; outbox empty
//! ```
//!
//! N is `FV_BENCH_DOCS` (100,000); the documents are `visits/d000000..` with a JSON body of
//! exactly 1,024 bytes. `SERVER` is `https://127.0.0.1:PORT`, `PIN` what `fieldvault-server
//! init` printed; the user is `bench` with the password in `FIELDVAULT_PASSWORD`.
//!
//! The device side is the SDK's public API only (`Vault`, `Unlocked::login`, `sync`,
//! `put_many`). The baseline is the bare client of `examples/load.rs`: one pinned keep-alive
//! TLS 1.3 connection speaking HTTP/1.1 framed by hand, requests signed and answers verified
//! with the same `fieldvault_core` calls, no vault; the documents it pulls are then written
//! with the vault's `put_many`, one transaction per page, timed apart and added.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_client::{ConflictPolicy, LoginOptions, Pins, Unlocked, Vault, pinned_client_config};
use fieldvault_core::protocol::SessionSecret;
use fieldvault_core::protocol::sync::{
    MAX_PULL_LIMIT, MAX_PUSH_OPS, OpKind, OpStatus, PullResponse, PushResponse, uuid_v7,
};
use fieldvault_core::{AccountName, Kek, KeystoreKind, KeystoreParams, VaultId};
use fieldvault_keystore::KeyStore;
use serde_json::{Map, Value};
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

const USER: &str = "bench";
const ACCOUNT: &str = "default";
const COLLECTION: &str = "visits";
/// Every document's JSON body, before the server adds `owner`.
const DOC_BYTES: usize = 1024;
/// The documents queued offline are written this many to a `put_many` transaction.
const WRITE_BATCH: u64 = 1000;
/// Ops per raw push: the server's limit, as the device's client sends.
const PUSH_BATCH: u64 = MAX_PUSH_OPS as u64;
/// Changes per raw pull page: the server's limit.
const PULL_PAGE: u32 = MAX_PULL_LIMIT;

/// The device vaults' keystore here: each vault's key-encryption key in a file of the
/// benchmark's directory, so that every step runs as a process of its own (the in-process
/// `MemoryStore` dies with its process, and the passphrase store's 64 MiB of Argon2id would
/// land in the peak RSS being measured). Never for real use: the key lies beside the vault.
struct KeyFileStore {
    dir: PathBuf,
}

impl KeyFileStore {
    fn file(&self, vault: &VaultId) -> PathBuf {
        self.dir.join(format!("{}.kek", vault.to_hex()))
    }
}

impl KeyStore for KeyFileStore {
    fn kind(&self) -> KeystoreKind {
        KeystoreKind::Memory
    }

    fn create(&self, vault: &VaultId) -> Result<(Kek, KeystoreParams), fieldvault_keystore::Error> {
        let key = Zeroizing::new(random_bytes::<32>());
        let os = |e: std::io::Error| fieldvault_keystore::Error::Os(e.to_string());
        std::fs::create_dir_all(&self.dir).map_err(os)?;
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(self.file(vault)).map_err(os)?;
        std::io::Write::write_all(&mut f, key.as_ref()).map_err(os)?;
        Ok((Kek::from_bytes(key), KeystoreParams::Memory))
    }

    fn kek(&self, vault: &VaultId, params: &KeystoreParams) -> Result<Kek, fieldvault_keystore::Error> {
        if !matches!(params, KeystoreParams::Memory) {
            return Err(fieldvault_keystore::Error::Os("not a vault of this benchmark".into()));
        }
        let bytes = Zeroizing::new(
            std::fs::read(self.file(vault))
                .map_err(|_| fieldvault_keystore::Error::NoEntry { vault: vault.to_hex() })?,
        );
        let key: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| fieldvault_keystore::Error::Os("a damaged key file".into()))?;
        Ok(Kek::from_bytes(Zeroizing::new(key)))
    }

    fn destroy(&self, vault: &VaultId) -> Result<(), fieldvault_keystore::Error> {
        let _ = std::fs::remove_file(self.file(vault));
        Ok(())
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

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn docs() -> Result<u64> {
    match std::env::var("FV_BENCH_DOCS") {
        Ok(v) if !v.is_empty() => {
            let n: u64 = v.parse().with_context(|| format!("FV_BENCH_DOCS={v} is not a whole number"))?;
            ensure!((1..=999_999).contains(&n), "FV_BENCH_DOCS must be 1 to 999999");
            Ok(n)
        }
        _ => Ok(100_000),
    }
}

fn password() -> Result<String> {
    std::env::var("FIELDVAULT_PASSWORD").context("FIELDVAULT_PASSWORD must hold the bench user's password")
}

fn doc_id(n: u64) -> String {
    format!("d{n:06}")
}

const FILLER: &str = "pump checked, filter replaced, pressure within range, next visit in four weeks; ";

/// Document `n`'s body as JSON text, exactly [`DOC_BYTES`] long, its keys in sorted order and
/// without spaces: the text `serde_json` writes for the same object, so the device and the
/// baseline send the same bytes.
fn write_doc(out: &mut String, n: u64) {
    let start = out.len();
    let _ =
        write!(out, r#"{{"checked_at":{},"inspector":"inspector-{:02}","n":{n},"notes":""#, 1_764_000_000 + n, n % 61);
    let tail = format!(r#"","site":"site-{:03}","status":"open"}}"#, n % 977);
    let room = DOC_BYTES - (out.len() - start) - tail.len();
    let skip = (n % 50) as usize;
    out.extend(FILLER.chars().cycle().skip(skip).take(room));
    out.push_str(&tail);
    debug_assert_eq!(out.len() - start, DOC_BYTES);
}

fn doc_text(n: u64) -> String {
    let mut s = String::with_capacity(DOC_BYTES);
    write_doc(&mut s, n);
    s
}

fn doc_body(n: u64) -> Result<Map<String, Value>> {
    match serde_json::from_str(&doc_text(n))? {
        Value::Object(m) => Ok(m),
        _ => bail!("a document that is not an object"),
    }
}

fn account() -> AccountName {
    AccountName::new(ACCOUNT).expect("a valid account name")
}

fn store(dir: &Path) -> KeyFileStore {
    KeyFileStore { dir: dir.join("keys") }
}

fn open(dir: &Path, device: &str) -> Result<Unlocked> {
    Ok(Vault::open(&dir.join(device))?.unlock(&store(dir))?)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["prepare", dir] => prepare(Path::new(dir)),
        ["drain", dir, server, pin] => device_sync(Path::new(dir), "device-a", server, pin, Step::Drain),
        ["pull", dir, server, pin] => device_sync(Path::new(dir), "device-b", server, pin, Step::FirstPull),
        ["baseline-push", _dir, server, pin] => baseline_push(server, pin),
        ["baseline-pull", dir, server, pin] => {
            let mut vault = open(Path::new(dir), "device-c")?;
            baseline_pull(server, pin, &mut vault)
        }
        ["verify", dir] => verify(Path::new(dir)),
        _ => bail!(
            "usage: sync_bench prepare DIR | drain DIR SERVER PIN | pull DIR SERVER PIN | \
             baseline-push DIR SERVER PIN | baseline-pull DIR SERVER PIN | verify DIR"
        ),
    }
}

/// Three device vaults: `device-a` with the N documents written offline in batches (so each
/// sits in the outbox), `device-b` (the fresh device of the first pull) and `device-c` (where
/// the baseline writes what it pulls), both empty.
fn prepare(dir: &Path) -> Result<()> {
    let n = docs()?;
    let account = account();
    let first = doc_body(0)?;
    let written = Value::Object(first).to_string();
    ensure!(written == doc_text(0), "serde_json writes the documents as doc_text does");
    let mut device = Vault::init(&dir.join("device-a"), &store(dir), &account)?;
    let t = Instant::now();
    let mut written = 0;
    for from in (0..n).step_by(WRITE_BATCH as usize) {
        let to = (from + WRITE_BATCH).min(n);
        let batch = (from..to).map(|k| Ok((doc_id(k), doc_body(k)?))).collect::<Result<Vec<_>>>()?;
        written += device.documents(&account)?.put_many(COLLECTION, batch)?;
    }
    let secs = t.elapsed().as_secs_f64();
    ensure!(written as u64 == n && device.outbox(&account)?.len() as u64 == n, "{n} documents queued");
    println!("figure sync_prepare_put_many {:.0} docs/s", n as f64 / secs);
    drop(device);
    for fresh in ["device-b", "device-c"] {
        drop(Vault::init(&dir.join(fresh), &store(dir), &account)?);
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Drain,
    FirstPull,
}

/// The device's side: open and unlock the vault, log in, one `sync`, timed apart.
fn device_sync(dir: &Path, device: &str, server: &str, pin: &str, step: Step) -> Result<()> {
    let n = docs()?;
    let account = account();
    let mut vault = open(dir, device)?;
    let pins = [pin.to_owned()];
    let t = Instant::now();
    let login = vault.login(
        &account,
        LoginOptions {
            server,
            pins: &pins,
            user: USER,
            password: Zeroizing::new(password()?),
            device_name: device,
            totp: None,
        },
    )?;
    let login_secs = t.elapsed().as_secs_f64();
    ensure!(!login.continued, "a new device");
    let t = Instant::now();
    let report = vault.sync(&account, &|_| ConflictPolicy::ServerWins)?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(report.conflicts == 0 && report.rejected == 0 && report.held == 0, "a clean sync: {report:?}");
    let name = match step {
        Step::Drain => {
            ensure!(report.pushed as u64 == n, "all {n} queued ops pushed: {report:?}");
            // The push is followed by a pull from the start, which brings the device's own
            // documents back.
            println!("figure sync_drain_pulled_back {} docs", report.pulled);
            "sync_drain"
        }
        Step::FirstPull => {
            ensure!(report.pushed == 0 && report.pulled as u64 == n, "all {n} documents pulled: {report:?}");
            "sync_first_pull"
        }
    };
    println!("figure {name}_login {login_secs:.3} s");
    println!("figure {name} {secs:.3} s");
    println!("figure {name}_rate {:.0} docs/s", n as f64 / secs);
    Ok(())
}

/// Both devices hold exactly the N documents as written plus the owner the server set, and
/// the first device's outbox is empty. Run after the measured steps, in a process of its own.
fn verify(dir: &Path) -> Result<()> {
    let n = docs()?;
    let account = account();
    for device in ["device-a", "device-b"] {
        let mut vault = open(dir, device)?;
        ensure!(vault.outbox(&account)?.is_empty(), "{device}: the outbox is empty");
        let docs = vault.documents(&account)?;
        let mut after: Option<String> = None;
        let mut k = 0u64;
        loop {
            let page = docs.list(COLLECTION, NonZeroUsize::new(1000), after.as_deref())?;
            for d in &page.documents {
                let mut want = doc_body(k)?;
                want.insert("owner".into(), USER.into());
                ensure!(d.id == doc_id(k) && d.body == want, "{device}: document {} is not as pushed", d.id);
                k += 1;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        ensure!(k == n, "{device}: {k} documents, not {n}");
    }
    println!("figure sync_verified 1 bool");
    Ok(())
}

/// The bare client's push: the same N ops (ids, bodies, UUIDv7 keys), 500 to a signed
/// request, every result `applied` at version 1. Timed from before the first body is built to
/// the last answer checked.
fn baseline_push(server: &str, pin: &str) -> Result<()> {
    let n = docs()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut client = RawClient::login(server, pin, "baseline push").await?;
        let t = Instant::now();
        let mut body = String::with_capacity(PUSH_BATCH as usize * (DOC_BYTES + 200));
        for from in (0..n).step_by(PUSH_BATCH as usize) {
            let to = (from + PUSH_BATCH).min(n);
            client.device_seq += 1;
            body.clear();
            body.push_str(r#"{"ops":["#);
            for k in from..to {
                if k > from {
                    body.push(',');
                }
                let key = uuid_v7(unix_now_ms(), random_bytes::<10>());
                let _ = write!(
                    body,
                    r#"{{"idempotency_key":"{key}","collection":"{COLLECTION}","id":"{}","op":"put","body":"#,
                    doc_id(k)
                );
                write_doc(&mut body, k);
                body.push_str(r#","base_version":0}"#);
            }
            let _ = write!(body, r#"],"device_seq":{}}}"#, client.device_seq);
            let answer = client.signed("POST", "/v1/sync/push", body.as_bytes()).await?;
            let r: PushResponse = serde_json::from_slice(&answer).context("a push answer")?;
            ensure!(r.results.len() as u64 == to - from, "a push of {} ops answered {}", to - from, r.results.len());
            for (k, result) in r.results.iter().enumerate() {
                ensure!(
                    result.status == OpStatus::Applied && result.version == Some(1),
                    "op {} came back {result:?}",
                    from + k as u64
                );
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!("figure sync_baseline_push {secs:.3} s");
        println!("figure sync_baseline_push_rate {:.0} docs/s", n as f64 / secs);
        Ok(())
    })
}

/// The bare client's pull as a fresh device, pages of 5000, each page then written to a
/// vault with `put_many` (one transaction per page). The network part (request to parsed
/// page) and the vault part are timed apart; their sum is the baseline of the first pull.
fn baseline_pull(server: &str, pin: &str, vault: &mut Unlocked) -> Result<()> {
    let n = docs()?;
    let account = account();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut client = rt.block_on(RawClient::login(server, pin, "baseline pull"))?;
    let (mut net, mut writes) = (Duration::ZERO, Duration::ZERO);
    let mut since: Option<String> = None;
    let mut pulled = 0u64;
    loop {
        let t = Instant::now();
        client.device_seq += 1;
        let target = match &since {
            None => format!("/v1/sync/pull?limit={PULL_PAGE}&device_seq={}", client.device_seq),
            Some(c) => format!("/v1/sync/pull?since={c}&limit={PULL_PAGE}&device_seq={}", client.device_seq),
        };
        let answer = rt.block_on(client.signed("GET", &target, b""))?;
        let page: PullResponse = serde_json::from_slice(&answer).context("a pull answer")?;
        net += t.elapsed();
        let t = Instant::now();
        let mut docs = Vec::with_capacity(page.changes.len());
        for change in page.changes {
            match (change.op, change.version, change.body) {
                (OpKind::Put, Some(1), Some(Value::Object(body))) if change.collection == COLLECTION => {
                    docs.push((change.id, body));
                }
                (op, version, _) => bail!("change {} came back {op:?} at {version:?}", change.id),
            }
        }
        pulled += docs.len() as u64;
        vault.documents(&account)?.put_many(COLLECTION, docs)?;
        writes += t.elapsed();
        if !page.has_more {
            break;
        }
        since = Some(page.cursor);
    }
    ensure!(pulled == n, "the baseline pulled {pulled} documents, not {n}");
    let total = (net + writes).as_secs_f64();
    println!("figure sync_baseline_pull_net {:.3} s", net.as_secs_f64());
    println!("figure sync_baseline_pull_writes {:.3} s", writes.as_secs_f64());
    println!("figure sync_baseline_pull {total:.3} s");
    println!("figure sync_baseline_pull_rate {:.0} docs/s", n as f64 / total);
    Ok(())
}

/// The bare protocol client: one device's session on one pinned keep-alive connection.
struct RawClient {
    conn: Connection,
    key_id: String,
    access_token: String,
    secret: SessionSecret,
    device_seq: u64,
    request: Vec<u8>,
}

impl RawClient {
    async fn login(server: &str, pin: &str, device_name: &str) -> Result<RawClient> {
        let addr: SocketAddr = server
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("SERVER must be https://ADDR:PORT"))?
            .parse()
            .context("SERVER must name an IP address and port")?;
        let mut config = pinned_client_config(Pins::parse(&[pin])?);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut conn = Connection::open(addr, &TlsConnector::from(Arc::new(config))).await?;
        let body = serde_json::json!({ "user": USER, "password": password()?, "device_name": device_name }).to_string();
        let request = format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = conn.exchange(request.as_bytes()).await?;
        ensure!(r.status == 200, "login answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        let v: Value = serde_json::from_slice(&r.body)?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no {k} in the login answer"));
        Ok(RawClient {
            conn,
            key_id: field("key_id")?,
            access_token: field("access_token")?,
            secret: SessionSecret::from_base64(&field("session_secret")?)?,
            device_seq: 0,
            request: Vec::with_capacity(1 << 20),
        })
    }

    /// One signed request; its answer's body, once the status is 200 and the answer's
    /// signature verifies over this request's nonce.
    async fn signed(&mut self, method: &str, target: &str, body: &[u8]) -> Result<Vec<u8>> {
        let timestamp = unix_now().to_string();
        let nonce = STANDARD.encode(random_bytes::<16>());
        let who = Credentials { access_token: &self.access_token, key_id: &self.key_id, secret: &self.secret };
        frame_signed(&mut self.request, &who, (method, target, body), &timestamp, &nonce);
        let r = self.conn.exchange(&self.request).await?;
        ensure!(r.status == 200, "{method} {target} answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        check_signed(&r, &self.secret, &nonce)?;
        Ok(r.body)
    }
}

#[path = "shared/raw_http.rs"]
mod raw_http;
use raw_http::{Connection, Credentials, check_signed, frame_signed};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_is_1024_bytes_and_written_as_serde_json_writes_it() {
        for n in [0, 1, 49, 50, 976, 99_999, 999_999] {
            let text = doc_text(n);
            assert_eq!(text.len(), DOC_BYTES, "document {n}");
            let body = doc_body(n).expect("JSON");
            assert_eq!(Value::Object(body).to_string(), text, "document {n}");
        }
    }
}
