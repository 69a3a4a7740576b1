//! The HTTPS listener: who gets a connection, for how long, and what one connection may hold
//! (`docs/threat-model.md`, "Connection slots"; `docs/protocol.md`, section 3).
//!
//! Every accepted TCP connection goes through a TLS handshake before a byte of HTTP is read;
//! there is no plaintext listener of any kind. A connection passes two pools:
//!
//! - **Handshakes** ([`Config::max_handshakes`]): taken before `accept`, so when every
//!   handshake slot is busy new clients wait in the kernel's accept queue. Held for at most
//!   [`Config::handshake_timeout`] from `accept`, the TLS handshake and the wait for a
//!   connection slot included; a connection still without a slot by then is closed.
//! - **Connections** ([`Config::max_connections`]): taken once the handshake is done, held
//!   while the connection is served. A served connection is closed when it starts no request
//!   within [`Config::first_request_timeout`] of its handshake, or none within
//!   [`Config::idle_timeout`] of its last answer, or when its requests stay in progress
//!   without a pause for [`Config::request_timeout`] (an answer its reader does not take),
//!   whether it speaks HTTP/1.1 or HTTP/2.
//!
//! On top of both, one client address (an IPv4 address, or an IPv6 /64) holds at most
//! [`Config::max_connections_per_address`] sockets in any state and at most
//! [`handshakes_per_address`] of the handshake slots; beyond either, a new connection is
//! closed as soon as it is accepted, before any TLS.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::Error;
use crate::app::{App, Config};
use crate::auth::PeerAddr;
use crate::health::Health;

/// Concurrent HTTP/2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`), so that an
/// HTTP/2 connection can buffer no more request bodies than an HTTP/1.1 one, which runs one
/// request at a time. The bound on buffered request bodies is then
///
/// ```text
/// max_connections x MAX_STREAMS x (push_body_limit + WINDOW)
///     = 512 x 1 x (4 MiB + 1 MiB) = 2.5 GiB    (128 x 5 MiB = 640 MiB from one address)
/// ```
///
/// where `push_body_limit` (4 MiB) is the largest body any route reads (every other route
/// reads at most `body_limit`, 1 MiB), and `WINDOW` is what an HTTP/2 client may send ahead
/// of the handler. Answers are outside this bound (each is built whole before it is sent; a
/// reader that does not take one loses the connection after `Config::request_timeout`).
/// Our clients send one request at a time on a connection, so they never meet this limit; a
/// client that opens a second stream while one is open has it refused (`REFUSED_STREAM`:
/// nothing was processed, safe to send again).
const MAX_STREAMS: u32 = 1;
/// HTTP/2 flow-control windows (per stream and per connection): what a client may send
/// ahead of the handler reading it. Set here, not left to hyper's default (the same 1 MiB,
/// "may change"), because the memory bound at [`MAX_STREAMS`] counts on it.
const WINDOW: u32 = 1 << 20;
/// hyper's read buffer and HTTP/2's header list limit: large enough that oversized headers
/// reach the limits layer and get a problem (431) rather than a bare connection error.
const MAX_BUF: usize = 64 << 10;
/// After a connection's idle time runs out it is shut down gracefully (HTTP/2: GOAWAY, so the
/// client knows no request was lost); a peer that does not let it finish is cut off after this.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The handshake slots one address may hold: half its connection cap, and never more than a
/// quarter of the pool, so that at least four addresses are needed to fill it. At the
/// defaults, 64 of 256: 64 clients behind one address may connect at the same instant (the
/// load benchmark does).
fn handshakes_per_address(config: &Config) -> usize {
    config.max_connections_per_address.div_ceil(2).min(config.max_handshakes / 4).max(1)
}

