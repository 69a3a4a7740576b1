//! The device's sync client (`fieldvault-client`) against the real server over TLS on
//! loopback, each scenario on SQLite and PostgreSQL: devices converge, rules keep another
//! user's documents off a device, conflicts keep the losing version, a server with another
//! key is refused before any request, a device clock far off still syncs.
//!
//! The client is blocking (it owns a small runtime of its own), so each of its calls runs on
//! a blocking thread while the server runs on the test's runtime.

use std::sync::{Arc, Mutex};

use fieldvault_client::{Error, LoginOptions, LogoutNotice};
use serde_json::json;
use zeroize::Zeroizing;

use crate::harness::{Harness, PASSWORD, backends};
use crate::phone::{Phone, owned};

/// The key file's name in a vault directory (docs/formats/key-file.md).
const KEY_FILE: &str = "keys.fvk";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_of_one_user_converge_and_another_users_documents_stay_off() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (a1, a2, b) = (Phone::new(), Phone::new(), Phone::new());
        // Written before the device ever reached the server: queued, then pushed.
        a1.put("visits", "v1", json!({"patient": "Ada"})).await;
        a1.put("visits", "v2", json!({"patient": "Grace"})).await;
        a1.put("visits", "v1", json!({"patient": "Ada", "bp": [120, 80]})).await;
        assert_eq!(a1.outbox_len().await, 2, "later edits of v1 folded into one op");
        a1.login(&h, "alice").await;
        let r = a1.sync().await.expect("sync");
        assert_eq!(r.pushed, 2, "{r:?}");
        assert_eq!(a1.outbox_len().await, 0);
        b.login(&h, "bob").await;
        b.put("visits", "b1", json!({"patient": "Bob's"})).await;
        b.sync().await.expect("bob syncs");

        a2.login(&h, "alice").await;
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h2 = heard.clone();
        a2.with(move |v, a| {
            v.subscribe(a, fieldvault_client::Watch::Collection("visits".into()), move |c| {
                h2.lock().expect("lock").extend(c.iter().map(|c| c.id.clone()))
            })
        })
        .await
        .expect("subscribe");
        let r = a2.sync().await.expect("second device syncs");
        let mut ids = heard.lock().expect("lock").clone();
        ids.sort();
        assert_eq!(ids, ["v1", "v2"], "the app hears of the pulled documents");
        assert_eq!(r.pulled, 2, "{r:?}");
        assert_eq!(a2.get("visits", "v1").await, Some(owned("alice", json!({"patient": "Ada", "bp": [120, 80]}))));
        assert_eq!(a2.get("visits", "b1").await, None, "another user's document never reaches this device");
        assert_eq!(b.get("visits", "v1").await, None);

        // A change and a delete on the second device reach the first.
        a2.put("visits", "v2", owned("alice", json!({"patient": "Grace", "seen": true}))).await;
        a2.delete("visits", "v1").await;
        a2.sync().await.expect("push");
        let r = a1.sync().await.expect("pull");
        assert_eq!(r.pulled, 2, "{r:?}");
        assert_eq!(a1.get("visits", "v1").await, None);
        assert_eq!(a1.get("visits", "v2").await, Some(owned("alice", json!({"patient": "Grace", "seen": true}))));
        // Nothing pulled is owed back.
        assert_eq!(a1.outbox_len().await, 0);
        let again = a1.sync().await.expect("idle sync");
        assert_eq!((again.pushed, again.pulled), (0, 0), "{again:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_keeps_the_servers_version_and_sets_the_local_one_aside() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (a1, a2) = (Phone::new(), Phone::new());
        a1.login(&h, "alice").await;
        a2.login(&h, "alice").await;
        a1.put("notes", "n1", json!({"text": "first"})).await;
        a1.sync().await.expect("a1 pushes");
        a2.sync().await.expect("a2 pulls");
        a1.put("notes", "n1", owned("alice", json!({"text": "from a1"}))).await;
        a2.put("notes", "n1", owned("alice", json!({"text": "from a2"}))).await;
        a1.sync().await.expect("a1 wins the race");
        let r = a2.sync().await.expect("a2 conflicts");
        assert_eq!(r.conflicts, 1, "{r:?}");
        assert_eq!(a2.get("notes", "n1").await, Some(owned("alice", json!({"text": "from a1"}))));
        assert_eq!(a2.outbox_len().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_key_is_refused_and_nothing_changes() {
    let backend = backends().remove(0);
    let h = Harness::start(backend).await;
    let phone = Phone::new();
    phone.put("visits", "v1", json!({"n": 1})).await;
    let other = fieldvault_core::Pin::of_spki(b"not the server's key").to_string();
    let err = phone.login_with(&h, "alice", &other).await.expect_err("another key");
    assert!(err.to_string().contains("pin"), "{err}");
    assert_eq!(phone.outbox_len().await, 1, "the outbox is intact");
    let err = phone.sync().await.expect_err("never logged in");
    assert!(matches!(err, Error::NotLoggedIn(_)), "{err}");
    let wrong = phone.login_with(&h, "alice", "sha256/short").await.expect_err("a malformed pin");
    assert!(matches!(wrong, Error::InvalidPin(_)), "{wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_clock_ten_minutes_off_still_syncs() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        // The server's clock runs 10 minutes ahead of the device's: the same as a device
        // whose clock is 10 minutes behind.
        h.offset.store(600, std::sync::atomic::Ordering::SeqCst);
        let phone = Phone::new();
        phone.put("visits", "early", json!({"n": 1})).await;
        phone.login(&h, "alice").await;
        phone.put("visits", "late", json!({"n": 2})).await;
        let r = phone.sync().await.expect("signed requests carry the corrected time");
        assert_eq!(r.pushed, 2, "{r:?}");
        let who = phone.with(|v, a| v.whoami(a)).await.expect("offline token verifies with the corrected clock");
        assert_eq!(who.user, "alice");
    }
}

fn device_id(s: &fieldvault_client::LoginSummary) -> String {
    s.device_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_continues_the_device_and_an_expired_access_token_is_refreshed() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let phone = Phone::new();
        let first = phone.login(&h, "alice").await;
        assert!(!first.continued);
        phone.put("visits", "v1", json!({"n": 1})).await;
        phone.sync().await.expect("sync");
        let again = phone.login(&h, "alice").await;
        assert!(again.continued, "{again:?}");
        assert_eq!(device_id(&again), device_id(&first));
        // The access token (10 minutes) has expired: the sync refreshes it on its own.
        h.offset.store(700, std::sync::atomic::Ordering::SeqCst);
        phone.put("visits", "v2", json!({"n": 2})).await;
        let r = phone.sync().await.expect("sync after the access token expired");
        assert_eq!(r.pushed, 1, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_logout_keeps_the_data_and_a_remote_wipe_destroys_it_on_next_contact() {
    use fieldvault_core::protocol::DirectiveKind;
    use fieldvault_server::devices;
    for backend in backends() {
        let h = Harness::start(backend).await;
        let phone = Phone::new();
        let login = phone.login(&h, "alice").await;
        phone.put("visits", "v1", json!({"n": 1})).await;
        phone.sync().await.expect("sync");

        devices::issue_directive(
            &h.app.store,
            "cli:test",
            &h.app.tokens,
            &login.device_id,
            DirectiveKind::Revoke,
            crate::harness::now(),
        )
        .await
        .expect("revoke");
        let err = phone.sync().await.expect_err("logged out remotely");
        assert!(matches!(err, Error::ReauthRequired(_)), "{err}");
        assert!(phone.get("visits", "v1").await.is_some(), "a remote logout keeps the data");
        let back = phone.login(&h, "alice").await;
        assert!(back.continued, "the device continues after a remote logout: {back:?}");
        phone.sync().await.expect("syncs again");

        devices::issue_directive(
            &h.app.store,
            "cli:test",
            &h.app.tokens,
            &back.device_id,
            DirectiveKind::Wipe,
            crate::harness::now(),
        )
        .await
        .expect("wipe");
        let err = phone.sync().await.expect_err("wiped remotely");
        assert!(matches!(err, Error::RemoteWipe(_)), "{err}");
        assert_eq!(phone.get("visits", "v1").await, None, "the data is gone");
        assert!(matches!(phone.sync().await, Err(Error::NotLoggedIn(_))), "the credentials went with it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_keeping_data_continues_the_device_and_a_plain_logout_destroys_it() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let phone = Phone::new();
        let first = phone.login(&h, "alice").await;
        phone.put("visits", "v1", json!({"n": 1})).await;
        let refused = phone.with(|v, a| v.logout(a, true, false)).await.expect_err("the outbox is not empty");
        assert!(matches!(refused, Error::OutboxNotEmpty(1)), "{refused}");
        phone.sync().await.expect("sync");
        let kept = phone.with(|v, a| v.logout(a, true, false)).await.expect("logout --keep-data");
        assert_eq!(kept, LogoutNotice::Delivered, "the server was told");
        assert!(phone.get("visits", "v1").await.is_some());
        assert!(matches!(phone.sync().await, Err(Error::NotLoggedIn(_))));
        let back = phone.login(&h, "alice").await;
        assert!(back.continued && back.device_id == first.device_id, "{back:?}");

        let plain = phone.with(|v, a| v.logout(a, false, false)).await.expect("plain logout");
        assert_eq!(plain, LogoutNotice::Delivered);
        assert_eq!(phone.get("visits", "v1").await, None, "a plain logout destroys the data here");
        let after = phone.login(&h, "alice").await;
        assert!(!after.continued && after.device_id != first.device_id, "a retired device is not continued: {after:?}");
        let r = phone.sync().await.expect("the new device syncs");
        assert_eq!(r.pulled, 1, "and gets the user's documents back from the server: {r:?}");
    }
}

/// A loopback TCP relay to `upstream` that, while `up` is false, closes every connection
/// at once (the server unreachable); TLS runs end to end through it.
async fn switch_relay(upstream: std::net::SocketAddr, up: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            if !up.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut server).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_the_server_could_not_hear_is_kept_across_a_restart_and_told_on_the_next_contact() {
    use fieldvault_server::devices;
    use std::sync::atomic::{AtomicBool, Ordering};
    for backend in backends() {
        let h = Harness::start(backend).await;
        let up = Arc::new(AtomicBool::new(true));
        let port = switch_relay(h.addr, up.clone()).await;
        let phone = Phone::new();
        let server = format!("https://127.0.0.1:{port}");
        let first = phone.login_to(&h, &server, "alice").await.expect("login through the relay");
        phone.put("visits", "v1", json!({"n": 1})).await;
        phone.sync().await.expect("sync");

        // The server is unreachable: the data is destroyed here all the same, and the logout
        // is recorded, sealed in the key file.
        up.store(false, Ordering::SeqCst);
        let notice = phone.with(|v, a| v.logout(a, false, false)).await.expect("plain logout offline");
        assert!(matches!(notice, LogoutNotice::Owed(_)), "{notice:?}");
        assert_eq!(phone.get("visits", "v1").await, None, "the data is gone at once");
        let device = |id: String| {
            let store = h.app.store.clone();
            async move { devices::list(&store).await.expect("list").into_iter().find(|d| d.id == id).expect("listed") }
        };
        assert!(device(first.device_id.clone()).await.retired.is_none(), "the server has not heard yet");
        // A restart of the app keeps what is owed (and a sync while still offline too).
        phone.closed(|_| {});
        assert!(phone.sync().await.is_err(), "logged out, and offline");
        let owed = phone.with(|v, _| v.owed_logouts()).await.expect("owed");
        assert_eq!(owed.len(), 1, "{owed:?}");
        assert_eq!((owed[0].device_id.as_str(), owed[0].keep_device), (first.device_id.as_str(), false));
        assert_eq!(owed[0].server, server);
        let keys = std::fs::read(phone.path.join(KEY_FILE)).expect("key file");
        assert!(!keys.windows(server.len()).any(|w| w == server.as_bytes()), "the record is sealed");

        // The network is back: the next login tells the server first, which retires the
        // old device; the login then makes a new one.
        up.store(true, Ordering::SeqCst);
        let again = phone.login_to(&h, &server, "alice").await.expect("login");
        assert_ne!(again.device_id, first.device_id);
        let old = device(first.device_id.clone()).await;
        assert!(old.retired.is_some() && old.lease_expires_at.is_none(), "retired, lease key deleted: {old:?}");
        assert!(phone.with(|v, _| v.owed_logouts()).await.expect("owed").is_empty(), "settled");

        // logout --keep-data offline: owed too, told by the next sync; the device is kept.
        up.store(false, Ordering::SeqCst);
        let notice = phone.with(|v, a| v.logout(a, true, false)).await.expect("logout --keep-data offline");
        assert!(matches!(notice, LogoutNotice::Owed(_)), "{notice:?}");
        up.store(true, Ordering::SeqCst);
        assert!(matches!(phone.sync().await, Err(Error::NotLoggedIn(_))), "the tokens left at once");
        assert!(phone.with(|v, _| v.owed_logouts()).await.expect("owed").is_empty(), "told by that sync");
        let kept = device(again.device_id.clone()).await;
        assert!(!kept.active && kept.retired.is_none(), "session ended, device kept: {kept:?}");
        let back = phone.login_to(&h, &server, "alice").await.expect("login");
        assert!(back.continued && back.device_id == again.device_id, "{back:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owed_logout_whose_access_token_expired_meanwhile_refreshes_and_is_told() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let backend = backends().remove(0);
    let config = fieldvault_server::Config { access_ttl: 2, ..fieldvault_server::Config::default() };
    let h = Harness::start_bare_with_config(backend, None, config).await;
    h.add_user("alice", &[]).await;
    let up = Arc::new(AtomicBool::new(true));
    let server = format!("https://127.0.0.1:{}", switch_relay(h.addr, up.clone()).await);
    let phone = Phone::new();
    let first = phone.login_to(&h, &server, "alice").await.expect("login");
    up.store(false, Ordering::SeqCst);
    let notice = phone.with(|v, a| v.logout(a, false, false)).await.expect("logout offline");
    assert!(matches!(notice, LogoutNotice::Owed(_)), "{notice:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    up.store(true, Ordering::SeqCst);
    let told = phone.with(|v, _| v.finish_logouts()).await.expect("finish");
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].1, LogoutNotice::Delivered, "refreshed with the kept refresh token, then told");
    let list = fieldvault_server::devices::list(&h.app.store).await.expect("list");
    let old = list.iter().find(|d| d.id == first.device_id).expect("listed");
    assert!(old.retired.is_some(), "{old:?}");
    assert!(phone.with(|v, _| v.finish_logouts()).await.expect("again").is_empty(), "told once");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let out = std::process::Command::new("cp").arg("-a").arg(from).arg(to).output().expect("cp");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_copy_put_back_is_caught_and_a_login_continues_as_a_new_device_keeping_local_work() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let phone = Phone::new();
        let first = phone.login(&h, "alice").await;
        phone.put("visits", "v1", json!({"n": 1})).await;
        phone.sync().await.expect("sync");
        let backup = phone._dir.path().join("backup");
        phone.closed(|vault| copy_dir(vault, &backup));
        phone.put("visits", "v2", json!({"n": 2})).await;
        phone.sync().await.expect("the device moves on");
        // The old copy comes back, with a change made on it that never reached the server.
        phone.closed(|vault| {
            std::fs::remove_dir_all(vault).expect("remove");
            std::fs::rename(&backup, vault).expect("restore");
        });
        phone.put("visits", "v3", json!({"n": 3})).await;
        let err = phone.sync().await.expect_err("rollback");
        assert!(matches!(err, Error::RollbackDetected), "{err}");
        let err = phone.sync().await.expect_err("locked until a login");
        assert!(matches!(err, Error::LeaseExpired(_)), "{err}");
        let shut = phone.with(|v, a| v.documents(a).map(|_| ())).await.expect_err("the account is locked");
        assert!(matches!(shut, Error::LeaseExpired(_)), "{shut}");
        let again = phone.login(&h, "alice").await;
        assert!(!again.continued && again.device_id != first.device_id, "{again:?}");
        assert_eq!(again.device_reason.as_deref(), Some("rollback"));
        let r = phone.sync().await.expect("the new device syncs");
        assert!(r.pushed >= 1, "{r:?}");
        for id in ["v1", "v2", "v3"] {
            assert!(phone.get("visits", id).await.is_some(), "{id} is on the device after reconciling");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_ordered_while_the_device_was_away_is_carried_out_when_its_next_contact_is_a_login() {
    use fieldvault_core::protocol::DirectiveKind;
    use fieldvault_server::devices;
    for backend in backends() {
        let h = Harness::start(backend).await;
        let phone = Phone::new();
        let first = phone.login(&h, "alice").await;
        phone.put("visits", "v1", json!({"n": 1})).await;
        phone.sync().await.expect("sync");
        phone.put("visits", "unsynced", json!({"n": 2})).await;
        devices::issue_directive(
            &h.app.store,
            "cli:test",
            &h.app.tokens,
            &first.device_id,
            DirectiveKind::Wipe,
            crate::harness::now(),
        )
        .await
        .expect("wipe");
        let again = phone.login(&h, "alice").await;
        assert!(again.wiped, "{again:?}");
        assert_eq!(again.device_reason.as_deref(), Some("wiped"));
        assert!(!again.continued && again.device_id != first.device_id);
        assert_eq!(phone.get("visits", "unsynced").await, None, "nothing of the wiped account is left");
        assert_eq!(phone.outbox_len().await, 0);
        let pending = devices::list(&h.app.store).await.expect("list");
        let old = pending.iter().find(|d| d.id == first.device_id).expect("the old device is listed");
        assert_eq!(old.pending().count(), 0, "the wipe was acknowledged: {:?}", old.directives);
        assert_eq!(old.directives[0].state(), fieldvault_server::DirectiveState::Acknowledged);
        // The new device gets the user's synced documents back.
        let r = phone.sync().await.expect("sync");
        assert_eq!(r.pulled, 1, "{r:?}");
    }
}

/// A party holding the server's certificate and key, between the device and the server:
/// it terminates TLS with the server's own key, relays HTTP/1.1 to the real server, and
/// while `tamper` is set flips one byte of every answer's body.
async fn man_in_the_middle(h: &Harness, tamper: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server_side = (*h.tls_config()).clone();
    server_side.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_side));
    let pins = fieldvault_client::Pins::parse(std::slice::from_ref(&h.pin)).expect("pin");
    let mut client_side = fieldvault_client::pinned_client_config(pins);
    client_side.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_side));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let upstream = h.addr;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, connector, tamper) = (acceptor.clone(), connector.clone(), tamper.clone());
            tokio::spawn(async move {
                let Ok(device) = acceptor.accept(tcp).await else { return };
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else { return };
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
                let Ok(server) = connector.connect(name, up).await else { return };
                let (mut dr, mut dw) = tokio::io::split(device);
                let (mut sr, mut sw) = tokio::io::split(server);
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut dr, &mut sw).await;
                });
                let mut buf = vec![0u8; 16 << 10];
                let mut tail: Vec<u8> = Vec::new();
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &mut buf[..n];
                    if tamper.load(std::sync::atomic::Ordering::SeqCst) {
                        // Flip the first body byte after each header block.
                        tail.extend_from_slice(chunk);
                        let start = tail.len() - n;
                        if let Some(at) = tail.windows(4).position(|w| w == b"\r\n\r\n") {
                            let body = at + 4;
                            if body >= start && body < tail.len() {
                                chunk[body - start] ^= 0x01;
                            }
                            if body <= tail.len() {
                                tail.drain(..body.min(tail.len()));
                            }
                        }
                    }
                    if dw.write_all(chunk).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_changed_in_transit_by_a_holder_of_the_servers_key_is_refused_and_nothing_is_applied() {
    let backend = backends().remove(0);
    let h = Harness::start(backend).await;
    let tamper = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = man_in_the_middle(&h, tamper.clone()).await;
    let (phone, other) = (Phone::new(), Phone::new());
    let (server, pins) = (format!("https://127.0.0.1:{port}"), vec![h.pin.clone()]);
    phone
        .with(move |v, a| {
            v.login(
                a,
                LoginOptions {
                    server: &server,
                    pins: &pins,
                    user: "alice",
                    password: Zeroizing::new(PASSWORD.to_owned()),
                    device_name: "phone",
                    totp: None,
                },
            )
        })
        .await
        .expect("login through the relay");
    other.login(&h, "alice").await;
    other.put("visits", "theirs", json!({"n": 1})).await;
    other.sync().await.expect("the other device pushes");
    phone.put("visits", "mine", json!({"n": 2})).await;

    tamper.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = phone.sync().await.expect_err("a changed answer");
    assert!(matches!(err, Error::ResponseNotVerified { .. }), "{err}");
    assert_eq!(phone.outbox_len().await, 1, "the op stays until a verified answer says it is applied");
    assert_eq!(phone.get("visits", "theirs").await, None, "nothing pulled from an unverified answer");

    tamper.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = phone.sync().await.expect("a clean sync");
    assert_eq!((r.pushed, r.pulled), (1, 2), "{r:?}");
    assert_eq!(phone.outbox_len().await, 0);
    assert!(phone.get("visits", "theirs").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ends_offline_shuts_the_account_and_the_next_login_brings_it_back_outbox_intact() {
    for backend in backends() {
        let config = fieldvault_server::Config { lease_ttl: 3, offline_ttl: 3, ..fieldvault_server::Config::default() };
        let h = Harness::start_bare_with_config(backend, None, config).await;
        h.add_user("alice", &[]).await;
        let phone = Phone::new();
        let first = phone.login(&h, "alice").await;
        phone.put("visits", "v1", json!({"n": 1})).await;
        phone.sync().await.expect("sync");
        phone.put("visits", "offline", json!({"n": 2})).await;
        tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
        let shut = phone.with(|v, a| v.documents(a).map(|_| ())).await.expect_err("the lease has ended");
        assert!(matches!(shut, Error::LeaseExpired(_)), "{shut}");
        assert!(matches!(phone.sync().await, Err(Error::LeaseExpired(_))));
        let back = phone.login(&h, "alice").await;
        assert!(back.continued && back.device_id == first.device_id, "{back:?}");
        assert!(phone.get("visits", "offline").await.is_some(), "every byte kept");
        assert_eq!(phone.outbox_len().await, 1, "the unsynced change is still owed");
        let r = phone.sync().await.expect("sync");
        assert_eq!(r.pushed, 1, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_past_one_mebibyte_go_through_and_a_disabled_user_is_told_to_log_in_again() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let phone = Phone::new();
        phone.login(&h, "alice").await;
        // Three documents of 400 KB, and one just under the 1 MiB document limit: the push
        // body is well past 1 MiB and under the 4 MiB the protocol allows.
        for i in 0..3 {
            phone.put("scans", &format!("s{i}"), json!({"data": "x".repeat(400_000)})).await;
        }
        phone.put("scans", "big", json!({"data": "y".repeat(1_000_000)})).await;
        let r = phone.sync().await.expect("a push of several MiB");
        assert_eq!((r.pushed, r.rejected), (4, 0), "{r:?}");
        assert_eq!(phone.outbox_len().await, 0);

        fieldvault_server::accounts::disable_user(&h.app.store, "cli:test", "alice", crate::harness::now())
            .await
            .expect("disable");
        phone.put("scans", "after", json!({"n": 1})).await;
        let err = phone.sync().await.expect_err("the session is over");
        assert!(matches!(err, Error::ReauthRequired(_)), "{err}");
        assert_eq!(phone.outbox_len().await, 1, "the change waits for the next login");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_over_the_servers_body_limit_is_sent_in_halves_though_the_refusal_is_unsigned() {
    for backend in backends() {
        // A server that takes pushes of 1 MiB at most: it refuses a larger one before it has
        // read the body, so before the signature is checked, and cannot sign the 413.
        let config = fieldvault_server::Config { push_body_limit: 1 << 20, ..Default::default() };
        let h = Harness::start_bare_with_config(backend, None, config).await;
        h.add_user("alice", &["inspector"]).await;
        let phone = Phone::new();
        phone.login(&h, "alice").await;
        for i in 0..3 {
            phone.put("scans", &format!("s{i}"), json!({"data": "x".repeat(400_000)})).await;
        }
        let r = phone.sync().await.expect("the push goes through in smaller batches");
        assert_eq!((r.pushed, r.rejected), (3, 0), "{r:?}");
        assert_eq!(phone.outbox_len().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_large_documents_comes_in_pages_the_server_cut_by_size() {
    let backend = backends().remove(0);
    let h = Harness::start(backend).await;
    let (one, two) = (Phone::new(), Phone::new());
    one.login(&h, "alice").await;
    two.login(&h, "alice").await;
    // Twelve documents of 900 KB: one page of them (10.8 MB) would be past the 8 MiB a device
    // reads of an answer; the server cuts pages at 4 MiB of changes, so the device takes
    // them as they come (its halving of the limit stays as a fallback for other servers).
    for i in 0..12 {
        one.put("scans", &format!("s{i:02}"), json!({"data": "z".repeat(900_000)})).await;
    }
    assert_eq!(one.sync().await.expect("pushed in several batches").pushed, 12);
    let r = two.sync().await.expect("pulled in smaller pages");
    assert_eq!(r.pulled, 12, "{r:?}");
    assert!(two.get("scans", "s11").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_the_server_finds_too_large_once_merged_is_rolled_back_and_kept_as_rejected() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let phone = Phone::new();
        phone.login(&h, "alice").await;
        // Exactly 1 MiB here ({"data":"..."} is 11 bytes around the string); the owner the
        // server adds takes it past the limit.
        let limit = fieldvault_core::names::MAX_DOCUMENT_BYTES;
        phone.put("scans", "edge", json!({"data": "e".repeat(limit - 11)})).await;
        phone.put("scans", "small", json!({"n": 1})).await;
        let r = phone.sync().await.expect("sync");
        assert_eq!((r.pushed, r.rejected), (1, 1), "{r:?}");
        assert_eq!(phone.outbox_len().await, 0, "a final answer: not sent again");
        assert!(phone.get("scans", "edge").await.is_none(), "rolled back to the server's state (none)");
        assert!(phone.get("scans", "small").await.is_some());
        let rejected = phone.with(|v, a| v.rejected(a)).await.expect("rejected");
        let seen: Vec<(&str, &str)> = rejected.iter().map(|x| (x.id.as_str(), x.status.as_str())).collect();
        assert_eq!(seen, [("edge", "too_large")]);
        assert!(h.app.store.document("scans", "edge").await.expect("read").is_none());
    }
}
