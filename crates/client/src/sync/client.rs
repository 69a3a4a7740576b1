//! The thin loop around the engine: login, and a sync (push, then pull) over the pinned,
//! signed channel. Every answer to a signed request is verified by the transport before
//! anything here reads it; the clock offset is learned only from the login answer (pinned
//! TLS) and from verified answers.
//!
//! The account's credentials (server, pins, user, device id and secret, session key id and
//! secret, tokens, lease, the server's JWKS) live in the `sync_state` table of the account's
//! SQLCipher database, so they are encrypted at rest under the account's database key, which
//! the master key wraps (docs/sync.md says what the lease layer will change).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fieldvault_core::AccountName;
use fieldvault_core::protocol::SessionSecret;
use fieldvault_core::protocol::auth::{
    DeviceProof, DeviceSecret, LoginRequest, Password, RefreshRequest, TokenResponse,
};
use fieldvault_core::protocol::sync::{PullResponse, PushResponse};
use fieldvault_core::protocol::{TokenVerifier, sync::DEFAULT_PULL_LIMIT};
use rusqlite::Connection;
use serde_json::Value;
use zeroize::Zeroizing;

use std::collections::HashSet;

use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::protocol::auth::AckRequest;

use super::directives;
use super::engine::{self, ConflictPolicy, InFlight};
use super::outbox::{self, OutboxEntry, db_err};
use super::state;
use crate::changes::{Listeners, SubscriptionId, Watch};
use crate::keys::LeaseGrant;
use crate::transport::{Auth, Method, Request, Response, Transport};
use crate::{Error, Pins, Unlocked};

const SERVER: &str = "server";
const PINS: &str = "pins";
const USER: &str = "user";
const DEVICE_ID: &str = "device_id";
const DEVICE_NAME: &str = "device_name";
const KEY_ID: &str = "key_id";
const SESSION_SECRET: &str = "session_secret";
const ACCESS_TOKEN: &str = "access_token";
const ACCESS_EXP: &str = "access_exp";
const ACCESS_TTL: &str = "access_ttl";
const REFRESH_TOKEN: &str = "refresh_token";
const REFRESH_ATTEMPT: &str = "refresh_attempt";
const OFFLINE_TOKEN: &str = "offline_token";
const JWKS: &str = "jwks";
const LOGIN_AT: &str = "login_at";
const ONLINE: &str = "online";
const SEEN_DIRECTIVES: &str = "seen_directives";

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

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Ops the server now holds.
    pub pushed: usize,
    /// Conflicts (kept in the conflicts table).
    pub conflicts: usize,
    /// Ops refused for good (rolled back, kept in the rejected list).
    pub rejected: usize,
    /// Ops held back (`idempotency_mismatch`).
    pub held: usize,
    /// Documents written or removed by the pull.
    pub pulled: usize,
    /// Pulled changes not applied because a local change is pending.
    pub skipped: usize,
}

/// Where an account syncs: its server and the pins it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTarget {
    /// `https://HOST[:PORT]`.
    pub server: String,
    /// `sha256/BASE64` pins.
    pub pins: Vec<String>,
}

/// A cheap check that the server answers over pinned TLS (`GET /healthz`, unsigned, a few
/// bytes): how an app or `sync --watch` learns that the network is back without running a
/// whole sync. `Ok(())` when it answered 200.
///
/// # Errors
/// The transport's errors (unreachable, timed out, pin mismatch, ...), or
/// [`Error::Refused`] for any other status.
pub fn probe(target: &SyncTarget) -> Result<(), Error> {
    let transport = Transport::new(&target.server, Pins::parse(&target.pins)?)?
        .with_timeouts(std::time::Duration::from_secs(5), std::time::Duration::from_secs(10));
    let resp =
        transport.send(&Request { method: Method::Get, path_and_query: "/healthz", body: &[], auth: Auth::None }, 0)?;
    if resp.status == 200 { Ok(()) } else { Err(refused(&resp)) }
}

/// An account's sync state, as `status --sync` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// The server, once logged in.
    pub server: Option<String>,
    /// The user.
    pub user: Option<String>,
    /// The device id.
    pub device_id: Option<String>,
    /// Whether the last sync reached the server (None: never tried).
    pub online: Option<bool>,
    /// Changes waiting in the outbox.
    pub outbox: usize,
    /// Kept conflicts.
    pub conflicts: usize,
    /// When the last sync completed, Unix milliseconds.
    pub last_sync_ms: Option<i64>,
    /// When the access token expires, Unix seconds.
    pub access_expires_at: Option<u64>,
    /// When the lease expires, Unix seconds.
    pub lease_expires_at: Option<u64>,
}

/// Who the cached offline token says the account's user is (verified, no network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user: String,
    /// Their roles.
    pub roles: Vec<String>,
    /// The device id.
    pub device_id: String,
    /// When the offline token expires, Unix seconds.
    pub expires_at: u64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The device's clock corrected by the learned offset, Unix seconds.
fn corrected_secs(offset_ms: Option<i64>) -> u64 {
    (now_ms().saturating_add(offset_ms.unwrap_or(0)).max(0) / 1000) as u64
}

