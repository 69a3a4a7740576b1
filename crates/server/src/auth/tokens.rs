//! Issuing the token bundle that login and refresh return, and the secrets behind it: refresh
//! tokens, session and device secrets, the device's lease.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fieldvault_core::protocol::auth::{LeaseBody, TokenResponse};
use fieldvault_core::protocol::{ACCESS_TYP, AccessClaims, OFFLINE_TYP, OfflineClaims, SessionSecret};
use zeroize::Zeroizing;

use crate::app::{App, random_id};
use crate::problem::ApiError;
use crate::seal::Purpose;
use crate::storage::LeaseRecord;

/// SHA-256 of a refresh token: only this is stored, never the token.
pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// 32 bytes from the OS's CSPRNG (a session secret, a device secret, a lease key).
pub(crate) fn random_secret() -> Zeroizing<[u8; 32]> {
    let mut b = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(b.as_mut()).expect("the OS random source works");
    b
}

/// A new refresh token: `rt_` and 32 random bytes in base64url.
pub(crate) fn new_refresh_token() -> Zeroizing<String> {
    Zeroizing::new(format!("rt_{}", URL_SAFE_NO_PAD.encode(random_secret().as_ref())))
}

/// A new lease for a new device, expiring a lease lifetime from `now`: its record (key
/// sealed) and the key L itself.
pub(crate) fn new_lease(app: &App, now: u64) -> (LeaseRecord, Zeroizing<[u8; 32]>) {
    let id = random_id("l_");
    let key = random_secret();
    let sealed = app.sealer.seal(Purpose::LeaseKey, &id, key.as_ref());
    (LeaseRecord { id, key_sealed: sealed, expires_at: now + app.config.lease_ttl }, key)
}

/// The key L of a stored lease.
pub(crate) fn open_lease(app: &App, lease: &LeaseRecord) -> Result<Zeroizing<[u8; 32]>, ApiError> {
    let key = app.sealer.open(Purpose::LeaseKey, &lease.id, &lease.key_sealed).map_err(ApiError::internal)?;
    let key: [u8; 32] =
        key.as_slice().try_into().map_err(|_| ApiError::internal("a stored lease key is not 32 bytes"))?;
    Ok(Zeroizing::new(key))
}

/// Everything a session needs to be handed to its device.
pub(crate) struct Bundle<'a> {
    pub user: &'a str,
    pub roles: &'a [String],
    pub session_id: &'a str,
    pub key_id: &'a str,
    pub device_id: &'a str,
    pub secret: &'a SessionSecret,
    pub refresh_token: &'a str,
    pub lease: &'a LeaseRecord,
    pub lease_key: &'a [u8; 32],
}

/// The token response for a bundle, without the fields only a login sets (`device_secret`,
/// `device_reason`, `directives`).
pub(crate) fn issue(app: &App, b: &Bundle<'_>, now: u64) -> TokenResponse {
    let access = AccessClaims::new(
        b.user,
        b.session_id,
        b.device_id,
        b.roles,
        now,
        now + app.config.access_ttl,
        random_id("at_"),
    );
    let offline = OfflineClaims::new(
        b.user,
        b.session_id,
        b.device_id,
        b.roles,
        now,
        now + app.config.offline_ttl,
        random_id("ot_"),
    );
    TokenResponse {
        access_token: app.tokens.sign(ACCESS_TYP, &access),
        refresh_token: Zeroizing::new(b.refresh_token.to_owned()),
        offline_token: app.tokens.sign(OFFLINE_TYP, &offline),
        session_secret: b.secret.to_base64(),
        key_id: b.key_id.to_owned(),
        device_id: b.device_id.to_owned(),
        device_secret: None,
        device_reason: None,
        directives: Vec::new(),
        expires_in: app.config.access_ttl,
        lease: LeaseBody {
            lease_id: b.lease.id.clone(),
            key: Zeroizing::new(STANDARD.encode(b.lease_key)),
            expires_at: b.lease.expires_at,
        },
    }
}
