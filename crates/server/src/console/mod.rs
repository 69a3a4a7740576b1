//! The admin console (issue 19): server-rendered pages on a listener of their own
//! (`serve --admin-listen ADDR`), for administrators apart from app users. docs/console.md
//! is the operator's page; this is the map.
//!
//! - `session`: the `__Host-fv_admin` cookie, console sessions in the store (idle 15 minutes,
//!   at most 8 hours), CSRF tokens, the step-up window.
//! - `login`: the login form at `/` (`POST /login`), TOTP enrolment at the first login
//!   (`/enrol`, a QR code), logout; [`add_admin`] for `fieldvault-server admin add`.
//! - `users`: the users page: a page of users by name prefix; create, disable, enable,
//!   reset password, roles and attributes.
//! - `devices`: a page of devices with their directives and states; revoke, wipe (step-up).
//! - `sessions`: a page of one user's sessions; revoke one, revoke all (step-up).
//! - `health`: the store, the connections, the device API's recent error answers.
//! - `rules`: the access rules in force and "what can this user read".
//! - `audit`: the audit log a page at a time and its chain check.
//! - `pages`: the layout every page shares (maud: every interpolation escaped).
//!
//! Every answer passes `headers` (CSP, `nosniff`, `no-referrer`, `no-store` but for the
//! assets; never a CORS header); every request passes `guard` (the `Sec-Fetch-Site`
//! check, the session, the CSRF token of a state-changing request).
//!
//! Console actions are audited with the actor `admin:<name>`: an action that changes the
//! store records itself in its own transaction (the store method takes the record), and an
//! event that changes nothing else (a sign-in, a refused one) goes through `record`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use zeroize::Zeroizing;

use crate::app::App;
use crate::auth::PeerAddr;

mod audit;
mod devices;
mod health;
mod login;
mod pages;
mod rules;
mod session;
mod sessions;
mod users;

pub use login::{AdminError, add_admin};
pub use session::{ABSOLUTE_TIMEOUT, COOKIE, IDLE_TIMEOUT, STEP_UP_WINDOW};

/// The Content-Security-Policy of every console answer: scripts and styles from the
/// console's own assets only, nothing inline, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; frame-ancestors 'none'";

/// htmx 2.0.9, as published in the npm package `htmx.org` (`assets/htmx.LICENSE`: 0BSD).
const HTMX: &[u8] = include_bytes!("../../assets/htmx.min.js");
/// The console's style sheet.
const CSS: &[u8] = include_bytes!("../../assets/console.css");

/// Largest form body the console reads.
const FORM_LIMIT: usize = 64 << 10;

/// The console's routes over `app`. It serves nothing of the device API, and the device
/// listener's router serves nothing of this.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(login::form))
        .route("/login", post(login::submit))
        .route("/enrol", get(login::enrol_page).post(login::enrol))
        .route("/logout", post(login::logout))
        .route("/users", get(users::list).post(users::create))
        .route("/users/disable", post(users::disable))
        .route("/users/enable", post(users::enable))
        .route("/users/password", post(users::password))
        .route("/users/access", post(users::access))
        .route("/devices", get(devices::list))
        .route("/devices/revoke", post(devices::revoke))
        .route("/devices/wipe", post(devices::wipe))
        .route("/sessions", get(sessions::list))
        .route("/sessions/revoke", post(sessions::revoke))
        .route("/sessions/revoke-all", post(sessions::revoke_all))
        .route("/health", get(health::show))
        .route("/rules", get(rules::show))
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .route("/assets/htmx.min.js", get(|| async { asset(HTMX, "text/javascript; charset=utf-8") }))
        .route("/assets/console.css", get(|| async { asset(CSS, "text/css; charset=utf-8") }))
        .fallback(|| async { pages::message(StatusCode::NOT_FOUND, "Not found", "There is no such page.") })
        .layer(from_fn_with_state(app.clone(), guard))
        .layer(from_fn(headers))
        .with_state(app)
}

fn asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], bytes)
        .into_response()
}

