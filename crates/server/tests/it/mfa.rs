//! Multi-factor login (TOTP, SPEC section 5 "Errors"): an enrolled user needs the password
//! and a right, unused code; a wrong password is `invalid_grant` whatever the code; a missing,
//! wrong or used code is `mfa_required` and counts as a failed attempt; only a successful
//! login uses a code up. Over real TLS on loopback, on every backend, with codes computed from
//! the otpauth URI the operator is given.

use std::sync::atomic::Ordering;

use fieldvault_core::{TotpSecret, totp_code, totp_step};
use fieldvault_server::{LoginDevice, LoginOutcome, NewLogin, TotpUse, accounts};
use serde_json::json;

use crate::harness::{Device, Harness, PASSWORD, Response, backends, now};

/// Enrolls `user` as `user mfa enroll` does and reads the secret back out of the URI.
async fn enroll(h: &Harness, user: &str) -> TotpSecret {
    let uri = accounts::enroll_totp(&h.app.store, "cli:test", &h.app.sealer, user, 0).await.expect("enroll");
    let prefix = format!("otpauth://totp/Fieldvault:{user}?secret=");
    let rest = uri.strip_prefix(&prefix).unwrap_or_else(|| panic!("an otpauth URI for {user}"));
    let (secret, params) = rest.split_once('&').expect("parameters after the secret");
    assert_eq!(params, "issuer=Fieldvault&algorithm=SHA1&digits=6&period=30");
    TotpSecret::from_base32(secret).expect("32 base32 characters")
}

/// The server's clock stands at 10 s into a 30 s step; returns that time.
fn freeze(h: &Harness) -> u64 {
    let t = now() / 30 * 30 + 10;
    h.frozen.store(t, Ordering::SeqCst);
    t
}

async fn login(h: &Harness, password: &str, code: Option<&str>) -> Response {
    let mut body = json!({ "user": "alice", "password": password, "device_name": "field tablet" });
    if let Some(code) = code {
        body["totp"] = json!(code);
    }
    h.plain("POST", "/v1/auth/login", body.to_string().as_bytes()).await
}

async fn failures(h: &Harness) -> u32 {
    h.app.store.login_failures("alice", "127.0.0.1").await.expect("store").failures
}

fn assert_mfa_required(r: &Response) {
    assert_eq!((r.status, r.code()), (401, "mfa_required".to_owned()), "{}", r.text());
}

