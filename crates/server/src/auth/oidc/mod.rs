//! Sign-in through OpenID Connect providers (issue 18; docs/identity.md): the server is the
//! providers' registered client. `GET /v1/auth/oidc/config` tells a device where to send
//! the browser; `POST /v1/auth/oidc` takes the code the browser brought back, redeems it at
//! the provider with the device's PKCE verifier, checks the ID token, maps the identity to
//! a Fieldvault user, and answers exactly as a password login does.
//!
//! Checks of `POST /v1/auth/oidc`, in order: the body (400); a device proof's `ts` (401
//! `stale_timestamp`); the issuer is configured (400); throttling per (issuer, address)
//! (429); the code exchange and the ID token (401 `invalid_grant`, or 502
//! `provider_unavailable`); the ID token's nonce and `jti` not seen before (401
//! `invalid_grant`: a replay); the identity's user (401 `invalid_grant` when none is linked
//! and none may be created, or the user is disabled); then the device and the session as in
//! a password login.

pub mod http;
pub mod provider;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::digest;
use axum::Json;
use axum::extract::{Extension, State};
use axum::response::Response;
use fieldvault_core::protocol::auth::TokenResponse;
use fieldvault_core::protocol::oidc::{MAX_FIELD, OidcConfigResponse, OidcLoginRequest};
use fieldvault_core::protocol::{MAX_SKEW_SECS, TIMESTAMP_WINDOW_SECS};

use self::http::ProviderHttp;
use self::provider::{Provider, ProviderConfig, ProviderError, Recheck, SignedIn};
use super::login::{login_event, open_session, refused_login, reserve_attempt, token_answer};
use super::routes::{PeerAddr, check_name};
use crate::app::{App, JsonBody};
use crate::problem::ApiError;
use crate::seal::Purpose;
use crate::storage::AuditEvent;
use crate::storage::{OidcSession, StoreError, UserRecord};

/// The configured providers.
#[derive(Debug)]
pub struct Oidc {
    providers: Vec<Provider>,
}

impl Oidc {
    /// Providers from their configurations, sharing one HTTPS client that trusts the
    /// system's roots and `extra_ca`.
    ///
    /// # Errors
    /// A configuration that is not usable (a non-https issuer, an unreadable CA file, the
    /// same issuer twice).
    pub fn new(configs: Vec<ProviderConfig>, extra_ca: Option<&Path>) -> Result<Oidc, String> {
        let http = Arc::new(ProviderHttp::new(extra_ca)?);
        let mut providers: Vec<Provider> = Vec::new();
        for config in configs {
            if providers.iter().any(|p| p.issuer() == config.issuer) {
                return Err(format!("issuer {:?} is configured twice", config.issuer));
            }
            providers.push(Provider::new(config, http.clone())?);
        }
        Ok(Oidc { providers })
    }

    /// The provider of `issuer`, compared exactly.
    pub fn provider(&self, issuer: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.issuer() == issuer)
    }
}

/// The providers a device may sign in through (an empty list when none is configured).
#[utoipa::path(get, path = "/v1/auth/oidc/config", tag = "auth",
    responses((status = 200, body = OidcConfigResponse), (status = 502, description = "provider_unavailable")))]
pub async fn config(State(app): State<Arc<App>>) -> Result<Json<OidcConfigResponse>, ApiError> {
    let now = app.now();
    let Some(oidc) = app.oidc.as_ref() else { return Ok(Json(OidcConfigResponse { issuers: Vec::new() })) };
    let mut issuers = Vec::new();
    let mut failed = None;
    for provider in &oidc.providers {
        match provider.public_config(now).await {
            Ok(c) => issuers.push(c),
            Err(e) => {
                tracing::warn!(issuer = provider.issuer(), error = %e, "identity provider discovery failed");
                failed = Some(e);
            }
        }
    }
    // One provider down does not hide the others; all of them down is the provider's error.
    match failed {
        Some(e) if issuers.is_empty() => Err(provider_error(e)),
        _ => Ok(Json(OidcConfigResponse { issuers })),
    }
}

/// Sign in with an authorization code from a provider; answers as `POST /v1/auth/login`.
#[utoipa::path(post, path = "/v1/auth/oidc", request_body = OidcLoginRequest, tag = "auth",
    responses((status = 200, body = TokenResponse), (status = 400),
        (status = 401, description = "invalid_grant, or stale_timestamp (a device proof's ts; Date set)"),
        (status = 429), (status = 502, description = "provider_unavailable")))]
pub async fn login(
    State(app): State<Arc<App>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    JsonBody(req): JsonBody<OidcLoginRequest>,
) -> Response {
    let now = app.now();
    token_answer(login_at(&app, peer, req, now).await, now)
}

fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Unavailable(why) => ApiError::provider_unavailable(why),
        ProviderError::Refused(why) => ApiError::invalid_grant(why),
    }
}

fn check_field(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > MAX_FIELD || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} must be 1 to {MAX_FIELD} bytes, no control characters")));
    }
    Ok(())
}

/// The throttle's name for sign-ins through `issuer` (user names cannot hold a newline).
fn throttle_key(issuer: &str) -> String {
    format!("oidc\n{issuer}")
}

async fn login_at(
    app: &Arc<App>,
    peer: SocketAddr,
    req: OidcLoginRequest,
    now: u64,
) -> Result<TokenResponse, ApiError> {
    check_field("issuer", &req.issuer)?;
    check_field("code", req.code.expose_secret())?;
    check_field("code_verifier", req.code_verifier.expose_secret())?;
    check_field("redirect_uri", &req.redirect_uri)?;
    check_field("nonce", &req.nonce)?;
    check_name("device_name", &req.device_name)?;
    if let Some(proof) = &req.device {
        check_name("device.id", &proof.id)?;
        if !proof.is_fresh(now) {
            return Err(ApiError::stale_timestamp("device.ts"));
        }
    }
    let provider = app.oidc.as_ref().and_then(|o| o.provider(&req.issuer)).ok_or_else(|| {
        ApiError::bad_request("this server does not sign in through that issuer (see GET /v1/auth/oidc/config)")
    })?;
    let address = peer.ip().to_string();
    let key = throttle_key(provider.issuer());
    reserve_attempt(app, &key, &address, now).await?;
    let user = match signed_in_user(app, provider, &req, now).await {
        Ok(found) => found,
        Err(e) => return Err(refused_login(app, "", &address, &format!("oidc {}", provider.issuer()), e, now).await),
    };
    let (user, signed_in) = user;
    app.store.clear_login_failures(&key, &address).await?;
    let audit = login_event(&user.name, &address, "oidc", now).with("issuer", provider.issuer());
    let (body, session_id) = open_session(app, &user, &req.device_name, req.device.as_ref(), None, &audit, now).await?;
    let sealed =
        signed_in.refresh_token.as_ref().map(|t| app.sealer.seal(Purpose::ProviderRefresh, &session_id, t.as_bytes()));
    if let Err(e) = app.store.set_oidc_session(&session_id, provider.issuer(), sealed.as_deref()).await {
        // A session the recheck cannot find must not live on.
        app.store.revoke_session(&session_id, now).await?;
        return Err(e.into());
    }
    tracing::info!(user = %user.name, issuer = provider.issuer(), "signed in through the identity provider");
    Ok(body)
}

/// The provider's answer checked (redeemed, not a replay) and the user it signs in as.
async fn signed_in_user(
    app: &Arc<App>,
    provider: &Provider,
    req: &OidcLoginRequest,
    now: u64,
) -> Result<(UserRecord, SignedIn), ApiError> {
    let signed_in = provider
        .redeem(req.code.expose_secret(), req.code_verifier.expose_secret(), &req.redirect_uri, &req.nonce, now)
        .await
        .map_err(|e| {
            tracing::info!(issuer = provider.issuer(), error = %e, "sign-in through the identity provider refused");
            provider_error(e)
        })?;
    consume_once(app, provider.issuer(), &req.nonce, &signed_in, now).await?;
    let user = user_for(app, provider, &signed_in, now).await?;
    Ok((user, signed_in))
}

/// The first 16 bytes of SHA-256 over a label and a value: the nonce store's key for an ID
/// token's nonce or `jti`.
fn replay_key(label: &str, value: &str) -> [u8; 16] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(label.as_bytes());
    ctx.update(b"\n");
    ctx.update(value.as_bytes());
    let d = ctx.finish();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

/// Records the ID token's nonce (and `jti`) in the store every instance shares, until the
/// token could no longer pass: a second sign-in with either is a replay.
async fn consume_once(app: &App, issuer: &str, nonce: &str, signed_in: &SignedIn, now: u64) -> Result<(), ApiError> {
    let keep_until = signed_in.expires_at.max(now + TIMESTAMP_WINDOW_SECS) + MAX_SKEW_SECS;
    let scope = format!("oidc\n{issuer}");
    let mut keys = vec![replay_key("nonce", nonce)];
    if let Some(jti) = &signed_in.jti {
        keys.push(replay_key("jti", jti));
    }
    for key in keys {
        if !app.store.insert_nonce(&scope, &key, keep_until).await? {
            return Err(ApiError::invalid_grant("this sign-in was already used (a replayed ID token)"));
        }
    }
    Ok(())
}

