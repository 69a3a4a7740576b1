//! The sync transport against a TLS server on 127.0.0.1 that checks request signatures as the
//! real server does, signs its answers, and can be told to misbehave. The client crate does
//! not depend on the server crate, so the server here is a few lines of hyper and rustls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fieldvault_client::{Auth, Error, MAX_RESPONSE_BYTES, Method, Pins, Request, Transport};
use fieldvault_core::Pin;
use fieldvault_core::protocol::{ProblemCode, SessionSecret, decode_nonce};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, KeyPair, PublicKeyData, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

const KEY_ID: &str = "ses-key-1";
const BEARER: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWFjY2Vzcw";
/// The server's clock, fixed; the client sends the same time.
const NOW: u64 = 1_764_000_000;
const DIRECTIVES: &str = "aaa.bbb.ccc, ddd.eee.fff";
/// Bounds short enough that a hung test fails fast.
const CONNECT: Duration = Duration::from_secs(3);
const WHOLE: Duration = Duration::from_secs(10);

fn secret() -> SessionSecret {
    SessionSecret::from_bytes(Zeroizing::new([7; 32]))
}

fn another_secret() -> SessionSecret {
    SessionSecret::from_bytes(Zeroizing::new([8; 32]))
}

/// What the test server does with a request whose signature verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// 200, echoing what it received, signed, with two pending directives.
    Honest,
    /// Signs, then flips one bit of the body.
    TamperBody,
    /// No `X-Timestamp` or `X-Signature`.
    OmitSignature,
    /// `X-Signature` twice.
    DuplicateSignature,
    /// 302 to an `http://` URL on the same port, signed.
    RedirectToHttp,
    /// A body one byte over the limit, with its `Content-Length`.
    OversizeDeclared,
    /// A chunked body that would go on to 64 MiB.
    OversizeStreamed,
    /// `Content-Encoding: gzip`, signed.
    Gzip,
    /// Answers after 30 s.
    Stall,
    /// Signed 401 `stale_timestamp` with the server's `Date`.
    StaleTimestamp,
    /// 429 `rate_limited` with `Retry-After: 7`.
    RateLimited,
}

struct Options {
    behaviour: Behaviour,
    alpn: Vec<Vec<u8>>,
    keep_alive: bool,
    names: Vec<SanType>,
}

impl Options {
    fn new(behaviour: Behaviour) -> Options {
        Options {
            behaviour,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            keep_alive: true,
            names: vec![
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::DnsName("localhost".try_into().expect("name")),
            ],
        }
    }

    fn http1(mut self) -> Options {
        self.alpn = vec![b"http/1.1".to_vec()];
        self
    }
}

/// What the server received.
#[derive(Debug)]
struct Seen {
    version: hyper::Version,
    method: String,
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Default)]
struct Record {
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    handshake_failures: AtomicUsize,
    streamed: AtomicUsize,
    stream_ended: AtomicBool,
}

struct TestServer {
    addr: SocketAddr,
    pins: Pins,
    record: Arc<Record>,
    // Dropped last: ends every task of the server.
    _runtime: tokio::runtime::Runtime,
}

/// A self-signed ECDSA P-256 certificate for `names`, as `fieldvault-server init` makes one,
/// and the pin of its key.
fn certificate(names: Vec<SanType>) -> (CertificateDer<'static>, PrivateKeyDer<'static>, Pin) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = names;
    let cert = params.self_signed(&key).expect("certificate");
    let pin = Pin::of_spki(&key.subject_public_key_info());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), der, pin)
}

/// A pin of some other key.
fn foreign_pins() -> Pins {
    Pins::new(vec![certificate(vec![SanType::IpAddress([127, 0, 0, 1].into())]).2]).expect("pins")
}

impl TestServer {
    fn start(behaviour: Behaviour) -> TestServer {
        TestServer::with(Options::new(behaviour))
    }

