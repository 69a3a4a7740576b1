//! Identifiers. None of these is secret.

use std::fmt;

use crate::Error;

/// Random 128-bit identity of one vault, bound into every wrapped key's associated data.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VaultId([u8; 16]);

/// Random 128-bit identity of one key; a new key (rotation) gets a new id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 16]);

macro_rules! hex_id {
    ($name:ident) => {
        impl $name {
            /// Wraps 16 bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }
            /// The 16 bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
            /// Lower-case hex, 32 characters.
            pub fn to_hex(&self) -> String {
                self.0.iter().map(|b| format!("{b:02x}")).collect()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }
    };
}
hex_id!(VaultId);
hex_id!(KeyId);

/// What a key is for. The code is part of the wrapped-key format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// The vault's master key (wrapped by the keystore key).
    Master = 1,
    /// An account's SQLCipher database key.
    Database = 2,
    /// An account's attachment file key (wraps per-attachment content keys).
    Files = 3,
    /// An account's key for sync secrets (session secret, refresh token).
    Sync = 4,
    /// One attachment's content key, wrapped by the account's files key (never in the key
    /// file: it lives in the attachment's metadata record).
    Attachment = 5,
    /// A synced account's offline lease key `L` (SPEC section 5), wrapped by the master key
    /// with the lease id and expiry bound to it.
    Lease = 6,
    /// A synced account's device secret (proves the device at a later login), wrapped by the
    /// master key, never by the lease.
    Device = 7,
    /// The recovery wrapping key `K_R` (derived from the recovery key), wrapped by the master
    /// key so that a master-key rotation can wrap the new master key under it again
    /// (`docs/formats/key-file.md`, section 5.7).
    Recovery = 8,
}

impl Purpose {
    /// Every purpose, in code order.
    pub const ALL: [Purpose; 8] = [
        Purpose::Master,
        Purpose::Database,
        Purpose::Files,
        Purpose::Sync,
        Purpose::Attachment,
        Purpose::Lease,
        Purpose::Device,
        Purpose::Recovery,
    ];

    /// The data-key purposes every account has, in slot order.
    pub const DATA: [Purpose; 3] = [Purpose::Database, Purpose::Files, Purpose::Sync];

    /// The format code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Reads a format code.
    pub fn from_code(code: u8) -> Result<Self, Error> {
        Purpose::ALL.into_iter().find(|p| p.code() == code).ok_or(Error::UnknownCode { what: "key purpose", code })
    }

    /// Lower-case name as shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Master => "master",
            Purpose::Database => "database",
            Purpose::Files => "files",
            Purpose::Sync => "sync",
            Purpose::Attachment => "attachment",
            Purpose::Lease => "lease",
            Purpose::Device => "device",
            Purpose::Recovery => "recovery",
        }
    }

    /// Parses a user-facing name (`database`, `files`, `sync`, `master`).
    pub fn from_name(name: &str) -> Option<Self> {
        Purpose::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An account's name: its namespace in the vault and its directory name on disk.
///
/// 1 to 64 characters from `a-z 0-9 . _ -`, starting with a letter or digit. Lower case
/// only, so two accounts never collide on a case-insensitive file system; no `/`, no
/// leading dot, so a name never becomes a path outside the vault.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountName(String);

impl AccountName {
    /// Longest accepted name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, Error> {
        let refuse = |reason| Err(Error::AccountName { name: name.chars().take(80).collect(), reason });
        if name.is_empty() {
            return refuse("it is empty");
        }
        if name.len() > Self::MAX_LEN {
            return refuse("it is longer than 64 characters");
        }
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            return refuse("only a-z, 0-9, '.', '_' and '-' are allowed");
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return refuse("it must start with a letter or digit");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_that_could_escape_the_vault_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "-x", "Alice", "a b", &"a".repeat(65)] {
            assert!(AccountName::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["default", "alice", "a", "user.42_x-y", &"a".repeat(64)] {
            assert!(AccountName::new(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn purpose_codes_round_trip_and_unknown_codes_are_errors() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::from_code(p.code()).expect("known"), p);
            assert_eq!(Purpose::from_name(p.name()), Some(p));
        }
        assert!(Purpose::from_code(0).is_err());
        assert!(Purpose::from_code(9).is_err());
    }
}
