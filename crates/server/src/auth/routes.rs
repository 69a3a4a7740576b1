//! `POST /v1/auth/login`, `POST /v1/auth/refresh` (signed), `POST /v1/auth/logout` (signed),
//! `GET /v1/auth/jwks`, and `GET /v1/devices/self` (signed: the cheapest protected route).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::{ProblemCode, SessionSecret};
use fieldvault_core::unlock_delay;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::Password;
use super::tokens::{Bundle, issue, new_lease, new_refresh_token, refresh_token_hash};
use crate::app::{App, JsonBody, random_id};
use crate::problem::ApiError;
use crate::seal::Purpose;
use crate::signed::SignedSession;
use crate::storage::{NewSession, Spend, SpendOutcome};

/// The TCP peer of a connection (login throttling is per user and address).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Longest user name, device name or attempt id accepted.
const MAX_NAME: usize = 128;
/// Longest password accepted (Argon2 takes any length; this bounds the work per request).
const MAX_PASSWORD: usize = 1024;

/// `POST /v1/auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub user: String,
    /// Password.
    #[schema(value_type = String, format = Password)]
    pub password: Password,
    /// A label for this device; the server assigns the device id.
    pub device_name: String,
}

/// The offline lease: the key L wraps the account's data keys on the device until `expires_at`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LeaseBody {
    /// Lease id.
    pub lease_id: String,
    /// L, 32 bytes in standard base64.
    #[schema(value_type = String)]
    pub key: Zeroizing<String>,
    /// Unix seconds.
    pub expires_at: u64,
}

/// What login and refresh return (`Cache-Control: no-store`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Access JWT (`typ: at+jwt`), about ten minutes.
    pub access_token: String,
    /// Single-use refresh token.
    #[schema(value_type = String)]
    pub refresh_token: Zeroizing<String>,
    /// Offline JWT (`typ: fv-offline+jwt`), for unlocking offline; never accepted by the server.
    pub offline_token: String,
    /// The request-signing secret, 32 bytes in standard base64.
    #[schema(value_type = String)]
    pub session_secret: Zeroizing<String>,
    /// Names the session in `X-Key-Id`.
    pub key_id: String,
    /// Server-assigned device id.
    pub device_id: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The offline lease.
    pub lease: LeaseBody,
}

/// `POST /v1/auth/refresh` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The current refresh token.
    #[schema(value_type = String)]
    pub refresh_token: Zeroizing<String>,
    /// Chosen by the client per refresh attempt and reused when it retries that attempt.
    pub attempt_id: String,
}

// The secrets above (L, the refresh token, the session secret) print as `[redacted]`.
impl std::fmt::Debug for LeaseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseBody")
            .field("lease_id", &self.lease_id)
            .field("key", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("key_id", &self.key_id)
            .field("device_id", &self.device_id)
            .field("expires_in", &self.expires_in)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest").field("attempt_id", &self.attempt_id).finish_non_exhaustive()
    }
}

/// `POST /v1/auth/logout` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogoutResponse {
    /// Always `logged_out`.
    pub status: String,
}

/// `GET /v1/devices/self` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceSelf {
    /// The user.
    pub user: String,
    /// This device's id.
    pub device_id: String,
    /// The session's key id.
    pub key_id: String,
    /// The user's roles as of the access token.
    pub roles: Vec<String>,
}

/// `GET /v1/auth/jwks` answer (RFC 7517).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JwksResponse {
    /// The token-signing keys.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn check_name(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.chars().count() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} must be 1 to {MAX_NAME} characters, no control characters")));
    }
    Ok(())
}

/// Log in with a user name and password; returns the session's tokens, secret and lease.
#[utoipa::path(post, path = "/v1/auth/login", request_body = LoginRequest, tag = "auth",
    responses((status = 200, body = TokenResponse), (status = 400), (status = 401), (status = 429)))]
