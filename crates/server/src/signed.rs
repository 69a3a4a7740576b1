//! The signed channel (SPEC section 5, "Signed requests" and "Signed responses"): a layer
//! every protected route sits behind. Before the handler runs, in this order:
//!
//! 1. The proof of the session secret. Exactly one of each `X-*` header (400); `X-Key-Id`,
//!    `X-Timestamp`, `X-Nonce` and `X-Signature` present (401 `invalid_signature`) and well
//!    formed (400); no content coding other than `identity` (400); `X-Key-Id` names a
//!    session, revoked or not (401 `invalid_token`; the server holds every session's
//!    secret); the body within the limit (413) and in time (400); `X-Signature` verifies
//!    over method, raw request target, body hash, timestamp and nonce, compared in constant
//!    time (401 `invalid_signature`). Until it has, nothing shows that the sender holds the
//!    secret: these refusals are not signed and carry no directives.
//! 2. From here on every answer, refusals included, is signed with the session's secret,
//!    bound to the request's `X-Nonce`, and carries the device's pending directives in
//!    `X-Fieldvault-Directives`. `X-Timestamp` within +/-300 s of the server clock (401
//!    `stale_timestamp`, `Date` set);
//! 3. `(key_id, nonce)` inserted uniquely in the shared store and committed (401
//!    `replayed_nonce`), kept until timestamp + 300 s + the allowed skew (between an
//!    instance's clock and the store's; the purge follows the store's clock);
//! 4. the session not revoked (401 `invalid_token`; `POST /v1/devices/ack` alone is accepted
//!    from a revoked session, so that a device can acknowledge the directive that revoked it);
//! 5. the bearer access token (not on refresh or directive acknowledgement) is valid and
//!    names this session, user and device (401 `invalid_token`).
//!
//! Step 3 is a group commit with the nonces of concurrent requests (`replay.rs`), which also
//! reads the store-wide revocation epoch; step 1 resolves the key id, and step 5 checks the
//! token, from what this instance verified before (`cache.rs`), and step 4 reads the session
//! again whenever the epoch moved since (docs/adr/0011-verified-session-cache.md).
//!
//! Only then does the request have any effect. A signed refusal never leaves the request
//! acceptable later: those of steps 4 and 5 come after its nonce is used up, and a stale
//! timestamp records the nonce too for as long as any instance could still find it fresh
//! (a timestamp ahead of the clock becomes fresh in time). So a device never holds a
//! verified refusal of a request that then runs.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::{
    AccessClaims, MAX_SKEW_SECS, ProblemCode, SessionSecret, TIMESTAMP_WINDOW_SECS, decode_nonce, parse_timestamp,
    timestamp_is_fresh,
};

use crate::app::App;
use crate::problem::ApiError;
use crate::storage::{NonceClaim, SessionRecord};

mod cache;
mod replay;

pub use cache::{CachedSession, SESSION_CACHE_CAPACITY, SessionCache};
pub use replay::{Claimed, NonceWriter};

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

/// The response's signing headers, named once (a name given as a string is parsed and, not
/// being a standard one, copied on every insert).
const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static(headers::TIMESTAMP);
const SIGNATURE_HEADER: HeaderName = HeaderName::from_static(headers::SIGNATURE);

/// The path of the signed route whose access token may have expired.
const REFRESH_PATH: &str = "/v1/auth/refresh";
/// The path a device acknowledges directives on: signed with the session secret, but the
/// session may already be revoked (by the very directive) and the access token expired.
pub const ACK_PATH: &str = "/v1/devices/ack";
/// The push route: its body may be up to `Config::push_body_limit`.
pub const PUSH_PATH: &str = "/v1/sync/push";
/// The latest time a nonce row can keep (the stores hold times as signed 64-bit integers).
const LATEST_STORED_TIME: u64 = i64::MAX as u64;
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
    let (verified, nonce) = match verify(&app, parts, body).await {
        Ok(v) => v,
        // Nothing shows the sender holds the session secret: not signed, no directives.
        Err(e) => return e.into_response(),
    };
    let mut signer = ResponseSigner {
        app: app.clone(),
        secret: verified.secret.clone(),
        nonce,
        // As cached; replaced by the session as of the request's nonce commit once read.
        directives: verified.cached.directives(),
    };
    match admit(&app, verified, &mut signer.directives).await {
        Ok((mut req, signed)) => {
            req.extensions_mut().insert(signed);
            signer.sign(next.run(req).await).await
        }
        Err(e) => signer.sign(e.into_response()).await,
    }
}