fn get(conn: &Connection, path: &std::path::Path, name: &str) -> Result<Option<String>, Error> {
    state::get(conn, name).map_err(db_err(path))
}

fn secret(conn: &Connection, path: &std::path::Path, name: &str) -> Result<Zeroizing<String>, Error> {
    get(conn, path, name)?.map(Zeroizing::new).ok_or_else(|| Error::NotLoggedIn(String::new()))
}

/// The problem+json answer of a refusal, as an error.
fn refused(resp: &Response) -> Error {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").chars().take(300).collect::<String>();
    let code = text("code");
    match code.as_str() {
        "invalid_grant" => Error::ReauthRequired(text("detail")),
        "rollback_detected" => Error::RollbackDetected,
        _ => Error::Refused {
            status: resp.status,
            code: if code.is_empty() { "unknown".into() } else { code },
            detail: text("detail"),
        },
    }
}

/// One account's signed session, read from its sync state.
struct Channel {
    transport: Transport,
    key_id: String,
    secret: SessionSecret,
    offset_ms: Option<i64>,
    /// Directives that rode in verified answers, in arrival order, each once.
    directives: Vec<String>,
    /// The lease a refresh granted (its expiry moved), to record once the sync is done.
    granted: Option<LeaseGrant>,
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
    /// `invalid_grant`); a login as another user or to another server into an account that
    /// holds data is refused with [`Error::Refused`] and changes nothing.
    pub fn login(&mut self, account: &AccountName, opts: LoginOptions<'_>) -> Result<LoginSummary, Error> {
        let pins = Pins::parse(opts.pins)?;
        let transport = Transport::new(opts.server, pins)?;
        // What the account knew of its last login; unreadable while its lease has ended
        // (then the device secret alone names the device, and the server checks the rest).
        let prior = if self.lease_ended(account) { None } else { Some(self.prior_login(account, &opts)?) };
        let offset = prior.as_ref().and_then(|p| p.offset);
        let device = match prior.as_ref().is_none_or(|p| p.same) {
            true => self
                .device_credential(account)?
                .map(|(id, secret)| DeviceProof::new(&DeviceSecret::from_bytes(secret), &id, corrected_secs(offset))),
            false => None,
        };
        let continuing = device.as_ref().map(|d| d.id.clone());
        let body = LoginRequest {
            user: opts.user.to_owned(),
            password: Password::new(opts.password),
            device_name: opts.device_name.to_owned(),
            device,
        };
        let bytes = Zeroizing::new(serde_json::to_vec(&body).map_err(|e| Error::MalformedAnswer(e.to_string()))?);
        let resp = transport.send(
            &Request { method: Method::Post, path_and_query: "/v1/auth/login", body: &bytes, auth: Auth::None },
            corrected_secs(offset),
        )?;
        // The login answer came over pinned TLS: its Date sets the clock offset.
        let offset = resp.date.map(|d| (d as i64) * 1000 - now_ms()).or(offset);
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
        // The token keys: directives are checked against them now, and `whoami` later.
        let jwks = transport.send(
            &Request { method: Method::Get, path_and_query: "/v1/auth/jwks", body: &[], auth: Auth::None },
            corrected_secs(offset),
        )?;
        let jwks_text = match jwks.status {
            200 => String::from_utf8(jwks.body).map_err(|_| Error::MalformedAnswer("the JWKS is not UTF-8".into()))?,
            _ => return Err(refused(&jwks)),
        };
        let continued = continuing.as_deref() == Some(tokens.device_id.as_str());
        // Directives for the device this login named (a wiped device's wipe): carried out
        // before anything else, and acknowledged with that device's old session secret.
        let mut wiped = false;
        if let Some(old) = &continuing
            && !tokens.directives.is_empty()
        {
            let jwks: Value = serde_json::from_str(&jwks_text).unwrap_or(Value::Null);
            let (login_at, seen) = prior.as_ref().map_or((0, HashSet::new()), |p| (p.login_at, p.seen.clone()));
            let acts = check_directives(&tokens.directives, &jwks, opts.user, old, login_at, &seen);
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
        put(SERVER, opts.server)?;
        put(PINS, &serde_json::to_string(opts.pins).unwrap_or_default())?;
        put(USER, opts.user)?;
        put(DEVICE_NAME, opts.device_name)?;
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
            user: opts.user.to_owned(),
            device_id: tokens.device_id.clone(),
            continued,
            device_reason: tokens.device_reason.map(|r| r.as_str().to_owned()),
            lease_expires_at: tokens.lease.expires_at,
            wiped,
        })
    }

    /// Pushes the account's outbox, then pulls from its cursor, applying each page in one
    /// transaction. Conflicts follow `policy` per collection.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`]; transport errors (offline, pin mismatch, an answer that does
    /// not verify: nothing is changed); [`Error::Refused`] (`rollback_detected`, ...);
    /// [`Error::ReauthRequired`] when the session cannot be refreshed.
    pub fn sync(
        &mut self,
        account: &AccountName,
        policy: &dyn Fn(&str) -> ConflictPolicy,
    ) -> Result<SyncReport, Error> {
        self.sync_with_progress(account, policy, &mut |_, _| {})
    }

    /// [`Unlocked::sync`], telling `progress` after each push batch and each pull page what
    /// was done so far and whether more follows.
    ///
    /// # Errors
    /// As [`Unlocked::sync`].
    pub fn sync_with_progress(
        &mut self,
        account: &AccountName,
        policy: &dyn Fn(&str) -> ConflictPolicy,
        progress: &mut dyn FnMut(&SyncReport, bool),
    ) -> Result<SyncReport, Error> {
        let (result, mut channel) = {
            let docs = self.documents(account)?;
            let db = docs.db;
            let path = db.path.clone();
            let mut channel = open_channel(&db.conn, &path, account)?;
            let result = match state::get(&db.conn, state::ROLLBACK).map_err(db_err(&path))? {
                Some(_) => Err(Error::RollbackDetected),
                None => run_sync(&mut db.conn, &path, &mut channel, policy, &mut db.listeners, progress),
            };
            if matches!(result, Err(Error::RollbackDetected)) {
                state::set(&db.conn, state::ROLLBACK, "1").map_err(db_err(&path))?;
            }
            // Online unless the server could not be reached at all.
            let online = !matches!(
                result,
                Err(Error::ServerUnreachable { .. } | Error::TimedOut { .. } | Error::ConnectionLost(_))
            );
            state::set(&db.conn, ONLINE, if online { "1" } else { "0" }).map_err(db_err(&path))?;
            // Whatever happened, a clock offset learned from a verified answer is kept, and
            // ops never sent are dated with it.
            if channel.offset_ms != db.clock_offset_ms
                && let Some(o) = channel.offset_ms
            {
                let tx = db.conn.transaction().map_err(db_err(&path))?;
                state::set(&tx, state::CLOCK_OFFSET_MS, &o.to_string()).map_err(db_err(&path))?;
                outbox::restamp(&tx, now_ms(), o).map_err(db_err(&path))?;
                tx.commit().map_err(db_err(&path))?;
                db.clock_offset_ms = Some(o);
            }
            (result, channel)
        };
        // A refresh moved the lease's expiry: recorded in the key file.
        if let Some(grant) = channel.granted.take() {
            self.install_grant(account, None, &grant)?;
        }
        // Directives come before the sync's own outcome: a wiped device stops here.
        self.carry_out_directives(account, &mut channel)?;
        result
    }

    /// Acts on the directives verified answers carried (see [`super::directives`]).
    fn carry_out_directives(&mut self, account: &AccountName, channel: &mut Channel) -> Result<(), Error> {
        if channel.directives.is_empty() {
            return Ok(());
        }
        let tokens = std::mem::take(&mut channel.directives);
        let acts = {
            let docs = self.documents(account)?;
            let (conn, path) = (&docs.db.conn, docs.db.path.clone());
            let user = get(conn, &path, USER)?.unwrap_or_default();
            let device = get(conn, &path, DEVICE_ID)?.unwrap_or_default();
            verified_directives(conn, &path, &tokens, &user, &device)?
        };
        let jtis: Vec<String> = acts.iter().map(|c| c.jti.clone()).collect();
        match directives::strongest(&acts) {
            None => Ok(()),
            Some(DirectiveKind::Wipe) => {
                tracing::warn!(account = %account, "remote wipe: destroying the account's keys and data");
                // Keys first, then files (crypto-shredding); the session secret is still in
                // this process's memory for the acknowledgement. The account comes back empty.
                self.wipe_account(account)?;
                self.add_account(account)?;
                let _ = acknowledge(channel, &jtis);
                Err(Error::RemoteWipe(account.to_string()))
            }
            Some(_) => {
                tracing::warn!(account = %account, "remote logout: dropping the session, keeping the data");
                acknowledge(channel, &jtis)?;
                let docs = self.documents(account)?;
                let (conn, path) = (&mut docs.db.conn, docs.db.path.clone());
                let tx = conn.transaction().map_err(db_err(&path))?;
                for name in [KEY_ID, SESSION_SECRET, ACCESS_TOKEN, ACCESS_EXP, REFRESH_TOKEN, REFRESH_ATTEMPT] {
                    state::clear(&tx, name).map_err(db_err(&path))?;
                }
                let mut seen: Vec<String> =
                    get(&tx, &path, SEEN_DIRECTIVES)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
                seen.extend(jtis);
                state::set(&tx, SEEN_DIRECTIVES, &serde_json::to_string(&seen).unwrap_or_default())
                    .map_err(db_err(&path))?;
                tx.commit().map_err(db_err(&path))?;
                Err(Error::ReauthRequired("the server logged this device out".into()))
            }
        }
    }

    /// Reads what the account knew of its last login and refuses a login as another user or
    /// to another server into an account that holds data.
    fn prior_login(&mut self, account: &AccountName, opts: &LoginOptions<'_>) -> Result<PriorLogin, Error> {
        let docs = self.documents(account)?;
        let (conn, path) = (&docs.db.conn, docs.db.path.clone());
        let known_server = get(conn, &path, SERVER)?;
        let known_user = get(conn, &path, USER)?;
        let same = known_server.as_deref() == Some(opts.server) && known_user.as_deref() == Some(opts.user);
        if (known_server.is_some() || known_user.is_some()) && !same {
            let holds: bool = conn
                .query_row("SELECT EXISTS (SELECT 1 FROM main.documents) OR EXISTS (SELECT 1 FROM outbox)", [], |r| {
                    r.get(0)
                })
                .map_err(db_err(&path))?;
            if holds {
                return Err(Error::Refused {
                    status: 0,
                    code: "account_in_use".into(),
                    detail: format!(
                        "account {account} holds data of another user or server; use another account (--account)"
                    ),
                });
            }
        }
        Ok(PriorLogin {
            same,
            offset: state::clock_offset_ms(conn).map_err(db_err(&path))?,
            login_at: state::get_i64(conn, LOGIN_AT).map_err(db_err(&path))?.unwrap_or(0).max(0) as u64,
            seen: get(conn, &path, SEEN_DIRECTIVES)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default(),
            channel: open_channel(conn, &path, account).ok(),
        })
    }

    /// Logs the account out of its server.
    ///
    /// Plain (`keep_data` false): the account's keys and data are destroyed here first
    /// (keys, then files; the account comes back empty), then the server is told, which
    /// retires the device and deletes its lease key. `keep_data`: the session ends on the
    /// server and its tokens here; the data, the keys and the device secret stay, so the next
    /// login continues the device. Refused while changes wait in the outbox unless `force`.
    ///
    /// Returns whether the server was told (false when it could not be reached).
    ///
    /// # Errors
    /// [`Error::OutboxNotEmpty`] (nothing changed); [`Error::NotLoggedIn`]; database errors.
    pub fn logout(&mut self, account: &AccountName, keep_data: bool, force: bool) -> Result<bool, Error> {
        let (mut channel, token) = {
            let docs = self.documents(account)?;
            let (conn, path) = (&docs.db.conn, docs.db.path.clone());
            let pending = outbox::entries(conn).map_err(db_err(&path))?.len();
            if pending > 0 && !force {
                return Err(Error::OutboxNotEmpty(pending));
            }
            let mut channel = open_channel(conn, &path, account)?;
            // The logout call carries an access token; offline, the server is told later.
            let token = fresh_access_token(&mut channel, conn, &path, false)
                .inspect_err(|e| tracing::warn!(error = %e, "no access token for the logout call"))
                .ok();
            (channel, token)
        };
        if !keep_data {
            // Shred first: whatever happens on the network, the data is gone from here.
            self.wipe_account(account)?;
            self.add_account(account)?;
        }
        let body = serde_json::to_vec(&fieldvault_core::protocol::auth::LogoutRequest { keep_device: keep_data })
            .map_err(|e| Error::MalformedAnswer(e.to_string()))?;
        let sent = match &token {
            Some(t) => send_signed(&mut channel, Method::Post, "/v1/auth/logout", &body, Some(t)),
            None => Err(Error::ReauthRequired("no access token".into())),
        };
        let told = match sent {
            Ok(r) if r.status == 200 => true,
            Ok(r) => {
                tracing::warn!(status = r.status, "the server refused the logout");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the server could not be told of the logout");
                false
            }
        };
        if keep_data {
            let docs = self.documents(account)?;
            let (conn, path) = (&mut docs.db.conn, docs.db.path.clone());
            let tx = conn.transaction().map_err(db_err(&path))?;
            for name in
                [KEY_ID, SESSION_SECRET, ACCESS_TOKEN, ACCESS_EXP, REFRESH_TOKEN, REFRESH_ATTEMPT, OFFLINE_TOKEN]
            {
                state::clear(&tx, name).map_err(db_err(&path))?;
            }
            tx.commit().map_err(db_err(&path))?;
        }
        Ok(told)
    }

    /// The account's sync state for `status --sync`: no network (`online` is the outcome of
    /// the last sync).
    ///
    /// # Errors
    /// Database errors.
    pub fn sync_status(&mut self, account: &AccountName) -> Result<SyncStatus, Error> {
        let lease_expires_at = self.lease_expiry(account);
        let docs = self.documents(account)?;
        let (conn, path) = (&docs.db.conn, docs.db.path.clone());
        let num = |name: &str| state::get_i64(conn, name).map_err(db_err(&path));
        Ok(SyncStatus {
            server: get(conn, &path, SERVER)?,
            user: get(conn, &path, USER)?,
            device_id: get(conn, &path, DEVICE_ID)?,
            online: get(conn, &path, ONLINE)?.map(|v| v == "1"),
            outbox: outbox::entries(conn).map_err(db_err(&path))?.len(),
            conflicts: engine::conflicts(conn).map_err(db_err(&path))?.len(),
            last_sync_ms: num(state::LAST_SYNC_MS)?,
            access_expires_at: num(ACCESS_EXP)?.map(|v| v.max(0) as u64),
            lease_expires_at,
        })
    }

    /// Subscribes to changes of a collection or of one document of `account`: `callback`
    /// is told, after each local write and each applied pull page or push answer, which
    /// documents changed and how. It runs on the thread that made the change, after the
    /// change committed, and must not call into the vault. Subscriptions end when the vault
    /// locks.
    ///
    /// # Errors
    /// [`Error::NoSuchAccount`] and the errors of opening the account's database.
    pub fn subscribe(
        &mut self,
        account: &AccountName,
        watch: Watch,
        callback: impl FnMut(&[crate::DocumentChange]) + Send + 'static,
    ) -> Result<SubscriptionId, Error> {
        let docs = self.documents(account)?;
        Ok(docs.db.listeners.add(watch, Box::new(callback)))
    }

    /// Ends a subscription; false if it was not there.
    ///
    /// # Errors
    /// As [`Unlocked::subscribe`].
    pub fn unsubscribe(&mut self, account: &AccountName, id: SubscriptionId) -> Result<bool, Error> {
        let docs = self.documents(account)?;
        Ok(docs.db.listeners.remove(id))
    }

    /// The server and pins the account logged in with (None before a login): what
    /// [`probe`] needs, read once so that a parked vault need not be resumed to probe.
    ///
    /// # Errors
    /// Database errors.
    pub fn sync_target(&mut self, account: &AccountName) -> Result<Option<SyncTarget>, Error> {
        let docs = self.documents(account)?;
        let (conn, path) = (&docs.db.conn, docs.db.path.clone());
        let (Some(server), Some(pins)) = (get(conn, &path, SERVER)?, get(conn, &path, PINS)?) else { return Ok(None) };
        let pins: Vec<String> = serde_json::from_str(&pins).map_err(|_| Error::NotLoggedIn(account.to_string()))?;
        Ok(Some(SyncTarget { server, pins }))
    }

    /// The account's pending changes, oldest first (never their bodies).
    ///
    /// # Errors
    /// Database errors.
    pub fn outbox(&mut self, account: &AccountName) -> Result<Vec<OutboxEntry>, Error> {
        let docs = self.documents(account)?;
        outbox::entries(&docs.db.conn).map_err(db_err(&docs.db.path))
    }

    /// The account's kept conflicts: the losing version of each document, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn conflicts(&mut self, account: &AccountName) -> Result<Vec<engine::Conflict>, Error> {
        let docs = self.documents(account)?;
        engine::conflicts(&docs.db.conn).map_err(db_err(&docs.db.path))
    }

    /// Resolves a kept conflict: [`engine::Keep::Local`] writes the version set aside again
    /// as a local change (pushed at the next sync, rebased on the server's version);
    /// [`engine::Keep::Server`] keeps the document as it is now. Either way the conflict is
    /// forgotten.
    ///
    /// # Errors
    /// [`Error::NoSuchDocument`] when no conflict is kept for the document.
    pub fn resolve_conflict(
        &mut self,
        account: &AccountName,
        collection: &str,
        id: &str,
        keep: engine::Keep,
    ) -> Result<(), Error> {
        let docs = self.documents(account)?;
        let db = docs.db;
        if engine::resolve(&mut db.conn, &db.path, collection, id, keep)? {
            Ok(())
        } else {
            Err(Error::NoSuchDocument { collection: collection.to_owned(), id: id.to_owned() })
        }
    }

    /// The changes the server refused for good (rolled back here), oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn rejected(&mut self, account: &AccountName) -> Result<Vec<engine::Rejected>, Error> {
        let docs = self.documents(account)?;
        engine::rejected(&docs.db.conn).map_err(db_err(&docs.db.path))
    }

    /// Who the account's cached offline token names, verified against the cached JWKS and
    /// checked for expiry with the corrected clock. No network.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`]; [`Error::ReauthRequired`] when the token has expired or does
    /// not verify.
    pub fn whoami(&mut self, account: &AccountName) -> Result<Identity, Error> {
        let docs = self.documents(account)?;
        let (conn, path) = (&docs.db.conn, docs.db.path.clone());
        let not_in = || Error::NotLoggedIn(account.to_string());
        let token = get(conn, &path, OFFLINE_TOKEN)?.ok_or_else(not_in)?;
        let jwks = get(conn, &path, JWKS)?.ok_or_else(not_in)?;
        let offset = state::clock_offset_ms(conn).map_err(db_err(&path))?;
        let jwks: Value = serde_json::from_str(&jwks).map_err(|_| Error::MalformedAnswer("the cached JWKS".into()))?;
        let keys = jwks.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut last = Error::ReauthRequired("the offline token does not verify".into());
        for key in keys {
            let Some(x) = key.get("x").and_then(Value::as_str) else { continue };
            let Ok(public) = URL_SAFE_NO_PAD.decode(x) else { continue };
            match TokenVerifier::from_public_key(&public).offline(&token, corrected_secs(offset)) {
                Ok(c) => {
                    return Ok(Identity { user: c.sub, roles: c.roles, device_id: c.device_id, expires_at: c.exp });
                }
                Err(e) => last = Error::ReauthRequired(format!("the offline token: {e}")),
            }
        }
        Err(last)
    }
}

