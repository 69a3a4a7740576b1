//! Logging an account in and out. A login continues the account's device when the account
//! logged in to this server as this user before (its device secret, kept in the key file
//! under the master key, proves it); the device secret, the lease key L and the data keys
//! re-wrapped under L are recorded in one atomic write of the key file, and only then the
//! session in the account's database.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fieldvault_core::AccountName;
use fieldvault_core::protocol::auth::{DeviceProof, DeviceSecret, LoginRequest, Password, TokenResponse};
use fieldvault_core::protocol::oidc::TotpCode;
use fieldvault_core::protocol::{DirectiveKind, TokenVerifier};
use serde_json::Value;
use zeroize::Zeroizing;

use super::channel::*;
use super::client::check_directives;
use super::directives;
use super::outbox::{self, db_err};
use super::state::{self, *};
use crate::transport::{Auth, Method, Request, Response, Transport};
use crate::{Error, Pins, Unlocked};

/// What `login` needs. The password is a secret: it is sent once and dropped.
pub struct LoginOptions<'a> {
    /// `https://HOST[:PORT]`.
    pub server: &'a str,
    /// The server's pins (`sha256/BASE64`), current and next.
    pub pins: &'a [String],
    /// The user name.
    pub user: &'a str,
    /// The password.
    pub password: Zeroizing<String>,
    /// A label for this device.
    pub device_name: &'a str,
    /// The current TOTP code, for a user enrolled in multi-factor login (without it such a
    /// login fails with [`Error::MfaRequired`]; log in again with the code).
    pub totp: Option<TotpCode>,
}

/// What a login did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSummary {
    /// The user.
    pub user: String,
    /// The device id (the same as before when the login continued the device).
    pub device_id: String,
    /// Whether this login continued a device this account had before.
    pub continued: bool,
    /// Why the server did not continue the device named (`wiped`, `retired`, `rollback`).
    pub device_reason: Option<String>,
    /// When the lease ends, Unix seconds.
    pub lease_expires_at: u64,
    /// Whether the server had ordered this device wiped: the account's keys and data were
    /// destroyed here before the login went on.
    pub wiped: bool,
}

/// What an account knew of its last login, read before a new one.
pub(super) struct PriorLogin {
    known_server: Option<String>,
    known_user: Option<String>,
    /// Whether the account holds documents or queued changes.
    holds_data: bool,
    offset: Option<i64>,
    login_at: u64,
    seen: HashSet<String>,
    /// The old session, to acknowledge directives with.
    channel: Option<Channel>,
}

impl PriorLogin {
    /// Whether the account's last login was to `server` as `user` (any user when `None`: an
    /// OpenID Connect sign-in, whose user the server names only in its answer).
    fn same(&self, server: &str, user: Option<&str>) -> bool {
        self.known_server.as_deref() == Some(server) && user.is_none_or(|u| self.known_user.as_deref() == Some(u))
    }

    /// Refuses a login to another server or as another user into an account that holds data.
    pub(super) fn refuse_other(&self, account: &AccountName, server: &str, user: Option<&str>) -> Result<(), Error> {
        let logged_in_before = self.known_server.is_some() || self.known_user.is_some();
        if logged_in_before && !self.same(server, user) && self.holds_data {
            return Err(Error::Refused {
                status: 0,
                code: "account_in_use".into(),
                detail: format!(
                    "account {account} holds data of another user or server; use another account (--account)"
                ),
            });
        }
        Ok(())
    }
}

/// Where a login goes and what it is for, whatever the credential.
pub(super) struct LoginTarget<'a> {
    /// `https://HOST[:PORT]`, as given.
    pub(super) server: &'a str,
    /// The server's pins, as given (stored for later sessions).
    pub(super) pins: &'a [String],
    /// A label for this device.
    pub(super) device_name: &'a str,
    /// The user, when the credential names one (a password login); `None` when only the
    /// server's answer does (an OpenID Connect sign-in: the access token's `sub`).
    pub(super) user: Option<&'a str>,
}

/// What a login knows before it sends its credential: the account's last login, and the
/// device proof to send when the account logged in to this server (as this user) before.
pub(super) struct BeforeLogin {
    prior: Option<PriorLogin>,
    device: Option<DeviceProof>,
}

impl BeforeLogin {
    /// The device proof to put in the login body.
    pub(super) fn device(&self) -> Option<DeviceProof> {
        self.device.clone()
    }

    /// The device's clock corrected by what the account learned of the server's, Unix
    /// seconds: the `X-Timestamp` of the login request.
    pub(super) fn now(&self) -> u64 {
        corrected_secs(self.prior.as_ref().and_then(|p| p.offset))
    }
}

