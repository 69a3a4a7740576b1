//! The worked examples of `docs/protocol.md`, recomputed with `fieldvault_core::protocol`:
//! every hash, signing string, HMAC, token and message the page shows is built here from the
//! page's example inputs and must appear in the page byte for byte, so the page cannot drift
//! from the code. `tests/vectors/check_protocol.py` re-checks the same values with Python's
//! standard library alone.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fieldvault_core::protocol::auth::{
    DeviceProof, DeviceSecret, LeaseBody, LoginRequest, Password, TokenResponse, relogin_string,
};
use fieldvault_core::protocol::{
    ACCESS_AUDIENCE, ACCESS_TYP, AccessClaims, MAX_SKEW_SECS, NONCE_LEN, OFFLINE_AUDIENCE, OFFLINE_TYP, OfflineClaims,
    ProblemCode, SessionSecret, TIMESTAMP_WINDOW_SECS, TokenSigner, body_hash_hex, decode_nonce, parse_timestamp,
    request_string, response_string, timestamp_is_fresh,
};
use zeroize::Zeroizing;

const DOC: &str = include_str!("../../../docs/protocol.md");

/// Login, and the tokens' `iat`: 2026-01-01T00:00:00Z.
const LOGIN_AT: u64 = 1_767_225_600;
/// The signed `GET /v1/devices/self?verbose=1`, and its answer a second later.
const SELF_AT: u64 = LOGIN_AT + 60;
const SELF_ANSWERED_AT: u64 = SELF_AT + 1;
/// The signed refresh, and the answer to its replay a second later.
const REFRESH_AT: u64 = LOGIN_AT + 540;
const REPLAY_ANSWERED_AT: u64 = REFRESH_AT + 1;
/// The device logs in again a week later, as its lease ends, naming itself.
const RELOGIN_AT: u64 = LOGIN_AT + 7 * 86_400;
/// The server's policy defaults (crates/server/src/app.rs).
const ACCESS_TTL: u64 = 600;
const OFFLINE_TTL: u64 = 7 * 86_400;
const LEASE_TTL: u64 = 7 * 86_400;

const HOST: &str = "vault.example";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
const DEVICE_NAME: &str = "field tablet";
const ROLE: &str = "inspector";
const ATTEMPT_ID: &str = "3f0c8a52-6d1e-4b7a-9e24-71c5d0b8f613";
const SELF_TARGET: &str = "/v1/devices/self?verbose=1";
const REFRESH_TARGET: &str = "/v1/auth/refresh";

/// `N` consecutive byte values from `first`: every example input is one such run.
fn run<const N: usize>(first: u8) -> [u8; N] {
    core::array::from_fn(|i| first + u8::try_from(i).expect("runs are shorter than 256"))
}

/// `N` consecutive byte values counting down from `first` (the device secret's run).
fn run_down<const N: usize>(first: u8) -> [u8; N] {
    core::array::from_fn(|i| first - u8::try_from(i).expect("runs are shorter than 256"))
}

/// Ed25519 private key as PKCS#8 v1 DER (RFC 8410): this fixed prefix, then the 32-byte seed.
fn pkcs8(seed: [u8; 32]) -> Zeroizing<Vec<u8>> {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&seed);
    Zeroizing::new(der)
}

/// The page's example inputs (section 12.1). On a real server every one of them is random.
struct Example {
    secret: SessionSecret,
    device_secret: DeviceSecret,
    signer: TokenSigner,
    key_id: String,
    device_id: String,
    session_id: String,
    lease_id: String,
    refresh_token: String,
    lease_key: String,
    access_jti: String,
    offline_jti: String,
    nonce_self: String,
    nonce_refresh: String,
}

fn example() -> Example {
    Example {
        secret: SessionSecret::from_bytes(Zeroizing::new(run(0x00))),
        device_secret: DeviceSecret::from_bytes(Zeroizing::new(run_down(0xff))),
        signer: TokenSigner::from_pkcs8(&pkcs8(run(0x20))).expect("the example seed is an Ed25519 key"),
        key_id: format!("k_{}", URL_SAFE_NO_PAD.encode(run::<16>(0x40))),
        device_id: format!("d_{}", URL_SAFE_NO_PAD.encode(run::<16>(0x50))),
        session_id: format!("s_{}", URL_SAFE_NO_PAD.encode(run::<16>(0x60))),
        lease_id: format!("l_{}", URL_SAFE_NO_PAD.encode(run::<16>(0x70))),
        refresh_token: format!("rt_{}", URL_SAFE_NO_PAD.encode(run::<32>(0x80))),
        nonce_self: STANDARD.encode(run::<16>(0xa0)),
        nonce_refresh: STANDARD.encode(run::<16>(0xb0)),
        lease_key: STANDARD.encode(run::<32>(0xc0)),
        access_jti: format!("at_{}", URL_SAFE_NO_PAD.encode(run::<16>(0xe0))),
        offline_jti: format!("ot_{}", URL_SAFE_NO_PAD.encode(run::<16>(0xf0))),
    }
}