fn store_tokens(tx: &Connection, path: &std::path::Path, t: &TokenResponse, now: u64) -> Result<(), Error> {
    let put = |name: &str, value: &str| state::set(tx, name, value).map_err(db_err(path));
    put(KEY_ID, &t.key_id)?;
    put(SESSION_SECRET, &t.session_secret)?;
    put(ACCESS_TOKEN, &t.access_token)?;
    put(ACCESS_EXP, &(now + t.expires_in).to_string())?;
    put(ACCESS_TTL, &t.expires_in.to_string())?;
    put(REFRESH_TOKEN, &t.refresh_token)?;
    put(OFFLINE_TOKEN, &t.offline_token)?;
    state::clear(tx, REFRESH_ATTEMPT).map_err(db_err(path))
}

fn open_channel(conn: &Connection, path: &std::path::Path, account: &AccountName) -> Result<Channel, Error> {
    let not_in = || Error::NotLoggedIn(account.to_string());
    let server = get(conn, path, SERVER)?.ok_or_else(not_in)?;
    let pins: Vec<String> = serde_json::from_str(&get(conn, path, PINS)?.ok_or_else(not_in)?).map_err(|_| not_in())?;
    let key_id = get(conn, path, KEY_ID)?.ok_or_else(not_in)?;
    let secret = SessionSecret::from_base64(&secret(conn, path, SESSION_SECRET)?)
        .map_err(|_| Error::MalformedAnswer("the stored session secret is damaged".into()))?;
    let offset_ms = state::clock_offset_ms(conn).map_err(db_err(path))?;
    Ok(Channel {
        transport: Transport::new(&server, Pins::parse(&pins)?)?,
        key_id,
        secret,
        offset_ms,
        directives: Vec::new(),
        granted: None,
    })
}