    fn with(options: Options) -> TestServer {
        let (cert, key, pin) = certificate(options.names.clone());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("certificate and key");
        config.alpn_protocols = options.alpn.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let record = Arc::new(Record::default());
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let (r, behaviour, keep_alive) = (record.clone(), options.behaviour, options.keep_alive);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                r.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp, acceptor.clone(), r.clone(), behaviour, keep_alive, addr));
            }
        });
        TestServer { addr, pins: Pins::new(vec![pin]).expect("pins"), record, _runtime: runtime }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn transport(&self) -> Transport {
        Transport::new(&self.url(), self.pins.clone()).expect("transport").with_timeouts(CONNECT, WHOLE)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        self.record.seen.lock().expect("lock")
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    record: Arc<Record>,
    behaviour: Behaviour,
    keep_alive: bool,
    addr: SocketAddr,
) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        record.handshake_failures.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let service = service_fn(move |req| answer(req, record.clone(), behaviour, addr));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(keep_alive);
    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
}

type Answer = hyper::Response<BoxBody<Bytes, Infallible>>;

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// An unsigned problem answer, as the real server gives before it can sign.
fn problem(status: u16, code: &str) -> Answer {
    let body = serde_json::json!({"code": code, "status": status}).to_string();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("response")
}

async fn answer(
    req: hyper::Request<Incoming>,
    record: Arc<Record>,
    behaviour: Behaviour,
    addr: SocketAddr,
) -> Result<Answer, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
    let target = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let h = &parts.headers;
    let nonce = header(h, "x-nonce").map(str::to_owned);
    if h.contains_key("x-key-id") {
        // The real server's check: the signature over method, raw target, body hash,
        // timestamp and nonce. A failure is answered unsigned here.
        let verified = (|| {
            if header(h, "x-key-id")? != KEY_ID {
                return None;
            }
            let (ts, nonce, sig) = (header(h, "x-timestamp")?, header(h, "x-nonce")?, header(h, "x-signature")?);
            secret().verify_request(parts.method.as_str(), &target, &body, ts, nonce, sig).ok()
        })()
        .is_some();
        if !verified {
            record.seen.lock().expect("lock").push(Seen {
                version: parts.version,
                method: parts.method.to_string(),
                target,
                headers: h.clone(),
                body,
            });
            return Ok(problem(401, "invalid_signature"));
        }
    }
    let echo = serde_json::json!({"method": parts.method.as_str(), "target": target, "body_len": body.len()});
    record.seen.lock().expect("lock").push(Seen {
        version: parts.version,
        method: parts.method.to_string(),
        target,
        headers: h.clone(),
        body,
    });

    let mut builder = hyper::Response::builder();
    let (status, mut bytes) = match behaviour {
        Behaviour::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (200, echo.to_string().into_bytes())
        }
        Behaviour::RedirectToHttp => {
            builder = builder.header("location", format!("http://127.0.0.1:{}/v1/elsewhere", addr.port()));
            (302, Vec::new())
        }
        Behaviour::OversizeDeclared => (200, vec![b'x'; MAX_RESPONSE_BYTES + 1]),
        Behaviour::OversizeStreamed => {
            let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 << 10]);
                for _ in 0..1024 {
                    if tx.send_data(chunk.clone()).await.is_err() {
                        break;
                    }
                    record.streamed.fetch_add(chunk.len(), Ordering::SeqCst);
                }
                record.stream_ended.store(true, Ordering::SeqCst);
            });
            return Ok(builder.status(200).body(body.boxed()).expect("response"));
        }
        Behaviour::Gzip => {
            builder = builder.header("content-encoding", "gzip");
            (200, vec![0x1f, 0x8b, 8, 0])
        }
        Behaviour::StaleTimestamp => {
            let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(NOW));
            builder = builder.header("date", date).header("content-type", "application/problem+json");
            (401, br#"{"code":"stale_timestamp","status":401}"#.to_vec())
        }
        Behaviour::RateLimited => {
            builder = builder.header("retry-after", "7").header("content-type", "application/problem+json");
            (429, br#"{"code":"rate_limited","status":429}"#.to_vec())
        }
        _ => (200, echo.to_string().into_bytes()),
    };
    if let Some(nonce) = nonce.filter(|_| behaviour != Behaviour::OmitSignature) {
        let ts = NOW.to_string();
        let sig = secret().sign_response(status, &nonce, &bytes, &ts);
        builder = builder.header("x-timestamp", &ts).header("x-signature", &sig);
        if behaviour == Behaviour::DuplicateSignature {
            builder = builder.header("x-signature", &sig);
        }
        builder = builder.header("x-fieldvault-directives", DIRECTIVES);
    }
    if behaviour == Behaviour::TamperBody {
        bytes[0] ^= 1;
    }
    Ok(builder.status(status).body(Full::new(Bytes::from(bytes)).boxed()).expect("response"))
}

