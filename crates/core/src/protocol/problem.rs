//! The stable error codes of SPEC section 5, carried as `code` in every
//! `application/problem+json` body.

/// A machine-readable error code. The strings are part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemCode {
    /// Missing, malformed, expired or revoked access token, or a key id naming no live session.
    InvalidToken,
    /// The request signature does not verify.
    InvalidSignature,
    /// `X-Timestamp` outside the window; the response carries the server's time in `Date`.
    StaleTimestamp,
    /// `(key_id, nonce)` was seen before.
    ReplayedNonce,
    /// Wrong credentials, or a refresh token that is unknown, spent or not this session's.
    InvalidGrant,
    /// The user may not do this.
    Forbidden,
    /// No such resource.
    NotFound,
    /// Body too large (413) or headers too large (431).
    TooLarge,
    /// Malformed input.
    BadRequest,
    /// Too many attempts; retry after `Retry-After`.
    RateLimited,
    /// The device's sequence number went backwards: an old copy of the vault is in use.
    RollbackDetected,
    /// The password was right but the user is enrolled in multi-factor login and the login
    /// carried no TOTP code, or a wrong or used one.
    MfaRequired,
    /// The identity provider could not be reached, or answered with something that is not a
    /// well-formed OpenID Connect answer; nothing was signed in.
    ProviderUnavailable,
    /// The server failed; nothing about the cause is sent.
    Internal,
}

impl ProblemCode {
    /// Every code, in the order of SPEC section 5 (then `internal`).
    pub const ALL: [ProblemCode; 14] = [
        ProblemCode::InvalidToken,
        ProblemCode::InvalidSignature,
        ProblemCode::StaleTimestamp,
        ProblemCode::ReplayedNonce,
        ProblemCode::InvalidGrant,
        ProblemCode::Forbidden,
        ProblemCode::NotFound,
        ProblemCode::TooLarge,
        ProblemCode::BadRequest,
        ProblemCode::RateLimited,
        ProblemCode::RollbackDetected,
        ProblemCode::MfaRequired,
        ProblemCode::ProviderUnavailable,
        ProblemCode::Internal,
    ];

    /// The wire string (`invalid_token`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::InvalidToken => "invalid_token",
            ProblemCode::InvalidSignature => "invalid_signature",
            ProblemCode::StaleTimestamp => "stale_timestamp",
            ProblemCode::ReplayedNonce => "replayed_nonce",
            ProblemCode::InvalidGrant => "invalid_grant",
            ProblemCode::Forbidden => "forbidden",
            ProblemCode::NotFound => "not_found",
            ProblemCode::TooLarge => "too_large",
            ProblemCode::BadRequest => "bad_request",
            ProblemCode::RateLimited => "rate_limited",
            ProblemCode::RollbackDetected => "rollback_detected",
            ProblemCode::MfaRequired => "mfa_required",
            ProblemCode::ProviderUnavailable => "provider_unavailable",
            ProblemCode::Internal => "internal",
        }
    }

    /// The code for a wire string, if it is one.
    pub fn parse(s: &str) -> Option<ProblemCode> {
        ProblemCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// A short human title (the problem's `title`).
    pub fn title(self) -> &'static str {
        match self {
            ProblemCode::InvalidToken => "The access token or key id is not valid",
            ProblemCode::InvalidSignature => "The request signature does not verify",
            ProblemCode::StaleTimestamp => "The request timestamp is outside the allowed window",
            ProblemCode::ReplayedNonce => "This nonce was already used",
            ProblemCode::InvalidGrant => "The credentials or refresh token are not valid",
            ProblemCode::Forbidden => "Not allowed",
            ProblemCode::NotFound => "Not found",
            ProblemCode::TooLarge => "Too large",
            ProblemCode::BadRequest => "Malformed request",
            ProblemCode::RateLimited => "Too many attempts",
            ProblemCode::RollbackDetected => "The device's sync sequence went backwards",
            ProblemCode::MfaRequired => "A second factor is required",
            ProblemCode::ProviderUnavailable => "The identity provider is unavailable",
            ProblemCode::Internal => "Internal error",
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_string() {
        for code in ProblemCode::ALL {
            assert_eq!(ProblemCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ProblemCode::parse("Invalid_Token"), None);
    }
}
