//! The admin console on its own listener, over real TLS on loopback, on SQLite and (with
//! `FIELDVAULT_TEST_POSTGRES`) PostgreSQL: login with TOTP enrolled at the first login,
//! throttling, sessions, CSRF, fetch metadata, step-up, the users page, and that neither
//! listener serves the other's routes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use fieldvault_core::{TotpSecret, totp_code, totp_step};
use fieldvault_server::Server;
use fieldvault_server::auth::{Password, Passwords};
use zeroize::Zeroizing;

use crate::harness::{Backend, Harness, PASSWORD, Response, backends, now};

const ADMIN: &str = "root";
const ADMIN_PASSWORD: &str = "admin password of some length";

/// A server with user `alice`, administrator `root`, and the console on its own listener;
/// the clock stands still (tests move it).
async fn start(backend: Backend) -> (Harness, SocketAddr) {
    start_on(Harness::start(backend).await).await
}

/// The console over an existing server `h`, with the administrator added.
async fn start_on(h: Harness) -> (Harness, SocketAddr) {
    h.frozen.store(now(), Ordering::SeqCst);
    let passwords = Passwords::new(1).expect("hasher");
    let password = Password::new(Zeroizing::new(ADMIN_PASSWORD.into()));
    fieldvault_server::console::add_admin(&h.app.store, "cli:test", &passwords, ADMIN, password, h.app.now())
        .await
        .expect("admin add");
    let console = Server::bind_console("127.0.0.1:0".parse().expect("addr"), h.tls_config(), h.app.clone())
        .await
        .expect("bind the console");
    let addr = console.local_addr();
    tokio::spawn(console.run(std::future::pending()));
    (h, addr)
}

fn advance(h: &Harness, secs: u64) {
    h.frozen.fetch_add(secs, Ordering::SeqCst);
}

/// A request to the console: `cookies` as one `Cookie` header, `extra` headers, a form body.
async fn request(
    h: &Harness,
    addr: SocketAddr,
    method: &str,
    target: &str,
    cookies: &[&str],
    extra: &[(&str, &str)],
    form: &[(&str, &str)],
) -> Response {
    let body = form_body(form);
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if !cookies.is_empty() {
        head.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.as_bytes());
    h.send_to(addr, &raw).await
}

fn form_body(form: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in form.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(&format!("{}={}", encode(k), encode(v)));
    }
    s
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `name=value` of the `Set-Cookie` named `name`, and the whole header line.
fn set_cookie(r: &Response, name: &str) -> Option<(String, String)> {
    r.headers.iter().filter(|(k, _)| k == "set-cookie").find_map(|(_, v)| {
        let pair = v.split(';').next()?.trim();
        pair.starts_with(&format!("{name}=")).then(|| (pair.to_owned(), v.clone()))
    })
}

/// The value of the hidden `csrf` field on a page.
fn csrf_field(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().expect("value").to_owned()
}