/// A bound HTTPS listener.
pub struct Server {
    listener: TcpListener,
    tls: TlsAcceptor,
    router: Router,
    config: Config,
    health: Arc<Health>,
    /// Whether this is the console's listener (its connections are counted apart).
    console: bool,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) with `tls`, serving [`crate::router`] over
    /// `app` within the connection limits of `app.config`.
    ///
    /// # Errors
    /// [`Error::Tls`] when the address cannot be bound.
    pub async fn bind(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, app: Arc<App>) -> Result<Server, Error> {
        let listener =
            TcpListener::bind(addr).await.map_err(|e| Error::Tls(format!("cannot listen on {addr}: {e}")))?;
        let (config, health) = (app.config.clone(), app.health.clone());
        Ok(Server { listener, tls: TlsAcceptor::from(tls), router: crate::router(app), config, health, console: false })
    }

    /// Binds `addr` with `tls`, serving the admin console ([`crate::console::router`]) and
    /// nothing of the device API, within the same connection limits.
    ///
    /// # Errors
    /// [`Error::Tls`] when the address cannot be bound.
    pub async fn bind_console(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        app: Arc<App>,
    ) -> Result<Server, Error> {
        let listener =
            TcpListener::bind(addr).await.map_err(|e| Error::Tls(format!("cannot listen on {addr}: {e}")))?;
        let (config, health) = (app.config.clone(), app.health.clone());
        let router = crate::console::router(app);
        Ok(Server { listener, tls: TlsAcceptor::from(tls), router, config, health, console: true })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let pools = Arc::new(Pools {
            handshakes: Arc::new(Semaphore::new(self.config.max_handshakes)),
            connections: Arc::new(Semaphore::new(self.config.max_connections)),
            addresses: Addresses::new(self.config.max_connections_per_address, handshakes_per_address(&self.config)),
        });
        loop {
            let handshake = tokio::select! {
                _ = &mut shutdown => return,
                slot = pools.handshakes.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    // Out of descriptors and the like: back off instead of spinning.
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
            };
            let Some(admitted) = pools.addresses.admit(peer.ip()) else {
                // Closed before any TLS: the address holds its share already.
                tracing::debug!(peer = %peer.ip(), "connection refused: its address holds its share of the slots");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let connection = Connection {
                tls: self.tls.clone(),
                router: self.router.clone(),
                config: self.config.clone(),
                pools: pools.clone(),
                peer,
                health: self.health.clone(),
                console: self.console,
            };
            tokio::spawn(connection.run(tcp, handshake, admitted));
        }
    }
}

/// The listener's shared limits.
struct Pools {
    handshakes: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    addresses: Arc<Addresses>,
}

/// Whom a connection counts against: its IPv4 address, or the /64 prefix of its IPv6 address
/// (one host is commonly given a whole /64, so counting single IPv6 addresses would bound
/// nothing). An IPv4 address mapped into IPv6 counts as the IPv4 address.
fn origin(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// What each address holds now: sockets in any state, and of those, handshake slots.
struct Addresses {
    per_address: usize,
    handshakes_per_address: usize,
    held: Mutex<HashMap<IpAddr, Held>>,
}

#[derive(Debug, Default)]
struct Held {
    sockets: usize,
    handshakes: usize,
}

impl Addresses {
    fn new(per_address: usize, handshakes_per_address: usize) -> Arc<Addresses> {
        Arc::new(Addresses { per_address, handshakes_per_address, held: Mutex::new(HashMap::new()) })
    }

    /// Counts a new connection from `ip`, in its handshake, or None when the address already
    /// holds its cap of sockets or its share of the handshake slots.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let origin = origin(ip);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = held.entry(origin).or_default();
        if entry.sockets >= self.per_address || entry.handshakes >= self.handshakes_per_address {
            if entry.sockets == 0 {
                held.remove(&origin);
            }
            return None;
        }
        entry.sockets += 1;
        entry.handshakes += 1;
        Some(Admitted { addresses: self.clone(), origin, in_handshake: true })
    }
}

