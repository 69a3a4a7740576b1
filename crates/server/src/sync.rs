//! `POST /v1/sync/push` and `GET /v1/sync/pull` (signed): the HTTP side of sync. What each
//! op gets is decided by `fieldvault_core::protocol::sync::decide` inside the store's
//! transaction; this module checks the input, holds the idempotency keys while the push runs,
//! and turns cursors into sequence numbers and back.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::ProblemCode;
use fieldvault_core::protocol::auth::DeviceReason;
use fieldvault_core::protocol::sync::{
    DEFAULT_PULL_LIMIT, MAX_KEY_AHEAD_SECS, MAX_PULL_ANSWER_BYTES, MAX_PULL_LIMIT, MAX_PUSH_OPS, PushRequest,
    PushResponse, check_owned_op,
};

use crate::app::{App, JsonBody};
use crate::problem::ApiError;
use crate::signed::SignedSession;
use crate::storage::{PullBatch, PullOutcome, PushOutcome};

/// `device_seq` went backwards: the device is retired as caught in a rollback (its sessions
/// end, its lease key stays), so that its next login makes a new device that takes the lease
/// key over (SPEC section 5, "Offline lease").
async fn rollback(app: &App, device_id: &str) -> ApiError {
    if let Err(e) = app.store.retire_device(device_id, DeviceReason::Rollback, app.now()).await {
        return ApiError::from(e);
    }
    tracing::warn!(device = %device_id, "rollback detected: device retired, its lease waits for its next login");
    ApiError::new(
        ProblemCode::RollbackDetected,
        "device_seq went backwards: this vault is an older copy; lock it and log in online to resync",
    )
}

/// Cache-Control: no-store on every sync answer (they carry documents).
fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Apply a batch of ops in one transaction; one result per op, in order.
#[utoipa::path(post, path = "/v1/sync/push", tag = "sync",
    params(("Authorization" = String, Header), ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header),
        ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    request_body(content = serde_json::Value, description = "{ops: [{idempotency_key, collection, id, op, body, base_version, attachments?}], device_seq}"),
    responses((status = 200, description = "{results: [{status, version?, body?, deleted?, first?, attachments?}]}"),
        (status = 400), (status = 401), (status = 409, description = "rollback_detected, or a key in use (rate_limited, Retry-After)"), (status = 413)))]
pub async fn push(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    JsonBody(req): JsonBody<PushRequest>,
) -> Result<Response, ApiError> {
    if req.ops.len() > MAX_PUSH_OPS {
        return Err(ApiError::bad_request(format!("a push carries at most {MAX_PUSH_OPS} ops, not {}", req.ops.len())));
    }
    let mut ops = Vec::with_capacity(req.ops.len());
    for (n, raw) in req.ops.into_iter().enumerate() {
        ops.push(check_owned_op(raw).map_err(|e| ApiError::bad_request(format!("op {n}: {e}")))?);
    }
    // A key dated far ahead would outlive its record (kept from receipt, for the retention plus
    // MAX_KEY_AHEAD_SECS) and be applied again after the purge.
    let now = app.now();
    if let Some((n, op)) = ops.iter().enumerate().find(|(_, o)| o.made_at > now.saturating_add(MAX_KEY_AHEAD_SECS)) {
        return Err(ApiError::bad_request(format!(
            "op {n}: the idempotency_key is dated {} s ahead of the server's clock (at most {MAX_KEY_AHEAD_SECS} s); \
             the device's clock is off",
            op.made_at - now
        )));
    }
    let user = signed.session.user.clone();
    let _claimed = app
        .in_flight
        .claim(&user, ops.iter().map(|o| o.op.idempotency_key.as_str()))
        .ok_or_else(ApiError::key_in_use)?;
    let batch = app.push_batch(user, signed.session.device_id.clone(), req.device_seq, ops, now);
    let outcome = app.store.push(batch).await?;
    match outcome {
        PushOutcome::Results(results) => Ok(no_store(Json(PushResponse { results }).into_response())),
        PushOutcome::RollbackDetected => Err(rollback(&app, &signed.session.device_id).await),
        PushOutcome::KeyInUse => Err(ApiError::key_in_use()),
    }
}

