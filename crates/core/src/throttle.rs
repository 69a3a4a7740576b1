//! Failed-unlock counting: the policy (how long to wait) and the record (`unlock.fvc`).
//!
//! ```text
//! "FVUC" | version 0x01 | failures u32 | last failure, Unix seconds u64 | check[8]
//! ```
//! The counter slows guessing on this device. It cannot slow an attacker who copied the
//! vault (a copy has no counter), which is why wiping after N failures is off by default.

use crate::Error;
use crate::section::{CHECK_LEN, Reader, checksum};

const MAGIC: &[u8; 4] = b"FVUC";
const VERSION: u8 = 1;
const LABEL: &[u8] = b"unlock-counter";

/// Failures allowed before any wait: a typo or two costs nothing.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait between attempts: 15 minutes.
const MAX_WAIT_SECS: u64 = 15 * 60;

/// Seconds to wait after `failures` consecutive failed unlocks before the next attempt:
/// none for the first [`FREE_FAILURES`], then 1 s, doubling with each failure, capped at
/// 15 minutes. Never a hard lock: the owner can always try again.
pub fn unlock_delay(failures: u32) -> u64 {
    if failures <= FREE_FAILURES {
        return 0;
    }
    let doublings = failures - FREE_FAILURES - 1;
    if doublings >= 10 { MAX_WAIT_SECS } else { (1u64 << doublings).min(MAX_WAIT_SECS) }
}

/// The durable failed-unlock counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnlockCounter {
    /// Consecutive failed passphrase unlocks.
    pub failures: u32,
    /// When the last one happened, Unix seconds.
    pub last_failure_unix: u64,
}

impl UnlockCounter {
    /// Encoded length.
    pub const LEN: usize = 4 + 1 + 4 + 8 + CHECK_LEN;

    /// Seconds left before another attempt is allowed at `now_unix` (0: go ahead). A clock
    /// set back makes the wait run from the new "now", never forever.
    pub fn wait_remaining(&self, now_unix: u64) -> u64 {
        let ready_at = self.last_failure_unix.saturating_add(unlock_delay(self.failures));
        match ready_at.checked_sub(now_unix) {
            Some(left) => left.min(unlock_delay(self.failures)),
            None => 0,
        }
    }

    /// The counter after one more failure at `now_unix`.
    pub fn after_failure(self, now_unix: u64) -> Self {
        UnlockCounter { failures: self.failures.saturating_add(1), last_failure_unix: now_unix }
    }

    /// Encodes the record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        out.extend_from_slice(&self.failures.to_be_bytes());
        out.extend_from_slice(&self.last_failure_unix.to_be_bytes());
        let check = checksum(LABEL, &out);
        out.extend_from_slice(&check);
        out
    }

    /// Parses the record.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, "unlock counter");
        r.header(MAGIC, VERSION)?;
        let failures = r.u32()?;
        let last_failure_unix = r.u64()?;
        let check: [u8; CHECK_LEN] = r.array()?;
        r.finish()?;
        if checksum(LABEL, &bytes[..Self::LEN - CHECK_LEN]) != check {
            return Err(Error::ChecksumMismatch { what: "unlock counter".into() });
        }
        Ok(UnlockCounter { failures, last_failure_unix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_after_free_failures_and_is_capped() {
        let waits: Vec<u64> = (0..=16).map(unlock_delay).collect();
        assert_eq!(&waits[..8], &[0, 0, 0, 0, 1, 2, 4, 8]);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(unlock_delay(u32::MAX), 900);
        assert_eq!(unlock_delay(14), 900);
    }

    #[test]
    fn wait_remaining_counts_down_and_survives_a_clock_set_back() {
        let c = UnlockCounter { failures: 6, last_failure_unix: 1000 };
        assert_eq!(c.wait_remaining(1000), 4);
        assert_eq!(c.wait_remaining(1003), 1);
        assert_eq!(c.wait_remaining(1004), 0);
        assert_eq!(c.wait_remaining(10), 4, "clock set back: wait at most one full delay");
    }

    #[test]
    fn counter_record_round_trips_and_detects_damage() {
        let c = UnlockCounter { failures: 5, last_failure_unix: 1_700_000_000 };
        let b = c.to_bytes();
        assert_eq!(UnlockCounter::from_bytes(&b).expect("parses"), c);
        let mut bad = b.clone();
        bad[6] ^= 1;
        assert!(UnlockCounter::from_bytes(&bad).is_err());
    }
}
