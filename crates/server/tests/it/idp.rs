//! A real OpenID Provider for the tests: `oidc-provider` 9 (node, `tests/oidc/provider.mjs`)
//! over HTTPS on 127.0.0.1 with a CA made here, one confidential native client, and modes that
//! make it answer like a lying or compromised provider (`tests/oidc/README.md`).
//!
//! [`Idp::start`] returns None with a notice when node or the installed package is missing,
//! and panics instead when `FIELDVAULT_REQUIRE_INTEROP` is set (CI). [`Idp::sign_in`] plays
//! the browser: login form, consent, and the loopback redirect back, returned unfetched.
//!
//! The HTTP client here is blocking (std sockets, rustls, HTTP/1.1, one request a
//! connection): call it from `tokio::task::spawn_blocking` when an in-process server on the
//! same runtime must keep running meanwhile.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fieldvault_core::protocol::oidc::{AuthorizationRequest, OidcIssuerConfig, RedirectError, percent_encode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// How long the provider may take to start (node, key generation) before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Connect, read and write limit for one request to the provider.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests one sign-in may take (authorize, login, resume, consent, resume: about six).
const MAX_BROWSER_STEPS: usize = 16;

/// Every mode `provider.mjs` knows (`none` is honest).
pub const MODES: [&str; 16] = [
    "none",
    "other_issuer",
    "other_audience",
    "expired",
    "future_iat",
    "alg_none",
    "hmac_public_key",
    "unknown_key",
    "rotate",
    "wrong_nonce",
    "fixed_jti",
    "replay",
    "oversized",
    "lying_discovery",
    "no_id_token",
    "garbage",
];

/// The directory of `package.json` and `provider.mjs`.
pub fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// One running provider; killed when dropped.
pub struct Idp {
    child: Mutex<Option<Child>>,
    issuer: String,
    ca_pem: PathBuf,
    client_id: String,
    client_secret: Zeroizing<String>,
    client_secret_file: PathBuf,
    log: PathBuf,
    tls: Arc<rustls::ClientConfig>,
}

/// One HTTP answer from the provider: the harness's parsed response.
pub use crate::harness::Response;

/// A JWT's header and payload, decoded without any verification.
pub fn jwt_parts(jwt: &str) -> (Value, Value, String) {
    let mut parts = jwt.split('.');
    let mut next = |what: &str| parts.next().unwrap_or_else(|| panic!("a JWT has a {what}")).to_owned();
    let (h, p, s) = (next("header"), next("payload"), next("signature"));
    let decode = |b: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b).expect("base64url")).expect("JSON in the JWT")
    };
    (decode(&h), decode(&p), s)
}

