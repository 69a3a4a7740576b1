use fieldvault_core::{KdfParams, Kek, KeystoreKind, KeystoreParams, Passphrase, VaultId};

use crate::{Error, KeyStore, expect_kind};

/// Lowest zxcvbn score (0-4) a new passphrase may have (SPEC section 3): the one floor in
/// `fieldvault_core`, which the server's passwords share.
pub const MIN_PASSPHRASE_SCORE: u8 = fieldvault_core::MIN_SECRET_SCORE;

/// zxcvbn's score (0-4) for a passphrase and its advice, if any.
pub fn passphrase_strength(passphrase: &Passphrase) -> (u8, String) {
    let s = fieldvault_core::strength(passphrase.expose_secret(), &["fieldvault", "vault"]);
    (s.score, s.hint)
}

/// KEK = Argon2id(passphrase, salt) (RFC 9106). The passphrase is held only as long as
/// this value lives and is zeroized with it.
pub struct PassphraseStore {
    passphrase: Passphrase,
    kdf: KdfParams,
}

impl PassphraseStore {
    /// A store for `passphrase`, creating new vaults with [`KdfParams::DEFAULT`].
    pub fn new(passphrase: Passphrase) -> Self {
        Self { passphrase, kdf: KdfParams::DEFAULT }
    }

    /// Sets the Argon2id cost for new vaults. Values below the readers' minimum are
    /// refused when used.
    pub fn with_kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }
}

impl KeyStore for PassphraseStore {
    fn kind(&self) -> KeystoreKind {
        KeystoreKind::Passphrase
    }

    fn create(&self, _vault: &VaultId) -> Result<(Kek, KeystoreParams), Error> {
        let (score, hint) = passphrase_strength(&self.passphrase);
        if score < MIN_PASSPHRASE_SCORE {
            return Err(Error::WeakPassphrase { score, hint });
        }
        let mut salt = [0u8; KdfParams::SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt).expect("the OS random number generator does not fail");
        let kek = self.kdf.derive_kek(&self.passphrase, &salt)?;
        Ok((kek, KeystoreParams::Passphrase { kdf: self.kdf, salt }))
    }

    fn kek(&self, _vault: &VaultId, params: &KeystoreParams) -> Result<Kek, Error> {
        expect_kind(params, KeystoreKind::Passphrase)?;
        let KeystoreParams::Passphrase { kdf, salt } = params else {
            unreachable!("kind checked above");
        };
        Ok(kdf.derive_kek(&self.passphrase, salt)?)
    }

    fn destroy(&self, _vault: &VaultId) -> Result<(), Error> {
        // Nothing is stored outside the key file: the KEK can be derived again by anyone with
        // the passphrase and a copy of the key file (docs/keys.md, "Wipe").
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    fn store(p: &str) -> PassphraseStore {
        PassphraseStore::new(Passphrase::new(Zeroizing::new(p.into())))
    }

    #[test]
    fn weak_new_passphrases_are_refused_with_advice() {
        for weak in ["", "password", "fieldvault123", "qwertyuiop"] {
            let err = store(weak).create(&VaultId::from_bytes([0; 16])).expect_err("weak");
            assert!(matches!(err, Error::WeakPassphrase { score, .. } if score < 3), "{weak}: {err}");
        }
    }

    #[test]
    fn a_strong_passphrase_gives_the_same_kek_from_the_recorded_parameters() {
        let s = store("tangerine orbit cello 1987 drizzle");
        let vault = VaultId::from_bytes([0; 16]);
        let (kek, params) = s.create(&vault).expect("strong");
        assert_eq!(s.kek(&vault, &params).expect("derives").canary(), kek.canary());
        let other = store("tangerine orbit cello 1987 drizzlf");
        assert_ne!(other.kek(&vault, &params).expect("derives").canary(), kek.canary());
        assert!(matches!(s.kek(&vault, &KeystoreParams::Memory), Err(Error::WrongKind { .. })));
    }
}
