//! The vault's key hierarchy through the public API, on real files.

mod api_error;
mod attachments;
mod disk_full;
mod documents;
mod export;
mod fixture;
mod interop;
mod keys;
mod migrate;
mod session;
mod tmpfs;
mod transport;