pub async fn login(
    State(app): State<Arc<App>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    check_name("user", &req.user)?;
    check_name("device_name", &req.device_name)?;
    if req.password.chars() > MAX_PASSWORD {
        return Err(ApiError::bad_request(format!("password must be at most {MAX_PASSWORD} characters")));
    }
    let address = peer.ip().to_string();
    let now = app.now();
    let throttled = |retry_after: u64| {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ProblemCode::RateLimited,
            "too many failed logins for this user from this address; wait and retry",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    };
    let failures = app.store.login_failures(&req.user, &address).await?;
    let wait_until = failures.last_at.saturating_add(unlock_delay(failures.failures));
    if now < wait_until {
        return Err(throttled(wait_until - now));
    }
    // The attempt is counted as a failure before the password is checked, and cleared only if
    // it is right. The count is one atomic increment: of attempts made at once, only the one
    // whose increment directly follows the state checked above goes on; the others are told
    // to wait (and stay counted), so a burst cannot get more guesses than one at a time.
    let reserved = app.store.record_login_failure(&req.user, &address, now).await?;
    if reserved.failures != failures.failures.saturating_add(1) {
        return Err(throttled(unlock_delay(reserved.failures)));
    }
    let user = app.store.user(&req.user).await?;
    let live = user.as_ref().filter(|u| !u.disabled);
    // Unknown and disabled users are checked against the dummy hash: same time, same answer.
    if !app.passwords.verify(req.password, live.map(|u| u.password_hash.clone())).await {
        return Err(ApiError::invalid_grant("wrong user name or password"));
    }
    let user = live.ok_or_else(|| ApiError::internal("verified a password without a user"))?;
    app.store.clear_login_failures(&req.user, &address).await?;

    let session_id = random_id("s_");
    let key_id = random_id("k_");
    let device_id = random_id("d_");
    let mut secret_bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(secret_bytes.as_mut()).map_err(|_| ApiError::internal("the OS random source failed"))?;
    let secret = SessionSecret::from_bytes(secret_bytes);
    let refresh = new_refresh_token();
    let (lease, lease_key) = new_lease(&app, now);
    app.store
        .create_session(&NewSession {
            id: session_id.clone(),
            key_id: key_id.clone(),
            user: user.name.clone(),
            device_id: device_id.clone(),
            device_name: req.device_name.clone(),
            secret_sealed: app.sealer.seal(Purpose::SessionSecret, &session_id, secret.expose_secret()),
            lease: lease.clone(),
            refresh_hash: refresh_token_hash(&refresh),
            now,
        })
        .await?;
    let body = issue(
        &app,
        &Bundle {
            user: &user.name,
            roles: &user.roles,
            session_id: &session_id,
            key_id: &key_id,
            device_id: &device_id,
            secret: &secret,
            refresh_token: &refresh,
            lease: &lease,
            lease_key: &lease_key,
        },
        now,
    )?;
    tracing::info!(user = %user.name, device = %device_id, "login");
    Ok(no_store(Json(body).into_response()))
}

/// Rotate the refresh token (signed, no access token): returns a new bundle.
#[utoipa::path(post, path = "/v1/auth/refresh", request_body = RefreshRequest, tag = "auth",
    params(("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header), ("X-Nonce" = String, Header),
        ("X-Signature" = String, Header)),
    responses((status = 200, body = TokenResponse), (status = 400), (status = 401)))]