impl Example {
    fn roles(&self) -> Vec<String> {
        vec![ROLE.to_owned()]
    }

    fn access_claims(&self) -> AccessClaims {
        let (sid, device, jti) = (&self.session_id, &self.device_id, self.access_jti.clone());
        AccessClaims::new(USER, sid, device, &self.roles(), LOGIN_AT, LOGIN_AT + ACCESS_TTL, jti)
    }

    fn offline_claims(&self) -> OfflineClaims {
        let (sid, device, jti) = (&self.session_id, &self.device_id, self.offline_jti.clone());
        OfflineClaims::new(USER, sid, device, &self.roles(), LOGIN_AT, LOGIN_AT + OFFLINE_TTL, jti)
    }

    fn access_token(&self) -> String {
        self.signer.sign(ACCESS_TYP, &self.access_claims())
    }

    fn offline_token(&self) -> String {
        self.signer.sign(OFFLINE_TYP, &self.offline_claims())
    }

    fn refresh_body(&self) -> String {
        format!(r#"{{"refresh_token":"{}","attempt_id":"{ATTEMPT_ID}"}}"#, self.refresh_token)
    }

    fn lease(&self, expires_at: u64) -> LeaseBody {
        LeaseBody { lease_id: self.lease_id.clone(), key: Zeroizing::new(self.lease_key.clone()), expires_at }
    }

    fn self_body(&self) -> String {
        format!(r#"{{"user":"{USER}","device_id":"{}","key_id":"{}","roles":["{ROLE}"]}}"#, self.device_id, self.key_id)
    }
}

/// Collects what the page fails to show, to report all of it at once.
#[derive(Default)]
struct Page {
    missing: Vec<String>,
}

impl Page {
    fn shows(&mut self, what: &str, text: &str) {
        if !DOC.contains(text) {
            self.missing.push(format!("--- {what}:\n{text}\n"));
        }
    }

    fn done(self) {
        assert!(self.missing.is_empty(), "docs/protocol.md does not show:\n{}", self.missing.concat());
    }
}

/// A signing string as the page prints it: each line feed written `\n` at the end of its line.
fn escaped(signed: &[u8]) -> String {
    String::from_utf8(signed.to_vec()).expect("signing strings are ASCII").replace('\n', "\\n\n")
}

/// An HTTP/1.1 message as the page prints it: LF line ends (CRLF on the wire), and the empty
/// line and the body only when there is a body.
fn http(head: &[String], body: &str) -> String {
    if body.is_empty() { head.join("\n") } else { format!("{}\n\n{body}", head.join("\n")) }
}

/// RFC 9110 IMF-fixdate of Unix seconds (what the server puts in `Date`).
fn imf_fixdate(t: u64) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
    let z = i64::try_from(days).expect("a date in range") + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][usize::try_from(days % 7).expect("small")];
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        [usize::try_from(month - 1).expect("1 to 12")];
    format!("{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT", secs / 3600, secs / 60 % 60, secs % 60)
}

#[test]
fn example_inputs_are_the_runs_of_bytes_the_page_names() {
    let e = example();
    let mut page = Page::default();
    page.shows("session secret", &e.secret.to_base64());
    page.shows("device secret", &format!("`{}`", *e.device_secret.to_base64()));
    for (what, value) in [
        ("key id", &e.key_id),
        ("device id", &e.device_id),
        ("session id", &e.session_id),
        ("lease id", &e.lease_id),
        ("refresh token", &e.refresh_token),
        ("lease key", &e.lease_key),
        ("access jti", &e.access_jti),
        ("offline jti", &e.offline_jti),
        ("GET nonce", &e.nonce_self),
        ("refresh nonce", &e.nonce_refresh),
    ] {
        page.shows(what, &format!("`{value}`"));
    }
    assert_eq!(decode_nonce(&e.nonce_self), Ok(run(0xa0)), "the nonces are canonical");
    assert_eq!(decode_nonce(&e.nonce_refresh), Ok(run(0xb0)));
    assert_eq!(imf_fixdate(LOGIN_AT), "Thu, 01 Jan 2026 00:00:00 GMT");
    page.shows("login time", &format!("`{LOGIN_AT}` ({})", imf_fixdate(LOGIN_AT)));
    page.done();
}

