//! Administrators and how they sign in: `fieldvault-server admin add NAME` ([`add_admin`]);
//! the login form at `/` posting to `/login` (name, password, TOTP code); at the first login,
//! after the password, TOTP enrolment at `/enrol` through a QR code; the step-up a sensitive
//! action asks for ([`step_up`]); logout.
//!
//! Every password and code attempt is throttled as a device login is
//! (`auth::login::reserve_attempt`), under the name `admin\nNAME`, which no user name can
//! be (user names have no control characters), so guessing at an administrator and at a user
//! of the same name are counted apart.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fieldvault_core::{TOTP_SECRET_LEN, TotpSecret, otpauth_uri, totp_verify};
use maud::{Markup, PreEscaped, html};
use zeroize::Zeroizing;

use super::pages::{page, respond};
use super::session::{self, LOGIN_COOKIE, cookie, same_token, set_cookie};
use super::{Fields, address, admin_actor, record};
use crate::accounts::{MIN_PASSWORD_CHARS, TOTP_ISSUER};
use crate::app::App;
use crate::auth::login::reserve_attempt;
use crate::auth::{Password, Passwords, PeerAddr};
use crate::problem::ApiError;
use crate::seal::Purpose;
use crate::storage::{AdminRecord, AdminSession, Store, StoreError};

