//! Devices and their directives: `device list | revoke | wipe` for the operator, and
//! `POST /v1/devices/ack` for the device.
//!
//! A directive is a JWS (`typ: fv-directive+jwt`, EdDSA, the token-signing key) bound to the
//! user, the device, the device's newest session, a fresh `jti`, its kind and `iat`. Making
//! one revokes every session of the device in the same transaction. A revoke (remote logout)
//! keeps the device and its lease key, so the device's next login continues it; a wipe also
//! retires the device as wiped and deletes its lease key, so a copy of its data stays
//! readable at most until its lease ends. From then on the directive rides in
//! `X-Fieldvault-Directives` on every response to that device (401s included), and in the
//! answer to a login that names the device, until the device acknowledges it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use fieldvault_core::protocol::auth::{AckRequest, AckResponse};
use fieldvault_core::protocol::{DirectiveClaims, DirectiveKind, TokenSigner};

use crate::app::{App, JsonBody, random_id};
use crate::problem::ApiError;
use crate::signed::SignedSession;
use crate::storage::{AuditEvent, DeviceFilter, DeviceRecord, NewDirective, Page, Store, StoreError};

/// What making a directive can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No device has this id.
    #[error("no device with id {0:?} (see `device list`)")]
    NoSuchDevice(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes a directive for `device_id` and revokes the device's sessions; a wipe also retires
/// the device and deletes its lease key. `by` (`cli:<os user>`, `admin:<name>`) is the actor of
/// the `directive.issued` audit record written in the same transaction. Returns the
/// directive's claims.
///
/// # Errors
/// [`DeviceError::NoSuchDevice`]; storage errors (nothing changed).
pub async fn issue_directive(
    store: &Arc<dyn Store>,
    by: &str,
    signer: &TokenSigner,
    device_id: &str,
    kind: DirectiveKind,
    now: u64,
) -> Result<DirectiveClaims, DeviceError> {
    let device = store
        .devices_page(DeviceFilter::Id(device_id), Page { offset: 0, limit: 1 })
        .await?
        .pop()
        .ok_or_else(|| DeviceError::NoSuchDevice(device_id.to_owned()))?;
    let claims = DirectiveClaims::new(
        &device.user,
        &device.id,
        device.session_id.as_deref().unwrap_or(""),
        random_id("dir_"),
        kind,
        now,
    );
    let token = signer.sign(fieldvault_core::protocol::DIRECTIVE_TYP, &claims);
    let audit = AuditEvent::new(now, by, "directive.issued", &device.id)
        .with("user", device.user.as_str())
        .with("kind", kind.as_str())
        .with("jti", claims.jti.as_str());
    let stored = store
        .add_directive(
            &NewDirective { jti: claims.jti.clone(), device_id: device.id.clone(), kind, token, now },
            &audit,
        )
        .await?;
    if !stored {
        return Err(DeviceError::NoSuchDevice(device_id.to_owned()));
    }
    Ok(claims)
}

/// Records that a device's pending directives ride an answer now (the console shows them as
/// sent). Only the bookkeeping fails here: the directives still ride the answer, and the
/// failure goes to the log.
pub(crate) async fn mark_sent(app: &App, device_id: &str, tokens: &[String], now: u64) {
    if tokens.is_empty() {
        return;
    }
    if let Err(e) = app.store.mark_directives_sent(device_id, tokens, now).await {
        tracing::warn!(device = %device_id, error = %e, "could not record that directives were sent");
    }
}

/// Every device, for `device list`.
///
/// # Errors
/// Storage errors.
pub async fn list(store: &Arc<dyn Store>) -> Result<Vec<DeviceRecord>, StoreError> {
    store.devices().await
}

/// Most directives named in one acknowledgement.
const MAX_ACK: usize = 100;

/// The device has carried out these directives (signed; accepted from a revoked session).
#[utoipa::path(post, path = "/v1/devices/ack", tag = "devices",
    params(("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header),
        ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    request_body = AckRequest,
    responses((status = 200, body = AckResponse), (status = 400), (status = 401)))]
pub async fn ack(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    JsonBody(req): JsonBody<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    if req.jtis.is_empty() || req.jtis.len() > MAX_ACK || req.jtis.iter().any(|j| j.is_empty() || j.len() > 64) {
        return Err(ApiError::bad_request(format!("jtis lists 1 to {MAX_ACK} directive ids")));
    }
    let (device, now) = (&signed.session.device_id, app.now());
    // Recorded only when at least one was pending (else nothing changes, the record neither).
    let audit = AuditEvent::new(now, format!("device:{device}"), "directive.acknowledged", device.as_str())
        .with("user", signed.session.user.as_str())
        .with("jtis", req.jtis.clone());
    let acknowledged = app.store.ack_directives(device, &req.jtis, now, &audit).await?;
    Ok(Json(AckResponse { acknowledged }))
}
