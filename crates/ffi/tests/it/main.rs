//! The facade through its Rust API (the bindings call exactly these), and the Python and
//! Kotlin suites against the generated bindings and a real server on loopback.

mod foreign;
mod kotlin;
mod python;
mod swift;
mod vault;
