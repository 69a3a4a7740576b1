//! The routes, and the limits layer every request passes first. The listener that serves
//! them over TLS is `listener`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use axum::http::header;
use fieldvault_core::protocol::{PINS_TYP, PinsClaims};

use crate::app::App;
use crate::auth;
use crate::problem::ApiError;

/// Liveness: 200 once the server is ready.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "{\"status\":\"ok\"}")))]
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// The certificate pins a device should hold (SPEC section 5): a JWS (`typ: fv-pins+jwt`,
/// signed with the token key) of {pins, iat, exp}, the current key's pin first, then the next
/// key's once `cert next` made it. Devices verify it with their cached JWKS and add the pins to
/// their pin set at each sync, so a later `cert rotate` never locks them out.
#[utoipa::path(get, path = "/v1/server/pins", tag = "meta",
    responses((status = 200, description = "a compact JWS, `application/jwt`"), (status = 404)))]
pub async fn server_pins(State(app): State<Arc<App>>) -> Response {
    let Some(source) = &app.pins else { return ApiError::not_found().into_response() };
    match source.pins() {
        Ok(pins) => {
            let token = app.tokens.sign(PINS_TYP, &PinsClaims::new(pins, app.now()));
            ([(header::CONTENT_TYPE, "application/jwt"), (header::CACHE_CONTROL, "no-store")], token).into_response()
        }
        Err(e) => ApiError::internal(format!("reading the certificate pins: {e}")).into_response(),
    }
}

/// The header-size limit, for every request (content codings are refused where a body is
/// read: `JsonBody` and the signed channel).
async fn limits(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let size: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if size > app.config.header_limit {
        return ApiError::headers_too_large(app.config.header_limit).into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
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
        .route("/v1/auth/oidc", post(auth::oidc::login))
        .route("/v1/auth/oidc/config", get(auth::oidc::config))
        .route("/v1/auth/jwks", get(auth::jwks))
        .route("/v1/server/pins", get(server_pins))
        .route("/v1/openapi.json", get(crate::openapi::openapi_json))
        .merge(signed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(app.clone(), limits))
        .layer(from_fn_with_state(app.clone(), crate::health::count_errors))
        // Outermost: it sees every answer as sent, and logs the cause of an `internal` one.
        .layer(from_fn(crate::problem::log_internal))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;

    use tower::ServiceExt;

    use super::*;
    use crate::storage::{LeaseRecord, LoginDevice, NewLogin, SqliteStore, Store, UserRecord};
    use crate::{Config, KeyDir};

    #[tokio::test]
    async fn an_internal_error_on_a_signed_route_is_logged_once_with_its_method_and_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = KeyDir::at(&tmp.path().join("keys"));
        keys.init(&tmp.path().join("data"), &["localhost".into()]).expect("init");
        let store_key = keys.store_key().expect("store key");
        let store =
            SqliteStore::open(&tmp.path().join("server.db"), &crate::seal::sqlite_key(&store_key)).expect("opens");
        let user = UserRecord {
            name: "alice".into(),
            password_hash: "h".into(),
            roles: vec![],
            disabled: false,
            attributes: Default::default(),
        };
        store.add_user(&user, 1, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("adds");
        // A session whose sealed secret does not open: the signed channel fails inside.
        let lease = LeaseRecord { id: "l1".into(), key_sealed: vec![1; 48], expires_at: 2 };
        let device = LoginDevice::New { id: "d1".into(), secret_sealed: vec![2; 61], lease };
        let login = NewLogin {
            session_id: "s1".into(),
            key_id: "k1".into(),
            user: "alice".into(),
            secret_sealed: vec![3; 60],
            refresh_hash: [4; 32],
            device_name: "tablet".into(),
            device,
            totp: None,
            now: 1,
        };
        assert_eq!(
            store.login(&login, &crate::storage::AuditEvent::new(0, "test", "test", "")).await.expect("logs in"),
            crate::storage::LoginOutcome::Recorded
        );
        let clock: crate::Clock = Arc::new(|| 100);
        let app = App::new(Arc::new(store), keys.token_signer().expect("signer"), &store_key, clock, Config::default())
            .expect("app");
        let router = router(Arc::new(app));

        let log = crate::problem::tests::logged(async {
            // Well-formed signing headers: the failure comes at the key id's sealed secret.
            let request = Request::get("/v1/devices/self?x=1")
                .header("x-key-id", "k1")
                .header("x-timestamp", "100")
                .header("x-nonce", "AAAAAAAAAAAAAAAAAAAAAA==")
                .header("x-signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .body(Body::empty());
            let response = router.oneshot(request.expect("request")).await.expect("answers");
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        })
        .await;
        assert_eq!(log.matches("internal error").count(), 1, "{log}");
        assert!(log.contains("method=GET") && log.contains("path=/v1/devices/self"), "{log}");
        assert!(!log.contains("x=1") && !log.contains("k1"), "no query, no header: {log}");
    }
}
