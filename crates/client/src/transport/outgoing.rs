//! A request made ready to go: checked, and signed at send time when it is to be.

use super::*;

/// A request made ready to go: validated, signed if it is to be, independent of the HTTP
/// version of the connection it ends up on.
pub(super) struct Outgoing<'a> {
    pub(super) method: hyper::Method,
    pub(super) target: PathAndQuery,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// For a signed request: what its answer is verified with.
    pub(super) signed: Option<SignedWith<'a>>,
}

pub(super) struct SignedWith<'a> {
    pub(super) secret: &'a SessionSecret,
    /// `X-Nonce` exactly as sent; the answer's signature is bound to it.
    pub(super) nonce: String,
}

impl<'a> Outgoing<'a> {
    pub(super) fn prepare(request: &Request<'a>, now: u64) -> Result<Outgoing<'a>, Error> {
        let target = request_target(request.path_and_query)?;
        let body = request.body;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("fieldvault-client/", env!("CARGO_PKG_VERSION"))),
        );
        // The server refuses coded bodies and so does this transport: say so up front.
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        if !body.is_empty() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let signed = match request.auth {
            Auth::None => None,
            Auth::Signed { key_id, secret, bearer } => {
                if key_id.is_empty() || key_id.len() > 64 || !key_id.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Error::InvalidRequest("the key id must be 1 to 64 visible ASCII characters"));
                }
                if let Some(token) = bearer {
                    headers.insert(header::AUTHORIZATION, bearer_value(token)?);
                }
                let timestamp = now.to_string();
                let nonce = STANDARD.encode(crate::random::<NONCE_LEN>());
                let signature = secret.sign_request(request.method.as_str(), target.as_str(), body, &timestamp, &nonce);
                headers.insert(X_KEY_ID, HeaderValue::from_str(key_id).expect("checked: visible ASCII"));
                headers.insert(X_TIMESTAMP, HeaderValue::from_str(&timestamp).expect("digits are a header value"));
                headers.insert(X_NONCE, HeaderValue::from_str(&nonce).expect("base64 is a header value"));
                headers.insert(X_SIGNATURE, HeaderValue::from_str(&signature).expect("base64 is a header value"));
                Some(SignedWith { secret, nonce })
            }
        };
        Ok(Outgoing { method: request.method.to_http(), target, headers, body: Bytes::copy_from_slice(body), signed })
    }

    /// The request for a connection of this HTTP version: origin form and `Host` on
    /// HTTP/1.1, absolute form (`:scheme`, `:authority`, `:path`) on HTTP/2. The target,
    /// which the signature covers, is the same bytes either way.
    pub(super) fn to_http(&self, h2: bool, authority: &Authority) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.headers_mut() = self.headers.clone();
        *request.uri_mut() = if h2 {
            Uri::builder()
                .scheme(Scheme::HTTPS)
                .authority(authority.clone())
                .path_and_query(self.target.clone())
                .build()
                .expect("a checked authority and target make a URI")
        } else {
            request.headers_mut().insert(
                header::HOST,
                HeaderValue::from_str(authority.as_str()).expect("an authority is a header value"),
            );
            Uri::from(self.target.clone())
        };
        request
    }
}

/// The request target as given, checked to be sent byte for byte as it will be signed.
pub(super) fn request_target(target: &str) -> Result<PathAndQuery, Error> {
    let refused = Error::InvalidRequest(
        "the request target must start with '/' and be visible ASCII without a fragment (percent-encode the rest)",
    );
    if !target.starts_with('/') || target.contains('#') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refused);
    }
    match PathAndQuery::from_str(target) {
        Ok(parsed) if parsed.as_str() == target => Ok(parsed),
        _ => Err(refused),
    }
}

/// `Bearer TOKEN`, marked sensitive (HTTP/2 never indexes it). The token is not echoed in
/// the error.
pub(super) fn bearer_value(token: &str) -> Result<HeaderValue, Error> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest("the bearer token must be visible ASCII"));
    }
    let text = Zeroizing::new(format!("Bearer {token}"));
    let mut value = HeaderValue::from_str(&text).expect("checked: visible ASCII");
    value.set_sensitive(true);
    Ok(value)
}
