//! The soak test of issue 14: real processes killed at random, over and over. The device is
//! this test binary re-run as a child (`soak_device_role`) that writes and syncs; the
//! server is the real `fieldvault-server` binary; between them a loopback proxy cuts
//! connections in the middle of answers. Each cycle may kill the device mid-sync, kill and
//! restart the server, or cut connections. At the end every change the device holds is on
//! the server exactly once (write-once documents at version 1, edited ones at version 2)
//! and the outbox is empty.
//!
//! `FIELDVAULT_SOAK_CYCLES` sets the number of cycles (default 20, which CI runs; run
//! hundreds by hand). Loopback only; every wait is bounded.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fieldvault_client::{ConflictPolicy, LoginOptions, Unlocked, Vault};
use fieldvault_core::{AccountName, Passphrase};
use fieldvault_keystore::PassphraseStore;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

const PASSWORD: &str = "soak test password of some length";
const PASSPHRASE: &str = "marble quokka seventy umbrella soak";

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    u64::from_le_bytes(b) % n.max(1)
}

fn store() -> PassphraseStore {
    PassphraseStore::new(Passphrase::new(Zeroizing::new(PASSPHRASE.to_owned())))
}

fn account() -> AccountName {
    AccountName::new("default").expect("name")
}

/// The device's part, run in a child process: write this cycle's documents, edit the
/// previous cycle's first one, sync. Does nothing unless started as the device.
#[test]
fn soak_device_role() {
    let Ok(vault) = std::env::var("FIELDVAULT_SOAK_VAULT") else { return };
    let cycle: u64 = std::env::var("FIELDVAULT_SOAK_CYCLE").expect("cycle").parse().expect("a number");
    let mut v = Vault::open(Path::new(&vault)).expect("open").unlock(&store()).expect("unlock");
    let a = account();
    for i in 0..5 {
        let body: Map<String, Value> = json!({ "cycle": cycle, "i": i }).as_object().expect("object").clone();
        v.documents(&a).expect("documents").put("soak", &format!("d{cycle}-{i}"), body).expect("put");
    }
    if cycle > 0 {
        let id = format!("d{}-0", cycle - 1);
        let mut docs = v.documents(&a).expect("documents");
        if let Some(d) = docs.get("soak", &id).expect("get") {
            let mut body = d.body;
            if body.get("edited").is_none() {
                body.insert("edited".into(), json!(true));
                docs.put("soak", &id, body).expect("edit");
            }
        }
    }
    // The outcome does not matter here: the parent checks the end state.
    let _ = v.sync(&a, &|_| ConflictPolicy::ServerWins);
}

/// The real server binary on a fixed loopback port.
struct Server {
    data: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
            .args(["serve", "--data"])
            .arg(&self.data)
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--access-ttl", "10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fieldvault-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not start listening within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback TCP relay that, while `chaos` is set, cuts some connections after a random
/// number of bytes of the answer.
fn proxy(upstream: u16, chaos: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            };
            let cut = chaos.load(Ordering::SeqCst) && random_below(3) == 0;
            let limit = if cut { 200 + random_below(6000) } else { u64::MAX };
            let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            std::thread::spawn(move || pump(client, server, u64::MAX));
            std::thread::spawn(move || pump(s2, c2, limit));
        }
    });
    port
}

