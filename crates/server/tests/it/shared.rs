//! Two server instances on one PostgreSQL share sessions, nonces and refresh spends.

use crate::harness::{Harness, Signed, now, postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sent_to_the_second_instance_is_refused() {
    let Some(pg) = postgres() else { return };
    let a = Harness::start(pg).await;
    let b = a.sibling().await;
    assert_ne!(a.addr, b.addr);
    // Logged in on A, the session works on B.
    let d = a.device("alice").await;
    let req = Signed::new(&d, "GET", "/v1/devices/self", b"", now());
    let first = b.send(&req.raw()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // The same request replayed to A is refused: the nonce is in the shared store.
    let replay = a.send(&req.raw()).await;
    assert_eq!((replay.status, replay.code().as_str()), (401, "replayed_nonce"));
    // A refresh spent on A cannot be spent again on B with another attempt: reuse revokes.
    let body = |t: &str, at: &str| serde_json::json!({ "refresh_token": t, "attempt_id": at }).to_string();
    let mut r1 = Signed::new(&d, "POST", "/v1/auth/refresh", body(&d.refresh_token, "one").as_bytes(), now());
    r1.bearer = None;
    assert_eq!(a.send(&r1.raw()).await.status, 200);
    let mut r2 = Signed::new(&d, "POST", "/v1/auth/refresh", body(&d.refresh_token, "two").as_bytes(), now());
    r2.bearer = None;
    let reuse = b.send(&r2.raw()).await;
    assert_eq!((reuse.status, reuse.code().as_str()), (401, "invalid_grant"));
    let after = a.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", now()).raw()).await;
    assert_eq!(after.status, 401, "revoked on both instances");
    // A logout on B ends a session made on A.
    let d2 = a.device("bob").await;
    assert_eq!(b.send(&Signed::new(&d2, "POST", "/v1/auth/logout", b"", now()).raw()).await.status, 200);
    assert_eq!(a.send(&Signed::new(&d2, "GET", "/v1/devices/self", b"", now()).raw()).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_request_replayed_across_both_instances_runs_exactly_once() {
    let Some(pg) = postgres() else { return };
    let a = Harness::start(pg).await;
    let b = a.sibling().await;
    let d = a.device("alice").await;
    // Cached on both instances first, so the burst meets the group commit, not a cold read.
    for h in [&a, &b] {
        assert_eq!(h.signed(&d, "GET", "/v1/devices/self", b"").await.status, 200);
    }
    let req = Signed::new(&d, "GET", "/v1/devices/self", b"", now()).raw();
    // All sent at once, half to each instance, on one task (every send in flight together).
    let sends = (0..16).map(|i| if i % 2 == 0 { a.send(&req) } else { b.send(&req) });
    let answers = crate::admission::join_all(sends).await;
    let statuses: Vec<(u16, String)> =
        answers.iter().map(|r| (r.status, if r.status == 200 { String::new() } else { r.code() })).collect();
    assert_eq!(statuses.iter().filter(|(s, _)| *s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|(s, c)| *s == 200 || (*s == 401 && c == "replayed_nonce")), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_instance_is_refused_by_the_other_at_its_next_request() {
    let Some(pg) = postgres() else { return };
    let a = Harness::start(pg).await;
    let b = a.sibling().await;
    let d = a.device("alice").await;
    // B has verified the session and its token, and remembers both.
    for _ in 0..2 {
        assert_eq!(b.signed(&d, "GET", "/v1/devices/self", b"").await.status, 200);
    }
    // The device logs out through A; B's very next request with the same token is refused.
    let logout = serde_json::json!({ "keep_device": true }).to_string();
    assert_eq!(a.signed(&d, "POST", "/v1/auth/logout", logout.as_bytes()).await.status, 200);
    let r = b.signed(&d, "GET", "/v1/devices/self", b"").await;
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
    // A password changed through A (a session B has cached): the same.
    let d = a.device("alice").await;
    assert_eq!(b.signed(&d, "GET", "/v1/devices/self", b"").await.status, 200);
    let passwords = fieldvault_server::auth::Passwords::new(1).expect("hasher");
    let password =
        fieldvault_server::auth::Password::new(zeroize::Zeroizing::new("another long enough password".into()));
    fieldvault_server::accounts::set_password(&a.app.store, "cli:test", &passwords, "alice", password, now())
        .await
        .expect("passwd");
    let r = b.signed(&d, "GET", "/v1/devices/self", b"").await;
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
}
