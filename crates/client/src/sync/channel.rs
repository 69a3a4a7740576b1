//! The signed session of an account: reading it from the sync state, keeping its access
//! token fresh (refresh with a durable attempt id), sending signed requests and reading the
//! answers only once verified. Every answer to a signed request is verified by the
//! transport before anything here reads it; the clock offset is learned only from the login
//! answer (pinned TLS) and from verified answers.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fieldvault_core::AccountName;
use fieldvault_core::protocol::SessionSecret;
use fieldvault_core::protocol::auth::{AckRequest, RefreshRequest, TokenResponse};
use rusqlite::Connection;
use serde_json::Value;
use zeroize::Zeroizing;

use super::outbox::db_err;
use super::state::{self, *};
use crate::keys::LeaseGrant;
use crate::transport::{Auth, Method, Request, Response, Transport};
use crate::{Error, Pins};

pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The device's clock corrected by the learned offset, Unix seconds.
pub(super) fn corrected_secs(offset_ms: Option<i64>) -> u64 {
    (now_ms().saturating_add(offset_ms.unwrap_or(0)).max(0) / 1000) as u64
}

pub(super) fn stored(conn: &Connection, path: &std::path::Path, name: &str) -> Result<Option<String>, Error> {
    state::get(conn, name).map_err(db_err(path))
}

pub(super) fn secret(conn: &Connection, path: &std::path::Path, name: &str) -> Result<Zeroizing<String>, Error> {
    stored(conn, path, name)?.map(Zeroizing::new).ok_or_else(|| Error::NotLoggedIn(String::new()))
}

/// The problem+json answer of a refusal, as an error.
pub(super) fn refused(resp: &Response) -> Error {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").chars().take(300).collect::<String>();
    let code = text("code");
    match code.as_str() {
        // The refresh already failed, or a refreshed token was refused: the session is over
        // (a password change, a disabled user, a reused refresh token).
        "invalid_grant" | "invalid_token" => Error::ReauthRequired(text("detail")),
        "rollback_detected" => Error::RollbackDetected,
        "mfa_required" => Error::MfaRequired,
        _ => Error::Refused {
            status: resp.status,
            code: if code.is_empty() { "unknown".into() } else { code },
            detail: text("detail"),
        },
    }
}

/// One account's signed session, read from its sync state.
pub(super) struct Channel {
    pub(super) transport: Transport,
    pub(super) key_id: String,
    pub(super) secret: SessionSecret,
    pub(super) offset_ms: Option<i64>,
    /// Directives that rode in verified answers, in arrival order, each once.
    pub(super) directives: Vec<String>,
    /// The lease a refresh granted (its expiry moved), to record once the sync is done.
    pub(super) granted: Option<LeaseGrant>,
}

