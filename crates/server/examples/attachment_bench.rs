//! Attachment sync through a running `fieldvault-server`, beside a bare HTTPS client sending
//! the same bytes (issue 16). Run by `bench/attachment_sync.sh`, which starts the real server
//! binary on 127.0.0.1 and runs each step below as a process of its own, so that
//! `/usr/bin/time -v` gives each step's peak RSS and CPU. Prints `figure NAME VALUE UNIT`.
//!
//! ```text
//! attachment_bench prepare DIR                      # the source file, two vaults, baseline.fva
//! attachment_bench upload DIR SERVER PIN            # device-a logs in, one sync: push and upload
//! attachment_bench download DIR SERVER PIN          # device-b logs in, one sync: pull and download
//! attachment_bench baseline-upload DIR SERVER PIN   # the bare client: put b1, metadata, every chunk
//! attachment_bench baseline-download DIR SERVER PIN # the bare client: metadata, every chunk to a file
//! attachment_bench transport-upload DIR SERVER PIN  # the baseline's requests on the SDK's transport
//! attachment_bench transport-download DIR SERVER PIN
//! ```
//!
//! The size is `FV_BENCH_BYTES` (1 GiB). `SERVER` is `https://127.0.0.1:PORT`, `PIN` what
//! `fieldvault-server init` printed; the user is `bench` with the password in
//! `FIELDVAULT_PASSWORD`.
//!
//! The device side is the SDK's public API only (`Vault`, `attach`, `login`, `sync`,
//! `set_prefetch`, `attachment_get`). The baseline is the bare client of
//! `examples/sync_bench.rs`: one pinned keep-alive TLS 1.3 connection speaking HTTP/1.1
//! framed by hand, requests signed and answers verified with the same `fieldvault_core`
//! calls, no vault. It sends a file encrypted in the same format and chunking
//! (`baseline.fva`, made by `prepare` with the format's `Encryptor`), so the server does the
//! same work for both. The `transport-*` steps send the baseline's requests again, this time
//! through the SDK's own `Transport` (hyper, HTTP/2 as ALPN picks it): with the two others
//! they split the device's time into the wire and the rest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_client::{
    Auth, ConflictPolicy, LoginOptions, Method, Pins, Request, Transport, Unlocked, Vault, pinned_client_config,
};
use fieldvault_core::attachment::{
    Algorithm, Binding, ContentKey, DEFAULT_CHUNK_LOG2, Decryptor, Encryptor, Header, Manifest, Owner,
};
use fieldvault_core::protocol::SessionSecret;
use fieldvault_core::protocol::attachments::{AttachmentInfo, AttachmentUpload, ChunkReceipt, parse_attachment_id};
use fieldvault_core::protocol::sync::{OpKind, OpStatus, PushOp, PushRequest, PushResponse, uuid_v7};
use fieldvault_core::{AccountName, Kek, KeystoreKind, KeystoreParams, VaultId};
use fieldvault_keystore::KeyStore;
use serde_json::{Map, Value};
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

const USER: &str = "bench";
const ACCOUNT: &str = "default";
const COLLECTION: &str = "visits";
/// The device's document and the baseline's (each side has a server of its own; the ids
/// differ all the same, so that no figure can come from the other side's data).
const DEVICE_DOC: &str = "v1";
const BASELINE_DOC: &str = "b1";
/// The `transport-*` steps' document, on the baseline's server after the baseline.
const TRANSPORT_DOC: &str = "t1";
/// The source and its copies are written and compared this many bytes at a time.
const IO_PIECE: usize = 1 << 20;

