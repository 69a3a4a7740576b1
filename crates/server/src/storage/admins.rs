//! What the store keeps for the admin console (schema version 8 on both backends):
//! administrator accounts, apart from app users, and their console sessions.
//!
//! A session is found by the SHA-256 of its cookie's random id, so a copy of the database
//! holds no cookie that would let its reader in.

use std::fmt;

/// An administrator of the console.
#[derive(Clone)]
pub struct AdminRecord {
    /// Unique name (apart from user names).
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The TOTP secret, sealed ([`crate::seal::Purpose::AdminTotpSecret`], owner: the name);
    /// None until the first login makes one.
    pub totp_sealed: Option<Vec<u8>>,
    /// Whether a code has confirmed the secret (then every login needs a code).
    pub totp_confirmed: bool,
    /// The last step a code used up (None: none since the secret was made).
    pub totp_last_step: Option<u64>,
}

impl fmt::Debug for AdminRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminRecord")
            .field("name", &self.name)
            .field("totp_confirmed", &self.totp_confirmed)
            .finish_non_exhaustive()
    }
}

/// A console session.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSession {
    /// SHA-256 of the cookie's random id.
    pub id_hash: [u8; 32],
    /// The administrator.
    pub admin: String,
    /// The session's CSRF token (random; sent back in forms and `X-CSRF-Token`).
    pub csrf: String,
    /// False while the session only enrols the administrator's TOTP secret (after the
    /// password at the first login): it reaches the enrolment page and nothing else.
    pub full: bool,
    /// When the session began.
    pub created_at: u64,
    /// The last request it made (idle timeout).
    pub seen_at: u64,
    /// When a TOTP code was last entered in it (step-up).
    pub stepup_at: Option<u64>,
}

impl fmt::Debug for AdminSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSession")
            .field("admin", &self.admin)
            .field("full", &self.full)
            .field("created_at", &self.created_at)
            .field("seen_at", &self.seen_at)
            .field("stepup_at", &self.stepup_at)
            .finish_non_exhaustive()
    }
}

/// The rows of one page of a listing: `offset` rows skipped, at most `limit` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows skipped.
    pub offset: u64,
    /// Most rows read.
    pub limit: u32,
}