/// Raises and stores the account's sync counter before the request that carries it.
fn next_device_seq(conn: &Connection, path: &std::path::Path) -> Result<u64, Error> {
    let seq = state::get_i64(conn, state::DEVICE_SEQ).map_err(db_err(path))?.unwrap_or(0) + 1;
    state::set(conn, state::DEVICE_SEQ, &seq.to_string()).map_err(db_err(path))?;
    Ok(seq as u64)
}

/// Refreshes the access token when it is about to expire: the attempt id and the new
/// refresh token are stored before anything depends on them, so a lost answer is retried
/// with the same attempt id (the server answers it again within its window).
fn fresh_access_token(
    channel: &mut Channel,
    conn: &Connection,
    path: &std::path::Path,
    force: bool,
) -> Result<Zeroizing<String>, Error> {
    let now = corrected_secs(channel.offset_ms);
    let exp = state::get_i64(conn, ACCESS_EXP).map_err(db_err(path))?.unwrap_or(0).max(0) as u64;
    // Refreshed 30 s before expiry, or half way through a shorter-lived token.
    let ttl = state::get_i64(conn, ACCESS_TTL).map_err(db_err(path))?.unwrap_or(600).max(0) as u64;
    if !force && exp > now + (ttl / 2).min(30) {
        return secret(conn, path, ACCESS_TOKEN);
    }
    let attempt = match get(conn, path, REFRESH_ATTEMPT)? {
        Some(a) => a,
        None => {
            let a = URL_SAFE_NO_PAD.encode(crate::random::<16>());
            state::set(conn, REFRESH_ATTEMPT, &a).map_err(db_err(path))?;
            a
        }
    };
    let body = RefreshRequest { refresh_token: secret(conn, path, REFRESH_TOKEN)?, attempt_id: attempt };
    let bytes = Zeroizing::new(serde_json::to_vec(&body).map_err(|e| Error::MalformedAnswer(e.to_string()))?);
    let resp = send_signed(channel, Method::Post, "/v1/auth/refresh", &bytes, None)?;
    if resp.status != 200 {
        return Err(refused(&resp));
    }
    let tokens: TokenResponse = serde_json::from_slice(&resp.body)
        .map_err(|_| Error::MalformedAnswer("the refresh answer is not a token bundle".into()))?;
    store_tokens(conn, path, &tokens, corrected_secs(channel.offset_ms))?;
    channel.granted = Some(lease_grant(&tokens)?);
    Ok(Zeroizing::new(tokens.access_token))
}

