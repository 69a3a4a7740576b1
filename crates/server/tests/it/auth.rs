//! Login, throttling, refresh rotation with reuse detection, logout, JWKS: over real TLS on
//! loopback, on every backend.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fieldvault_core::protocol::TokenVerifier;

use crate::harness::{Device, Harness, PASSWORD, Signed, backends, now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_tokens_secret_device_and_lease_with_no_store() {
    for b in backends() {
        let h = Harness::start(b).await;
        let r = h.login("alice", PASSWORD).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let v = r.json();
        for k in ["access_token", "refresh_token", "offline_token", "session_secret", "key_id", "device_id"] {
            assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {v}");
        }
        assert_eq!(v["expires_in"], 600);
        assert_eq!(STANDARD.decode(v["session_secret"].as_str().expect("secret")).expect("b64").len(), 32);
        // A first login: the device secret, once; nothing to explain.
        assert_eq!(STANDARD.decode(v["device_secret"].as_str().expect("device secret")).expect("b64").len(), 32);
        assert!(v.get("device_reason").is_none() && v.get("directives").is_none(), "{v}");
        assert_eq!(STANDARD.decode(v["lease"]["key"].as_str().expect("L")).expect("b64").len(), 32);
        assert!(v["lease"]["expires_at"].as_u64().expect("expiry") > now());
        // The lease key never appears in a JWT.
        let l = v["lease"]["key"].as_str().expect("L");
        for t in ["access_token", "offline_token"] {
            let token = v[t].as_str().expect("token");
            for part in token.split('.').take(2) {
                let json = String::from_utf8(URL_SAFE_NO_PAD.decode(part).expect("b64url")).expect("utf-8");
                assert!(!json.contains(l), "{t} carries the lease key");
            }
        }
        // The tokens check out against the published JWKS, each as its own kind only.
        let jwks = h.plain("GET", "/v1/auth/jwks", b"").await.json();
        let x = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().expect("x")).expect("b64url");
        let verifier = TokenVerifier::from_public_key(&x);
        let access = verifier.access(v["access_token"].as_str().expect("at"), now()).expect("access token");
        assert_eq!((access.sub.as_str(), access.roles.clone()), ("alice", vec!["inspector".to_owned()]));
        assert_eq!(access.device_id, v["device_id"].as_str().expect("device"));
        verifier.offline(v["offline_token"].as_str().expect("ot"), now()).expect("offline token");
        assert!(verifier.access(v["offline_token"].as_str().expect("ot"), now()).is_err());
        // Two logins are two devices and two sessions.
        let again = h.login("alice", PASSWORD).await.json();
        assert_ne!(again["device_id"], v["device_id"]);
        assert_ne!(again["key_id"], v["key_id"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_disabled_and_wrong_password_get_the_same_answer() {
    for b in backends() {
        let h = Harness::start(b).await;
        fieldvault_server::accounts::disable_user(&h.app.store, "cli:test", "bob", now()).await.expect("disable");
        let wrong = h.login("alice", "not the password at all").await;
        let unknown = h.login("mallory", PASSWORD).await;
        let disabled = h.login("bob", PASSWORD).await;
        for r in [&wrong, &unknown, &disabled] {
            assert_eq!(r.status, 401);
            assert_eq!(r.code(), "invalid_grant");
            assert_eq!(r.body, wrong.body, "same body for every failure");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_throttled_per_user_and_address_with_growing_delays_never_locked() {
    for b in backends() {
        let h = Harness::start(b).await;
        let t = now();
        h.frozen.store(t, std::sync::atomic::Ordering::SeqCst);
        // Three failures are free.
        for _ in 0..4 {
            assert_eq!(h.login("alice", "wrong password here").await.status, 401);
        }
        // The fourth earns a one-second wait; even the right password waits.
        let r = h.login("alice", PASSWORD).await;
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.code(), "rate_limited");
        assert_eq!(r.header("retry-after"), Some("1"));
        // Other users from the same address are not affected.
        assert_eq!(h.login("bob", PASSWORD).await.status, 200);
        // After the wait a fifth failure earns two seconds: the delay grows.
        h.frozen.store(t + 1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(h.login("alice", "wrong password again").await.status, 401);
        let r = h.login("alice", PASSWORD).await;
        assert_eq!((r.status, r.header("retry-after")), (429, Some("2")));
        // Never a lock: after the wait the right password gets in, and the count starts over.
        h.frozen.store(t + 3, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(h.login("alice", PASSWORD).await.status, 200);
        let f = h.app.store.login_failures("alice", "127.0.0.1").await.expect("failures");
        assert_eq!(f.failures, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_at_once_gets_no_more_guesses_than_one_after_another() {
    for b in backends() {
        let h = std::sync::Arc::new(Harness::start(b).await);
        h.frozen.store(now(), std::sync::atomic::Ordering::SeqCst);
        let burst: Vec<_> = (0..40)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.login("alice", &format!("guess number {i}")).await.status })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in burst {
            statuses.push(task.await.expect("task"));
        }
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let waited = statuses.iter().filter(|s| **s == 429).count();
        // One after another, three failures are free and the fourth earns a wait: at most
        // four passwords are checked, however many come at once.
        assert!((1..=4).contains(&checked), "{checked} passwords checked: {statuses:?}");
        assert_eq!(checked + waited, 40, "{statuses:?}");
    }
}

fn refresh_request(d: &Device, token: &str, attempt: &str, at: u64) -> Signed {
    let body = serde_json::json!({ "refresh_token": token, "attempt_id": attempt }).to_string();
    let mut s = Signed::new(d, "POST", "/v1/auth/refresh", body.as_bytes(), at);
    s.bearer = None;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_lost_response_is_retried_with_the_same_attempt() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let first = h.send(&refresh_request(&d, &d.refresh_token, "attempt-1", now()).raw()).await;
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(first.header("cache-control"), Some("no-store"));
        let v = first.json();
        let successor = v["refresh_token"].as_str().expect("rt").to_owned();
        assert_ne!(successor, d.refresh_token);
        assert_eq!(v["key_id"], d.key_id.as_str());
        // The response was lost: the same token and attempt id get the same successor.
        let retry = h.send(&refresh_request(&d, &d.refresh_token, "attempt-1", now()).raw()).await;
        assert_eq!(retry.status, 200, "{}", retry.text());
        assert_eq!(retry.json()["refresh_token"], successor.as_str());
        // The successor works once.
        let next = h.send(&refresh_request(&d, &successor, "attempt-2", now()).raw()).await;
        assert_eq!(next.status, 200, "{}", next.text());
        // Now the successor is used, so the old token with the old attempt is reuse: the
        // whole session is revoked.
        let late = h.send(&refresh_request(&d, &d.refresh_token, "attempt-1", now()).raw()).await;
        assert_eq!(late.status, 401);
        assert_eq!(late.code(), "invalid_grant");
        let newest = next.json()["refresh_token"].as_str().expect("rt").to_owned();
        let after = h.send(&refresh_request(&d, &newest, "attempt-3", now()).raw()).await;
        assert_eq!(after.status, 401, "the session is revoked: {}", after.text());
        assert_eq!(after.code(), "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reuse_with_another_attempt_or_after_the_window_revokes_the_session() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        assert_eq!(h.send(&refresh_request(&d, &d.refresh_token, "a1", now()).raw()).await.status, 200);
        let reuse = h.send(&refresh_request(&d, &d.refresh_token, "a2", now()).raw()).await;
        assert_eq!((reuse.status, reuse.code().as_str()), (401, "invalid_grant"));
        let whoami = h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", now()).raw()).await;
        assert_eq!((whoami.status, whoami.code().as_str()), (401, "invalid_token"), "revoked everywhere");

        // Same attempt id, but after the 120 s window: reuse too.
        let d = h.device("alice").await;
        assert_eq!(h.send(&refresh_request(&d, &d.refresh_token, "a1", now()).raw()).await.status, 200);
        h.offset.store(121, std::sync::atomic::Ordering::SeqCst);
        let late = h.send(&refresh_request(&d, &d.refresh_token, "a1", now() + 121).raw()).await;
        assert_eq!((late.status, late.code().as_str()), (401, "invalid_grant"));
        h.offset.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_of_another_session_is_refused() {
    for b in backends() {
        let h = Harness::start(b).await;
        let a = h.device("alice").await;
        let other = h.device("alice").await;
        let r = h.send(&refresh_request(&a, &other.refresh_token, "x", now()).raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_grant"));
        // Nothing was spent: the owner can still refresh.
        assert_eq!(h.send(&refresh_request(&other, &other.refresh_token, "y", now()).raw()).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_is_signed_and_ends_the_session() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let req = Signed::new(&d, "POST", "/v1/auth/logout", b"", now());
        let r = h.send(&req.raw()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.verify(&d.secret, &req.nonce).expect("signed response");
        let after = h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", now()).raw()).await;
        assert_eq!((after.status, after.code().as_str()), (401, "invalid_token"));
        let refresh = h.send(&refresh_request(&d, &d.refresh_token, "z", now()).raw()).await;
        assert_eq!(refresh.status, 401);
        // An unsigned logout is refused.
        let d2 = h.device("alice").await;
        let mut unsigned = Signed::new(&d2, "POST", "/v1/auth/logout", b"", now());
        unsigned.signature = "AAAA".into();
        let r = h.send(&unsigned.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "invalid_signature"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_and_disable_revoke_every_session() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d1 = h.device("alice").await;
        let d2 = h.device("alice").await;
        let passwords = fieldvault_server::auth::Passwords::new(1).expect("hasher");
        let new = fieldvault_server::auth::Password::new(zeroize::Zeroizing::new("a brand new passphrase".into()));
        fieldvault_server::accounts::set_password(&h.app.store, "cli:test", &passwords, "alice", new, now())
            .await
            .expect("passwd");
        for d in [&d1, &d2] {
            let r = h.send(&Signed::new(d, "GET", "/v1/devices/self", b"", now()).raw()).await;
            assert_eq!(r.status, 401);
        }
        assert_eq!(h.login("alice", PASSWORD).await.status, 401);
        assert_eq!(h.login("alice", "a brand new passphrase").await.status, 200);
        let d3 = h.device("bob").await;
        fieldvault_server::accounts::disable_user(&h.app.store, "cli:test", "bob", now()).await.expect("disable");
        let r = h.send(&Signed::new(&d3, "GET", "/v1/devices/self", b"", now()).raw()).await;
        assert_eq!(r.status, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refreshes_for_at_most_its_maximum_age_then_only_a_login_helps() {
    for b in backends() {
        let h = Harness::start(b).await;
        let d = h.device("alice").await;
        let max = h.app.config.session_max_ttl;
        // Just inside the maximum age (the lease and tokens long expired): a refresh works.
        let inside = i64::try_from(max).expect("fits") - 60;
        h.offset.store(inside, std::sync::atomic::Ordering::SeqCst);
        let at = now().saturating_add_signed(inside);
        let ok = h.send(&refresh_request(&d, &d.refresh_token, "attempt-1", at).raw()).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        let successor = ok.json()["refresh_token"].as_str().expect("rt").to_owned();
        // Past it: refused, and the session is over.
        let past = inside + 120;
        h.offset.store(past, std::sync::atomic::Ordering::SeqCst);
        let at = now().saturating_add_signed(past);
        let late = h.send(&refresh_request(&d, &successor, "attempt-2", at).raw()).await;
        assert_eq!((late.status, late.code().as_str()), (401, "invalid_grant"), "{}", late.text());
        let session = h.app.store.session_by_key_id(&d.key_id).await.expect("store").expect("session");
        assert!(session.revoked);
        // The device and its lease key outlive the session: a login naming it continues it.
        let device = h.app.store.device(&d.device_id).await.expect("store").expect("device");
        assert!(device.retired.is_none() && device.lease.is_some(), "{device:?}");
        let again = h.device_again("alice", &d).await;
        assert_eq!((again.device_id.as_str(), &again.lease.1), (d.device_id.as_str(), &d.lease.1));
    }
}