/// The device vaults' keystore here: each vault's key-encryption key in a file of the
/// benchmark's directory, so that every step runs as a process of its own (the in-process
/// `MemoryStore` dies with its process, and the passphrase store's 64 MiB of Argon2id would
/// land in the peak RSS being measured). Never for real use: the key lies beside the vault.
/// (The same as `sync_bench.rs`'s.)
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
        f.write_all(key.as_ref()).map_err(os)?;
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The attachment's plaintext size: `FV_BENCH_BYTES`, 1 GiB by default.
fn size() -> Result<u64> {
    match std::env::var("FV_BENCH_BYTES") {
        Ok(v) if !v.is_empty() => {
            let n: u64 = v.parse().with_context(|| format!("FV_BENCH_BYTES={v} is not a whole number"))?;
            ensure!((1..=1 << 40).contains(&n), "FV_BENCH_BYTES must be 1 byte to 1 TiB");
            Ok(n)
        }
        _ => Ok(1 << 30),
    }
}

fn password() -> Result<String> {
    std::env::var("FIELDVAULT_PASSWORD").context("FIELDVAULT_PASSWORD must hold the bench user's password")
}

/// Both documents' body: a small record, as a photo's document would be.
fn doc_body() -> Map<String, Value> {
    Map::from_iter([
        ("notes".to_owned(), Value::from("photo of the pump after the repair")),
        ("site".to_owned(), Value::from("site-001")),
        ("status".to_owned(), Value::from("open")),
    ])
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

/// Bytes per second in MB/s (10^6 bytes).
fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["prepare", dir] => prepare(Path::new(dir)),
        ["upload", dir, server, pin] => device_upload(Path::new(dir), server, pin),
        ["download", dir, server, pin] => device_download(Path::new(dir), server, pin),
        ["baseline-upload", dir, server, pin] => {
            let mut client = Bare::login(server, pin, "baseline upload")?;
            raw_upload(Path::new(dir), &mut client, "baseline", BASELINE_DOC, "attachment_baseline_upload")
        }
        ["baseline-download", dir, server, pin] => {
            let mut client = Bare::login(server, pin, "baseline download")?;
            raw_download(Path::new(dir), &mut client, "baseline", "attachment_baseline_download")
        }
        ["transport-upload", dir, server, pin] => {
            let mut client = Sdk::login(server, pin, "transport upload")?;
            raw_upload(Path::new(dir), &mut client, "transport", TRANSPORT_DOC, "attachment_transport_upload")
        }
        ["transport-download", dir, server, pin] => {
            let mut client = Sdk::login(server, pin, "transport download")?;
            raw_download(Path::new(dir), &mut client, "transport", "attachment_transport_download")
        }
        _ => bail!(
            "usage: attachment_bench prepare DIR | upload DIR SERVER PIN | download DIR SERVER PIN | \
             baseline-upload DIR SERVER PIN | baseline-download DIR SERVER PIN | \
             transport-upload DIR SERVER PIN | transport-download DIR SERVER PIN"
        ),
    }
}

