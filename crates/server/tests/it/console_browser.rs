//! The admin console in a real browser (`tests/console/e2e.mjs`: Debian's chromium driven by
//! playwright-core from npm) against the real `fieldvault-server` binary and a real device
//! (the `fieldvault` command line), on SQLite and on PostgreSQL. Screenshots of each page are
//! kept under `target/tmp/console-screenshots/`.
//!
//! The binaries are the test build's own, or those in `FIELDVAULT_BIN_DIR` when it is set:
//! `.ci/run` points it at the release build, so CI runs the suite against the release binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_PASSWORD: &str = "a long console password";
/// The device user's password and the device vault's passphrase.
const TECH_PASSWORD: &str = "quokka lantern seventy harbour";
const TECH_PASSPHRASE: &str = "marble quokka seventy umbrella console";

/// The browser, the driver and node, or None (with a notice) where they are not installed;
/// CI requires them (`FIELDVAULT_REQUIRE_INTEROP`).
fn suite() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let ready = Path::new("/usr/bin/chromium").exists()
        && dir.join("node_modules/playwright-core/package.json").is_file()
        && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if ready {
        return Some(dir);
    }
    assert!(
        std::env::var_os("FIELDVAULT_REQUIRE_INTEROP").is_none(),
        "the console's browser tests need chromium, node and playwright-core (run scripts/setup.sh)"
    );
    eprintln!("console browser tests skipped: chromium, node or playwright-core is missing (scripts/setup.sh)");
    None
}

/// The binary `name`: from `FIELDVAULT_BIN_DIR` when set (it must be there), else the test
/// build's (`fieldvault` sits next to `fieldvault-server`; None when it was not built).
fn binary(name: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FIELDVAULT_BIN_DIR").filter(|d| !d.is_empty()) {
        let path = PathBuf::from(dir).join(name);
        assert!(path.is_file(), "FIELDVAULT_BIN_DIR has no {}", path.display());
        return Some(path);
    }
    let path = PathBuf::from(env!("CARGO_BIN_EXE_fieldvault-server")).with_file_name(name);
    path.is_file().then_some(path)
}

fn server_binary() -> PathBuf {
    binary("fieldvault-server").expect("the fieldvault-server binary")
}

fn server(data: &Path, db: Option<&str>, args: &[&str]) -> Command {
    let mut c = Command::new(server_binary());
    c.args(args).arg("--data").arg(data).env_clear().env("FIELDVAULT_PASSWORD", ADMIN_PASSWORD);
    if let Some(url) = db {
        c.arg("--database-url").arg(url);
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs the browser suite against a fresh server on `db` (None: SQLite), with the device
/// command line `cli`.
fn run_suite(dir: &Path, cli: &Path, label: &str, db: Option<&str>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let init = server(&data, None, &["init"]).output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let pin = String::from_utf8_lossy(&init.stdout).trim().to_owned();
    let add = server(&data, db, &["admin", "add", "root"]).output().expect("admin add");
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let tech = server(&data, db, &["user", "add", "tech"]).env("FIELDVAULT_PASSWORD", TECH_PASSWORD).output();
    let tech = tech.expect("user add");
    assert!(tech.status.success(), "{}", String::from_utf8_lossy(&tech.stderr));
    let (port, admin_port) = (free_port(), free_port());
    let mut serve = server(
        &data,
        db,
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin_port}")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(Instant::now() < deadline, "the console did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots").join(label);
    let vault = tmp.path().join("device");
    let out = Command::new("node")
        .arg("e2e.mjs")
        .args(["--url", &format!("https://127.0.0.1:{admin_port}"), "--pin", &pin, "--admin", "root"])
        .arg("--screenshots")
        .arg(&shots)
        .arg("--fieldvault")
        .arg(cli)
        .args(["--device-url", &format!("https://127.0.0.1:{port}"), "--device-user", "tech"])
        .env("FV_CONSOLE_PASSWORD", ADMIN_PASSWORD)
        .env("FIELDVAULT_VAULT", &vault)
        .env("FIELDVAULT_PASSPHRASE", TECH_PASSPHRASE)
        .env("FIELDVAULT_PASSWORD", TECH_PASSWORD)
        .current_dir(dir)
        .output()
        .expect("node");
    let _ = serve.kill();
    let _ = serve.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{label}:\n{stdout}");
    assert!(out.status.success(), "{label}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" passed, 0 failed") && !summary.starts_with("0 "), "{summary}");
    for shot in ["04-users-escaped", "10-devices", "12-sessions", "13-device-wiped", "14-health", "16-audit"] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "{shot}: screenshots kept in {}", shots.display());
    }

    // What the administrator did is in the audit log, under their name, and the chain holds.
    let verify = server(&data, db, &["audit", "verify"]).output().expect("audit verify");
    assert!(verify.status.success(), "{label}: {}", String::from_utf8_lossy(&verify.stderr));
    let export = server(&data, db, &["audit", "export"]).output().expect("audit export");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for action in [
        "admin.add",
        "console.login.enrolment",
        "console.totp.enrolled",
        "console.login.failed",
        "user.add",
        "user.disable",
        "directive.issued",
        "directive.acknowledged",
        "session.revoke_all",
        "login",
    ] {
        assert!(lines.iter().any(|r| r["action"] == action), "{label}: no {action} in {lines:?}");
    }
    let disabled = lines.iter().find(|r| r["action"] == "user.disable").expect("user.disable");
    assert_eq!(
        (&disabled["actor"], &disabled["target"]),
        (&serde_json::json!("admin:root"), &serde_json::json!("field-worker"))
    );
    let issued: Vec<&serde_json::Value> = lines.iter().filter(|r| r["action"] == "directive.issued").collect();
    let kinds: Vec<&serde_json::Value> = issued.iter().map(|r| &r["detail"]["kind"]).collect();
    assert_eq!(kinds, [&serde_json::json!("revoke"), &serde_json::json!("wipe")], "{label}");
    assert!(issued.iter().all(|r| r["actor"] == "admin:root"), "{label}: {issued:?}");
    let acked = lines.iter().filter(|r| r["action"] == "directive.acknowledged").count();
    assert_eq!(acked, 2, "{label}: the device acknowledged both");
}

#[test]
fn the_console_works_in_a_real_browser_on_sqlite_and_postgresql() {
    let Some(dir) = suite() else { return };
    let Some(cli) = binary("fieldvault") else {
        assert!(
            std::env::var_os("FIELDVAULT_REQUIRE_INTEROP").is_none(),
            "the console's browser tests need the fieldvault binary (cargo test --workspace builds it)"
        );
        eprintln!("console browser tests skipped: no fieldvault binary (run cargo test --workspace)");
        return;
    };
    eprintln!("console browser tests with {} and {}", server_binary().display(), cli.display());
    run_suite(&dir, &cli, "sqlite", None);
    if let Some(url) = std::env::var("FIELDVAULT_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) {
        // A schema of its own, named in the URL's connection options.
        let schema = crate::harness::fresh_schema();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut conn)
                .await
                .expect("schema");
        });
        let sep = if url.contains('?') { '&' } else { '?' };
        let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
        run_suite(&dir, &cli, "postgres", Some(&scoped));
        runtime.block_on(async {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
            let drop = format!("DROP SCHEMA {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await.expect("drop schema");
        });
    } else {
        eprintln!("console browser test on PostgreSQL skipped: FIELDVAULT_TEST_POSTGRES is not set");
    }
}