fn signed<'a>(secret: &'a SessionSecret, target: &'a str, body: &'a [u8]) -> Request<'a> {
    let method = if body.is_empty() { Method::Get } else { Method::Post };
    Request {
        method,
        path_and_query: target,
        body,
        auth: Auth::Signed { key_id: KEY_ID, secret, bearer: Some(BEARER) },
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn signed_round_trip_over_h2_is_verified_and_carries_directives() {
    let server = TestServer::start(Behaviour::Honest);
    let secret = secret();
    let target = "/v1/devices/self?verbose=1&x=%41";
    let resp = server.transport().send(&signed(&secret, target, b""), NOW).expect("verified answer");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.verified_at, Some(NOW));
    assert_eq!(resp.directives, ["aaa.bbb.ccc", "ddd.eee.fff"]);
    let echo: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(echo["target"], target, "the raw target arrived as sent and signed");
    let seen = server.seen();
    assert_eq!((seen.len(), seen[0].version), (1, hyper::Version::HTTP_2));
    assert!(!seen[0].headers.contains_key("content-type"), "no body, no content type");
}

#[test]
fn signed_round_trip_over_http1_sends_the_spec_headers() {
    let server = TestServer::with(Options::new(Behaviour::Honest).http1());
    let secret = secret();
    let body = br#"{"ops":[],"device_seq":3}"#;
    let resp = server.transport().send(&signed(&secret, "/v1/sync/push", body), NOW).expect("verified answer");
    assert_eq!((resp.status, resp.verified_at), (200, Some(NOW)));
    let seen = server.seen();
    let h = &seen[0].headers;
    assert_eq!(seen[0].version, hyper::Version::HTTP_11);
    assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("POST", "/v1/sync/push"));
    assert_eq!(seen[0].body, body);
    assert_eq!(header(h, "authorization"), Some(format!("Bearer {BEARER}").as_str()));
    assert_eq!(header(h, "x-key-id"), Some(KEY_ID));
    assert_eq!(header(h, "x-timestamp"), Some("1764000000"));
    assert!(decode_nonce(header(h, "x-nonce").expect("nonce")).is_ok(), "16 bytes, canonical base64");
    assert_eq!(header(h, "x-signature").map(str::len), Some(44));
    assert_eq!(header(h, "content-type"), Some("application/json"));
    assert_eq!(header(h, "host"), Some(format!("127.0.0.1:{}", server.addr.port()).as_str()));
}

#[test]
fn refresh_is_signed_without_a_bearer_token() {
    let server = TestServer::start(Behaviour::Honest);
    let secret = secret();
    let req = Request::post_json(
        "/v1/auth/refresh",
        br#"{"refresh_token":"r","attempt_id":"a"}"#,
        Auth::Signed { key_id: KEY_ID, secret: &secret, bearer: None },
    );
    let resp = server.transport().send(&req, NOW).expect("verified answer");
    assert_eq!(resp.verified_at, Some(NOW));
    assert!(!server.seen()[0].headers.contains_key("authorization"));
}

