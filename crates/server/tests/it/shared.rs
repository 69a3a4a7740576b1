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
