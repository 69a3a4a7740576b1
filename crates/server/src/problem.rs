//! Every error answer is `application/problem+json` (RFC 9457) with a stable `code` from
//! SPEC section 5. Each code has its HTTP status ([`ProblemStatus::status`]); the few answers
//! the protocol gives another status (405 and 409 `bad_request`, 409 `rate_limited`, 431
//! `too_large`) have a constructor each here, so no call site pairs a code with a status.
//! Details of internal failures go to the log, once per request, from one response layer
//! ([`log_internal`]), never into the response.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::{ProblemCode, TIMESTAMP_WINDOW_SECS};

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The HTTP status of a problem code (`docs/protocol.md` section 10), in one place.
pub trait ProblemStatus {
    /// The status the code is answered with. The protocol gives a few answers another status;
    /// those have their own constructors on [`ApiError`].
    fn status(self) -> StatusCode;
}

impl ProblemStatus for ProblemCode {
    fn status(self) -> StatusCode {
        match self {
            ProblemCode::InvalidToken
            | ProblemCode::InvalidSignature
            | ProblemCode::StaleTimestamp
            | ProblemCode::ReplayedNonce
            | ProblemCode::InvalidGrant
            | ProblemCode::MfaRequired => StatusCode::UNAUTHORIZED,
            ProblemCode::Forbidden => StatusCode::FORBIDDEN,
            ProblemCode::NotFound => StatusCode::NOT_FOUND,
            ProblemCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemCode::BadRequest => StatusCode::BAD_REQUEST,
            ProblemCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemCode::RollbackDetected => StatusCode::CONFLICT,
            ProblemCode::ProviderUnavailable => StatusCode::BAD_GATEWAY,
            // `ProblemCode` may grow; a code added to core without a status here fails the
            // test that walks `ProblemCode::ALL` against the protocol's table.
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer: a code with its status, and a detail safe to show.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: ProblemCode,
    /// One human sentence, safe to show (never a secret, never an internal detail).
    detail: String,
    /// Seconds after which a rate-limited client may retry.
    retry_after: Option<u64>,
    /// Why an `internal` answer failed: for the log, never for the client.
    cause: Option<Arc<str>>,
}

/// The cause of an `internal` answer, carried on the response to [`log_internal`].
#[derive(Clone)]
struct InternalCause(Arc<str>);

impl ApiError {
    /// An error with its code's status and a detail.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError::with_status(code.status(), code, detail)
    }

    /// `code` answered with `status`: [`ApiError::new`] passes the code's own status; only the
    /// named constructors here pass another, the one the protocol gives that answer.
    fn with_status(status: StatusCode, code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError { status, code, detail: detail.into(), retry_after: None, cause: None }
    }

    /// 400 `bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::BadRequest, detail)
    }

    /// 405 `bad_request`: a known path with another method.
    pub fn method_not_allowed() -> Self {
        Self::with_status(StatusCode::METHOD_NOT_ALLOWED, ProblemCode::BadRequest, "this method is not allowed here")
    }