#[test]
fn example_tokens_and_jwks_are_the_example_keys() {
    let e = example();
    let mut page = Page::default();
    page.shows("PKCS#8 prefix", "`302e020100300506032b657004220420`");
    let jwks = serde_json::to_string(&e.signer.jwks()).expect("JSON");
    page.shows("JWKS", &jwks);
    let kid = e.signer.jwks()["keys"][0]["kid"].as_str().expect("kid").to_owned();
    page.shows("kid", &format!("`{kid}`"));
    let verifier = e.signer.verifier();
    for (what, token, aud) in
        [("access", e.access_token(), ACCESS_AUDIENCE), ("offline", e.offline_token(), OFFLINE_AUDIENCE)]
    {
        page.shows(&format!("{what} token"), &token);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[0]).expect("b64url")).expect("JSON");
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).expect("b64url")).expect("JSON");
        assert!(header.contains(&format!(r#""kid":"{kid}""#)) && claims.contains(aud), "{header} {claims}");
        page.shows(&format!("{what} token header"), &header);
        page.shows(&format!("{what} token claims"), &claims);
    }
    // They are what the server would accept, each as its own kind only.
    assert_eq!(verifier.access(&e.access_token(), SELF_AT), Ok(e.access_claims()));
    assert_eq!(verifier.offline(&e.offline_token(), SELF_AT), Ok(e.offline_claims()));
    assert!(verifier.access(&e.offline_token(), SELF_AT).is_err());
    assert!(verifier.access(&e.access_token(), LOGIN_AT + ACCESS_TTL).is_err(), "expired at exp");
    page.done();
}

#[test]
fn login_exchange_is_the_pages() {
    let e = example();
    let mut page = Page::default();
    let body = format!(r#"{{"user":"{USER}","password":"{PASSWORD}","device_name":"{DEVICE_NAME}"}}"#);
    let typed: LoginRequest = serde_json::from_str(&body).expect("a login body");
    assert_eq!(serde_json::to_string(&typed).expect("JSON"), body, "the wire type writes the same bytes");
    let request = http(
        &[
            "POST /v1/auth/login HTTP/1.1".into(),
            format!("Host: {HOST}"),
            "Content-Type: application/json".into(),
            format!("Content-Length: {}", body.len()),
        ],
        &body,
    );
    page.shows("login request", &request);
    page.shows("login body length", &format!("the body is {} bytes", body.len()));

    // The server's TokenResponse (fieldvault_core::protocol::auth), in its field order,
    // indented here for reading. A first login: the device secret is in it, no reason.
    let tokens = TokenResponse {
        access_token: e.access_token(),
        refresh_token: Zeroizing::new(e.refresh_token.clone()),
        offline_token: e.offline_token(),
        session_secret: e.secret.to_base64(),
        key_id: e.key_id.clone(),
        device_id: e.device_id.clone(),
        device_secret: Some(e.device_secret.to_base64()),
        device_reason: None,
        directives: Vec::new(),
        expires_in: ACCESS_TTL,
        lease: e.lease(LOGIN_AT + LEASE_TTL),
    };
    page.shows("login response body", &serde_json::to_string_pretty(&tokens).expect("JSON"));
    let compact = serde_json::to_string(&tokens).expect("JSON");
    let head = http(
        &[
            "HTTP/1.1 200 OK".into(),
            "content-type: application/json".into(),
            "cache-control: no-store".into(),
            format!("content-length: {}", compact.len()),
            format!("date: {}", imf_fixdate(LOGIN_AT)),
        ],
        "",
    );
    page.shows("login response head", &head);
    page.done();
}

#[test]
fn relogin_proof_is_the_pages() {
    let e = example();
    let mut page = Page::default();
    let proof = DeviceProof::new(&e.device_secret, &e.device_id, RELOGIN_AT);
    let signed = relogin_string(&e.device_id, RELOGIN_AT);
    page.shows("relogin string", &escaped(&signed));
    page.shows("relogin string length", &format!("{} bytes", signed.len()));
    page.shows("relogin proof", &format!("`{}`", proof.proof));
    // What the server checks: the proof verifies under the device secret, for this id and
    // time only, and the time is within the window of the server's clock.
    assert_eq!(proof.verify(&e.device_secret), Ok(()));
    assert!(DeviceProof { ts: RELOGIN_AT + 1, ..proof.clone() }.verify(&e.device_secret).is_err());
    assert!(
        proof.is_fresh(RELOGIN_AT + TIMESTAMP_WINDOW_SECS) && !proof.is_fresh(RELOGIN_AT + TIMESTAMP_WINDOW_SECS + 1)
    );
    page.shows("relogin time", &format!("`{RELOGIN_AT}` ({})", imf_fixdate(RELOGIN_AT)));

    // The login body, compact, as the client's LoginRequest writes it, and the request.
    let login = LoginRequest {
        user: USER.into(),
        password: Password::new(Zeroizing::new(PASSWORD.into())),
        device_name: DEVICE_NAME.into(),
        device: Some(proof),
        totp: None,
    };
    let body = serde_json::to_string(&login).expect("JSON");
    let back: LoginRequest = serde_json::from_str(&body).expect("a login body");
    assert_eq!(back.device, login.device);
    page.shows("relogin body length", &format!("the body is {} bytes", body.len()));
    let request = http(
        &[
            "POST /v1/auth/login HTTP/1.1".into(),
            format!("Host: {HOST}"),
            "Content-Type: application/json".into(),
            format!("Content-Length: {}", body.len()),
        ],
        &body,
    );
    page.shows("relogin request", &request);
    // The answer's lease: the same id and key, the expiry a lease lifetime after the login.
    let lease = serde_json::to_string(&e.lease(RELOGIN_AT + LEASE_TTL)).expect("JSON");
    page.shows("relogin lease", &format!("`{lease}`"));
    page.done();
}

#[test]
fn signed_get_is_the_pages() {
    let e = example();
    let mut page = Page::default();
    let ts = SELF_AT.to_string();
    let hash = body_hash_hex(b"");
    assert_eq!(hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "SHA-256 of nothing");
    page.shows("empty body hash", &hash);
    let signed = request_string("GET", SELF_TARGET, b"", &ts, &e.nonce_self);
    page.shows("GET signing string", &escaped(&signed));
    page.shows("GET signing string length", &format!("{} bytes", signed.len()));
    let signature = e.secret.sign_request("GET", SELF_TARGET, b"", &ts, &e.nonce_self);
    page.shows("GET signature", &format!("`{signature}`"));
    assert_eq!(e.secret.verify_request("GET", SELF_TARGET, b"", &ts, &e.nonce_self, &signature), Ok(()));
    let request = http(
        &[
            format!("GET {SELF_TARGET} HTTP/1.1"),
            format!("Host: {HOST}"),
            format!("Authorization: Bearer {}", e.access_token()),
            format!("X-Key-Id: {}", e.key_id),
            format!("X-Timestamp: {ts}"),
            format!("X-Nonce: {}", e.nonce_self),
            format!("X-Signature: {signature}"),
        ],
        "",
    );
    page.shows("GET request", &request);
    // The server's view: fresh at SELF_AT, and the path without the query would not verify.
    assert!(timestamp_is_fresh(parse_timestamp(&ts).expect("digits"), SELF_AT + TIMESTAMP_WINDOW_SECS));
    assert!(e.secret.verify_request("GET", "/v1/devices/self", b"", &ts, &e.nonce_self, &signature).is_err());
    page.done();
}

#[test]
fn signed_refresh_is_the_pages() {
    let e = example();
    let mut page = Page::default();
    let ts = REFRESH_AT.to_string();
    let body = e.refresh_body();
    page.shows("refresh body", &format!("`{body}`"));
    page.shows("refresh body length", &format!("{}-byte body", body.len()));
    let hash = body_hash_hex(body.as_bytes());
    page.shows("refresh body hash", &format!("`{hash}`"));
    let signed = request_string("POST", REFRESH_TARGET, body.as_bytes(), &ts, &e.nonce_refresh);
    page.shows("refresh signing string", &escaped(&signed));
    page.shows("refresh signing string length", &format!("{} bytes", signed.len()));
    let signature = e.secret.sign_request("POST", REFRESH_TARGET, body.as_bytes(), &ts, &e.nonce_refresh);
    page.shows("refresh signature", &format!("`{signature}`"));
    assert_eq!(
        e.secret.verify_request("POST", REFRESH_TARGET, body.as_bytes(), &ts, &e.nonce_refresh, &signature),
        Ok(())
    );
    let request = http(
        &[
            format!("POST {REFRESH_TARGET} HTTP/1.1"),
            format!("Host: {HOST}"),
            format!("X-Key-Id: {}", e.key_id),
            format!("X-Timestamp: {ts}"),
            format!("X-Nonce: {}", e.nonce_refresh),
            format!("X-Signature: {signature}"),
            "Content-Type: application/json".into(),
            format!("Content-Length: {}", body.len()),
        ],
        &body,
    );
    page.shows("refresh request", &request);
    page.done();
}

#[test]
fn signed_responses_are_the_pages() {
    let e = example();
    let mut page = Page::default();

    // 200 to the GET.
    let ts = SELF_ANSWERED_AT.to_string();
    let body = e.self_body();
    page.shows("200 body length", &format!("{}-byte body", body.len()));
    page.shows("200 body hash", &format!("`{}`", body_hash_hex(body.as_bytes())));
    let signed = response_string(200, &e.nonce_self, body.as_bytes(), &ts);
    page.shows("200 signing string", &escaped(&signed));
    let signature = e.secret.sign_response(200, &e.nonce_self, body.as_bytes(), &ts);
    assert_eq!(e.secret.verify_response(200, &e.nonce_self, body.as_bytes(), &ts, &signature), Ok(()));
    let response = http(
        &[
            "HTTP/1.1 200 OK".into(),
            "content-type: application/json".into(),
            format!("x-timestamp: {ts}"),
            format!("x-signature: {signature}"),
            format!("content-length: {}", body.len()),
            format!("date: {}", imf_fixdate(SELF_ANSWERED_AT)),
        ],
        &body,
    );
    page.shows("200 response", &response);

    // 401 replayed_nonce to the refresh sent again: signed too, with Date.
    let ts = REPLAY_ANSWERED_AT.to_string();
    let code = ProblemCode::ReplayedNonce;
    let body = serde_json::to_string(&serde_json::json!({
        "type": format!("https://fieldvault.invalid/problems/{code}"),
        "title": code.title(),
        "status": 401,
        "code": code.as_str(),
        "detail": "this nonce was already used",
    }))
    .expect("JSON");
    page.shows("401 body hash", &format!("`{}`", body_hash_hex(body.as_bytes())));
    let signed = response_string(401, &e.nonce_refresh, body.as_bytes(), &ts);
    page.shows("401 signing string", &escaped(&signed));
    let signature = e.secret.sign_response(401, &e.nonce_refresh, body.as_bytes(), &ts);
    assert_eq!(e.secret.verify_response(401, &e.nonce_refresh, body.as_bytes(), &ts, &signature), Ok(()));
    assert!(e.secret.verify_response(200, &e.nonce_refresh, body.as_bytes(), &ts, &signature).is_err());
    let response = http(
        &[
            "HTTP/1.1 401 Unauthorized".into(),
            "content-type: application/problem+json".into(),
            "cache-control: no-store".into(),
            format!("date: {}", imf_fixdate(REPLAY_ANSWERED_AT)),
            format!("x-timestamp: {ts}"),
            format!("x-signature: {signature}"),
            format!("content-length: {}", body.len()),
        ],
        &body,
    );
    page.shows("401 response", &response);
    page.done();
}

/// The HTTP status each code is sent with, as the page's table states it.
fn status(code: ProblemCode) -> &'static str {
    match code.as_str() {
        "invalid_token" | "invalid_signature" | "stale_timestamp" | "replayed_nonce" | "invalid_grant"
        | "mfa_required" => "401",
        "provider_unavailable" => "502",
        "forbidden" => "403",
        "not_found" => "404",
        "too_large" => "413, 431",
        "bad_request" => "400, 405, 409",
        "rate_limited" => "429, 409",
        "rollback_detected" => "409",
        "internal" => "500",
        other => panic!("{other} is a new code: add it to the table in docs/protocol.md and here"),
    }
}

#[test]
fn error_table_lists_every_code_with_its_status_and_title() {
    let mut page = Page::default();
    for code in ProblemCode::ALL {
        page.shows(code.as_str(), &format!("| `{code}` | {} | {} |", status(code), code.title()));
    }
    page.done();
}

#[test]
fn window_nonce_and_retention_figures_are_the_codes() {
    let mut page = Page::default();
    page.shows("window", &format!("+/-{TIMESTAMP_WINDOW_SECS} s"));
    page.shows(
        "retention",
        &format!(
            "timestamp + {TIMESTAMP_WINDOW_SECS} + {MAX_SKEW_SECS} = timestamp + {} s",
            TIMESTAMP_WINDOW_SECS + MAX_SKEW_SECS
        ),
    );
    page.shows("nonce length", &format!("{NONCE_LEN} random bytes"));
    page.done();
}
