//! The Kotlin (JVM) suite (crates/ffi/kotlin/tests) against the generated bindings and a
//! real server: compiled with the pinned Kotlin compiler (npm `kotlin-compiler`, with
//! kotlinx-coroutines) and Debian's JNA, then run; its pass/fail counts printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::foreign::{generate, have, profile_dir, serve};

fn kotlin_home() -> PathBuf {
    std::env::var_os("FIELDVAULT_KOTLIN_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("kotlin/node_modules/kotlin-compiler"))
}

const JNA: &str = "/usr/share/java/jna.jar";

fn kotlin_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            kotlin_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "kt") {
            out.push(path);
        }
    }
}

#[test]
fn the_kotlin_suite_passes_against_the_real_server() {
    let home = kotlin_home();
    let kotlinc = home.join("bin/kotlinc");
    let ready = have("the Kotlin compiler (npm kotlin-compiler)", Command::new(&kotlinc).arg("-version"), "Kotlin")
        && have("java", Command::new("java").arg("-version"), "Kotlin")
        && have("JNA (Debian libjna-java)", Command::new("test").args(["-f", JNA]), "Kotlin");
    if !ready {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let generated = tmp.path().join("generated");
    generate("kotlin", &generated);
    let mut sources = Vec::new();
    kotlin_files(&generated, &mut sources);
    sources.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("kotlin/tests/VaultTest.kt"));
    let lib = home.join("lib");
    let classpath = |extra: &Path| {
        std::env::join_paths([
            extra.to_path_buf(),
            PathBuf::from(JNA),
            lib.join("kotlinx-coroutines-core-jvm.jar"),
            lib.join("kotlin-stdlib.jar"),
        ])
        .expect("classpath")
    };
    let classes = tmp.path().join("classes");
    let compile = Command::new(&kotlinc)
        .args(&sources)
        .arg("-nowarn")
        .arg("-cp")
        .arg(classpath(Path::new(JNA)))
        .arg("-d")
        .arg(&classes)
        .output()
        .expect("kotlinc");
    assert!(compile.status.success(), "kotlinc failed:\n{}", String::from_utf8_lossy(&compile.stderr));
    let server = serve(tmp.path());
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(classpath(&classes))
        .arg(format!("-Djna.library.path={}", profile_dir().display()))
        .arg("VaultTestKt")
        .env("FIELDVAULT_TEST_TMP", tmp.path());
    server.env(&mut cmd);
    let out = cmd.output().expect("java");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().find(|l| l.starts_with("Kotlin suite:")).unwrap_or("Kotlin suite: no summary");
    // Straight to stdout, past the test harness's capture: the counts show in every run.
    let _ = writeln!(std::io::stdout(), "{summary}");
    assert!(out.status.success(), "the Kotlin suite failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}
