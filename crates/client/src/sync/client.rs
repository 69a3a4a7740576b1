//! The thin loop around the engine: a sync (push, then pull) over the pinned, signed
//! channel, and what an app asks of an account's sync (status, outbox, conflicts, who am I,
//! subscriptions). Every answer to a signed request is verified by the transport before
//! anything here reads it; the clock offset is learned only from the login answer (pinned
//! TLS) and from verified answers.
//!
//! Where things live: the device secret and the lease key L in the key file, wrapped by the
//! master key; the session (key id, session secret, tokens), the server, the pins and the
//! cached JWKS in the `sync_state` table of the account's SQLCipher database, whose key the
//! lease wraps.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fieldvault_core::AccountName;
use fieldvault_core::protocol::sync::PushResponse;
use fieldvault_core::protocol::{TokenVerifier, sync::MAX_PULL_LIMIT};
use rusqlite::Connection;
use serde_json::Value;

use std::collections::HashSet;

use fieldvault_core::protocol::DirectiveKind;

use super::channel::*;
use super::conflicts::{self, ConflictPolicy};
use super::directives;
use super::engine::{self, InFlight};
use super::outbox::{self, OutboxEntry, db_err};
use super::pull;
use super::state::{self, *};
use crate::changes::{Listeners, SubscriptionId, Watch};
use crate::transport::{Auth, Method, Request, Response, Transport};
use crate::{Error, Pins, Unlocked};

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
    /// What moved of attachments: uploads finished or refused, keys and bytes fetched.
    pub attachments: super::transfer::TransferReport,
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

impl Unlocked {
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
        self.finish_logouts_quietly();
        self.relist_owed_uploads(account)?;
        let (result, mut channel) = {
            let docs = self.documents(account)?;
            let db = docs.db;
            let path = db.path.clone();
            let mut channel = open_channel(&db.conn, &path, account)?;
            let result = match state::get(&db.conn, state::ROLLBACK).map_err(db_err(&path))? {
                Some(_) => Err(Error::RollbackDetected),
                // The server's pin list first: a verified one adds the next key's pin.
                None => match super::pins::refresh(&db.conn, &path, &channel) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let listeners = &mut db.listeners;
                        crate::database::with_cache_cap(&mut db.conn, &path, crate::database::SYNC_CACHE_KIB, |conn| {
                            run_sync(conn, &path, &mut channel, policy, listeners, progress)
                        })?
                    }
                },
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
        // The server caught an old copy of this vault: the account locks (its copy of L goes,
        // so its data stays encrypted) until an online login continues as a new device,
        // which gets the same L back.
        if matches!(result, Err(Error::RollbackDetected)) && self.lease_expiry(account).is_some() {
            self.forget_leases(std::slice::from_ref(account))?;
        }
        // Attachments, once the documents are settled: uploads owed, keys and bytes of
        // attachments other devices made (ADR 0008).
        let result = match result {
            Ok(mut report) => self.transfer_attachments(account, &mut channel).map(|t| {
                report.attachments = t;
                report
            }),
            Err(e) => Err(e),
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
            let user = stored(conn, &path, USER)?.unwrap_or_default();
            let device = stored(conn, &path, DEVICE_ID)?.unwrap_or_default();
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
                for name in SESSION {
                    state::clear(&tx, name).map_err(db_err(&path))?;
                }
                let mut seen: Vec<String> = stored(&tx, &path, SEEN_DIRECTIVES)?
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
                seen.extend(jtis);
                state::set(&tx, SEEN_DIRECTIVES, &serde_json::to_string(&seen).unwrap_or_default())
                    .map_err(db_err(&path))?;
                tx.commit().map_err(db_err(&path))?;
                Err(Error::ReauthRequired("the server logged this device out".into()))
            }
        }
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
            server: stored(conn, &path, SERVER)?,
            user: stored(conn, &path, USER)?,
            device_id: stored(conn, &path, DEVICE_ID)?,
            online: stored(conn, &path, ONLINE)?.map(|v| v == "1"),
            outbox: outbox::entries(conn).map_err(db_err(&path))?.len(),
            conflicts: conflicts::conflicts(conn).map_err(db_err(&path))?.len(),
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
        let (Some(server), Some(pins)) = (stored(conn, &path, SERVER)?, stored(conn, &path, PINS)?) else {
            return Ok(None);
        };
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
    pub fn conflicts(&mut self, account: &AccountName) -> Result<Vec<conflicts::Conflict>, Error> {
        let docs = self.documents(account)?;
        conflicts::conflicts(&docs.db.conn).map_err(db_err(&docs.db.path))
    }

    /// Resolves a kept conflict: [`conflicts::Keep::Local`] writes the version set aside again
    /// as a local change (pushed at the next sync, rebased on the server's version);
    /// [`conflicts::Keep::Server`] keeps the document as it is now. Either way the conflict is
    /// forgotten.
    ///
    /// # Errors
    /// [`Error::NoSuchDocument`] when no conflict is kept for the document.
    pub fn resolve_conflict(
        &mut self,
        account: &AccountName,
        collection: &str,
        id: &str,
        keep: conflicts::Keep,
    ) -> Result<(), Error> {
        let docs = self.documents(account)?;
        let db = docs.db;
        if conflicts::resolve(&mut db.conn, &db.path, collection, id, keep)? {
            Ok(())
        } else {
            Err(Error::NoSuchDocument { collection: collection.to_owned(), id: id.to_owned() })
        }
    }

    /// The changes the server refused for good (rolled back here), oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn rejected(&mut self, account: &AccountName) -> Result<Vec<conflicts::Rejected>, Error> {
        let docs = self.documents(account)?;
        conflicts::rejected(&docs.db.conn).map_err(db_err(&docs.db.path))
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
        let token = stored(conn, &path, OFFLINE_TOKEN)?.ok_or_else(not_in)?;
        let jwks = stored(conn, &path, JWKS)?.ok_or_else(not_in)?;
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

