//! Secret types. Each key is its own type so a database key can never be passed where a
//! master key is expected; none derives `Debug`, `Clone`, `PartialEq` or `Serialize`.

use std::fmt;

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

/// Length in bytes of every symmetric key in the hierarchy (256 bits).
pub const KEY_LEN: usize = 32;

/// Domain-separation label of the key canary.
const CANARY_LABEL: &[u8] = b"fieldvault/v1/canary";

/// The canary of a key: the first 16 bytes of HMAC-SHA256(key, "fieldvault/v1/canary").
///
/// Stored next to everything a key seals, it lets a reader tell "this is the wrong key"
/// (canary differs) from "the sealed bytes were damaged" (canary matches, tag fails). It
/// reveals nothing about the key beyond what the AEAD tag already does.
pub fn canary(key: &[u8; KEY_LEN]) -> [u8; 16] {
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), CANARY_LABEL);
    let mut out = [0u8; 16];
    out.copy_from_slice(&mac.as_ref()[..16]);
    out
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(Zeroizing<[u8; KEY_LEN]>);

        impl $name {
            /// Takes ownership of 32 key bytes (fresh from a CSPRNG, or just unwrapped).
            pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
                Self(bytes)
            }

            /// The raw key bytes.
            ///
            /// # Security
            /// Hand them only to the primitive that needs them (an AEAD, SQLCipher's
            /// `PRAGMA key`), never to a log, an error or a `String` that outlives the call.
            pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
                &self.0
            }

            /// This key's canary (see [`canary`]).
            pub fn canary(&self) -> [u8; 16] {
                canary(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

key_type!(
    /// The keystore key: comes from the OS keystore, or from Argon2id over the passphrase.
    /// Wraps the master key and nothing else.
    Kek
);
key_type!(
    /// The vault's master key: 32 random bytes, wrapped by the [`Kek`]. Wraps data keys.
    MasterKey
);
key_type!(
    /// One attachment's content key (CEK): 32 random bytes, wrapped by the account's files
    /// key. Chunk and manifest keys are derived from it with HKDF.
    ContentKey
);
key_type!(
    /// One account's key for one purpose (database, files, sync secrets), wrapped by the
    /// [`MasterKey`]. Only in memory while the vault is unlocked.
    DataKey
);

/// A passphrase as typed by the user. Zeroized on drop; `Debug` prints `[redacted]`.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Takes ownership of the passphrase text.
    pub fn new(text: Zeroizing<String>) -> Self {
        Self(text)
    }

    /// The passphrase text.
    ///
    /// # Security
    /// For the KDF and the strength check only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_every_secret_is_redacted() {
        let k = MasterKey::from_bytes(Zeroizing::new([0x41; 32]));
        let p = Passphrase::new(Zeroizing::new("hunter2 hunter2".into()));
        let shown = format!("{k:?} {p:?} {:?}", DataKey::from_bytes(Zeroizing::new([0x41; 32])));
        assert_eq!(shown, "MasterKey([redacted]) Passphrase([redacted]) DataKey([redacted])");
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn canaries_differ_between_keys_and_are_stable() {
        let a = canary(&[1; 32]);
        assert_eq!(a, canary(&[1; 32]));
        assert_ne!(a, canary(&[2; 32]));
    }
}