#[test]
fn unsigned_request_carries_no_signed_channel_headers() {
    let server = TestServer::start(Behaviour::Honest);
    let req = Request::post_json("/v1/auth/login", br#"{"user":"alice","password":"pw"}"#, Auth::None);
    let resp = server.transport().send(&req, NOW).expect("answer");
    assert_eq!((resp.status, resp.verified_at), (200, None));
    assert!(resp.directives.is_empty());
    let seen = server.seen();
    for name in ["authorization", "x-key-id", "x-timestamp", "x-nonce", "x-signature"] {
        assert!(!seen[0].headers.contains_key(name), "{name}");
    }
}

#[test]
fn rate_limited_answer_carries_retry_after() {
    let server = TestServer::start(Behaviour::RateLimited);
    let req = Request::post_json("/v1/auth/login", b"{}", Auth::None);
    let resp = server.transport().send(&req, NOW).expect("answer");
    assert_eq!((resp.status, resp.retry_after), (429, Some(7)));
}

#[test]
fn http_url_is_refused_before_any_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    for url in [format!("http://127.0.0.1:{port}"), format!("HTTP://127.0.0.1:{port}/")] {
        let e = Transport::new(&url, foreign_pins()).expect_err("plain http is refused");
        assert!(matches!(e, Error::InvalidServerUrl(_)), "{e:?}");
        assert!(e.to_string().contains("http://"), "{e}");
    }
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "nothing connected"
    );
}

#[test]
fn wrong_pin_fails_the_handshake_before_any_http_byte() {
    let server = TestServer::start(Behaviour::Honest);
    let transport = Transport::new(&server.url(), foreign_pins()).expect("transport").with_timeouts(CONNECT, WHOLE);
    let secret = secret();
    let e = transport.send(&signed(&secret, "/v1/sync/push", b"{}"), NOW).expect_err("refused");
    assert!(matches!(e, Error::PinMismatch { port, .. } if port == server.addr.port()), "{e:?}");
    assert!(e.to_string().contains("not one of the pinned server keys"), "{e}");
    wait_for("the server to see the handshake fail", || server.record.handshake_failures.load(Ordering::SeqCst) == 1);
    assert!(server.seen().is_empty(), "no request reached the server");
}

#[test]
fn certificate_for_another_name_is_a_tls_error_not_a_pin_error() {
    let mut options = Options::new(Behaviour::Honest);
    options.names = vec![SanType::DnsName("sync.invalid".try_into().expect("name"))];
    let server = TestServer::with(options);
    let e = server.transport().send(&Request::get("/healthz", Auth::None), NOW).expect_err("refused");
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(server.seen().is_empty());
}

#[test]
fn tampered_body_is_refused_and_not_returned() {
    let server = TestServer::start(Behaviour::TamperBody);
    let secret = secret();
    let e = server.transport().send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("refused");
    assert!(matches!(e, Error::ResponseNotVerified { status: 200, .. }), "{e:?}");
}

#[test]
fn missing_signature_is_refused() {
    let server = TestServer::start(Behaviour::OmitSignature);
    let secret = secret();
    let e = server.transport().send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("refused");
    assert!(
        matches!(e, Error::ResponseNotVerified { status: 200, reason } if reason.contains("no signature")),
        "{e:?}"
    );
}

#[test]
fn duplicated_signature_header_is_refused() {
    let server = TestServer::start(Behaviour::DuplicateSignature);
    let secret = secret();
    let e = server.transport().send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("refused");
    assert!(matches!(e, Error::ResponseNotVerified { reason, .. } if reason.contains("more than once")), "{e:?}");
}

#[test]
fn a_signature_the_server_refused_is_an_unsigned_refusal_not_an_answer() {
    let server = TestServer::start(Behaviour::Honest);
    let (mine, theirs) = (another_secret(), secret());
    let resp = server.transport().send(&signed(&theirs, "/v1/sync/pull", b""), NOW).expect("verified");
    assert_eq!(resp.status, 200);
    let e = server.transport().send(&signed(&mine, "/v1/sync/pull", b""), NOW).expect_err("refused");
    // The server could not verify this request, so it refused it unsigned.
    assert!(matches!(e, Error::UnsignedRefusal { status: 401, code: ProblemCode::InvalidSignature }), "{e:?}");
    assert!(e.to_string().contains("without signing its answer"), "{e}");
}

