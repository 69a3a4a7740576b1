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

/// The example from the README (examples/python/field_notes.py), run as a developer runs it:
/// two state directories log in, one adds a note and syncs, the other syncs and lists it.
#[test]
fn the_python_example_runs_against_the_real_server() {
    if !have("python3 with cryptography", Command::new("python3").args(["-c", "import cryptography"]), "Python example")
    {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let package = tmp.path().join("py").join("fieldvault");
    generate("python", &package);
    std::fs::copy(library(), package.join(library().file_name().expect("name"))).expect("copy the library");
    let init = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/fieldvault/__init__.py");
    std::fs::copy(init, package.join("__init__.py")).expect("__init__.py");
    let server = serve(tmp.path());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/python/field_notes.py");
    let run = |state: &str, args: &[&str]| {
        let mut cmd = Command::new("python3");
        cmd.arg(example)
            .arg("--vault")
            .arg(tmp.path().join(state))
            .args(args)
            .env("PYTHONPATH", tmp.path().join("py"))
            .env("FIELDVAULT_PASSPHRASE", "marble quokka seventy umbrella notes")
            .env("FIELDVAULT_PASSWORD", crate::foreign::PASSWORD);
        let out = cmd.output().expect("python3");
        assert!(out.status.success(), "field_notes.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for state in ["one", "two"] {
        let login = run(state, &["login", "--server", &server.url, "--user", "ada", "--pin", &server.pin]);
        assert!(login.starts_with("logged in as ada"), "{login}");
    }
    run("one", &["add", "pump 3 leaks"]);
    assert!(run("one", &["sync"]).starts_with("sent 1"));
    run("two", &["sync"]);
    assert!(run("two", &["list"]).contains("pump 3 leaks"));
}
