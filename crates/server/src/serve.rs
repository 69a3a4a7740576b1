//! The routes, and the limits layer every request passes first. The listener that serves
//! them over TLS is `listener`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::app::App;
use crate::auth;
use crate::problem::ApiError;
use fieldvault_core::protocol::ProblemCode;

/// Liveness: 200 once the server is ready.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "{\"status\":\"ok\"}")))]
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// The header-size limit, for every request (content codings are refused where a body is
/// read: `JsonBody` and the signed channel).
async fn limits(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let size: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if size > app.config.header_limit {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProblemCode::TooLarge,
            format!("the request headers exceed {} bytes", app.config.header_limit),
        )
        .into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ProblemCode::BadRequest, "this method is not allowed here")
}

/// The signed channel, or in the load benchmark's baseline build the same routes without it.
#[cfg(not(feature = "bench-unsigned"))]
macro_rules! channel_layer {
    () => {
        crate::signed::layer
    };
}
#[cfg(feature = "bench-unsigned")]
macro_rules! channel_layer {
    () => {
        crate::signed::unsigned_layer
    };
}

/// The HTTP routes over `app`.
pub fn router(app: Arc<App>) -> Router {
    let signed = Router::new()
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/devices/self", get(auth::device_self))
        .route("/v1/devices/ack", post(crate::devices::ack))
        .route("/v1/attachments/{id}", put(crate::attachments::put_metadata).get(crate::attachments::get_metadata))
        .route("/v1/attachments/{id}/chunks/{n}", put(crate::attachments::put_chunk).get(crate::attachments::get_chunk))
        .route("/v1/sync/push", post(crate::sync::push))
        .route("/v1/sync/pull", get(crate::sync::pull))
        .route_layer(from_fn_with_state(app.clone(), channel_layer!()));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/jwks", get(auth::jwks))
        .route("/v1/openapi.json", get(crate::openapi::openapi_json))
        .merge(signed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(app.clone(), limits))
        .with_state(app)
}