impl Idp {
    /// Makes a CA and a certificate for 127.0.0.1 in `dir` (`ca.pem`, `tls-cert.pem`,
    /// `tls-key.pem`), the client secret file (`client-secret`, mode 0600, no newline), starts
    /// the provider on a free port and waits for it. None (with a notice) when node or the
    /// package is missing, unless `FIELDVAULT_REQUIRE_INTEROP` is set: then it panics.
    pub fn start(dir: &Path) -> Option<Idp> {
        let script = provider_dir().join("provider.mjs");
        let node = Command::new("node").arg("--version").output().ok().filter(|o| o.status.success());
        let version = node.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let installed = provider_dir().join("node_modules/oidc-provider/package.json").is_file();
        let why = match &version {
            None => Some("node is not installed".to_owned()),
            // oidc-provider 9 calls URL.parse and crypto.hash: node 20.18 or later.
            Some(v) if !node_at_least(v, 20, 18) => Some(format!("node {v} is older than 20.18")),
            Some(_) if !installed => Some("oidc-provider is not installed in crates/server/tests/oidc".to_owned()),
            Some(_) => None,
        };
        if let Some(why) = why {
            assert!(
                std::env::var_os("FIELDVAULT_REQUIRE_INTEROP").is_none(),
                "the OpenID provider tests need a provider, but {why} (run scripts/setup.sh); \
                 FIELDVAULT_REQUIRE_INTEROP is set, so they fail instead of skipping"
            );
            eprintln!("OpenID provider tests skipped: {why} (run scripts/setup.sh)");
            return None;
        }

        let (ca_pem, ca_der, cert_pem, key_pem) = certificates();
        let ca_path = dir.join("ca.pem");
        let cert_path = dir.join("tls-cert.pem");
        let key_path = dir.join("tls-key.pem");
        std::fs::write(&ca_path, &ca_pem).expect("write ca.pem");
        std::fs::write(&cert_path, cert_pem).expect("write tls-cert.pem");
        std::fs::write(&key_path, key_pem.as_bytes()).expect("write tls-key.pem");

        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("random");
        let client_secret = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret));
        let client_secret_file = dir.join("client-secret");
        std::fs::write(&client_secret_file, client_secret.as_bytes()).expect("write client-secret");
        std::fs::set_permissions(&client_secret_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let client_id = "fieldvault-test".to_owned();

        let log = dir.join("provider.log");
        let stderr = std::fs::File::create(&log).expect("create provider.log");
        let mut child = Command::new("node")
            .arg(&script)
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            // The secret goes by its file, never on the command line.
            .args(["--port", "0", "--client-id", &client_id, "--client-secret-file"])
            .arg(&client_secret_file)
            .current_dir(provider_dir())
            // The provider exits when its stdin closes: no provider outlives a killed test.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn node provider.mjs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Drains stdout until the provider exits (a closed pipe would kill it at its
            // next log line); only lines before READY have a reader.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let issuer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("READY ") {
                        break url.trim().to_owned();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the OpenID provider did not start within {START_TIMEOUT:?} ({e}); its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        assert!(issuer.starts_with("https://127.0.0.1:"), "{issuer}");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).expect("CA certificate");
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();

        Some(Idp {
            child: Mutex::new(Some(child)),
            issuer,
            ca_pem: ca_path,
            client_id,
            client_secret,
            client_secret_file,
            log,
            tls: Arc::new(tls),
        })
    }

    /// `https://127.0.0.1:PORT`, exactly as discovery and the ID tokens give it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The CA that signed the provider's certificate (`--oidc-ca`).
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret, alone in a file (`--oidc-client-secret-file`).
    pub fn client_secret_file(&self) -> &Path {
        &self.client_secret_file
    }

    /// The provider's stderr so far (oidc-provider's warnings, node's errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What a device is told about this provider (default scopes).
    pub fn issuer_config(&self) -> OidcIssuerConfig {
        OidcIssuerConfig {
            issuer: self.issuer.clone(),
            authorization_endpoint: format!("{}/auth", self.issuer),
            client_id: self.client_id.clone(),
            scopes: vec![],
        }
    }

    /// Plays the browser from `authorization_url` as `login` and returns the redirect to
    /// `http://127.0.0.1:PORT/callback?...` unfetched. Panics unless it carries a code.
    pub fn sign_in(&self, authorization_url: &str, login: &str) -> String {
        match self.try_sign_in(authorization_url, login) {
            Ok(callback) if query_of(&callback).split('&').any(|p| p.starts_with("code=")) => callback,
            Ok(callback) => panic!("the provider refused the sign-in: {callback}"),
            Err(stopped) => {
                panic!("the sign-in did not reach the callback: {stopped}\nthe provider's log:\n{}", self.log())
            }
        }
    }

    /// As [`Idp::sign_in`], but the loopback redirect is returned whatever it carries (a
    /// code, or the provider's `error=`), and Err says where the flow stopped when the
    /// provider never redirected back (an error page for a bad client or redirect URI).
    pub fn try_sign_in(&self, authorization_url: &str, login: &str) -> Result<String, String> {
        let mut jar: BTreeMap<String, String> = BTreeMap::new();
        let mut url = authorization_url.to_owned();
        let mut form: Option<String> = None;
        for _ in 0..MAX_BROWSER_STEPS {
            if url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:") {
                return Ok(url);
            }
            if !url.starts_with(&format!("{}/", self.issuer)) {
                return Err(format!("the provider sent the browser elsewhere: {url}"));
            }
            let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            let mut headers = vec![];
            if !cookie.is_empty() {
                headers.push(("cookie", cookie.as_str()));
            }
            let resp = match form.take() {
                Some(body) => {
                    headers.push(("content-type", "application/x-www-form-urlencoded"));
                    self.request("POST", &url, &headers, body.as_bytes())?
                }
                None => self.request("GET", &url, &headers, b"")?,
            };
            for (name, value) in &resp.headers {
                if name == "set-cookie" {
                    let pair = value.split(';').next().unwrap_or_default();
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let expired = value.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
                    if v.is_empty() || expired {
                        jar.remove(k.trim());
                    } else {
                        jar.insert(k.trim().to_owned(), v.trim().to_owned());
                    }
                }
            }
            match resp.status {
                301 | 302 | 303 | 307 | 308 => {
                    let location = resp.header("location").ok_or("a redirect without Location")?;
                    url =
                        if location.starts_with('/') { format!("{}{location}", self.issuer) } else { location.into() };
                }
                200 => {
                    let html = resp.text();
                    let action = html_attr(&html, "<form", "action")
                        .ok_or_else(|| format!("a page without a form at {url}: {:.600}", html))?;
                    let prompt = html_attr(&html, "name=\"prompt\"", "value")
                        .ok_or_else(|| format!("a form without a prompt at {url}"))?;
                    form = Some(match prompt.as_str() {
                        "login" => format!("prompt=login&login={}&password=any", percent_encode(login)),
                        "consent" => "prompt=consent".to_owned(),
                        other => return Err(format!("an interaction this browser does not know: {other}")),
                    });
                    url = if action.starts_with('/') { format!("{}{action}", self.issuer) } else { action };
                }
                status => return Err(format!("the provider answered {status} at {url}: {:.600}", resp.text())),
            }
        }
        Err(format!("no redirect back after {MAX_BROWSER_STEPS} requests"))
    }

    /// Sets how the provider answers from now on (one of [`MODES`]).
    pub fn set_mode(&self, mode: &str) {
        let resp = self.post_json("/__test/mode", &json!({ "mode": mode }));
        assert_eq!(resp.status, 200, "set mode {mode}: {}", resp.text());
    }

    /// Sets an account's `groups` claim, and whether it is disabled (the provider then finds
    /// no such account: no sign-in, and a refresh grant gets `invalid_grant`).
    pub fn set_account(&self, sub: &str, groups: &[&str], disabled: bool) {
        let resp = self.post_json(
            &format!("/__test/accounts/{}", percent_encode(sub)),
            &json!({ "groups": groups, "disabled": disabled }),
        );
        assert_eq!(resp.status, 200, "set account {sub}: {}", resp.text());
    }

    /// Kills the provider: from now on nothing listens on its port.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// GET a path of the provider (`/.well-known/openid-configuration`, `/jwks`).
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", &format!("{}{path}", self.issuer), &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POSTs a form to the token endpoint as the client (client_secret_basic).
    pub fn token(&self, form: &[(&str, &str)]) -> Response {
        let body = form.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&");
        let credentials =
            Zeroizing::new(format!("{}:{}", percent_encode(&self.client_id), percent_encode(&self.client_secret)));
        let basic = Zeroizing::new(format!("Basic {}", STANDARD.encode(credentials.as_bytes())));
        let headers = [("authorization", basic.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        self.request("POST", &format!("{}/token", self.issuer), &headers, body.as_bytes())
            .unwrap_or_else(|e| panic!("POST /token: {e}"))
    }

    /// Redeems the code of a callback URL for `request`, as the server would.
    pub fn redeem(&self, request: &AuthorizationRequest, callback: &str) -> Response {
        let code = request.check_redirect(query_of(callback)).expect("the redirect answers this request");
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code.expose_secret()),
            ("redirect_uri", request.redirect_uri()),
            ("code_verifier", request.verifier().expose_secret()),
        ])
    }

    fn post_json(&self, path: &str, body: &Value) -> Response {
        let body = serde_json::to_vec(body).expect("JSON");
        self.request("POST", &format!("{}{path}", self.issuer), &[("content-type", "application/json")], &body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// One HTTP/1.1 request over TLS trusting only the harness's CA.
    fn request(&self, method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, String> {
        let rest = url.strip_prefix("https://").ok_or_else(|| format!("not an https URL: {url}"))?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_owned();
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("{authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority}: no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect {authority}: {e}"))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(Arc::clone(&self.tls), name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = Zeroizing::new(head.into_bytes());
        raw.extend_from_slice(body);
        tls.write_all(&raw).map_err(|e| format!("{method} {url}: {e}"))?;
        tls.flush().map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        if let Err(e) = tls.read_to_end(&mut answer) {
            // A peer that closes without close_notify: fine when the answer is complete
            // (checked against Content-Length or the last chunk below).
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                return Err(format!("{method} {url}: {e}"));
            }
        }
        parse_response(&answer).map_err(|e| format!("{method} {url}: {e}"))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `node --version`'s `vMAJOR.MINOR.PATCH` is at least `major.minor`.
fn node_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// The query of a URL, without `?` (and without any fragment).
pub fn query_of(url: &str) -> &str {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    q.split_once('#').map_or(q, |(q, _)| q)
}

/// The value of `attr="..."` in the first tag that contains `marker` (HTML entities undone).
fn html_attr(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = html[..=at].rfind('<')?;
    let tag = &html[start..start + html[start..].find('>')?];
    let key = format!("{attr}=\"");
    let from = tag.find(&key)? + key.len();
    let value = &tag[from..from + tag[from..].find('"')?];
    Some(
        value
            .replace("&#39;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no complete header in the answer")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "a header that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("an empty answer")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("a bad status line: {status_line}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw_body = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)?
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.parse().map_err(|_| "a bad Content-Length")?;
        if raw_body.len() < len {
            return Err(format!("the answer was cut short ({} of {len} bytes)", raw_body.len()));
        }
        raw_body[..len].to_vec()
    } else {
        raw_body.to_vec()
    };
    Ok(Response { status, headers, body })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n").ok_or("a chunk without its size line")?;
        let size = std::str::from_utf8(&raw[..eol]).map_err(|_| "a bad chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|_| format!("a bad chunk size: {size}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("the answer was cut short inside a chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A fresh CA (PEM and DER), and a certificate for 127.0.0.1 it signed with its key (PEM,
/// PKCS#8).
fn certificates() -> (String, rustls::pki_types::CertificateDer<'static>, String, Zeroizing<String>) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name.push(DnType::CommonName, "fieldvault test identity provider CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("leaf params");
    leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf signed by the CA");
    (ca_cert.pem(), ca_cert.der().clone(), leaf_cert.pem(), Zeroizing::new(leaf_key.serialize_pem()))
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    b
}

/// An authorization request for this provider with a loopback redirect on `port`.
pub fn authorization_request(port: u16) -> AuthorizationRequest {
    AuthorizationRequest::new(random32(), random32(), random32(), &format!("http://127.0.0.1:{port}/callback"))
}

/// The kid of the JWKS key whose RS256 signature over `jwt` verifies, if any.
fn rs256_signer(jwks: &Value, jwt: &str) -> Option<String> {
    let (input, sig) = jwt.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    jwks["keys"].as_array()?.iter().find_map(|k| {
        let n = URL_SAFE_NO_PAD.decode(k["n"].as_str()?).ok()?;
        let e = URL_SAFE_NO_PAD.decode(k["e"].as_str()?).ok()?;
        aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
            .verify(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &sig)
            .ok()
            .and_then(|()| k["kid"].as_str().map(str::to_owned))
    })
}

fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
        .expect("seconds fit")
}

#[test]
fn node_versions_compare_by_major_then_minor() {
    assert!(node_at_least("v20.18.0", 20, 18) && node_at_least("v22.1.0", 20, 18) && node_at_least("v20.20.2", 20, 18));
    assert!(!node_at_least("v18.19.0", 20, 18) && !node_at_least("v20.17.9", 20, 18) && !node_at_least("", 20, 18));
}

#[test]
fn a_user_signs_in_at_the_real_provider_and_the_code_redeems_once_for_tokens_naming_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(idp) = Idp::start(tmp.path()) else { return };
    assert_eq!(std::fs::read_to_string(idp.client_secret_file()).expect("secret").len(), 43);
    // OpenSSL, independently, accepts the provider's certificate for 127.0.0.1 under ca.pem.
    let verify = Command::new("openssl")
        .args(["verify", "-verify_ip", "127.0.0.1", "-CAfile"])
        .arg(idp.ca_pem_path())
        .arg(tmp.path().join("tls-cert.pem"))
        .output()
        .expect("openssl");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let discovery = idp.get("/.well-known/openid-configuration").json();
    assert_eq!(discovery["issuer"], idp.issuer());
    assert_eq!(discovery["code_challenge_methods_supported"], json!(["S256"]));
    idp.set_account("alice", &["inspectors", "admins"], false);

    // Any loopback port is accepted for the native client (RFC 8252 section 7.3).
    let request = authorization_request(49_321);
    let callback = idp.sign_in(&request.url(&idp.issuer_config()), "alice");
    assert!(callback.starts_with("http://127.0.0.1:49321/callback?"), "{callback}");
    assert!(callback.contains(&format!("iss={}", percent_encode(idp.issuer()))), "RFC 9207 iss: {callback}");
    let resp = idp.redeem(&request, &callback);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let tokens = resp.json();
    assert!(tokens["refresh_token"].is_string(), "offline_access with consent gives a refresh token: {tokens}");
    let id_token = tokens["id_token"].as_str().expect("an id_token");
    let (header, claims, _) = jwt_parts(id_token);
    assert_eq!(header["alg"], "RS256");
    let jwks = idp.get("/jwks").json();
    assert_eq!(rs256_signer(&jwks, id_token).as_deref(), header["kid"].as_str(), "signed by the published key");
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], idp.client_id());
    assert_eq!(claims["nonce"], request.nonce());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["groups"], json!(["inspectors", "admins"]));

    // The refresh token renews.
    let refresh = tokens["refresh_token"].as_str().expect("refresh token");
    let renewed = idp.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]);
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let renewed = renewed.json();
    let (_, claims, _) = jwt_parts(renewed["id_token"].as_str().expect("an id_token on refresh"));
    assert_eq!((claims["sub"].clone(), claims["groups"].clone()), (json!("alice"), json!(["inspectors", "admins"])));
    let refresh = renewed["refresh_token"].as_str().unwrap_or(refresh);

    // A code redeems once, and its second use revokes what the first one gave (RFC 6749
    // section 4.1.2): the refresh token no longer works.
    let again = idp.redeem(&request, &callback);
    assert_eq!((again.status, again.json()["error"].clone()), (400, json!("invalid_grant")));
    let revoked = idp.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]);
    assert_eq!((revoked.status, revoked.json()["error"].clone()), (400, json!("invalid_grant")), "{}", revoked.text());

    // A disabled account: its refresh token is refused, and it cannot sign in again.
    let request = authorization_request(49_322);
    let tokens = idp.redeem(&request, &idp.sign_in(&request.url(&idp.issuer_config()), "alice")).json();
    let refresh = tokens["refresh_token"].as_str().expect("refresh token");
    idp.set_account("alice", &[], true);
    let refused = idp.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]);
    assert_eq!((refused.status, refused.json()["error"].clone()), (400, json!("invalid_grant")), "{}", refused.text());
    let request = authorization_request(49_323);
    let back = idp.try_sign_in(&request.url(&idp.issuer_config()), "alice").expect("a redirect back");
    match request.check_redirect(query_of(&back)) {
        Err(RedirectError::Provider { error, .. }) => assert_eq!(error, "access_denied", "{back}"),
        other => panic!("a disabled account signed in: {other:?} from {back}"),
    }

    // A stopped provider is unreachable.
    idp.stop();
    assert!(idp.request("GET", &format!("{}/jwks", idp.issuer()), &[], b"").is_err());
}