/// What `admin add` can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The name breaks the user name rule (administrators follow it too).
    #[error("administrator name: {0}")]
    BadName(#[from] fieldvault_core::NameError),
    /// The password is too short or too long.
    #[error("passwords must be {MIN_PASSWORD_CHARS} to 1024 characters")]
    PasswordLength,
    /// The password scores below the zxcvbn floor every new secret must reach.
    #[error("password too weak (strength {score} of 4, at least {} needed){hint}", fieldvault_core::MIN_SECRET_SCORE)]
    WeakPassword {
        /// zxcvbn's score, 0 to 4.
        score: u8,
        /// zxcvbn's advice, prefixed with ": " when there is any (never the password).
        hint: String,
    },
    /// Storage failed, or the name is taken.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Adds an administrator of the console (Argon2id). The TOTP secret is made at their first
/// login, which shows it as a QR code; until then the password alone signs them in, once.
///
/// The audit record (actor `by`, such as `cli:<os user>`) is written in the same transaction.
///
/// # Errors
/// [`AdminError`]; [`StoreError::AdminExists`] when the name is taken (nothing changes).
pub async fn add_admin(
    store: &Arc<dyn Store>,
    by: &str,
    passwords: &Passwords,
    name: &str,
    password: Password,
    now: u64,
) -> Result<(), AdminError> {
    fieldvault_core::names::check_user_name(name)?;
    if !(MIN_PASSWORD_CHARS..=1024).contains(&password.chars()) {
        return Err(AdminError::PasswordLength);
    }
    let s = fieldvault_core::strength(password.expose_secret(), &["fieldvault", "admin", name]);
    if !s.acceptable() {
        return Err(AdminError::WeakPassword { score: s.score, hint: s.hint });
    }
    let hash = passwords.hash(password).await.map_err(AdminError::Hash)?;
    store.add_admin(name, &hash, now, &crate::storage::AuditEvent::new(now, by, "admin.add", name)).await?;
    Ok(())
}

/// The key login throttling counts an administrator's attempts under.
fn throttle_key(name: &str) -> String {
    format!("admin\n{name}")
}

fn login_page(token: &str, error: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(e) = error { p.error { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(token);
                label { "Name " input name="name" autocomplete="username" required; }
                label { "Password " input type="password" name="password" autocomplete="current-password" required; }
                label { "Code from your authenticator app (none at your first login) "
                    input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}"; }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// `GET /`: the login form (to the users page with a live session), with a fresh login
/// CSRF cookie that the form repeats.
pub(super) async fn form(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(s) = session::current(&app, &headers, app.now()).await {
        return session::redirect(if s.full { "/users" } else { "/enrol" });
    }
    login_form(StatusCode::OK, None)
}

fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    let token = session::random_token();
    let mut response = respond(status, login_page(&token, error));
    response.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, Some(3600)));
    response
}

/// A refused attempt: 429 with `Retry-After` when throttled, else the cause in the log.
fn refused(e: &ApiError) -> Response {
    match e.retry_after() {
        Some(wait) => {
            let text =
                format!("Too many failed attempts for this name from your address: wait {wait} s and try again.");
            let mut r = login_form(StatusCode::TOO_MANY_REQUESTS, Some(&text));
            r.headers_mut().insert(header::RETRY_AFTER, wait.into());
            r
        }
        None => super::pages::internal(&format!("{e:?}")),
    }
}

/// The administrator's TOTP secret, unsealed; the error is the cause, for the log.
fn secret(app: &App, admin: &AdminRecord) -> Result<Option<TotpSecret>, String> {
    let Some(sealed) = &admin.totp_sealed else { return Ok(None) };
    let bytes = app.sealer.open(Purpose::AdminTotpSecret, &admin.name, sealed).map_err(|e| e.to_string())?;
    let bytes: [u8; TOTP_SECRET_LEN] =
        bytes.as_slice().try_into().map_err(|_| "a stored administrator TOTP secret is not 20 bytes".to_owned())?;
    Ok(Some(TotpSecret::from_bytes(Zeroizing::new(bytes))))
}

/// Checks `code` against the administrator's secret and uses its step up: true when it
/// matched a step later than any used before (a code is good once).
async fn use_code(app: &App, admin: &AdminRecord, code: &str, now: u64) -> Result<bool, Response> {
    let Some(secret) = secret(app, admin).map_err(|e| super::pages::internal(&e))? else { return Ok(false) };
    let Some(sealed) = &admin.totp_sealed else { return Ok(false) };
    let Some(step) = totp_verify(&secret, code.trim(), now, admin.totp_last_step) else { return Ok(false) };
    app.store.use_admin_totp(&admin.name, sealed, step).await.map_err(|e| super::pages::internal(&e))
}

/// `POST /login`: the login form's token (against its cookie), the throttle, the password,
/// then the code of an enrolled administrator: a session, and to the users page. An
/// administrator not enrolled yet gets a new TOTP secret and a session that only reaches the
/// enrolment page.
pub(super) async fn submit(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    let now = app.now();
    if !same_token(fields.get("csrf"), cookie(&headers, LOGIN_COOKIE).unwrap_or("")) {
        return login_form(StatusCode::FORBIDDEN, Some("The form expired: log in again."));
    }
    let name = fields.get("name");
    let address = address(peer.as_ref().map(|Extension(p)| p));
    let key = throttle_key(name);
    if let Err(e) = reserve_attempt(&app, &key, &address, now).await {
        return refused(&e);
    }
    let admin = match app.store.admin(name).await {
        Ok(a) => a,
        Err(e) => return super::pages::internal(&e),
    };
    let password = Password::new(Zeroizing::new(fields.get("password").to_owned()));
    // An unknown name is checked against the dummy hash: same time, same answer.
    if !app.passwords.verify(password, admin.as_ref().map(|a| a.password_hash.clone())).await {
        if let Err(e) = record(app.store.as_ref(), now, &admin_actor(name), "console.login.failed", &address).await {
            return super::pages::internal(&e);
        }
        return login_form(StatusCode::UNAUTHORIZED, Some("Wrong name or password."));
    }
    let Some(admin) = admin else { return super::pages::internal(&"verified a password without an administrator") };
    let full = if admin.totp_confirmed {
        let code = fields.get("code");
        if code.is_empty() {
            return login_form(StatusCode::UNAUTHORIZED, Some("Enter the code from your authenticator app."));
        }
        match use_code(&app, &admin, code, now).await {
            Ok(true) => true,
            Ok(false) => {
                let actor = admin_actor(&admin.name);
                if let Err(e) = record(app.store.as_ref(), now, &actor, "console.login.failed", &address).await {
                    return super::pages::internal(&e);
                }
                return login_form(StatusCode::UNAUTHORIZED, Some("Wrong or already used code."));
            }
            Err(r) => return r,
        }
    } else {
        let mut bytes = Zeroizing::new([0u8; TOTP_SECRET_LEN]);
        aws_lc_rs::rand::fill(&mut bytes[..]).expect("the OS random source works");
        let sealed = app.sealer.seal(Purpose::AdminTotpSecret, &admin.name, &bytes[..]);
        match app.store.set_admin_totp(&admin.name, &sealed).await {
            Ok(true) => false,
            Ok(false) => {
                return login_form(StatusCode::CONFLICT, Some("Another login enrolled meanwhile: log in again."));
            }
            Err(e) => return super::pages::internal(&e),
        }
    };
    if let Err(e) = app.store.clear_login_failures(&key, &address).await {
        return super::pages::internal(&e);
    }
    let action = if full { "console.login" } else { "console.login.enrolment" };
    if let Err(e) = record(app.store.as_ref(), now, &admin_actor(&admin.name), action, &address).await {
        return super::pages::internal(&e);
    }
    match session::start(&app, &admin.name, full, now).await {
        Ok((cookie, _)) => {
            let mut r = session::redirect(if full { "/users" } else { "/enrol" });
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", Some(0)));
            r
        }
        Err(e) => super::pages::internal(&e),
    }
}

/// The otpauth URI's QR code as inline SVG (the CSP allows no image source), without its XML
/// prolog.
fn qr_svg(uri: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::new(uri.as_bytes())?;
    let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).build();
    Ok(svg.find("<svg").map_or(svg.clone(), |at| svg[at..].to_owned()))
}

