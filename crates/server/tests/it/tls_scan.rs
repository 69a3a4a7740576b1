//! The TLS configuration of a freshly initialised server, scanned by sslyze against Mozilla's
//! "intermediate" profile (installed by scripts/setup.sh in its own virtual environment): the
//! only finding allowed is the self-signed certificate's trust path, which pinning replaces
//! (devices trust the key, not a CA; docs/protocol.md section 3).

use std::path::PathBuf;
use std::process::Command;

use crate::cli_sync::{serve_with, server};

/// Where scripts/setup.sh puts sslyze.
fn sslyze() -> Option<PathBuf> {
    let venv = std::env::var_os("FIELDVAULT_SSLYZE_VENV").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(cache.join("fieldvault/sslyze"))
    })?;
    let bin = venv.join("bin/sslyze");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(std::env::var_os("FIELDVAULT_REQUIRE_INTEROP").is_none(), "sslyze is required (run scripts/setup.sh)");
    eprintln!("TLS scan skipped: no sslyze at {} (run scripts/setup.sh)", bin.display());
    None
}

#[test]
fn a_fresh_server_meets_mozillas_intermediate_profile_but_for_the_self_signed_trust_path() {
    let Some(sslyze) = sslyze() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    assert!(server(&["init"], &data).status.success());
    let srv = serve_with(&data, &[]);
    let scan = Command::new(sslyze)
        .args(["--mozilla_config=intermediate", &format!("127.0.0.1:{}", srv.port)])
        .output()
        .expect("sslyze");
    let report = String::from_utf8_lossy(&scan.stdout);
    let compliance =
        report.split("COMPLIANCE AGAINST").nth(1).unwrap_or_else(|| panic!("no compliance section: {report}"));
    let findings: Vec<&str> = compliance.lines().map(str::trim).filter(|l| l.starts_with("* ")).collect();
    assert_eq!(findings.len(), 1, "{compliance}");
    assert!(findings[0].starts_with("* certificate_path_validation:"), "{compliance}");
    // The scan saw TLS 1.2 and 1.3 and nothing older.
    assert!(report.contains("TLS 1.3 Cipher Suites") && report.contains("TLS_AES_128_GCM_SHA256"), "{report}");
}