/// Raises and stores the account's sync counter before the request that carries it.
fn next_device_seq(conn: &Connection, path: &std::path::Path) -> Result<u64, Error> {
    let seq = state::get_i64(conn, state::DEVICE_SEQ).map_err(db_err(path))?.unwrap_or(0) + 1;
    state::set(conn, state::DEVICE_SEQ, &seq.to_string()).map_err(db_err(path))?;
    Ok(seq as u64)
}

/// One pushed batch and the server's answer to each of its ops.
type Answered = (Vec<InFlight>, Vec<fieldvault_core::protocol::sync::OpResult>);

/// Pushes `ops`; a whole-push `bad_request` is bisected so that one bad op is set aside
/// (refused for good) and the rest go through. Returns each sent batch with its results.
/// The body of a push: `{"ops":[...],"device_seq":N}`.
fn push_body(batch: &[InFlight], seq: u64) -> Result<Vec<u8>, Error> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        ops: Vec<&'a fieldvault_core::protocol::sync::PushOp<Box<serde_json::value::RawValue>>>,
        device_seq: u64,
    }
    serde_json::to_vec(&Body { ops: batch.iter().map(|o| &o.op).collect(), device_seq: seq })
        .map_err(|e| Error::MalformedAnswer(e.to_string()))
}

/// The results of a 200 answer to a push.
fn push_results(resp: &Response) -> Result<Vec<fieldvault_core::protocol::sync::OpResult>, Error> {
    let answer: PushResponse = serde_json::from_slice(&resp.body)
        .map_err(|_| Error::MalformedAnswer("a push answer is not a list of results".into()))?;
    Ok(answer.results)
}

