//! A session: an unlocked vault that locks itself after a period without use.
//!
//! Locking drops the [`Unlocked`] vault: database connections close (SQLCipher wipes its
//! copy of the key), every key zeroizes, and the directory lock is released. The next call
//! returns [`Error::Locked`]; the app unlocks again (a new passphrase prompt, or the OS
//! keystore).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::{Error, Unlocked};

/// How long a session may go unused before it locks itself, unless the app chooses another.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

struct State {
    unlocked: Option<Unlocked>,
    /// [`uptime`] at the last call.
    last_used: Duration,
}

impl State {
    /// Whether the session has gone `idle` without a call.
    fn idle_for(&self, idle: Duration) -> bool {
        uptime().saturating_sub(self.last_used) >= idle
    }
}

/// Time since boot, *including* time suspended (`CLOCK_BOOTTIME`): a device put to sleep
/// for an hour has been idle for an hour. `Instant` (`CLOCK_MONOTONIC` on Linux) stops
/// while suspended, so a laptop closed for hours would wake up still unlocked.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn uptime() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// Elsewhere the monotonic clock (which may stop while suspended: the app should also lock
/// on its platform's suspend or background event).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn uptime() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// An unlocked vault with an inactivity timeout. Cheap to share between threads by
/// reference; every call runs under one lock.
pub struct Session {
    state: Arc<Mutex<State>>,
    idle: Duration,
}

fn guard(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic inside `with` cannot leave keys half-dropped: recover the state as it is.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Starts a session that locks after `idle` without a call. A watchdog thread does the
    /// locking, so keys are wiped on time even if the app makes no further call.
    pub fn new(unlocked: Unlocked, idle: Duration) -> Session {
        let state = Arc::new(Mutex::new(State { unlocked: Some(unlocked), last_used: uptime() }));
        let weak = Arc::downgrade(&state);
        let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("fieldvault-idle-lock".into())
            .spawn(move || watchdog(weak, idle, tick))
            .expect("spawning the idle-lock thread");
        Session { state, idle }
    }

    /// The inactivity timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// Runs `f` on the unlocked vault and counts as use.
    ///
    /// # Errors
    /// [`Error::Locked`] once the session has locked; whatever `f` returns.
    pub fn with<T>(&self, f: impl FnOnce(&mut Unlocked) -> Result<T, Error>) -> Result<T, Error> {
        let mut st = guard(&self.state);
        if st.idle_for(self.idle) {
            st.unlocked = None;
        }
        let unlocked = st.unlocked.as_mut().ok_or(Error::Locked)?;
        let out = f(unlocked);
        st.last_used = uptime();
        out
    }

    /// Locks now.
    pub fn lock(&self) {
        guard(&self.state).unlocked = None;
    }

    /// Whether the session has locked.
    pub fn is_locked(&self) -> bool {
        guard(&self.state).unlocked.is_none()
    }
}

fn watchdog(state: Weak<Mutex<State>>, idle: Duration, tick: Duration) {
    loop {
        std::thread::sleep(tick);
        let Some(state) = state.upgrade() else { return };
        let mut st = guard(&state);
        if st.unlocked.is_none() {
            return;
        }
        if st.idle_for(idle) {
            st.unlocked = None;
            return;
        }
    }
}