fn send_signed(
    channel: &mut Channel,
    method: Method,
    target: &str,
    body: &[u8],
    bearer: Option<&str>,
) -> Result<Response, Error> {
    let req = Request {
        method,
        path_and_query: target,
        body,
        auth: Auth::Signed { key_id: &channel.key_id, secret: &channel.secret, bearer },
    };
    let resp = channel.transport.send(&req, corrected_secs(channel.offset_ms))?;
    // Only a verified answer moves the clock or carries directives.
    if let Some(ts) = resp.verified_at {
        channel.offset_ms = Some((ts as i64) * 1000 - now_ms());
        for d in &resp.directives {
            if !channel.directives.contains(d) {
                channel.directives.push(d.clone());
            }
        }
    }
    Ok(resp)
}

/// A signed request with a fresh access token; one refresh and retry on `invalid_token`.
fn signed(
    channel: &mut Channel,
    conn: &Connection,
    path: &std::path::Path,
    method: Method,
    target: &str,
    body: &[u8],
) -> Result<Response, Error> {
    let token = fresh_access_token(channel, conn, path, false)?;
    let resp = send_signed(channel, method, target, body, Some(&token))?;
    let code = |r: &Response| {
        serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v.get("code")?.as_str().map(str::to_owned))
    };
    if resp.status == 401 && code(&resp).as_deref() == Some("invalid_token") {
        let token = fresh_access_token(channel, conn, path, true)?;
        return send_signed(channel, method, target, body, Some(&token));
    }
    if resp.status == 401 && code(&resp).as_deref() == Some("stale_timestamp") {
        // The verified refusal carried the server's time: the offset is now right.
        let token = fresh_access_token(channel, conn, path, false)?;
        return send_signed(channel, method, target, body, Some(&token));
    }
    Ok(resp)
}

