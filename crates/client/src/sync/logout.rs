//! Logging an account out, and the logouts a server is still owed.
//!
//! A plain logout destroys the account here first; telling the server (which retires the
//! device and deletes its lease key) needs the network. So before anything is destroyed
//! the session the server must be told with is sealed into the key file (section 7), in the
//! same atomic write that removes the account's keys; it is settled as soon as the server
//! has been told, on this call, the next sync, the next login or
//! [`Unlocked::finish_logouts`], across crashes and restarts. `logout --keep-data` is owed
//! the same way (the session's tokens leave the account's database at once).

use std::path::Path;

use fieldvault_core::AccountName;
use fieldvault_core::protocol::SessionSecret;
use fieldvault_core::protocol::auth::LogoutRequest;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::channel::*;
use super::outbox::{self, db_err};
use super::state::{self, *};
use crate::transport::{Method, Transport};
use crate::{Error, Pins, Unlocked};

/// What the server must be told of a logout, and the session to tell it with. Sealed under
/// the master key in the key file while it is owed (`docs/formats/key-file.md`).
#[derive(Serialize, Deserialize)]
struct OwedRecord {
    server: String,
    pins: Vec<String>,
    keep_device: bool,
    key_id: String,
    session_secret: Zeroizing<String>,
    access_token: Zeroizing<String>,
    access_exp: i64,
    access_ttl: i64,
    refresh_token: Zeroizing<String>,
    /// Chosen when the record is made, so a refresh whose answer a crash lost is asked again
    /// with the same attempt id (the server answers it again within its window).
    refresh_attempt: String,
    clock_offset_ms: Option<i64>,
}

/// What became of telling the server of a logout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutNotice {
    /// The server was told: it ended the session (and, for a plain logout, retired the
    /// device and deleted its lease key).
    Delivered,
    /// The server could not be reached, or did not answer well; the logout stays recorded
    /// and is told on the next sync, login or [`Unlocked::finish_logouts`].
    Owed(String),
    /// The server had already ended the session (expired, revoked, or its refresh token
    /// reused), so it can no longer be told: the device stays registered there until an
    /// operator wipes it. The record is dropped.
    Dropped(String),
}

impl LogoutNotice {
    /// Whether the server was told.
    pub fn delivered(&self) -> bool {
        matches!(self, LogoutNotice::Delivered)
    }
}

/// A logout still owed to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedLogoutInfo {
    /// The account that was logged out.
    pub account: AccountName,
    /// The device the server is to retire (or whose session it is to end).
    pub device_id: String,
    /// The server.
    pub server: String,
    /// Whether it was `logout --keep-data` (the device is kept; only the session ends).
    pub keep_device: bool,
}

impl Unlocked {
    /// Logs the account out of its server.
    ///
    /// Plain (`keep_data` false): the account's keys and data are destroyed here first
    /// (keys, then files; the account comes back empty), in the same key-file write that
    /// records the logout as owed; then the server is told, which retires the device and
    /// deletes its lease key. `keep_data`: the session's tokens leave the account's database
    /// and the server is told to end the session; the data, the keys and the device secret
    /// stay, so the next login continues the device. Refused while changes wait in the
    /// outbox unless `force`. A logout the server could not be told of is told on the next
    /// sync, login or [`Unlocked::finish_logouts`].
    ///
    /// # Errors
    /// [`Error::OutboxNotEmpty`] (nothing changed); [`Error::NotLoggedIn`]; database and
    /// key-file errors (nothing changed).
    pub fn logout(&mut self, account: &AccountName, keep_data: bool, force: bool) -> Result<LogoutNotice, Error> {
        let (device_id, record) = {
            let docs = self.documents(account)?;
            let (conn, path) = (&docs.db.conn, docs.db.path.clone());
            let pending = outbox::entries(conn).map_err(db_err(&path))?.len();
            if pending > 0 && !force {
                return Err(Error::OutboxNotEmpty(pending));
            }
            session_record(conn, &path, account, keep_data)?
        };
        let bytes = Zeroizing::new(serde_json::to_vec(&record).map_err(|e| Error::MalformedAnswer(e.to_string()))?);
        if keep_data {
            self.set_owed(account, &device_id, Some(&bytes))?;
            let docs = self.documents(account)?;
            let (conn, path) = (&mut docs.db.conn, docs.db.path.clone());
            let tx = conn.transaction().map_err(db_err(&path))?;
            for name in SESSION {
                state::clear(&tx, name).map_err(db_err(&path))?;
            }
            tx.commit().map_err(db_err(&path))?;
        } else {
            // Shred first, recording the logout in the same write: whatever happens on the
            // network, the data is gone from here and the server is told when it can be.
            let sealed = self.seal_owed(account, &device_id, &bytes)?;
            self.shred_account_owing(account, sealed)?;
            self.add_account(account)?;
        }
        self.tell_server(account, &device_id)
    }