pub async fn refresh(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Response, ApiError> {
    check_name("attempt_id", &req.attempt_id)?;
    let now = app.now();
    let session = &signed.session;
    let user = app.store.user(&session.user).await?.filter(|u| !u.disabled);
    let Some(user) = user else {
        app.store.revoke_session(&session.id, now).await?;
        return Err(ApiError::invalid_grant("the user is disabled"));
    };
    if now.saturating_sub(session.created_at) > app.config.session_max_ttl {
        app.store.revoke_session(&session.id, now).await?;
        return Err(ApiError::invalid_grant("the session has reached its maximum age; log in again"));
    }
    let successor = new_refresh_token();
    let outcome = app
        .store
        .spend_refresh(Spend {
            token_hash: refresh_token_hash(&req.refresh_token),
            session_id: &session.id,
            attempt_id: &req.attempt_id,
            successor_hash: refresh_token_hash(&successor),
            successor_sealed: app.sealer.seal(Purpose::RefreshSuccessor, &session.id, successor.as_bytes()),
            now,
            retry_window: app.config.refresh_retry_window,
        })
        .await?;
    let refresh_token = match outcome {
        SpendOutcome::Spent => successor,
        SpendOutcome::Retry { successor_sealed } => {
            let bytes = app
                .sealer
                .open(Purpose::RefreshSuccessor, &session.id, &successor_sealed)
                .map_err(ApiError::internal)?;
            Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(ApiError::internal)?)
        }
        SpendOutcome::ReuseRevoked => {
            tracing::warn!(user = %session.user, device = %session.device_id, "refresh token reuse: session revoked");
            return Err(ApiError::invalid_grant("this refresh token was already used; the session is revoked"));
        }
        SpendOutcome::Unknown => return Err(ApiError::invalid_grant("unknown refresh token for this session")),
    };
    // The lease is renewed at most daily; otherwise the current one is handed back.
    let (lease, lease_key) = match &session.lease {
        Some(l) if now.saturating_sub(l.issued_at) < app.config.lease_renew_after && l.expires_at > now => {
            let key = app.sealer.open(Purpose::LeaseKey, &l.id, &l.key_sealed).map_err(ApiError::internal)?;
            let key: [u8; 32] = key.as_slice().try_into().map_err(ApiError::internal)?;
            (l.clone(), Zeroizing::new(key))
        }
        _ => {
            let (lease, key) = new_lease(&app, now);
            app.store.set_lease(&session.id, &lease).await?;
            (lease, key)
        }
    };
    let body = issue(
        &app,
        &Bundle {
            user: &user.name,
            roles: &user.roles,
            session_id: &session.id,
            key_id: &session.key_id,
            device_id: &session.device_id,
            secret: &signed.secret,
            refresh_token: &refresh_token,
            lease: &lease,
            lease_key: &lease_key,
        },
        now,
    )?;
    Ok(no_store(Json(body).into_response()))
}

/// End this session (signed): its refresh tokens and lease key are gone on the server.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    params(("Authorization" = String, Header), ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header),
        ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    responses((status = 200, body = LogoutResponse), (status = 401)))]
pub async fn logout(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
) -> Result<Json<LogoutResponse>, ApiError> {
    app.store.revoke_session(&signed.session.id, app.now()).await?;
    Ok(Json(LogoutResponse { status: "logged_out".into() }))
}

/// The public keys that sign tokens, for offline checks on devices.
#[utoipa::path(get, path = "/v1/auth/jwks", tag = "auth", responses((status = 200, body = JwksResponse)))]
pub async fn jwks(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.tokens.jwks())
}

/// Who this device is (signed): the cheapest protected route.
#[utoipa::path(get, path = "/v1/devices/self", tag = "devices",
    params(("Authorization" = String, Header), ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header),
        ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    responses((status = 200, body = DeviceSelf), (status = 401)))]
pub async fn device_self(Extension(signed): Extension<SignedSession>) -> Json<DeviceSelf> {
    Json(DeviceSelf {
        user: signed.session.user.clone(),
        device_id: signed.session.device_id.clone(),
        key_id: signed.session.key_id.clone(),
        roles: signed.claims.map(|c| c.roles).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bodies_redact_their_secrets_in_debug() {
        let r = TokenResponse {
            access_token: "at".into(),
            refresh_token: Zeroizing::new("rt_secret_value".into()),
            offline_token: "ot".into(),
            session_secret: Zeroizing::new("c2Vzc2lvbiBzZWNyZXQ=".into()),
            key_id: "k_1".into(),
            device_id: "d_1".into(),
            expires_in: 600,
            lease: LeaseBody { lease_id: "l_1".into(), key: Zeroizing::new("bGVhc2Uga2V5".into()), expires_at: 1 },
        };
        let req = RefreshRequest { refresh_token: Zeroizing::new("rt_secret_value".into()), attempt_id: "a".into() };
        let shown = format!("{r:?} {req:?}");
        for secret in ["rt_secret_value", "c2Vzc2lvbiBzZWNyZXQ=", "bGVhc2Uga2V5"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("k_1") && shown.contains("[redacted]"), "{shown}");
    }
}