/// The query of a pull, parsed strictly: each parameter at most once, nothing else.
#[derive(Debug, Default)]
struct PullQuery {
    since: Option<String>,
    limit: Option<u32>,
    device_seq: Option<u64>,
}

fn parse_query(raw: Option<&str>) -> Result<PullQuery, ApiError> {
    let mut q = PullQuery::default();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dup = || ApiError::bad_request(format!("the query parameter {k:?} appears more than once"));
        let digits = |what: &str| {
            if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                Err(ApiError::bad_request(format!("{what} must be decimal digits")))
            } else {
                Ok(())
            }
        };
        match k {
            "since" => {
                if q.since.replace(v.to_owned()).is_some() {
                    return Err(dup());
                }
            }
            "limit" => {
                digits("limit")?;
                let n: u32 = v.parse().map_err(|_| ApiError::bad_request("limit is too large"))?;
                if !(1..=MAX_PULL_LIMIT).contains(&n) {
                    return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_PULL_LIMIT}")));
                }
                if q.limit.replace(n).is_some() {
                    return Err(dup());
                }
            }
            "device_seq" => {
                digits("device_seq")?;
                let n: u64 = v.parse().map_err(|_| ApiError::bad_request("device_seq is too large"))?;
                if q.device_seq.replace(n).is_some() {
                    return Err(dup());
                }
            }
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(ApiError::bad_request(format!("unknown query parameter {shown:?}")));
            }
        }
    }
    Ok(q)
}

/// Changes since a cursor: only what the user may read, projected, and tombstones for what
/// this device holds and may no longer keep.
#[utoipa::path(get, path = "/v1/sync/pull", tag = "sync",
    params(("since" = Option<String>, Query, description = "cursor from the previous pull; absent = from the start"),
        ("limit" = Option<u32>, Query, description = "default 500, at most 5000"),
        ("device_seq" = u64, Query, description = "the account's sync counter"),
        ("Authorization" = String, Header), ("X-Key-Id" = String, Header), ("X-Timestamp" = String, Header),
        ("X-Nonce" = String, Header), ("X-Signature" = String, Header)),
    responses((status = 200, description = "{changes: [{collection, id, op, version?, body?, attachments?}], cursor, has_more}"),
        (status = 400), (status = 401), (status = 409, description = "rollback_detected")))]
pub async fn pull(
    State(app): State<Arc<App>>,
    Extension(signed): Extension<SignedSession>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_query(raw.as_deref())?;
    let device_seq = q.device_seq.ok_or_else(|| ApiError::bad_request("device_seq is required"))?;
    let user = &signed.session.user;
    let cursor = q
        .since
        .as_deref()
        .map(|text| app.cursors.decode(user, text))
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let batch = PullBatch {
        user: user.clone(),
        device_id: signed.session.device_id.clone(),
        device_seq,
        // When the rules or this user's access changed since the cursor was issued, the
        // store re-checks what the device holds from the start.
        after: cursor,
        limit: q.limit.unwrap_or(DEFAULT_PULL_LIMIT),
        rules: app.rules.clone(),
        now: app.now(),
    };
    match app.store.pull(batch).await? {
        PullOutcome::RollbackDetected => Err(rollback(&app, &signed.session.device_id).await),
        PullOutcome::UnknownUser => Err(ApiError::invalid_token("the user no longer exists")),
        PullOutcome::Page { answer, next, has_more } => {
            let cursor = app.cursors.encode(user, next);
            // Serialized once, as the page was planned; the signed layer hashes these bytes
            // and sends them as they are.
            let body = answer.finish(&cursor, has_more);
            if body.len() > MAX_PULL_ANSWER_BYTES {
                // Only a document stored before documents were bounded to 1 MiB can do this.
                return Err(ApiError::internal("a pull answer would pass 16 MiB: a stored document is too large"));
            }
            let mut r = axum::body::Bytes::from(body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(no_store(r))
        }
    }
}