pub(super) fn store_tokens(tx: &Connection, path: &std::path::Path, t: &TokenResponse, now: u64) -> Result<(), Error> {
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

pub(super) fn open_channel(conn: &Connection, path: &std::path::Path, account: &AccountName) -> Result<Channel, Error> {
    let not_in = || Error::NotLoggedIn(account.to_string());
    let server = stored(conn, path, SERVER)?.ok_or_else(not_in)?;
    let pins: Vec<String> =
        serde_json::from_str(&stored(conn, path, PINS)?.ok_or_else(not_in)?).map_err(|_| not_in())?;
    let key_id = stored(conn, path, KEY_ID)?.ok_or_else(not_in)?;
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

/// Refreshes the access token when it is about to expire: the attempt id and the new
/// refresh token are stored before anything depends on them, so a lost answer is retried
/// with the same attempt id (the server answers it again within its window).
pub(super) fn fresh_access_token(
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
    let attempt = match stored(conn, path, REFRESH_ATTEMPT)? {
        Some(a) => a,
        None => {
            let a = fresh_attempt_id();
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

/// A new refresh attempt id: 16 random bytes, base64url.
pub(super) fn fresh_attempt_id() -> String {
    URL_SAFE_NO_PAD.encode(crate::random::<16>())
}

pub(super) fn send_signed(
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
    absorb(channel, &resp);
    Ok(resp)
}

/// What a verified answer teaches the session: the clock offset and the directives it
/// carried. Only a verified answer moves the clock or carries directives.
fn absorb(channel: &mut Channel, resp: &Response) {
    if let Some(ts) = resp.verified_at {
        channel.offset_ms = Some((ts as i64) * 1000 - now_ms());
        for d in &resp.directives {
            if !channel.directives.contains(d) {
                channel.directives.push(d.clone());
            }
        }
    }
}

/// [`signed`], with the exchange on a thread of its own while `meanwhile` runs here on the
/// account's database: the device applies one answer while the server works on the next
/// request. The request is still signed at send time, and nothing of its answer is read
/// before the transport verified it; one request is in flight at a time, so the server sees
/// `device_seq` in order. `meanwhile` runs whatever the exchange's outcome.
pub(super) fn signed_while<T>(
    channel: &mut Channel,
    conn: &mut Connection,
    path: &std::path::Path,
    (method, target, body): (Method, &str, &[u8]),
    meanwhile: impl FnOnce(&mut Connection) -> T,
) -> (T, Result<Response, Error>) {
    let token = match fresh_access_token(channel, conn, path, false) {
        Ok(t) => t,
        Err(e) => return (meanwhile(conn), Err(e)),
    };
    let now = corrected_secs(channel.offset_ms);
    let (done, sent) = {
        let (transport, key_id, secret) = (&channel.transport, channel.key_id.as_str(), &channel.secret);
        let req = Request {
            method,
            path_and_query: target,
            body,
            auth: Auth::Signed { key_id, secret, bearer: Some(&token) },
        };
        std::thread::scope(|s| {
            let exchange = std::thread::Builder::new()
                .name("fieldvault-sync-send".into())
                .spawn_scoped(s, || transport.send(&req, now));
            let done = meanwhile(conn);
            let sent = match exchange {
                Ok(handle) => handle.join().unwrap_or_else(|_| Err(Error::InvalidRequest("the send thread panicked"))),
                // No thread to be had: send here, after `meanwhile`.
                Err(_) => transport.send(&req, now),
            };
            (done, sent)
        })
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return (done, Err(e)),
    };
    absorb(channel, &resp);
    (done, retried(channel, conn, path, method, target, body, resp))
}

/// A signed request with a fresh access token; one refresh and retry on `invalid_token`.
pub(super) fn signed(
    channel: &mut Channel,
    conn: &Connection,
    path: &std::path::Path,
    method: Method,
    target: &str,
    body: &[u8],
) -> Result<Response, Error> {
    let token = fresh_access_token(channel, conn, path, false)?;
    let resp = send_signed(channel, method, target, body, Some(&token))?;
    retried(channel, conn, path, method, target, body, resp)
}

/// The answer to a signed request, sent once more after a refresh when it was refused for
/// its access token, or after a verified `stale_timestamp` taught the clock.
fn retried(
    channel: &mut Channel,
    conn: &Connection,
    path: &std::path::Path,
    method: Method,
    target: &str,
    body: &[u8],
    resp: Response,
) -> Result<Response, Error> {
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

/// The lease a login or refresh answer grants.
pub(super) fn lease_grant(t: &TokenResponse) -> Result<LeaseGrant, Error> {
    let bad = || Error::MalformedAnswer("the lease key is not 32 bytes of base64".into());
    let bytes =
        Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(t.lease.key.as_bytes()).map_err(|_| bad())?);
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
    Ok(LeaseGrant { lease_id: t.lease.lease_id.clone(), key: Zeroizing::new(key), expires_at: t.lease.expires_at })
}

/// Tells the server these directives were carried out (signed with the session's secret; no
/// bearer token: the server accepts it from a revoked session).
pub(super) fn acknowledge(channel: &mut Channel, jtis: &[String]) -> Result<(), Error> {
    let body =
        serde_json::to_vec(&AckRequest { jtis: jtis.to_vec() }).map_err(|e| Error::MalformedAnswer(e.to_string()))?;
    let resp = send_signed(channel, Method::Post, "/v1/devices/ack", &body, None)?;
    if resp.status != 200 {
        return Err(refused(&resp));
    }
    Ok(())
}
