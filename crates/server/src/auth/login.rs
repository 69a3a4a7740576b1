//! `POST /v1/auth/login`: the password, then the device (SPEC section 5, "Devices and
//! sessions"). A login without `device` makes a new device with a new device secret and a
//! new lease. A login naming its device with a valid proof continues it (same id, held ids,
//! `device_seq` and lease key, with a later expiry) unless the device was retired; then the
//! answer's `device_reason` says why, and [`continuity`] says what the login makes instead.
//!
//! Checks, in order: the body's fields (400); the proof's `ts` within +/-300 s (401
//! `stale_timestamp`, with `Date`); the throttle (429); the password (401 `invalid_grant`,
//! whatever the `totp`); for a user enrolled in multi-factor login, the TOTP code (401
//! `mfa_required` when missing, wrong or already used; counted as a failed attempt like a
//! wrong password); the proof: the device exists, is this user's, has a secret and the proof
//! verifies under it, else 401 `invalid_grant` with the same detail whichever it was. The code
//! is used up only by the login's own store transaction, so a login refused later (a bad
//! proof) leaves it usable.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::auth::{DeviceProof, DeviceReason, DeviceSecret, LoginRequest, TokenResponse};
use fieldvault_core::protocol::oidc::TotpCode;
use fieldvault_core::protocol::{ProblemCode, SessionSecret};
use fieldvault_core::{TOTP_SECRET_LEN, TotpSecret, totp_verify, unlock_delay};
use zeroize::Zeroizing;

use super::Password;
use super::routes::{PeerAddr, check_name, no_store};
use super::tokens::{Bundle, issue, new_lease, new_refresh_token, open_lease, random_secret, refresh_token_hash};
use crate::app::{App, JsonBody, random_id};
use crate::problem::{ApiError, with_date};
use crate::seal::Purpose;
use crate::storage::AuditEvent;
use crate::storage::{DeviceState, LeaseRecord, LoginDevice, LoginOutcome, NewLogin, TotpUse, UserRecord};

/// Longest password accepted (Argon2 takes any length; this bounds the work per request).
const MAX_PASSWORD: usize = 1024;

/// How often a login decides again when the device it named changed between reading and
/// writing (a wipe, a logout or another login of it at the same moment).
const ATTEMPTS: usize = 3;

/// What a login naming a device whose proof verified does with it, given the device's lease
/// `L` (if the server still holds one).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Continuity<L> {
    /// The device goes on: same id, held ids, `device_seq` and lease.
    Continue(Option<L>),
    /// A new device with a new device secret and a new lease; the answer says why.
    NewDevice(DeviceReason),
    /// A new device (fresh held ids, `device_seq` 0, new device secret) that takes over the
    /// retired device's lease, so the vault's data carries over (`device_reason: rollback`).
    TakeOver(L),
}

/// The decision for a device that is live (`retired` None) or retired, holding `lease` or
/// none. A device retired by a rollback whose lease has already passed to its successor is
/// answered as `retired`: a lease has one holder.
fn continuity<L>(retired: Option<DeviceReason>, lease: Option<L>) -> Continuity<L> {
    match (retired, lease) {
        (None, lease) => Continuity::Continue(lease),
        (Some(DeviceReason::Rollback), Some(lease)) => Continuity::TakeOver(lease),
        (Some(DeviceReason::Rollback), None) => Continuity::NewDevice(DeviceReason::Retired),
        (Some(reason), _) => Continuity::NewDevice(reason),
    }
}

/// Log in with a user name and password, naming the device if it logged in before; returns
/// the session's tokens, secret and the device's lease.
#[utoipa::path(post, path = "/v1/auth/login", request_body = LoginRequest, tag = "auth",
    responses((status = 200, body = TokenResponse), (status = 400),
        (status = 401, description = "invalid_grant, mfa_required (an enrolled user's TOTP code missing, wrong or used), or stale_timestamp (a device proof's ts; Date set)"),
        (status = 429)))]
