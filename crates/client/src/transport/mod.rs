//! The device's HTTPS transport for the sync protocol (SPEC section 5; `docs/protocol.md`
//! sections 3, 8 and 9; `docs/adr/0006-sync-transport.md`).
//!
//! [`Transport::send`] is blocking, like the rest of the SDK: it runs hyper's connection-level
//! client (HTTP/1.1 or h2, as ALPN decides) over tokio-rustls on a current-thread tokio runtime
//! the transport owns, and keeps one connection open between requests. It does what the signed
//! channel needs and refuses the rest:
//!
//! - HTTPS only. The server's key is checked against the [`Pins`] inside the handshake, so a
//!   mismatch fails before one byte of HTTP is written.
//! - A signed request is signed when it is sent, never earlier: a fresh 16-byte nonce and the
//!   caller's clock, over the request target exactly as it goes on the wire. Its answer is
//!   verified (`FV1-RESPONSE`, bound to that nonce) before anything of it is returned.
//! - Bounded: [`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`], [`MAX_RESPONSE_BYTES`] read
//!   incrementally. No redirects, no content codings.
//! - No secret in an error, a `Debug` or a log: the session secret, the bearer token and the
//!   bodies never appear in either.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_core::protocol::{NONCE_LEN, ProblemCode, SessionSecret, parse_timestamp};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{TrySendError, http1, http2};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::{Error, Pins, pinned_client_config};

mod answer;
mod connection;
mod outgoing;
mod url;

use answer::*;
use connection::*;
use outgoing::*;
use url::*;

/// The largest response body accepted. A pull page stays under 4 MiB of changes (SPEC
/// section 5); the other 4 MiB leave room for its JSON framing. Larger answers are refused
/// while they are read, never buffered whole.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Time allowed to open a connection: TCP, the TLS handshake and HTTP/2's preface. The server
/// itself gives a handshake 10 s (`docs/protocol.md` section 3).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for one whole exchange, connecting included, up to the last byte of the
/// answer. The server gives a request body 60 s to arrive; a sync engine that sees this
/// expire treats the server as unreachable for now.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Response headers an HTTP/2 connection accepts (hyper's HTTP/1.1 limit is larger): room for
/// a few dozen pending directives.
const MAX_RESPONSE_HEADER_BYTES: u32 = 64 << 10;

const X_KEY_ID: HeaderName = HeaderName::from_static("x-key-id");
const X_TIMESTAMP: HeaderName = HeaderName::from_static("x-timestamp");
const X_NONCE: HeaderName = HeaderName::from_static("x-nonce");
const X_SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
const X_DIRECTIVES: HeaderName = HeaderName::from_static("x-fieldvault-directives");

/// The methods the sync protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT` (attachments)
    Put,
}

impl Method {
    /// The method as it appears in the request line and in the signed string.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }

    fn to_http(self) -> hyper::Method {
        match self {
            Method::Get => hyper::Method::GET,
            Method::Post => hyper::Method::POST,
            Method::Put => hyper::Method::PUT,
        }
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// Not signed: login, the JWKS, health. Its answer is not signed either.
    None,
    /// Signed with the session's secret (SPEC section 5, "Signed requests"); its answer must
    /// carry a valid response signature.
    Signed {
        /// The session's `key_id`, sent as `X-Key-Id`.
        key_id: &'a str,
        /// The session secret the request and its answer are signed with.
        secret: &'a SessionSecret,
        /// The access token, sent as `Authorization: Bearer`; `None` on refresh and on
        /// `POST /v1/devices/ack`.
        bearer: Option<&'a str>,
    },
}

impl fmt::Debug for Auth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Signed { key_id, bearer, .. } => f
                .debug_struct("Signed")
                .field("key_id", key_id)
                .field("secret", &"[redacted]")
                .field("bearer", &bearer.map(|_| "[redacted]"))
                .finish(),
        }
    }
}

