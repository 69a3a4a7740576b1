//! `POST /v1/auth/refresh` (signed), `POST /v1/auth/logout` (signed), `GET /v1/auth/jwks`,
//! and `GET /v1/devices/self` (signed: the cheapest protected route). Login is `login.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::auth::{
    DeviceReason, DeviceSelf, JwksResponse, LogoutRequest, LogoutResponse, RefreshRequest, TokenResponse,
};
use zeroize::Zeroizing;

use super::tokens::{Bundle, issue, new_refresh_token, open_lease, refresh_token_hash};
use crate::app::{App, JsonBody, parse_json};
use crate::problem::ApiError;
use crate::seal::Purpose;
use crate::signed::SignedSession;
use crate::storage::{AuditEvent, Spend, SpendOutcome};

/// The TCP peer of a connection (login throttling is per user and address).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Longest user name, device name, device id or attempt id accepted.
const MAX_NAME: usize = 128;

/// `Cache-Control: no-store`, on every token response.
pub(super) fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) fn check_name(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.chars().count() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} must be 1 to {MAX_NAME} characters, no control characters")));
    }
    Ok(())
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
    // A session signed in through a provider that re-checks: the provider first, so that a
    // provider that cannot be reached spends nothing.
    super::oidc::recheck(&app, &session.id, now).await?;
    let successor = new_refresh_token();
    let on_reuse =
        AuditEvent::new(now, format!("device:{}", session.device_id), "refresh.reuse_detected", session.user.as_str())
            .with("device", session.device_id.as_str())
            .with("session", session.id.as_str());
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
            on_reuse: &on_reuse,
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
    // The device's one lease key, sent again with its expiry moved forward.
    let Some(lease) = app.store.renew_lease(&session.device_id, now + app.config.lease_ttl, now).await? else {
        app.store.revoke_session(&session.id, now).await?;
        return Err(ApiError::invalid_grant("the device has been retired; log in again"));
    };
    let lease_key = open_lease(&app, &lease)?;
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
    );
    Ok(no_store(Json(body).into_response()))
}

/// End this session (signed). A plain logout (`{}`, `{"keep_device": false}`, or no body at
/// all) also retires the device: its lease key is deleted on the server and a later login
/// naming it gets a new device (`device_reason: retired`). `{"keep_device": true}` ends the
/// session only.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    params(("Authorization" = String, Header), ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header),
        ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    request_body(content = Option<LogoutRequest>, description = "optional; an empty body is a plain logout"),
    responses((status = 200, body = LogoutResponse), (status = 400), (status = 401)))]
pub async fn logout(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    body: Bytes,
) -> Result<Json<LogoutResponse>, ApiError> {
    // No body is the plain logout clients sent before `keep_device` existed.
    let req: LogoutRequest = if body.is_empty() { LogoutRequest::default() } else { parse_json(&body)? };
    let now = app.now();
    if req.keep_device {
        app.store.revoke_session(&signed.session.id, now).await?;
    } else {
        app.store.retire_device(&signed.session.device_id, DeviceReason::Retired, now).await?;
    }
    tracing::info!(user = %signed.session.user, device = %signed.session.device_id, keep_device = req.keep_device,
        "logout");
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
