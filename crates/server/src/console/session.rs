//! Console sessions: a random id in the `__Host-fv_admin` cookie (`Secure; HttpOnly;
//! SameSite=Strict; Path=/`), the session itself in the store under the id's SHA-256, so
//! every instance sharing the store serves it and a copy of the store lets no one in.
//! A session ends after 15 minutes without a request or 8 hours after its login, whichever
//! comes first. Each carries a random CSRF token that every state-changing request must send
//! back (compared in constant time), and the time a TOTP code was last entered in it (a
//! step-up lasts 5 minutes).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::Fields;
use crate::app::App;
use crate::storage::AdminSession;

/// The session cookie's name (`__Host-`: the browser keeps it only when it is `Secure`, has
/// `Path=/` and no `Domain`, so no other host can set or read it).
pub const COOKIE: &str = "__Host-fv_admin";
/// The login form's CSRF cookie (double submit: the form carries the same random value).
pub(super) const LOGIN_COOKIE: &str = "__Host-fv_login";
/// A session without a request for this long is over (seconds).
pub const IDLE_TIMEOUT: u64 = 15 * 60;
/// A session is over this long after its login, active or not (seconds).
pub const ABSOLUTE_TIMEOUT: u64 = 8 * 3600;
/// A TOTP code entered this recently (seconds) lets a wipe, a revoke-all, a role change or a
/// user disable go ahead.
pub const STEP_UP_WINDOW: u64 = 5 * 60;

/// A random token: 32 bytes in base64url.
pub(super) fn random_token() -> Zeroizing<String> {
    let mut b = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut b[..]).expect("the OS random source works");
    Zeroizing::new(URL_SAFE_NO_PAD.encode(&b[..]))
}

fn id_hash(id: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The value of cookie `name` in the request, if sent.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the attributes every console cookie has.
pub(super) fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    let line = Zeroizing::new(format!("{name}={value}; Secure; HttpOnly; SameSite=Strict; Path=/{age}"));
    HeaderValue::from_str(&line).expect("tokens are base64url")
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub(super) fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A new session for `admin` (full: past the TOTP code; else enrolling); the cookie that
/// carries it and the stored session.
pub(super) async fn start(
    app: &App,
    admin: &str,
    full: bool,
    now: u64,
) -> Result<(HeaderValue, AdminSession), crate::storage::StoreError> {
    let id = random_token();
    let session = AdminSession {
        id_hash: id_hash(&id),
        admin: admin.to_owned(),
        csrf: random_token().to_string(),
        full,
        created_at: now,
        seen_at: now,
        stepup_at: full.then_some(now),
    };
    app.store.put_admin_session(&session).await?;
    Ok((set_cookie(COOKIE, &id, None), session))
}

/// The live session the request's cookie names; an expired one is deleted, and None.
pub(super) async fn current(app: &App, headers: &HeaderMap, now: u64) -> Option<AdminSession> {
    let id = cookie(headers, COOKIE)?;
    let hash = id_hash(id);
    let session = match app.store.admin_session(&hash).await {
        Ok(s) => s?,
        Err(e) => {
            tracing::warn!(error = %e, "reading a console session failed");
            return None;
        }
    };
    let idle = now.saturating_sub(session.seen_at) > IDLE_TIMEOUT;
    let old = now.saturating_sub(session.created_at) > ABSOLUTE_TIMEOUT;
    if idle || old {
        let _ = app.store.delete_admin_session(&hash).await;
        return None;
    }
    Some(session)
}

/// Whether the request carries the session's CSRF token: in `X-CSRF-Token` (htmx sends it
/// from `hx-headers`) or the form's `csrf` field.
pub(super) fn csrf_ok(session: &AdminSession, headers: &HeaderMap, fields: &Fields) -> bool {
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_else(|| fields.get("csrf"));
    same_token(sent, &session.csrf)
}

/// Whether a TOTP code was entered in the session within [`STEP_UP_WINDOW`].
pub(super) fn stepped_up(session: &AdminSession, now: u64) -> bool {
    session.stepup_at.is_some_and(|at| now.saturating_sub(at) <= STEP_UP_WINDOW)
}

/// 303 to `to`.
pub(super) fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// Without a live session: to the login form.
pub(super) fn to_login() -> Response {
    redirect("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_by_its_exact_name_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; __Host-fv_admin=xyz; __Host-fv_admin_x=2"));
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn tokens_match_only_when_equal_and_not_empty() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", ""));
    }
}
