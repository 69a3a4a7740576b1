//! `serve` over real TLS on loopback, with the client's SPKI pinning.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fieldvault_client::{Pins, pinned_client_config};

use crate::{server, text};

/// A running server, killed on drop.
struct Running {
    child: Child,
    addr: SocketAddr,
    pin: String,
    data: String,
    /// Every line the server wrote to stderr so far.
    log: Arc<std::sync::Mutex<Vec<String>>>,
    _tmp: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Running {
    start_with_rules(None)
}

/// `init` then `serve` on a free port, with a rules file of this text if given.
fn start_with_rules(rules: Option<&str>) -> Running {
    start_with(rules, &[])
}

/// `init` then `serve` on a free port with these further `serve` arguments.
fn start_with(rules: Option<&str>, extra: &[&str]) -> Running {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let data = data.to_str().expect("utf-8").to_owned();
    let init = server(&["init", "--data", &data]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let pin = text(&init.stdout).trim().to_owned();
    let mut args = vec!["serve".to_owned(), "--listen".into(), "127.0.0.1:0".into(), "--data".into(), data.clone()];
    if let Some(rules) = rules {
        let path = tmp.path().join("rules.toml");
        std::fs::write(&path, rules).expect("rules file");
        args.extend(["--rules".to_owned(), path.to_str().expect("utf-8").to_owned()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(&args)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("fieldvault-server: listening on https://") {
                let _ = tx.send(addr.parse::<SocketAddr>().expect("address"));
            }
            lines.lock().expect("log").push(line);
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server reports its address");
    Running { child, addr, pin, data, log, _tmp: tmp }
}

/// Logs `user` in as a device labelled `device`; the token response.
fn login_tokens(s: &Running, user: &str, password: &str, device: &str) -> serde_json::Value {
    let body = serde_json::json!({ "user": user, "password": password, "device_name": device });
    let login = post(s, "/v1/auth/login", &body.to_string());
    serde_json::from_str(login.split("\r\n\r\n").nth(1).expect("body")).expect("JSON tokens")
}

/// A request signed now with the session of `tokens` (SPEC section 5); the whole response.
fn signed(s: &Running, tokens: &serde_json::Value, method: &str, target: &str, body: &str) -> String {
    let secret =
        fieldvault_core::protocol::SessionSecret::from_base64(tokens["session_secret"].as_str().expect("secret"))
            .expect("secret");
    let ts = crate::harness::now().to_string();
    let nonce = crate::harness::random_nonce();
    let sig = secret.sign_request(method, target, body.as_bytes(), &ts, &nonce);
    let raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         X-Key-Id: {}\r\nX-Timestamp: {ts}\r\nX-Nonce: {nonce}\r\nX-Signature: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
        tokens["access_token"].as_str().expect("token"),
        tokens["key_id"].as_str().expect("key id"),
        body.len()
    );
    request(s.addr, "localhost", &[&s.pin], &raw).expect("TLS request")
}

/// GET `path` over TLS with `pins`, as host `name`; the whole response, or the TLS error.
fn get(addr: SocketAddr, name: &str, pins: &[&str], path: &str) -> Result<String, std::io::Error> {
    request(addr, name, pins, &format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"))
}

/// POSTs JSON to `path`; the whole response.
fn post(s: &Running, path: &str, body: &str) -> String {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request(s.addr, "localhost", &[&s.pin], &raw).expect("TLS request")
}

/// Runs `fieldvault-server ARGS --data DATA` with only `env` set.
fn server_env(args: &[&str], data: &str, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(args)
        .args(["--data", data])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run fieldvault-server")
}

fn request(addr: SocketAddr, name: &str, pins: &[&str], raw: &str) -> Result<String, std::io::Error> {
    let mut config = pinned_client_config(Pins::parse(pins).expect("pins"));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = rustls::ClientConnection::new(Arc::new(config), name.to_owned().try_into().expect("server name"))
        .expect("client");
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(raw.as_bytes())?;
    let mut out = String::new();
    tls.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn healthz_answers_over_tls_with_the_right_pin_and_the_next_pin_alongside() {
    let s = start();
    let response = get(s.addr, "localhost", &[&s.pin], "/healthz").expect("TLS request");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""status":"ok""#), "{response}");
    let next = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let both = get(s.addr, "127.0.0.1", &[next, &s.pin], "/healthz").expect("current pin among several");
    assert!(both.starts_with("HTTP/1.1 200"), "{both}");
}

#[test]
fn a_wrong_pin_or_host_fails_the_handshake_before_any_http() {
    let s = start();
    let wrong = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let err = get(s.addr, "localhost", &[wrong], "/healthz").expect_err("pin mismatch");
    assert!(err.to_string().contains("ApplicationVerificationFailure"), "{err}");
    let err = get(s.addr, "example.com", &[&s.pin], "/healthz").expect_err("name mismatch");
    assert!(err.to_string().to_lowercase().contains("name"), "{err}");
}

#[test]
fn there_is_no_plaintext_http_and_no_tls_below_1_2() {
    let s = start();
    let mut tcp = TcpStream::connect(s.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("write");
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/"), "plaintext got an HTTP answer: {}", text(&buf));
    let s_client = |flag: &str| {
        Command::new("openssl")
            .args(["s_client", flag, "-connect", &s.addr.to_string(), "-servername", "localhost"])
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client")
    };
    // s_client prints the protocol it asked for either way; a refused handshake ends with an
    // alert and no cipher.
    let old = s_client("-tls1_1");
    let old = format!("{}{}", text(&old.stdout), text(&old.stderr));
    assert!(old.contains("Cipher is (NONE)") && old.contains("handshake failure"), "TLS 1.1 was accepted: {old}");
    let tls12 = s_client("-tls1_2");
    let tls12 = text(&tls12.stdout);
    assert!(tls12.contains("Protocol  : TLSv1.2") && !tls12.contains("Cipher is (NONE)"), "{tls12}");
}

#[test]
fn the_operator_adds_a_user_who_then_logs_in_and_the_store_on_disk_is_encrypted() {
    let s = start();
    let pw = [("FIELDVAULT_PASSWORD", "a long enough password")];
    let add = server_env(&["user", "add", "alice", "--role", "inspector"], &s.data, &pw);
    assert!(add.status.success(), "{}", text(&add.stderr));
    let again = server_env(&["user", "add", "alice"], &s.data, &pw);
    assert!(!again.status.success());
    assert_eq!(text(&again.stderr).lines().count(), 1, "one-line reason: {}", text(&again.stderr));
    assert!(text(&again.stderr).contains("already exists"), "{}", text(&again.stderr));
    let weak = server_env(&["user", "add", "bob"], &s.data, &[("FIELDVAULT_PASSWORD", "short")]);
    assert!(!weak.status.success() && text(&weak.stderr).contains("12"), "{}", text(&weak.stderr));
    let no_password = server_env(&["user", "add", "carol"], &s.data, &[]);
    assert!(text(&no_password.stderr).contains("FIELDVAULT_PASSWORD"), "{}", text(&no_password.stderr));

    let login = |password: &str| {
        let body = serde_json::json!({ "user": "alice", "password": password, "device_name": "t" }).to_string();
        post(&s, "/v1/auth/login", &body)
    };
    let ok = login("a long enough password");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("cache-control: no-store"), "{ok}");
    assert!(login("the wrong password!").starts_with("HTTP/1.1 401"));

    let passwd = server_env(&["user", "passwd", "alice"], &s.data, &[("FIELDVAULT_PASSWORD", "another long password")]);
    assert!(passwd.status.success(), "{}", text(&passwd.stderr));
    let changed = login("another long password");
    assert!(changed.starts_with("HTTP/1.1 200"), "{changed}");
    let disable = server_env(&["user", "disable", "alice"], &s.data, &[]);
    assert!(disable.status.success(), "{}", text(&disable.stderr));
    assert!(login("another long password").starts_with("HTTP/1.1 401"));
    let missing = server_env(&["user", "disable", "nobody"], &s.data, &[]);
    assert!(!missing.status.success() && text(&missing.stderr).contains("no user"), "{}", text(&missing.stderr));

    // The store is SQLCipher: Debian's sqlite3 cannot read it, and no name or hash shows.
    let db = std::path::Path::new(&s.data).join("server.db");
    let raw = std::fs::read(&db).expect("server.db");
    assert!(!raw.starts_with(b"SQLite format 3"));
    for needle in [&b"alice"[..], b"argon2id", b"inspector"] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle), "{} in plaintext", text(needle));
    }
    let sqlite3 = Command::new("sqlite3").arg(&db).arg("SELECT * FROM users").output().expect("sqlite3");
    assert!(text(&sqlite3.stderr).contains("file is not a database"), "{}", text(&sqlite3.stderr));
}

#[test]
fn user_names_follow_the_rule_and_passwords_the_passphrase_floor_at_add_and_passwd() {
    let s = start();
    let one_line_refusal = |out: &std::process::Output, needle: &str| {
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("fieldvault-server: ") && err.contains(needle), "{err}");
    };
    let pw = [("FIELDVAULT_PASSWORD", "a long enough password")];
    for bad in ["bad name/with slash", "a b", "_under", "<b>", "", &"u".repeat(65)] {
        let out = server_env(&["user", "add", bad], &s.data, &pw);
        let needle = if bad.is_empty() || bad.len() > 64 { "1 to 64 characters" } else { "A-Z a-z 0-9 _ . - @" };
        one_line_refusal(&out, needle);
    }
    for good in ["j.doe", "ada@example.org", "ops-team_2"] {
        let out = server_env(&["user", "add", good], &s.data, &pw);
        assert!(out.status.success(), "{good}: {}", text(&out.stderr));
    }
    // Long enough, and weak: zxcvbn scores it 3 as typed, 0 without the space.
    for weak in ["password password", "qwertyuiop12", "j.doe j.doe j.doe"] {
        let out = server_env(&["user", "add", "carol"], &s.data, &[("FIELDVAULT_PASSWORD", weak)]);
        one_line_refusal(&out, "password too weak");
        let out = server_env(&["user", "passwd", "j.doe"], &s.data, &[("FIELDVAULT_PASSWORD", weak)]);
        one_line_refusal(&out, "password too weak");
    }
    let nobody = server_env(&["user", "passwd", "nobody"], &s.data, &[("FIELDVAULT_PASSWORD", "password password")]);
    one_line_refusal(&nobody, "password too weak");
    // The weak reset changed nothing: the first password still logs in.
    let body = serde_json::json!({ "user": "j.doe", "password": "a long enough password", "device_name": "t" });
    assert!(post(&s, "/v1/auth/login", &body.to_string()).starts_with("HTTP/1.1 200"));
    // --help says so.
    let help = server_env(&["user", "add", "--help"], &s.data, &[]);
    let help = text(&help.stdout);
    assert!(help.contains("A-Z a-z 0-9 _ . - @") && help.contains("zxcvbn"), "{help}");
    let help = text(&server_env(&["user", "passwd", "--help"], &s.data, &[]).stdout);
    assert!(help.contains("zxcvbn"), "{help}");
}

#[test]
fn usage_errors_are_one_line_with_exit_code_2() {
    for args in [&["serve", "--bogus"][..], &["user"], &[], &["user", "add"], &["serve", "--listen", "nowhere"]] {
        let out = server(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("fieldvault-server: ") && err.trim_end().ends_with("(see --help)"), "{args:?}: {err}");
        assert!(!err.contains("Usage:"), "{args:?}: {err}");
    }
    let help = server(&["--help"]);
    assert!(help.status.success() && text(&help.stdout).contains("Usage:"), "{}", text(&help.stderr));
}

#[test]
fn a_malformed_rule_stops_serve_with_one_line_and_no_panic_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let data = data.to_str().expect("utf-8");
    let init = server(&["init", "--data", data]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let rules = tmp.path().join("rules.toml");
    for expression in ["doc.owner ==", "(doc.owner == user.id", "doc.", "user.roles.exists(r,", "}", "'a' in"] {
        let file = format!("version = 1\n[collections.sites]\nread = {expression:?}\nwrite = \"true\"\n");
        std::fs::write(&rules, file).expect("rules file");
        let rules = rules.to_str().expect("utf-8");
        // A backtrace would be printed with this set, if a panic reached the hook.
        let env = [("RUST_BACKTRACE", "1")];
        let out = server_env(&["serve", "--listen", "127.0.0.1:0", "--rules", rules], data, &env);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{expression}: {err}");
        assert_eq!(err.lines().count(), 1, "{expression}: {err}");
        assert!(err.contains("collection \"sites\": read: does not parse"), "{expression}: {err}");
        assert!(!err.contains("panicked") && !err.contains("backtrace"), "{expression}: {err}");
    }
}

/// `serve` on an existing data directory; the child and the address it reports.
fn serve_on(data: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data", data])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let addr = stderr
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("fieldvault-server: listening on https://").map(str::to_owned))
        .expect("the server reports its address");
    (child, addr.parse().expect("address"))
}

#[test]
fn a_second_serve_on_the_same_sqlite_store_refuses_while_the_first_lives() {
    let mut s = start();
    let second = server_env(&["serve", "--listen", "127.0.0.1:0"], &s.data, &[]);
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("another `fieldvault-server serve` is running"), "{err}");
    assert!(err.contains("serve.lock") && err.contains("PostgreSQL (--database-url)"), "{err}");

