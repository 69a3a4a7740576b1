//! Remote logout and wipe: directives on every response to the device until it acknowledges
//! them, the device's sessions and lease keys gone, other devices untouched.

use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::protocol::auth::DeviceReason;
use fieldvault_server::devices;

use crate::harness::{Harness, Signed, backends, now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_device_gets_the_directive_on_every_answer_until_it_acknowledges() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (lost, other) = (h.device("alice").await, h.device("alice").await);
        let before = h.app.store.session_by_key_id(&lost.key_id).await.expect("store").expect("session");
        assert!(before.directives.is_empty());
        assert!(h.app.store.device(&lost.device_id).await.expect("store").expect("device").lease.is_some());

        let claims = devices::issue_directive(
            &h.app.store,
            "cli:test",
            &h.app.tokens,
            &lost.device_id,
            DirectiveKind::Wipe,
            now(),
        )
        .await
        .expect("wipe");
        // The server forgot the device's session and lease key in the same step, and retired it.
        let after = h.app.store.session_by_key_id(&lost.key_id).await.expect("store").expect("session");
        assert!(after.revoked, "{after:?}");
        let device = h.app.store.device(&lost.device_id).await.expect("store").expect("device");
        assert_eq!((device.lease, device.retired), (None, Some(DeviceReason::Wiped)));

        // Every answer to that device carries the directive, the 401 included, signed by the
        // server's token key and bound to this user, device and session.
        let r = h.signed(&lost, "GET", "/v1/devices/self", b"").await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
        let header = r.header("x-fieldvault-directives").expect("directive header").to_owned();
        let d = h.app.verifier.directive(&header).expect("a valid directive");
        assert_eq!(d, claims);
        assert_eq!(
            (d.sub.as_str(), d.device_id.as_str(), d.sid.as_str()),
            ("alice", lost.device_id.as_str(), before.id.as_str())
        );
        assert_eq!(d.kind, DirectiveKind::Wipe);
        assert!(h.app.verifier.access(&header, now()).is_err(), "a directive is not an access token");
        // A refresh on the revoked session: refused, and the directive rides along.
        let body = serde_json::json!({ "refresh_token": lost.refresh_token, "attempt_id": "a1" }).to_string();
        let mut refresh = Signed::new(&lost, "POST", "/v1/auth/refresh", body.as_bytes(), now());
        refresh.bearer = None;
        let r = h.send(&refresh.raw()).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("x-fieldvault-directives"), Some(header.as_str()));

        // Alice's other device is not affected.
        let r = h.signed(&other, "GET", "/v1/devices/self", b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-fieldvault-directives"), None);

        // `device list` shows it revoked with the pending wipe.
        let list = devices::list(&h.app.store).await.expect("list");
        let row = list.iter().find(|x| x.id == lost.device_id).expect("listed");
        assert!(!row.active);
        let pending: Vec<_> = row.pending().map(|d| (d.jti.clone(), d.kind.clone(), d.state())).collect();
        assert_eq!(
            pending,
            vec![(claims.jti.clone(), "wipe".to_owned(), fieldvault_server::DirectiveState::Sent)],
            "it has ridden answers"
        );

        // The acknowledgement is signed with the (revoked) session's secret, no access token.
        let ack = serde_json::json!({ "jtis": [claims.jti, "dir_unknown"] }).to_string();
        let mut req = Signed::new(&lost, "POST", "/v1/devices/ack", ack.as_bytes(), now());
        req.bearer = None;
        let r = h.send(&req.raw()).await;
        r.verify(&lost.secret, &req.nonce).expect("signed");
        assert_eq!((r.status, r.json()["acknowledged"].as_u64()), (200, Some(1)), "{}", r.text());
        // Acknowledging again, or another device's directive, acknowledges nothing.
        let mut again = Signed::new(&other, "POST", "/v1/devices/ack", ack.as_bytes(), now());
        again.bearer = None;
        assert_eq!(h.send(&again.raw()).await.json()["acknowledged"], 0);
        // Then the header is gone; the session stays revoked.
        let r = h.signed(&lost, "GET", "/v1/devices/self", b"").await;
        assert_eq!((r.status, r.header("x-fieldvault-directives")), (401, None));
        // A forged acknowledgement (bad signature) is refused like any signed request.
        let mut forged = Signed::new(&lost, "POST", "/v1/devices/ack", ack.as_bytes(), now());
        forged.bearer = None;
        forged.signature = Signed::new(&other, "POST", "/v1/devices/ack", ack.as_bytes(), now()).signature;
        assert_eq!(h.send(&forged.raw()).await.code(), "invalid_signature");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_directive_for_an_unknown_device_changes_nothing() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let d = h.device("bob").await;
        let err =
            devices::issue_directive(&h.app.store, "cli:test", &h.app.tokens, "dev_nope", DirectiveKind::Revoke, now())
                .await;
        assert!(matches!(err, Err(devices::DeviceError::NoSuchDevice(_))), "{err:?}");
        assert_eq!(h.signed(&d, "GET", "/v1/devices/self", b"").await.status, 200);
        let claims = devices::issue_directive(
            &h.app.store,
            "cli:test",
            &h.app.tokens,
            &d.device_id,
            DirectiveKind::Revoke,
            now(),
        )
        .await
        .expect("revoke");
        let r = h.signed(&d, "GET", "/v1/devices/self", b"").await;
        let header = r.header("x-fieldvault-directives").expect("directive");
        assert_eq!(h.app.verifier.directive(header).expect("valid").kind, DirectiveKind::Revoke);
        assert_eq!(claims.kind, DirectiveKind::Revoke);
        // A remote logout ends sessions, not the device: its lease key stays for its next login.
        let device = h.app.store.device(&d.device_id).await.expect("store").expect("device");
        assert!(device.lease.is_some() && device.retired.is_none(), "{device:?}");
    }
}
