//! The signed channel (SPEC section 5, "Signed requests" and "Signed responses"): a layer
//! every protected route sits behind. In order, before the handler runs:
//!
//! 1. exactly one of each `X-*` header (400); `X-Key-Id` present (401 `invalid_signature`);
//! 2. `X-Key-Id` names a session (401 `invalid_token`); from here on every answer, refusals
//!    included, is signed with that session's secret and bound to the request's `X-Nonce`;
//!    then no content coding other than `identity` (400) and the session not revoked (401;
//!    `POST /v1/devices/ack` alone is accepted from a revoked session, so that a device can
//!    acknowledge the directive that revoked it);
//!    every response carries the device's pending directives in `X-Fieldvault-Directives`;
//! 3. `X-Timestamp` within +/-300 s of the server clock (401 `stale_timestamp`, `Date` set);
//! 4. the body within the limit (413), `X-Signature` verifies over method, raw request
//!    target, body hash, timestamp and nonce, compared in constant time (401
//!    `invalid_signature`);
//! 5. the bearer access token (not on refresh or directive acknowledgement) is valid and names this session, user and
//!    device (401 `invalid_token`);
//! 6. `(key_id, nonce)` inserted uniquely in the shared store and committed (401
//!    `replayed_nonce`), kept until timestamp + 300 s + the allowed skew.
//!
//! Only then does the request have any effect.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::{
    AccessClaims, MAX_SKEW_SECS, ProblemCode, SessionSecret, TIMESTAMP_WINDOW_SECS, decode_nonce, parse_timestamp,
    timestamp_is_fresh,
};
use zeroize::Zeroizing;

use crate::app::App;
use crate::problem::ApiError;
use crate::seal::Purpose;
use crate::storage::SessionRecord;

/// Header names of the signed channel.
pub mod headers {
    /// The session's key id.
    pub const KEY_ID: &str = "x-key-id";
    /// Unix seconds, digits only.
    pub const TIMESTAMP: &str = "x-timestamp";
    /// 16 random bytes, canonical standard base64.
    pub const NONCE: &str = "x-nonce";
    /// The HMAC-SHA256 signature, standard base64.
    pub const SIGNATURE: &str = "x-signature";
}

/// The path of the signed route whose access token may have expired.
const REFRESH_PATH: &str = "/v1/auth/refresh";
/// The path a device acknowledges directives on: signed with the session secret, but the
/// session may already be revoked (by the very directive) and the access token expired.
pub const ACK_PATH: &str = "/v1/devices/ack";
/// The push route: its body may be up to `Config::push_body_limit`.
const PUSH_PATH: &str = "/v1/sync/push";
/// Pending directives ride in this header on every response to the device.
pub const DIRECTIVES_HEADER: &str = "x-fieldvault-directives";

/// What the layer hands to a signed route: the verified session and, except on refresh, the
/// access token's claims.
#[derive(Clone, Debug)]
pub struct SignedSession {
    /// The session named by `X-Key-Id`.
    pub session: SessionRecord,
    /// Its secret (to return on refresh).
    pub secret: Arc<SessionSecret>,
    /// The access token's claims (None on refresh).
    pub claims: Option<AccessClaims>,
}

/// One header's value: absent is None; present twice or not visible ASCII is an error.
fn single<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut it = h.get_all(name).iter();
    let Some(v) = it.next() else { return Ok(None) };
    if it.next().is_some() {
        return Err(ApiError::bad_request(format!("the {name} header appears more than once")));
    }
    v.to_str().map(Some).map_err(|_| ApiError::bad_request(format!("the {name} header is not visible ASCII")))
}

fn required<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    single(h, name)?.ok_or_else(|| ApiError::invalid_signature(format!("the {name} header is missing")))
}