    /// The logouts this vault still owes to servers.
    ///
    /// # Errors
    /// [`Error::Core`] when a record does not open (the key file was tampered with).
    pub fn owed_logouts(&self) -> Result<Vec<OwedLogoutInfo>, Error> {
        self.owed_records()?
            .into_iter()
            .map(|(account, device_id, record)| {
                let r = parse_record(&record)?;
                Ok(OwedLogoutInfo { account, device_id, server: r.server.clone(), keep_device: r.keep_device })
            })
            .collect()
    }

    /// Tells servers of every logout still owed (each once; sync and login call it too).
    /// Returns what became of each.
    ///
    /// # Errors
    /// Key-file errors.
    pub fn finish_logouts(&mut self) -> Result<Vec<(OwedLogoutInfo, LogoutNotice)>, Error> {
        let mut out = Vec::new();
        for info in self.owed_logouts()? {
            let notice = self.tell_server(&info.account, &info.device_id)?;
            out.push((info, notice));
        }
        Ok(out)
    }

    /// [`Unlocked::finish_logouts`] before a sync or login: what cannot be told now is
    /// told next time, so nothing here fails the caller.
    pub(super) fn finish_logouts_quietly(&mut self) {
        if let Err(e) = self.finish_logouts() {
            tracing::warn!(error = %e, "the owed logouts could not be told");
        }
    }

    /// Tells the server of the owed logout of `account`'s device `device_id`, settling it
    /// when told, keeping it (with any refreshed tokens) when not.
    fn tell_server(&mut self, account: &AccountName, device_id: &str) -> Result<LogoutNotice, Error> {
        let Some((_, _, bytes)) = self.owed_records()?.into_iter().find(|(a, d, _)| a == account && d == device_id)
        else {
            return Ok(LogoutNotice::Delivered);
        };
        let record = parse_record(&bytes)?;
        let scratch = scratch_state(&record).map_err(db_err(Path::new(":memory:")))?;
        let path = Path::new(":memory:");
        let mut channel = Channel {
            transport: Transport::new(&record.server, Pins::parse(&record.pins)?)?,
            key_id: record.key_id.clone(),
            secret: SessionSecret::from_base64(&record.session_secret)
                .map_err(|_| Error::MalformedAnswer("the owed logout's session secret is damaged".into()))?,
            offset_ms: record.clock_offset_ms,
            directives: Vec::new(),
            granted: None,
        };
        let body = serde_json::to_vec(&LogoutRequest { keep_device: record.keep_device })
            .map_err(|e| Error::MalformedAnswer(e.to_string()))?;
        let sent = signed(&mut channel, &scratch, path, Method::Post, "/v1/auth/logout", &body);
        let notice = match sent {
            Ok(r) if r.status == 200 => LogoutNotice::Delivered,
            Ok(r) => match refused(&r) {
                // The session is over on the server: it can never be told with it.
                e @ Error::ReauthRequired(_) => LogoutNotice::Dropped(e.to_string()),
                e @ Error::Refused { status: 401 | 403, .. } => LogoutNotice::Dropped(e.to_string()),
                e => LogoutNotice::Owed(e.to_string()),
            },
            Err(e @ Error::ReauthRequired(_)) => LogoutNotice::Dropped(e.to_string()),
            Err(e) => LogoutNotice::Owed(e.to_string()),
        };
        match &notice {
            LogoutNotice::Owed(why) => {
                tracing::warn!(account = %account, reason = %why, "the server could not be told of the logout yet");
                if channel.granted.is_some() || channel.offset_ms != record.clock_offset_ms {
                    // A refresh spent the old refresh token: keep its successor.
                    let updated = refreshed(record, &scratch, channel.offset_ms)?;
                    let bytes = Zeroizing::new(
                        serde_json::to_vec(&updated).map_err(|e| Error::MalformedAnswer(e.to_string()))?,
                    );
                    self.set_owed(account, device_id, Some(&bytes))?;
                }
            }
            LogoutNotice::Dropped(why) => {
                tracing::warn!(account = %account, reason = %why, "the server ended the session already; the owed logout is dropped");
                self.set_owed(account, device_id, None)?;
            }
            LogoutNotice::Delivered => self.set_owed(account, device_id, None)?,
        }
        Ok(notice)
    }
}

