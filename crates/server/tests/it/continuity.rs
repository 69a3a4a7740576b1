//! A device outlives its sessions (SPEC section 5, "Devices and sessions", "Offline lease"):
//! a login naming its device with a proof continues it; one lease key per device, sent again
//! with a later expiry on every login and refresh; wipe, plain logout and rollback retire a
//! device, and only a rollback carries its lease key over; `user remove` deletes it all.
//! Over real TLS on loopback, on every backend.

use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::protocol::auth::{DeviceReason, DeviceSecret};
use fieldvault_server::auth::{Password, Passwords};
use fieldvault_server::{Config, LeaseRecord, LoginDevice, LoginOutcome, NewLogin, accounts, devices};
use serde_json::json;
use zeroize::Zeroizing;

use crate::harness::{Device, Harness, PASSWORD, Response, Signed, backends, now};
use crate::sync::{delete, key, pull_all, push_ok, put};

fn refresh(h: &Harness, d: &Device, attempt: &str) -> Signed {
    let body = json!({ "refresh_token": d.refresh_token, "attempt_id": attempt }).to_string();
    let mut s = Signed::new(d, "POST", "/v1/auth/refresh", body.as_bytes(), h.app.now());
    s.bearer = None;
    s
}

async fn logout(h: &Harness, d: &Device, body: &str) -> Response {
    let r = h.signed(d, "POST", "/v1/auth/logout", body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// The device's own session still works.
async fn live(h: &Harness, d: &Device) -> bool {
    h.signed(d, "GET", "/v1/devices/self", b"").await.status == 200
}

/// The `exp - iat` of a JWT, read without checking it (the verifier is tested elsewhere).
fn lifetime(token: &str) -> u64 {
    let claims = token.split('.').nth(1).expect("claims");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("b64url")).expect("json");
    claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_naming_its_device_continues_it_with_the_same_lease_key_and_a_later_expiry() {
    for b in backends() {
        let h = Harness::start(b).await;
        let first = h.device("alice").await;
        assert!(first.device_secret.is_some(), "sent at the first login");
        assert_eq!(STANDARD.decode(&first.lease.1).expect("b64").len(), 32);
        push_ok(&h, &first, json!([put(&key(), "visits", "v1", json!({"site": "Mill"}), 0)]), 5).await;

        // 50 s later (within the 60 s the token checks allow a server clock to run ahead).
        h.offset.store(50, Ordering::SeqCst);
        let r = h.relogin("alice", &first).await;
        assert_eq!((r.status, r.header("cache-control")), (200, Some("no-store")), "{}", r.text());
        let v = r.json();
        for absent in ["device_secret", "device_reason", "directives"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        let again = Device::from_tokens(&v);
        assert_eq!(again.device_id, first.device_id);
        assert_ne!(again.key_id, first.key_id, "a new session");
        assert_eq!((&again.lease.0, &again.lease.1), (&first.lease.0, &first.lease.1), "the same lease key");
        assert!(
            (first.lease.2 + 49..=first.lease.2 + 52).contains(&again.lease.2),
            "{} -> {}",
            first.lease.2,
            again.lease.2
        );
        // A device has one live session: the earlier one ended.
        assert!(!live(&h, &first).await);
        assert!(live(&h, &again).await);

        // The device's held ids went on: a delete by another device reaches it as a tombstone,
        // which a device that never held the document never sees.
        let other = h.device("alice").await;
        push_ok(&h, &other, json!([delete(&key(), "visits", "v1", 1)]), 1).await;
        let (changes, _) = pull_all(&h, &again, None, 5).await;
        assert_eq!(changes, vec![json!({"collection": "visits", "id": "v1", "op": "delete"})]);
        let (changes, _) = pull_all(&h, &h.device("alice").await, None, 1).await;
        assert!(changes.is_empty(), "{changes:?}");
        // And so did its device_seq: 4 is below the 5 it reached before the login.
        let r = h.pull(&again, None, None, 4).await;
        assert_eq!((r.status, r.code().as_str()), (409, "rollback_detected"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_proof_gets_stale_timestamp_with_the_servers_date_and_costs_no_attempt() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let secret = d.device_secret.as_ref().expect("secret");
        let t = now();
        h.frozen.store(t, Ordering::SeqCst);
        for ts in [t - 301, t + 301] {
            let r = h.relogin_at("alice", PASSWORD, &d.device_id, secret, ts).await;
            assert_eq!((r.status, r.code().as_str()), (401, "stale_timestamp"), "{}", r.text());
            let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
            assert_eq!(r.header("date"), Some(date.as_str()));
        }
        assert_eq!(h.app.store.login_failures("alice", "127.0.0.1").await.expect("store").failures, 0);
        // The edges of the window are inside it.
        for ts in [t - 300, t + 300] {
            let r = h.relogin_at("alice", PASSWORD, &d.device_id, secret, ts).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["device_id"], d.device_id.as_str());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_proof_an_unknown_device_or_another_users_device_is_invalid_grant() {
    for b in backends() {
        let h = Harness::start(b).await;
        let alice = h.device("alice").await;
        let secret = alice.device_secret.as_ref().expect("secret");
        let t = h.app.now();
        let stranger = DeviceSecret::from_bytes(Zeroizing::new([7; 32]));
        let wrong = h.relogin_at("alice", PASSWORD, &alice.device_id, &stranger, t).await;
        let unknown = h.relogin_at("alice", PASSWORD, "d_AAAAAAAAAAAAAAAAAAAAAA", secret, t).await;
        let foreign = h.relogin_at("bob", PASSWORD, &alice.device_id, secret, t).await;
        let body = json!({"user": "alice", "password": PASSWORD, "device_name": "t",
            "device": {"id": alice.device_id, "ts": t, "proof": "not base64"}});
        let malformed = h.plain("POST", "/v1/auth/login", body.to_string().as_bytes()).await;
        for r in [&wrong, &unknown, &foreign, &malformed] {
            assert_eq!((r.status, r.code().as_str()), (401, "invalid_grant"), "{}", r.text());
            assert_eq!(r.body, wrong.body, "the same answer whichever it was");
        }
        // Nothing changed: alice's session and device go on.
        assert!(live(&h, &alice).await);
        assert_eq!(h.device_again("alice", &alice).await.device_id, alice.device_id);
        // A wrong password with a good proof is the wrong password.
        let r = h.relogin_at("alice", "not the password", &alice.device_id, secret, h.app.now()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_grant"));
        // A malformed proof object is a bad request.
        let body =
            json!({"user": "alice", "password": PASSWORD, "device_name": "t", "device": {"id": alice.device_id}});
        let r = h.plain("POST", "/v1/auth/login", body.to_string().as_bytes()).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_sends_the_same_lease_key_again_with_a_later_expiry() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        h.offset.store(40, Ordering::SeqCst);
        let r = h.send(&refresh(&h, &d, "a1").raw()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert!(v.get("device_secret").is_none() && v.get("device_reason").is_none(), "{v}");
        let next = Device::from_tokens(&v);
        assert_eq!((&next.lease.0, &next.lease.1), (&d.lease.0, &d.lease.1));
        assert!(next.lease.2 >= d.lease.2 + 39, "{} -> {}", d.lease.2, next.lease.2);
        let stored = h.app.store.device(&d.device_id).await.expect("store").expect("device");
        assert_eq!(stored.lease.map(|l| l.expires_at), Some(next.lease.2));
        // More than a day on (a refresh used to make a new lease then): still the same key.
        let at = now() + 3 * 86_400;
        h.frozen.store(at, Ordering::SeqCst);
        let r = h.send(&refresh(&h, &next, "a2").raw()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let lease = &r.json()["lease"];
        assert_eq!(
            (lease["key"].as_str(), lease["expires_at"].as_u64()),
            (Some(d.lease.1.as_str()), Some(at + h.app.config.lease_ttl))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_and_disable_then_enable_end_sessions_and_keep_the_device_and_its_lease_key() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let passwords = Passwords::new(1).expect("hasher");
        let pw = Password::new(Zeroizing::new(PASSWORD.into()));
        accounts::set_password(&h.app.store, "cli:test", &passwords, "alice", pw, now()).await.expect("passwd");
        assert!(!live(&h, &d).await, "the session ended");
        let after_passwd = h.device_again("alice", &d).await;
        assert_eq!((&after_passwd.device_id, &after_passwd.lease.1), (&d.device_id, &d.lease.1));

        accounts::disable_user(&h.app.store, "cli:test", "alice", now()).await.expect("disable");
        assert!(!live(&h, &after_passwd).await);
        let r = h.relogin("alice", &after_passwd).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_grant"), "disabled");
        let device = h.app.store.device(&d.device_id).await.expect("store").expect("kept");
        assert!(device.lease.is_some() && device.retired.is_none(), "{device:?}");
        accounts::enable_user(&h.app.store, "cli:test", "alice", 0).await.expect("enable");
        let after_enable = h.device_again("alice", &after_passwd).await;
        assert_eq!(
            (&after_enable.device_id, &after_enable.lease.0, &after_enable.lease.1),
            (&d.device_id, &d.lease.0, &d.lease.1)
        );
        assert!(matches!(
            accounts::enable_user(&h.app.store, "cli:test", "nobody", 0).await,
            Err(accounts::AccountError::NoSuchUser(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_device_logout_keeps_the_device_and_a_plain_logout_retires_it_for_good() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        for bad in [r#"{"keep_device":"yes"}"#, r#"{"keep_data":true}"#, "keep"] {
            let r = h.signed(&d, "POST", "/v1/auth/logout", bad.as_bytes()).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{bad}");
        }
        assert!(live(&h, &d).await, "a refused logout changes nothing");
        logout(&h, &d, r#"{"keep_device":true}"#).await;
        assert!(!live(&h, &d).await);
        let kept = h.device_again("alice", &d).await;
        assert_eq!((&kept.device_id, &kept.lease.1), (&d.device_id, &d.lease.1));

        logout(&h, &kept, r#"{"keep_device":false}"#).await;
        let device = h.app.store.device(&d.device_id).await.expect("store").expect("kept for the record");
        assert_eq!((device.retired, device.lease), (Some(DeviceReason::Retired), None), "the lease key is deleted");
        let r = h.relogin("alice", &kept).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["device_reason"], "retired");
        let fresh = Device::from_tokens(&v);
        assert_ne!(fresh.device_id, d.device_id);
        assert!(fresh.device_secret.is_some(), "a new device gets its own secret");
        assert!(
            fresh.lease.0 != d.lease.0 && fresh.lease.1 != d.lease.1,
            "the old lease key is never handed out again"
        );
        // Naming the retired device again makes yet another device; the lease key stays gone.
        let again = Device::from_tokens(&h.relogin("alice", &kept).await.json());
        assert!(again.device_id != fresh.device_id && again.lease.1 != d.lease.1 && again.lease.1 != fresh.lease.1);

        // `{}` and no body at all are plain logouts too.
        for body in ["{}", ""] {
            let x = h.device("bob").await;
            logout(&h, &x, body).await;
            let device = h.app.store.device(&x.device_id).await.expect("store").expect("kept");
            assert_eq!((device.retired, device.lease), (Some(DeviceReason::Retired), None), "{body:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_device_logging_in_again_gets_the_reason_and_its_wipe_directive() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let claims =
            devices::issue_directive(&h.app.store, "cli:test", &h.app.tokens, &d.device_id, DirectiveKind::Wipe, now())
                .await
                .expect("wipe");
        let r = h.relogin("alice", &d).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["device_reason"], "wiped");
        let directives = v["directives"].as_array().expect("directives");
        assert_eq!(directives.len(), 1, "{v}");
        let directive = h.app.verifier.directive(directives[0].as_str().expect("jws")).expect("a valid directive");
        assert_eq!(directive, claims);
        assert_eq!((directive.kind, directive.device_id.as_str()), (DirectiveKind::Wipe, d.device_id.as_str()));
        let fresh = Device::from_tokens(&v);
        assert!(fresh.device_id != d.device_id && fresh.lease.1 != d.lease.1 && fresh.device_secret.is_some());
        // The old session may still acknowledge it (signed, revoked, no access token).
        let ack = json!({ "jtis": [claims.jti] }).to_string();
        let mut req = Signed::new(&d, "POST", "/v1/devices/ack", ack.as_bytes(), now());
        req.bearer = None;
        let r = h.send(&req.raw()).await;
        assert_eq!((r.status, r.json()["acknowledged"].as_u64()), (200, Some(1)), "{}", r.text());
        // Acknowledged, it no longer rides on a login naming the device; the reason stays.
        let v = h.relogin("alice", &d).await.json();
        assert_eq!((v["device_reason"].as_str(), v.get("directives")), (Some("wiped"), None), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rollback_a_new_device_takes_over_the_lease_key_and_the_old_one_is_retired() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        push_ok(&h, &d, json!([put(&key(), "visits", "v1", json!({"x": 1}), 0)]), 5).await;
        let r = h.push(&d, json!([]), 3).await;
        assert_eq!((r.status, r.code().as_str()), (409, "rollback_detected"));
        assert!(!live(&h, &d).await, "the rolled-back device's sessions ended");
        let old = h.app.store.device(&d.device_id).await.expect("store").expect("kept");
        assert_eq!(old.retired, Some(DeviceReason::Rollback));
        assert!(old.lease.is_some(), "its lease key waits for its next login");

        let r = h.relogin("alice", &d).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["device_reason"], "rollback");
        let next = Device::from_tokens(&v);
        assert_ne!(next.device_id, d.device_id, "a new device id");
        assert!(next.device_secret.is_some(), "with its own device secret");
        assert_eq!((&next.lease.0, &next.lease.1), (&d.lease.0, &d.lease.1), "holding the old lease key");
        assert!(next.lease.2 >= d.lease.2);
        let old = h.app.store.device(&d.device_id).await.expect("store").expect("kept");
        assert_eq!((old.retired, old.lease), (Some(DeviceReason::Rollback), None), "one holder only");
        // Fresh held ids and device_seq: it starts at 1, and a pull from the start sends v1.
        let (changes, _) = pull_all(&h, &next, None, 1).await;
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0]["op"], "put");
        // The old device named again (another copy of the vault): a new device, a new lease key.
        let r = h.relogin("alice", &d).await;
        let v = r.json();
        assert_eq!(v["device_reason"], "retired", "{v}");
        let other = Device::from_tokens(&v);
        assert!(other.device_id != next.device_id && other.lease.1 != d.lease.1);
        // The device that took over goes on as any device does.
        let continued = h.device_again("alice", &next).await;
        assert_eq!((&continued.device_id, &continued.lease.1), (&next.device_id, &d.lease.1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logins_racing_for_one_rolled_back_device_hand_its_lease_to_one_of_them() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        push_ok(&h, &d, json!([]), 5).await;
        assert_eq!(h.push(&d, json!([]), 4).await.status, 409);
        let lease = h.app.store.device(&d.device_id).await.expect("store").expect("kept").lease.expect("lease");
        let take_over = |n: u8| NewLogin {
            session_id: format!("s_race{n}"),
            key_id: format!("k_race{n}"),
            user: "alice".into(),
            secret_sealed: vec![n; 60],
            refresh_hash: [n; 32],
            device_name: "copy".into(),
            device: LoginDevice::TakeOver {
                id: format!("d_race{n}"),
                secret_sealed: vec![n; 60],
                from: d.device_id.clone(),
                lease: LeaseRecord { expires_at: now() + 10, ..lease.clone() },
            },
            totp: None,
            now: now(),
        };
        let (one, two) = (take_over(1), take_over(2));
        let event = fieldvault_server::AuditEvent::new(0, "test", "test", "");
        let (a, b2) = tokio::join!(h.app.store.login(&one, &event), h.app.store.login(&two, &event));
        let won: Vec<bool> =
            [a.expect("store"), b2.expect("store")].iter().map(|o| *o == LoginOutcome::Recorded).collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
        let winner = if won[0] { "d_race1" } else { "d_race2" };
        let loser = if won[0] { "d_race2" } else { "d_race1" };
        assert_eq!(h.app.store.device(winner).await.expect("store").expect("made").lease.map(|l| l.id), Some(lease.id));
        assert_eq!(h.app.store.device(loser).await.expect("store"), None, "the losing login changed nothing");
        assert!(h.app.store.session_by_key_id(&format!("k_race{}", &loser[6..])).await.expect("store").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_logout_keeps_the_lease_key_and_the_revoked_session_acknowledges_without_a_token() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
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
        assert!(!live(&h, &d).await);
        let ack = json!({ "jtis": [claims.jti] }).to_string();
        let mut req = Signed::new(&d, "POST", "/v1/devices/ack", ack.as_bytes(), now());
        req.bearer = None;
        let r = h.send(&req.raw()).await;
        r.verify(&d.secret, &req.nonce).expect("a signed answer");
        assert_eq!((r.status, r.json()["acknowledged"].as_u64()), (200, Some(1)), "{}", r.text());
        // After the logout the device comes back with its lease key.
        let again = h.device_again("alice", &d).await;
        assert_eq!((&again.device_id, &again.lease.1), (&d.device_id, &d.lease.1));
        // And a keep_device logout's session can acknowledge too.
        logout(&h, &again, r#"{"keep_device":true}"#).await;
        let mut req =
            Signed::new(&again, "POST", "/v1/devices/ack", json!({"jtis": ["dir_none"]}).to_string().as_bytes(), now());
        req.bearer = None;
        let r = h.send(&req.raw()).await;
        assert_eq!((r.status, r.json()["acknowledged"].as_u64()), (200, Some(0)), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_user_deletes_their_devices_and_lease_keys_and_nothing_of_anyone_else() {
    for b in backends() {
        let h = Harness::start(b).await;
        let (a1, a2, bob) = (h.device("alice").await, h.device("alice").await, h.device("bob").await);
        push_ok(&h, &a1, json!([put(&key(), "visits", "v1", json!({"x": 1}), 0)]), 1).await;
        accounts::remove_user(&h.app.store, "cli:test", "alice", 0).await.expect("remove");
        for d in [&a1, &a2] {
            assert_eq!(h.app.store.device(&d.device_id).await.expect("store"), None);
            // The session is gone with the user: its key id names nothing (so no signed answer).
            let r = h.send(&Signed::new(d, "GET", "/v1/devices/self", b"", now()).raw()).await;
            assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
        }
        assert!(h.app.store.devices().await.expect("store").iter().all(|d| d.user != "alice"));
        assert_eq!(h.login("alice", PASSWORD).await.code(), "invalid_grant");
        assert!(h.app.store.user("alice").await.expect("store").is_none());
        assert!(matches!(
            accounts::remove_user(&h.app.store, "cli:test", "alice", 0).await,
            Err(accounts::AccountError::NoSuchUser(_))
        ));
        // Bob is untouched; alice's documents stay (owned by the name).
        assert!(live(&h, &bob).await);
        assert!(h.app.store.document("visits", "v1").await.expect("store").is_some());
        // The name can be added again; the new alice's first login is a new device.
        h.add_user("alice", &[]).await;
        let r = h.relogin("alice", &a1).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_grant"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_and_lease_lifetimes_come_from_the_configuration() {
    for b in backends() {
        let config = Config { access_ttl: 120, lease_ttl: 3_600, offline_ttl: 3_600, ..Config::default() };
        let h = Harness::start_bare_with_config(b, None, config).await;
        h.add_user("alice", &[]).await;
        let t = now();
        h.frozen.store(t, Ordering::SeqCst);
        let r = h.login("alice", PASSWORD).await;
        let v = r.json();
        assert_eq!((v["expires_in"].as_u64(), v["lease"]["expires_at"].as_u64()), (Some(120), Some(t + 3_600)));
        assert_eq!(lifetime(v["access_token"].as_str().expect("at")), 120);
        assert_eq!(lifetime(v["offline_token"].as_str().expect("ot")), 3_600);
        let d = Device::from_tokens(&v);
        h.frozen.store(t + 10, Ordering::SeqCst);
        let r = h.send(&refresh(&h, &d, "a").raw()).await;
        assert_eq!(r.json()["lease"]["expires_at"].as_u64(), Some(t + 10 + 3_600));
        let r = h.relogin("alice", &d).await;
        assert_eq!(r.json()["lease"]["expires_at"].as_u64(), Some(t + 10 + 3_600));
        assert_eq!(lifetime(r.json()["access_token"].as_str().expect("at")), 120);
    }
}
