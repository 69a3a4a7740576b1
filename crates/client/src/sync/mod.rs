//! Sync: the outbox of local changes, the account's sync state, and the engine that pushes
//! and pulls over the signed channel (docs/sync.md).

pub(crate) mod client;
pub(crate) mod directives;
pub(crate) mod engine;
pub(crate) mod outbox;
pub(crate) mod retry;
pub(crate) mod state;
#[cfg(test)]
mod tests;
