//! `fieldvault-server` as an operator runs it: the real binary on real files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

mod admission;
mod attachment_sync;
mod attachments;
mod audit;
mod auth;
mod certs;
mod channel;
mod cli_oidc;
mod cli_sync;
mod connections;
mod console;
mod console_browser;
mod continuity;
mod device_sync;
mod devices;
mod harness;
mod idp;
mod mfa;
mod oidc;
mod oidc_flow;
mod phone;
mod recovery;
mod serve;
mod shared;
mod soak;
mod storage;
mod sync;
mod sync_limits;
mod tls_scan;
#[path = "../../../client/tests/it/tmpfs.rs"]
mod tmpfs;

pub(crate) fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(args)
        .env_clear()
        .output()
        .expect("run fieldvault-server")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The pin computed by OpenSSL from the certificate file alone.
fn openssl_pin(cert: &Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = Command::new("sh").arg("-c").arg(script).output().expect("openssl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    format!("sha256/{}", text(&out.stdout).trim())
}

#[test]
fn init_creates_private_keys_apart_from_the_data_and_prints_the_certificate_pin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let out = server(&["init", "--data", data.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pin = text(&out.stdout).trim().to_owned();
    assert!(pin.starts_with("sha256/") && pin.len() == 7 + 44, "{pin}");
    let keys = tmp.path().join("data.keys");
    assert_eq!(openssl_pin(&keys.join("tls-cert.pem")), pin, "the printed pin is the certificate's SPKI pin");
    for d in [&data, &keys] {
        assert_eq!(std::fs::metadata(d).expect("stat").permissions().mode() & 0o777, 0o700, "{}", d.display());
    }
    for f in ["store.key", "token-signing.p8", "tls-cert.pem", "tls-key.pem"] {
        let meta = std::fs::metadata(keys.join(f)).expect(f);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
    }
    assert_eq!(std::fs::metadata(keys.join("store.key")).expect("stat").len(), 32);
    assert_eq!(std::fs::read_dir(&data).expect("list").count(), 0, "no key material in the data directory");
    // The token-signing key is a real Ed25519 PKCS#8 key, and the certificate names the hosts.
    let ed = Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(keys.join("token-signing.p8"))
        .output()
        .expect("openssl");
    assert!(text(&ed.stdout).contains("ED25519"), "{}", text(&ed.stdout));
    let cert = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(keys.join("tls-cert.pem"))
        .output()
        .expect("openssl");
    let cert = text(&cert.stdout);
    assert!(cert.contains("DNS:localhost") && cert.contains("IP Address:127.0.0.1"), "{cert}");
}

#[test]
fn init_twice_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("d");
    let keys = tmp.path().join("k");
    let args = ["init", "--data", data.to_str().expect("utf-8"), "--key-dir", keys.to_str().expect("utf-8"), "--json"];
    let first = server(&args);
    assert!(first.status.success());
    let json: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON");
    let before = std::fs::read(keys.join("store.key")).expect("read");
    let again = server(&args);
    assert!(!again.status.success());
    let err = text(&again.stderr);
    assert!(err.contains("already holds server keys; nothing was changed") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read(keys.join("store.key")).expect("read"), before);
    assert_eq!(openssl_pin(&keys.join("tls-cert.pem")), json["pin"].as_str().expect("pin"));
}

#[test]
fn two_servers_get_different_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pins: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| {
            text(&server(&["init", "--data", tmp.path().join(n).to_str().expect("utf-8")]).stdout).trim().to_owned()
        })
        .collect();
    assert_ne!(pins[0], pins[1]);
    assert_ne!(
        std::fs::read(tmp.path().join("a.keys/store.key")).expect("read"),
        std::fs::read(tmp.path().join("b.keys/store.key")).expect("read")
    );
}

#[test]
fn init_takes_an_operators_certificate_and_refuses_a_key_that_does_not_fit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let make = |name: &str| {
        let (cert, key) = (tmp.path().join(format!("{name}.crt")), tmp.path().join(format!("{name}.key")));
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
            .args(["-subj", "/CN=vault.example", "-addext", "subjectAltName=DNS:vault.example"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl req");
        assert!(ok.status.success(), "{}", text(&ok.stderr));
        (cert, key)
    };
    let (cert, key) = make("a");
    let (_, other_key) = make("b");
    let data = tmp.path().join("data");
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let bad = server(&["init", "--data", &path(&data), "--tls-cert", &path(&cert), "--tls-key", &path(&other_key)]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("does not fit the certificate"), "{}", text(&bad.stderr));
    assert!(!tmp.path().join("data.keys").exists(), "nothing written");
    let good = server(&["init", "--data", &path(&data), "--tls-cert", &path(&cert), "--tls-key", &path(&key)]);
    assert!(good.status.success(), "{}", text(&good.stderr));
    assert_eq!(text(&good.stdout).trim(), openssl_pin(&cert));
    assert_eq!(
        std::fs::read(tmp.path().join("data.keys/tls-cert.pem")).expect("read"),
        std::fs::read(&cert).expect("read")
    );
}
