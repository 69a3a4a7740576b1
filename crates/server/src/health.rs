//! What the console's health page shows besides the store: the connections each listener is
//! serving now and has served since the start, and the device API's recent error answers by
//! kind, per minute for the last hour. Counting is a few atomic operations per connection,
//! and a short lock per error answer only (a successful answer costs one comparison).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

/// Minutes of error counts kept.
pub const WINDOW_MINUTES: u64 = 60;

/// A listener's connections.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicU64,
    served: AtomicU64,
}

impl Connections {
    /// A connection past its handshake, counted until the guard drops.
    pub fn open(&self) -> ConnectionGuard<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self)
    }

    /// (open now, served since the start).
    pub fn counts(&self) -> (u64, u64) {
        (self.open.load(Ordering::Relaxed), self.served.load(Ordering::Relaxed))
    }
}

/// Counts one open connection while it lives.
#[derive(Debug)]
pub struct ConnectionGuard<'a>(&'a Connections);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Kinds of error answer counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 401: a refused token, signature, timestamp, nonce or password.
    Unauthorized,
    /// 429: throttled logins and the like.
    Throttled,
    /// Any other 4xx: malformed or refused requests.
    OtherClient,
    /// 5xx: the server failed.
    Server,
}

impl ErrorKind {
    /// The kind of an answer's status; None for a success or a redirect.
    pub fn of(status: StatusCode) -> Option<ErrorKind> {
        match status.as_u16() {
            401 => Some(ErrorKind::Unauthorized),
            429 => Some(ErrorKind::Throttled),
            400..=499 => Some(ErrorKind::OtherClient),
            500..=599 => Some(ErrorKind::Server),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Error answers in a window: [401, 429, other 4xx, 5xx].
pub type ErrorCounts = [u64; 4];

/// Per-minute error counts for the last [`WINDOW_MINUTES`] minutes.
#[derive(Debug, Default)]
pub struct ErrorWindow {
    /// (minute since the epoch, counts), at most one slot per minute of the window.
    slots: Mutex<Vec<(u64, ErrorCounts)>>,
}

impl ErrorWindow {
    /// Counts one error answer at `now` (Unix seconds).
    pub fn record(&self, now: u64, kind: ErrorKind) {
        let minute = now / 60;
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.retain(|(m, _)| m + WINDOW_MINUTES > minute);
        match slots.iter_mut().find(|(m, _)| *m == minute) {
            Some((_, counts)) => counts[kind.index()] += 1,
            None => {
                let mut counts = [0; 4];
                counts[kind.index()] = 1;
                slots.push((minute, counts));
            }
        }
    }

    /// The counts of the last `minutes` minutes at `now`, this minute included.
    pub fn last(&self, now: u64, minutes: u64) -> ErrorCounts {
        let minute = now / 60;
        let slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut total = [0; 4];
        for (_, counts) in slots.iter().filter(|(m, _)| *m <= minute && m + minutes > minute) {
            for (t, c) in total.iter_mut().zip(counts) {
                *t += c;
            }
        }
        total
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Health {
    /// The device listener's connections.
    pub device: Connections,
    /// The console listener's connections.
    pub console: Connections,
    /// The device API's error answers.
    pub errors: ErrorWindow,
}

/// Counts the device API's error answers (a layer on [`crate::router`]).
pub(crate) async fn count_errors(State(app): State<std::sync::Arc<crate::App>>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if let Some(kind) = ErrorKind::of(response.status()) {
        app.health.errors.record(app.now(), kind);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_kind_and_minute_and_leave_the_window_after_an_hour() {
        let w = ErrorWindow::default();
        let t = 1_000_000 * 60;
        w.record(t, ErrorKind::Unauthorized);
        w.record(t + 59, ErrorKind::Unauthorized);
        w.record(t + 60, ErrorKind::Server);
        w.record(t + 120, ErrorKind::Throttled);
        w.record(t + 121, ErrorKind::OtherClient);
        assert_eq!(w.last(t + 121, 1), [0, 1, 1, 0]);
        assert_eq!(w.last(t + 121, 2), [0, 1, 1, 1]);
        assert_eq!(w.last(t + 121, 60), [2, 1, 1, 1]);
        // An hour after the first minute, it has left the window; the rest has not.
        assert_eq!(w.last(t + 60 * 60, 60), [0, 1, 1, 1]);
        w.record(t + 60 * 60 + 1, ErrorKind::Server);
        assert_eq!(w.slots.lock().expect("lock").len(), 3, "the first minute's slot is dropped");
    }

    #[test]
    fn statuses_map_to_kinds_and_successes_count_nothing() {
        assert_eq!(ErrorKind::of(StatusCode::OK), None);
        assert_eq!(ErrorKind::of(StatusCode::SEE_OTHER), None);
        assert_eq!(ErrorKind::of(StatusCode::UNAUTHORIZED), Some(ErrorKind::Unauthorized));
        assert_eq!(ErrorKind::of(StatusCode::TOO_MANY_REQUESTS), Some(ErrorKind::Throttled));
        assert_eq!(ErrorKind::of(StatusCode::CONFLICT), Some(ErrorKind::OtherClient));
        assert_eq!(ErrorKind::of(StatusCode::SERVICE_UNAVAILABLE), Some(ErrorKind::Server));
    }

    #[test]
    fn a_connection_counts_as_open_until_its_guard_drops() {
        let c = Connections::default();
        let g1 = c.open();
        let g2 = c.open();
        assert_eq!(c.counts(), (2, 2));
        drop(g1);
        drop(g2);
        assert_eq!(c.counts(), (0, 2));
    }
}
