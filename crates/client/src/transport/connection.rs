//! One open connection, HTTP/1.1 or HTTP/2 as ALPN chose, and what its failures mean.

use super::*;

/// One open connection: HTTP/1.1 (one request at a time) or HTTP/2.
pub(super) enum Connection {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// A send that failed, and whether the request was never written (so it may go again).
pub(super) struct Failed {
    pub(super) error: hyper::Error,
    pub(super) unsent: bool,
}

impl Failed {
    pub(super) fn new(mut e: TrySendError<hyper::Request<Full<Bytes>>>) -> Failed {
        let unsent = e.take_message().is_some();
        Failed { error: e.into_error(), unsent }
    }
}

impl Connection {
    pub(super) async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Connection::Http1(sender) => sender.ready().await,
            Connection::Http2(sender) => sender.ready().await,
        }
    }

    pub(super) async fn send(
        &mut self,
        outgoing: &Outgoing<'_>,
        authority: &Authority,
    ) -> Result<hyper::Response<Incoming>, Failed> {
        match self {
            Connection::Http1(sender) => {
                sender.try_send_request(outgoing.to_http(false, authority)).await.map_err(Failed::new)
            }
            Connection::Http2(sender) => {
                sender.try_send_request(outgoing.to_http(true, authority)).await.map_err(Failed::new)
            }
        }
    }
}

/// What a hyper failure means for the caller: a broken answer or a broken connection.
pub(super) fn hyper_failure(e: hyper::Error) -> Error {
    let detail = match std::error::Error::source(&e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    };
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        Error::MalformedResponse(detail)
    } else {
        Error::ConnectionLost(detail)
    }
}