/// One connection counted against its address until dropped.
struct Admitted {
    addresses: Arc<Addresses>,
    origin: IpAddr,
    in_handshake: bool,
}

impl Admitted {
    /// The handshake is over: the connection no longer counts against its address's share of
    /// handshake slots (it still counts against its connection cap).
    fn handshake_done(&mut self) {
        if std::mem::take(&mut self.in_handshake) {
            let mut held = self.addresses.held.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = held.get_mut(&self.origin) {
                entry.handshakes -= 1;
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut held = self.addresses.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = held.get_mut(&self.origin) {
            entry.sockets -= 1;
            entry.handshakes -= usize::from(self.in_handshake);
            if entry.sockets == 0 {
                held.remove(&self.origin);
            }
        }
    }
}

/// One accepted connection and what it needs to be served.
struct Connection {
    tls: TlsAcceptor,
    router: Router,
    config: Config,
    pools: Arc<Pools>,
    peer: SocketAddr,
    health: Arc<Health>,
    console: bool,
}

impl Connection {
    async fn run(self, tcp: TcpStream, handshake: OwnedSemaphorePermit, mut admitted: Admitted) {
        // A failed or slow handshake (plain HTTP, an old protocol, no common cipher suite,
        // silence) just closes the connection: nothing is answered in plaintext. Any server
        // name (SNI) gets the one certificate: the device checks that it is valid for the
        // name it asked for and that its key is pinned, and refuses it otherwise. The deadline covers the
        // wait for a connection slot too, so a handshake slot is never held longer than this.
        let deadline = Instant::now() + self.config.handshake_timeout;
        let Ok(Ok(stream)) = tokio::time::timeout_at(deadline, self.tls.accept(tcp)).await else { return };
        let Ok(slot) = tokio::time::timeout_at(deadline, self.pools.connections.clone().acquire_owned()).await else {
            tracing::debug!(peer = %self.peer.ip(), "connection closed: no connection slot came free in time");
            return;
        };
        let _slot = slot.expect("the semaphore is never closed"); // held while the connection is served
        drop(handshake);
        admitted.handshake_done();
        let health = self.health.clone();
        let _open = if self.console { health.console.open() } else { health.device.open() };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        self.serve(TokioIo::new(stream), h2).await;
        drop(admitted);
    }

    /// Serves HTTP/2 when ALPN chose it and HTTP/1.1 otherwise (there is no sniffing of the
    /// first bytes, which would wait for them without a limit), until the client closes, a
    /// protocol error, or the connection's request-less time runs out.
    async fn serve(self, io: TokioIo<tokio_rustls::server::TlsStream<TcpStream>>, h2: bool) {
        let config = &self.config;
        let limits = Limits {
            first_request: config.first_request_timeout,
            idle: config.idle_timeout,
            request: config.request_timeout,
        };
        let (activity, activity_rx) = watch::channel(Activity { in_flight: 0, since: Instant::now(), served: false });
        let activity = Arc::new(activity);
        let (router, peer) = (self.router, self.peer);
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let request = InFlight::start(activity.clone());
            req.extensions_mut().insert(PeerAddr(peer));
            let router = router.clone();
            async move {
                let response = router.oneshot(req.map(axum::body::Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| axum::body::Body::new(Tracked { body, _request: request })))
            }
        });
        let mut builder = Builder::new(TokioExecutor::new());
        // No header_read_timeout: the idle timer below covers a request's headers (a request
        // starts when they are complete), on both protocols alike.
        builder.http1().max_buf_size(MAX_BUF);
        builder
            .http2()
            .max_header_list_size(MAX_BUF as u32)
            .max_concurrent_streams(MAX_STREAMS)
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .timer(TokioTimer::new())
            // Pings find a peer that vanished while a request of its was open (the idle timer
            // only runs while none is).
            .keep_alive_interval(config.keep_alive_interval)
            .keep_alive_timeout(config.keep_alive_timeout);
        let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let why = tokio::select! {
            _ = connection.as_mut() => return,
            why = overstayed(activity_rx, limits) => why,
        };
        tracing::debug!(peer = %peer.ip(), "connection closed: {why}");
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
    }
}

