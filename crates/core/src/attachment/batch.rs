//! A batch of chunks worked on by the calling thread and one helper thread, while the calling
//! thread also does the IO of the neighbouring batches (STREAM chunks are independent).

use std::cell::OnceCell;
use std::io::{self, IoSlice, Write};
use std::sync::{Mutex, PoisonError};

/// Chunks per batch, for the encryptor and the decryptor alike: 48 (3 MiB of plaintext) at
/// chunk sizes up to 64 KiB, 4 above. The encryptor holds two batch buffers when written to
/// and three when reading a source (`read_from`: the next batch is read while the helper
/// thread writes the previous one), the decryptor three; that bounds memory (6 or 9 MiB at
/// 64 KiB chunks; peak RSS stays under 16 MiB with three) while giving each thread enough
/// work that a hand-off is noise (48 and 64 chunks measured the same).
pub(crate) fn chunks_per_batch(chunk_size: usize) -> usize {
    if chunk_size <= 1 << 16 { 48 } else { 4 }
}

/// A stream's helper thread, started when its first batch of more than one chunk comes and
/// stopped when the stream is dropped. One thread for the stream's life, not one per batch:
/// a thread started per batch was often queued on its parent's core for the whole batch on
/// a 2-vCPU VM (spawn to start: median 42 us, 90th percentile 925 us), so a batch ran on one
/// core a tenth of the time, where a waiting thread wakes in tens of microseconds. Nothing
/// is shared between streams or kept after them (no global pool: a forked child would find
/// its thread gone).
#[derive(Default)]
pub(crate) struct Helper(OnceCell<Option<rayon_core::ThreadPool>>);

impl Helper {
    /// The thread, or `None` if none can be started: the calling thread then does all the
    /// work.
    fn pool(&self) -> Option<&rayon_core::ThreadPool> {
        self.0
            .get_or_init(|| {
                rayon_core::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(|_| "fieldvault-attachment".into())
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// Runs `work(i, slot)` over every slot of `buf` (`slot` bytes each, the last one
    /// possibly shorter). The helper thread first runs `helper_io` (writing the previous
    /// batch, when the calling thread reads the next) and the calling thread `io` (reading
    /// the next batch, or writing the previous one); then both take slots from one queue,
    /// so neither idles while slots are left, whichever finishes its part first. Returns
    /// the results in slot order, and what `io` and `helper_io` returned.
    pub(crate) fn share<T: Send, U, V: Send>(
        &self,
        buf: &mut [u8],
        slot: usize,
        work: impl Fn(usize, &mut [u8]) -> T + Sync,
        io: impl FnOnce() -> U,
        helper_io: impl FnOnce() -> V + Send,
    ) -> (Vec<T>, U, V) {
        let pool = if buf.len() > slot { self.pool() } else { None };
        let Some(pool) = pool else {
            let (v, u) = (helper_io(), io());
            return (buf.chunks_mut(slot).enumerate().map(|(i, s)| work(i, s)).collect(), u, v);
        };
        let queue = Mutex::new(buf.chunks_mut(slot).enumerate());
        let run = || {
            let mut done = Vec::new();
            loop {
                // A statement of its own, so the lock is released before the work (a `while
                // let` would hold it through the loop body).
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                let Some((i, s)) = next else { return done };
                done.push((i, work(i, s)));
            }
        };
        let theirs = Mutex::new(None);
        let (mut all, u) = pool.in_place_scope(|sc| {
            sc.spawn(|_| {
                let v = helper_io();
                *theirs.lock().unwrap_or_else(PoisonError::into_inner) = Some((v, run()));
            });
            let u = io();
            (run(), u)
        });
        let (v, done) = theirs.into_inner().unwrap_or_else(PoisonError::into_inner).expect("the helper's job ran");
        all.extend(done);
        all.sort_unstable_by_key(|(i, _)| *i);
        (all.into_iter().map(|(_, t)| t).collect(), u, v)
    }
}

/// Writes every slice in order, in as few calls as `out` allows (one `writev` for a file).
pub(crate) fn write_all_vectored(out: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_once_in_order_with_io_in_between() {
        for len in [0usize, 1, 7, 8, 9, 64, 1000] {
            let mut buf: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (sums, io, helper_io) = Helper::default().share(
                &mut buf,
                8,
                |i, s| {
                    s.iter_mut().for_each(|b| *b = b.wrapping_add(1));
                    (i, s.len())
                },
                || 42,
                || 43,
            );
            assert_eq!((io, helper_io), (42, 43));
            let expect: Vec<(usize, usize)> = (0..len.div_ceil(8)).map(|i| (i, (len - i * 8).min(8))).collect();
            assert_eq!(sums, expect, "len {len}");
            assert!(buf.iter().enumerate().all(|(i, b)| *b == (i as u8).wrapping_add(1)), "len {len}");
        }
    }

    /// A writer that takes at most 5 bytes per call: the loop must resume mid-slice.
    struct Trickle(Vec<u8>);
    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(5);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn vectored_write_resumes_after_short_writes() {
        let parts: [&[u8]; 4] = [b"abcdefg", b"", b"hij", b"klmnopqrstu"];
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut out = Trickle(Vec::new());
        write_all_vectored(&mut out, &mut slices).expect("written");
        assert_eq!(out.0, b"abcdefghijklmnopqrstu");
    }
}