/// Pushes `ops` (whose first answer, when already in, is `first`; `None`: send them); a
/// whole-push `bad_request` is bisected so that one bad op is set aside (refused for good)
/// and the rest go through. Returns each sent batch with its results.
fn push_bisecting(
    conn: &mut Connection,
    path: &std::path::Path,
    channel: &mut Channel,
    ops: Vec<InFlight>,
    mut first: Option<Response>,
) -> Result<Vec<Answered>, Error> {
    let mut done = Vec::new();
    let mut work = vec![ops];
    while let Some(batch) = work.pop() {
        let sent = match first.take() {
            Some(resp) => Ok(resp),
            None => {
                let seq = next_device_seq(conn, path)?;
                let bytes = push_body(&batch, seq)?;
                signed(channel, conn, path, Method::Post, "/v1/sync/push", &bytes)
            }
        };
        let resp = match sent {
            // Over the server's body limit: refused before the server could check the
            // signature, so the refusal is unsigned. Halving only changes what is sent next,
            // so it needs no proof; setting an op aside would, and is not done on this word.
            Err(Error::UnsignedRefusal { status: 413, .. }) if batch.len() > 1 => {
                halve(&mut work, batch);
                continue;
            }
            other => other?,
        };
        match resp.status {
            200 => done.push((batch, push_results(&resp)?)),
            // A batch the server cannot take whole (a malformed op, or over its size limit):
            // halves until the one op at fault is set aside and the rest go through.
            400 | 413 if batch.len() > 1 => halve(&mut work, batch),
            400 => engine::reject_op(conn, path, &batch[0], "bad_request")?,
            413 => engine::reject_op(conn, path, &batch[0], "too_large")?,
            _ => return Err(refused(&resp)),
        }
    }
    Ok(done)
}