#[test]
fn stale_timestamp_answer_is_verified_and_carries_the_server_date() {
    let server = TestServer::start(Behaviour::StaleTimestamp);
    let secret = secret();
    let resp = server.transport().send(&signed(&secret, "/v1/sync/pull", b""), NOW - 3600).expect("verified");
    assert_eq!((resp.status, resp.verified_at, resp.date), (401, Some(NOW), Some(NOW)));
    assert_eq!(header(&server.seen()[0].headers, "x-timestamp"), Some((NOW - 3600).to_string().as_str()));
}

#[test]
fn declared_oversize_body_is_refused() {
    let server = TestServer::start(Behaviour::OversizeDeclared);
    let secret = secret();
    let e = server.transport().send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("refused");
    assert!(matches!(e, Error::ResponseTooLarge { limit } if limit == MAX_RESPONSE_BYTES), "{e:?}");
}

#[test]
fn streamed_oversize_body_is_refused_without_reading_it_all() {
    for options in [Options::new(Behaviour::OversizeStreamed), Options::new(Behaviour::OversizeStreamed).http1()] {
        let server = TestServer::with(options);
        let secret = secret();
        let e = server.transport().send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("refused");
        assert!(matches!(e, Error::ResponseTooLarge { .. }), "{e:?}");
        wait_for("the server to stop streaming", || server.record.stream_ended.load(Ordering::SeqCst));
        let streamed = server.record.streamed.load(Ordering::SeqCst);
        assert!(streamed < 32 << 20, "the client stopped reading early ({streamed} bytes sent of 64 MiB)");
    }
}

#[test]
fn coded_answer_is_refused() {
    let server = TestServer::start(Behaviour::Gzip);
    let secret = secret();
    let e = server.transport().send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("refused");
    assert!(matches!(&e, Error::MalformedResponse(m) if m.contains("Content-Encoding")), "{e:?}");
}

