//! Signing in through an OpenID Connect provider (issue 18; RFC 8252, OAuth for native
//! apps): the device asks the server which providers it accepts, opens the provider's
//! authorization page in the user's browser with PKCE S256, `state` and `nonce`, waits for
//! the browser's redirect on a loopback listener (`http://127.0.0.1:PORT/callback`, any free
//! port), and hands the code and the verifier to the server (`POST /v1/auth/oidc`), which
//! redeems them at the provider. The server's answer is the password login's, taken by the
//! same code ([`Unlocked::after_login`]): device continuity, the lease, the session.
//!
//! The device never talks to the provider itself, and the code goes nowhere but to the
//! pinned server. The listener answers only `GET /callback`; anything else gets a 404 and
//! the wait goes on. Each connection is read without blocking the others (a browser opens
//! spare connections it may never use), a request head is at most 8 KiB, and the whole
//! wait is bounded by the caller's timeout.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fieldvault_core::AccountName;
use fieldvault_core::protocol::oidc::{
    AuthorizationCode, AuthorizationRequest, OidcConfigResponse, OidcLoginRequest, REDIRECT_PATH, RedirectError,
};
use zeroize::Zeroizing;

use super::channel::refused;
use super::login::{LoginSummary, LoginTarget};
use crate::transport::{Auth, Method, Request, Transport};
use crate::{Error, Pins, Unlocked, random};

/// The longest request head the loopback listener reads (a redirect's query is a code, a
/// state and a few short parameters).
const MAX_HEAD: usize = 8 * 1024;
/// How long one connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections read at once; more are closed unread.
const MAX_PENDING: usize = 32;
/// How often the listener looks for new connections and bytes.
const POLL: Duration = Duration::from_millis(20);

/// What [`Unlocked::begin_oidc_login`] needs.
#[derive(Debug, Clone, Copy)]
pub struct OidcLoginOptions<'a> {
    /// `https://HOST[:PORT]`.
    pub server: &'a str,
    /// The server's pins (`sha256/BASE64`), current and next.
    pub pins: &'a [String],
    /// The identity provider's issuer URL, one of those the server offers (a trailing `/`
    /// does not matter).
    pub issuer: &'a str,
    /// A label for this device.
    pub device_name: &'a str,
    /// `None` (the usual case): the device listens on a loopback port for the browser's
    /// redirect, and [`Unlocked::finish_oidc_login`] waits for it. `Some(uri)`: the app
    /// receives the redirect itself at `uri` (a private-use scheme such as
    /// `com.example.app:/callback`, RFC 8252 section 7.1) and passes it to
    /// [`Unlocked::finish_oidc_login_with_redirect`]; the provider must accept that URI.
    pub redirect_uri: Option<&'a str>,
}

/// A sign-in under way: the authorization URL to open in a browser, and what finishing it
/// needs (the PKCE verifier, `state`, `nonce`, the loopback listener). Single use; dropping
/// it abandons the sign-in and closes the listener.
pub struct OidcLogin {
    transport: Transport,
    server: String,
    pins: Vec<String>,
    device_name: String,
    /// The issuer exactly as the server names it.
    issuer: String,
    request: AuthorizationRequest,
    url: String,
    listener: Option<TcpListener>,
}

impl std::fmt::Debug for OidcLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL carries `state`: not shown.
        f.debug_struct("OidcLogin")
            .field("server", &self.server)
            .field("issuer", &self.issuer)
            .field("redirect_uri", &self.request.redirect_uri())
            .finish_non_exhaustive()
    }
}

impl OidcLogin {
    /// The authorization URL: open it in the user's browser (the system browser, not a web
    /// view the app controls, RFC 8252 section 8.12).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The redirect URI the provider will send the browser back to.
    pub fn redirect_uri(&self) -> &str {
        self.request.redirect_uri()
    }