#[test]
fn the_provider_refuses_a_wrong_verifier_a_missing_challenge_and_a_redirect_off_loopback() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(idp) = Idp::start(tmp.path()) else { return };
    let request = authorization_request(50_000);
    let callback = idp.sign_in(&request.url(&idp.issuer_config()), "bob");
    let code = request.check_redirect(query_of(&callback)).expect("state matches");
    let wrong = authorization_request(50_000);
    let resp = idp.token(&[
        ("grant_type", "authorization_code"),
        ("code", code.expose_secret()),
        ("redirect_uri", request.redirect_uri()),
        ("code_verifier", wrong.verifier().expose_secret()),
    ]);
    assert_eq!((resp.status, resp.json()["error"].clone()), (400, json!("invalid_grant")), "{}", resp.text());

    // PKCE is required of this confidential client too: the error comes back on the redirect.
    let url = request.url(&idp.issuer_config());
    let without_pkce = url.split('&').filter(|p| !p.starts_with("code_challenge")).collect::<Vec<_>>().join("&");
    let back = idp.try_sign_in(&without_pkce, "bob").expect("a redirect back");
    match request.check_redirect(query_of(&back)) {
        Err(RedirectError::Provider { error, .. }) => {
            assert_eq!(error, "invalid_request", "{back}");
        }
        other => panic!("expected the provider's error, got {other:?} from {back}"),
    }

    // A redirect URI that is not the registered loopback one gets an error page, no redirect.
    let elsewhere = AuthorizationRequest::new(random32(), random32(), random32(), "http://example.com/callback");
    let stopped = idp.try_sign_in(&elsewhere.url(&idp.issuer_config()), "bob").expect_err("no redirect");
    assert!(stopped.contains("400") && stopped.contains("redirect_uri"), "{stopped}");
}