/// The random source file, `device-a` (document `visits/v1` with the source attached: the
/// attach timed on its own), `device-b` (empty), and the bare clients' files: `baseline.fva`
/// and `transport.fva`, the same bytes encrypted with the format's `Encryptor` (version 2,
/// bound to `visits/b1` and `visits/t1`, each with a fresh CEK and attachment id, written
/// beside it as NAME.id and NAME.cek: benchmark files, not a secret store).
fn prepare(dir: &Path) -> Result<()> {
    let bytes = size()?;
    let account = account();
    std::fs::create_dir_all(dir)?;
    let source = dir.join("source");
    {
        let mut out = File::create(&source)?;
        let mut piece = vec![0u8; IO_PIECE];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(IO_PIECE as u64) as usize;
            aws_lc_rs::rand::fill(&mut piece[..n]).map_err(|_| anyhow!("the OS random source failed"))?;
            out.write_all(&piece[..n])?;
            left -= n as u64;
        }
        out.sync_all()?;
    }

    let mut device = Vault::init(&dir.join("device-a"), &store(dir), &account)?;
    device.documents(&account)?.put(COLLECTION, DEVICE_DOC, doc_body())?;
    let t = Instant::now();
    let attached = device.attach(&account, COLLECTION, DEVICE_DOC, &source)?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(attached.size == bytes && attached.upload_pending, "attached, upload owed: {attached:?}");
    println!("figure attachment_attach {secs:.3} s");
    println!("figure attachment_attach_rate {:.1} MB/s", mbps(bytes, secs));
    drop(device);
    drop(Vault::init(&dir.join("device-b"), &store(dir), &account)?);

    for (name, doc) in [("baseline", BASELINE_DOC), ("transport", TRANSPORT_DOC)] {
        let id: [u8; 16] = random_bytes();
        let cek = Zeroizing::new(random_bytes::<32>());
        std::fs::write(dir.join(format!("{name}.id")), hex(&id))?;
        std::fs::write(dir.join(format!("{name}.cek")), STANDARD.encode(cek.as_ref()))?;
        let header = Header {
            algorithm: Algorithm::Aes256Gcm,
            chunk_log2: DEFAULT_CHUNK_LOG2,
            attachment: id,
            binding: Binding::Document { collection: COLLECTION.into(), id: doc.into() },
            salt: random_bytes(),
            nonce_prefix: random_bytes(),
        };
        let t = Instant::now();
        let out = File::create(dir.join(format!("{name}.fva")))?;
        let mut enc = Encryptor::new(out, &ContentKey::from_bytes(cek), header)?;
        enc.read_from(File::open(&source)?)?;
        let (out, written) = enc.finish()?;
        out.sync_all()?;
        ensure!(written.length == bytes, "{name}.fva holds the source");
        if name == "baseline" {
            println!("figure attachment_baseline_encrypt {:.3} s", t.elapsed().as_secs_f64());
            println!("figure attachment_chunks {} chunks", written.chunks);
        }
    }
    Ok(())
}

/// Logs `device` in (timed apart).
fn login(vault: &mut Unlocked, server: &str, pin: &str, device: &str) -> Result<f64> {
    let pins = [pin.to_owned()];
    let t = Instant::now();
    let login = vault.login(
        &account(),
        LoginOptions {
            server,
            pins: &pins,
            user: USER,
            password: Zeroizing::new(password()?),
            device_name: device,
            totp: None,
        },
    )?;
    ensure!(!login.continued, "a new device");
    Ok(t.elapsed().as_secs_f64())
}

/// device-a logs in and runs one `sync`: the push of `visits/v1` with its list, the pull
/// after it, and the upload of the attachment (metadata, every chunk).
fn device_upload(dir: &Path, server: &str, pin: &str) -> Result<()> {
    let bytes = size()?;
    let account = account();
    let mut vault = open(dir, "device-a")?;
    let login_secs = login(&mut vault, server, pin, "device-a")?;
    let t = Instant::now();
    let report = vault.sync(&account, &|_| ConflictPolicy::ServerWins)?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(report.pushed == 1 && report.conflicts == 0 && report.rejected == 0, "v1 pushed: {report:?}");
    ensure!(report.attachments.uploaded == 1 && report.attachments.upload_refused == 0, "uploaded: {report:?}");
    let [att] = vault
        .attachments_of(&account, COLLECTION, DEVICE_DOC)?
        .try_into()
        .map_err(|_| anyhow!("not exactly one attachment on visits/v1"))?;
    ensure!(!att.upload_pending, "no upload owed after the sync");
    println!("figure attachment_upload_login {login_secs:.3} s");
    println!("figure attachment_upload {secs:.3} s");
    println!("figure attachment_upload_rate {:.1} MB/s", mbps(bytes, secs));
    Ok(())
}

