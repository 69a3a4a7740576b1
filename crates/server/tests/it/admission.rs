//! Admitting signed requests at line rate (issue 20): the group commit of nonces, the
//! store-wide revocation epoch every revocation raises, and the verified-session cache that
//! trusts nothing it holds past a raise of it. On every backend.

use std::sync::Arc;

use fieldvault_core::protocol::DirectiveKind;
use fieldvault_server::auth::{Password, Passwords};
use fieldvault_server::{NonceClaim, Store, accounts, devices};
use zeroize::Zeroizing;

use crate::harness::{Backend, Harness, Signed, backends, now};

fn claim(key_id: &str, nonce: u8) -> NonceClaim {
    NonceClaim { key_id: key_id.to_owned(), nonce: [nonce; 16], expires_at: now() + 600 }
}

async fn epoch(store: &Arc<dyn Store>) -> u64 {
    store.claim_nonces(Vec::new()).await.expect("reads the epoch").revocation_epoch
}

/// Makes the store fail every batch that holds nonce `[0xEE; 16]`, as a database that fails
/// half way through a batch would: the rows before it are written, then the statement fails.
async fn poison(h: &Harness) {
    match h.backend {
        Backend::Sqlite => h
            .raw_sql(
                "CREATE TRIGGER poisoned BEFORE INSERT ON nonces WHEN NEW.nonce = x'EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE'
                 BEGIN SELECT RAISE(ABORT, 'the disk is full'); END",
            )
            .await
            .expect("trigger"),
        Backend::Postgres { .. } => {
            h.raw_sql(
                "CREATE FUNCTION poisoned() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF NEW.nonce = decode('EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE', 'hex') THEN
                     RAISE EXCEPTION 'the disk is full'; END IF; RETURN NEW; END $$",
            )
            .await
            .expect("function");
            h.raw_sql("CREATE TRIGGER poisoned BEFORE INSERT ON nonces FOR EACH ROW EXECUTE FUNCTION poisoned()")
                .await
                .expect("trigger");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_records_each_nonce_once_and_reads_the_revocation_epoch() {
    for b in backends() {
        let h = Harness::start_bare(b).await;
        let store = &h.app.store;
        let before = epoch(store).await;
        assert!(store.insert_nonce("k1", &[3; 16], now() + 600).await.expect("insert"));
        let claimed = store
            .claim_nonces(vec![claim("k1", 1), claim("k2", 1), claim("k1", 1), claim("k1", 3), claim("k1", 2)])
            .await
            .expect("claims");
        // A repeat within the batch and a nonce seen before are replays; the rest are new.
        assert_eq!(claimed.fresh, [true, true, false, false, true]);
        assert_eq!(claimed.revocation_epoch, before, "nothing was revoked");
        let again = store.claim_nonces(vec![claim("k2", 1), claim("k2", 2)]).await.expect("claims");
        assert_eq!(again.fresh, [false, true], "committed: the next batch finds them");
        // The new nonce of a batch that also held a replay is recorded all the same (on
        // PostgreSQL such a batch is the one sent twice: the plain insert refused, then the
        // insert of the new rows alone).
        let third = store.claim_nonces(vec![claim("k2", 4), claim("k2", 2)]).await.expect("claims");
        assert_eq!(third.fresh, [true, false]);
        let fourth = store.claim_nonces(vec![claim("k2", 4)]).await.expect("claims");
        assert_eq!(fourth.fresh, [false], "recorded by the batch that held a replay");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_mid_batch_records_no_nonce_of_the_batch() {
    for b in backends() {
        let h = Harness::start_bare(b).await;
        poison(&h).await;
        let store = &h.app.store;
        let failed = store.claim_nonces(vec![claim("k1", 1), claim("k1", 0xEE), claim("k1", 2)]).await;
        assert!(failed.is_err(), "{failed:?}");
        // None of it is half applied: the nonces before the failure are still new.
        let after = store.claim_nonces(vec![claim("k1", 1), claim("k1", 2)]).await.expect("claims");
        assert_eq!(after.fresh, [true, true]);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_requests_of_a_failed_group_commit_are_all_refused_and_none_is_recorded() {
    for b in backends() {
        let h = Harness::start_bare(b).await;
        poison(&h).await;
        let replay = &h.app.replay;
        // Queued together on this one thread, before the writer runs: one batch.
        let (good, bad, also) =
            tokio::join!(replay.claim(claim("k1", 1)), replay.claim(claim("k1", 0xEE)), replay.claim(claim("k1", 2)));
        assert!(good.is_err() && bad.is_err() && also.is_err(), "{good:?} {bad:?} {also:?}");
        let (good, also) = tokio::join!(replay.claim(claim("k1", 1)), replay.claim(claim("k1", 2)));
        assert!(good.expect("claims").fresh && also.expect("claims").fresh, "nothing of the failed batch stayed");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn of_one_nonce_claimed_many_times_in_one_group_commit_exactly_one_is_fresh() {
    for b in backends() {
        let h = Harness::start_bare(b).await;
        let replay = &h.app.replay;
        let claims = (0..8).map(|_| replay.claim(claim("k1", 9)));
        let answers = join_all(claims).await;
        let fresh = answers.iter().filter(|a| a.as_ref().expect("claims").fresh).count();
        assert_eq!(fresh, 1, "{answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_sharing_nonces_in_opposite_orders_both_complete_on_postgresql() {
    for b in backends() {
        if !matches!(b, Backend::Postgres { .. }) {
            continue; // One writer on SQLite: batches never run side by side.
        }
        let h = Harness::start_bare(b).await;
        // Each insert takes a while, so that two batches run side by side row by row: taken
        // in the order each batch lists them, the first would hold k1's nonce 1 and wait for
        // nonce 2, the second hold nonce 2 and wait for nonce 1 (a deadlock, one batch failed).
        h.raw_sql(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$",
        )
        .await
        .expect("function");
        h.raw_sql("CREATE TRIGGER slow BEFORE INSERT ON nonces FOR EACH ROW EXECUTE FUNCTION slow()")
            .await
            .expect("trigger");
        let store = &h.app.store;
        let (one, other) = tokio::join!(
            store.claim_nonces(vec![claim("k1", 1), claim("k1", 2)]),
            store.claim_nonces(vec![claim("k1", 2), claim("k1", 1)]),
        );
        let (one, other) = (one.expect("the first batch"), other.expect("the second batch"));
        // Exactly one claim of each nonce is fresh, whichever batch went first.
        assert_eq!(one.fresh.iter().filter(|&&f| f).count() + other.fresh.iter().filter(|&&f| f).count(), 2);
        assert_eq!(one.fresh[0] as u8 + other.fresh[1] as u8, 1, "nonce 1: {one:?} {other:?}");
        assert_eq!(one.fresh[1] as u8 + other.fresh[0] as u8, 1, "nonce 2: {one:?} {other:?}");
    }
}

/// Polls every future in turn on this task until all are done (so that all are queued before
/// the first await gives the writer its turn).
pub(crate) async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|o| o.expect("done")).collect()
}

/// Asserts that the epoch went up since `before` (the action revoked something) and returns it.
async fn raised(store: &Arc<dyn Store>, before: u64, what: &str) -> u64 {
    let after = epoch(store).await;
    assert!(after > before, "{what} raised the revocation epoch ({before} -> {after})");
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_raises_the_revocation_epoch_and_nothing_else_does() {
    for b in backends() {
        let h = Harness::start(b).await;
        let store = &h.app.store;
        let passwords = Passwords::new(1).expect("hasher");
        let e = epoch(store).await;
        let d = h.device("alice").await;
        assert_eq!(h.signed(&d, "GET", "/v1/devices/self", b"").await.status, 200);
        accounts::enable_user(store, "cli:test", "bob", now()).await.expect("enable");
        assert_eq!(epoch(store).await, e, "a login, a request and an enable revoke nothing");

        let logout = serde_json::json!({ "keep_device": true }).to_string();
        assert_eq!(h.signed(&d, "POST", "/v1/auth/logout", logout.as_bytes()).await.status, 200);
        let e = raised(store, e, "a logout").await;

        let d = h.device("alice").await;
        let refresh = |token: &str, attempt: &str| {
            let body = serde_json::json!({ "refresh_token": token, "attempt_id": attempt }).to_string();
            let mut s = Signed::new(&d, "POST", "/v1/auth/refresh", body.as_bytes(), now());
            s.bearer = None;
            s
        };
        assert_eq!(h.send(&refresh(&d.refresh_token, "a1").raw()).await.status, 200);
        assert_eq!(epoch(store).await, e, "a refresh revokes nothing");
        assert_eq!(h.send(&refresh(&d.refresh_token, "a2").raw()).await.status, 401);
        let e = raised(store, e, "a refresh token reused").await;

        h.device("alice").await;
        let password = Password::new(Zeroizing::new("another long enough password".into()));
        accounts::set_password(store, "cli:test", &passwords, "alice", password, now()).await.expect("passwd");
        let e = raised(store, e, "a password change").await;

        h.device("bob").await;
        accounts::disable_user(store, "cli:test", "bob", now()).await.expect("disable");
        let e = raised(store, e, "a disable").await;
        accounts::enable_user(store, "cli:test", "bob", now()).await.expect("enable");

        let d = h.device("bob").await;
        let signer = &h.app.tokens;
        let directive = devices::issue_directive(store, "cli:test", signer, &d.device_id, DirectiveKind::Revoke, now())
            .await
            .expect("revoke");
        let e = raised(store, e, "a device revoke").await;
        let ack = serde_json::json!({ "jtis": [directive.jti] }).to_string();
        let mut req = Signed::new(&d, "POST", "/v1/devices/ack", ack.as_bytes(), now());
        req.bearer = None;
        assert_eq!(h.send(&req.raw()).await.json()["acknowledged"], 1);
        let e = raised(store, e, "a directive acknowledged").await;

        let d = h.device("bob").await;
        devices::issue_directive(store, "cli:test", signer, &d.device_id, DirectiveKind::Wipe, now())
            .await
            .expect("wipe");
        let e = raised(store, e, "a device wipe").await;

        accounts::remove_user(store, "cli:test", "bob", now()).await.expect("remove");
        raised(store, e, "a user removed").await;
    }
}

/// A request with `d`'s current credentials: its status and code, after checking that the
/// answer is signed over its nonce (every answer after the signature verified is).
async fn attempt(h: &Harness, d: &crate::harness::Device, at: u64) -> (u16, String) {
    let req = Signed::new(d, "GET", "/v1/devices/self", b"", at);
    let r = h.send(&req.raw()).await;
    r.verify(&d.secret, &req.nonce).expect("a signed answer");
    let code = if r.status == 200 { String::new() } else { r.code() };
    (r.status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_session_is_refused_at_its_very_next_request_after_any_revocation() {
    let refused = (401, "invalid_token".to_owned());
    for b in backends() {
        let h = Harness::start(b).await;
        let store = &h.app.store;
        let passwords = Passwords::new(1).expect("hasher");
        // Each device is cached (its session and its token) by a first request, then revoked
        // past the server, then refused on the very next request.
        let d = h.device("alice").await;
        assert_eq!(attempt(&h, &d, now()).await.0, 200);
        let password = Password::new(Zeroizing::new("another long enough password".into()));
        accounts::set_password(store, "console:root", &passwords, "alice", password, now()).await.expect("passwd");
        assert_eq!(attempt(&h, &d, now()).await, refused, "after a password change");

        let d = h.device("bob").await;
        assert_eq!(attempt(&h, &d, now()).await.0, 200);
        // A `fieldvault-server` subcommand in another process, beside the running server.
        let out = crate::audit::cli(&h, &["user", "disable", "bob"]);
        assert!(out.status.success(), "{}", crate::text(&out.stderr));
        assert_eq!(attempt(&h, &d, now()).await, refused, "after `user disable` in another process");
        let out = crate::audit::cli(&h, &["user", "enable", "bob"]);
        assert!(out.status.success(), "{}", crate::text(&out.stderr));
        assert_eq!(attempt(&h, &d, now()).await, refused, "enabling brings no session back");

        let d = h.device("bob").await;
        assert_eq!(attempt(&h, &d, now()).await.0, 200);
        let out = crate::audit::cli(&h, &["device", "revoke", &d.device_id]);
        assert!(out.status.success(), "{}", crate::text(&out.stderr));
        let req = Signed::new(&d, "GET", "/v1/devices/self", b"", now());
        let r = h.send(&req.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"), "after `device revoke`");
        assert!(r.header("x-fieldvault-directives").is_some(), "the new directive rides the refusal");

        let d = h.device("bob").await;
        assert_eq!(attempt(&h, &d, now()).await.0, 200);
        accounts::remove_user(store, "console:root", "bob", now()).await.expect("remove");
        assert_eq!(attempt(&h, &d, now()).await, refused, "after the user was removed");
        // Then forgotten: the key id names no session, refused before the signature (unsigned).
        let r = h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", now()).raw()).await;
        assert_eq!((r.status, r.code().as_str(), r.header("x-signature")), (401, "invalid_token", None));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_access_token_still_expires_and_binds_to_its_session() {
    for b in backends() {
        let h = Harness::start(b).await;
        let (a, other) = (h.device("alice").await, h.device("alice").await);
        assert_eq!(attempt(&h, &a, now()).await.0, 200);
        assert_eq!(attempt(&h, &other, now()).await.0, 200);
        // Another session's token, already verified and remembered there, under this key id.
        let mut swapped = Signed::new(&a, "GET", "/v1/devices/self", b"", now());
        swapped.bearer = Some(other.access_token.clone());
        let r = h.send(&swapped.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
        // Past the token's expiry (600 s) by the server's clock: refused though remembered.
        h.offset.store(601, std::sync::atomic::Ordering::SeqCst);
        let late = now() + 601;
        assert_eq!(attempt(&h, &a, late).await, (401, "invalid_token".to_owned()));
    }
}