/// What a browser holds after `GET /`: the login cookie and the form's token.
async fn login_form(h: &Harness, addr: SocketAddr) -> (String, String) {
    let r = request(h, addr, "GET", "/", &[], &[], &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (cookie, _) = set_cookie(&r, "__Host-fv_login").expect("a login cookie");
    (cookie, csrf_field(&r.text()))
}

async fn login(h: &Harness, addr: SocketAddr, password: &str, code: &str) -> Response {
    let (cookie, token) = login_form(h, addr).await;
    let form = [("csrf", token.as_str()), ("name", ADMIN), ("password", password), ("code", code)];
    request(h, addr, "POST", "/login", &[&cookie], &[], &form).await
}

/// The first login: password, then the enrolment page's secret confirmed by a code. The
/// full session's cookie and the secret.
async fn enrol(h: &Harness, addr: SocketAddr) -> (String, TotpSecret) {
    let r = login(h, addr, ADMIN_PASSWORD, "").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/enrol")), "{}", r.text());
    let (cookie, _) = set_cookie(&r, "__Host-fv_admin").expect("an enrolling session");
    let page = request(h, addr, "GET", "/enrol", &[&cookie], &[], &[]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let text = page.text();
    assert!(text.contains("<svg") && !text.contains("<?xml"), "an inline QR code: {text}");
    let at = text.find("secret=").expect("the otpauth URI on the page") + "secret=".len();
    let secret: String = text[at..].chars().take_while(char::is_ascii_alphanumeric).collect();
    let secret = TotpSecret::from_base32(&secret).expect("a base32 secret");
    let token = csrf_field(&text);
    // Only the enrolment page until a code confirms the secret.
    let users = request(h, addr, "GET", "/users", &[&cookie], &[], &[]).await;
    assert_eq!((users.status, users.header("location")), (303, Some("/enrol")));
    let wrong = code_for(&secret, h.app.now() + 300);
    let r = request(h, addr, "POST", "/enrol", &[&cookie], &[], &[("csrf", &token), ("code", &wrong)]).await;
    assert_eq!(r.status, 401, "a wrong code is refused: {}", r.text());
    let code = code_for(&secret, h.app.now());
    let r = request(h, addr, "POST", "/enrol", &[&cookie], &[], &[("csrf", &token), ("code", &code)]).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/users")), "{}", r.text());
    let (full, _) = set_cookie(&r, "__Host-fv_admin").expect("a new session");
    assert_ne!(full, cookie, "the session id changes once the code is in");
    let old = request(h, addr, "GET", "/enrol", &[&cookie], &[], &[]).await;
    assert_eq!((old.status, old.header("location")), (303, Some("/")), "the enrolling session is over");
    (full, secret)
}

fn code_for(secret: &TotpSecret, at: u64) -> String {
    totp_code(secret, totp_step(at)).to_string()
}

/// A code no step near `at` has.
fn wrong_code(secret: &TotpSecret, at: u64) -> String {
    let near: Vec<String> = (0..5).map(|i| code_for(secret, at + i * 30 - 60)).collect();
    (0..).map(|n| format!("{n:06}")).find(|c| !near.contains(c)).expect("a free code")
}

async fn revoked(h: &Harness, device: &crate::harness::Device) -> bool {
    h.app.store.session_by_key_id(&device.key_id).await.expect("read").expect("the session").revoked
}

/// A full session: enrolled, then the CSRF token of the users page.
async fn signed_in(h: &Harness, addr: SocketAddr) -> (String, String, TotpSecret) {
    let (cookie, secret) = enrol(h, addr).await;
    let page = request(h, addr, "GET", "/users", &[&cookie], &[], &[]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    (cookie, csrf_field(&page.text()), secret)
}

#[tokio::test]
async fn an_administrator_enrols_totp_at_the_first_login_and_needs_a_code_at_every_login_after() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let (_, secret) = enrol(&h, addr).await;
        advance(&h, 30);
        let r = login(&h, addr, ADMIN_PASSWORD, "").await;
        assert_eq!(r.status, 401, "no code, no session: {}", r.text());
        assert!(set_cookie(&r, "__Host-fv_admin").is_none());
        let r = login(&h, addr, ADMIN_PASSWORD, &code_for(&secret, h.app.now())).await;
        assert_eq!((r.status, r.header("location")), (303, Some("/users")), "{}", r.text());
        let r = login(&h, addr, ADMIN_PASSWORD, &code_for(&secret, h.app.now())).await;
        assert_eq!(r.status, 401, "a code is good once: {}", r.text());
    }
}

#[tokio::test]
async fn a_wrong_password_or_code_is_refused_and_repeated_failures_are_throttled() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let (_, secret) = enrol(&h, addr).await;
        advance(&h, 30);
        let r = login(&h, addr, "not the password at all", &code_for(&secret, h.app.now())).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.text().contains("Wrong name or password"), "{}", r.text());
        let r = login(&h, addr, ADMIN_PASSWORD, &wrong_code(&secret, h.app.now())).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.text().contains("Wrong or already used code"), "{}", r.text());
        // Two failures so far; two more are free, then the wait begins.
        for _ in 0..2 {
            assert_eq!(login(&h, addr, "not the password at all", "").await.status, 401);
        }
        let r = login(&h, addr, ADMIN_PASSWORD, &code_for(&secret, h.app.now())).await;
        assert_eq!(r.status, 429, "even the right password waits: {}", r.text());
        assert!(r.header("retry-after").is_some());
        assert!(set_cookie(&r, "__Host-fv_admin").is_none());
        // A user of the same name is counted apart: the device login is not throttled.
        assert_eq!(h.login("alice", PASSWORD).await.status, 200);
    }
}

