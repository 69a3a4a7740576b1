//! Argon2id (RFC 9106) for the passphrase keystore: KEK = Argon2id(passphrase, salt).

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::{Error, KEY_LEN, Kek, Passphrase};

/// Argon2id cost parameters, stored with the salt in the key file and bound into the master
/// key's associated data (so they cannot be lowered without the unwrap failing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// Smallest memory readers accept: 64 MiB (SPEC section 3).
    pub const MIN_M_COST_KIB: u32 = 64 * 1024;
    /// Largest memory readers accept: 4 GiB (SPEC section 3).
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    /// Fewest passes readers accept (SPEC section 3).
    pub const MIN_T_COST: u32 = 2;
    /// Most passes readers accept: a cap so an edited file cannot make unlock run for hours.
    pub const MAX_T_COST: u32 = 32;
    /// Most lanes readers accept.
    pub const MAX_P_COST: u32 = 16;
    /// Salt length.
    pub const SALT_LEN: usize = 16;

    /// What new vaults use: 64 MiB, 3 passes, 1 lane (RFC 9106 section 4's second
    /// recommendation, with one lane because the phone or laptop unlocking it may have one
    /// free core). About 0.1-0.3 s here.
    pub const DEFAULT: KdfParams = KdfParams { m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 1 };

    /// Refuses parameters outside the accepted range.
    pub fn check(&self) -> Result<(), Error> {
        let refuse = |why: String| Err(Error::KdfParams(why));
        if self.m_cost_kib < Self::MIN_M_COST_KIB {
            return refuse(format!("memory {} KiB is below the 64 MiB minimum", self.m_cost_kib));
        }
        if self.m_cost_kib > Self::MAX_M_COST_KIB {
            return refuse(format!("memory {} KiB is above the 4 GiB maximum", self.m_cost_kib));
        }
        if !(Self::MIN_T_COST..=Self::MAX_T_COST).contains(&self.t_cost) {
            return refuse(format!("{} passes is outside 2..=32", self.t_cost));
        }
        if !(1..=Self::MAX_P_COST).contains(&self.p_cost) {
            return refuse(format!("{} lanes is outside 1..=16", self.p_cost));
        }
        Ok(())
    }

    /// Derives the keystore key. Checks the parameters first.
    ///
    /// # Errors
    /// [`Error::KdfParams`] for parameters outside the accepted range.
    pub fn derive_kek(&self, passphrase: &Passphrase, salt: &[u8; Self::SALT_LEN]) -> Result<Kek, Error> {
        self.check()?;
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| Error::KdfParams(e.to_string()))?;
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.expose_secret().as_bytes(), salt, out.as_mut())
            .map_err(|e| Error::KdfParams(e.to_string()))?;
        Ok(Kek::from_bytes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_refuse_weak_or_abusive_parameters() {
        let base = KdfParams::DEFAULT;
        assert!(base.check().is_ok());
        for bad in [
            KdfParams { m_cost_kib: 64 * 1024 - 1, ..base },
            KdfParams { m_cost_kib: 4 * 1024 * 1024 + 1, ..base },
            KdfParams { t_cost: 1, ..base },
            KdfParams { t_cost: 33, ..base },
            KdfParams { p_cost: 0, ..base },
            KdfParams { p_cost: 17, ..base },
        ] {
            let p = Passphrase::new(Zeroizing::new("x".into()));
            assert!(matches!(bad.derive_kek(&p, &[0; 16]), Err(Error::KdfParams(_))), "{bad:?}");
        }
    }

    #[test]
    fn derivation_is_deterministic_and_depends_on_salt_and_passphrase() {
        let p = Passphrase::new(Zeroizing::new("correct horse".into()));
        let q = Passphrase::new(Zeroizing::new("correct horsf".into()));
        let params = KdfParams { m_cost_kib: KdfParams::MIN_M_COST_KIB, t_cost: 2, p_cost: 1 };
        let a = params.derive_kek(&p, &[1; 16]).expect("ok");
        assert_eq!(a.expose_secret(), params.derive_kek(&p, &[1; 16]).expect("ok").expose_secret());
        assert_ne!(a.expose_secret(), params.derive_kek(&p, &[2; 16]).expect("ok").expose_secret());
        assert_ne!(a.expose_secret(), params.derive_kek(&q, &[1; 16]).expect("ok").expose_secret());
    }
}
