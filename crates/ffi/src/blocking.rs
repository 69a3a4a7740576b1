//! Runs blocking SDK work (the transport blocks on a runtime of its own and refuses to run
//! inside another) on a plain thread, as a future the foreign event loop awaits: Kotlin
//! `suspend`, Python `await`, Swift `async`, with no Rust async runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The result of work on its own thread.
pub(crate) struct Blocking<T> {
    slot: Arc<Mutex<Slot<T>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts `work` on a new thread at once.
///
/// # Errors
/// The OS could not start a thread.
pub(crate) fn run<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Blocking<T>> {
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None }));
    let theirs = Arc::clone(&slot);
    let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
        let value = work();
        let mut s = theirs.lock().unwrap_or_else(|p| p.into_inner());
        s.value = Some(value);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    })?;
    Ok(Blocking { slot, thread: Some(thread) })
}

impl<T> Future for Blocking<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let value = {
            let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            let value = s.value.take();
            if value.is_none() {
                s.waker = Some(cx.waker().clone());
            }
            value
        };
        let Some(v) = value else { return Poll::Pending };
        // The thread woke the app's event loop through a callback into its runtime; let it
        // leave that runtime before answering: a process that exits while a thread is still
        // leaving Python's or the JVM's runtime aborts.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Poll::Ready(v)
    }
}