    /// The provider's issuer, as the server names it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

impl Unlocked {
    /// Starts signing `account` in through an OpenID Connect provider: asks the server
    /// (over the pinned transport) for its providers, finds `opts.issuer` among them, opens
    /// the loopback listener for the redirect (unless `opts.redirect_uri` names the app's
    /// own), and makes the authorization request with fresh random `state`, `nonce` and
    /// PKCE verifier. Show or open [`OidcLogin::url`], then call
    /// [`Unlocked::finish_oidc_login`].
    ///
    /// # Errors
    /// [`Error::InvalidPin`]; transport errors (offline, pin mismatch); [`Error::Refused`]
    /// (`provider_unavailable`, ...); [`Error::UnknownIssuer`], naming the issuers the server
    /// offers; [`Error::RedirectListener`]; an account that holds data of another server is
    /// refused with [`Error::Refused`] (`account_in_use`) before anything is sent.
    pub fn begin_oidc_login(&mut self, account: &AccountName, opts: OidcLoginOptions<'_>) -> Result<OidcLogin, Error> {
        let transport = Transport::new(opts.server, Pins::parse(opts.pins)?)?;
        // Refused now rather than after the user signed in at the provider; the user is
        // checked once the server's answer names them.
        if !self.lease_ended(account) {
            self.prior_login(account)?.refuse_other(account, opts.server, None)?;
        }
        let resp = transport.send(
            &Request { method: Method::Get, path_and_query: "/v1/auth/oidc/config", body: &[], auth: Auth::None },
            0,
        )?;
        if resp.status != 200 {
            return Err(refused(&resp));
        }
        let config: OidcConfigResponse = serde_json::from_slice(&resp.body)
            .map_err(|_| Error::MalformedAnswer("the OpenID Connect configuration is not a list of issuers".into()))?;
        let provider = config.find(opts.issuer).ok_or_else(|| Error::UnknownIssuer {
            issuer: opts.issuer.to_owned(),
            offered: config.issuers.iter().map(|p| p.issuer.clone()).collect(),
        })?;
        if !browser_safe(&provider.authorization_endpoint) {
            return Err(Error::MalformedAnswer(
                "the identity provider's authorization endpoint is not an https URL".into(),
            ));
        }
        let (listener, redirect_uri) = match opts.redirect_uri {
            Some(uri) => (None, uri.to_owned()),
            None => {
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::RedirectListener)?;
                let port = listener.local_addr().map_err(Error::RedirectListener)?.port();
                (Some(listener), format!("http://127.0.0.1:{port}{REDIRECT_PATH}"))
            }
        };
        let verifier = Zeroizing::new(random::<32>());
        let request = AuthorizationRequest::new(random(), random(), *verifier, &redirect_uri);
        Ok(OidcLogin {
            url: request.url(provider),
            transport,
            server: opts.server.to_owned(),
            pins: opts.pins.to_vec(),
            device_name: opts.device_name.to_owned(),
            issuer: provider.issuer.clone(),
            request,
            listener,
        })
    }

    /// Finishes a sign-in begun with [`Unlocked::begin_oidc_login`]: waits at most `timeout`
    /// for the browser's redirect on the loopback listener, checks it (the provider's
    /// refusal, `state`), sends the code to the server, and goes on exactly like
    /// [`Unlocked::login`] after its answer. The browser is shown a short page with the
    /// outcome. The user is the one the server's answer names.
    ///
    /// # Errors
    /// [`Error::SignInTimedOut`], [`Error::SignInRefused`], [`Error::SignInMismatch`],
    /// [`Error::SignInMalformed`], [`Error::RedirectListener`] (nothing was sent); then as
    /// [`Unlocked::login`]: a code the server cannot redeem is [`Error::ReauthRequired`]
    /// (`invalid_grant`), an unreachable provider [`Error::Refused`]
    /// (`provider_unavailable`), and a sign-in as another user into an account that holds
    /// data is refused with [`Error::Refused`] (`account_in_use`) before anything is stored.
    /// [`Error::InvalidRequest`] when the sign-in was begun with the app's own redirect URI.
    pub fn finish_oidc_login(
        &mut self,
        account: &AccountName,
        login: OidcLogin,
        timeout: Duration,
    ) -> Result<LoginSummary, Error> {
        let Some(listener) = &login.listener else {
            return Err(Error::InvalidRequest(
                "this sign-in's redirect goes to the app, not to a loopback listener: pass it to finish_oidc_login_with_redirect",
            ));
        };
        let (browser, code) = wait_for_redirect(listener, &login.request, timeout)?;
        let outcome = self.redeem(account, &login, code);
        browser.answer(outcome.as_ref().map(|_| ()));
        outcome
    }