    /// 409 `bad_request`: the request conflicts with the resource as it stands (an attachment
    /// id taken by another upload, chunks asked for before the upload is complete).
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::with_status(StatusCode::CONFLICT, ProblemCode::BadRequest, detail)
    }

    /// 401 `invalid_token`.
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::InvalidToken, detail)
    }

    /// 401 `mfa_required`: the password was right, the TOTP code missing, wrong or used.
    pub fn mfa_required(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::MfaRequired, detail)
    }

    /// 502 `provider_unavailable`: the identity provider could not be reached or answered
    /// with something malformed.
    pub fn provider_unavailable(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::ProviderUnavailable, detail)
    }

    /// 401 `invalid_grant`.
    pub fn invalid_grant(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::InvalidGrant, detail)
    }

    /// 401 `invalid_signature`.
    pub fn invalid_signature(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::InvalidSignature, detail)
    }

    /// 401 `stale_timestamp`: a time the client sent (`X-Timestamp`, a relogin proof's `ts`)
    /// is more than the window from the server's clock. Send it with `with_date`.
    pub fn stale_timestamp(what: &str) -> Self {
        Self::new(
            ProblemCode::StaleTimestamp,
            format!("{what} is more than {TIMESTAMP_WINDOW_SECS} s from the server's time (see Date)"),
        )
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(ProblemCode::NotFound, "no such resource")
    }

    /// 413 `too_large`.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(ProblemCode::TooLarge, format!("the body exceeds {limit} bytes"))
    }

    /// 431 `too_large`: the header block is over the limit.
    pub fn headers_too_large(limit: usize) -> Self {
        Self::with_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProblemCode::TooLarge,
            format!("the request headers exceed {limit} bytes"),
        )
    }

    /// 429 `rate_limited`, with `Retry-After` (at least 1 s).
    pub fn rate_limited(detail: impl Into<String>, retry_after: u64) -> Self {
        ApiError { retry_after: Some(retry_after.max(1)), ..Self::new(ProblemCode::RateLimited, detail) }
    }

    /// 409 `rate_limited`, `Retry-After: 1`: an idempotency key of the push is in use by a
    /// request still running (protocol section 14.3).
    pub fn key_in_use() -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::with_status(
                StatusCode::CONFLICT,
                ProblemCode::RateLimited,
                "an idempotency key of this push is in use by a request still running; retry the same push shortly",
            )
        }
    }

    /// 500 `internal`. Nothing of `cause` is answered; the response layer `log_internal` logs
    /// it once the answer is made, with the request's method and path.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError {
            cause: Some(cause.to_string().into()),
            ..Self::new(ProblemCode::Internal, "the server failed; try again later")
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine code.
    pub fn code(&self) -> ProblemCode {
        self.code
    }

    /// Seconds a rate-limited client must wait (None for other answers).
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "type": format!("https://fieldvault.invalid/problems/{}", self.code.as_str()),
            "title": self.code.title(),
            "status": self.status.as_u16(),
            "code": self.code.as_str(),
            "detail": self.detail,
        })
    }
}

/// Sets `Date` (RFC 9110 IMF-fixdate) to `now` by the server's clock: the clock that judged a
/// client's timestamp, so that a client told `stale_timestamp` can learn the server's time.
pub fn with_date(mut response: Response, now: u64) -> Response {
    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now));
    if let Ok(v) = HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, v);
    }
    response
}

/// An error and its sources on one line (`a: b`): a corrupt column's error says which
/// column, its source what is wrong with the value.
struct Chain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl From<crate::storage::StoreError> for ApiError {
    fn from(e: crate::storage::StoreError) -> Self {
        ApiError::internal(Chain(&e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).expect("JSON values always serialize");
        let mut r = (self.status, body).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self.code {
            ProblemCode::InvalidToken => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            }
            ProblemCode::RateLimited => {
                if let Some(s) = self.retry_after {
                    h.insert(header::RETRY_AFTER, HeaderValue::from(s));
                }
            }
            _ => {}
        }
        if let Some(cause) = self.cause {
            r.extensions_mut().insert(InternalCause(cause));
        }
        r
    }
}