/// The security headers of every answer. Pages are never cached (they carry CSRF tokens);
/// assets are, for a year.
async fn headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether `Sec-Fetch-Site` lets this request in: a request from another site (or another
/// subdomain of this one) is refused; the console's own pages send `same-origin`, a typed
/// address or bookmark sends `none` (allowed for reading only), and a client without fetch
/// metadata sends nothing.
fn fetch_site_allowed(method: &Method, value: Option<&[u8]>) -> bool {
    match value {
        None | Some(b"same-origin") => true,
        Some(b"none") => method == Method::GET || method == Method::HEAD,
        Some(_) => false,
    }
}

/// The form fields of a request, parsed once by `guard` (values wiped when dropped: one
/// may be a password).
#[derive(Default)]
pub(crate) struct Fields(Vec<(String, Zeroizing<String>)>);

impl Fields {
    fn parse(bytes: &[u8]) -> Fields {
        Fields(form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned()))).collect())
    }

    /// The first value of `name` ("" when absent).
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    /// Every (name, value), in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fields([redacted])")
    }
}

/// Every request: the `Sec-Fetch-Site` check; a POST's form read (at most 64 KiB); then,
/// but for the login form, its assets and `POST /login` (which checks its own token), a
/// live session whose CSRF token the POST carries (the `csrf` field or `X-CSRF-Token`).
/// Without a session, pages redirect to the login form.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let fetch_site = req.headers().get("sec-fetch-site").map(HeaderValue::as_bytes);
    if !fetch_site_allowed(req.method(), fetch_site) {
        return pages::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This request came from another site; the console answers only its own pages.",
        );
    }
    let (mut parts, body) = req.into_parts();
    let fields = if parts.method == Method::POST {
        match crate::app::read_body(body, &app.config, FORM_LIMIT).await {
            Ok(bytes) => Fields::parse(&bytes),
            Err(_) => {
                return pages::message(StatusCode::BAD_REQUEST, "Bad request", "The form could not be read.");
            }
        }
    } else {
        Fields::default()
    };
    let path = parts.uri.path().to_owned();
    let open = path.starts_with("/assets/") || (path == "/" && parts.method == Method::GET) || path == "/login";
    if !open {
        let now = app.now();
        let Some(mut current) = session::current(&app, &parts.headers, now).await else {
            return session::to_login();
        };
        if !current.full && path != "/enrol" && path != "/logout" {
            return session::redirect("/enrol");
        }
        if parts.method == Method::POST && !session::csrf_ok(&current, &parts.headers, &fields) {
            return pages::message(
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's security token is missing or wrong: reload the page and try again.",
            );
        }
        current.seen_at = now;
        if let Err(e) = app.store.put_admin_session(&current).await {
            return pages::internal(&e);
        }
        parts.extensions.insert(current);
    }
    parts.extensions.insert(Arc::new(fields));
    next.run(Request::from_parts(parts, axum::body::Body::empty())).await
}

/// The client's address as login throttling counts it (as the device login does).
pub(crate) fn address(peer: Option<&PeerAddr>) -> String {
    peer.map_or_else(|| "unknown".to_owned(), |PeerAddr(addr): &PeerAddr| ip(addr))
}

fn ip(addr: &SocketAddr) -> String {
    addr.ip().to_string()
}

/// Appends the audit record of a console event that changes nothing else in the store (a
/// sign-in, a refused one, an enrolment, a logout), with a log line without secrets.
pub(crate) async fn record(
    store: &dyn crate::storage::Store,
    at: u64,
    actor: &str,
    action: &str,
    target: &str,
) -> Result<(), crate::storage::StoreError> {
    tracing::info!(actor = %actor, action = %action, target = %target, "console");
    store.audit_append(&crate::storage::AuditEvent::new(at, actor, action, target)).await.map(|_| ())
}

/// The audit actor of an administrator's console actions.
pub(crate) fn admin_actor(admin: &str) -> String {
    format!("admin:{admin}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_and_absent_fetch_metadata_may_change_anything() {
        for (method, value, allowed) in [
            (Method::POST, None, true),
            (Method::POST, Some(&b"same-origin"[..]), true),
            (Method::POST, Some(&b"same-site"[..]), false),
            (Method::POST, Some(&b"cross-site"[..]), false),
            (Method::POST, Some(&b"none"[..]), false),
            (Method::GET, Some(&b"none"[..]), true),
            (Method::GET, Some(&b"cross-site"[..]), false),
            (Method::GET, Some(&b"same-site"[..]), false),
        ] {
            assert_eq!(fetch_site_allowed(&method, value), allowed, "{method} {value:?}");
        }
    }

    #[test]
    fn form_fields_are_decoded_and_a_missing_one_reads_empty() {
        let f = Fields::parse(b"name=%3Cscript%3E&roles=a+b&csrf=x");
        assert_eq!(f.get("name"), "<script>");
        assert_eq!(f.get("roles"), "a b");
        assert_eq!(f.get("absent"), "");
        assert_eq!(format!("{f:?}"), "Fields([redacted])");
    }
}
