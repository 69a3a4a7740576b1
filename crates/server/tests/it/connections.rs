//! Connection slots under attack (issue 15, item 1): what one address can hold, and the
//! timers that close silent and idle connections, over real TLS on loopback. The attacker
//! connects from 127.0.0.1, the client who must still be served from 127.0.0.2 (Linux routes
//! all of 127.0.0.0/8 to the loopback interface).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use fieldvault_client::{Pins, pinned_client_config};
use fieldvault_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::harness::{Backend, Harness};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// How long the other address's client may take while the attack runs (the bar).
const SERVED_WITHIN: Duration = Duration::from_secs(1);
/// A generous upper bound for the server to close a connection whose timeout is a second or
/// a few: the test waits for the close, it does not time it.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

async fn server(config: Config) -> Harness {
    Harness::start_bare_with_config(Backend::Sqlite, None, config).await
}

/// A TCP connection to the server from `source`.
async fn tcp_from(source: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(server).await
}

/// A pinned TLS connection from `source` offering `alpn`, handshake done.
/// An HTTP/2 connection over `tls` (with this receive window, if given), its task, and the
/// answer's head to a `GET /healthz` sent on it.
async fn h2_healthz(
    tls: TlsStream<TcpStream>,
    window: Option<u32>,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
    hyper::Response<hyper::body::Incoming>,
) {
    let mut builder = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Some(w) = window {
        builder.initial_stream_window_size(w);
    }
    let (mut sender, connection) =
        builder.handshake(hyper_util::rt::TokioIo::new(tls)).await.expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("https://localhost/healthz")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .expect("request");
    let answer = sender.send_request(request).await.expect("the answer's head");
    (sender, connection, answer)
}

