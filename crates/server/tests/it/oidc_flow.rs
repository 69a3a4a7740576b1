//! Sign-in through a real OpenID provider (`oidc-provider` on loopback, `idp.rs`), over the
//! server's TLS, on SQLite and PostgreSQL: the whole flow, device continuity, identity
//! mapping, revocation at the provider, and each way a provider's answer can lie
//! (docs/protocol.md section 19, docs/identity.md).

use std::sync::Arc;

use fieldvault_core::protocol::auth::DeviceProof;
use fieldvault_core::protocol::oidc::AuthorizationRequest;
use fieldvault_server::auth::oidc::Oidc;
use fieldvault_server::auth::oidc::provider::ProviderConfig;
use zeroize::Zeroizing;

use crate::harness::{Device, Harness, Signed, backends};
use crate::idp::Idp;
use crate::oidc::provider_config;

/// The provider, started once per test (None: not installed here, and not required).
fn provider(dir: &std::path::Path) -> Option<Arc<Idp>> {
    Idp::start(dir).map(Arc::new)
}

fn config(idp: &Idp, tune: impl FnOnce(&mut ProviderConfig)) -> Oidc {
    let mut c = provider_config(idp.issuer());
    c.client_id = idp.client_id().to_owned();
    let secret = std::fs::read_to_string(idp.client_secret_file()).expect("client secret");
    c.client_secret = Some(Zeroizing::new(secret.trim().to_owned()));
    tune(&mut c);
    Oidc::new(vec![c], Some(idp.ca_pem_path())).expect("provider config")
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    b
}

/// One sign-in as far as the redirect back: the request and the callback URL.
struct Flow {
    request: AuthorizationRequest,
    callback: String,
}

impl Flow {
    /// Asks the server where to go, plays the browser at the provider as `login`.
    async fn run(h: &Harness, idp: &Arc<Idp>, login: &str) -> Flow {
        Flow::run_with_nonce(h, idp, login, random32()).await
    }

    async fn run_with_nonce(h: &Harness, idp: &Arc<Idp>, login: &str, nonce: [u8; 32]) -> Flow {
        let r = h.plain("GET", "/v1/auth/oidc/config", b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let provider = serde_json::from_value::<fieldvault_core::protocol::oidc::OidcConfigResponse>(r.json())
            .expect("config")
            .find(idp.issuer())
            .expect("the provider is listed")
            .clone();
        // A loopback redirect: the browser here stops before fetching it.
        let request = AuthorizationRequest::new(random32(), nonce, random32(), "http://127.0.0.1:49152/callback");
        let url = request.url(&provider);
        let (idp, login) = (idp.clone(), login.to_owned());
        let callback = tokio::task::spawn_blocking(move || idp.sign_in(&url, &login)).await.expect("browser");
        Flow { request, callback }
    }

    fn body(&self, issuer: &str, device: Option<DeviceProof>) -> Vec<u8> {
        let query = self.callback.split_once('?').map(|(_, q)| q).unwrap_or("");
        let code = self.request.check_redirect(query).expect("the redirect answers this sign-in");
        serde_json::to_vec(&serde_json::json!({
            "issuer": issuer,
            "code": code.expose_secret(),
            "code_verifier": self.request.verifier().expose_secret(),
            "redirect_uri": self.request.redirect_uri(),
            "nonce": self.request.nonce(),
            "device_name": "field phone",
            "device": device,
        }))
        .expect("json")
    }
}

async fn sign_in(h: &Harness, idp: &Arc<Idp>, login: &str) -> crate::harness::Response {
    let flow = Flow::run(h, idp, login).await;
    h.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), None)).await
}

async fn devices(h: &Harness) -> usize {
    h.app.store.devices().await.expect("devices").len()
}