#[test]
fn each_mode_rewrites_the_providers_answer_as_it_says() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(idp) = Idp::start(tmp.path()) else { return };
    let started = Instant::now();
    let first_kid = idp.get("/jwks").json()["keys"][0]["kid"].as_str().expect("kid").to_owned();
    for (i, mode) in MODES.iter().enumerate() {
        // `replay` returns the previous honest id_token: make one to compare with.
        let mut previous = None;
        if *mode == "replay" {
            idp.set_mode("none");
            let earlier = authorization_request(39_999);
            let tokens = idp.redeem(&earlier, &idp.sign_in(&earlier.url(&idp.issuer_config()), "dave")).json();
            previous = Some((tokens["id_token"].as_str().expect("id_token").to_owned(), earlier.nonce().to_owned()));
        }
        idp.set_mode(mode);
        let request = authorization_request(40_000 + u16::try_from(i).expect("few modes"));
        let callback = idp.sign_in(&request.url(&idp.issuer_config()), "carol");
        let resp = idp.redeem(&request, &callback);
        assert_eq!(resp.status, 200, "{mode}: {:.300}", resp.text());
        let discovery = idp.get("/.well-known/openid-configuration").json();
        let jwks = idp.get("/jwks").json();
        if *mode == "garbage" {
            assert!(serde_json::from_slice::<Value>(&resp.body).is_err(), "garbage: {:.300}", resp.text());
            continue;
        }
        let tokens = resp.json();
        if *mode == "no_id_token" {
            assert!(tokens.get("id_token").is_none() && tokens["access_token"].is_string(), "{tokens}");
            continue;
        }
        let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("{mode}: an id_token"));
        let (header, claims, signature) = jwt_parts(id_token);
        let signer = rs256_signer(&jwks, id_token);
        let honest_claims = claims["iss"] == idp.issuer()
            && claims["aud"] == idp.client_id()
            && claims["nonce"] == request.nonce()
            && claims["exp"].as_i64().is_some_and(|e| e > now())
            && claims["iat"].as_i64().is_some_and(|t| t <= now() + 5);
        let by_real_key = signer.as_deref() == Some(first_kid.as_str());
        match *mode {
            "none" | "lying_discovery" => {
                assert!(honest_claims && by_real_key, "{mode}: {claims}");
                let lies = *mode == "lying_discovery";
                assert_eq!(discovery["issuer"] != idp.issuer(), lies, "{mode}: {}", discovery["issuer"]);
            }
            "other_issuer" => assert!(by_real_key && claims["iss"] != idp.issuer(), "{claims}"),
            "other_audience" => assert!(by_real_key && claims["aud"] != idp.client_id(), "{claims}"),
            "wrong_nonce" => assert!(by_real_key && claims["nonce"] != request.nonce(), "{claims}"),
            "fixed_jti" => {
                assert!(by_real_key && honest_claims && claims["jti"] == "the-same-jti-every-time", "{claims}")
            }
            "expired" => {
                assert!(by_real_key, "{mode}");
                assert!(claims["exp"].as_i64().expect("exp") < now() - 3600, "{claims}");
                assert!(claims["iat"].as_i64().expect("iat") < now() - 3600, "{claims}");
            }
            "future_iat" => {
                assert!(by_real_key, "{mode}");
                assert!(claims["iat"].as_i64().expect("iat") > now() + 3000, "{claims}");
            }
            "alg_none" => assert!(header["alg"] == "none" && signature.is_empty() && signer.is_none(), "{header}"),
            "hmac_public_key" => {
                assert!(header["alg"] == "HS256" && header["kid"] == first_kid.as_str(), "{header}");
                assert_eq!(URL_SAFE_NO_PAD.decode(&signature).expect("base64url").len(), 32, "an HMAC-SHA256 tag");
                assert!(signer.is_none() && honest_claims);
            }
            "unknown_key" => {
                let kids: Vec<&Value> = jwks["keys"].as_array().expect("keys").iter().map(|k| &k["kid"]).collect();
                assert!(header["alg"] == "RS256" && !kids.contains(&&header["kid"]), "{header} {jwks}");
                assert!(signer.is_none() && honest_claims, "no published key verifies it");
            }
            "rotate" => {
                let keys = jwks["keys"].as_array().expect("keys");
                assert_eq!(keys.len(), 2, "the new key is published beside the old one: {jwks}");
                assert!(honest_claims && signer.is_some() && !by_real_key, "{header}");
                assert_eq!(signer.as_deref(), header["kid"].as_str());
            }
            "replay" => {
                let (earlier, nonce) = previous.as_ref().expect("an earlier honest round");
                assert_eq!(id_token, earlier, "the previous honest id_token");
                assert!(claims["nonce"] == nonce.as_str() && claims["nonce"] != request.nonce(), "{claims}");
                assert!(by_real_key);
            }
            "oversized" => {
                assert!(id_token.len() > 1024 * 1024, "{} bytes", id_token.len());
                assert!(by_real_key && honest_claims);
            }
            other => panic!("a mode this test does not check: {other}"),
        }
    }
    idp.set_mode("none");
    let refused = idp.post_json("/__test/mode", &json!({ "mode": "sideways" }));
    assert_eq!(refused.status, 400, "an unknown mode is refused: {}", refused.text());
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}