/// A six-digit code that is none of the three the window accepts at `step`.
fn wrong_code(secret: &TotpSecret, step: u64) -> String {
    let window: Vec<String> = (step - 1..=step + 1).map(|s| totp_code(secret, s).to_string()).collect();
    (0..1_000_000u32).map(|n| format!("{n:06}")).find(|c| !window.contains(c)).expect("a code outside the window")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_user_needs_a_right_unused_code_and_every_refusal_counts_as_a_failed_attempt() {
    for b in backends() {
        let h = Harness::start(b).await;
        let secret = enroll(&h, "alice").await;
        let t = freeze(&h);
        let step = totp_step(t);
        let code = totp_code(&secret, step);

        // The password alone is not enough, and the attempt is counted.
        assert_mfa_required(&login(&h, PASSWORD, None).await);
        assert_eq!(failures(&h).await, 1);
        assert_mfa_required(&login(&h, PASSWORD, Some(&wrong_code(&secret, step))).await);
        assert_mfa_required(&login(&h, PASSWORD, Some("12345")).await);
        assert_eq!(failures(&h).await, 3);
        // A wrong password is invalid_grant whatever the code, and the right code is not used up.
        let r = login(&h, "not the password at all", Some(&code)).await;
        assert_eq!((r.status, r.code()), (401, "invalid_grant".to_owned()), "{}", r.text());
        assert_eq!(failures(&h).await, 4);
        // Four failures earn a wait: even the right password and code wait.
        let r = login(&h, PASSWORD, Some(&code)).await;
        assert_eq!((r.status, r.header("retry-after")), (429, Some("1")), "{}", r.text());

        h.frozen.store(t + 1, Ordering::SeqCst);
        let r = login(&h, PASSWORD, Some(&code)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(failures(&h).await, 0, "a successful login clears the count");
        // Used up: the same code again, or the previous step's, is refused (and counted).
        assert_mfa_required(&login(&h, PASSWORD, Some(&code)).await);
        assert_mfa_required(&login(&h, PASSWORD, Some(&totp_code(&secret, step - 1))).await);
        assert_eq!(failures(&h).await, 2);
        // The next step's code works (a clock 30 s ahead), once.
        let next = totp_code(&secret, step + 1);
        assert_eq!(login(&h, PASSWORD, Some(&next)).await.status, 200);
        assert_mfa_required(&login(&h, PASSWORD, Some(&next)).await);
        // A user not enrolled logs in with the password alone, a code or not.
        let bob = json!({ "user": "bob", "password": PASSWORD, "device_name": "t", "totp": "000000" });
        assert_eq!(h.plain("POST", "/v1/auth/login", bob.to_string().as_bytes()).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enough_logins_without_a_code_are_throttled_like_wrong_passwords() {
    for b in backends() {
        let h = Harness::start(b).await;
        let secret = enroll(&h, "alice").await;
        let t = freeze(&h);
        for _ in 0..4 {
            assert_mfa_required(&login(&h, PASSWORD, None).await);
        }
        let r = login(&h, PASSWORD, Some(&totp_code(&secret, totp_step(t)))).await;
        assert_eq!((r.status, r.code()), (429, "rate_limited".to_owned()), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_is_not_used_up_by_a_login_refused_after_its_check() {
    for b in backends() {
        let h = Harness::start(b).await;
        let secret = enroll(&h, "alice").await;
        let t = freeze(&h);
        let step = totp_step(t);
        let first = login(&h, PASSWORD, Some(&totp_code(&secret, step - 1))).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let device = Device::from_tokens(&first.json());
        let device_secret = device.device_secret.as_ref().expect("a first login's device secret");

        // The right code with a device proof that does not verify: refused, the code kept.
        let code = totp_code(&secret, step);
        let forged = fieldvault_core::protocol::auth::DeviceSecret::from_bytes(zeroize::Zeroizing::new([9; 32]));
        let proof = fieldvault_core::protocol::auth::DeviceProof::new(&forged, &device.device_id, t);
        let body = json!({ "user": "alice", "password": PASSWORD, "device_name": "t", "device": proof,
            "totp": *code });
        let r = h.plain("POST", "/v1/auth/login", body.to_string().as_bytes()).await;
        assert_eq!((r.status, r.code()), (401, "invalid_grant".to_owned()), "{}", r.text());

        // The same code with the right proof continues the device, and is then used up.
        let proof = fieldvault_core::protocol::auth::DeviceProof::new(device_secret, &device.device_id, t);
        let body = json!({ "user": "alice", "password": PASSWORD, "device_name": "t", "device": proof,
            "totp": *code });
        let r = h.plain("POST", "/v1/auth/login", body.to_string().as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["device_id"], device.device_id.as_str(), "continued");
        assert_mfa_required(&login(&h, PASSWORD, Some(&code)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enrolling_replaces_the_secret_and_disabling_lets_the_password_alone_in() {
    for b in backends() {
        let h = Harness::start(b).await;
        let old = enroll(&h, "alice").await;
        let new = enroll(&h, "alice").await;
        assert_ne!(old.expose_secret(), new.expose_secret());
        let t = freeze(&h);
        let step = totp_step(t);
        if totp_code(&old, step) != totp_code(&new, step) {
            assert_mfa_required(&login(&h, PASSWORD, Some(&totp_code(&old, step))).await);
        }
        assert_eq!(login(&h, PASSWORD, Some(&totp_code(&new, step))).await.status, 200);
        // The stored secret is sealed to this user: it opens as a TOTP secret of alice only.
        let stored = h.app.store.totp("alice").await.expect("store").expect("enrolled");
        assert_eq!(stored.last_step, Some(step));
        let opened = h.app.sealer.open(fieldvault_server::seal::Purpose::TotpSecret, "alice", &stored.secret_sealed);
        assert_eq!(opened.expect("opens").as_slice(), new.expose_secret());
        assert!(h.app.sealer.open(fieldvault_server::seal::Purpose::TotpSecret, "bob", &stored.secret_sealed).is_err());

        accounts::disable_totp(&h.app.store, "cli:test", "alice", 0).await.expect("disable");
        assert_eq!(h.app.store.totp("alice").await.expect("store"), None);
        assert_eq!(login(&h, PASSWORD, None).await.status, 200);
        // Re-enrolled, the last step starts over: a code is needed again and works.
        let again = enroll(&h, "alice").await;
        assert_mfa_required(&login(&h, PASSWORD, None).await);
        assert_eq!(login(&h, PASSWORD, Some(&totp_code(&again, step))).await.status, 200);
        // Unknown users are refused, and nothing is stored for them.
        assert!(accounts::enroll_totp(&h.app.store, "cli:test", &h.app.sealer, "mallory", 0).await.is_err());
        assert!(accounts::disable_totp(&h.app.store, "cli:test", "mallory", 0).await.is_err());
        assert_eq!(h.app.store.totp("mallory").await.expect("store"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logins_racing_with_one_code_record_one_session_and_the_other_changes_nothing() {
    for b in backends() {
        let h = Harness::start(b).await;
        enroll(&h, "alice").await;
        let stored = h.app.store.totp("alice").await.expect("store").expect("enrolled");
        let step = totp_step(now());
        let login = |n: u8| NewLogin {
            session_id: format!("s_mfa{n}"),
            key_id: format!("k_mfa{n}"),
            user: "alice".into(),
            secret_sealed: vec![n; 60],
            refresh_hash: [n; 32],
            device_name: "racer".into(),
            device: LoginDevice::New {
                id: format!("d_mfa{n}"),
                secret_sealed: vec![n; 60],
                lease: fieldvault_server::LeaseRecord {
                    id: format!("l_mfa{n}"),
                    key_sealed: vec![n; 48],
                    expires_at: now(),
                },
            },
            totp: Some(TotpUse { step, secret_sealed: stored.secret_sealed.clone() }),
            now: now(),
        };
        let (one, two) = (login(1), login(2));
        let event = fieldvault_server::AuditEvent::new(0, "test", "test", "");
        let (a, b2) = tokio::join!(h.app.store.login(&one, &event), h.app.store.login(&two, &event));
        let mut outcomes = vec![a.expect("store"), b2.expect("store")];
        outcomes.sort_by_key(|o| *o != LoginOutcome::Recorded);
        assert_eq!(outcomes, vec![LoginOutcome::Recorded, LoginOutcome::CodeUsed]);
        let sessions = [
            h.app.store.session_by_key_id("k_mfa1").await.expect("store"),
            h.app.store.session_by_key_id("k_mfa2").await.expect("store"),
        ];
        assert_eq!(sessions.iter().filter(|s| s.is_some()).count(), 1, "the loser recorded no session");
        let devices = h.app.store.devices().await.expect("store");
        assert_eq!(devices.iter().filter(|d| d.id.starts_with("d_mfa")).count(), 1, "nor a device");
        // A code checked against an enrolment that was replaced meanwhile is refused too.
        enroll(&h, "alice").await;
        let late = NewLogin {
            totp: Some(TotpUse { step: step + 1, secret_sealed: stored.secret_sealed.clone() }),
            ..login(3)
        };
        assert_eq!(
            h.app.store.login(&late, &fieldvault_server::AuditEvent::new(0, "test", "test", "")).await.expect("store"),
            LoginOutcome::CodeUsed
        );
    }
}
