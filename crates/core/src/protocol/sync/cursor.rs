//! Pull cursors: opaque, bound to one user, and tied to the access epoch they were
//! computed under.

use super::check::OpError;
use crate::rules::{RuleUser, Rules};

/// The cursor MAC key (the server derives it from its store key).
pub struct CursorKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey([redacted])")
    }
}

/// Where a pull stands: the last change sequence sent and the access epoch it was computed
/// under. A cursor from another epoch (the rules, or the user's roles or attributes, have
/// changed since) restarts the scan from the beginning, which re-checks everything the
/// device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last change sequence number covered.
    pub seq: u64,
    /// The access epoch ([`access_epoch`]).
    pub epoch: [u8; 8],
}

const CURSOR_LABEL: &[u8] = b"fieldvault/v1/cursor";

impl CursorKey {
    /// A key from 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> CursorKey {
        CursorKey(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes))
    }

    fn tag(&self, user: &str, body: &[u8; 16]) -> aws_lc_rs::hmac::Tag {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.0);
        ctx.update(CURSOR_LABEL);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user.as_bytes());
        ctx.update(body);
        ctx.sign()
    }

    /// The opaque text of a cursor, bound to `user`: base64url(seq || epoch || tag[..16]).
    pub fn encode(&self, user: &str, cursor: Cursor) -> String {
        use base64::Engine;
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&cursor.seq.to_be_bytes());
        body[8..].copy_from_slice(&cursor.epoch);
        let tag = self.tag(user, &body);
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&body);
        out[16..].copy_from_slice(&tag.as_ref()[..16]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// Reads a cursor this server issued to `user`.
    ///
    /// # Errors
    /// Anything else: malformed, another user's, forged.
    pub fn decode(&self, user: &str, text: &str) -> Result<Cursor, OpError> {
        use base64::Engine;
        let bad = || OpError("the cursor is not one this server issued to this user".into());
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        let body: [u8; 16] = raw[..16].try_into().map_err(|_| bad())?;
        let tag = self.tag(user, &body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&tag.as_ref()[..16], &raw[16..])) {
            return Err(bad());
        }
        let seq = u64::from_be_bytes(body[..8].try_into().map_err(|_| bad())?);
        let epoch: [u8; 8] = body[8..].try_into().map_err(|_| bad())?;
        Ok(Cursor { seq, epoch })
    }
}

/// The access epoch of `user` under `rules`: changes whenever the rules or the user's roles
/// or attributes change.
pub fn access_epoch(rules: &Rules, user: &RuleUser) -> [u8; 8] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"fieldvault/v1/access-epoch");
    ctx.update(&rules.fingerprint());
    let who = serde_json::json!({ "id": user.id, "roles": user.roles, "attributes": user.attributes });
    ctx.update(&serde_jcs::to_vec(&who).unwrap_or_default());
    let d = ctx.finish();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d.as_ref()[..8]);
    out
}
