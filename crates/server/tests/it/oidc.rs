//! Sign-in through OpenID Connect (docs/protocol.md section 19): what the server does without
//! a provider to talk to. The flow against a real provider is `oidc_flow.rs`.

use fieldvault_server::accounts::{self, AccountError};
use fieldvault_server::auth::oidc::Oidc;
use fieldvault_server::auth::oidc::provider::ProviderConfig;

use crate::harness::{Harness, backends};

pub fn provider_config(issuer: &str) -> ProviderConfig {
    ProviderConfig {
        issuer: issuer.into(),
        client_id: "fieldvault".into(),
        client_secret: None,
        client_secret_file: None,
        scopes: Vec::new(),
        roles_claim: None,
        username_claim: None,
        create_users: false,
        recheck: false,
    }
}

fn login_body(issuer: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "issuer": issuer, "code": "c", "code_verifier": "v".repeat(43),
        "redirect_uri": "http://127.0.0.1:9/callback", "nonce": "n", "device_name": "phone",
    }))
    .expect("json")
}

#[tokio::test]
async fn a_server_without_providers_lists_none_and_refuses_provider_sign_ins() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let r = h.plain("GET", "/v1/auth/oidc/config", b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), serde_json::json!({ "issuers": [] }));
        let r = h.plain("POST", "/v1/auth/oidc", &login_body("https://id.example")).await;
        assert_eq!((r.status, r.code()), (400, "bad_request".to_owned()), "{}", r.text());
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_provider_unavailable_and_signs_nobody_in() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let issuer = format!("https://127.0.0.1:{port}");
    for backend in backends() {
        let oidc = Oidc::new(vec![provider_config(&issuer)], None).expect("config");
        let h = Harness::start_bare_with_oidc(backend, oidc).await;
        let r = h.plain("GET", "/v1/auth/oidc/config", b"").await;
        assert_eq!((r.status, r.code()), (502, "provider_unavailable".to_owned()), "{}", r.text());
        assert!(r.json()["detail"].as_str().expect("detail").contains("cannot be reached"), "{}", r.text());
        let r = h.plain("POST", "/v1/auth/oidc", &login_body(&issuer)).await;
        assert_eq!((r.status, r.code()), (502, "provider_unavailable".to_owned()), "{}", r.text());
        assert!(h.app.store.devices().await.expect("devices").is_empty(), "no device was made");
        // Another issuer than the configured one is not this server's.
        let r = h.plain("POST", "/v1/auth/oidc", &login_body("https://id.example")).await;
        assert_eq!(r.status, 400);
    }
}

#[test]
fn providers_must_be_https_and_named_once() {
    let err = Oidc::new(vec![provider_config("http://id.example")], None).expect_err("http issuer");
    assert!(err.contains("only https"), "{err}");
    let twice = vec![provider_config("https://id.example"), provider_config("https://id.example")];
    assert!(Oidc::new(twice, None).expect_err("twice").contains("twice"));
    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("ca.pem");
    std::fs::write(&empty, "").expect("write");
    let err = Oidc::new(vec![provider_config("https://id.example")], Some(&empty)).expect_err("empty CA");
    assert!(err.contains("holds no certificate"), "{err}");
}

#[tokio::test]
async fn an_identity_links_to_one_user_and_unlinks() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let store = &h.app.store;
        let issuer = "https://id.example";
        let err = accounts::link_identity(store, "cli:test", "nobody", issuer, "sub-1", 1).await.expect_err("no user");
        assert!(matches!(err, AccountError::NoSuchUser(_)), "{err}");
        accounts::link_identity(store, "cli:test", "alice", issuer, "sub-1", 1).await.expect("link");
        accounts::link_identity(store, "cli:test", "alice", issuer, "sub-1", 2)
            .await
            .expect("linking again is a no-op");
        let err = accounts::link_identity(store, "cli:test", "bob", issuer, "sub-1", 3).await.expect_err("taken");
        assert_eq!(err.to_string(), "that identity is linked to user \"alice\"; unlink it first");
        assert_eq!(store.oidc_user(issuer, "sub-1").await.expect("read").as_deref(), Some("alice"));
        assert_eq!(store.oidc_user("https://other.example", "sub-1").await.expect("read"), None);
        accounts::unlink_identity(store, "cli:test", issuer, "sub-1", 0).await.expect("unlink");
        assert!(matches!(
            accounts::unlink_identity(store, "cli:test", issuer, "sub-1", 0).await,
            Err(AccountError::NoSuchIdentity)
        ));
        // Removing a user removes their identities.
        accounts::link_identity(store, "cli:test", "bob", issuer, "sub-2", 4).await.expect("link");
        accounts::remove_user(store, "cli:test", "bob", 0).await.expect("remove");
        assert_eq!(store.oidc_user(issuer, "sub-2").await.expect("read"), None);
    }
}
