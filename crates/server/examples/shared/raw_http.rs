//! A pinned TLS 1.3 connection speaking HTTP/1.1 with keep-alive, framed by hand, shared by
//! the load and sync benchmarks (`#[path]`-included: examples cannot share a crate module).
//! One request at a time, bodies framed by `Content-Length` (what the server sends for every
//! buffered body); reads 64 KiB at a time, for multi-megabyte pull pages. Framed by hand: the
//! server crate builds hyper without its client, and this keeps the clients' share of the
//! shared cores small.

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A response: status, the signed channel's two headers, the body.
pub struct Answer {
    pub status: u16,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

/// One keep-alive connection.
pub struct Connection {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
    chunk: Box<[u8]>,
}

impl Connection {
    pub async fn open(addr: SocketAddr, connector: &TlsConnector) -> Result<Connection> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let tls = connector.connect(name, tcp).await.context("pinned TLS handshake")?;
        ensure!(tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3), "not TLS 1.3");
        Ok(Connection { tls, buf: Vec::with_capacity(1 << 16), chunk: vec![0; 1 << 16].into_boxed_slice() })
    }

    pub async fn exchange(&mut self, request: &[u8]) -> Result<Answer> {
        self.tls.write_all(request).await?;
        self.tls.flush().await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("a response head that is not ASCII")?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("a malformed status line"))?;
        let (mut length, mut timestamp, mut signature) = (None, None, None);
        for line in lines.filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').ok_or_else(|| anyhow!("a malformed header line"))?;
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(v.parse::<usize>()?);
            } else if k.eq_ignore_ascii_case("x-timestamp") {
                timestamp = Some(v.to_owned());
            } else if k.eq_ignore_ascii_case("x-signature") {
                signature = Some(v.to_owned());
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                bail!("the server closed a keep-alive connection");
            }
        }
        let length = length.ok_or_else(|| anyhow!("a response without Content-Length"))?;
        self.buf.reserve(head_end + length);
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        ensure!(self.buf.len() == head_end + length, "bytes after the response on a one-at-a-time connection");
        Ok(Answer { status, timestamp, signature, body: self.buf.split_off(head_end) })
    }

    async fn fill(&mut self) -> Result<()> {
        let n = self.tls.read(&mut self.chunk).await?;
        ensure!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&self.chunk[..n]);
        Ok(())
    }
}

/// What a signed request is signed and authorised with.
pub struct Credentials<'a> {
    /// The access token (`Authorization: Bearer`).
    pub access_token: &'a str,
    /// The session's key id.
    pub key_id: &'a str,
    /// The session secret.
    pub secret: &'a fieldvault_core::protocol::SessionSecret,
}

/// Frames a signed request into `out` (cleared first), signed with `timestamp` and `nonce`.
/// Both benchmarks' builds get the same bytes, so sending costs them the same.
pub fn frame_signed(
    out: &mut Vec<u8>,
    who: &Credentials<'_>,
    (method, target, body): (&str, &str, &[u8]),
    timestamp: &str,
    nonce: &str,
) {
    let signature = who.secret.sign_request(method, target, body, timestamp, nonce);
    let content = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())
    };
    out.clear();
    out.extend_from_slice(
        format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{content}Authorization: Bearer {}\r\nX-Key-Id: {}\r\n\
             X-Timestamp: {timestamp}\r\nX-Nonce: {nonce}\r\nX-Signature: {signature}\r\n\r\n",
            who.access_token, who.key_id
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
}

/// Fails unless `r` is a 200 whose response signature verifies over `nonce`.
pub fn check_signed(r: &Answer, secret: &fieldvault_core::protocol::SessionSecret, nonce: &str) -> Result<()> {
    let ts = r.timestamp.as_deref().ok_or_else(|| anyhow!("a signed answer without X-Timestamp"))?;
    let sig = r.signature.as_deref().ok_or_else(|| anyhow!("a signed answer without X-Signature"))?;
    secret.verify_response(r.status, nonce, &r.body, ts, sig)?;
    Ok(())
}