/// device-b logs in, asks for `visits` to be prefetched and runs one `sync`: the pull, the
/// key, the download (every chunk checked, the whole file decrypted to nowhere before it is
/// kept). Then `attachment_get` to DIR/out, timed on its own, compared with the source.
fn device_download(dir: &Path, server: &str, pin: &str) -> Result<()> {
    let bytes = size()?;
    let account = account();
    let mut vault = open(dir, "device-b")?;
    let login_secs = login(&mut vault, server, pin, "device-b")?;
    vault.set_prefetch(&account, COLLECTION, true)?;
    let t = Instant::now();
    let report = vault.sync(&account, &|_| ConflictPolicy::ServerWins)?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(report.pulled == 1, "v1 pulled: {report:?}");
    ensure!(report.attachments.keyed == 1 && report.attachments.downloaded == 1, "downloaded: {report:?}");
    println!("figure attachment_download_login {login_secs:.3} s");
    println!("figure attachment_download {secs:.3} s");
    println!("figure attachment_download_rate {:.1} MB/s", mbps(bytes, secs));

    let [att] = vault
        .attachments_of(&account, COLLECTION, DEVICE_DOC)?
        .try_into()
        .map_err(|_| anyhow!("not exactly one attachment on visits/v1"))?;
    ensure!(att.downloaded && att.size == bytes, "the attachment is here: {att:?}");
    let out = dir.join("out");
    let t = Instant::now();
    vault.attachment_get(&account, &att.id, &out)?;
    let secs = t.elapsed().as_secs_f64();
    println!("figure attachment_get {secs:.3} s");
    ensure!(same_bytes(&out, &dir.join("source"))?, "the downloaded attachment differs from the source");
    std::fs::remove_file(&out)?;
    println!("figure attachment_download_matches_source 1 bool");
    Ok(())
}

/// Whether two files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; IO_PIECE], vec![0u8; IO_PIECE]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// A bare client's file: its attachment id, content key, header and manifest bytes.
struct RawFile {
    file: File,
    id: String,
    cek: String,
    header: Vec<u8>,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
}

fn raw_file(dir: &Path, name: &str) -> Result<RawFile> {
    let id = std::fs::read_to_string(dir.join(format!("{name}.id")))?;
    let cek = std::fs::read_to_string(dir.join(format!("{name}.cek")))?;
    let mut file = File::open(dir.join(format!("{name}.fva")))?;
    let len = file.metadata()?.len();
    let mut head = vec![0u8; len.min(Header::MAX_LEN as u64) as usize];
    file.read_exact(&mut head)?;
    let (_, header_len) = Header::parse(&head)?;
    head.truncate(header_len);
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::Start(len - 8))?;
    file.read_exact(&mut tail)?;
    let mut manifest_bytes = vec![0u8; u64::from_be_bytes(tail) as usize];
    file.seek(SeekFrom::Start(len - manifest_bytes.len() as u64))?;
    file.read_exact(&mut manifest_bytes)?;
    let manifest = Manifest::parse(&head, &manifest_bytes)?;
    file.seek(SeekFrom::Start(header_len as u64))?;
    Ok(RawFile { file, id, cek, header: head, manifest_bytes, manifest })
}

/// What the bare clients need of a connection: one signed request, its answer's body once
/// the status is 200 and the answer's signature verified.
trait Signed {
    fn device_seq(&mut self) -> u64;
    fn signed(&mut self, method: Method, target: &str, body: &[u8]) -> Result<Vec<u8>>;
}

