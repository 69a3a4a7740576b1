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
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let value = work();
        let mut s = theirs.lock().unwrap_or_else(|p| p.into_inner());
        s.value = Some(value);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    })?;
    Ok(Blocking { slot })
}

impl<T> Future for Blocking<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