#[tokio::test]
async fn a_missing_or_forged_csrf_token_or_a_cross_site_request_changes_nothing() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let (cookie, token, _) = signed_in(&h, addr).await;
        let new_user = [("user", "mallory"), ("password", "a long enough password"), ("roles", "")];
        let without: Vec<(&str, &str)> = new_user.to_vec();
        let r = request(&h, addr, "POST", "/users", &[&cookie], &[], &without).await;
        assert_eq!(r.status, 403, "no token: {}", r.text());
        let mut forged = vec![("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")];
        forged.extend_from_slice(&new_user);
        let r = request(&h, addr, "POST", "/users", &[&cookie], &[], &forged).await;
        assert_eq!(r.status, 403, "a forged token: {}", r.text());
        let r = request(&h, addr, "POST", "/users", &[&cookie], &[("X-CSRF-Token", "forged")], &without).await;
        assert_eq!(r.status, 403, "a forged header: {}", r.text());
        let mut good = vec![("csrf", token.as_str())];
        good.extend_from_slice(&new_user);
        for site in ["cross-site", "same-site"] {
            let r = request(&h, addr, "POST", "/users", &[&cookie], &[("Sec-Fetch-Site", site)], &good).await;
            assert_eq!(r.status, 403, "{site}: {}", r.text());
        }
        let r = request(&h, addr, "GET", "/users", &[&cookie], &[("Sec-Fetch-Site", "cross-site")], &[]).await;
        assert_eq!(r.status, 403, "a page read from another site");
        assert!(h.app.store.user("mallory").await.expect("read").is_none(), "nothing was created");
        // The same request from the console's own page goes through, by field or by header.
        let r = request(&h, addr, "POST", "/users", &[&cookie], &[("Sec-Fetch-Site", "same-origin")], &good).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(h.app.store.user("mallory").await.expect("read").is_some());
        let r =
            request(&h, addr, "POST", "/users/enable", &[&cookie], &[("X-CSRF-Token", &token)], &[("user", "mallory")])
                .await;
        assert_eq!(r.status, 200, "{}", r.text());
        // The login form's own token: refused without its cookie.
        let (_, login_token) = login_form(&h, addr).await;
        let form = [("csrf", login_token.as_str()), ("name", ADMIN), ("password", ADMIN_PASSWORD)];
        assert_eq!(request(&h, addr, "POST", "/login", &[], &[], &form).await.status, 403);
    }
}

#[tokio::test]
async fn without_a_live_session_every_page_redirects_to_the_login_form() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        for (method, target) in [("GET", "/users"), ("POST", "/users/disable"), ("GET", "/enrol")] {
            let r = request(&h, addr, method, target, &[], &[], &[("user", "alice")]).await;
            assert_eq!((r.status, r.header("location")), (303, Some("/")), "{method} {target}");
        }
        let r = request(&h, addr, "GET", "/users", &["__Host-fv_admin=forged"], &[], &[]).await;
        assert_eq!((r.status, r.header("location")), (303, Some("/")), "a forged cookie");
        let (cookie, _, _) = signed_in(&h, addr).await;
        advance(&h, 14 * 60);
        assert_eq!(request(&h, addr, "GET", "/users", &[&cookie], &[], &[]).await.status, 200, "within 15 minutes");
        advance(&h, 15 * 60 + 1);
        let r = request(&h, addr, "GET", "/users", &[&cookie], &[], &[]).await;
        assert_eq!((r.status, r.header("location")), (303, Some("/")), "idle for more than 15 minutes");
        assert!(!h.app.store.user("alice").await.expect("read").expect("alice").disabled);
    }
}