/// One pushed batch and the server's answer to each of its ops.
type Answered = (Vec<InFlight>, Vec<fieldvault_core::protocol::sync::OpResult>);

/// Pushes `ops`; a whole-push `bad_request` is bisected so that one bad op is set aside
/// (refused for good) and the rest go through. Returns each sent batch with its results.
fn push_bisecting(
    conn: &mut Connection,
    path: &std::path::Path,
    channel: &mut Channel,
    ops: Vec<InFlight>,
) -> Result<Vec<Answered>, Error> {
    let mut done = Vec::new();
    let mut work = vec![ops];
    while let Some(batch) = work.pop() {
        let seq = next_device_seq(conn, path)?;
        let body = serde_json::json!({
            "ops": batch.iter().map(|o| serde_json::to_value(&o.op).unwrap_or(Value::Null)).collect::<Vec<_>>(),
            "device_seq": seq,
        });
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::MalformedAnswer(e.to_string()))?;
        let resp = signed(channel, conn, path, Method::Post, "/v1/sync/push", &bytes)?;
        match resp.status {
            200 => {
                let answer: PushResponse = serde_json::from_slice(&resp.body)
                    .map_err(|_| Error::MalformedAnswer("a push answer is not a list of results".into()))?;
                done.push((batch, answer.results));
            }
            400 if batch.len() > 1 => {
                let mut batch = batch;
                let second = batch.split_off(batch.len() / 2);
                work.push(second);
                work.push(batch);
            }
            400 => engine::reject_op(conn, path, &batch[0], "bad_request")?,
            _ => return Err(refused(&resp)),
        }
    }
    Ok(done)
}