#[test]
fn redirect_is_not_followed() {
    let server = TestServer::start(Behaviour::RedirectToHttp);
    let secret = secret();
    let e = server.transport().send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("refused");
    assert!(matches!(e, Error::RedirectNotFollowed { status: 302 }), "{e:?}");
    assert!(e.to_string().contains("redirects are never followed"), "{e}");
    assert_eq!(server.seen().len(), 1, "the Location was not requested");
    assert_eq!(server.record.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn stalled_server_times_out_within_the_bound() {
    let server = TestServer::start(Behaviour::Stall);
    let transport = server.transport().with_timeouts(CONNECT, Duration::from_secs(1));
    let secret = secret();
    let started = Instant::now();
    let e = transport.send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("timed out");
    assert!(matches!(e, Error::TimedOut { what: "the request", .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[test]
fn silent_server_times_out_while_connecting() {
    // The kernel accepts the TCP connection; nothing ever answers the ClientHello.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let transport =
        Transport::new(&url, foreign_pins()).expect("transport").with_timeouts(Duration::from_millis(500), WHOLE);
    let started = Instant::now();
    let e = transport.send(&Request::get("/healthz", Auth::None), NOW).expect_err("timed out");
    assert!(matches!(e, Error::TimedOut { what: "connecting to the sync server", .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[test]
fn closed_port_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let transport = Transport::new(&format!("https://127.0.0.1:{port}"), foreign_pins()).expect("transport");
    let e = transport.send(&Request::get("/healthz", Auth::None), NOW).expect_err("unreachable");
    assert!(matches!(e, Error::ServerUnreachable { .. }), "{e:?}");
}

#[test]
fn retry_of_the_same_request_is_signed_afresh_on_one_connection() {
    for options in [Options::new(Behaviour::Honest), Options::new(Behaviour::Honest).http1()] {
        let server = TestServer::with(options);
        let transport = server.transport();
        let secret = secret();
        let req = signed(&secret, "/v1/sync/push", br#"{"ops":[]}"#);
        transport.send(&req, NOW).expect("first");
        transport.send(&req, NOW + 1).expect("again");
        let seen = server.seen();
        let nonces: Vec<_> = seen.iter().map(|s| header(&s.headers, "x-nonce").expect("nonce")).collect();
        assert_ne!(nonces[0], nonces[1], "a new nonce for every send");
        assert_eq!(header(&seen[1].headers, "x-timestamp"), Some("1764000001"));
        assert_ne!(header(&seen[0].headers, "x-signature"), header(&seen[1].headers, "x-signature"));
        assert_eq!(server.record.connections.load(Ordering::SeqCst), 1, "the connection was kept");
    }
}

#[test]
fn a_closed_connection_is_reopened_for_the_next_request() {
    let mut options = Options::new(Behaviour::Honest).http1();
    options.keep_alive = false;
    let server = TestServer::with(options);
    let transport = server.transport();
    let secret = secret();
    for _ in 0..3 {
        let resp = transport.send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect("answer");
        assert_eq!(resp.verified_at, Some(NOW));
    }
    assert_eq!(server.record.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn a_failed_exchange_does_not_poison_the_next() {
    let server = TestServer::start(Behaviour::TamperBody);
    let transport = server.transport();
    let secret = secret();
    for _ in 0..2 {
        let e = transport.send(&signed(&secret, "/v1/sync/pull", b""), NOW).expect_err("refused");
        assert!(matches!(e, Error::ResponseNotVerified { .. }), "{e:?}");
    }
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn no_secret_in_debug_or_error_messages() {
    let server = TestServer::start(Behaviour::TamperBody);
    let transport = server.transport();
    assert_eq!(format!("{transport:?}"), format!("Transport {{ host: \"127.0.0.1\", port: {} }}", server.addr.port()));
    let secret = secret();
    let body = br#"{"password":"hunter2-marker"}"#;
    let req = signed(&secret, "/v1/auth/logout", body);
    let e = transport.send(&req, NOW).expect_err("refused");
    let secret_b64 = secret.to_base64();
    for shown in [format!("{req:?}"), format!("{e:?}"), e.to_string()] {
        for leak in [BEARER, secret_b64.as_str(), "hunter2-marker"] {
            assert!(!shown.contains(leak), "{shown} shows {leak}");
        }
    }
    let honest = TestServer::start(Behaviour::Honest);
    let resp = honest.transport().send(&req, NOW).expect("answer");
    assert!(!format!("{resp:?}").contains("body_len"), "{resp:?}");
}

#[test]
fn invalid_requests_are_refused_before_sending() {
    let server = TestServer::start(Behaviour::Honest);
    let transport = server.transport();
    let secret = secret();
    for target in ["v1/sync/pull", "/v1/sync pull", "/v1/x#frag"] {
        let e = transport.send(&signed(&secret, target, b""), NOW).expect_err("refused");
        assert!(matches!(e, Error::InvalidRequest(_)), "{target}: {e:?}");
    }
    let bad_bearer =
        Request::get("/v1/sync/pull", Auth::Signed { key_id: KEY_ID, secret: &secret, bearer: Some("a\nb") });
    assert!(matches!(transport.send(&bad_bearer, NOW), Err(Error::InvalidRequest(_))));
    assert!(server.seen().is_empty());
}

#[test]
fn transport_is_shareable_and_safe_inside_an_async_runtime() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Transport>();
    let server = TestServer::start(Behaviour::Honest);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let transport = server.transport();
        let e = transport.send(&Request::get("/healthz", Auth::None), NOW).expect_err("refused");
        assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
        drop(transport); // no panic from dropping its runtime here
    });
}