impl Unlocked {
    /// Logs `account` in to a sync server: its device continues when the account has logged
    /// in to this server as this user before (the device secret proves it), else the server
    /// makes a new device. Credentials are stored in the account's encrypted database; queued
    /// changes are re-dated with the server's clock.
    ///
    /// # Errors
    /// [`Error::InvalidPin`]; transport errors (offline, pin mismatch); [`Error::Refused`] /
    /// [`Error::ReauthRequired`] when the server refuses (a wrong password is
    /// `invalid_grant`); [`Error::MfaRequired`] when the user needs a TOTP code and `totp` was
    /// missing, wrong or already used (nothing was changed: log in again with the current code); a login as another user or to another server into an account that
    /// holds data is refused with [`Error::Refused`] and changes nothing.
    pub fn login(&mut self, account: &AccountName, opts: LoginOptions<'_>) -> Result<LoginSummary, Error> {
        let pins = Pins::parse(opts.pins)?;
        let transport = Transport::new(opts.server, pins)?;
        let target =
            LoginTarget { server: opts.server, pins: opts.pins, device_name: opts.device_name, user: Some(opts.user) };
        let before = self.before_login(account, &target)?;
        let body = LoginRequest {
            user: opts.user.to_owned(),
            password: Password::new(opts.password),
            device_name: opts.device_name.to_owned(),
            device: before.device(),
            totp: opts.totp,
        };
        let bytes = Zeroizing::new(serde_json::to_vec(&body).map_err(|e| Error::MalformedAnswer(e.to_string()))?);
        let resp = transport.send(
            &Request { method: Method::Post, path_and_query: "/v1/auth/login", body: &bytes, auth: Auth::None },
            before.now(),
        )?;
        self.after_login(account, &transport, &target, before, resp)
    }

    /// The part of a login before its credential is sent: owed logouts told, the account's
    /// last login read (unreadable while its lease has ended: then the device secret alone
    /// names the device, and the server checks the rest), a login to another server or as
    /// another user into an account that holds data refused, and the device proof made when
    /// the account logged in to this server (as this user) before.
    pub(super) fn before_login(
        &mut self,
        account: &AccountName,
        target: &LoginTarget<'_>,
    ) -> Result<BeforeLogin, Error> {
        self.finish_logouts_quietly();
        let prior = if self.lease_ended(account) { None } else { Some(self.prior_login(account)?) };
        if let Some(p) = &prior {
            p.refuse_other(account, target.server, target.user)?;
        }
        let offset = prior.as_ref().and_then(|p| p.offset);
        let device = match prior.as_ref().is_none_or(|p| p.same(target.server, target.user)) {
            true => self
                .device_credential(account)?
                .map(|(id, secret)| DeviceProof::new(&DeviceSecret::from_bytes(secret), &id, corrected_secs(offset))),
            false => None,
        };
        Ok(BeforeLogin { prior, device })
    }