async fn refresh(h: &Harness, d: &Device) -> crate::harness::Response {
    let body = serde_json::json!({ "refresh_token": d.refresh_token, "attempt_id": "a1" }).to_string();
    let s = Signed::new(d, "POST", "/v1/auth/refresh", body.as_bytes(), h.app.now());
    h.send(&s.raw()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_through_the_provider_and_the_device_continues_at_the_next_sign_in() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(idp) = provider(dir.path()) else { return };
    for backend in backends() {
        idp.set_account("carol", &["inspector", "north"], false);
        let oidc = config(&idp, |c| {
            c.create_users = true;
            c.roles_claim = Some("groups".into());
        });
        let h = Harness::start_bare_with_oidc(backend, oidc).await;
        let r = sign_in(&h, &idp, "carol").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let first = Device::from_tokens(&r.json());
        assert!(first.device_secret.is_some(), "a first sign-in makes a device");
        // The session works on the signed channel, as the user the identity created.
        let s = Signed::new(&first, "GET", "/v1/devices/self", b"", h.app.now());
        let me = h.send(&s.raw()).await;
        assert_eq!(me.status, 200, "{}", me.text());
        assert_eq!(me.json()["user"], "carol");
        assert_eq!(me.json()["roles"], serde_json::json!(["inspector", "north"]));
        // Created through the provider: no password opens it.
        let pw = h.login("carol", "").await;
        assert_eq!(pw.code(), "invalid_grant");
        // The next sign-in names the device and continues it; roles follow the claim.
        idp.set_account("carol", &["inspector"], false);
        let flow = Flow::run(&h, &idp, "carol").await;
        let secret = first.device_secret.as_ref().expect("secret");
        let proof = DeviceProof::new(secret, &first.device_id, h.app.now());
        let r = h.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), Some(proof))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let again = Device::from_tokens(&r.json());
        assert_eq!(again.device_id, first.device_id, "the device continues");
        assert!(again.device_secret.is_none(), "the device secret is sent once");
        assert_eq!(again.lease.0, first.lease.0, "same lease");
        assert_eq!(h.app.store.user("carol").await.expect("user").expect("carol").roles, vec!["inspector"]);
        // A device proof of another user's device does not pass.
        h.add_user("alice", &[]).await;
        let alice = h.device("alice").await;
        let flow = Flow::run(&h, &idp, "carol").await;
        let proof = DeviceProof::new(alice.device_secret.as_ref().expect("secret"), &alice.device_id, h.app.now());
        let r = h.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), Some(proof))).await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_signs_in_only_as_the_user_it_is_linked_to() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(idp) = provider(dir.path()) else { return };
    for backend in backends() {
        let h = Harness::start_bare_with_oidc(backend, config(&idp, |_| {})).await;
        h.add_user("alice", &["supervisor"]).await;
        let r = sign_in(&h, &idp, "dave").await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
        assert!(
            r.json()["detail"].as_str().expect("detail").contains("no Fieldvault account is linked"),
            "{}",
            r.text()
        );
        assert_eq!(devices(&h).await, 0);
        fieldvault_server::accounts::link_identity(
            &h.app.store,
            "cli:test",
            "alice",
            idp.issuer(),
            "dave",
            h.app.now(),
        )
        .await
        .expect("link");
        let r = sign_in(&h, &idp, "dave").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let d = Device::from_tokens(&r.json());
        let me = h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", h.app.now()).raw()).await;
        assert_eq!(me.json()["user"], "alice");
        // A disabled user is not signed in through the provider either.
        fieldvault_server::accounts::disable_user(&h.app.store, "cli:test", "alice", h.app.now())
            .await
            .expect("disable");
        let r = sign_in(&h, &idp, "dave").await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
        // With creation on, a created name never takes over an existing user.
        let h2 = Harness::start_bare_with_oidc(h.backend.clone(), config(&idp, |c| c.create_users = true)).await;
        h2.add_user("erin", &[]).await;
        let r = sign_in(&h2, &idp, "erin").await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
        assert!(r.json()["detail"].as_str().expect("detail").contains("not linked"), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_with_the_wrong_verifier_or_redeemed_twice_signs_nobody_in() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(idp) = provider(dir.path()) else { return };
    for backend in backends() {
        let h = Harness::start_bare_with_oidc(backend, config(&idp, |c| c.create_users = true)).await;
        let flow = Flow::run(&h, &idp, "frank").await;
        let mut body: serde_json::Value = serde_json::from_slice(&flow.body(idp.issuer(), None)).expect("json");
        body["code_verifier"] = serde_json::json!("x".repeat(43));
        let r = h.plain("POST", "/v1/auth/oidc", body.to_string().as_bytes()).await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
        assert!(
            r.json()["detail"].as_str().expect("detail").contains("refused the authorization code"),
            "{}",
            r.text()
        );
        assert_eq!(devices(&h).await, 0);
        // The device that holds the verifier redeems it; nobody redeems it twice.
        let r = h.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), None)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = h.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), None)).await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
        assert_eq!(devices(&h).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lying_answer_of_the_provider_is_refused_and_signs_nobody_in() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(idp) = provider(dir.path()) else { return };
    for backend in backends() {
        let h = Harness::start_bare_with_oidc(backend, config(&idp, |c| c.create_users = true)).await;
        // One honest sign-in first: `replay` answers with its ID token again.
        idp.set_mode("none");
        let r = sign_in(&h, &idp, "gina").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let before = devices(&h).await;
        for (mode, code, says) in [
            ("other_issuer", "invalid_grant", "another issuer"),
            ("other_audience", "invalid_grant", "another client"),
            ("expired", "invalid_grant", "expired"),
            ("future_iat", "invalid_grant", "issued at"),
            ("alg_none", "invalid_grant", "signature"),
            ("hmac_public_key", "invalid_grant", "not allowed"),
            ("unknown_key", "invalid_grant", "does not publish"),
            ("wrong_nonce", "invalid_grant", "nonce"),
            ("replay", "invalid_grant", "nonce"),
            ("oversized", "provider_unavailable", "more than 256 KiB"),
            ("no_id_token", "provider_unavailable", "no ID token"),
            ("garbage", "provider_unavailable", "malformed"),
        ] {
            idp.set_mode("none");
            let flow = Flow::run(&h, &idp, "gina").await;
            idp.set_mode(mode);
            let r = h.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), None)).await;
            assert_eq!(r.code(), code, "{mode}: {}", r.text());
            let detail = r.json()["detail"].as_str().expect("detail").to_owned();
            assert!(detail.contains(says), "{mode}: {detail}");
            assert!(r.json().get("access_token").is_none(), "{mode}: no token answer");
            assert_eq!(devices(&h).await, before, "{mode}: no device was made");
            // Enough failures from one address are throttled: clear them between modes.
            h.app.store.clear_login_failures(&format!("oidc\n{}", idp.issuer()), "127.0.0.1").await.expect("clear");
        }
        // The provider answering honestly again signs in.
        idp.set_mode("none");
        let r = sign_in(&h, &idp, "gina").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_rotates_its_key_mid_flow_is_followed() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(idp) = provider(dir.path()) else { return };
    for backend in backends() {
        idp.set_mode("none");
        let h = Harness::start_bare_with_oidc(backend, config(&idp, |c| c.create_users = true)).await;
        // The server fetches discovery and keys here...
        let flow = Flow::run(&h, &idp, "hank").await;
        // ...then the provider signs with a key it has only now published.
        idp.set_mode("rotate");
        h.offset.store(11, std::sync::atomic::Ordering::SeqCst);
        let r = h.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), None)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    idp.set_mode("none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_that_names_another_issuer_is_refused_and_not_cached() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(idp) = provider(dir.path()) else { return };
    for backend in backends() {
        let h = Harness::start_bare_with_oidc(backend, config(&idp, |_| {})).await;
        idp.set_mode("lying_discovery");
        let r = h.plain("GET", "/v1/auth/oidc/config", b"").await;
        assert_eq!(r.code(), "provider_unavailable", "{}", r.text());
        assert!(r.json()["detail"].as_str().expect("detail").contains("refused"), "{}", r.text());
        idp.set_mode("none");
        let r = h.plain("GET", "/v1/auth/oidc/config", b"").await;
        assert_eq!(r.status, 200, "nothing of the lie was cached: {}", r.text());
        assert_eq!(r.json()["issuers"][0]["issuer"], idp.issuer());
        assert_eq!(r.json()["issuers"][0]["authorization_endpoint"], format!("{}/auth", idp.issuer()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_used_once_is_refused_again_on_every_instance() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(idp) = provider(dir.path()) else { return };
    idp.set_mode("none");
    for backend in backends() {
        let h = Harness::start_bare_with_oidc(backend, config(&idp, |c| c.create_users = true)).await;
        let nonce = random32();
        let flow = Flow::run_with_nonce(&h, &idp, "ivan", nonce).await;
        let r = h.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), None)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        // A second flow with the same nonce (a replayed ID token would carry it) at another
        // instance of the same store.
        let other = h.sibling_with_oidc(config(&idp, |c| c.create_users = true)).await;
        let flow = Flow::run_with_nonce(&other, &idp, "ivan", nonce).await;
        let r = other.plain("POST", "/v1/auth/oidc", &flow.body(idp.issuer(), None)).await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
        assert!(r.json()["detail"].as_str().expect("detail").contains("already used"), "{}", r.text());
        // An ID token whose jti was seen before is a replay too, whatever its nonce.
        idp.set_mode("fixed_jti");
        let r = sign_in(&other, &idp, "ivan").await;
        assert_eq!(r.status, 200, "the first token with this jti: {}", r.text());
        let r = sign_in(&h, &idp, "ivan").await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
        assert!(r.json()["detail"].as_str().expect("detail").contains("already used"), "{}", r.text());
        idp.set_mode("none");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_disabled_at_the_provider_loses_the_session_at_the_next_refresh() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(idp) = provider(dir.path()) else { return };
    idp.set_mode("none");
    for (i, backend) in backends().into_iter().enumerate() {
        let login = format!("judy{i}");
        idp.set_account(&login, &[], false);
        let h = Harness::start_bare_with_oidc(
            backend,
            config(&idp, |c| {
                c.create_users = true;
                c.recheck = true;
            }),
        )
        .await;
        let r = sign_in(&h, &idp, &login).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let d = Device::from_tokens(&r.json());
        let r = refresh(&h, &d).await;
        assert_eq!(r.status, 200, "the provider still accepts the user: {}", r.text());
        let d = Device { refresh_token: r.json()["refresh_token"].as_str().expect("rt").to_owned(), ..d };
        idp.set_account(&login, &[], true);
        let r = refresh(&h, &d).await;
        assert_eq!(r.code(), "invalid_grant", "{}", r.text());
        assert!(r.json()["detail"].as_str().expect("detail").contains("no longer accepts"), "{}", r.text());
        // The session is revoked: its access token no longer works.
        let me = h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", h.app.now()).raw()).await;
        assert_eq!(me.status, 401, "{}", me.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_cannot_be_reached_at_refresh_spends_nothing() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("dir");
        let Some(idp) = provider(dir.path()) else { return };
        let oidc = config(&idp, |c| {
            c.create_users = true;
            c.recheck = true;
        });
        let h = Harness::start_bare_with_oidc(backend, oidc).await;
        let r = sign_in(&h, &idp, "kim").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let d = Device::from_tokens(&r.json());
        idp.stop();
        let r = refresh(&h, &d).await;
        assert_eq!(r.code(), "provider_unavailable", "{}", r.text());
        // Nothing was decided: the session lives on.
        let me = h.send(&Signed::new(&d, "GET", "/v1/devices/self", b"", h.app.now()).raw()).await;
        assert_eq!(me.status, 200, "{}", me.text());
    }
}
