//! Certificate rotation as an operator runs it, with real binaries: `cert next` while devices
//! sync (they learn the next key's pin from the signed `GET /v1/server/pins`), `cert rotate`
//! and a restart (a device that synced keeps working; one that did not is refused by its own
//! pin check), `cert rotate --undo`; `cert renew` keeps the pin; a rotation cut by a crash is
//! finished; the certificate `init` makes is a standard one-year leaf.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cli_sync::{Device, Server, cli_binary, serve_on, server};

fn serve(data: &Path, port: u16) -> Server {
    serve_on(data, port, &[])
}

fn out(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn status(data: &Path) -> serde_json::Value {
    serde_json::from_str(&out(&server(&["cert", "status", "--json"], data))).expect("JSON")
}

#[test]
fn devices_learn_the_next_pin_at_sync_and_keep_working_across_a_rotation_and_its_undo() {
    let Some(cli) = cli_binary() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let pin = out(&server(&["init"], &data));
    assert!(server(&["user", "add", "ada"], &data).status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("https://127.0.0.1:{port}");
    let srv = serve(&data, port);
    let (synced, idle) =
        (Device { cli: cli.clone(), vault: tmp.path().join("one") }, Device { cli, vault: tmp.path().join("two") });
    for d in [&synced, &idle] {
        d.ok(&["init", "--keystore", "passphrase"]);
        d.ok(&["login", "--server", &url, "--user", "ada", "--pin", &pin, "--json"]);
    }
    // The next key: the running server announces it at once; the first device syncs.
    let next = out(&server(&["cert", "next"], &data));
    assert_ne!(next, pin);
    assert_eq!(out(&server(&["cert", "next"], &data)), next, "a second `cert next` keeps the key");
    synced.ok(&["put", "notes", "n1", r#"{"text":"before"}"#]);
    assert_eq!(synced.ok(&["sync", "--json"])["pushed"], 1);
    drop(srv);

    // Rotate and restart: the device that synced pins the new key; the other only the old.
    assert_eq!(out(&server(&["cert", "rotate"], &data)), next);
    let keys = status(&data);
    assert_eq!((keys[0]["key"].as_str(), keys[0]["pin"].as_str()), (Some("current"), Some(next.as_str())));
    assert_eq!((keys[1]["key"].as_str(), keys[1]["pin"].as_str()), (Some("previous"), Some(pin.as_str())));
    let srv = serve(&data, port);
    synced.ok(&["put", "notes", "n2", r#"{"text":"after"}"#]);
    assert_eq!(synced.ok(&["sync", "--json"])["pushed"], 1, "the synced device follows the rotation");
    let refused = idle.run(&["sync"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("pin"), "the idle device refuses the new key by its pins: {err}");
    drop(srv);

    // Undo: the old key again; both devices work (the synced one kept the old pin too).
    assert_eq!(out(&server(&["cert", "rotate", "--undo"], &data)), pin);
    let _srv = serve(&data, port);
    assert!(synced.ok(&["sync", "--json"]).is_object());
    assert_eq!(idle.ok(&["sync", "--json"])["pulled"], 2, "the idle device catches up");
}

#[test]
fn renew_keeps_the_pin_and_the_certificate_is_a_standard_leaf_of_at_most_a_year() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let pin = out(&server(&["init"], &data));
    let before = status(&data)[0].clone();
    let life = before["not_after"].as_u64().expect("not_after") - before["not_before"].as_u64().expect("not_before");
    assert!((364 * 86_400..=366 * 86_400).contains(&life), "about a year: {life} s");
    let pem = std::fs::read(tmp.path().join("data.keys/tls-cert.pem")).expect("cert");
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|d: rustls::pki_types::CertificateDer<'_>| d.to_vec());
    let der = der.expect("a certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parses");
    let bc = cert.basic_constraints().expect("one").expect("basic constraints");
    assert!(bc.critical && !bc.value.ca, "CA:FALSE");
    let ku = cert.key_usage().expect("one").expect("key usage");
    assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
    assert!(cert.extended_key_usage().expect("one").expect("EKU").value.server_auth);
    let has = |oid| cert.extensions().iter().any(|e| e.oid == oid);
    assert!(has(x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER), "AKI");
    assert!(has(x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER), "SKI");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(out(&server(&["cert", "renew"], &data)), pin, "the pin stays");
    let after = status(&data)[0].clone();
    assert!(after["not_after"].as_u64() > before["not_after"].as_u64(), "{before} {after}");
    // A certificate for another key is refused, and nothing changes.
    let other = tempfile::tempdir().expect("tempdir");
    out(&server(&["init"], &other.path().join("data")));
    let wrong = server(&["cert", "renew", "--tls-cert"], &data);
    assert!(!wrong.status.success(), "--tls-cert needs a file");
    let foreign = other.path().join("data.keys/tls-cert.pem");
    let r = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(["cert", "renew", "--tls-cert"])
        .arg(&foreign)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("run");
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("is not the key in use"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(status(&data)[0], after, "nothing changed");
    // Rotating with no next key, or undoing with no previous one, is refused.
    for args in [&["cert", "rotate"][..], &["cert", "rotate", "--undo"][..]] {
        let r = server(args, &data);
        assert!(!r.status.success(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&r.stderr).trim().lines().count(),
            1,
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
}

#[test]
fn a_rotation_a_crash_cut_between_the_key_and_the_certificate_is_finished_by_the_next_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    out(&server(&["init"], &data));
    let next = out(&server(&["cert", "next"], &data));
    // What `cert rotate` leaves when it dies after moving the key: the next key in use, the
    // old certificate beside it, the bundle still there.
    let keys = tmp.path().join("data.keys");
    let bundle = std::fs::read_to_string(keys.join("tls-next.pem")).expect("bundle");
    let key = &bundle[bundle.find("-----BEGIN PRIVATE KEY-----").expect("key")..];
    std::fs::write(keys.join("tls-key.pem"), key).expect("write");
    let keys_now = status(&data);
    assert_eq!(keys_now.as_array().map(Vec::len), Some(1), "the bundle is gone: {keys_now}");
    assert_eq!(keys_now[0]["pin"], next.as_str(), "the certificate follows the key");
    // And the server starts with the pair.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let _srv = serve(&data, port);
}

#[test]
fn serve_warns_in_its_log_when_the_certificate_expires_within_30_days() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().expect("tempdir");
    // An operator's certificate with 10 days left.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(355);
    params.not_after = now + time::Duration::days(10);
    let cert = params.self_signed(&key).expect("cert");
    let (cert_file, key_file) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    let data = tmp.path().join("data");
    let init = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(["init", "--tls-cert"])
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("init");
    out(&init);
    let days = status(&data)[0]["days_left"].as_u64().expect("days_left");
    assert!((9..=10).contains(&days), "{}", status(&data));
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut log = Vec::new();
    for line in BufReader::new(child.stderr.take().expect("stderr")).lines().map_while(Result::ok) {
        let listening = line.contains("listening on");
        log.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join("\n");
    assert!(log.contains("the TLS certificate expires soon"), "{log}");
    assert!(log.contains(&format!("days_left={days}")) || log.contains(&format!("days_left={}", days - 1)), "{log}");
    assert!(log.contains("cert renew"), "says what to do: {log}");
}
