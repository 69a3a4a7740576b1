//! The `fieldvault` command line against the real `fieldvault-server` binary, as a user runs
//! them: login, sync (once and --watch), outbox, conflicts, whoami, status --sync, logout,
//! and attachments made on one device, listed and opened on another.
//!
//! The `fieldvault` binary is the workspace's own, next to `fieldvault-server` in the target
//! directory (`cargo test --workspace` builds both). Run alone (`cargo test -p
//! fieldvault-server`) without it, the test says it is skipped; CI requires it
//! (`FIELDVAULT_REQUIRE_INTEROP`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PASSWORD: &str = "a long enough password for the cli";
const PASSPHRASE: &str = "marble quokka seventy umbrella cli";

pub(crate) fn cli_binary() -> Option<PathBuf> {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_fieldvault-server"));
    let cli = server.with_file_name("fieldvault");
    if cli.exists() {
        return Some(cli);
    }
    assert!(
        std::env::var_os("FIELDVAULT_REQUIRE_INTEROP").is_none(),
        "the fieldvault binary is required next to fieldvault-server (cargo test --workspace builds it)"
    );
    eprintln!("CLI sync test skipped: no fieldvault binary at {} (run cargo test --workspace)", cli.display());
    None
}

pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn server(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env("FIELDVAULT_PASSWORD", PASSWORD)
        .output()
        .expect("fieldvault-server")
}

fn serve(data: &Path) -> Server {
    serve_with(data, &[])
}

/// `serve` with more arguments (`--oidc ...`).
pub(crate) fn serve_with(data: &Path, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    serve_on(data, port, extra)
}

/// `serve` on `port` (the same port across restarts keeps devices' server address).
pub(crate) fn serve_on(data: &Path, port: u16, extra: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port }
}

pub(crate) struct Device {
    pub(crate) cli: PathBuf,
    pub(crate) vault: PathBuf,
}

impl Device {
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli);
        c.args(args)
            .env_clear()
            .env("FIELDVAULT_VAULT", &self.vault)
            .env("FIELDVAULT_PASSPHRASE", PASSPHRASE)
            .env("FIELDVAULT_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("fieldvault")
    }

    pub(crate) fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or(Value::Null)
    }
}

/// A server with user `ada` (its data in `tmp`), and two devices logged in to it as Ada.
struct Scene {
    srv: Server,
    url: String,
    pin: String,
    one: Device,
    two: Device,
}

fn scene(cli: &Path, tmp: &Path) -> Scene {
    let data = tmp.join("data");
    let init = server(&["init"], &data);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let pin = String::from_utf8_lossy(&init.stdout).trim().to_owned();
    assert!(server(&["user", "add", "ada"], &data).status.success());
    let srv = serve(&data);
    let url = format!("https://127.0.0.1:{}", srv.port);
    let (one, two) = (
        Device { cli: cli.to_path_buf(), vault: tmp.join("one") },
        Device { cli: cli.to_path_buf(), vault: tmp.join("two") },
    );
    for d in [&one, &two] {
        d.ok(&["init", "--keystore", "passphrase"]);
        let login = d.run(&["login", "--server", &url, "--user", "ada", "--pin", &pin, "--json"]);
        assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
        assert!(String::from_utf8_lossy(&login.stderr).contains("only one pin"), "login warns about a single pin");
    }
    Scene { srv, url, pin, one, two }
}