#[tokio::test]
async fn a_disable_or_role_change_after_the_step_up_window_asks_for_a_code_then_goes_ahead() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let alice = h.device("alice").await;
        let (cookie, token, secret) = signed_in(&h, addr).await;
        advance(&h, 5 * 60 + 1);
        let form = [("csrf", token.as_str()), ("user", "alice")];
        let r = request(&h, addr, "POST", "/users/disable", &[&cookie], &[], &form).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("name=\"stepup_code\""), "the page asks for a code: {}", r.text());
        assert!(!h.app.store.user("alice").await.expect("read").expect("alice").disabled, "nothing changed");
        let access = [("csrf", token.as_str()), ("user", "alice"), ("roles", "admin"), ("attributes", "")];
        assert_eq!(request(&h, addr, "POST", "/users/access", &[&cookie], &[], &access).await.status, 403);
        assert_eq!(h.app.store.user("alice").await.expect("read").expect("alice").roles, vec!["inspector"]);
        let bad = wrong_code(&secret, h.app.now());
        let wrong = [("csrf", token.as_str()), ("user", "alice"), ("stepup_code", bad.as_str())];
        let r = request(&h, addr, "POST", "/users/disable", &[&cookie], &[], &wrong).await;
        assert_eq!(r.status, 403, "a wrong code: {}", r.text());
        assert!(!h.app.store.user("alice").await.expect("read").expect("alice").disabled);
        let code = code_for(&secret, h.app.now());
        let with_code = [("csrf", token.as_str()), ("user", "alice"), ("stepup_code", code.as_str())];
        let r = request(&h, addr, "POST", "/users/disable", &[&cookie], &[], &with_code).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(h.app.store.user("alice").await.expect("read").expect("alice").disabled);
        assert!(revoked(&h, &alice).await, "the disable revoked alice's session");
        // Within the window now: a role change needs no second code.
        let r = request(&h, addr, "POST", "/users/access", &[&cookie], &[], &access).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(h.app.store.user("alice").await.expect("read").expect("alice").roles, vec!["admin"]);
    }
}

#[tokio::test]
async fn every_answer_carries_the_csp_and_the_session_cookie_its_attributes() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let r = login(&h, addr, ADMIN_PASSWORD, "").await;
        let (_, line) = set_cookie(&r, "__Host-fv_admin").expect("a session cookie");
        for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(line.split(';').any(|a| a.trim() == attribute), "{attribute} in {line}");
        }
        assert!(!line.contains("Domain"), "{line}");
        let (cookie, _, _) = signed_in(&h, addr).await;
        let pages = [
            request(&h, addr, "GET", "/", &[], &[], &[]).await,
            request(&h, addr, "GET", "/users", &[&cookie], &[], &[]).await,
            request(&h, addr, "GET", "/no/such/page", &[&cookie], &[], &[]).await,
            request(&h, addr, "GET", "/assets/htmx.min.js", &[], &[], &[]).await,
        ];
        for r in &pages {
            assert_eq!(
                r.header("content-security-policy"),
                Some("default-src 'none'; script-src 'self'; style-src 'self'; frame-ancestors 'none'")
            );
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
            assert!(r.headers.iter().all(|(k, _)| !k.starts_with("access-control-")), "no CORS: {r:?}");
        }
        let htmx = &pages[3];
        assert_eq!(htmx.status, 200);
        assert_eq!(htmx.header("content-type"), Some("text/javascript; charset=utf-8"));
        assert!(htmx.header("cache-control").is_some_and(|c| c.contains("max-age=31536000")));
        assert!(htmx.text().contains("htmx"), "the vendored file");
        assert_eq!(pages[1].header("cache-control"), Some("no-store"));
        let text = pages[1].text();
        assert!(!text.contains("style=") && !text.contains("<style"), "no inline style");
    }
}

#[tokio::test]
async fn a_script_tag_in_a_user_name_is_shown_as_text_and_a_page_past_the_end_is_empty() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let (cookie, token, _) = signed_in(&h, addr).await;
        let evil = "<script>alert(1)</script>";
        let form =
            [("csrf", token.as_str()), ("user", evil), ("password", "a long enough password"), ("roles", "a, b")];
        // The name rule refuses it, and the refusal shows the name as text.
        let r = request(&h, addr, "POST", "/users", &[&cookie], &[], &form).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("is not valid: a user name holds only"), "{}", r.text());
        assert!(r.text().contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !r.text().contains(evil), "{}", r.text());
        assert!(h.app.store.user(evil).await.expect("read").is_none());
        // A name from before the rule (or an identity provider's) still shows as text.
        let user = fieldvault_server::UserRecord {
            name: evil.into(),
            password_hash: "h".into(),
            roles: vec!["a".into(), "b".into()],
            disabled: false,
            attributes: Default::default(),
        };
        let audit = fieldvault_server::AuditEvent::new(now(), "cli:test", "user.add", evil);
        h.app.store.add_user(&user, now(), &audit).await.expect("added past the rule");
        let page = request(&h, addr, "GET", "/users?q=%3Cscr", &[&cookie], &[], &[]).await;
        let text = page.text();
        assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{text}");
        assert!(!text.contains(evil), "{text}");
        assert!(!text.contains("<td>alice</td>"), "the prefix search leaves alice out: {text}");
        assert_eq!(h.app.store.user(evil).await.expect("read").expect("created").roles, vec!["a", "b"]);
        let past = request(&h, addr, "GET", "/users?page=999", &[&cookie], &[], &[]).await;
        assert_eq!(past.status, 200, "{}", past.text());
        assert!(past.text().contains("No users on this page."));
        let bad = request(&h, addr, "GET", "/users?page=0", &[&cookie], &[], &[]).await;
        assert_eq!(bad.status, 400);
        // A reset revokes alice's session.
        let alice = h.device("alice").await;
        let form = [("csrf", token.as_str()), ("user", "alice"), ("password", "another long password")];
        assert_eq!(request(&h, addr, "POST", "/users/password", &[&cookie], &[], &form).await.status, 200);
        assert!(revoked(&h, &alice).await, "the reset revoked alice's session");
    }
}

