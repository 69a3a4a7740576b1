//! The one place where the CEL parser's and interpreter's panics stop.
//!
//! cel-interpreter 0.10 and its ANTLR parser (`antlr4rust`) panic on some inputs: a few
//! malformed expressions at load, a macro over a value that is not a list at evaluation. A
//! panic must never take the server down, so each call runs under `catch_unwind` here and a
//! panic becomes a refusal (at load) or a denial (at evaluation).
//!
//! Catching is not enough: the process's panic hook runs before unwinding starts and prints
//! the panic's message (and a backtrace with `RUST_BACKTRACE`) to stderr, so an operator
//! with a typo in the rules file saw a parser backtrace before the clean error line, and a
//! device choosing its documents could have written a line to the server's log per
//! evaluation. So the first call also installs a panic hook that stays silent for panics
//! raised on a thread while it runs a [`contained`] call, and hands every other panic to the
//! hook that was installed before it (the default one, or the application's). Filtering by
//! thread, not by the source file a panic names, holds for every crate the parser pulls in
//! and for vendored builds whose paths differ.
//!
//! An application that replaces the panic hook after the first rules are loaded (rather than
//! wrapping the one it finds, as `std::panic::take_hook` allows) gets the messages back;
//! containment itself never depends on the hook.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside a [`contained`] call.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Installs the filtering hook once per process.
static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it is caught, prints nothing, and gives `None`.
///
/// `f` is treated as unwind safe: callers pass closures whose captured state is either
/// read-only or dropped with the call (a parse, an evaluation in a fresh child scope).
pub(super) fn contained<T>(f: impl FnOnce() -> T) -> Option<T> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !INSIDE.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = INSIDE.with(|inside| inside.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    INSIDE.with(|inside| inside.set(outer));
    outcome.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_none_and_a_value_passes_through() {
        assert_eq!(contained(|| 7), Some(7));
        assert_eq!(contained(|| -> u8 { panic!("inside the parser") }), None);
        // Nested calls restore the outer state.
        assert_eq!(contained(|| contained(|| -> u8 { panic!("deeper") }).is_none()), Some(true));
        assert!(!INSIDE.with(Cell::get));
    }
}