/// The device and its pending directives, which the response carries (None: none).
fn directives_of(session: &SessionRecord) -> Option<(String, Vec<String>)> {
    (!session.directives.is_empty()).then(|| (session.device_id.clone(), session.directives.clone()))
}

/// A request whose signature verified under its session's secret, not yet admitted.
struct Verified {
    parts: Parts,
    body: Bytes,
    /// The session as the cache holds it: its identity and secret are settled; whether it is
    /// revoked is known only from [`CachedSession::current`].
    cached: Arc<CachedSession>,
    /// `X-Key-Id`, the key id of `cached`.
    key_id: String,
    secret: Arc<SessionSecret>,
    timestamp: u64,
    nonce: [u8; 16],
}

/// Step 1: the headers, the session the key id names, the body and the request signature.
/// Also gives `X-Nonce` exactly as sent: what the response signature is bound to.
async fn verify(app: &Arc<App>, parts: Parts, body: Body) -> Result<(Verified, String), ApiError> {
    let h = &parts.headers;
    let mut seen = std::collections::HashSet::new();
    for name in h.keys() {
        if name.as_str().starts_with("x-") && h.get_all(name).iter().count() > 1 && seen.insert(name) {
            return Err(ApiError::bad_request(format!("the {name} header appears more than once")));
        }
    }
    let key_id = required(h, headers::KEY_ID)?;
    if key_id.len() > 64 {
        return Err(ApiError::invalid_token("unknown key id"));
    }
    if let Some(coding) = single(h, header::CONTENT_ENCODING.as_str())?
        && !coding.eq_ignore_ascii_case("identity")
    {
        return Err(ApiError::bad_request("encoded request bodies are not accepted"));
    }
    let ts_header = required(h, headers::TIMESTAMP)?;
    let timestamp = parse_timestamp(ts_header).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let nonce_header = required(h, headers::NONCE)?;
    let nonce = decode_nonce(nonce_header).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let signature = required(h, headers::SIGNATURE)?;

    // From the cache when this instance has seen the key id (ADR 0011): a session's identity
    // and secret never change, and nothing else of it is used before the nonce commit.
    let cached = app
        .sessions
        .resolve(&*app.store, &app.sealer, key_id)
        .await?
        .ok_or_else(|| ApiError::invalid_token("the key id names no session"))?;
    let secret = cached.secret().clone();
    // A push may carry up to 4 MiB of ops; every other signed body stays within 1 MiB.
    let limit = if parts.uri.path() == PUSH_PATH { app.config.push_body_limit } else { app.config.body_limit };
    let bytes = crate::app::read_body(body, &app.config, limit).await?;
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    secret
        .verify_request(parts.method.as_str(), target, &bytes, ts_header, nonce_header, signature)
        .map_err(|e| ApiError::invalid_signature(e.to_string()))?;
    let (key_id, nonce_header) = (key_id.to_owned(), nonce_header.to_owned());
    Ok((Verified { parts, body: bytes, cached, key_id, secret, timestamp, nonce }, nonce_header))
}

/// Steps 2 to 5, for a request that proved it holds the session secret: every refusal here
/// is signed, so none may leave the same request acceptable later. `directives` becomes the
/// device's pending directives as of the nonce commit.
async fn admit(
    app: &Arc<App>,
    verified: Verified,
    directives: &mut Option<(String, Vec<String>)>,
) -> Result<(Request, SignedSession), ApiError> {
    let Verified { parts, body, cached, key_id, secret, timestamp, nonce } = verified;
    let now = app.now();
    // Kept past the last moment any instance (clock up to MAX_SKEW_SECS off the store's)
    // could still accept this timestamp, within what the store holds.
    let expires_at = timestamp.saturating_add(TIMESTAMP_WINDOW_SECS + MAX_SKEW_SECS).min(LATEST_STORED_TIME);
    // Committed with the nonces of the requests around it (group commit, `replay.rs`).
    // A stale timestamp records its nonce too: a timestamp ahead of this clock becomes fresh
    // later, and one just behind it is still fresh on an instance whose clock is behind; the
    // nonce is used up for as long as either could happen, so the refusal is final. Recorded
    // whatever this clock says (it may run fast): a row already expired by the store's clock
    // goes at the next purge.
    let claimed = app.replay.claim(NonceClaim { key_id, nonce, expires_at }).await?;
    // The session as of that commit: the cached read if no revocation happened since it, else
    // read again. Only a read; the checks below keep their order.
    let Some(session) = cached.current(&*app.store, claimed.revocation_epoch).await? else {
        app.sessions.forget(&cached.key_id());
        return Err(ApiError::invalid_token("the key id names no session"));
    };
    *directives = directives_of(&session);
    if !timestamp_is_fresh(timestamp, now) {
        return Err(ApiError::stale_timestamp("X-Timestamp"));
    }
    if !claimed.fresh {
        return Err(ApiError::new(ProblemCode::ReplayedNonce, "this nonce was already used"));
    }
    let ack = parts.uri.path() == ACK_PATH;
    if session.revoked && !ack {
        return Err(ApiError::invalid_token("the session has been revoked"));
    }
    let claims = if parts.uri.path() == REFRESH_PATH || ack {
        None
    } else {
        let auth = single(&parts.headers, header::AUTHORIZATION.as_str())?
            .ok_or_else(|| ApiError::invalid_token("the Authorization header is missing"))?;
        let token = auth
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::invalid_token("Authorization must be a Bearer token"))?;
        // Verified once per token and session, then remembered until it expires.
        let claims =
            cached.access_claims(&app.verifier, token, now).map_err(|e| ApiError::invalid_token(e.to_string()))?;
        if claims.sid != session.id || claims.sub != session.user || claims.device_id != session.device_id {
            return Err(ApiError::invalid_token("X-Key-Id does not name the access token's session"));
        }
        Some(claims)
    };
    let req = Request::from_parts(parts, Body::from(body));
    Ok((req, SignedSession { session, secret, claims }))
}