#[tokio::test]
async fn the_device_listener_serves_none_of_the_console_and_the_console_none_of_the_device_api() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        for target in ["/", "/login", "/users", "/assets/htmx.min.js", "/assets/console.css"] {
            let r = h.plain("GET", target, b"").await;
            assert_eq!(r.status, 404, "device listener, {target}: {}", r.text());
        }
        assert_eq!(h.plain("POST", "/login", b"").await.status, 404);
        for (method, target) in [("GET", "/healthz"), ("POST", "/v1/auth/login"), ("GET", "/v1/openapi.json")] {
            let r = request(&h, addr, method, target, &[], &[], &[]).await;
            assert_ne!(r.status, 200, "console listener, {target}");
            assert!(!r.text().contains("\"status\""), "{}", r.text());
            assert!(matches!(r.status, 303 | 404), "console listener, {target}: {}", r.status);
        }
    }
}

#[tokio::test]
async fn the_store_keeps_administrators_apart_uses_each_code_step_once_and_reads_users_a_page_at_a_time() {
    use fieldvault_server::{Page, StoreError};
    for backend in backends() {
        let (h, _) = start(backend).await;
        let store = &h.app.store;
        let head = store.audit_head().await.expect("head");
        let event = fieldvault_server::AuditEvent::new(1, "cli:test", "admin.add", ADMIN);
        let again = store.add_admin(ADMIN, "h", 1, &event).await.expect_err("a taken name");
        assert!(matches!(&again, StoreError::AdminExists(n) if n == ADMIN), "{again:?}");
        assert_eq!(store.audit_head().await.expect("head"), head, "a refused add records nothing");
        assert!(store.admin("alice").await.expect("read").is_none(), "a user is not an administrator");
        assert!(store.user(ADMIN).await.expect("read").is_none(), "an administrator is not a user");
        assert!(store.set_admin_totp(ADMIN, b"sealed one").await.expect("set"));
        assert!(store.set_admin_totp(ADMIN, b"sealed two").await.expect("set"), "replaced before a code confirms it");
        assert!(!store.use_admin_totp(ADMIN, b"sealed one", 10).await.expect("use"), "not the secret held");
        assert!(store.use_admin_totp(ADMIN, b"sealed two", 10).await.expect("use"));
        assert!(!store.use_admin_totp(ADMIN, b"sealed two", 10).await.expect("use"), "a step is used once");
        assert!(!store.use_admin_totp(ADMIN, b"sealed two", 9).await.expect("use"), "never an earlier step");
        assert!(!store.set_admin_totp(ADMIN, b"sealed three").await.expect("set"), "a confirmed secret stays");
        let admin = store.admin(ADMIN).await.expect("read").expect("root");
        assert_eq!((admin.totp_confirmed, admin.totp_last_step), (true, Some(10)));
        assert_eq!(admin.totp_sealed.as_deref(), Some(&b"sealed two"[..]));
        for name in ["carol", "carla", "dave"] {
            h.add_user(name, &[]).await;
        }
        let names = |users: Vec<fieldvault_server::UserRecord>| users.into_iter().map(|u| u.name).collect::<Vec<_>>();
        let page = |offset, limit| Page { offset, limit };
        assert_eq!(
            names(store.users_page("", page(0, 10)).await.expect("page")),
            ["alice", "bob", "carla", "carol", "dave"]
        );
        assert_eq!(names(store.users_page("car", page(0, 10)).await.expect("page")), ["carla", "carol"]);
        assert_eq!(names(store.users_page("", page(1, 2)).await.expect("page")), ["bob", "carla"]);
        assert!(store.users_page("", page(5, 2)).await.expect("page").is_empty(), "past the end");
        assert!(store.users_page("%", page(0, 10)).await.expect("page").is_empty(), "no pattern characters");
    }
}