/// The layer itself (`axum::middleware::from_fn_with_state`).
pub async fn layer(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    // Step 1 needs no session; answers before step 2 cannot be signed (no secret is known).
    let mut seen = std::collections::HashSet::new();
    for name in parts.headers.keys() {
        if name.as_str().starts_with("x-") && parts.headers.get_all(name).iter().count() > 1 && seen.insert(name) {
            return ApiError::bad_request(format!("the {name} header appears more than once")).into_response();
        }
    }
    let key_id = match required(&parts.headers, headers::KEY_ID) {
        Ok(k) if k.len() <= 64 => k.to_owned(),
        Ok(_) => return ApiError::invalid_token("unknown key id").into_response(),
        Err(e) => return e.into_response(),
    };
    let session = match app.store.session_by_key_id(&key_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return ApiError::invalid_token("the key id names no session").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let secret = match app.sealer.open(Purpose::SessionSecret, &session.id, &session.secret_sealed) {
        Ok(bytes) => match <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(arr) => Arc::new(SessionSecret::from_bytes(Zeroizing::new(arr))),
            Err(_) => return ApiError::internal("a stored session secret has the wrong length").into_response(),
        },
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let nonce_header = single(&parts.headers, headers::NONCE).ok().flatten().map(str::to_owned);
    let directives = (!session.directives.is_empty()).then(|| session.directives.join(", "));
    let signer = ResponseSigner { app: app.clone(), secret: secret.clone(), nonce: nonce_header, directives };

    let outcome = check(&app, parts, body, session, secret, &key_id).await;
    match outcome {
        Ok((mut req, signed)) => {
            req.extensions_mut().insert(signed);
            signer.sign(next.run(req).await).await
        }
        Err(e) => signer.sign(e.into_response()).await,
    }
}

async fn check(
    app: &Arc<App>,
    parts: axum::http::request::Parts,
    body: Body,
    session: SessionRecord,
    secret: Arc<SessionSecret>,
    key_id: &str,
) -> Result<(Request, SignedSession), ApiError> {
    let h = &parts.headers;
    if let Some(coding) = single(h, header::CONTENT_ENCODING.as_str())?
        && !coding.eq_ignore_ascii_case("identity")
    {
        return Err(ApiError::bad_request("encoded request bodies are not accepted"));
    }
    let ack = parts.uri.path() == ACK_PATH;
    if session.revoked && !ack {
        return Err(ApiError::invalid_token("the session has been revoked"));
    }
    let ts_header = required(h, headers::TIMESTAMP)?;
    let timestamp = parse_timestamp(ts_header).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let now = app.now();
    if !timestamp_is_fresh(timestamp, now) {
        return Err(ApiError::stale_timestamp("X-Timestamp"));
    }
    let nonce_header = required(h, headers::NONCE)?;
    let nonce = decode_nonce(nonce_header).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let signature = required(h, headers::SIGNATURE)?;
    // A push may carry up to 4 MiB of ops; every other signed body stays within 1 MiB.
    let limit = if parts.uri.path() == PUSH_PATH { app.config.push_body_limit } else { app.config.body_limit };
    let bytes = crate::app::read_body(body, &app.config, limit).await?;
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    secret
        .verify_request(parts.method.as_str(), target, &bytes, ts_header, nonce_header, signature)
        .map_err(|e| ApiError::invalid_signature(e.to_string()))?;

    let claims = if parts.uri.path() == REFRESH_PATH || ack {
        None
    } else {
        let auth = single(h, header::AUTHORIZATION.as_str())?
            .ok_or_else(|| ApiError::invalid_token("the Authorization header is missing"))?;
        let token = auth
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::invalid_token("Authorization must be a Bearer token"))?;
        let claims = app.verifier.access(token, now).map_err(|e| ApiError::invalid_token(e.to_string()))?;
        if claims.sid != session.id || claims.sub != session.user || claims.device_id != session.device_id {
            return Err(ApiError::invalid_token("X-Key-Id does not name the access token's session"));
        }
        Some(claims)
    };

    // Kept past the last moment any instance (clock up to MAX_SKEW_SECS ahead or behind)
    // could still accept this timestamp.
    let expires_at = timestamp.saturating_add(TIMESTAMP_WINDOW_SECS + MAX_SKEW_SECS);
    if !app.store.insert_nonce(key_id, &nonce, expires_at).await? {
        return Err(ApiError::new(ProblemCode::ReplayedNonce, "this nonce was already used"));
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    Ok((req, SignedSession { session, secret, claims }))
}

/// Signs every response to a request whose session is known.
struct ResponseSigner {
    app: Arc<App>,
    secret: Arc<SessionSecret>,
    nonce: Option<String>,
    /// Pending directives for the device, comma-separated compact JWS.
    directives: Option<String>,
}

impl ResponseSigner {
    async fn sign(self, response: Response) -> Response {
        let now = self.app.now();
        let response = if response.status() == StatusCode::UNAUTHORIZED
            && response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == crate::problem::PROBLEM_JSON)
        {
            // A stale client clock needs the server's time to correct itself.
            crate::problem::with_date(response, now)
        } else {
            response
        };
        let (mut parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return ApiError::internal("a response body could not be read").into_response();
        };
        if let Some(d) = &self.directives
            && let Ok(v) = HeaderValue::from_str(d)
        {
            parts.headers.insert(DIRECTIVES_HEADER, v);
        }
        if let Some(nonce) = &self.nonce {
            let ts = now.to_string();
            let sig = self.secret.sign_response(parts.status.as_u16(), nonce, &bytes, &ts);
            parts.headers.insert(headers::TIMESTAMP, HeaderValue::from_str(&ts).expect("digits are a header value"));
            parts.headers.insert(headers::SIGNATURE, HeaderValue::from_str(&sig).expect("base64 is a header value"));
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// The benchmark baseline: the same session and access-token checks with no signature, no
/// nonce and no signed response. Compiled only with the `bench-unsigned` feature, which the
/// load benchmark builds separately; never a runtime switch.
#[cfg(feature = "bench-unsigned")]
pub async fn unsigned_layer(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let h = req.headers();
    let Ok(Some(key_id)) = single(h, headers::KEY_ID) else {
        return ApiError::invalid_token("missing key id").into_response();
    };
    let token = single(h, header::AUTHORIZATION.as_str()).ok().flatten().and_then(|a| a.strip_prefix("Bearer "));
    let Some(token) = token.map(str::to_owned) else {
        return ApiError::invalid_token("missing token").into_response();
    };
    let session = match app.store.session_by_key_id(key_id).await {
        Ok(Some(s)) if !s.revoked => s,
        Ok(_) => return ApiError::invalid_token("the key id names no session").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let claims = match app.verifier.access(&token, app.now()) {
        Ok(c) if c.sid == session.id => c,
        _ => return ApiError::invalid_token("bad token").into_response(),
    };
    let secret = Arc::new(SessionSecret::from_bytes(Zeroizing::new([0; 32])));
    req.extensions_mut().insert(SignedSession { session, secret, claims: Some(claims) });
    next.run(req).await
}