/// Signs every response to a request whose signature verified.
struct ResponseSigner {
    app: Arc<App>,
    secret: Arc<SessionSecret>,
    /// The request's `X-Nonce`, exactly as sent.
    nonce: String,
    /// The device and its pending directives (compact JWS), when it has any.
    directives: Option<(String, Vec<String>)>,
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
        // A handler's body is one buffer (a pull answer is written once, as its page is
        // planned): collecting it takes that buffer as it is, no copy, and the same bytes are
        // hashed and sent.
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return ApiError::internal("a response body could not be read").into_response();
        };
        if let Some((device, tokens)) = &self.directives
            && let Ok(v) = HeaderValue::from_str(&tokens.join(", "))
        {
            parts.headers.insert(DIRECTIVES_HEADER, v);
            crate::devices::mark_sent(&self.app, device, tokens, now).await;
        }
        let ts = HeaderValue::from(now);
        let sig = self.secret.sign_response(
            parts.status.as_u16(),
            &self.nonce,
            &bytes,
            ts.to_str().expect("a number's digits are visible ASCII"),
        );
        let sig = HeaderValue::from_maybe_shared(Bytes::from(sig)).expect("base64 is a header value");
        parts.headers.insert(TIMESTAMP_HEADER, ts);
        parts.headers.insert(SIGNATURE_HEADER, sig);
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// The benchmark baseline: the same session and access-token checks, through the same
/// caches and the same revocation epoch (read by the same group-commit writer, with no
/// nonce), with no signature, no nonce and no signed response. Compiled only with the
/// `bench-unsigned` feature, which the load benchmark builds separately; never a runtime
/// switch.
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
    let cached = match app.sessions.resolve(&*app.store, &app.sealer, key_id).await {
        Ok(Some(cached)) => cached,
        Ok(None) => return ApiError::invalid_token("the key id names no session").into_response(),
        Err(e) => return e.into_response(),
    };
    let epoch = match app.replay.revocation_epoch().await {
        Ok(epoch) => epoch,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let session = match cached.current(&*app.store, epoch).await {
        Ok(Some(s)) if !s.revoked => s,
        Ok(_) => return ApiError::invalid_token("the key id names no session").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let claims = match cached.access_claims(&app.verifier, &token, app.now()) {
        Ok(c) if c.sid == session.id => c,
        _ => return ApiError::invalid_token("bad token").into_response(),
    };
    let secret = Arc::new(SessionSecret::from_bytes(zeroize::Zeroizing::new([0; 32])));
    req.extensions_mut().insert(SignedSession { session, secret, claims: Some(claims) });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, Bytes};

    #[tokio::test]
    async fn a_body_of_one_buffer_is_signed_and_sent_without_a_copy() {
        let answer = Bytes::from(vec![b'x'; 4 << 20]);
        let at = answer.as_ptr();
        let collected = axum::body::to_bytes(Body::from(answer), usize::MAX).await.expect("read");
        assert_eq!(collected.as_ptr(), at, "the bytes the signer hashes are the handler's own");
        assert_eq!(collected.len(), 4 << 20);
    }
}