#[tokio::test]
async fn the_audit_page_lists_the_log_a_page_at_a_time_and_its_check_names_a_tampered_record() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let (cookie, _, _) = signed_in(&h, addr).await;
        let page = request(&h, addr, "GET", "/audit", &[&cookie], &[], &[]).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        for action in ["admin.add", "console.login.enrolment", "console.totp.enrolled"] {
            assert!(text.contains(action), "{action} listed: {text}");
        }
        let past = request(&h, addr, "GET", "/audit?after=100000", &[&cookie], &[], &[]).await;
        assert_eq!(past.status, 200);
        assert!(past.text().contains("No records here."), "{}", past.text());
        let bad = request(&h, addr, "GET", "/audit?after=x", &[&cookie], &[], &[]).await;
        assert_eq!(bad.status, 400);
        let check = request(&h, addr, "GET", "/audit/verify", &[&cookie], &[], &[]).await;
        assert_eq!(check.status, 200, "{}", check.text());
        assert!(check.text().contains("The chain verifies"), "{}", check.text());
        // A record changed in the database past the server is named.
        crate::audit::edit_detail(&h, 2).await;
        let check = request(&h, addr, "GET", "/audit/verify", &[&cookie], &[], &[]).await;
        assert_eq!(check.status, 409, "{}", check.text());
        assert!(check.text().contains("broken at record 2"), "{}", check.text());
        // Without a session the log is not shown.
        let anonymous = request(&h, addr, "GET", "/audit", &[], &[], &[]).await;
        assert_eq!(anonymous.status, 303, "{}", anonymous.text());
    }
}

#[tokio::test]
async fn the_rules_page_shows_the_rules_in_force_and_what_a_user_may_read_of_a_document() {
    const RULES: &str = "version = 1\n\n[collections.visits]\nread = \"doc.owner == user.id || 'supervisor' in user.roles\"\nwrite = \"doc.owner == user.id\"\nfields = [\"patient\"]\n";
    for backend in backends() {
        let (h, addr) = start_on(Harness::start_with_rules(backend, RULES).await).await;
        h.add_user("sue", &["supervisor"]).await;
        let alice = h.device("alice").await;
        let op = crate::sync::put(&crate::sync::key(), "visits", "v1", serde_json::json!({"patient": "Ada"}), 0);
        let results = crate::sync::push_ok(&h, &alice, serde_json::json!([op]), 1).await;
        assert_eq!(results[0]["status"], "applied", "{results:?}");
        let (cookie, _, _) = signed_in(&h, addr).await;
        let page = request(&h, addr, "GET", "/rules", &[&cookie], &[], &[]).await;
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(page.text().contains("[collections.visits]"), "the rules in force: {}", page.text());
        let ask = |user: &str| format!("/rules?user={user}&collection=visits&id=v1");
        let sue = request(&h, addr, "GET", &ask("sue"), &[&cookie], &[], &[]).await.text();
        assert!(sue.contains("sue may read visits/v1"), "{sue}");
        assert!(sue.contains("&quot;patient&quot;: &quot;Ada&quot;"), "the synced fields: {sue}");
        let bob = request(&h, addr, "GET", &ask("bob"), &[&cookie], &[], &[]).await.text();
        assert!(bob.contains("bob may not read visits/v1"), "{bob}");
        let nobody = request(&h, addr, "GET", &ask("nobody"), &[&cookie], &[], &[]).await.text();
        assert!(nobody.contains("There is no user"), "{nobody}");
    }
}

/// The `data-state` of directive `jti` on the devices page.
fn directive_state(page: &str, jti: &str) -> Option<String> {
    let at =
        page.find(&format!("data-jti=\"{jti}\" data-state=\""))? + format!("data-jti=\"{jti}\" data-state=\"").len();
    page[at..].split('"').next().map(str::to_owned)
}

