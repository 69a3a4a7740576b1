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

/// A fresh Ed25519 token signer, as a server's (tests of the checks a device makes).
#[cfg(test)]
pub(crate) fn test_signer() -> fieldvault_core::protocol::TokenSigner {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    fieldvault_core::protocol::TokenSigner::from_pkcs8(&zeroize::Zeroizing::new(pkcs8.as_ref().to_vec()))
        .expect("signer")
}