/// Push until the outbox has nothing more to send, then pull every page.
fn run_sync(
    conn: &mut Connection,
    path: &std::path::Path,
    channel: &mut Channel,
    policy: &dyn Fn(&str) -> ConflictPolicy,
    listeners: &mut Listeners,
    progress: &mut dyn FnMut(&SyncReport, bool),
) -> Result<SyncReport, Error> {
    let path = path.to_path_buf();
    let mut report = SyncReport::default();
    // Push until the outbox has nothing more to send.
    loop {
        let ops = engine::prepare_push(conn, &path)?;
        if ops.is_empty() {
            break;
        }
        let answers = push_bisecting(conn, &path, channel, ops)?;
        for (ops, results) in answers {
            let s = engine::apply_push(conn, &path, &ops, &results, policy)?;
            report.pushed += s.applied;
            report.conflicts += s.conflicts;
            report.rejected += s.rejected;
            report.held += s.held;
            listeners.notify(&s.changed);
            progress(&report, true);
        }
    }
    // Pull every page.
    loop {
        let seq = next_device_seq(conn, &path)?;
        let cursor = get(conn, &path, state::CURSOR)?;
        let target = match &cursor {
            Some(c) => format!("/v1/sync/pull?since={c}&limit={DEFAULT_PULL_LIMIT}&device_seq={seq}"),
            None => format!("/v1/sync/pull?limit={DEFAULT_PULL_LIMIT}&device_seq={seq}"),
        };
        let resp = signed(channel, conn, &path, Method::Get, &target, &[])?;
        if resp.status != 200 {
            return Err(refused(&resp));
        }
        let page: PullResponse = serde_json::from_slice(&resp.body)
            .map_err(|_| Error::MalformedAnswer("a pull answer is not a page of changes".into()))?;
        let pending = engine::pending_among(conn, &page).map_err(db_err(&path))?;
        let plan = engine::plan_pull_page(&page, DEFAULT_PULL_LIMIT, &pending)?;
        let reconciling = state::get(conn, state::RECONCILE).map_err(db_err(&path))?.is_some();
        let changed = engine::apply_pull(conn, &path, &plan, &page.cursor, reconciling)?;
        report.pulled += changed.len();
        report.skipped += plan.skipped;
        listeners.notify(&changed);
        if !page.has_more {
            if reconciling {
                let removed = engine::finish_reconcile(conn, &path)?;
                report.pulled += removed.len();
                listeners.notify(&removed);
            }
            progress(&report, false);
            break;
        }
        progress(&report, true);
    }
    state::set(conn, state::LAST_SYNC_MS, &now_ms().to_string()).map_err(db_err(&path))?;
    Ok(report)
}