#[tokio::test]
async fn the_devices_page_revokes_and_wipes_with_a_step_up_and_follows_each_directive_to_its_acknowledgement() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        // A device named with markup: shown as text.
        let evil = "<script>alert(1)</script>";
        let body = serde_json::json!({ "user": "alice", "password": PASSWORD, "device_name": evil });
        let r = h.plain("POST", "/v1/auth/login", body.to_string().as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let tablet = crate::harness::Device::from_tokens(&r.json());
        let phone = h.device("alice").await;
        let (cookie, token, secret) = signed_in(&h, addr).await;
        let page = request(&h, addr, "GET", "/devices?user=alice", &[&cookie], &[], &[]).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !text.contains(evil), "{text}");
        assert!(text.contains(&tablet.device_id) && text.contains(&phone.device_id), "{text}");
        assert_eq!(text.matches("signed in").count(), 2, "{text}");

        // Revoke: no step-up; the tablet's session ends, the phone's stays.
        let form = [("csrf", token.as_str()), ("device", tablet.device_id.as_str())];
        let r = request(&h, addr, "POST", "/devices/revoke", &[&cookie], &[], &form).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(revoked(&h, &tablet).await && !revoked(&h, &phone).await);
        let listed = h.app.store.devices().await.expect("devices");
        let jti = listed.iter().find(|d| d.id == tablet.device_id).expect("tablet").directives[0].jti.clone();
        let page = request(&h, addr, "GET", "/devices?user=alice", &[&cookie], &[], &[]).await.text();
        assert_eq!(directive_state(&page, &jti).as_deref(), Some("queued"), "{page}");
        // The directive rides the next answer to the tablet: sent.
        let r = h.signed(&tablet, "GET", "/v1/devices/self", b"").await;
        assert_eq!(r.status, 401);
        assert!(r.header("x-fieldvault-directives").is_some());
        let page = request(&h, addr, "GET", "/devices?user=alice", &[&cookie], &[], &[]).await.text();
        assert_eq!(directive_state(&page, &jti).as_deref(), Some("sent"), "{page}");
        // The tablet acknowledges it: acknowledged.
        let ack = serde_json::json!({ "jtis": [jti] }).to_string();
        let r = h.signed(&tablet, "POST", "/v1/devices/ack", ack.as_bytes()).await;
        assert_eq!(r.json()["acknowledged"], 1, "{}", r.text());
        let page = request(&h, addr, "GET", "/devices?user=alice", &[&cookie], &[], &[]).await.text();
        assert_eq!(directive_state(&page, &jti).as_deref(), Some("acknowledged"), "{page}");

        // Wipe, outside the step-up window: a code first, nothing changed without it.
        advance(&h, 5 * 60 + 1);
        let form = [("csrf", token.as_str()), ("device", phone.device_id.as_str())];
        let r = request(&h, addr, "POST", "/devices/wipe", &[&cookie], &[], &form).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(!revoked(&h, &phone).await, "nothing changed before the code");
        let code = code_for(&secret, h.app.now());
        let with_code =
            [("csrf", token.as_str()), ("device", phone.device_id.as_str()), ("stepup_code", code.as_str())];
        let r = request(&h, addr, "POST", "/devices/wipe", &[&cookie], &[], &with_code).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("wipe queued"), "{}", r.text());
        assert!(revoked(&h, &phone).await);
        let state = h.app.store.device(&phone.device_id).await.expect("read").expect("phone");
        assert_eq!((state.retired, state.lease), (Some(fieldvault_core::protocol::auth::DeviceReason::Wiped), None));
        // An unknown device: a clear refusal, nothing recorded.
        let before = h.app.store.audit_head().await.expect("head");
        let form = [("csrf", token.as_str()), ("device", "dev_nope")];
        let r = request(&h, addr, "POST", "/devices/revoke", &[&cookie], &[], &form).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("no device with id"), "{}", r.text());
        assert_eq!(h.app.store.audit_head().await.expect("head"), before);
        // Every directive was recorded with the administrator as its actor.
        let records = h.app.store.audit_page(0, 1000).await.expect("audit");
        let issued: Vec<_> = records.iter().filter(|r| r.action == "directive.issued").collect();
        assert_eq!(issued.len(), 2);
        assert!(issued.iter().all(|r| r.actor == "admin:root"), "{issued:?}");
        assert!(records.iter().any(|r| r.action == "directive.acknowledged"));
        assert!(matches!(
            fieldvault_server::verify_audit(h.app.store.as_ref()).await.expect("verify"),
            fieldvault_server::AuditCheck::Intact(_)
        ));
    }
}

