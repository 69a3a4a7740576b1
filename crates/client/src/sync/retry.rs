//! When to try a failed sync again: exponential backoff with jitter, and which failures are
//! worth retrying without the user.

use std::time::Duration;

use crate::Error;

/// The first wait after a failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(15 * 60);

/// The wait before the next attempt after `failures` consecutive failed syncs (1 or more):
/// 5 s doubled per failure up to 15 minutes, then a random point in its upper half
/// (`random` is a uniformly random `u32`), so that devices that lost the network together do
/// not come back together.
pub fn retry_delay(failures: u32, random: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = FIRST_RETRY.saturating_mul(1u32 << exp).min(MAX_RETRY);
    let half = full / 2;
    half + half.mul_f64(f64::from(random) / f64::from(u32::MAX))
}

impl Error {
    /// Whether a sync that failed with this error should be retried on its own: the server
    /// was unreachable, timed out, dropped the connection, was busy or failed inside
    /// (HTTP 5xx, 409 `key in use`, 429). Everything else needs the user or the app: log in
    /// again, a pin mismatch, an answer that does not verify, a remote wipe.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::ServerUnreachable { .. } | Error::TimedOut { .. } | Error::ConnectionLost(_) => true,
            Error::Refused { status, code, .. } => {
                *status >= 500 || *status == 429 || (*status == 409 && code != "rollback_detected")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_five_seconds_to_fifteen_minutes_with_jitter_in_its_upper_half() {
        assert_eq!(retry_delay(1, u32::MAX), Duration::from_secs(5));
        assert_eq!(retry_delay(1, 0), Duration::from_millis(2500));
        assert_eq!(retry_delay(2, u32::MAX), Duration::from_secs(10));
        assert_eq!(retry_delay(4, u32::MAX), Duration::from_secs(40));
        assert_eq!(retry_delay(30, u32::MAX), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX, 0), MAX_RETRY / 2);
        let mid = retry_delay(3, u32::MAX / 2);
        assert!(mid > Duration::from_secs(14) && mid < Duration::from_secs(16), "{mid:?}");
    }

    #[test]
    fn only_network_and_server_side_failures_are_retried_on_their_own() {
        let refused = |status: u16, code: &str| Error::Refused { status, code: code.into(), detail: String::new() };
        assert!(Error::ConnectionLost("reset".into()).is_transient());
        assert!(refused(503, "internal").is_transient());
        assert!(refused(429, "rate_limited").is_transient());
        assert!(refused(409, "conflict").is_transient());
        assert!(!refused(409, "rollback_detected").is_transient());
        assert!(!Error::PinMismatch { host: "h".into(), port: 1 }.is_transient());
        assert!(!Error::ReauthRequired("x".into()).is_transient());
        assert!(!Error::RemoteWipe("a".into()).is_transient());
    }
}
