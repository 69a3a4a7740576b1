//! The signed channel (SPEC section 5) attacked field by field, over real TLS on loopback, on
//! every backend; and the limits and error shapes every route shares.

use std::sync::atomic::Ordering;

use fieldvault_core::protocol::{ACCESS_TYP, AccessClaims, SessionSecret};
use zeroize::Zeroizing;

use crate::harness::{Harness, Signed, backends, now, random_nonce};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(backends().remove(0)).await;
    let mut tls = h.connect().await;
    // Half a request: the header block never ends.
    tls.write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    // The header timeout is 10 s; without it the connection stayed open for good.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), tls.read_to_end(&mut out)).await;
    assert!(ended.is_ok(), "the connection was still open after 20 s");
    assert!(started.elapsed() >= std::time::Duration::from_secs(5), "closed before the client had its time");
    // A complete request on a new connection is still served.
    assert_eq!(h.plain("GET", "/healthz", b"").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_too_slowly_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = fieldvault_server::Config { body_timeout: 1, ..Default::default() };
    let h = Harness::start_bare_with_config(backends().remove(0), None, config).await;
    let mut tls = h.connect().await;
    // The headers announce 100 bytes; 10 come, then nothing.
    tls.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{\"user\": \"",
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .expect("answered and closed well within 10 s")
        .expect("read");
    let r = crate::harness::Response::parse(&out);
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{}", r.text());
    assert!(r.text().contains("did not arrive within 1 s"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_is_answered_with_a_signed_response() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let req = Signed::new(&d, "GET", "/v1/devices/self?verbose=1&x=%41", b"", now());
        let r = h.send(&req.raw()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.verify(&d.secret, &req.nonce).expect("the response signature verifies");
        assert_eq!(r.json()["device_id"], d.device_id.as_str());
        // Bound to the request's nonce and status: checked against anything else it fails.
        assert!(r.verify(&d.secret, &random_nonce()).is_err());
        let wrong = SessionSecret::from_bytes(Zeroizing::new([9; 32]));
        assert!(r.verify(&wrong, &req.nonce).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_nonce_is_rejected_inside_window() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let req = Signed::new(&d, "GET", "/v1/devices/self", b"", now());
        assert_eq!(h.send(&req.raw()).await.status, 200);
        let again = h.send(&req.raw()).await;
        assert_eq!((again.status, again.code().as_str()), (401, "replayed_nonce"));
        // The refusal is signed too, bound to the replayed request's nonce.
        again.verify(&d.secret, &req.nonce).expect("signed refusal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_timestamps_are_refused_with_the_server_time() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        // Past the 300 s window by more than the seconds that may tick between this clock read
        // and the server's (at +301 a second boundary in between made the request fresh, and
        // this test flaky); the window's exact edge is a unit test of `timestamp_is_fresh`.
        for at in [now() - 305, now() + 305] {
            let req = Signed::new(&d, "GET", "/v1/devices/self", b"", at);
            let r = h.send(&req.raw()).await;
            assert_eq!((r.status, r.code().as_str()), (401, "stale_timestamp"));
            // Signed: the device may take the server's time from it.
            r.verify(&d.secret, &req.nonce).expect("a signed refusal");
            let date = r.header("date").expect("Date");
            let server = httpdate::parse_http_date(date).expect("IMF-fixdate");
            let secs = server.duration_since(std::time::UNIX_EPOCH).expect("epoch").as_secs();
            assert!(secs.abs_diff(now()) <= 2, "{date}");
        }
        // Inside the window (and the server's clock 250 s ahead) it is accepted.
        h.offset.store(250, Ordering::SeqCst);
        let r = h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", now()).raw()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        h.offset.store(0, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signed_field_is_covered() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let good = Signed::new(&d, "POST", "/v1/auth/logout", b"{}", now());
        let mut cases: Vec<(&str, Signed)> = Vec::new();
        let mut c = good.clone();
        c.method = "PUT".into();
        cases.push(("method", c));
        let mut c = good.clone();
        c.target = "/v1/auth/logout?x=1".into();
        cases.push(("query", c));
        let mut c = good.clone();
        c.body = b"{ }".to_vec();
        cases.push(("body", c));
        let mut c = good.clone();
        c.timestamp = (now() - 1).to_string();
        cases.push(("timestamp", c));
        let mut c = good.clone();
        c.nonce = random_nonce();
        cases.push(("nonce", c));
        let mut c = good.clone();
        let mut sig = c.signature.into_bytes();
        sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
        c.signature = String::from_utf8(sig).expect("ascii");
        cases.push(("signature", c));
        for (what, req) in cases {
            let r = h.send(&req.raw()).await;
            let expect = if what == "method" { 405 } else { 401 };
            assert_eq!(r.status, expect, "{what}: {}", r.text());
            if expect == 401 {
                assert_eq!(r.code(), "invalid_signature", "{what}");
            }
        }
        // None of them had an effect: the session is alive and the good request works.
        let r = h.send(&good.raw()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_x_headers_and_encoded_bodies_are_refused_before_any_effect() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let mut dup = Signed::new(&d, "POST", "/v1/auth/logout", b"", now());
        dup.extra_headers.push(("X-Nonce".into(), random_nonce()));
        let r = h.send(&dup.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{}", r.text());
        let mut dup_other = Signed::new(&d, "POST", "/v1/auth/logout", b"", now());
        dup_other.extra_headers.push(("X-Custom".into(), "1".into()));
        dup_other.extra_headers.push(("x-custom".into(), "2".into()));
        assert_eq!(h.send(&dup_other.raw()).await.status, 400);
        let mut gz = Signed::new(&d, "POST", "/v1/auth/logout", b"", now());
        gz.extra_headers.push(("Content-Encoding".into(), "gzip".into()));
        let r = h.send(&gz.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
        assert_unsigned(&r, "coded body");
        // The session survived all of them.
        assert_eq!(h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", now()).raw()).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_id_must_name_the_access_tokens_session() {
    for b in backends() {
        let h = Harness::start(b).await;
        let alice = h.device("alice").await;
        let bob = h.device("bob").await;
        let alice2 = h.device("alice").await;
        // Bob's access token with Alice's key id and secret.
        for other in [&bob, &alice2] {
            let mut req = Signed::new(&alice, "GET", "/v1/devices/self", b"", now());
            req.bearer = Some(other.access_token.clone());
            let r = h.send(&req.raw()).await;
            assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
            assert_eq!(r.header("www-authenticate"), Some("Bearer error=\"invalid_token\""));
        }
        // An offline token is never an access token.
        let mut off = Signed::new(&alice, "GET", "/v1/devices/self", b"", now());
        off.bearer = Some(alice.offline_token.clone());
        assert_eq!(h.send(&off.raw()).await.code(), "invalid_token");
        // An expired access token.
        let expired = h.app.tokens.sign(
            ACCESS_TYP,
            &AccessClaims::new(
                "alice",
                &h.app.store.session_by_key_id(&alice.key_id).await.expect("s").expect("s").id,
                &alice.device_id,
                &[],
                now() - 700,
                now() - 100,
                "j".into(),
            ),
        );
        let mut old = Signed::new(&alice, "GET", "/v1/devices/self", b"", now());
        old.bearer = Some(expired);
        assert_eq!(h.send(&old.raw()).await.code(), "invalid_token");
        // No bearer at all, and an unknown key id.
        let mut none = Signed::new(&alice, "GET", "/v1/devices/self", b"", now());
        none.bearer = None;
        assert_eq!(h.send(&none.raw()).await.code(), "invalid_token");
        let mut unknown = Signed::new(&alice, "GET", "/v1/devices/self", b"", now());
        unknown.key_id = "k_nobody".into();
        let r = h.send(&unknown.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_malformed_input_get_problems_never_a_500() {
    for b in backends() {
        let h = Harness::start(b).await;
        let big = vec![b' '; (1 << 20) + 1];
        let r = h.plain("POST", "/v1/auth/login", &big).await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"));
        let d = h.device("alice").await;
        let r = h.send(&Signed::new(&d, "POST", "/v1/auth/logout", &big, now()).raw()).await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"));
        let huge_header = format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        let r = h.send(huge_header.as_bytes()).await;
        assert_eq!((r.status, r.code().as_str()), (431, "too_large"));
        for body in [
            &b"{"[..],
            b"[]",
            b"{\"user\":1}",
            b"\xff\xfe",
            b"{\"user\":\"a\",\"password\":\"b\",\"device_name\":\"c\",\"x\":1}",
        ] {
            let r = h.plain("POST", "/v1/auth/login", body).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{body:?}");
        }
        let login = serde_json::json!({"user": "alice", "password": "x", "device_name": "d"}).to_string();
        let raw = format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n{login}",
            login.len()
        );
        let r = h.send(raw.as_bytes()).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "a coded login body is refused");
        let r = h.plain("GET", "/v1/nothing/here", b"").await;
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
        let r = h.plain("GET", "/v1/auth/login", b"").await;
        assert_eq!(r.status, 405);
        let r = h.plain("GET", "/healthz", b"").await;
        assert_eq!((r.status, r.json()), (200, serde_json::json!({"status": "ok"})));
        let long_name = serde_json::json!({"user": "a".repeat(200), "password": "x", "device_name": "d"});
        let r = h.plain("POST", "/v1/auth/login", long_name.to_string().as_bytes()).await;
        assert_eq!(r.status, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signing_headers_are_refused_unsigned() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let base = Signed::new(&d, "GET", "/v1/devices/self", b"", now());
        let mut cases = Vec::new();
        for ts in ["", "-5", "12a", "1e9", "99999999999999999999"] {
            let mut c = base.clone();
            c.timestamp = ts.into();
            cases.push(c);
        }
        for nonce in
            ["", "AAAA", "not base64!", "AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
        {
            let mut c = base.clone();
            c.nonce = nonce.into();
            cases.push(c);
        }
        for req in cases {
            let r = h.send(&req.raw()).await;
            assert!(r.status == 400 || r.status == 401, "{}: {}", r.status, r.text());
            assert!(["bad_request", "invalid_signature"].contains(&r.code().as_str()), "{}", r.text());
            assert_unsigned(&r, "a malformed signing header");
        }
        let mut missing = base.clone();
        missing.signature = String::new();
        let r = h.send(&missing.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_signature"));
        assert_unsigned(&r, "an empty signature");
        // After all that the session is intact.
        assert_eq!(h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", now()).raw()).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let h = Harness::start_bare(crate::harness::Backend::Sqlite).await;
    let doc = h.plain("GET", "/v1/openapi.json", b"").await.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/auth/jwks", "get"),
        ("/v1/devices/self", "get"),
        ("/v1/devices/ack", "post"),
        ("/v1/sync/push", "post"),
        ("/v1/sync/pull", "get"),
        ("/v1/attachments/{id}", "put"),
        ("/v1/attachments/{id}", "get"),
        ("/v1/attachments/{id}/chunks/{n}", "put"),
        ("/v1/attachments/{id}/chunks/{n}", "get"),
        ("/v1/openapi.json", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    for schema in ["TokenResponse", "LoginRequest", "DeviceProof", "DeviceReason", "LogoutRequest", "AckRequest"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing from the OpenAPI document");
    }
    let token = &doc["components"]["schemas"]["TokenResponse"]["properties"];
    for field in ["device_secret", "device_reason", "directives", "lease"] {
        assert!(token[field].is_object(), "TokenResponse.{field}: {token}");
    }
}

/// Asserts an answer carries nothing that could pass for the server's word: no response
/// signature and no directives.
fn assert_unsigned(r: &crate::harness::Response, what: &str) {
    for name in ["x-signature", "x-timestamp", "x-fieldvault-directives"] {
        assert_eq!(r.header(name), None, "{what}: {name} on an answer before the signature verified");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_signature_verifies_are_unsigned_and_carry_no_directives() {
    use fieldvault_core::protocol::DirectiveKind;
    for b in backends() {
        let h = Harness::start(b).await;
        let (d, other) = (h.device("alice").await, h.device("bob").await);
        // A wiped device: its directive rides on every answer signed for it.
        fieldvault_server::devices::issue_directive(
            &h.app.store,
            "cli:test",
            &h.app.tokens,
            &d.device_id,
            DirectiveKind::Wipe,
            now(),
        )
        .await
        .expect("wipe");
        let device = h.app.store.device(&d.device_id).await.expect("store").expect("device");
        assert_eq!(device.directives.len(), 1);
        let claims = h.app.verifier.directive(&device.directives[0]).expect("a valid directive");
        let body = serde_json::json!({ "jtis": [claims.jti] }).to_string();
        let mut good = Signed::new(&d, "POST", "/v1/devices/ack", body.as_bytes(), now());
        good.bearer = None;

        let mut cases: Vec<(&str, Signed, u16, &str)> = Vec::new();
        let mut c = good.clone();
        c.key_id = "k_nobody".into();
        cases.push(("unknown key id", c, 401, "invalid_token"));
        let mut c = good.clone();
        c.key_id = "k".repeat(65);
        cases.push(("overlong key id", c, 401, "invalid_token"));
        let mut c = good.clone();
        c.extra_headers.push(("X-Nonce".into(), random_nonce()));
        cases.push(("duplicated X-Nonce", c, 400, "bad_request"));
        let mut c = good.clone();
        c.extra_headers.push(("X-Signature".into(), good.signature.clone()));
        cases.push(("duplicated X-Signature", c, 400, "bad_request"));
        let mut c = good.clone();
        c.extra_headers.push(("Content-Encoding".into(), "gzip".into()));
        cases.push(("coded body", c, 400, "bad_request"));
        let mut c = good.clone();
        c.timestamp = "12a".into();
        cases.push(("malformed timestamp", c, 400, "bad_request"));
        let mut c = good.clone();
        c.nonce = "AAAA".into();
        cases.push(("malformed nonce", c, 400, "bad_request"));
        let mut c = good.clone();
        c.signature = String::new();
        cases.push(("empty signature", c, 401, "invalid_signature"));
        let mut c = good.clone();
        let mut sig = c.signature.into_bytes();
        sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
        c.signature = String::from_utf8(sig).expect("ascii");
        cases.push(("bad signature", c, 401, "invalid_signature"));
        let mut c = good.clone();
        c.signature = other.secret.sign_request("POST", "/v1/devices/ack", body.as_bytes(), &c.timestamp, &c.nonce);
        cases.push(("another session's signature", c, 401, "invalid_signature"));
        let mut c = good.clone();
        c.body = serde_json::json!({ "jtis": [] }).to_string().into_bytes();
        cases.push(("body hash mismatch", c, 401, "invalid_signature"));
        let mut c = good.clone();
        c.timestamp = (now() - 1000).to_string();
        cases.push(("stale timestamp under a signature it does not match", c, 401, "invalid_signature"));
        let mut c = good.clone();
        c.body = vec![b' '; (1 << 20) + 1];
        cases.push(("body over the limit", c, 413, "too_large"));
        for (what, req, status, code) in cases {
            let r = h.send(&req.raw()).await;
            assert_eq!((r.status, r.code().as_str()), (status, code), "{what}: {}", r.text());
            assert_unsigned(&r, what);
        }
        // None of them used up the nonce: the real request, sent last, is accepted, signed,
        // and carries the directive it acknowledges.
        let r = h.send(&good.raw()).await;
        assert_eq!((r.status, r.json()["acknowledged"].as_u64()), (200, Some(1)), "{}", r.text());
        r.verify(&d.secret, &good.nonce).expect("signed");
        assert_eq!(r.header("x-fieldvault-directives"), Some(device.directives[0].as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stripped_of_its_bearer_is_refused_signed_and_can_never_run_after() {
    for b in backends() {
        let h = Harness::start(b).await;
        let (d, bob) = (h.device("alice").await, h.device("bob").await);
        for bearer in [None, Some(bob.access_token.clone()), Some("not a token".to_owned())] {
            let full = Signed::new(&d, "POST", "/v1/auth/logout", b"{}", now());
            // A party on the path takes the bearer off (or puts another in): the signature
            // still verifies, so the refusal is signed and bound to the nonce...
            let mut stripped = full.clone();
            stripped.bearer = bearer;
            let r = h.send(&stripped.raw()).await;
            assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"), "{}", r.text());
            r.verify(&d.secret, &full.nonce).expect("a signed refusal");
            // ... and that nonce is used up: the original request, replayed later, never runs.
            let replay = h.send(&full.raw()).await;
            assert_eq!((replay.status, replay.code().as_str()), (401, "replayed_nonce"), "{}", replay.text());
            replay.verify(&d.secret, &full.nonce).expect("a signed refusal");
            assert_eq!(h.signed(&d, "GET", "/v1/devices/self", b"").await.status, 200, "not logged out");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_timestamp_is_refused_signed_and_the_request_stays_refused_when_its_time_comes() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        // Ahead of the server's clock: refused with a verified answer the device can take the
        // time from...
        let ahead = Signed::new(&d, "POST", "/v1/auth/logout", b"{}", now() + 400);
        let r = h.send(&ahead.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "stale_timestamp"), "{}", r.text());
        r.verify(&d.secret, &ahead.nonce).expect("a signed refusal");
        assert!(r.header("date").is_some());
        // ... and when the server's clock reaches it, the same request is still refused.
        h.offset.store(400, Ordering::SeqCst);
        let later = h.send(&ahead.raw()).await;
        assert_eq!((later.status, later.code().as_str()), (401, "replayed_nonce"), "{}", later.text());
        h.offset.store(0, Ordering::SeqCst);
        // Just behind this instance's window, and so still inside that of an instance whose
        // clock is 60 s behind (the skew allowed between instances): refused there too.
        let behind = Signed::new(&d, "POST", "/v1/auth/logout", b"{}", now() - 330);
        let r = h.send(&behind.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "stale_timestamp"), "{}", r.text());
        r.verify(&d.secret, &behind.nonce).expect("a signed refusal");
        let slow = h.sibling().await;
        slow.offset.store(-60, Ordering::SeqCst);
        let elsewhere = slow.send(&behind.raw()).await;
        assert_eq!((elsewhere.status, elsewhere.code().as_str()), (401, "replayed_nonce"), "{}", elsewhere.text());
        // The session was never logged out.
        assert_eq!(h.signed(&d, "GET", "/v1/devices/self", b"").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_answered_signed_with_its_wipe_in_the_order_of_the_checks() {
    use fieldvault_core::protocol::DirectiveKind;
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let claims = fieldvault_server::devices::issue_directive(
            &h.app.store,
            "cli:test",
            &h.app.tokens,
            &d.device_id,
            DirectiveKind::Wipe,
            now(),
        )
        .await
        .expect("wipe");
        let wipe = |r: &crate::harness::Response| {
            let header = r.header("x-fieldvault-directives").expect("the directive rides along");
            assert_eq!(h.app.verifier.directive(header).expect("valid"), claims);
        };
        // Revoked: a signed 401 that carries the wipe.
        let req = Signed::new(&d, "GET", "/v1/devices/self", b"", now());
        let r = h.send(&req.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
        r.verify(&d.secret, &req.nonce).expect("signed");
        wipe(&r);
        // The timestamp and the nonce are judged before revocation: a device with a skewed
        // clock learns the time from a verified answer even though it has been wiped.
        let skewed = Signed::new(&d, "GET", "/v1/devices/self", b"", now() - 900);
        let r = h.send(&skewed.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "stale_timestamp"), "{}", r.text());
        r.verify(&d.secret, &skewed.nonce).expect("signed");
        wipe(&r);
        let r = h.send(&req.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "replayed_nonce"), "{}", r.text());
        r.verify(&d.secret, &req.nonce).expect("signed");
        wipe(&r);
        // The device acknowledges with the revoked session's secret; then the header is gone.
        let body = serde_json::json!({ "jtis": [claims.jti] }).to_string();
        let mut ack = Signed::new(&d, "POST", "/v1/devices/ack", body.as_bytes(), now());
        ack.bearer = None;
        let r = h.send(&ack.raw()).await;
        assert_eq!((r.status, r.json()["acknowledged"].as_u64()), (200, Some(1)), "{}", r.text());
        r.verify(&d.secret, &ack.nonce).expect("signed");
        let r = h.signed(&d, "GET", "/v1/devices/self", b"").await;
        assert_eq!((r.status, r.header("x-fieldvault-directives")), (401, None));
    }
}