/// Queues `batch` again as two halves, the first half to be sent first.
fn halve(work: &mut Vec<Vec<InFlight>>, mut batch: Vec<InFlight>) {
    let second = batch.split_off(batch.len() / 2);
    work.push(second);
    work.push(batch);
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
    // Push until the outbox has nothing more to send. While one batch is with the server,
    // the device applies the answer before it and freezes the batch after it (each batch's
    // ops are in flight from then, so no two batches share a document); the next batch is
    // sent only once this one's answer is in, so the server sees `device_seq` in order.
    let mut apply = |conn: &mut Connection, answers: Vec<Answered>, report: &mut SyncReport| -> Result<(), Error> {
        for (ops, results) in answers {
            let s = engine::apply_push(conn, &path, &ops, &results, policy)?;
            report.pushed += s.applied;
            report.conflicts += s.conflicts;
            report.rejected += s.rejected;
            report.held += s.held;
            listeners.notify(&s.changed);
            progress(report, true);
        }
        Ok(())
    };
    let mut next = engine::prepare_push(conn, &path, &[])?;
    let mut answered: Vec<Answered> = Vec::new();
    while !next.is_empty() {
        let batch = std::mem::take(&mut next);
        let seq = next_device_seq(conn, &path)?;
        let bytes = push_body(&batch, seq)?;
        let ((applied, prepared), sent) =
            signed_while(channel, conn, &path, (Method::Post, "/v1/sync/push", &bytes), |conn| {
                let applied = apply(conn, std::mem::take(&mut answered), &mut report);
                let prepared = applied.is_ok().then(|| engine::prepare_push(conn, &path, &batch));
                (applied, prepared)
            });
        applied?;
        next = prepared.transpose()?.unwrap_or_default();
        answered = match sent {
            Ok(resp) if resp.status == 200 => vec![(batch, push_results(&resp)?)],
            // Anything else (a batch to halve, a refusal) is settled one request at a time.
            Ok(resp) => push_bisecting(conn, &path, channel, batch, Some(resp))?,
            Err(Error::UnsignedRefusal { status: 413, .. }) => push_bisecting(conn, &path, channel, batch, None)?,
            Err(e) => return Err(e),
        };
        if next.is_empty() {
            apply(conn, std::mem::take(&mut answered), &mut report)?;
            next = engine::prepare_push(conn, &path, &[])?;
        }
    }
    // Pull every page. A page too large for the transport (large documents) is asked for
    // again with half the limit, down to one document, and the limit grows back after.
    // While the server reads the next page (asked for with this page's cursor), the device
    // applies this one; the cursor is stored with the page it ends, so a failure anywhere
    // leaves the device at the last page it applied.
    // Pages as large as the protocol allows: the server cuts each under 4 MiB of changes, so
    // a page of small documents is one round trip (and one commit here) instead of ten.
    let mut limit = MAX_PULL_LIMIT;
    let mut cursor = stored(conn, &path, state::CURSOR)?;
    let mut received: Option<(pull::RawPage, u32)> = None;
    loop {
        let seq = next_device_seq(conn, &path)?;
        let target = match &cursor {
            Some(c) => format!("/v1/sync/pull?since={c}&limit={limit}&device_seq={seq}"),
            None => format!("/v1/sync/pull?limit={limit}&device_seq={seq}"),
        };
        let page = received.take();
        let (applied, sent) = signed_while(channel, conn, &path, (Method::Get, &target, &[]), |conn| match page {
            Some((page, asked)) => apply_page(conn, &path, &page, asked, listeners, &mut report),
            None => Ok(()),
        });
        applied?;
        progress(&report, true);
        let resp = match sent {
            Err(Error::ResponseTooLarge { .. }) if limit > 1 => {
                limit /= 2;
                continue;
            }
            other => other?,
        };
        if resp.status != 200 {
            return Err(refused(&resp));
        }
        let page: pull::RawPage = serde_json::from_slice(&resp.body)
            .map_err(|_| Error::MalformedAnswer("a pull answer is not a page of changes".into()))?;
        drop(resp);
        let asked = limit;
        limit = (limit * 2).min(MAX_PULL_LIMIT);
        if !page.has_more {
            apply_page(conn, &path, &page, asked, listeners, &mut report)?;
            if state::get(conn, state::RECONCILE).map_err(db_err(&path))?.is_some() {
                let removed = pull::finish_reconcile(conn, &path)?;
                report.pulled += removed.len();
                listeners.notify(&removed);
            }
            progress(&report, false);
            break;
        }
        // Sent back before the page is applied (and checked whole): checked on its own first.
        pull::check_cursor(&page.cursor)?;
        cursor = Some(page.cursor.clone());
        received = Some((page, asked));
    }
    state::set(conn, state::LAST_SYNC_MS, &now_ms().to_string()).map_err(db_err(&path))?;
    Ok(report)
}

/// Plans one pull page against the ops still pending and applies it in one transaction.
fn apply_page(
    conn: &mut Connection,
    path: &std::path::Path,
    page: &pull::RawPage,
    asked: u32,
    listeners: &mut Listeners,
    report: &mut SyncReport,
) -> Result<(), Error> {
    let pending = pull::pending_among(conn, page).map_err(db_err(path))?;
    let plan = pull::plan_pull_page(page, asked, &pending)?;
    let reconciling = state::get(conn, state::RECONCILE).map_err(db_err(path))?.is_some();
    let changed = pull::apply_pull(conn, path, &plan, &page.cursor, reconciling)?;
    report.pulled += changed.len();
    report.skipped += plan.skipped;
    listeners.notify(&changed);
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
    let jwks: Value = stored(conn, path, JWKS)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    let login_at = state::get_i64(conn, LOGIN_AT).map_err(db_err(path))?.unwrap_or(0).max(0) as u64;
    let seen: HashSet<String> =
        stored(conn, path, SEEN_DIRECTIVES)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    Ok(check_directives(tokens, &jwks, user, device, login_at, &seen))
}

/// [`directives::check`] over several tokens: those to act on; the others logged.
pub(super) fn check_directives(
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