fn pump(mut from: TcpStream, mut to: TcpStream, limit: u64) {
    let _ = from.set_read_timeout(Some(Duration::from_secs(30)));
    let mut sent = 0u64;
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min((limit - sent) as usize);
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if sent >= limit {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn run(args: &[&str], data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env("FIELDVAULT_PASSWORD", PASSWORD)
        .output()
        .expect("run fieldvault-server");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn login(v: &mut Unlocked, server: &str, pin: &str) {
    v.login(
        &account(),
        LoginOptions {
            server,
            pins: &[pin.to_owned()],
            user: "soaker",
            password: Zeroizing::new(PASSWORD.to_owned()),
            device_name: "soak",
            totp: None,
        },
    )
    .expect("login");
}

#[test]
fn kills_and_cut_connections_lose_no_change_and_apply_none_twice() {
    let cycles: u64 = std::env::var("FIELDVAULT_SOAK_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(20);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let pin = run(&["init"], &data);
    run(&["user", "add", "soaker"], &data);
    let mut server = Server { data: data.clone(), port: free_port(), child: None };
    server.start();
    let chaos = Arc::new(AtomicBool::new(false));
    let url = format!("https://127.0.0.1:{}", proxy(server.port, chaos.clone()));
    let vault = tmp.path().join("device");
    {
        let mut v = Vault::init(&vault, &store(), &account()).expect("init");
        login(&mut v, &url, &pin);
    }
    let (mut device_kills, mut server_kills) = (0, 0);
    for cycle in 0..cycles {
        chaos.store(random_below(2) == 0, Ordering::SeqCst);
        let mut child = Command::new(std::env::current_exe().expect("this test binary"))
            .args(["soak::soak_device_role", "--exact", "--test-threads", "1"])
            .env("FIELDVAULT_SOAK_VAULT", &vault)
            .env("FIELDVAULT_SOAK_CYCLE", cycle.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the device");
        // Kill the device at a random point in two cycles of three, and the server in one of four.
        let kill_device = random_below(3) != 0;
        let kill_server = random_below(4) == 0;
        std::thread::sleep(Duration::from_millis(random_below(900)));
        if kill_server {
            server.kill();
            server_kills += 1;
        }
        if kill_device {
            let _ = child.kill();
            device_kills += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "a device cycle ran for 2 minutes");
            std::thread::sleep(Duration::from_millis(20));
        }
        if server.child.is_none() {
            server.start();
        }
    }
    // Let the last access token expire (10 s): the calm sync below must refresh it first.
    std::thread::sleep(Duration::from_secs(11));
    // Calm: no cuts, the server up; sync until the outbox is empty.
    chaos.store(false, Ordering::SeqCst);
    let mut v = Vault::open(&vault).expect("open").unlock(&store()).expect("unlock");
    let a = account();
    for _ in 0..5 {
        if v.sync(&a, &|_| ConflictPolicy::ServerWins).is_ok() && v.outbox(&a).expect("outbox").is_empty() {
            break;
        }
    }
    assert!(v.outbox(&a).expect("outbox").is_empty(), "the outbox drains once the network is calm");
    assert!(v.conflicts(&a).expect("conflicts").is_empty(), "one writer never conflicts");
    let mine = v.documents(&a).expect("documents").list("soak", None, None).expect("list").documents;
    assert!(!mine.is_empty());
    drop(v);
    server.kill();
    // The server's own record: every document the device holds, with the device's body:
    // nothing applied twice, nothing lost.
    let keys = fieldvault_server::KeyDir::at(&tmp.path().join("data.keys"));
    let key = fieldvault_server::seal::sqlite_key(&keys.store_key().expect("store key"));
    let store = fieldvault_server::SqliteStore::open(&data.join("server.db"), &key).expect("the server's store");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    for d in &mine {
        use fieldvault_server::Store;
        let stored = rt.block_on(store.document("soak", &d.id)).expect("read").expect("on the server");
        // Written once: version 1. Edited once: 2, or 1 when the edit came before the create
        // was ever frozen for a push (it folded into the create); the body below tells.
        let edited = d.body.get("edited").is_some();
        let once = if edited { 1..=2 } else { 1..=1 };
        assert!(once.contains(&stored.version), "{}: applied exactly once (version {})", d.id, stored.version);
        let mut body = stored.body.as_object().expect("object").clone();
        body.remove("owner");
        let mut local = d.body.clone();
        local.remove("owner");
        assert_eq!(body, local, "{}", d.id);
    }
    eprintln!(
        "soak: {cycles} cycles, {device_kills} device kills, {server_kills} server kills, {} documents",
        mine.len()
    );
}
