//! The Python suite (crates/ffi/python/tests) against the generated bindings and a real
//! server: `python3 -m pytest`, its pass/fail counts printed.

use std::io::Write;
use std::process::Command;

use crate::foreign::{generate, have, library, serve};

#[test]
fn the_python_suite_passes_against_the_real_server() {
    if !have("python3 with pytest", Command::new("python3").args(["-c", "import pytest"]), "Python") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // The layout `pip install ./crates/ffi` (maturin) gives: a package with the library in it.
    let package = tmp.path().join("py").join("fieldvault");
    generate("python", &package);
    std::fs::copy(library(), package.join(library().file_name().expect("name"))).expect("copy the library");
    for file in ["__init__.py", "py.typed"] {
        let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/fieldvault").join(file);
        std::fs::copy(ours, package.join(file)).expect("the package's own files");
    }
    let server = serve(tmp.path());
    let suite = concat!(env!("CARGO_MANIFEST_DIR"), "/python/tests");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", suite])
        .env("PYTHONPATH", tmp.path().join("py"))
        .env("FIELDVAULT_TEST_TMP", tmp.path());
    server.env(&mut cmd);
    let out = cmd.output().expect("pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().rev().find(|l| l.contains("passed") || l.contains("failed")).unwrap_or("no summary");
    // Straight to stdout, past the test harness's capture: the counts show in every run.
    let _ = writeln!(std::io::stdout(), "Python suite: {summary}");
    assert!(out.status.success(), "the Python suite failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}