/// One request. It holds no nonce or timestamp: those are made by [`Transport::send`] each
/// time it is sent, so sending the same `Request` again signs it afresh. `Debug` shows the
/// body's length only (a login body holds a password).
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The request target, exactly as it goes on the wire and into the signature
    /// (`/v1/sync/pull?since=c1&limit=100`): a path starting with `/`, an optional query, in
    /// visible ASCII (percent-encode the rest), no fragment.
    pub path_and_query: &'a str,
    /// The body: JSON, sent as `application/json` unless empty (an empty body hashes as the
    /// empty string when signed).
    pub body: &'a [u8],
    /// How it authenticates.
    pub auth: Auth<'a>,
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("body", &format_args!("{} bytes", self.body.len()))
            .field("auth", &self.auth)
            .finish()
    }
}

impl<'a> Request<'a> {
    /// A `GET` with no body.
    pub fn get(path_and_query: &'a str, auth: Auth<'a>) -> Request<'a> {
        Request { method: Method::Get, path_and_query, body: &[], auth }
    }

    /// A `POST` of a JSON body.
    pub fn post_json(path_and_query: &'a str, json: &'a [u8], auth: Auth<'a>) -> Request<'a> {
        Request { method: Method::Post, path_and_query, body: json, auth }
    }
}

/// A whole answer. For a signed request it is returned only once its signature verified
/// (then `verified_at` is `Some`); `date`, `retry_after` and `directives` ride in headers the
/// signature does not cover. `Debug` shows the body's length only (a login answer holds
/// tokens and secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status (never 3xx: redirects are errors).
    pub status: u16,
    /// The body, at most [`MAX_RESPONSE_BYTES`]; zeroized on drop (token answers carry
    /// secrets).
    pub body: Zeroizing<Vec<u8>>,
    /// The `X-Timestamp` of a verified signed answer: the server's clock, the one a client
    /// may correct its offset from. `None` for an unsigned request.
    pub verified_at: Option<u64>,
    /// `X-Fieldvault-Directives`, one compact JWS per entry, oldest first. Not covered by
    /// the response signature: each must be verified as a JWS before it is acted on.
    pub directives: Vec<String>,
    /// The `Date` header (Unix seconds), for a `stale_timestamp` answer. Unsigned: use
    /// `verified_at` where there is one.
    pub date: Option<u64>,
    /// `Retry-After` in seconds from now (a date is turned into seconds after `now`).
    pub retry_after: Option<u64>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body", &format_args!("{} bytes", self.body.len()))
            .field("verified_at", &self.verified_at)
            .field("directives", &self.directives.len())
            .field("date", &self.date)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// The HTTPS transport to one sync server. One request at a time (a second caller waits);
