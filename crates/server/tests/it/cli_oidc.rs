//! `fieldvault login --oidc` as a user runs it, headless: the real `fieldvault` and
//! `fieldvault-server` binaries and the real test provider; the test plays the browser
//! (the provider's login form and consent, then the redirect to the CLI's loopback port).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::cli_sync::{Device, cli_binary, serve_with, server};
use crate::idp::Idp;

#[test]
fn the_command_line_signs_in_through_the_provider_headless_and_syncs() {
    let Some(cli) = cli_binary() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let idp_dir = tmp.path().join("idp");
    std::fs::create_dir(&idp_dir).expect("dir");
    let Some(idp) = Idp::start(&idp_dir) else { return };
    idp.set_account("lena", &["inspector"], false);
    let data = tmp.path().join("data");
    let init = server(&["init"], &data);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let pin = String::from_utf8_lossy(&init.stdout).trim().to_owned();
    let secret = idp.client_secret_file().display().to_string();
    let ca = idp.ca_pem_path().display().to_string();
    let srv = serve_with(
        &data,
        &[
            "--oidc",
            idp.issuer(),
            "--oidc-client-id",
            idp.client_id(),
            "--oidc-client-secret-file",
            &secret,
            "--oidc-ca",
            &ca,
            "--oidc-create-users",
            "--oidc-roles-claim",
            "groups",
        ],
    );
    let url = format!("https://127.0.0.1:{}", srv.port);
    let device = Device { cli: cli.clone(), vault: tmp.path().join("vault") };
    device.ok(&["init", "--keystore", "passphrase"]);

    // An issuer the server does not offer: one line naming the ones it does.
    let wrong = device.run(&["login", "--server", &url, "--oidc", "https://id.invalid", "--pin", &pin, "--no-browser"]);
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains(idp.issuer()), "{err}");

    let mut login = device
        .cmd(&["login", "--server", &url, "--oidc", idp.issuer(), "--pin", &pin, "--no-browser", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("login");
    let mut stderr = BufReader::new(login.stderr.take().expect("stderr"));
    let address = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).expect("read") > 0, "login ended before printing the address");
        if line.starts_with("https://") {
            break line.trim().to_owned();
        }
    };
    let callback = idp.sign_in(&address, "lena");
    // The browser follows the redirect to the CLI's loopback listener.
    let target = callback.strip_prefix("http://").expect("a loopback http redirect");
    let (host, path) = target.split_once('/').expect("a path");
    let mut browser = std::net::TcpStream::connect(host).expect("the CLI listens");
    browser.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(browser, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("request");
    let mut page = String::new();
    browser.read_to_string(&mut page).expect("page");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let out = login.wait_with_output().expect("login ends");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr");
    assert!(out.status.success(), "{rest}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["user"], "lena", "{answer}");

    // The account works as any logged-in one: offline identity and a sync.
    let me = device.ok(&["whoami", "--json"]);
    assert_eq!(me["user"], "lena", "{me}");
    assert_eq!(me["roles"], serde_json::json!(["inspector"]), "{me}");
    let synced = device.ok(&["sync", "--json"]);
    assert!(synced.get("pushed").is_some(), "{synced}");
    drop(srv);
}
