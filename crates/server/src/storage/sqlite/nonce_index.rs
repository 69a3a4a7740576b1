//! The SQLite store's memory of recorded request nonces (schema versions 11 and 12,
//! docs/adr/0014-sqlite-nonce-log.md): every `(key_id, nonce)` the `nonces` table holds, as a
//! 128-bit digest with its expiry, in buckets by expiry so that forgetting the expired ones
//! drops whole sets (and sorts through one at most).
//!
//! The table is an append-only log (rowid order, no index on the nonce), so a group commit of
//! N nonces writes a few pages at its end instead of N random leaves of a B-tree; uniqueness
//! is decided here, inside the store's write transaction, after reading whatever other
//! connections appended since this one last looked. Pure: no IO, no clock.

use std::collections::{BTreeMap, HashMap};

/// Width of an expiry bucket, in seconds. Nonces live for the timestamp window plus skew
/// (at most about 11 minutes), so a lookup probes a dozen sets at most.
const BUCKET_SECS: u64 = 64;

/// A `(key_id, nonce)` pair as the index holds it: the first 16 bytes of
/// SHA-256(len(key_id) as 4 bytes big-endian || key_id || nonce). Two distinct pairs share a
/// digest with probability about n^2 / 2^129 (n the nonces held), and a shared digest can only
/// refuse a request as a replay, never admit one.
pub(super) type Digest = [u8; 16];

/// The digest of one `(key_id, nonce)`.
pub(super) fn digest(key_id: &str, nonce: &[u8; 16]) -> Digest {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    // A key id is at most a few dozen bytes; a longer one is cut, which only merges
    // namespaces of ids that share their first 4 GiB.
    let len = u32::try_from(key_id.len()).unwrap_or(u32::MAX);
    ctx.update(&len.to_be_bytes());
    ctx.update(key_id.as_bytes());
    ctx.update(nonce);
    let full = ctx.finish();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full.as_ref()[..16]);
    out
}

/// The nonces recorded in the store, as far as this connection has read the log.
#[derive(Debug, Default)]
pub(super) struct NonceIndex {
    /// The highest log sequence number read into the index (0: nothing read yet).
    seen: i64,
    /// Digests by `expires_at / BUCKET_SECS`, each with `expires_at % BUCKET_SECS`.
    buckets: BTreeMap<u64, HashMap<Digest, u8>>,
    /// How many digests the buckets hold.
    len: usize,
}

impl NonceIndex {
    /// The highest log sequence number read so far.
    pub(super) fn seen(&self) -> i64 {
        self.seen
    }

    /// Notes that the log has been read up to `seq`.
    pub(super) fn advance(&mut self, seq: i64) {
        self.seen = self.seen.max(seq);
    }

    /// Whether `d` is recorded.
    pub(super) fn contains(&self, d: &Digest) -> bool {
        self.buckets.values().any(|set| set.contains_key(d))
    }

    /// Records `d` until `expires_at`; false if it was recorded already.
    pub(super) fn insert(&mut self, d: Digest, expires_at: u64) -> bool {
        if self.contains(&d) {
            return false;
        }
        // The remainder is below BUCKET_SECS (64), so it fits a byte.
        let within = (expires_at % BUCKET_SECS) as u8;
        self.buckets.entry(expires_at / BUCKET_SECS).or_default().insert(d, within);
        self.len += 1;
        true
    }

    /// Forgets every digest whose expiry is before `now`, as the purge deletes its row: whole
    /// buckets whose every expiry is past, and the expired part of the bucket `now` is in.
    pub(super) fn forget_before(&mut self, now: u64) {
        let current = now / BUCKET_SECS;
        // Bucket b holds expiries in [b * W, (b + 1) * W): all past when b < now / W.
        let keep = self.buckets.split_off(&current);
        for set in std::mem::replace(&mut self.buckets, keep).into_values() {
            self.len -= set.len();
        }
        if let Some(set) = self.buckets.get_mut(&current) {
            let before = set.len();
            let cut = (now % BUCKET_SECS) as u8;
            set.retain(|_, within| *within >= cut);
            self.len -= before - set.len();
        }
    }

    /// How many digests are held.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_recorded_once_and_its_key_id_is_part_of_it() {
        let mut index = NonceIndex::default();
        assert!(index.insert(digest("k1", &[1; 16]), 1_000));
        assert!(!index.insert(digest("k1", &[1; 16]), 5_000), "a replay, whatever expiry it claims");
        assert!(index.insert(digest("k2", &[1; 16]), 1_000), "another key id's nonce space");
        // The length prefix keeps ("k1", n) apart from ("k", "1" || n[..15]).
        let mut shifted = [1u8; 16];
        shifted[0] = b'1';
        assert_ne!(digest("k1", &[1; 16]), digest("k", &shifted));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_digest_is_forgotten_exactly_when_its_expiry_is_past() {
        let mut index = NonceIndex::default();
        let (early, same_bucket, late) = (digest("k", &[1; 16]), digest("k", &[2; 16]), digest("k", &[3; 16]));
        index.insert(early, 1_000);
        index.insert(same_bucket, 1_010);
        index.insert(late, 1_700);
        for now in [0, 999, 1_000] {
            index.forget_before(now);
            assert!(index.contains(&early), "kept at {now}");
        }
        // Past 1_000 but within its bucket [960, 1024): that one goes, its neighbour stays.
        index.forget_before(1_001);
        assert!(!index.contains(&early) && index.contains(&same_bucket) && index.contains(&late));
        index.forget_before(1_024);
        assert!(!index.contains(&same_bucket) && index.contains(&late));
        assert_eq!(index.len(), 1);
        index.forget_before(u64::MAX);
        assert_eq!(index.len(), 0);
        assert!(index.insert(early, 2_000), "forgotten: new again");
    }

    #[test]
    fn the_log_position_only_moves_forward() {
        let mut index = NonceIndex::default();
        index.advance(7);
        index.advance(3);
        assert_eq!(index.seen(), 7);
    }
}
