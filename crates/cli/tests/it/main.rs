//! `fieldvault` as a user runs it: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod documents;
mod export;
mod keys;
#[path = "../../../client/tests/it/tmpfs.rs"]
mod tmpfs;

pub(crate) const GOOD: &str = "marble quokka seventy umbrella";

/// A scratch vault location and a way to run the binary against it.
pub(crate) struct Env {
    _tmp: tempfile::TempDir,
    pub(crate) vault: PathBuf,
}

impl Env {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vault = tmp.path().join("vault");
        Env { _tmp: tmp, vault }
    }

    /// Runs `fieldvault ARGS` with the vault set, no terminal, a clean environment apart from
    /// `envs`, and no reachable D-Bus (so the OS keystore is reliably absent).
    pub(crate) fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.run_with_stdin(args, envs, None)
    }

    pub(crate) fn run_with_stdin(&self, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut cmd = self.command(args, envs);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn fieldvault");
        if let Some(text) = stdin {
            use std::io::Write;
            // The CLI may stop reading early (a document over the size limit): a broken pipe is fine.
            match child.stdin.take().expect("stdin").write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
                _ => {}
            }
        }
        child.wait_with_output().expect("wait")
    }

    /// `fieldvault ARGS` set up as [`Env::run`] runs it, not started.
    pub(crate) fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldvault"));
        cmd.args(args)
            .env_clear()
            .env("FIELDVAULT_VAULT", &self.vault)
            .env("HOME", self.vault.parent().expect("parent"))
            .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/fieldvault-test-bus")
            .envs(envs.iter().copied());
        cmd
    }

    pub(crate) fn init(&self) {
        let out = self.run(&["init", "--keystore", "passphrase"], &[("FIELDVAULT_PASSPHRASE", GOOD)]);
        assert_ok(&out);
    }

    pub(crate) fn json(&self, args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all, envs);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).expect("--json prints JSON")
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.vault.join(rel)
    }
}

pub(crate) fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Asserts a failure with exactly one line on stderr containing `needle`; returns it.
pub(crate) fn assert_fails_with(out: &Output, needle: &str) -> String {
    assert!(!out.status.success(), "expected failure, got success: {}", text(&out.stdout));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("OS keystore is not available")).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err}");
    assert!(lines[0].contains(needle), "stderr {err:?} lacks {needle:?}");
    lines[0].to_owned()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn exists(p: &Path) -> bool {
    p.exists()
}