    /// The part of a login after the server answered, whatever the credential was: the
    /// answer checked, the user it names refused if the account holds another user's data,
    /// the directives of the device it continues carried out, then the device secret, the
    /// lease and the session recorded.
    pub(super) fn after_login(
        &mut self,
        account: &AccountName,
        transport: &Transport,
        target: &LoginTarget<'_>,
        before: BeforeLogin,
        resp: Response,
    ) -> Result<LoginSummary, Error> {
        let BeforeLogin { prior, device } = before;
        let continuing = device.map(|d| d.id);
        // The login answer came over pinned TLS: its Date sets the clock offset.
        let offset = resp.date.map(|d| (d as i64) * 1000 - now_ms()).or(prior.as_ref().and_then(|p| p.offset));
        if resp.status != 200 {
            return Err(refused(&resp));
        }
        let tokens: TokenResponse = serde_json::from_slice(&resp.body)
            .map_err(|_| Error::MalformedAnswer("the login answer is not a token bundle".into()))?;
        let grant = lease_grant(&tokens)?;
        let new_secret = match &tokens.device_secret {
            Some(s) => Some(
                DeviceSecret::from_base64(s)
                    .map_err(|_| Error::MalformedAnswer("the device secret is not 32 bytes of base64".into()))?,
            ),
            None => None,
        };
        // The token keys: the access token and directives are checked against them now, and
        // `whoami` later.
        let jwks = transport.send(
            &Request { method: Method::Get, path_and_query: "/v1/auth/jwks", body: &[], auth: Auth::None },
            corrected_secs(offset),
        )?;
        let jwks_text = match jwks.status {
            200 => String::from_utf8(jwks.body.to_vec())
                .map_err(|_| Error::MalformedAnswer("the JWKS is not UTF-8".into()))?,
            _ => return Err(refused(&jwks)),
        };
        let jwks: Value = serde_json::from_str(&jwks_text).unwrap_or(Value::Null);
        let user = match target.user {
            Some(u) => u.to_owned(),
            None => {
                // Only the answer names the user: nothing is stored for another user's login
                // into an account that holds data.
                let sub = access_subject(&jwks, &tokens.access_token, corrected_secs(offset))?;
                if let Some(p) = &prior {
                    p.refuse_other(account, target.server, Some(&sub))?;
                }
                sub
            }
        };
        let continued = continuing.as_deref() == Some(tokens.device_id.as_str());
        // Directives for the device this login named (a wiped device's wipe): carried out
        // before anything else, and acknowledged with that device's old session secret.
        let mut wiped = false;
        if let Some(old) = &continuing
            && !tokens.directives.is_empty()
        {
            let (login_at, seen) = prior.as_ref().map_or((0, HashSet::new()), |p| (p.login_at, p.seen.clone()));
            let acts = check_directives(&tokens.directives, &jwks, &user, old, login_at, &seen);
            let jtis: Vec<String> = acts.iter().map(|c| c.jti.clone()).collect();
            if directives::strongest(&acts) == Some(DirectiveKind::Wipe) {
                tracing::warn!(account = %account, "remote wipe at login: destroying the account's keys and data");
                self.wipe_account(account)?;
                self.add_account(account)?;
                wiped = true;
            }
            if !jtis.is_empty()
                && let Some(mut ch) = prior.and_then(|p| p.channel)
                && let Err(e) = acknowledge(&mut ch, &jtis)
            {
                tracing::warn!(error = %e, "the directives could not be acknowledged");
            }
        }
        // The device secret and L, and the data keys re-wrapped under L, in one atomic write
        // of the key file: a crash leaves the old hierarchy or the new one.
        let device_secret = new_secret.as_ref().map(|s| (tokens.device_id.as_str(), s.expose_secret()));
        self.install_grant(account, device_secret, &grant)?;
        let docs = self.documents(account)?;
        let db = docs.db;
        let (conn, path) = (&mut db.conn, db.path.clone());
        let tx = conn.transaction().map_err(db_err(&path))?;
        let put = |name: &str, value: &str| state::set(&tx, name, value).map_err(db_err(&path));
        put(SERVER, target.server)?;
        put(PINS, &serde_json::to_string(target.pins).unwrap_or_default())?;
        put(USER, &user)?;
        put(DEVICE_NAME, target.device_name)?;
        put(DEVICE_ID, &tokens.device_id)?;
        put(LOGIN_AT, &corrected_secs(offset).to_string())?;
        put(JWKS, &jwks_text)?;
        store_tokens(&tx, &path, &tokens, corrected_secs(offset))?;
        if let Some(o) = offset {
            put(state::CLOCK_OFFSET_MS, &o.to_string())?;
            outbox::restamp(&tx, now_ms(), o).map_err(db_err(&path))?;
        }
        state::clear(&tx, state::ROLLBACK).map_err(db_err(&path))?;
        if !continued {
            // A new device id: its held ids and sync counter start afresh. Pull from the start
            // and then drop what the server no longer gives this user (reconcile).
            state::clear(&tx, state::CURSOR).map_err(db_err(&path))?;
            put(state::DEVICE_SEQ, "0")?;
            tx.execute("DELETE FROM sync_seen", []).map_err(db_err(&path))?;
            put(state::RECONCILE, "1")?;
        }
        tx.commit().map_err(db_err(&path))?;
        db.clock_offset_ms = offset;
        Ok(LoginSummary {
            user,
            device_id: tokens.device_id.clone(),
            continued,
            device_reason: tokens.device_reason.map(|r| r.as_str().to_owned()),
            lease_expires_at: tokens.lease.expires_at,
            wiped,
        })
    }

    /// Reads what the account knew of its last login.
    pub(super) fn prior_login(&mut self, account: &AccountName) -> Result<PriorLogin, Error> {
        let docs = self.documents(account)?;
        let (conn, path) = (&docs.db.conn, docs.db.path.clone());
        let holds_data: bool = conn
            .query_row("SELECT EXISTS (SELECT 1 FROM main.documents) OR EXISTS (SELECT 1 FROM outbox)", [], |r| {
                r.get(0)
            })
            .map_err(db_err(&path))?;
        Ok(PriorLogin {
            known_server: stored(conn, &path, SERVER)?,
            known_user: stored(conn, &path, USER)?,
            holds_data,
            offset: state::clock_offset_ms(conn).map_err(db_err(&path))?,
            login_at: state::get_i64(conn, LOGIN_AT).map_err(db_err(&path))?.unwrap_or(0).max(0) as u64,
            seen: stored(conn, &path, SEEN_DIRECTIVES)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default(),
            channel: open_channel(conn, &path, account).ok(),
        })
    }
}

/// The user an access token names (`sub`), once it verified against one of the server's
/// token keys (`jwks`) at `now`.
fn access_subject(jwks: &Value, token: &str, now: u64) -> Result<String, Error> {
    let keys = jwks.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    keys.iter()
        .find_map(|k| {
            let public = URL_SAFE_NO_PAD.decode(k.get("x")?.as_str()?).ok()?;
            TokenVerifier::from_public_key(&public).access(token, now).ok()
        })
        .map(|c| c.sub)
        .ok_or_else(|| Error::MalformedAnswer("the access token does not verify with the server's token keys".into()))
}