async fn tls_from(h: &Harness, source: IpAddr, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = pinned_client_config(Pins::parse(&[&h.pin]).expect("pin"));
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tcp_from(source, h.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// `GET /healthz` over HTTP/1.1 from `source`, on a new connection: the status line.
async fn healthz_from(h: &Harness, source: IpAddr) -> std::io::Result<String> {
    let mut tls = tls_from(h, source, b"http/1.1").await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned())
}

/// Reads until the server closes the connection (end of stream or a reset); panics if it is
/// still open after [`CLOSED_WITHIN`].
async fn closed_by_server(stream: &mut (impl AsyncReadExt + Unpin), what: &str) {
    let mut sink = vec![0u8; 16 << 10];
    let closed = tokio::time::timeout(CLOSED_WITHIN, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {CLOSED_WITHIN:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_idle_connections_does_not_keep_another_address_from_being_served() {
    // A small server: 16 connections in all, 8 per address. Before the per-address cap, the
    // attack below held all 16 for good (a TLS connection that said nothing after its
    // handshake had no timeout at all).
    let config = Config { max_connections: 16, max_connections_per_address: 8, ..Config::default() };
    let h = server(config).await;

    // The attack from one address: the cap's worth of TLS connections that negotiate h2 and
    // then say nothing, then the cap's worth of TCP connections that never send a ClientHello.
    let mut attack_h2 = Vec::new();
    for _ in 0..8 {
        let connecting = tls_from(&h, ATTACKER, b"h2");
        if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), connecting).await {
            attack_h2.push(tls);
        }
    }
    let mut attack_tcp = Vec::new();
    for _ in 0..8 {
        attack_tcp.push(tcp_from(ATTACKER, h.addr).await.expect("the kernel accepts the TCP connection"));
    }
    assert_eq!(attack_h2.len(), 8, "the attacking address gets its cap");
    for tls in &attack_h2 {
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    }

    // While all of it is held, a client from another address is served at once...
    let served = tokio::time::timeout(SERVED_WITHIN, healthz_from(&h, CLIENT)).await;
    let status = served.expect("served within 1 s during the attack").expect("TLS request");
    assert_eq!(status, "HTTP/1.1 200 OK");
    // ...and the attacking address gets nothing more: its next connection is closed before
    // the handshake, and its silent TCP connections were closed as soon as they were accepted.
    let more = tokio::time::timeout(Duration::from_secs(5), tls_from(&h, ATTACKER, b"http/1.1")).await;
    assert!(matches!(more, Ok(Err(_))), "a connection beyond the cap is refused, not queued");
    for (i, tcp) in attack_tcp.iter_mut().enumerate() {
        closed_by_server(tcp, &format!("silent TCP connection {i} beyond the cap")).await;
    }
    drop(attack_h2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_connections_hold_no_connection_slot_and_are_closed_after_the_handshake_timeout() {
    // Two connection slots in all; a connection in its handshake does not take one.
    let config = Config { max_connections: 2, handshake_timeout: Duration::from_secs(5), ..Config::default() };
    let h = server(config).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tcp_from(ATTACKER, h.addr).await.expect("connect"));
    }
    // Before, each of these held one of the slots until its 10 s handshake timeout.
    let served = tokio::time::timeout(SERVED_WITHIN, healthz_from(&h, CLIENT)).await;
    assert_eq!(served.expect("served within 1 s").expect("TLS request"), "HTTP/1.1 200 OK");
    for (i, tcp) in silent.iter_mut().enumerate() {
        closed_by_server(tcp, &format!("silent TCP connection {i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_whatever_their_http_version() {
    let config = Config {
        first_request_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let h = server(config).await;

    // Handshake done, then nothing: not even HTTP/2's preface, or not a byte of HTTP/1.1.
    // Before, both stayed open for good (the server waited for bytes to tell the versions
    // apart, without a limit).
    let mut silent_h2 = tls_from(&h, ATTACKER, b"h2").await.expect("TLS");
    let mut silent_h1 = tls_from(&h, ATTACKER, b"http/1.1").await.expect("TLS");

    // HTTP/2 with one request answered, then idle: the server ends it (GOAWAY, then close).
    let tls = tls_from(&h, CLIENT, b"h2").await.expect("TLS");
    let (mut sender, connection, answer) = h2_healthz(tls, None).await;
    assert_eq!(answer.status(), 200);
    drop(answer);

    // HTTP/1.1 kept alive after one answer, then idle.
    let mut kept_h1 = tls_from(&h, CLIENT, b"http/1.1").await.expect("TLS");
    kept_h1.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
    let mut head = [0u8; 15];
    kept_h1.read_exact(&mut head).await.expect("answer");
    assert_eq!(&head, b"HTTP/1.1 200 OK");

    closed_by_server(&mut silent_h2, "a TLS connection that negotiated h2 and sent nothing").await;
    closed_by_server(&mut silent_h1, "a TLS connection that negotiated HTTP/1.1 and sent nothing").await;
    let ended = tokio::time::timeout(CLOSED_WITHIN, connection).await;
    let ended = ended.expect("an idle HTTP/2 connection is closed by the server").expect("task");
    assert!(ended.is_ok(), "closed cleanly, with a GOAWAY: {ended:?}");
    assert!(sender.ready().await.is_err(), "no further request can go on it");
    closed_by_server(&mut kept_h1, "an idle HTTP/1.1 keep-alive connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_its_reader_never_lets_through_ends_the_connection_after_the_request_timeout() {
    let config = Config {
        first_request_timeout: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(300),
        request_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let h = server(config).await;
    // An HTTP/2 client whose receive window is 0: the answer's headers come, its body never
    // can, and the client's HTTP/2 stack keeps answering pings. Without a limit on how long a
    // request may stay open, the connection and its slot were held for good.
    let tls = tls_from(&h, ATTACKER, b"h2").await.expect("TLS");
    let (_sender, connection, answer) = h2_healthz(tls, Some(0)).await;
    assert_eq!(answer.status(), 200);
    let ended = tokio::time::timeout(CLOSED_WITHIN, connection).await;
    assert!(ended.is_ok(), "a connection with an answer its reader never takes is closed by the server");
    drop(answer);
}

/// One HTTP/2 frame as read off the wire: type, flags, payload; None at the end of the stream.
async fn read_frame(tls: &mut TlsStream<TcpStream>) -> Option<(u8, u8, Vec<u8>)> {
    let mut header = [0u8; 9];
    tls.read_exact(&mut header).await.ok()?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], payload))
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_allows_one_stream_and_pings_a_quiet_peer_then_drops_it_when_it_stops_answering() {
    // Long request timers, short pings: whatever closes the connection here is the ping.
    let config = Config {
        first_request_timeout: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(300),
        keep_alive_interval: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let h = server(config).await;
    let mut tls = tls_from(&h, CLIENT, b"h2").await.expect("TLS");
    // The client preface and an empty SETTINGS frame, by hand (RFC 9113, sections 3.4, 6.5).
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("preface");

    let (settings, ping) = tokio::time::timeout(CLOSED_WITHIN, async {
        let mut settings = None;
        loop {
            let (kind, flags, payload) = read_frame(&mut tls).await.expect("a frame before the connection closes");
            if kind == SETTINGS && flags & 1 == 0 {
                settings = Some(payload);
            } else if kind == PING && flags & 1 == 0 {
                return (settings.expect("SETTINGS comes first"), payload);
            }
        }
    })
    .await
    .expect("the server pings a peer it has heard nothing from");
    assert_eq!(ping.len(), 8);
    let streams = settings
        .chunks_exact(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(streams, Some(1), "SETTINGS_MAX_CONCURRENT_STREAMS");
    // The ping goes unanswered: the server drops the connection long before its request timers.
    closed_by_server(&mut tls, "an HTTP/2 connection whose peer does not answer pings").await;
}

/// What the server sends back on `tls` after `bytes`, until it closes or 5 s pass.
async fn answer_to(mut tls: TlsStream<TcpStream>, bytes: &[u8]) -> Vec<u8> {
    tls.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn the_protocol_alpn_chose_is_served_and_the_other_one_is_not() {
    let h = server(Config::default()).await;
    let http1 = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    // Offered and chosen: each protocol is served.
    let tls = tls_from(&h, CLIENT, b"http/1.1").await.expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"http/1.1".as_slice()));
    assert!(answer_to(tls, http1).await.starts_with(b"HTTP/1.1 200 OK"));
    let tls = tls_from(&h, CLIENT, b"h2").await.expect("TLS");
    let (_sender, _conn, answer) = h2_healthz(tls, None).await;
    assert_eq!(answer.status(), 200);
    // HTTP/1.1 on a connection that negotiated h2: not served as HTTP/1.1 (the HTTP/2 side
    // refuses the missing preface).
    let tls = tls_from(&h, CLIENT, b"h2").await.expect("TLS");
    let answer = answer_to(tls, http1).await;
    assert!(!answer.starts_with(b"HTTP/1.1"), "{}", String::from_utf8_lossy(&answer));
    // An HTTP/2 preface on a connection that negotiated http/1.1: no HTTP/2 is spoken.
    let tls = tls_from(&h, CLIENT, b"http/1.1").await.expect("TLS");
    let handshake = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake::<_, http_body_util::Empty<hyper::body::Bytes>>(hyper_util::rt::TokioIo::new(tls))
        .await;
    match handshake {
        Err(_) => {}
        Ok((mut sender, connection)) => {
            tokio::spawn(connection);
            let request = hyper::Request::get("https://localhost/healthz")
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .expect("request");
            let sent = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await;
            assert!(!matches!(sent, Ok(Ok(_))), "an HTTP/2 request was answered on an http/1.1 connection");
        }
    }
}

#[tokio::test]
async fn any_server_name_gets_the_certificate_and_the_device_checks_its_names_and_pin() {
    let h = server(Config::default()).await;
    let mut config = pinned_client_config(Pins::parse(&[&h.pin]).expect("pin"));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = |name: &'static str| {
        let connector = connector.clone();
        let addr = h.addr;
        async move {
            let tcp = tcp_from(CLIENT, addr).await.expect("TCP");
            connector.connect(rustls::pki_types::ServerName::try_from(name).expect("name"), tcp).await
        }
    };
    // Another name: the server answers with its one certificate (it does not close the
    // connection), and the device refuses it because it is not valid for that name.
    let other = connect("not-this-server.example").await.expect_err("refused by the device");
    assert!(format!("{other:?}").contains("NotValidForName"), "{other:?}");
    let tls = connect("localhost").await.expect("the certificate's own name");
    let answer = answer_to(tls, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&answer));
}