/// `Send` and `Sync`, so one `Transport` can be shared by reference between threads.
pub struct Transport {
    /// The host as dialled (an IPv6 address without brackets).
    host: String,
    port: u16,
    /// `HOST[:PORT]` as in the URL: the `Host` header and HTTP/2's `:authority`.
    authority: Authority,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    connect_timeout: Duration,
    request_timeout: Duration,
    connection: Mutex<Option<Connection>>,
    /// Always `Some` until drop (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport").field("host", &self.host).field("port", &self.port).finish()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // Dropping a runtime blocks (on a name lookup still running, for one), and tokio
        // forbids that inside another runtime: shut it down without waiting instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Transport {
    /// A transport to `server`, which must be `https://HOST[:PORT]` (a trailing `/` is
    /// allowed), trusting only a server whose key is one of `pins`. Connects lazily, on the
    /// first [`Transport::send`].
    ///
    /// # Errors
    /// - [`Error::InvalidServerUrl`]: `http://` or another scheme, a user name or password,
    ///   a path, query or fragment, or a host or port that is not valid.
    /// - [`Error::NetworkRuntime`]: the runtime could not be started.
    pub fn new(server: &str, pins: Pins) -> Result<Transport, Error> {
        let url = ServerUrl::parse(server)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::NetworkRuntime)?;
        Ok(Transport {
            host: url.host,
            port: url.port,
            authority: url.authority,
            server_name: url.server_name,
            tls: TlsConnector::from(Arc::new(pinned_client_config(pins))),
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            connection: Mutex::new(None),
            runtime: Some(runtime),
        })
    }

    /// The same transport with other bounds (tests, or a slow link): `connect` for opening a
    /// connection, `request` for a whole exchange.
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Transport {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    /// The server's host, as dialled.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one request and returns the whole answer. A signed request is signed now, with a
    /// fresh nonce and `now` (Unix seconds, the caller's corrected clock) as `X-Timestamp`;
    /// its answer is returned only once its response signature verified. Any status other
    /// than 3xx is returned as a [`Response`]; the caller reads the problem code of a 4xx.
    ///
    /// # Errors
    /// - Offline, nothing learned: [`Error::ServerUnreachable`], [`Error::ConnectionLost`],
    ///   [`Error::TimedOut`]. After the last two the request may have had its effect; send
    ///   it again (it is signed afresh) and let idempotency keys do their work.
    /// - The server's identity: [`Error::PinMismatch`], [`Error::Tls`]; nothing was sent.
    /// - The answer: [`Error::ResponseNotVerified`], [`Error::UnsignedRefusal`],
    ///   [`Error::MalformedResponse`], [`Error::ResponseTooLarge`],
    ///   [`Error::RedirectNotFollowed`]; nothing of it is returned.
    /// - [`Error::InvalidRequest`]: the target, key id or bearer token is not a valid header
    ///   value, or this was called inside an async runtime; nothing was sent.
    ///
    /// # Security
    /// Act on an answer to a signed request only through this function's `Ok`: the errors
    /// above carry nothing of an unverified answer but its status and problem code, and an
    /// [`Error::UnsignedRefusal`] is not authenticated (it must not end a session or delete
    /// anything by itself).
    pub fn send(&self, request: &Request<'_>, now: u64) -> Result<Response, Error> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InvalidRequest(
                "Transport::send blocks and was called inside an async runtime (call it from a plain thread; spawn_blocking threads are inside the runtime too)",
            ));
        }
        let outgoing = Outgoing::prepare(request, now)?;
        let mut connection = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        let runtime = self.runtime.as_ref().expect("the runtime is only taken on drop");
        let answer = runtime.block_on(async {
            match tokio::time::timeout(self.request_timeout, self.exchange(&mut connection, &outgoing)).await {
                Ok(answer) => answer,
                Err(_) => Err(Error::TimedOut { what: "the request", after: self.request_timeout }),
            }
        });
        match answer {
            Ok(answer) => answer.into_response(&outgoing, now),
            Err(e) => {
                // A connection that failed, or whose answer was left unread, is not reused.
                *connection = None;
                Err(e)
            }
        }
    }

    /// Sends the request and reads the whole answer, within the limits.
    async fn exchange(&self, connection: &mut Option<Connection>, outgoing: &Outgoing<'_>) -> Result<Answer, Error> {
        let response = self.round_trip(connection, outgoing).await?;
        let (head, body) = response.into_parts();
        let length = check_head(head.status, &head.headers)?;
        let body = read_body(body, length).await?;
        Ok(Answer { status: head.status.as_u16(), headers: head.headers, body })
    }

    /// Sends on the open connection if there is one, else (or if it turns out closed before
    /// the request was written) on a new one.
    async fn round_trip(
        &self,
        connection: &mut Option<Connection>,
        outgoing: &Outgoing<'_>,
    ) -> Result<hyper::Response<Incoming>, Error> {
        if let Some(open) = connection.as_mut() {
            // Let the connection's task notice a close the server sent while we were idle.
            tokio::task::yield_now().await;
            if open.ready().await.is_ok() {
                match open.send(outgoing, &self.authority).await {
                    Ok(response) => return Ok(response),
                    // Never written: safe to send on a new connection, same nonce and all.
                    Err(Failed { unsent: true, .. }) => {}
                    Err(Failed { error, .. }) => return Err(hyper_failure(error)),
                }
            }
            *connection = None;
        }
        let new = match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Ok(new) => new?,
            Err(_) => {
                return Err(Error::TimedOut { what: "connecting to the sync server", after: self.connect_timeout });
            }
        };
        let open = connection.insert(new);
        open.send(outgoing, &self.authority).await.map_err(|f| hyper_failure(f.error))
    }

    /// TCP, then TLS with the pinned verifier, then HTTP/2 or HTTP/1.1 as ALPN chose.
    async fn connect(&self) -> Result<Connection, Error> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::ServerUnreachable { host: self.host.clone(), port: self.port, source })?;
        // Small requests and answers: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let tls = self.tls.connect(self.server_name.clone(), tcp).await.map_err(|e| self.tls_failure(e))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        let io = TokioIo::new(tls);
        if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(MAX_RESPONSE_HEADER_BYTES)
                .handshake(io)
                .await
                .map_err(hyper_failure)?;
            tokio::spawn(connection);
            Ok(Connection::Http2(sender))
        } else {
            let (sender, connection) = http1::Builder::new().handshake(io).await.map_err(hyper_failure)?;
            tokio::spawn(connection);
            Ok(Connection::Http1(sender))
        }
    }

    /// What a failed handshake means: a pin mismatch (our verifier's only refusal of a
    /// certificate), another TLS failure, or a connection that broke under it.
    fn tls_failure(&self, e: io::Error) -> Error {
        let (host, port) = (self.host.clone(), self.port);
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)) => {
                Error::PinMismatch { host, port }
            }
            Some(other) => Error::Tls { host, port, reason: other.to_string() },
            None => match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => {
                    Error::ConnectionLost(format!("the connection closed during the TLS handshake ({e})"))
                }
                _ => Error::Tls { host, port, reason: e.to_string() },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_host_and_port_is_a_server_url() {
        let ok = |s: &str| ServerUrl::parse(s).map(|u| (u.host, u.port, u.authority.to_string()));
        assert_eq!(ok("https://sync.example").ok(), Some(("sync.example".into(), 443, "sync.example".into())));
        assert_eq!(ok("HTTPS://127.0.0.1:8443/").ok(), Some(("127.0.0.1".into(), 8443, "127.0.0.1:8443".into())));
        assert_eq!(ok("https://[::1]:9000").ok(), Some(("::1".into(), 9000, "[::1]:9000".into())));
        for bad in [
            "http://sync.example",
            "sync.example",
            "ftp://sync.example",
            "https://user:pw@sync.example",
            "https://sync.example/v1",
            "https://sync.example?x=1",
            "https://sync.example#f",
            "https://",
            "https://:443",
            "https://sync.example:0",
            "https://sync.example:65536",
            "https://sync.example:+1",
            "https://sync example",
            "https://[::1",
            "https://[nothost]:1",
            "https://a:1:2",
        ] {
            assert!(matches!(ServerUrl::parse(bad), Err(Error::InvalidServerUrl(_))), "{bad}");
        }
    }

    #[test]
    fn a_refused_url_is_not_repeated_in_the_error() {
        let e = ServerUrl::parse("https://alice:hunter2@sync.example").err().expect("refused");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"));
    }

    #[test]
    fn request_targets_are_sent_exactly_as_given() {
        for good in ["/", "/v1/sync/pull?since=c1&limit=100", "/v1/devices/self?verbose=1&x=%41"] {
            assert_eq!(request_target(good).expect("valid").as_str(), good);
        }
        for bad in ["", "v1/sync", "/a b", "/a#frag", "/caf\u{e9}", "/a\n"] {
            assert!(matches!(request_target(bad), Err(Error::InvalidRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, 0), Some(7));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("Thu, 01 Jan 1970 00:01:40 GMT"));
        assert_eq!(retry_after(&h, 60), Some(40));
        assert_eq!(retry_after(&h, 200), Some(0));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, 0), None);
    }

    #[test]
    fn directives_are_split_as_the_server_joins_them() {
        let mut h = HeaderMap::new();
        h.insert(X_DIRECTIVES, HeaderValue::from_static("a.b.c, d.e.f"));
        assert_eq!(directives(&h).expect("ascii"), ["a.b.c", "d.e.f"]);
        assert!(directives(&HeaderMap::new()).expect("none").is_empty());
    }

    #[test]
    fn debug_of_a_request_shows_no_secret_or_body() {
        let secret = SessionSecret::from_bytes(Zeroizing::new([9; 32]));
        let auth = Auth::Signed { key_id: "k1", secret: &secret, bearer: Some("tok.en.jwt") };
        let req = Request::post_json("/v1/auth/logout", br#"{"password":"hunter2"}"#, auth);
        let shown = format!("{req:?}");
        assert!(!shown.contains("tok.en.jwt") && !shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(secret.to_base64().as_str()), "{shown}");
        assert!(shown.contains("k1") && shown.contains("/v1/auth/logout"), "{shown}");
    }
}