#[tokio::test]
async fn the_sessions_page_revokes_one_session_or_all_of_a_user_after_a_step_up_each_audited() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let one = h.device("alice").await;
        let two = h.device("alice").await;
        let three = h.device("alice").await;
        let bobs = h.device("bob").await;
        let (cookie, token, secret) = signed_in(&h, addr).await;
        let page = request(&h, addr, "GET", "/sessions?user=alice", &[&cookie], &[], &[]).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        assert_eq!(text.matches("data-session=").count(), 3, "{text}");
        assert!(!text.contains(&bobs.device_id), "only alice's: {text}");
        let session_of = |key_id: &str| {
            let store = h.app.store.clone();
            let key_id = key_id.to_owned();
            async move { store.session_by_key_id(&key_id).await.expect("read").expect("session").id }
        };
        let first = session_of(&one.key_id).await;
        // Revoke one: only that one.
        let form = [("csrf", token.as_str()), ("user", "alice"), ("session", first.as_str())];
        let r = request(&h, addr, "POST", "/sessions/revoke", &[&cookie], &[], &form).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(revoked(&h, &one).await && !revoked(&h, &two).await && !revoked(&h, &three).await);
        // Bob's session named as alice's: refused, nothing changed, nothing recorded.
        let bob_session = session_of(&bobs.key_id).await;
        let before = h.app.store.audit_head().await.expect("head");
        let form = [("csrf", token.as_str()), ("user", "alice"), ("session", bob_session.as_str())];
        let r = request(&h, addr, "POST", "/sessions/revoke", &[&cookie], &[], &form).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(!revoked(&h, &bobs).await);
        assert_eq!(h.app.store.audit_head().await.expect("head"), before);
        // Revoke all, outside the step-up window: a code first.
        advance(&h, 5 * 60 + 1);
        let form = [("csrf", token.as_str()), ("user", "alice")];
        let r = request(&h, addr, "POST", "/sessions/revoke-all", &[&cookie], &[], &form).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(!revoked(&h, &two).await);
        let code = code_for(&secret, h.app.now());
        let with_code = [("csrf", token.as_str()), ("user", "alice"), ("stepup_code", code.as_str())];
        let r = request(&h, addr, "POST", "/sessions/revoke-all", &[&cookie], &[], &with_code).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("2 sessions of"), "{}", r.text());
        assert!(revoked(&h, &two).await && revoked(&h, &three).await && !revoked(&h, &bobs).await);
        let records = h.app.store.audit_page(0, 1000).await.expect("audit");
        let one_rec = records.iter().find(|r| r.action == "session.revoke").expect("a session.revoke record");
        assert_eq!((one_rec.actor.as_str(), one_rec.target.as_str()), ("admin:root", "alice"));
        assert_eq!(one_rec.detail["session"], first.as_str());
        assert_eq!(records.iter().filter(|r| r.action == "session.revoke_all").count(), 1);
        // A page past the end is empty; no user: no listing.
        let past = request(&h, addr, "GET", "/sessions?user=alice&page=99", &[&cookie], &[], &[]).await;
        assert_eq!(past.status, 200);
        assert!(past.text().contains("No sessions on this page."), "{}", past.text());
        let none = request(&h, addr, "GET", "/sessions", &[&cookie], &[], &[]).await;
        assert_eq!(none.status, 200);
        assert!(!none.text().contains("data-session="));
    }
}

#[tokio::test]
async fn the_health_page_shows_the_store_the_open_connections_and_recent_error_answers() {
    for backend in backends() {
        let (h, addr) = start(backend).await;
        let (cookie, _, _) = signed_in(&h, addr).await;
        // Two refused logins and a malformed request on the device API.
        for _ in 0..2 {
            assert_eq!(h.login("alice", "wrong password").await.status, 401);
        }
        assert_eq!(h.plain("POST", "/v1/auth/login", b"{").await.status, 400);
        let page = request(&h, addr, "GET", "/health", &[&cookie], &[], &[]).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        let backend_name = if h.database_url().is_some() { "PostgreSQL" } else { "SQLite (SQLCipher)" };
        assert!(text.contains(&format!("{backend_name}: answering")), "{text}");
        // This page's own connection is open on the console listener.
        assert!(text.contains("<td>console</td><td>1</td>"), "{text}");
        assert!(text.contains("<td>last 5 minutes</td><td>2</td><td>0</td><td>1</td><td>0</td>"), "{text}");
    }
}