    /// Finishes a sign-in whose redirect the app received itself (a private-use URI scheme):
    /// `redirect` is the redirect URL or its query string. Then as
    /// [`Unlocked::finish_oidc_login`].
    ///
    /// # Errors
    /// As [`Unlocked::finish_oidc_login`], without the waiting.
    pub fn finish_oidc_login_with_redirect(
        &mut self,
        account: &AccountName,
        login: OidcLogin,
        redirect: &str,
    ) -> Result<LoginSummary, Error> {
        let redirect = redirect.split_once('#').map_or(redirect, |(r, _)| r);
        let query = redirect.split_once('?').map_or(redirect, |(_, q)| q);
        let code = login.request.check_redirect(query).map_err(redirect_error)?;
        self.redeem(account, &login, code)
    }

    /// Sends the code to the server and takes its answer like a password login's.
    fn redeem(
        &mut self,
        account: &AccountName,
        login: &OidcLogin,
        code: AuthorizationCode,
    ) -> Result<LoginSummary, Error> {
        let target =
            LoginTarget { server: &login.server, pins: &login.pins, device_name: &login.device_name, user: None };
        let before = self.before_login(account, &target)?;
        let body = OidcLoginRequest {
            issuer: login.issuer.clone(),
            code,
            code_verifier: login.request.verifier().clone(),
            redirect_uri: login.request.redirect_uri().to_owned(),
            nonce: login.request.nonce().to_owned(),
            device_name: login.device_name.clone(),
            device: before.device(),
        };
        let bytes = Zeroizing::new(serde_json::to_vec(&body).map_err(|e| Error::MalformedAnswer(e.to_string()))?);
        let resp = login.transport.send(
            &Request { method: Method::Post, path_and_query: "/v1/auth/oidc", body: &bytes, auth: Auth::None },
            before.now(),
        )?;
        self.after_login(account, &login.transport, &target, before, resp)
    }
}

/// Whether a URL from the server may be handed to a browser: https, or http to a loopback
/// host (a provider on this machine), and nothing a command line or a terminal could take
/// for something else.
fn browser_safe(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let scheme_ok = lower.starts_with("https://")
        || ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| lower.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/', '?'])));
    scheme_ok && url.chars().all(|c| c.is_ascii_graphic())
}

/// The provider's error or the redirect's fault, as the SDK's error. Provider text loses its
/// control characters and is cut at 300 characters (it reaches terminals and pages).
fn redirect_error(e: RedirectError) -> Error {
    let clean = |s: String| s.chars().filter(|c| !c.is_control()).take(300).collect::<String>();
    match e {
        RedirectError::Provider { error, description } => {
            Error::SignInRefused { error: clean(error), description: description.map(clean) }
        }
        RedirectError::StateMismatch => Error::SignInMismatch,
        RedirectError::MissingCode => Error::SignInMalformed("it carries no authorization code"),
        RedirectError::Malformed => Error::SignInMalformed("it is not valid percent-encoding or UTF-8"),
        _ => Error::SignInMalformed("it could not be read"),
    }
}

/// The browser's connection that brought the redirect, waiting for the page that tells the
/// user how the sign-in ended.
pub(crate) struct Browser(TcpStream);

impl Browser {
    /// Shows the outcome: signed in, or the error (escaped). Best effort: a browser that went
    /// away changes nothing.
    pub(crate) fn answer(mut self, outcome: Result<(), &Error>) {
        let _ = match outcome {
            Ok(()) => {
                respond(&mut self.0, "200 OK", "Signed in", "Fieldvault is signed in. You can close this window.")
            }
            Err(e) => respond(&mut self.0, "200 OK", "Sign-in failed", &format!("{e}. You can close this window.")),
        };
    }
}

/// A connection to the listener whose request head is still coming.
/// Its bytes are zeroized when it goes: the redirect's request line holds the code.
struct Pending {
    stream: TcpStream,
    head: Zeroizing<Vec<u8>>,
    since: Instant,
}

