//! What the Python and Kotlin suites share: the generated bindings beside the library, a
//! real `fieldvault-server` on loopback, and the rule for missing tools.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The password of the server's user `ada` (handed to the suites in the environment).
pub(crate) const PASSWORD: &str = "a long enough password for the bindings";

/// The target directory's profile folder (`target/debug`), where cargo put the library.
pub(crate) fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    exe.parent().and_then(Path::parent).expect("target/debug/deps/it-HASH").to_path_buf()
}

/// The cdylib the bindings load, built from this source: `cargo test` builds the crate's
/// library for linking into the tests but not always its cdylib, so a nested `cargo build`
/// brings it up to date (once per test process; a no-op when it is).
pub(crate) fn library() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "fieldvault-ffi", "--lib"]);
        if profile_dir().ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo build");
        assert!(status.success(), "building the fieldvault-ffi library failed");
    });
    profile_dir().join(format!("{}fieldvault_ffi{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX))
}

/// Writes the bindings for `language` into `out`.
pub(crate) fn generate(language: &str, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
        .args(["generate", "--no-format"])
        .arg(library())
        .args(["--language", language, "--out-dir"])
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("uniffi-bindgen");
    assert!(status.success(), "uniffi-bindgen generate --language {language} failed");
}

/// Whether `tool` can run; when it cannot, a notice (skipped) or, under
/// `FIELDVAULT_REQUIRE_INTEROP`, a failure.
pub(crate) fn have(tool: &str, check: &mut Command, suite: &str) -> bool {
    let ok = check.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("FIELDVAULT_REQUIRE_INTEROP").is_none(),
            "the {suite} suite needs {tool} (scripts/setup.sh installs it)"
        );
        eprintln!("{suite} suite skipped: {tool} is missing (scripts/setup.sh installs it)");
    }
    ok
}

/// The `fieldvault-server` binary: `FIELDVAULT_BIN_DIR` (CI's release build), else the one
/// beside this test (`cargo test --workspace` builds it), else built now.
pub(crate) fn server_binary() -> PathBuf {
    if let Some(dir) = std::env::var_os("FIELDVAULT_BIN_DIR") {
        return PathBuf::from(dir).join("fieldvault-server");
    }
    let here = profile_dir().join("fieldvault-server");
    if !here.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "fieldvault-server", "--bin", "fieldvault-server"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building fieldvault-server failed");
    }
    here
}

/// A running server with user `ada`; killed on drop.
pub(crate) struct Server {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// Its TLS key's pin.
    pub(crate) pin: String,
    /// Its data directory (for `device wipe`).
    pub(crate) data: PathBuf,
    /// The binary.
    pub(crate) bin: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(bin: &Path, args: &[&str], data: &Path) -> Output {
    Command::new(bin)
        .args(args)
        .arg("--data")
        .arg(data)
        .env("FIELDVAULT_PASSWORD", PASSWORD)
        .output()
        .expect("fieldvault-server")
}

/// `fieldvault-server init`, `user add ada`, `serve` on a free loopback port.
pub(crate) fn serve(tmp: &Path) -> Server {
    let bin = server_binary();
    let data = tmp.join("server");
    let init = run(&bin, &["init"], &data);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let pin = String::from_utf8_lossy(&init.stdout).trim().to_owned();
    let add = run(&bin, &["user", "add", "ada"], &data);
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(&bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, url: format!("https://127.0.0.1:{port}"), pin, data, bin }
}

impl Server {
    /// The environment the suites read.
    pub(crate) fn env(&self, cmd: &mut Command) {
        cmd.env("FIELDVAULT_TEST_SERVER_URL", &self.url)
            .env("FIELDVAULT_TEST_SERVER_PIN", &self.pin)
            .env("FIELDVAULT_TEST_SERVER_DATA", &self.data)
            .env("FIELDVAULT_TEST_SERVER_BIN", &self.bin)
            .env("FIELDVAULT_TEST_USER", "ada")
            .env("FIELDVAULT_PASSWORD", PASSWORD);
    }
}
