//! The server's HTTPS client for identity providers: discovery, the JWKS, the token
//! endpoint. HTTPS only (an `http://` address is refused before any connection), TLS 1.2+
//! through the same rustls and aws-lc-rs as the server, the operating system's roots plus
//! the CA file of `--oidc-ca`, one request per connection (a few requests a minute at
//! most), every answer bounded in time and size. It implements `openidconnect`'s
//! `AsyncHttpClient`, so that crate speaks HTTP through it and never through a client of its
//! own.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use openidconnect::http;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use rustls::pki_types::{CertificateDer, ServerName};

/// Largest answer read from a provider: discovery documents, key sets and token answers are
/// a few KiB; anything past this is refused, not buffered.
pub const MAX_ANSWER: usize = 256 << 10;

/// Longest one exchange with a provider may take, connection and TLS included.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Why a request to a provider failed. The text names the provider's address and what went
/// wrong, never a token or a code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProviderHttpError(String);

/// The HTTPS client, with the `Cache-Control` lifetimes of the answers it has read since
/// [`ProviderHttp::take_lifetime`] was last called (the shortest one).
pub struct ProviderHttp {
    tls: Arc<rustls::ClientConfig>,
    lifetime: Mutex<Option<Lifetime>>,
}

impl std::fmt::Debug for ProviderHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderHttp").finish_non_exhaustive()
    }
}

/// How long an answer may be reused, from its `Cache-Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// `max-age=N`.
    MaxAge(u64),
    /// `no-store` or `no-cache`: reuse as little as the caller's floor allows.
    DoNotStore,
}

impl Lifetime {
    /// The lifetime a `Cache-Control` value gives, if it names one.
    pub fn parse(cache_control: &str) -> Option<Lifetime> {
        let mut max_age = None;
        for directive in cache_control.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(Lifetime::DoNotStore);
            }
            if let Some(v) = lower.strip_prefix("max-age=") {
                max_age = v.trim_matches('"').parse().ok().map(Lifetime::MaxAge);
            }
        }
        max_age
    }

    /// The shorter of two lifetimes.
    fn min(self, other: Lifetime) -> Lifetime {
        match (self, other) {
            (Lifetime::MaxAge(a), Lifetime::MaxAge(b)) => Lifetime::MaxAge(a.min(b)),
            _ => Lifetime::DoNotStore,
        }
    }
}

impl ProviderHttp {
    /// A client trusting the operating system's roots and the certificates in `extra_ca`
    /// (PEM), if given.
    ///
    /// # Errors
    /// The CA file cannot be read or holds no certificate; no root at all is trusted.
    pub fn new(extra_ca: Option<&Path>) -> Result<ProviderHttp, String> {
        let mut roots = rustls::RootCertStore::empty();
        // Roots that fail to parse are skipped, as browsers do; none at all is an error below.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            use rustls::pki_types::pem::PemObject;
            let pem = std::fs::read(path).map_err(|e| format!("reading the OIDC CA file {}: {e}", path.display()))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("the OIDC CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("the OIDC CA file {} holds no certificate", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("the OIDC CA file {}: {e}", path.display()))?;
            }
        }
        if roots.is_empty() {
            return Err("no trusted root certificates for HTTPS to the identity provider: install the \
                        system's CA certificates or pass --oidc-ca"
                .into());
        }
        let mut tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ProviderHttp { tls: Arc::new(tls), lifetime: Mutex::new(None) })
    }

    /// The same client (same roots, same TLS settings) with its own record of lifetimes,
    /// for one fetch whose lifetime the caller wants to know.
    pub fn fork(&self) -> ProviderHttp {
        ProviderHttp { tls: self.tls.clone(), lifetime: Mutex::new(None) }
    }

    /// The shortest lifetime of the answers read since the last call (None: none named one).
    pub fn take_lifetime(&self) -> Option<Lifetime> {
        self.lifetime.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    fn note_lifetime(&self, seen: Option<Lifetime>) {
        let mut slot = self.lifetime.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = match (*slot, seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Sends one request and reads its answer (bounded by [`TIMEOUT`] and [`MAX_ANSWER`]).
    ///
    /// # Errors
    /// Not `https`, unreachable, a TLS failure, an answer too large or too slow.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ProviderHttpError> {
        let target = request.uri().to_string();
        match tokio::time::timeout(TIMEOUT, self.exchange(request)).await {
            Ok(Ok(answer)) => {
                let seen = answer.headers().get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok());
                self.note_lifetime(seen.and_then(Lifetime::parse));
                Ok(answer)
            }
            Ok(Err(why)) => Err(ProviderHttpError(format!("{why} at {target}"))),
            Err(_) => Err(ProviderHttpError(format!("gave no answer within {} s at {target}", TIMEOUT.as_secs()))),
        }
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, String> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("https") {
            return Err("is refused: only https addresses are used for identity providers".into());
        }
        let host = uri.host().ok_or("the address has no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        // An IPv6 literal comes bracketed in a URI.
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
            .await
            .map_err(|e| format!("cannot be reached ({e})"))?;
        let name = ServerName::try_from(bare).map_err(|e| format!("not a valid server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("cannot be reached over TLS ({e})"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or(host);
        parts.headers.insert(http::header::HOST, authority.parse().map_err(|_| "a host header that does not parse")?);
        parts.uri = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| "a path that does not parse")?;
        let answer = sender
            .send_request(http::Request::from_parts(parts, Full::new(Bytes::from(body))))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let (parts, body) = answer.into_parts();
        let bytes = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| format!("answered with more than {} KiB, or broke off", MAX_ANSWER >> 10))?
            .to_bytes();
        driver.abort();
        Ok(http::Response::from_parts(parts, bytes.to_vec()))
    }
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, ProviderHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_gives_the_lifetime_and_no_store_wins() {
        assert_eq!(Lifetime::parse("public, max-age=3600"), Some(Lifetime::MaxAge(3600)));
        assert_eq!(Lifetime::parse("max-age=60, no-cache"), Some(Lifetime::DoNotStore));
        assert_eq!(Lifetime::parse("private"), None);
        assert_eq!(Lifetime::MaxAge(10).min(Lifetime::MaxAge(5)), Lifetime::MaxAge(5));
        assert_eq!(Lifetime::MaxAge(10).min(Lifetime::DoNotStore), Lifetime::DoNotStore);
    }

    #[tokio::test]
    async fn plain_http_is_refused_before_any_connection() {
        let client = ProviderHttp::new(None).expect("system roots");
        let request = http::Request::get("http://127.0.0.1:9/x").body(Vec::new()).expect("request");
        let err = client.send(request).await.expect_err("http is refused");
        assert!(err.to_string().contains("only https"), "{err}");
    }
}
