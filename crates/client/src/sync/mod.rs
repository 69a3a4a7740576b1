//! Sync (docs/sync.md), by noun:
//! - [`outbox`]: local changes owed to the server, written with each change;
//! - [`engine`]: the push, plan then execute, and the document writes all sides share;
//! - [`pull`]: pull pages, planned then applied, and the reconciliation of a new device;
//! - [`conflicts`]: the policies, the conflicts table and the refused changes;
//! - [`directives`]: remote logout and wipe, checked before anything is done;
//! - [`channel`]: the signed session (tokens, refresh, signed requests);
//! - [`login`]: login; [`oidc`]: sign-in through an OpenID Connect provider; [`logout`]: logout and the logouts a server is still owed; [`client`]: the sync cycle and what an app asks of it;
//! - [`retry`]: backoff; [`state`]: the named values of the account's sync state.

pub(crate) mod channel;
pub(crate) mod client;
pub(crate) mod conflicts;
pub(crate) mod directives;
pub(crate) mod engine;
pub(crate) mod listing;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod oidc;
pub(crate) mod outbox;
pub(crate) mod pins;
pub(crate) mod pull;
pub(crate) mod retry;
pub(crate) mod state;
#[cfg(test)]
mod tests;
pub(crate) mod transfer;

/// A fresh Ed25519 token signer, as a server's (tests of the checks a device makes).
#[cfg(test)]
pub(crate) fn test_signer() -> fieldvault_core::protocol::TokenSigner {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    fieldvault_core::protocol::TokenSigner::from_pkcs8(&zeroize::Zeroizing::new(pkcs8.as_ref().to_vec()))
        .expect("signer")
}