/// Waits at most `timeout` for a `GET /callback` on `listener` and checks its query against
/// `request`. Other requests are answered (404, 405, 400) and the wait goes on. A refused
/// redirect is answered with an error page and ends the wait.
pub(crate) fn wait_for_redirect(
    listener: &TcpListener,
    request: &AuthorizationRequest,
    timeout: Duration,
) -> Result<(Browser, AuthorizationCode), Error> {
    let deadline = Instant::now() + timeout;
    listener.set_nonblocking(true).map_err(Error::RedirectListener)?;
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        loop {
            match listener.accept() {
                Ok((stream, _)) if pending.len() < MAX_PENDING && stream.set_nonblocking(true).is_ok() => {
                    pending.push(Pending { stream, head: Zeroizing::new(Vec::new()), since: Instant::now() });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A connection that broke before it was accepted is the browser's problem.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => return Err(Error::RedirectListener(e)),
            }
        }
        let mut i = 0;
        while i < pending.len() {
            match read_head(&mut pending[i]) {
                Head::Incomplete => i += 1,
                Head::Gone => {
                    pending.swap_remove(i);
                }
                Head::Complete(line) => {
                    let mut p = pending.swap_remove(i);
                    if let Some(query) = route(&mut p.stream, &line) {
                        return match request.check_redirect(&query) {
                            Ok(code) => Ok((Browser(p.stream), code)),
                            Err(e) => {
                                let e = redirect_error(e);
                                let _ = respond(&mut p.stream, "400 Bad Request", "Sign-in failed", &e.to_string());
                                Err(e)
                            }
                        };
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::SignInTimedOut { after: timeout });
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

/// How far a connection's request head has come.
enum Head {
    Incomplete,
    /// Closed, failed, too slow or too long: dropped.
    Gone,
    /// The request line.
    Complete(Zeroizing<String>),
}

fn read_head(p: &mut Pending) -> Head {
    let mut buf = Zeroizing::new([0u8; 2048]);
    loop {
        match p.stream.read(buf.as_mut()) {
            Ok(0) => return Head::Gone,
            Ok(n) => {
                p.head.extend_from_slice(&buf[..n]);
                if let Some(end) = p.head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let line = p.head[..end].split(|&b| b == b'\n').next().unwrap_or_default();
                    return match std::str::from_utf8(line) {
                        Ok(line) => Head::Complete(Zeroizing::new(line.trim_end_matches('\r').to_owned())),
                        Err(_) => Head::Gone,
                    };
                }
                if p.head.len() > MAX_HEAD {
                    let _ = respond(&mut p.stream, "431 Request Header Fields Too Large", "Too large", "");
                    return Head::Gone;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return if p.since.elapsed() > HEAD_TIMEOUT { Head::Gone } else { Head::Incomplete };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Head::Gone,
        }
    }
}

/// The query of a `GET /callback` request line; any other request is answered here and
/// gives `None`.
fn route(stream: &mut TcpStream, line: &str) -> Option<Zeroizing<String>> {
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != REDIRECT_PATH {
        let _ = respond(stream, "404 Not Found", "Not found", "Nothing here.");
        return None;
    }
    if method != "GET" {
        let _ = respond(stream, "405 Method Not Allowed", "Not allowed", "Only GET is answered here.");
        return None;
    }
    Some(Zeroizing::new(query.to_owned()))
}

/// Writes a small HTML page and closes the connection: no scripts, nothing loaded from
/// elsewhere (the CSP forbids it), no referrer (the page's URL holds the code).
fn respond(stream: &mut TcpStream, status: &str, title: &str, text: &str) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Fieldvault: {t}</title></head>\
         <body><h1>{t}</h1><p>{x}</p></body></html>\n",
        t = escape(title),
        x = escape(text)
    );
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nContent-Security-Policy: default-src 'none'\r\n\
         Referrer-Policy: no-referrer\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// HTML-escapes text for an element's content.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::thread::JoinHandle;

    use super::*;

    fn listening() -> (TcpListener, u16, AuthorizationRequest) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let request =
            AuthorizationRequest::new(random(), random(), random(), &format!("http://127.0.0.1:{port}/callback"));
        (listener, port, request)
    }

    /// A browser: sends one request line and reads the whole answer.
    fn browser(port: u16, target: String) -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
            write!(s, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\n\r\n").expect("send");
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("read");
            answer
        })
    }

    #[test]
    fn the_right_redirect_gives_the_code_and_the_browser_sees_the_outcome() {
        let (listener, port, request) = listening();
        let b = browser(port, format!("/callback?code=the%2Fcode&state={}&iss=x", request.state()));
        let (page, code) = wait_for_redirect(&listener, &request, Duration::from_secs(10)).expect("redirect");
        assert_eq!(code.expose_secret(), "the/code");
        page.answer(Ok(()));
        let answer = b.join().expect("browser");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Signed in") && answer.contains("Referrer-Policy: no-referrer"), "{answer}");
        assert!(!answer.contains("<script"), "{answer}");
    }

    #[test]
    fn a_redirect_with_another_state_is_refused_and_the_browser_sees_why() {
        let (listener, port, request) = listening();
        let b = browser(port, "/callback?code=c&state=someone-elses".into());
        let err = wait_for_redirect(&listener, &request, Duration::from_secs(10)).err().expect("refused");
        assert!(matches!(err, Error::SignInMismatch), "{err:?}");
        let answer = b.join().expect("browser");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("does not belong to this sign-in"), "{answer}");
    }

    #[test]
    fn other_paths_get_404_and_the_right_redirect_still_works_after() {
        let (listener, port, request) = listening();
        let state = request.state().to_owned();
        let b = std::thread::spawn(move || {
            let favicon = browser(port, "/favicon.ico".into()).join().expect("favicon");
            let root = browser(port, format!("/?code=c&state={state}")).join().expect("root");
            let right = browser(port, format!("/callback?code=c2&state={state}")).join().expect("right");
            (favicon, root, right)
        });
        let (page, code) = wait_for_redirect(&listener, &request, Duration::from_secs(10)).expect("redirect");
        assert_eq!(code.expose_secret(), "c2");
        page.answer(Ok(()));
        let (favicon, root, right) = b.join().expect("browsers");
        assert!(favicon.starts_with("HTTP/1.1 404 "), "{favicon}");
        assert!(root.starts_with("HTTP/1.1 404 "), "{root}");
        assert!(right.starts_with("HTTP/1.1 200 "), "{right}");
    }

    #[test]
    fn a_connection_that_sends_nothing_does_not_hold_up_the_redirect() {
        let (listener, port, request) = listening();
        let _idle = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        let started = Instant::now();
        let b = browser(port, format!("/callback?code=c&state={}", request.state()));
        let (page, code) = wait_for_redirect(&listener, &request, Duration::from_secs(20)).expect("redirect");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(code.expose_secret(), "c");
        page.answer(Ok(()));
        b.join().expect("browser");
    }

    #[test]
    fn no_redirect_within_the_timeout_is_a_clear_error() {
        let (listener, _, request) = listening();
        let started = Instant::now();
        let err = wait_for_redirect(&listener, &request, Duration::from_millis(300)).err().expect("timed out");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(matches!(err, Error::SignInTimedOut { .. }), "{err:?}");
        assert!(err.to_string().starts_with("no sign-in came back from the browser within"), "{err}");
    }

    #[test]
    fn a_provider_refusal_gives_its_message_escaped_on_the_page() {
        let (listener, port, request) = listening();
        let b = browser(
            port,
            format!(
                "/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E+said+no%07&state={}",
                request.state()
            ),
        );
        let err = wait_for_redirect(&listener, &request, Duration::from_secs(10)).err().expect("refused");
        assert_eq!(
            err.to_string(),
            "the identity provider refused the sign-in: access_denied (<script>alert(1)</script> said no)"
        );
        let answer = b.join().expect("browser");
        assert!(answer.contains("access_denied (&lt;script&gt;alert(1)&lt;/script&gt; said no)"), "{answer}");
        assert!(!answer.contains("<script"), "{answer}");
    }

    #[test]
    fn a_redirect_the_app_received_itself_is_checked_the_same_way() {
        let request = AuthorizationRequest::new(random(), random(), random(), "com.example.app:/callback");
        let query = |q: &str| request.check_redirect(q).map_err(redirect_error);
        assert!(matches!(query("code=c&state=x"), Err(Error::SignInMismatch)));
        assert!(matches!(query("error=login_required"), Err(Error::SignInRefused { .. })));
        assert!(matches!(query(&format!("state={}", request.state())), Err(Error::SignInMalformed(_))));
    }

    #[test]
    fn only_https_or_loopback_http_urls_are_handed_to_a_browser() {
        for ok in ["https://id.example/auth", "http://127.0.0.1:8080/auth", "http://localhost/auth", "http://[::1]:9/a"]
        {
            assert!(browser_safe(ok), "{ok}");
        }
        for bad in [
            "http://id.example/auth",
            "http://localhost.evil.example/auth",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://id.example/a b",
            "https://id.example/\u{1b}[2J",
            "--help",
        ] {
            assert!(!browser_safe(bad), "{bad}");
        }
    }
}
