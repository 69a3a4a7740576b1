//! The facade through its Rust API (the bindings call exactly these), and the Python and
//! Kotlin suites against the generated bindings.

mod vault;