/// The bare client's upload: a put of the document listing the attachment, the metadata
/// with the CEK, then every chunk, one request at a time, in order. Timed from the push to
/// the last receipt, which must say `complete`.
fn raw_upload(dir: &Path, client: &mut dyn Signed, name: &str, doc: &str, figure: &str) -> Result<()> {
    let mut f = raw_file(dir, name)?;
    let bytes = f.manifest.length;
    let t = Instant::now();
    let op = PushOp {
        idempotency_key: uuid_v7(unix_now_ms(), random_bytes::<10>()),
        collection: COLLECTION.into(),
        id: doc.into(),
        op: OpKind::Put,
        body: Some(Value::Object(doc_body())),
        base_version: 0,
        attachments: Some(vec![f.id.clone()]),
    };
    let push = PushRequest { ops: vec![serde_json::to_value(op)?], device_seq: client.device_seq() };
    let answer = client.signed(Method::Post, "/v1/sync/push", &serde_json::to_vec(&push)?)?;
    let r: PushResponse = serde_json::from_slice(&answer).context("a push answer")?;
    ensure!(r.results.len() == 1 && r.results[0].status == OpStatus::Applied, "the put came back {:?}", r.results);
    let target = format!("/v1/attachments/{}", f.id);
    let upload = AttachmentUpload {
        collection: COLLECTION.into(),
        doc_id: doc.into(),
        header: STANDARD.encode(&f.header),
        manifest: STANDARD.encode(&f.manifest_bytes),
        cek: f.cek.clone(),
    };
    let answer = client.signed(Method::Put, &target, &serde_json::to_vec(&upload)?)?;
    let info: AttachmentInfo = serde_json::from_slice(&answer).context("a metadata answer")?;
    ensure!(info.chunk_count == f.manifest.count && info.received == 0, "a fresh upload: {} chunks", info.chunk_count);
    let mut buf = vec![0u8; f.manifest.header.chunk_size() + fieldvault_core::attachment::TAG_LEN];
    let mut complete = false;
    let mut times = Vec::with_capacity(f.manifest.count as usize);
    for n in 0..f.manifest.count {
        let len = f.manifest.chunk_len(n);
        f.file.read_exact(&mut buf[..len])?;
        let sent = Instant::now();
        let answer = client.signed(Method::Put, &format!("{target}/chunks/{n}"), &buf[..len])?;
        times.push(sent.elapsed());
        let receipt: ChunkReceipt = serde_json::from_slice(&answer).context("a chunk receipt")?;
        complete = receipt.complete;
    }
    ensure!(complete, "the last receipt says complete");
    let secs = t.elapsed().as_secs_f64();
    println!("figure {figure} {secs:.3} s");
    println!("figure {figure}_rate {:.1} MB/s", mbps(bytes, secs));
    print_request_times(figure, &mut times);
    Ok(())
}

/// The bare client's download: the metadata, then every chunk, one request at a time,
/// written to a file with the header and manifest around them (no check beyond each
/// answer's signature). Timed from the metadata to the last chunk written. Afterwards,
/// untimed: the file must equal the one uploaded, and two figures for the work the device
/// adds to a download: an `fsync` of the file and one decryption of it to nowhere.
fn raw_download(dir: &Path, client: &mut dyn Signed, name: &str, figure: &str) -> Result<()> {
    let id = std::fs::read_to_string(dir.join(format!("{name}.id")))?;
    let out_path = dir.join(format!("{name}.out"));
    let target = format!("/v1/attachments/{id}");
    let t = Instant::now();
    let answer = client.signed(Method::Get, &target, b"")?;
    let info: AttachmentInfo = serde_json::from_slice(&answer).context("a metadata answer")?;
    ensure!(info.complete, "the upload is complete");
    let mut out = File::create(&out_path)?;
    out.write_all(&STANDARD.decode(&info.header)?)?;
    let mut times = Vec::with_capacity(info.chunk_count as usize);
    for n in 0..info.chunk_count {
        let sent = Instant::now();
        let chunk = client.signed(Method::Get, &format!("{target}/chunks/{n}"), b"")?;
        times.push(sent.elapsed());
        out.write_all(&chunk)?;
    }
    out.write_all(&STANDARD.decode(&info.manifest)?)?;
    let secs = t.elapsed().as_secs_f64();
    println!("figure {figure} {secs:.3} s");
    println!("figure {figure}_rate {:.1} MB/s", mbps(info.length, secs));
    print_request_times(figure, &mut times);

    let t = Instant::now();
    out.sync_all()?;
    println!("figure {figure}_fsync {:.3} s", t.elapsed().as_secs_f64());
    drop(out);
    ensure!(same_bytes(&out_path, &dir.join(format!("{name}.fva")))?, "{name}: the download differs from the upload");
    let cek: [u8; 32] = STANDARD.decode(std::fs::read_to_string(dir.join(format!("{name}.cek")))?)?[..]
        .try_into()
        .map_err(|_| anyhow!("{name}.cek is not 32 bytes"))?;
    let cek = ContentKey::from_bytes(Zeroizing::new(cek));
    let id_bytes = parse_attachment_id(&id).map_err(|e| anyhow!("{name}.id: {}", e.0))?;
    let account = account();
    let owner = Owner { account: &account, collection: COLLECTION, doc_id: &info.doc_id };
    let t = Instant::now();
    Decryptor::open(File::open(&out_path)?, &cek, &id_bytes, &owner)?.decrypt_to(std::io::sink())?;
    println!("figure {figure}_decrypt_pass {:.3} s", t.elapsed().as_secs_f64());
    std::fs::remove_file(&out_path)?;
    Ok(())
}

