//! The vault's key hierarchy through the public API, on real files.

mod disk_full;
mod documents;
mod interop;
mod keys;
mod migrate;
mod session;