pub async fn login(
    State(app): State<Arc<App>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Response {
    let now = app.now();
    token_answer(login_at(&app, peer, req, now).await, now)
}

/// A login's answer, whatever the credential: the token response (`no-store`), or the
/// refusal, with `Date` on a 401 so a client learns the server's clock.
pub(crate) fn token_answer(result: Result<TokenResponse, ApiError>, now: u64) -> Response {
    match result {
        Ok(body) => no_store(Json(body).into_response()),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => with_date(e.into_response(), now),
        Err(e) => e.into_response(),
    }
}

async fn login_at(app: &Arc<App>, peer: SocketAddr, req: LoginRequest, now: u64) -> Result<TokenResponse, ApiError> {
    check_name("user", &req.user)?;
    check_name("device_name", &req.device_name)?;
    if req.password.chars() > MAX_PASSWORD {
        return Err(ApiError::bad_request(format!("password must be at most {MAX_PASSWORD} characters")));
    }
    if let Some(proof) = &req.device {
        check_name("device.id", &proof.id)?;
        // Before the password: a client whose clock is off learns the time without using up
        // a login attempt.
        if !proof.is_fresh(now) {
            return Err(ApiError::stale_timestamp("device.ts"));
        }
    }
    let address = peer.ip().to_string();
    let refused = |e| refused_login(app, &req.user, &address, "password", e, now);
    let user = match check_password(app, &req.user, req.password, &address, now).await {
        Ok(user) => user,
        Err(e) => return Err(refused(e).await),
    };
    let totp = match check_totp(app, &user.name, req.totp.as_ref(), now).await {
        Ok(totp) => totp,
        Err(e) => return Err(refused(e).await),
    };
    // Only now is the attempt a success as far as guessing goes: the failure recorded before
    // the password check stays for a wrong password and a missing, wrong or used code.
    app.store.clear_login_failures(&user.name, &address).await?;
    let audit = login_event(&user.name, &address, "password", now);
    match open_session(app, &user, &req.device_name, req.device.as_ref(), totp, &audit, now).await {
        Ok((body, _)) => Ok(body),
        Err(e) if e.code() == ProblemCode::MfaRequired => {
            // Another login used this code first: a failed attempt like any wrong code.
            app.store.record_login_failure(&user.name, &address, now).await?;
            Err(refused(e).await)
        }
        Err(e) => Err(e),
    }
}

/// The audit record of a login of `user` from `address` by `method` (`password`, `oidc`):
/// [`open_session`] adds the device and appends it in the login's transaction.
pub(crate) fn login_event(user: &str, address: &str, method: &str, now: u64) -> AuditEvent {
    AuditEvent::new(now, format!("user:{user}"), "login", user).with("address", address).with("method", method)
}

/// Records a refused login in the audit log (`login.failed`, actor and target the name as
/// given, never the password or code) and hands back the refusal. Only refusals of an attempt
/// the throttle let through (401) are recorded: a throttled attempt (429) is not, so failures
/// cannot grow the log faster than the throttle lets guesses through. When the record cannot
/// be written the answer is that error (fail closed).
pub(crate) async fn refused_login(
    app: &App,
    name: &str,
    address: &str,
    method: &str,
    refusal: ApiError,
    now: u64,
) -> ApiError {
    if refusal.status() != StatusCode::UNAUTHORIZED {
        return refusal;
    }
    // A sign-in refused before the provider named anyone has no user to name.
    let actor = if name.is_empty() { "unknown".to_owned() } else { format!("user:{name}") };
    let event = AuditEvent::new(now, actor, "login.failed", name)
        .with("address", address)
        .with("method", method)
        .with("reason", refusal.code().as_str());
    match app.store.audit_append(&event).await {
        Ok(_) => refusal,
        Err(e) => e.into(),
    }
}

/// A new session for `user`, authenticated already (a password with its TOTP code, or a
/// provider's ID token), on the device `named` (continued, replaced or taken over as its
/// state says) or a new one; returns the answer and the session id. `totp` is used up in the
/// session's transaction; when another login used it first the answer is `mfa_required`.
pub(crate) async fn open_session(
    app: &Arc<App>,
    user: &UserRecord,
    device_name: &str,
    named: Option<&DeviceProof>,
    totp: Option<TotpUse>,
    audit: &AuditEvent,
    now: u64,
) -> Result<(TokenResponse, String), ApiError> {
    for _ in 0..ATTEMPTS {
        let device = plan_device(app, &user.name, named, now).await?;
        let session_id = random_id("s_");
        let key_id = random_id("k_");
        let secret = SessionSecret::from_bytes(random_secret());
        let refresh = new_refresh_token();
        let login = NewLogin {
            secret_sealed: app.sealer.seal(Purpose::SessionSecret, &session_id, secret.expose_secret()),
            session_id,
            key_id,
            user: user.name.clone(),
            refresh_hash: refresh_token_hash(&refresh),
            device_name: device_name.to_owned(),
            device: device.store,
            totp: totp.clone(),
            now,
        };
        let audit = audit.clone().with("device", login.device.id());
        match app.store.login(&login, &audit).await? {
            LoginOutcome::Recorded => {}
            LoginOutcome::DeviceChanged => continue,
            LoginOutcome::CodeUsed => return Err(mfa_required()),
        }
        let lease_key = open_lease(app, login.device.lease())?;
        let mut body = issue(
            app,
            &Bundle {
                user: &user.name,
                roles: &user.roles,
                session_id: &login.session_id,
                key_id: &login.key_id,
                device_id: login.device.id(),
                secret: &secret,
                refresh_token: &refresh,
                lease: login.device.lease(),
                lease_key: &lease_key,
            },
            now,
        );
        body.device_secret = device.secret.map(|s| s.to_base64());
        body.device_reason = device.reason;
        crate::devices::mark_sent(app, login.device.id(), &device.directives, now).await;
        body.directives = device.directives;
        tracing::info!(user = %user.name, device = %body.device_id, named = ?named.map(|d| &d.id),
            reason = ?body.device_reason, "login");
        return Ok((body, login.session_id));
    }
    Err(ApiError::internal("the device a login named kept changing under it"))
}

/// Throttling and the password (SPEC section 5, "Tokens"): the user, if the password is right.
async fn check_password(
    app: &App,
    name: &str,
    password: Password,
    address: &str,
    now: u64,
) -> Result<UserRecord, ApiError> {
    reserve_attempt(app, name, address, now).await?;
    let user = app.store.user(name).await?.filter(|u| !u.disabled);
    // Unknown and disabled users are checked against the dummy hash: same time, same answer.
    if !app.passwords.verify(password, user.as_ref().map(|u| u.password_hash.clone())).await {
        return Err(ApiError::invalid_grant("wrong user name or password"));
    }
    user.ok_or_else(|| ApiError::internal("verified a password without a user"))
}

/// Login throttling (docs/protocol.md section 7): counts this attempt as a failure of
/// (`name`, `address`) before anything is checked, or answers 429 while the last failures'
/// wait lasts. The caller clears the count once the attempt succeeds.
pub(crate) async fn reserve_attempt(app: &App, name: &str, address: &str, now: u64) -> Result<(), ApiError> {
    let throttled = |retry_after: u64| {
        ApiError::rate_limited("too many failed logins for this user from this address; wait and retry", retry_after)
    };
    let failures = app.store.login_failures(name, address).await?;
    let wait_until = failures.last_at.saturating_add(unlock_delay(failures.failures));
    if now < wait_until {
        return Err(throttled(wait_until - now));
    }
    // The attempt is counted as a failure before the password is checked, and cleared only if
    // it is right. The count is one atomic increment: of attempts made at once, only the one
    // whose increment directly follows the state checked above goes on; the others are told
    // to wait (and stay counted), so a burst cannot get more guesses than one at a time.
    let reserved = app.store.record_login_failure(name, address, now).await?;
    if reserved.failures != failures.failures.saturating_add(1) {
        return Err(throttled(unlock_delay(reserved.failures)));
    }
    Ok(())
}

fn mfa_required() -> ApiError {
    ApiError::mfa_required("this user logs in with a TOTP code: send the current one in `totp`")
}

/// For a user enrolled in multi-factor login, the code: the step it matched and the
/// enrolment it was checked against, for the login's transaction to use up (None: the user is
/// not enrolled, and `totp` is ignored). A missing, malformed, wrong or already used code is
/// `mfa_required`, one answer for all.
async fn check_totp(app: &App, user: &str, code: Option<&TotpCode>, now: u64) -> Result<Option<TotpUse>, ApiError> {
    let Some(enrolment) = app.store.totp(user).await? else { return Ok(None) };
    let Some(code) = code else { return Err(mfa_required()) };
    let bytes = app.sealer.open(Purpose::TotpSecret, user, &enrolment.secret_sealed).map_err(ApiError::internal)?;
    let bytes: [u8; TOTP_SECRET_LEN] =
        bytes.as_slice().try_into().map_err(|_| ApiError::internal("a stored TOTP secret is not 20 bytes"))?;
    let secret = TotpSecret::from_bytes(Zeroizing::new(bytes));
    match totp_verify(&secret, code.expose_secret(), now, enrolment.last_step) {
        Some(step) => Ok(Some(TotpUse { step, secret_sealed: enrolment.secret_sealed })),
        None => Err(mfa_required()),
    }
}

/// What the login does with its device, and what the answer says about it.
struct DevicePlan {
    store: LoginDevice,
    /// The device secret of a new device (sent once, in `device_secret`).
    secret: Option<DeviceSecret>,
    reason: Option<DeviceReason>,
    directives: Vec<String>,
}

/// A new device with a new secret; its lease is `lease`, or a new one.
fn new_device(app: &App, now: u64, take_over: Option<(String, LeaseRecord)>) -> (LoginDevice, DeviceSecret) {
    let id = random_id("d_");
    let secret = DeviceSecret::from_bytes(random_secret());
    let secret_sealed = app.sealer.seal(Purpose::DeviceSecret, &id, secret.expose_secret());
    let device = match take_over {
        Some((from, lease)) => LoginDevice::TakeOver { id, secret_sealed, from, lease },
        None => LoginDevice::New { id, secret_sealed, lease: new_lease(app, now).0 },
    };
    (device, secret)
}

async fn plan_device(app: &App, user: &str, named: Option<&DeviceProof>, now: u64) -> Result<DevicePlan, ApiError> {
    let Some(proof) = named else {
        let (store, secret) = new_device(app, now, None);
        return Ok(DevicePlan { store, secret: Some(secret), reason: None, directives: Vec::new() });
    };
    let state = app.store.device(&proof.id).await?.filter(|d| d.user == user);
    let state = match state {
        Some(state) if proves(app, &state, proof)? => state,
        _ => return Err(ApiError::invalid_grant("the device proof does not verify for this user")),
    };
    let expires_at = now + app.config.lease_ttl;
    let (store, secret, reason) = match continuity(state.retired, state.lease) {
        Continuity::Continue(lease) => {
            let expected_lease = lease.as_ref().map(|l| l.id.clone());
            let lease = match lease {
                Some(lease) => LeaseRecord { expires_at, ..lease },
                // Only a device made before leases moved to devices can be live without one.
                None => new_lease(app, now).0,
            };
            (LoginDevice::Continue { id: state.id, expected_lease, lease }, None, None)
        }
        Continuity::TakeOver(lease) => {
            let (store, secret) = new_device(app, now, Some((state.id, LeaseRecord { expires_at, ..lease })));
            (store, Some(secret), Some(DeviceReason::Rollback))
        }
        Continuity::NewDevice(reason) => {
            let (store, secret) = new_device(app, now, None);
            (store, Some(secret), Some(reason))
        }
    };
    Ok(DevicePlan { store, secret, reason, directives: state.directives })
}

/// Whether `proof` verifies under the device's secret (constant time); false for a device
/// that has none.
fn proves(app: &App, device: &DeviceState, proof: &DeviceProof) -> Result<bool, ApiError> {
    let Some(sealed) = &device.secret_sealed else { return Ok(false) };
    let bytes = app.sealer.open(Purpose::DeviceSecret, &device.id, sealed).map_err(ApiError::internal)?;
    let bytes: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| ApiError::internal("a stored device secret is not 32 bytes"))?;
    Ok(proof.verify(&DeviceSecret::from_bytes(Zeroizing::new(bytes))).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_devices_continue_and_only_a_rollback_with_its_lease_carries_it_over() {
        assert_eq!(continuity(None, Some("L")), Continuity::Continue(Some("L")));
        assert_eq!(continuity::<&str>(None, None), Continuity::Continue(None));
        assert_eq!(continuity(Some(DeviceReason::Rollback), Some("L")), Continuity::TakeOver("L"));
        assert_eq!(
            continuity::<&str>(Some(DeviceReason::Rollback), None),
            Continuity::NewDevice(DeviceReason::Retired)
        );
        for r in [DeviceReason::Wiped, DeviceReason::Retired] {
            assert_eq!(continuity::<&str>(Some(r), None), Continuity::NewDevice(r));
        }
    }
}