/// Each chunk request's time, from signing to the verified answer: the mean of the first
/// and of the last 1000 (a cost that grows with the chunks stored shows as a difference),
/// median, 99th percentile, largest, and the requests that took 10 ms or more (a stall, not
/// work).
fn print_request_times(figure: &str, times: &mut [Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let span = times.len().min(1000);
    if span > 0 {
        let mean = |part: &[Duration]| ms(part.iter().sum::<Duration>()) / part.len() as f64;
        println!("figure {figure}_request_first_{span}_mean {:.3} ms", mean(&times[..span]));
        println!("figure {figure}_request_last_{span}_mean {:.3} ms", mean(&times[times.len() - span..]));
    }
    times.sort_unstable();
    let at = |q: f64| times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)));
    if let (Some(p50), Some(p99), Some(max)) = (at(0.5), at(0.99), times.last()) {
        println!("figure {figure}_request_p50 {:.3} ms", ms(*p50));
        println!("figure {figure}_request_p99 {:.3} ms", ms(*p99));
        println!("figure {figure}_request_max {:.3} ms", ms(*max));
    }
    let stalls = times.iter().filter(|d| **d >= Duration::from_millis(10)).count();
    println!("figure {figure}_requests_over_10ms {stalls} requests");
}

/// The bare client: one device's session on one pinned keep-alive HTTP/1.1 connection,
/// framed by hand (as `sync_bench.rs`'s `RawClient`).
struct Bare {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    key_id: String,
    access_token: String,
    secret: SessionSecret,
    device_seq: u64,
    request: Vec<u8>,
}

impl Bare {
    fn login(server: &str, pin: &str, device_name: &str) -> Result<Bare> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let addr: SocketAddr = server
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("SERVER must be https://ADDR:PORT"))?
            .parse()
            .context("SERVER must name an IP address and port")?;
        let mut config = pinned_client_config(Pins::parse(&[pin])?);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut conn = rt.block_on(Connection::open(addr, &TlsConnector::from(Arc::new(config))))?;
        let body = serde_json::json!({ "user": USER, "password": password()?, "device_name": device_name }).to_string();
        let request = format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = rt.block_on(conn.exchange(request.as_bytes()))?;
        ensure!(r.status == 200, "login answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        let v: Value = serde_json::from_slice(&r.body)?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no {k} in the login answer"));
        Ok(Bare {
            conn,
            key_id: field("key_id")?,
            access_token: field("access_token")?,
            secret: SessionSecret::from_base64(&field("session_secret")?)?,
            device_seq: 0,
            request: Vec::with_capacity(1 << 17),
            rt,
        })
    }
}

impl Signed for Bare {
    fn device_seq(&mut self) -> u64 {
        self.device_seq += 1;
        self.device_seq
    }