/// What a connection is doing, for its timers.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Requests started and not yet answered in full.
    in_flight: usize,
    /// When `in_flight` last changed between 0 and more: since then the connection has been
    /// idle (0) or busy.
    since: Instant,
    /// Whether any request has started.
    served: bool,
}

/// The connection's time limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    first_request: Duration,
    idle: Duration,
    request: Duration,
}

/// Completes when the connection has overstayed: no request in progress for `first_request`
/// after its handshake (before any request started) or for `idle` after its last answer, or
/// requests in progress without a pause for `request` (an answer its reader will not take:
/// HTTP/2 flow control lets a client stop one for good while it still answers pings).
/// Says which.
async fn overstayed(mut activity: watch::Receiver<Activity>, limits: Limits) -> &'static str {
    loop {
        let now = *activity.borrow_and_update();
        let (limit, why) = match (now.in_flight, now.served) {
            (0, false) => (limits.first_request, "no first request in time"),
            (0, true) => (limits.idle, "idle too long"),
            _ => (limits.request, "an answer not taken in time"),
        };
        tokio::select! {
            () = tokio::time::sleep_until(now.since + limit) => return why,
            changed = activity.changed() => if changed.is_err() { return std::future::pending().await },
        }
    }
}

/// One request from its headers to the end of its answer's body (or until hyper drops it).
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: Arc<watch::Sender<Activity>>) -> InFlight {
        activity.send_modify(|a| {
            if a.in_flight == 0 {
                a.since = Instant::now();
            }
            a.in_flight += 1;
            a.served = true;
        });
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight -= 1;
            if a.in_flight == 0 {
                a.since = Instant::now();
            }
        });
    }
}

/// An answer's body that keeps its request in flight until it is sent or dropped.
struct Tracked {
    body: axum::body::Body,
    _request: InFlight,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_address_as_itself() {
        assert_eq!(origin(ip("2001:db8:1:2:aaaa::1")), origin(ip("2001:db8:1:2:ffff:1:2:3")));
        assert_ne!(origin(ip("2001:db8:1:2::1")), origin(ip("2001:db8:1:3::1")));
        assert_eq!(origin(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(origin(ip("192.0.2.7")), origin(ip("192.0.2.8")));
    }

    #[test]
    fn an_address_holds_its_cap_of_sockets_and_its_share_of_handshakes_and_gets_them_back() {
        let addresses = Addresses::new(3, 2);
        let a = ip("192.0.2.1");
        let mut first = addresses.admit(a).expect("1 of 3");
        let second = addresses.admit(a).expect("2 of 3");
        assert!(addresses.admit(a).is_none(), "two handshakes in progress: the share");
        first.handshake_done();
        let third = addresses.admit(a).expect("3 of 3, one handshake done");
        assert!(addresses.admit(a).is_none(), "the cap");
        assert!(addresses.admit(ip("192.0.2.2")).is_some(), "another address is counted apart");
        drop(second);
        let fourth = addresses.admit(a).expect("a socket came free");
        drop((first, third, fourth));
        assert!(addresses.held.lock().expect("lock").is_empty(), "nothing is kept for an address that holds nothing");
    }

    #[test]
    fn the_handshake_share_is_half_the_cap_and_at_most_a_quarter_of_the_pool() {
        let share = |per_address, pool| {
            handshakes_per_address(&Config {
                max_connections_per_address: per_address,
                max_handshakes: pool,
                ..Config::default()
            })
        };
        assert_eq!(share(128, 256), 64);
        assert_eq!(share(8, 256), 4);
        assert_eq!(share(512, 256), 64);
        assert_eq!(share(1, 256), 1);
        assert_eq!(share(128, 2), 1);
    }
}