fn enrol_form(app: &App, session: &AdminSession, admin: &AdminRecord, error: Option<&str>) -> Response {
    let secret = match secret(app, admin) {
        Ok(Some(s)) => s,
        Ok(None) => return session::redirect("/"),
        Err(e) => return super::pages::internal(&e),
    };
    let uri = otpauth_uri(TOTP_ISSUER, &format!("console:{}", admin.name), &secret);
    let svg = match qr_svg(&uri) {
        Ok(svg) => Zeroizing::new(svg),
        Err(e) => return super::pages::internal(&e),
    };
    let body = html! {
        h1 { "Set up your authenticator" }
        p { "Every console login needs a code from an authenticator app. Scan this code with it, \
             or enter the address below by hand, then type the code the app shows." }
        @if let Some(e) = error { p.error { (e) } }
        div.qr { (PreEscaped(svg.as_str())) }
        p.secret { (uri.as_str()) }
        form method="post" action="/enrol" {
            input type="hidden" name="csrf" value=(session.csrf);
            label { "Code " input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" required; }
            button type="submit" { "Confirm" }
        }
    };
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    respond(status, page("Set up your authenticator", Some(session), body))
}

async fn admin_of(app: &App, session: &AdminSession) -> Result<AdminRecord, Response> {
    match app.store.admin(&session.admin).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(session::redirect("/")),
        Err(e) => Err(super::pages::internal(&e)),
    }
}

/// `GET /enrol`: the QR code of the secret made at this first login.
pub(super) async fn enrol_page(State(app): State<Arc<App>>, Extension(session): Extension<AdminSession>) -> Response {
    if session.full {
        return session::redirect("/users");
    }
    match admin_of(&app, &session).await {
        Ok(admin) => enrol_form(&app, &session, &admin, None),
        Err(r) => r,
    }
}

/// `POST /enrol`: the first code confirms the secret; the session is replaced by a full one
/// (a new id: the one that only reached this page is over).
pub(super) async fn enrol(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    Extension(session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    if session.full {
        return session::redirect("/users");
    }
    let now = app.now();
    let admin = match admin_of(&app, &session).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let address = address(peer.as_ref().map(|Extension(p)| p));
    let key = throttle_key(&admin.name);
    if let Err(e) = reserve_attempt(&app, &key, &address, now).await {
        return refused(&e);
    }
    match use_code(&app, &admin, fields.get("code"), now).await {
        Ok(true) => {}
        Ok(false) => return enrol_form(&app, &session, &admin, Some("Wrong code: try the one the app shows now.")),
        Err(r) => return r,
    }
    if let Err(e) = app.store.clear_login_failures(&key, &address).await {
        return super::pages::internal(&e);
    }
    if let Err(e) =
        record(app.store.as_ref(), now, &admin_actor(&admin.name), "console.totp.enrolled", &admin.name).await
    {
        return super::pages::internal(&e);
    }
    let _ = app.store.delete_admin_session(&session.id_hash).await;
    match session::start(&app, &admin.name, true, now).await {
        Ok((cookie, _)) => {
            let mut r = session::redirect("/users");
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(e) => super::pages::internal(&e),
    }
}

/// `POST /logout`: the session ends in the store, and the cookie is cleared.
pub(super) async fn logout(State(app): State<Arc<App>>, Extension(session): Extension<AdminSession>) -> Response {
    let now = app.now();
    if let Err(e) =
        record(app.store.as_ref(), now, &admin_actor(&session.admin), "console.logout", &session.admin).await
    {
        return super::pages::internal(&e);
    }
    if let Err(e) = app.store.delete_admin_session(&session.id_hash).await {
        return super::pages::internal(&e);
    }
    let mut r = session::redirect("/");
    r.headers_mut().append(header::SET_COOKIE, set_cookie(session::COOKIE, "", Some(0)));
    r
}

/// Step-up for a sensitive action: Ok when a code was entered in the session within the
/// last 5 minutes, or when the request carries a good `stepup_code` (then the window starts
/// again). Otherwise the answer is a page (403) that asks for a code and posts the same
/// form again to `action`, which then goes ahead.
pub(super) async fn step_up(
    app: &App,
    session: &mut AdminSession,
    fields: &Fields,
    peer: Option<&PeerAddr>,
    action: &str,
) -> Result<(), Response> {
    let now = app.now();
    if session::stepped_up(session, now) {
        return Ok(());
    }
    let code = fields.get("stepup_code");
    let mut error = None;
    if !code.is_empty() {
        let address = address(peer);
        let key = throttle_key(&session.admin);
        reserve_attempt(app, &key, &address, now).await.map_err(|e| refused(&e))?;
        let admin = admin_of(app, session).await?;
        if use_code(app, &admin, code, now).await? {
            app.store.clear_login_failures(&key, &address).await.map_err(|e| super::pages::internal(&e))?;
            session.stepup_at = Some(now);
            app.store.put_admin_session(session).await.map_err(|e| super::pages::internal(&e))?;
            return Ok(());
        }
        error = Some("Wrong or already used code.");
    }
    let body = html! {
        h1 { "Confirm with a code" }
        p { "This action needs a code from your authenticator app entered in the last five minutes." }
        @if let Some(e) = error { p.error { (e) } }
        form method="post" action=(action) {
            @for (k, v) in fields.iter().filter(|(k, _)| *k != "csrf" && *k != "stepup_code") {
                input type="hidden" name=(k) value=(v);
            }
            input type="hidden" name="csrf" value=(session.csrf);
            label { "Code " input name="stepup_code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" required; }
            button type="submit" { "Confirm and go ahead" }
        }
    };
    Err(respond(StatusCode::FORBIDDEN, page("Confirm with a code", Some(session), body)).into_response())
}