    // The other subcommands work beside it, and the first server still serves.
    let pw = [("FIELDVAULT_PASSWORD", "a long enough password")];
    let add = server_env(&["user", "add", "alice"], &s.data, &pw);
    assert!(add.status.success(), "{}", text(&add.stderr));
    for args in [&["device", "list"][..], &["audit", "verify"]] {
        let out = server_env(args, &s.data, &[]);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    assert!(login_tokens(&s, "alice", "a long enough password", "t")["access_token"].is_string());

    // A server killed outright leaves no lock behind: the kernel drops it with the process.
    s.child.kill().expect("SIGKILL");
    s.child.wait().expect("reaped");
    let (mut again, addr) = serve_on(&s.data);
    let health = get(addr, "localhost", &[&s.pin], "/healthz");
    let _ = again.kill();
    let _ = again.wait();
    assert!(health.expect("TLS").starts_with("HTTP/1.1 200"));
}

#[test]
fn the_operator_lists_and_wipes_a_device_and_rules_files_are_checked_at_start() {
    let s = start();
    let pw = [("FIELDVAULT_PASSWORD", "a long enough password")];
    let add = server_env(&["user", "add", "alice", "--attr", "region=north"], &s.data, &pw);
    assert!(add.status.success(), "{}", text(&add.stderr));
    let access = server_env(&["user", "access", "alice", "--role", "auditor", "--attr", "region=south"], &s.data, &[]);
    assert!(access.status.success(), "{}", text(&access.stderr));
    let bad = server_env(&["user", "access", "alice", "--attr", "no equals sign"], &s.data, &[]);
    assert!(!bad.status.success() && text(&bad.stderr).contains("key=value"), "{}", text(&bad.stderr));

    let tokens = login_tokens(&s, "alice", "a long enough password", "van 7");
    let device = tokens["device_id"].as_str().expect("device id").to_owned();

    let list = |json: bool| {
        let args: &[&str] = if json { &["device", "list", "--json"] } else { &["device", "list"] };
        let out = server_env(args, &s.data, &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let rows: serde_json::Value = serde_json::from_str(&list(true)).expect("JSON list");
    assert_eq!(rows[0]["id"], device.as_str());
    assert_eq!(rows[0]["retired"], serde_json::Value::Null);
    assert_eq!(rows[0]["lease_expires_at"], tokens["lease"]["expires_at"]);
    assert_eq!(
        (rows[0]["user"].clone(), rows[0]["name"].clone(), rows[0]["active"].clone()),
        ("alice".into(), "van 7".into(), true.into())
    );
    assert!(list(false).contains("van 7"));

    let wipe = server_env(&["device", "wipe", &device], &s.data, &[]);
    assert!(wipe.status.success(), "{}", text(&wipe.stderr));
    let rows: serde_json::Value = serde_json::from_str(&list(true)).expect("JSON list");
    assert_eq!(rows[0]["active"], false);
    assert_eq!(rows[0]["pending"][0]["kind"], "wipe");
    assert_eq!((rows[0]["retired"].as_str(), rows[0]["lease_expires_at"].is_null()), (Some("wiped"), true));
    assert!(list(false).contains("wiped"));
    let missing = server_env(&["device", "revoke", "dev_missing"], &s.data, &[]);
    assert!(!missing.status.success() && text(&missing.stderr).contains("no device"), "{}", text(&missing.stderr));
    assert_eq!(text(&missing.stderr).lines().count(), 1);

    // The running server sees the wipe at once: the device's next signed request is refused
    // and carries the directive.
    let answer = signed(&s, &tokens, "GET", "/v1/devices/self", "");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("x-fieldvault-directives: ey"), "{answer}");

    // A rules file with a mistake stops `serve` before it listens, naming the problem.
    let rules = std::path::Path::new(&s.data).join("../rules.toml");
    std::fs::write(&rules, "version = 1\n[collections.sites]\nread = \"doc.owner ==\"\nwrite = \"true\"\n")
        .expect("write");
    let out =
        server_env(&["serve", "--listen", "127.0.0.1:0", "--rules", rules.to_str().expect("utf-8")], &s.data, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("sites") && err.contains("read"), "{err}");
}

#[test]
fn a_document_that_makes_a_rule_panic_is_denied_without_flooding_the_log() {
    let s = start_with_rules(Some(
        "version = 1\n[collections.notes]\nread = \"doc.owner == user.id\"\n\
         write = \"doc.owner == user.id && doc.tags.exists(t, t == 'x')\"\n",
    ));
    let add = server_env(&["user", "add", "alice"], &s.data, &[("FIELDVAULT_PASSWORD", "a long enough password")]);
    assert!(add.status.success(), "{}", text(&add.stderr));
    let tokens = login_tokens(&s, "alice", "a long enough password", "t");
    let mut statuses = Vec::new();
    for (n, tags) in [serde_json::json!("x"), serde_json::json!("x"), serde_json::json!(["x"])].into_iter().enumerate()
    {
        let push = serde_json::json!({ "device_seq": 1, "ops": [{ "idempotency_key": crate::sync::key(),
            "collection": "notes", "id": format!("n{n}"), "op": "put", "body": { "tags": tags }, "base_version": 0 }] })
        .to_string();
        let answer = signed(&s, &tokens, "POST", "/v1/sync/push", &push);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let json: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("JSON");
        statuses.push(json["results"][0]["status"].as_str().expect("status").to_owned());
    }
    // A string where the rule expects a list: the interpreter panics, the rule denies; a list
    // passes. The server's log says nothing about it (no line per evaluation a device can cause).
    assert_eq!(statuses, ["forbidden", "forbidden", "applied"]);
    let log = s.log.clone();
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().expect("log").join("\n");
    assert!(!log.contains("panicked"), "{log}");
}

/// The `exp - iat` of a JWT, read without checking it.
fn token_lifetime(token: &str) -> u64 {
    use base64::Engine;
    let claims = token.split('.').nth(1).expect("claims");
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&claims).expect("JSON");
    claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat")
}

#[test]
fn serve_takes_the_access_and_lease_lifetimes_from_its_flags() {
    let s = start_with(None, &["--access-ttl", "120", "--lease-ttl", "7200"]);
    let pw = [("FIELDVAULT_PASSWORD", "a long enough password")];
    assert!(server_env(&["user", "add", "alice"], &s.data, &pw).status.success());
    let before = crate::harness::now();
    let tokens = login_tokens(&s, "alice", "a long enough password", "t");
    assert_eq!(tokens["expires_in"], 120);
    assert_eq!(token_lifetime(tokens["access_token"].as_str().expect("access token")), 120);
    assert_eq!(
        token_lifetime(tokens["offline_token"].as_str().expect("offline token")),
        7200,
        "it ends with the lease"
    );
    let expires = tokens["lease"]["expires_at"].as_u64().expect("lease expiry");
    assert!((before + 7200..=crate::harness::now() + 7200).contains(&expires), "{expires}");
    // Out of range: refused before anything listens, with the range named.
    for (flag, value) in [("--access-ttl", "5"), ("--lease-ttl", "60"), ("--access-ttl", "ten")] {
        let out = server_env(&["serve", "--listen", "127.0.0.1:0", flag, value], &s.data, &[]);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(text(&out.stderr).contains(flag), "{}", text(&out.stderr));
    }
}

/// A pinned TLS connection with its handshake done and nothing sent, or the handshake's error.
fn handshake(
    addr: SocketAddr,
    pin: &str,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, std::io::Error> {
    let mut config = pinned_client_config(Pins::parse(&[pin]).expect("pins"));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().expect("server name")).expect("client");
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

#[test]
fn serve_caps_the_connections_of_one_address_from_its_flag() {
    let s = start_with(None, &["--max-connections-per-address", "2"]);
    // The server may still count the previous handshake for a moment after the client's side
    // of it finished (its share of handshake slots is 1 under a cap of 2): tried again, for
    // up to 5 s.
    let within = || {
        let mut last = None;
        for _ in 0..50 {
            match handshake(s.addr, &s.pin) {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("within the cap: {last:?}");
    };
    let held: Vec<_> = (0..2).map(|_| within()).collect();
    let third = handshake(s.addr, &s.pin);
    assert!(third.is_err(), "a third connection from the same address is closed before its handshake");
    drop(held);
    // Out of range: refused before anything listens, with the flag named.
    for value in ["0", "513", "many"] {
        let out =
            server_env(&["serve", "--listen", "127.0.0.1:0", "--max-connections-per-address", value], &s.data, &[]);
        assert!(!out.status.success(), "{value}");
        assert!(text(&out.stderr).contains("--max-connections-per-address"), "{}", text(&out.stderr));
    }
}

#[test]
fn the_operator_enables_and_removes_users() {
    let s = start();
    let pw = [("FIELDVAULT_PASSWORD", "a long enough password")];
    assert!(server_env(&["user", "add", "alice"], &s.data, &pw).status.success());
    let tokens = login_tokens(&s, "alice", "a long enough password", "t");
    assert!(tokens["device_secret"].is_string(), "{tokens}");
    let login = || {
        let body = serde_json::json!({ "user": "alice", "password": "a long enough password", "device_name": "t" });
        post(&s, "/v1/auth/login", &body.to_string())
    };
    assert!(server_env(&["user", "disable", "alice"], &s.data, &[]).status.success());
    assert!(login().starts_with("HTTP/1.1 401"));
    let enable = server_env(&["user", "enable", "alice", "--json"], &s.data, &[]);
    assert!(enable.status.success(), "{}", text(&enable.stderr));
    assert!(text(&enable.stdout).contains("enabled"), "{}", text(&enable.stdout));
    assert!(login().starts_with("HTTP/1.1 200"));

    let remove = server_env(&["user", "remove", "alice"], &s.data, &[]);
    assert!(remove.status.success(), "{}", text(&remove.stderr));
    assert!(text(&remove.stderr).contains("removed"), "{}", text(&remove.stderr));
    assert!(login().starts_with("HTTP/1.1 401"));
    let list = server_env(&["device", "list", "--json"], &s.data, &[]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&list.stdout).expect("JSON"), serde_json::json!([]));
    for cmd in ["enable", "remove"] {
        let missing = server_env(&["user", cmd, "alice"], &s.data, &[]);
        assert!(!missing.status.success() && text(&missing.stderr).contains("no user"), "{}", text(&missing.stderr));
    }
}

#[test]
fn a_serving_server_has_core_dumps_off_and_is_not_dumpable() {
    use std::os::unix::process::CommandExt;
    /// The uid of `nobody`, for a process that must not run as root.
    const NOBODY: u32 = 65534;

    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // A root process's entries under /proc belong to root whether it is dumpable or not.
    let as_root = rustix::process::geteuid().is_root();
    if as_root {
        std::os::unix::fs::chown(tmp.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let command = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"));
        cmd.args(args).arg("--data").arg(&data).env_clear();
        if as_root {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        cmd
    };
    let init = command(&["init"]).output().expect("init");
    assert!(init.status.success(), "{}", text(&init.stderr));
    let mut child = command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    // The address comes after `main`'s first step and after the keys are loaded.
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let listening = stderr.lines().map_while(Result::ok).any(|l| l.contains("fieldvault-server: listening on"));
    let seen = fieldvault_hygiene::observe(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server reports its address");
    let seen = seen.expect("/proc");
    assert_eq!((seen.core_soft_limit, seen.core_hard_limit), (Some(0), Some(0)), "RLIMIT_CORE in /proc/PID/limits");
    assert_eq!(seen.dumpable, Some(false), "/proc/PID/fd belongs to root");
}
