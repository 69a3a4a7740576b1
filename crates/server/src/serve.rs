//! The HTTPS listener: every accepted TCP connection goes through a TLS handshake before a
//! byte of HTTP is read; there is no plaintext listener of any kind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP routes. Each later issue adds its own.
pub fn router() -> Router {
    Router::new().route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
}

/// A bound HTTPS listener.
pub struct Server {
    listener: TcpListener,
    tls: TlsAcceptor,
    router: Router,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) with `tls`.
    pub async fn bind(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, router: Router) -> Result<Server, Error> {
        let listener =
            TcpListener::bind(addr).await.map_err(|e| Error::Tls(format!("cannot listen on {addr}: {e}")))?;
        Ok(Server { listener, tls: TlsAcceptor::from(tls), router })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (tcp, _peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    // Out of descriptors and the like: back off instead of spinning.
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
            };
            let tls = self.tls.clone();
            let service = TowerToHyperService::new(self.router.clone());
            tokio::spawn(async move {
                // A failed or slow handshake (plain HTTP, an old protocol, a wrong SNI) just
                // closes the connection: nothing is answered in plaintext.
                let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await else { return };
                let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }
}