    fn signed(&mut self, method: Method, target: &str, body: &[u8]) -> Result<Vec<u8>> {
        let timestamp = unix_now().to_string();
        let nonce = STANDARD.encode(random_bytes::<16>());
        let who = Credentials { access_token: &self.access_token, key_id: &self.key_id, secret: &self.secret };
        frame_signed(&mut self.request, &who, (method.as_str(), target, body), &timestamp, &nonce);
        let r = self.rt.block_on(self.conn.exchange(&self.request))?;
        ensure!(r.status == 200, "{method:?} {target} answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        check_signed(&r, &self.secret, &nonce)?;
        Ok(r.body)
    }
}

/// The SDK's own transport (`fieldvault_client::Transport`: hyper over the pinned TLS
/// connection, HTTP/2 when ALPN picks it) sending the bare client's requests: the device's
/// wire without its vault.
struct Sdk {
    transport: Transport,
    key_id: String,
    access_token: String,
    secret: SessionSecret,
    device_seq: u64,
}

impl Sdk {
    fn login(server: &str, pin: &str, device_name: &str) -> Result<Sdk> {
        let transport = Transport::new(server, Pins::parse(&[pin])?)?;
        let body = serde_json::json!({ "user": USER, "password": password()?, "device_name": device_name }).to_string();
        let r = transport.send(&Request::post_json("/v1/auth/login", body.as_bytes(), Auth::None), unix_now())?;
        ensure!(r.status == 200, "login answered {}", r.status);
        let v: Value = serde_json::from_slice(&r.body)?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no {k} in the login answer"));
        Ok(Sdk {
            key_id: field("key_id")?,
            access_token: field("access_token")?,
            secret: SessionSecret::from_base64(&field("session_secret")?)?,
            device_seq: 0,
            transport,
        })
    }
}

impl Signed for Sdk {
    fn device_seq(&mut self) -> u64 {
        self.device_seq += 1;
        self.device_seq
    }

    fn signed(&mut self, method: Method, target: &str, body: &[u8]) -> Result<Vec<u8>> {
        let auth = Auth::Signed { key_id: &self.key_id, secret: &self.secret, bearer: Some(&self.access_token) };
        let r = self.transport.send(&Request { method, path_and_query: target, body, auth }, unix_now())?;
        ensure!(r.status == 200, "{method:?} {target} answered {}", r.status);
        ensure!(r.verified_at.is_some(), "a verified answer");
        Ok(r.body.to_vec())
    }
}

#[path = "shared/raw_http.rs"]
mod raw_http;
use raw_http::{Connection, Credentials, check_signed, frame_signed};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_ids_are_written_as_the_wire_reads_them() {
        let id = [0x00, 0x01, 0xab, 0xff, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 0x80];
        assert_eq!(hex(&id), "0001abff0708090a0b0c0d0e0f101180");
        assert_eq!(parse_attachment_id(&hex(&id)).expect("an id"), id);
    }

    #[test]
    fn a_copy_that_differs_in_one_byte_past_the_first_piece_is_caught() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a: Vec<u8> = (0..IO_PIECE + 5).map(|k| k as u8).collect();
        let mut b = a.clone();
        b[IO_PIECE + 3] ^= 1;
        std::fs::write(dir.path().join("a"), &a).expect("write");
        std::fs::write(dir.path().join("b"), &b).expect("write");
        std::fs::write(dir.path().join("c"), &a).expect("write");
        assert!(!same_bytes(&dir.path().join("a"), &dir.path().join("b")).expect("read"));
        assert!(same_bytes(&dir.path().join("a"), &dir.path().join("c")).expect("read"));
        std::fs::write(dir.path().join("c"), &a[..IO_PIECE]).expect("write");
        assert!(!same_bytes(&dir.path().join("a"), &dir.path().join("c")).expect("read"));
    }
}