/// The response layer that logs each `internal` answer's cause: once per request (the
/// outermost layer, so it sees the answer that is sent, signed or not), with the request's
/// method and path; never its query, headers or body, which may carry secrets.
pub(crate) async fn log_internal(req: Request, next: Next) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let mut response = next.run(req).await;
    if let Some(InternalCause(cause)) = response.extensions_mut().remove::<InternalCause>() {
        tracing::error!(%method, path = %uri.path(), %cause, "internal error");
    }
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Body;
    use axum::middleware::from_fn;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::storage::StoreError;

    /// The codes table of `docs/protocol.md` section 10: code, statuses, title per row.
    fn protocol_table() -> Vec<(String, Vec<u16>, String)> {
        let doc = include_str!("../../../docs/protocol.md");
        let section = doc.split("## 10. Errors").nth(1).expect("section 10").split("\n## ").next().expect("text");
        let table = section.split("| Code | HTTP status | Title |").nth(1).expect("the codes table");
        table
            .lines()
            .skip(1)
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let statuses = cells[2].split(',').map(|s| s.trim().parse().expect("a status")).collect();
                Some((code.to_owned(), statuses, cells[3].to_owned()))
            })
            .collect()
    }

    fn documented(code: ProblemCode) -> (Vec<u16>, String) {
        let table = protocol_table();
        let row = table.iter().find(|(c, ..)| c == code.as_str());
        let (_, statuses, title) = row.unwrap_or_else(|| panic!("{code} is not in the protocol's table"));
        (statuses.clone(), title.clone())
    }

    #[test]
    fn every_code_has_the_status_and_title_the_protocol_lists_first() {
        assert_eq!(protocol_table().len(), ProblemCode::ALL.len(), "one row per code");
        for code in ProblemCode::ALL {
            let (statuses, title) = documented(code);
            assert_eq!(code.status().as_u16(), statuses[0], "{code}");
            assert_eq!(code.title(), title, "{code}");
            let e = ApiError::new(code, "detail");
            assert_eq!((e.status(), e.code()), (code.status(), code));
        }
    }

    #[test]
    fn every_answer_pairs_its_code_with_a_status_the_protocol_gives_it() {
        let every_constructor = [
            ApiError::bad_request("x"),
            ApiError::method_not_allowed(),
            ApiError::conflict("x"),
            ApiError::invalid_token("x"),
            ApiError::invalid_grant("x"),
            ApiError::mfa_required("x"),
            ApiError::provider_unavailable("x"),
            ApiError::invalid_signature("x"),
            ApiError::stale_timestamp("X-Timestamp"),
            ApiError::not_found(),
            ApiError::body_too_large(1),
            ApiError::headers_too_large(1),
            ApiError::rate_limited("x", 5),
            ApiError::key_in_use(),
            ApiError::internal("x"),
        ];
        let mut seen = std::collections::HashSet::new();
        for e in every_constructor {
            let (statuses, _) = documented(e.code());
            assert!(statuses.contains(&e.status().as_u16()), "{} with {}", e.code(), e.status());
            let response = e.clone().into_response();
            assert_eq!(response.status(), e.status());
            assert_eq!(e.body()["status"], e.status().as_u16());
            seen.insert((e.code().as_str(), e.status().as_u16()));
        }
        // And every status the protocol gives a code is one some answer uses.
        for (code, statuses, _) in protocol_table() {
            for status in statuses {
                let used = seen.contains(&(code.as_str(), status))
                    || ProblemCode::parse(&code).is_some_and(|c| c.status().as_u16() == status);
                assert!(used, "{code} {status} is documented but never answered");
            }
        }
    }

    #[test]
    fn rate_limited_answers_carry_retry_after() {
        for (e, secs) in [(ApiError::rate_limited("x", 0), "1"), (ApiError::key_in_use(), "1")] {
            let response = e.into_response();
            assert_eq!(response.headers().get(header::RETRY_AFTER).expect("Retry-After"), secs);
        }
    }

    /// Everything logged while `f` runs on this thread, as text.
    pub(crate) async fn logged<F: std::future::Future<Output = ()>>(f: F) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("not poisoned").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).without_time().finish();
        let guard = tracing::subscriber::set_default(subscriber);
        f.await;
        drop(guard);
        String::from_utf8(sink.0.lock().expect("not poisoned").clone()).expect("UTF-8")
    }

    #[tokio::test]
    async fn an_internal_error_is_logged_once_per_request_with_its_method_path_and_cause() {
        let router = Router::new()
            .route(
                "/v1/sync/pull",
                get(|| async {
                    // Made twice, answered once: only the answer is logged.
                    drop(ApiError::internal("an error that was never answered"));
                    Err::<(), _>(ApiError::from(StoreError::corrupt("documents.version", "-1 is out of range")))
                }),
            )
            .route("/v1/other", get(|| async { ApiError::not_found() }))
            .layer(from_fn(log_internal));
        let log = logged(async {
            let request = Request::get("/v1/sync/pull?since=c3VyZWx5LXNlY3JldA&limit=5").body(Body::empty());
            let response = router.clone().oneshot(request.expect("request")).await.expect("answers");
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(response.extensions().get::<InternalCause>().is_none(), "consumed by the layer");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
            assert!(!String::from_utf8_lossy(&body).contains("documents"), "the cause is not answered");
            let other = router.oneshot(Request::get("/v1/other").body(Body::empty()).expect("request")).await;
            assert_eq!(other.expect("answers").status(), StatusCode::NOT_FOUND);
        })
        .await;
        assert_eq!(log.matches("internal error").count(), 1, "{log}");
        assert!(log.contains("method=GET") && log.contains("path=/v1/sync/pull"), "{log}");
        assert!(log.contains("corrupt documents.version in the store: -1 is out of range"), "{log}");
        assert!(!log.contains("never answered") && !log.contains("since="), "{log}");
    }
}
