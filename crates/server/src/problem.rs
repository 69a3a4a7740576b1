//! Every error answer is `application/problem+json` (RFC 9457) with a stable `code` from
//! SPEC section 5. Details of internal failures go to the log, never into the response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::{ProblemCode, TIMESTAMP_WINDOW_SECS};

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code.
    pub code: ProblemCode,
    /// One human sentence, safe to show (never a secret, never an internal detail).
    pub detail: String,
    /// Seconds after which a rate-limited client may retry.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and detail.
    pub fn new(status: StatusCode, code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError { status, code, detail: detail.into(), retry_after: None }
    }

    /// 400 `bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ProblemCode::BadRequest, detail)
    }

    /// 401 `invalid_token`.
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ProblemCode::InvalidToken, detail)
    }

    /// 401 `invalid_grant`.
    pub fn invalid_grant(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ProblemCode::InvalidGrant, detail)
    }

    /// 401 `invalid_signature`.
    pub fn invalid_signature(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ProblemCode::InvalidSignature, detail)
    }

    /// 401 `stale_timestamp`: a time the client sent (`X-Timestamp`, a relogin proof's `ts`)
    /// is more than the window from the server's clock. Send it with [`with_date`].
    pub fn stale_timestamp(what: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ProblemCode::StaleTimestamp,
            format!("{what} is more than {TIMESTAMP_WINDOW_SECS} s from the server's time (see Date)"),
        )
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, ProblemCode::NotFound, "no such resource")
    }

    /// 413 `too_large`.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ProblemCode::TooLarge, format!("the body exceeds {limit} bytes"))
    }

    /// 500 `internal`: logs `cause`, answers nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ProblemCode::Internal, "the server failed; try again later")
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

impl From<crate::storage::StoreError> for ApiError {
    fn from(e: crate::storage::StoreError) -> Self {
        ApiError::internal(e)
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
        r
    }
}