/// The Fieldvault user of a verified identity: the linked one, or (when the provider is so
/// configured) one created now. Roles follow the roles claim when one is configured.
async fn user_for(app: &App, provider: &Provider, signed_in: &SignedIn, now: u64) -> Result<UserRecord, ApiError> {
    let issuer = provider.issuer();
    let linked = app.store.oidc_user(issuer, &signed_in.subject).await?;
    let name = match linked {
        Some(name) => name,
        None if provider.config().create_users => {
            let name = &signed_in.username;
            check_name("the new user's name", name).map_err(|_| {
                ApiError::invalid_grant("the identity's user name is not usable as a Fieldvault user name")
            })?;
            let user = UserRecord {
                name: name.clone(),
                // No password: such a user signs in through the provider only (an empty hash
                // never verifies, and is checked against the dummy hash like an unknown user).
                password_hash: String::new(),
                roles: signed_in.roles.clone().unwrap_or_default(),
                disabled: false,
                attributes: serde_json::Map::new(),
            };
            let audit = AuditEvent::new(now, "system", "user.add", name.as_str())
                .with("roles", user.roles.clone())
                .with("issuer", issuer)
                .with("subject", signed_in.subject.as_str())
                .with("reason", "first sign-in through the identity provider");
            match app.store.add_oidc_user(&user, issuer, &signed_in.subject, now, &audit).await {
                Ok(()) => {
                    tracing::info!(user = %name, issuer, "user created at first sign-in");
                    return Ok(user);
                }
                Err(StoreError::UserExists(_)) => {
                    return Err(ApiError::invalid_grant(
                        "a user of that name exists and is not linked to this identity; an operator can link them \
                         with `fieldvault-server user link`",
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => return Err(ApiError::invalid_grant("no Fieldvault account is linked to this identity")),
    };
    let user = app.store.user(&name).await?.filter(|u| !u.disabled);
    let Some(mut user) = user else {
        return Err(ApiError::invalid_grant("the Fieldvault account of this identity is disabled"));
    };
    if let Some(roles) = &signed_in.roles
        && *roles != user.roles
    {
        let audit = AuditEvent::new(now, "system", "user.access", user.name.as_str())
            .with("roles", roles.clone())
            .with("attributes", serde_json::Value::Object(user.attributes.clone()))
            .with("issuer", issuer)
            .with("reason", "the identity provider's roles claim");
        app.store.set_user_access(&user.name, roles, &user.attributes, &audit).await?;
        user.roles = roles.clone();
    }
    Ok(user)
}

/// The `--oidc-recheck` step of a refresh: for a session signed in through a provider that
/// is configured to re-check, refresh at the provider first. Ok when the refresh may go on;
/// the session is revoked when the provider refuses. Nothing is spent when the provider
/// cannot be reached (502: the device retries later).
pub(crate) async fn recheck(app: &App, session_id: &str, now: u64) -> Result<(), ApiError> {
    let Some(oidc) = app.oidc.as_ref() else { return Ok(()) };
    let Some(OidcSession { issuer, refresh_sealed }) = app.store.oidc_session(session_id).await? else {
        return Ok(());
    };
    let Some(provider) = oidc.provider(&issuer).filter(|p| p.config().recheck) else { return Ok(()) };
    let Some(sealed) = refresh_sealed else {
        app.store.revoke_session(session_id, now).await?;
        return Err(ApiError::invalid_grant(
            "the identity provider gave no refresh token to re-check this user with; sign in again",
        ));
    };
    let token = app.sealer.open(Purpose::ProviderRefresh, session_id, &sealed).map_err(ApiError::internal)?;
    let token = zeroize::Zeroizing::new(String::from_utf8(token.to_vec()).map_err(ApiError::internal)?);
    match provider.recheck(&token, now).await.map_err(provider_error)? {
        Recheck::Valid(rotated) => {
            if let Some(new) = rotated {
                let sealed = app.sealer.seal(Purpose::ProviderRefresh, session_id, new.as_bytes());
                app.store.set_oidc_session(session_id, &issuer, Some(&sealed)).await?;
            }
            Ok(())
        }
        Recheck::Refused(why) => {
            tracing::info!(session = session_id, issuer, why, "the identity provider refused the re-check");
            app.store.revoke_session(session_id, now).await?;
            Err(ApiError::invalid_grant("the identity provider no longer accepts this user; the session is revoked"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keys_differ_by_label_and_value() {
        assert_ne!(replay_key("nonce", "a"), replay_key("jti", "a"));
        assert_ne!(replay_key("nonce", "a"), replay_key("nonce", "b"));
        assert_eq!(replay_key("nonce", "a"), replay_key("nonce", "a"));
    }
}