#[test]
fn the_command_line_logs_in_syncs_watches_and_logs_out() {
    let Some(cli) = cli_binary() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let Scene { srv, url, pin, one, two } = scene(&cli, tmp.path());
    // http:// is refused before anything is sent.
    let plain = one.run(&["login", "--server", &url.replace("https", "http"), "--user", "ada", "--pin", &pin]);
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("https://"), "{}", String::from_utf8_lossy(&plain.stderr));

    let mut put =
        one.cmd(&["put", "visits", "v1", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("put");
    std::io::Write::write_all(put.stdin.as_mut().expect("stdin"), br#"{"patient": "Ada"}"#).expect("write");
    assert!(put.wait().expect("put").success());
    let outbox = one.ok(&["outbox", "--json"]);
    assert_eq!(outbox[0]["collection"], "visits");
    assert_eq!(outbox[0]["op"], "put");
    assert!(outbox[0].get("body").is_none(), "the outbox never shows bodies");
    let synced = one.ok(&["sync", "--json"]);
    assert_eq!(synced["pushed"], 1, "{synced}");
    assert_eq!(one.ok(&["outbox", "--json"]), Value::Array(vec![]));

    // The second device watches: its first cycle pulls the document; the vault is free
    // between cycles, so other commands work while it runs.
    let mut watch =
        two.cmd(&["sync", "--watch", "--interval", "1", "--json"]).stdout(Stdio::piped()).spawn().expect("watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first: Value = serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("JSON");
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["report"]["pulled"], 1, "{first}");
    let mut got = None;
    for _ in 0..50 {
        let out = two.run(&["get", "visits", "v1", "--json"]);
        if out.status.success() {
            got = Some(serde_json::from_slice::<Value>(&out.stdout).expect("JSON"));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = got.expect("another command gets the vault between watch cycles");
    assert_eq!(got["body"]["patient"], "Ada", "{got}");
    let second: Value = serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("JSON");
    assert_eq!(second["ok"], true, "{second}");
    let _ = watch.kill();
    let _ = watch.wait();

    let me = two.ok(&["whoami", "--json"]);
    assert_eq!(me["user"], "ada");
    let status = two.ok(&["status", "--sync", "--json"]);
    assert_eq!(status["sync"]["server"], url.as_str());
    assert_eq!(status["sync"]["outbox"], 0);
    assert_eq!(two.ok(&["conflicts", "--json"]), Value::Array(vec![]));
    let logout = two.ok(&["logout", "--yes", "--json"]);
    assert_eq!(logout["server_told"], true, "{logout}");
    assert!(!two.run(&["get", "visits", "v1"]).status.success(), "a plain logout destroys the data");
    let offline = two.run(&["whoami"]);
    assert!(!offline.status.success());
    drop(srv);
    // Offline: sync exits 1 with one line saying why.
    let down = one.run(&["sync"]);
    assert_eq!(down.status.code(), Some(1));
    let err = String::from_utf8_lossy(&down.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Offline, a plain logout still destroys the data here and is owed to the server.
    let owed = one.ok(&["logout", "--yes", "--force", "--json"]);
    assert_eq!((&owed["server_told"], &owed["owed"]), (&Value::Bool(false), &Value::Bool(true)), "{owed}");
    let status = one.ok(&["status", "--sync", "--json"]);
    assert_eq!(status["sync"]["logouts_owed"], 1, "{status}");
}

#[test]
fn an_attachment_made_on_one_device_is_listed_and_opened_on_another() {
    let Some(cli) = cli_binary() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let Scene { srv: _srv, one, two, .. } = scene(&cli, tmp.path());
    one.ok(&["put", "visits", "v1", r#"{"patient": "Ada"}"#]);
    let photo = tmp.path().join("photo.jpg");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&photo, &bytes).expect("write");
    let made = one.ok(&["attach", "visits", "v1", photo.to_str().expect("utf-8"), "--json"]);
    let id = made["id"].as_str().expect("id").to_owned();
    assert_eq!(made["upload_pending"], true, "{made}");
    let synced = one.ok(&["sync", "--json"]);
    assert_eq!(synced["attachments"]["uploaded"], 1, "{synced}");

    let synced = two.ok(&["sync", "--json"]);
    assert_eq!(synced["attachments"]["keyed"], 1, "{synced}");
    let listed = two.ok(&["attachment", "list", "visits", "v1", "--json"]);
    assert_eq!(listed["attachments"][0]["id"], id.as_str(), "the same id on both devices: {listed}");
    assert_eq!(listed["attachments"][0]["downloaded"], false, "{listed}");
    let text = two.run(&["attachment", "list", "visits", "v1"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("not downloaded"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let out = tmp.path().join("out.jpg");
    two.ok(&["attachment", "get", &id, "--out", out.to_str().expect("utf-8"), "--json"]);
    assert!(std::fs::read(&out).expect("read") == bytes, "byte for byte");

    // Deleted on the second device: gone from the first at its next sync.
    two.ok(&["attachment", "delete", &id, "--json"]);
    two.ok(&["sync", "--json"]);
    one.ok(&["sync", "--json"]);
    let listed = one.ok(&["attachment", "list", "visits", "v1", "--json"]);
    assert_eq!(listed["attachments"], Value::Array(vec![]), "{listed}");
    // Prefetch is a per-collection switch.
    let on = one.ok(&["attachment", "prefetch", "visits", "--json"]);
    assert_eq!(on["prefetch"], true, "{on}");
    let off = one.ok(&["attachment", "prefetch", "visits", "--off", "--json"]);
    assert_eq!(off["prefetch"], false, "{off}");
}

#[test]
fn the_command_line_logs_an_enrolled_user_in_with_a_code_from_totp_fd_once() {
    let Some(cli) = cli_binary() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let init = server(&["init"], &data);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let pin = String::from_utf8_lossy(&init.stdout).trim().to_owned();
    assert!(server(&["user", "add", "ada"], &data).status.success());
    let enroll = server(&["user", "mfa", "enroll", "ada"], &data);
    assert!(enroll.status.success(), "{}", String::from_utf8_lossy(&enroll.stderr));
    let uri = String::from_utf8_lossy(&enroll.stdout).trim().to_owned();
    assert_eq!(uri.lines().count(), 1, "no QR code off a terminal: {uri}");
    let secret = uri.split_once("secret=").and_then(|(_, rest)| rest.split('&').next()).expect("a secret");
    let secret = fieldvault_core::TotpSecret::from_base32(secret).expect("base32");
    let unknown = server(&["user", "mfa", "enroll", "nobody"], &data);
    assert!(!unknown.status.success());
    assert_eq!(String::from_utf8_lossy(&unknown.stderr).trim().lines().count(), 1);
    let srv = serve(&data);
    let url = format!("https://127.0.0.1:{}", srv.port);
    let d = Device { cli, vault: tmp.path().join("one") };
    d.ok(&["init", "--keystore", "passphrase"]);
    let args = ["login", "--server", &url, "--user", "ada", "--pin", &pin, "--json"];

    // Off a terminal, without --totp-fd: one line saying what to pass.
    let out = d.run(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("warning: only one pin")).collect();
    assert!(errors.len() == 1 && errors[0].contains("pass it with --totp-fd"), "{err}");

    // The code on a descriptor (here stdin, fd 0) logs in; the same code again is refused.
    let code = fieldvault_core::totp_code(&secret, fieldvault_core::totp_step(super::harness::now()));
    let with_code = |code: &str| {
        let mut c = d
            .cmd(&[&args[..], &["--totp-fd", "0"]].concat())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("login");
        std::io::Write::write_all(c.stdin.as_mut().expect("stdin"), format!("{code}\n").as_bytes()).expect("write");
        c.wait_with_output().expect("login")
    };
    let out = with_code(&code);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["user"], "ada");
    let again = with_code(&code);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already used"), "{err}");
    drop(srv);
}

#[test]
fn on_a_terminal_the_command_line_asks_for_the_code_and_logs_in() {
    let Some(cli) = cli_binary() else { return };
    // `script` (util-linux) gives the login a terminal, as a person at a shell has.
    if Command::new("script").arg("--version").output().is_err() {
        assert!(std::env::var_os("FIELDVAULT_REQUIRE_INTEROP").is_none(), "the terminal test needs `script`");
        eprintln!("terminal prompt test skipped: no `script` command");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let init = server(&["init"], &data);
    let pin = String::from_utf8_lossy(&init.stdout).trim().to_owned();
    assert!(server(&["user", "add", "ada"], &data).status.success());
    let enroll = server(&["user", "mfa", "enroll", "ada"], &data);
    let uri = String::from_utf8_lossy(&enroll.stdout).trim().to_owned();
    let secret = uri.split_once("secret=").and_then(|(_, rest)| rest.split('&').next()).expect("a secret");
    let secret = fieldvault_core::TotpSecret::from_base32(secret).expect("base32");
    let srv = serve(&data);
    let url = format!("https://127.0.0.1:{}", srv.port);
    let d = Device { cli: cli.clone(), vault: tmp.path().join("one") };
    d.ok(&["init", "--keystore", "passphrase"]);
    let line = format!("{} login --server {url} --user ada --pin {pin} --json", cli.display());
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .env("FIELDVAULT_VAULT", &d.vault)
        .env("FIELDVAULT_PASSPHRASE", PASSPHRASE)
        .env("FIELDVAULT_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let mut out = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("TOTP code:") {
        assert!(Instant::now() < deadline, "no prompt: {}", String::from_utf8_lossy(&seen));
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut out, &mut buf).expect("read");
        assert!(n > 0, "the login ended without asking: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let code = fieldvault_core::totp_code(&secret, fieldvault_core::totp_step(super::harness::now()));
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), format!("{}\n", code.as_str()).as_bytes())
        .expect("write");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    assert!(child.wait().expect("script").success(), "{}{rest}", String::from_utf8_lossy(&seen));
    let json = &rest[rest.find('{').unwrap_or_else(|| panic!("a JSON answer: {rest}"))..];
    let v: Value = serde_json::from_str(json.trim()).expect("JSON");
    assert_eq!(v["user"], "ada", "{v}");
    let me = d.ok(&["whoami", "--json"]);
    assert_eq!(me["user"], "ada");
    drop(srv);
}