/// What an account knew of its last login, read before a new one.
struct PriorLogin {
    /// The same server and user as the login being made.
    same: bool,
    offset: Option<i64>,
    login_at: u64,
    seen: HashSet<String>,
    /// The old session, to acknowledge directives with.
    channel: Option<Channel>,
}

/// The lease a login or refresh answer grants.
fn lease_grant(t: &TokenResponse) -> Result<LeaseGrant, Error> {
    let bad = || Error::MalformedAnswer("the lease key is not 32 bytes of base64".into());
    let bytes =
        Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(t.lease.key.as_bytes()).map_err(|_| bad())?);
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
    Ok(LeaseGrant { lease_id: t.lease.lease_id.clone(), key: Zeroizing::new(key), expires_at: t.lease.expires_at })
}

/// Tells the server these directives were carried out (signed with the session's secret; no
/// bearer token: the server accepts it from a revoked session).
fn acknowledge(channel: &mut Channel, jtis: &[String]) -> Result<(), Error> {
    let body =
        serde_json::to_vec(&AckRequest { jtis: jtis.to_vec() }).map_err(|e| Error::MalformedAnswer(e.to_string()))?;
    let resp = send_signed(channel, Method::Post, "/v1/devices/ack", &body, None)?;
    if resp.status != 200 {
        return Err(refused(&resp));
    }
    Ok(())
}

/// The directives among `tokens` this device must act on: verified against the cached JWKS,
/// for `user` and `device`, issued after the device's login, not carried out before. The
/// others are logged and dropped.
fn verified_directives(
    conn: &Connection,
    path: &std::path::Path,
    tokens: &[String],
    user: &str,
    device: &str,
) -> Result<Vec<fieldvault_core::protocol::DirectiveClaims>, Error> {
    let jwks: Value = get(conn, path, JWKS)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    let login_at = state::get_i64(conn, LOGIN_AT).map_err(db_err(path))?.unwrap_or(0).max(0) as u64;
    let seen: HashSet<String> =
        get(conn, path, SEEN_DIRECTIVES)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    Ok(check_directives(tokens, &jwks, user, device, login_at, &seen))
}

/// [`directives::check`] over several tokens: those to act on; the others logged.
fn check_directives(
    tokens: &[String],
    jwks: &Value,
    user: &str,
    device: &str,
    login_at: u64,
    seen: &HashSet<String>,
) -> Vec<fieldvault_core::protocol::DirectiveClaims> {
    let mut acts = Vec::new();
    for t in tokens {
        match directives::check(t, jwks, user, device, login_at, seen) {
            directives::Verdict::Act(c) => acts.push(c),
            directives::Verdict::Ignore(why) => tracing::warn!(reason = why, "a directive was ignored"),
        }
    }
    acts
}

#[cfg(test)]
mod tests {
    use fieldvault_core::protocol::{OFFLINE_TYP, OfflineClaims};
    use fieldvault_keystore::MemoryStore;

    use super::*;
    use crate::Vault;

    use crate::sync::test_signer as signer;

    #[test]
    fn whoami_verifies_the_cached_offline_token_and_refuses_an_expired_or_foreign_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let account = AccountName::new("a").expect("name");
        let mut u = Vault::init(&dir.path().join("v"), &MemoryStore::default(), &account).expect("init");
        assert!(matches!(u.whoami(&account), Err(Error::NotLoggedIn(_))));
        let s = signer();
        let now = now_ms() as u64 / 1000;
        let token = |iat: u64, exp: u64| {
            s.sign(OFFLINE_TYP, &OfflineClaims::new("alice", "s_1", "d_1", &["inspector".into()], iat, exp, "j".into()))
        };
        let store = |u: &mut Unlocked, token: &str, jwks: &Value| {
            let docs = u.documents(&account).expect("documents");
            state::set(&docs.db.conn, OFFLINE_TOKEN, token).expect("set");
            state::set(&docs.db.conn, JWKS, &jwks.to_string()).expect("set");
        };
        store(&mut u, &token(now - 10, now + 3600), &s.jwks());
        let me = u.whoami(&account).expect("valid");
        assert_eq!(
            (me.user.as_str(), me.roles.as_slice(), me.device_id.as_str()),
            ("alice", &["inspector".to_owned()][..], "d_1")
        );
        store(&mut u, &token(now - 7200, now - 3600), &s.jwks());
        assert!(matches!(u.whoami(&account), Err(Error::ReauthRequired(_))), "expired");
        store(&mut u, &token(now - 10, now + 3600), &signer().jwks());
        assert!(matches!(u.whoami(&account), Err(Error::ReauthRequired(_))), "signed by another key");
    }
}