/// The session of a logged-in account, as an owed logout.
fn session_record(
    conn: &Connection,
    path: &Path,
    account: &AccountName,
    keep_device: bool,
) -> Result<(String, OwedRecord), Error> {
    let not_in = || Error::NotLoggedIn(account.to_string());
    let get = |name: &str| stored(conn, path, name).and_then(|v| v.ok_or_else(not_in));
    let num = |name: &str| state::get_i64(conn, name).map_err(db_err(path));
    let pins = serde_json::from_str(&get(PINS)?).map_err(|_| not_in())?;
    let record = OwedRecord {
        server: get(SERVER)?,
        pins,
        keep_device,
        key_id: get(KEY_ID)?,
        session_secret: secret(conn, path, SESSION_SECRET)?,
        access_token: secret(conn, path, ACCESS_TOKEN)?,
        access_exp: num(ACCESS_EXP)?.unwrap_or(0),
        access_ttl: num(ACCESS_TTL)?.unwrap_or(600),
        refresh_token: secret(conn, path, REFRESH_TOKEN)?,
        refresh_attempt: match stored(conn, path, REFRESH_ATTEMPT)? {
            Some(a) => a,
            None => fresh_attempt_id(),
        },
        clock_offset_ms: state::clock_offset_ms(conn).map_err(db_err(path))?,
    };
    Ok((get(DEVICE_ID)?, record))
}

fn parse_record(bytes: &[u8]) -> Result<OwedRecord, Error> {
    serde_json::from_slice(bytes).map_err(|_| Error::MalformedAnswer("an owed logout record is damaged".into()))
}

/// The session's token state in an in-memory table shaped as the account's `sync_state`,
/// so the one refresh path ([`fresh_access_token`]) serves it. Nothing of it reaches disk.
fn scratch_state(r: &OwedRecord) -> rusqlite::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch("CREATE TABLE sync_state (name TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
    state::set(&conn, ACCESS_TOKEN, &r.access_token)?;
    state::set(&conn, ACCESS_EXP, &r.access_exp.to_string())?;
    state::set(&conn, ACCESS_TTL, &r.access_ttl.to_string())?;
    state::set(&conn, REFRESH_TOKEN, &r.refresh_token)?;
    state::set(&conn, REFRESH_ATTEMPT, &r.refresh_attempt)?;
    Ok(conn)
}

/// The record after a refresh: the new tokens, and a new attempt id for the next refresh.
fn refreshed(r: OwedRecord, scratch: &Connection, offset_ms: Option<i64>) -> Result<OwedRecord, Error> {
    let path = Path::new(":memory:");
    let num = |name: &str| state::get_i64(scratch, name).map_err(db_err(path));
    Ok(OwedRecord {
        access_token: secret(scratch, path, ACCESS_TOKEN)?,
        access_exp: num(ACCESS_EXP)?.unwrap_or(0),
        access_ttl: num(ACCESS_TTL)?.unwrap_or(r.access_ttl),
        refresh_token: secret(scratch, path, REFRESH_TOKEN)?,
        refresh_attempt: stored(scratch, path, REFRESH_ATTEMPT)?.unwrap_or_else(fresh_attempt_id),
        clock_offset_ms: offset_ms,
        ..r
    })
}
