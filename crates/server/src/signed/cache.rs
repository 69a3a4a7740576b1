//! The verified-session cache (docs/adr/0011-verified-session-cache.md): what the signed
//! layer learned about a session, kept between its requests, and trusted only while the
//! store-wide revocation epoch says nothing about it has changed.
//!
//! Per key id it keeps the session as read (with the revocation epoch read in the same
//! snapshot), its secret unsealed, and the last access token verified for it (by SHA-256,
//! with its claims, until they expire). What never changes for a key id (the session id,
//! user, device and secret) resolves the key id before the signature is checked; what can
//! change (revoked, the pending directives) is used only after the request's group commit
//! read the epoch: the same epoch as the cached read, or the session is read again. So a
//! revocation committed anywhere (another instance, a `fieldvault-server` subcommand in
//! another process) before a request's nonce commit is seen by that request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest;
use fieldvault_core::protocol::{AccessClaims, SessionSecret, TokenError, TokenVerifier};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::problem::ApiError;
use crate::seal::{Purpose, Sealer};
use crate::storage::{SessionRecord, Store, StoreError};

/// Sessions kept at most; past it the cache forgets one to take another. Each entry is a few
/// hundred bytes (the record, the secret, one token's claims).
pub const SESSION_CACHE_CAPACITY: usize = 100_000;

/// The sessions this instance has seen, by key id.
pub struct SessionCache {
    sessions: Mutex<HashMap<String, Arc<CachedSession>>>,
    capacity: usize,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

/// One session as the cache holds it.
pub struct CachedSession {
    secret: Arc<SessionSecret>,
    state: Mutex<State>,
}

/// What may change, with the epoch it was read at.
struct State {
    record: SessionRecord,
    epoch: u64,
    token: Option<VerifiedToken>,
}

/// An access token whose signature verified: its SHA-256 and its claims.
struct VerifiedToken {
    hash: [u8; 32],
    claims: AccessClaims,
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache::with_capacity(SESSION_CACHE_CAPACITY)
    }
}

impl SessionCache {
    /// A cache of at most `capacity` sessions (at least one).
    pub fn with_capacity(capacity: usize) -> SessionCache {
        SessionCache { sessions: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CachedSession>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session `key_id` names: cached, or read from the store (with the epoch) and its
    /// secret unsealed. None when no session has this key id. Only its secret and identity
    /// may be used before [`CachedSession::current`].
    ///
    /// # Errors
    /// A store failure, or a stored secret that does not unseal (`internal`).
    pub async fn resolve(
        &self,
        store: &dyn Store,
        sealer: &Sealer,
        key_id: &str,
    ) -> Result<Option<Arc<CachedSession>>, ApiError> {
        if let Some(hit) = self.map().get(key_id) {
            return Ok(Some(hit.clone()));
        }
        let read = store.session_read(key_id).await?;
        let Some(record) = read.session else { return Ok(None) };
        let secret = unseal(sealer, &record)?;
        let entry = Arc::new(CachedSession {
            secret,
            state: Mutex::new(State { record, epoch: read.revocation_epoch, token: None }),
        });
        let mut map = self.map();
        if map.len() >= self.capacity
            && !map.contains_key(key_id)
            && let Some(evicted) = map.keys().next().cloned()
        {
            map.remove(&evicted);
        }
        Ok(Some(map.entry(key_id.to_owned()).or_insert(entry).clone()))
    }

    /// Forgets a key id (its session is gone from the store).
    pub fn forget(&self, key_id: &str) {
        self.map().remove(key_id);
    }
}

/// A stored session secret, opened.
fn unseal(sealer: &Sealer, record: &SessionRecord) -> Result<Arc<SessionSecret>, ApiError> {
    let bytes = sealer.open(Purpose::SessionSecret, &record.id, &record.secret_sealed).map_err(ApiError::internal)?;
    let secret = <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| ApiError::internal("a stored session secret has the wrong length"))?;
    Ok(Arc::new(SessionSecret::from_bytes(Zeroizing::new(secret))))
}

impl CachedSession {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's key id.
    pub fn key_id(&self) -> String {
        self.state().record.key_id.clone()
    }

    /// The device and its pending directives as last read (None: none; they may have
    /// changed since: see [`CachedSession::current`]).
    pub fn directives(&self) -> Option<(String, Vec<String>)> {
        super::directives_of(&self.state().record)
    }

    /// The session's secret (it never changes for a key id).
    pub fn secret(&self) -> &Arc<SessionSecret> {
        &self.secret
    }

    /// The session as of revocation epoch `epoch` (read by the request's group commit): the
    /// cached record when it was read at that epoch or a later one, else read again. None
    /// when the session is gone, or no longer the one this entry holds.
    ///
    /// # Errors
    /// A store failure.
    pub async fn current(&self, store: &dyn Store, epoch: u64) -> Result<Option<SessionRecord>, StoreError> {
        let key_id = {
            let state = self.state();
            if state.epoch >= epoch {
                return Ok(Some(state.record.clone()));
            }
            state.record.key_id.clone()
        };
        let read = store.session_read(&key_id).await?;
        let mut state = self.state();
        let Some(record) = read.session else { return Ok(None) };
        if record.id != state.record.id || record.secret_sealed != state.record.secret_sealed {
            return Ok(None);
        }
        if read.revocation_epoch > state.epoch {
            state.record = record.clone();
            state.epoch = read.revocation_epoch;
        }
        Ok(Some(record))
    }

    /// The claims of `token`, an access token, at `now`: remembered when this session
    /// verified the same token before and it has not expired, else verified (EdDSA) and
    /// remembered. The caller still checks that the claims name this session.
    ///
    /// # Errors
    /// What [`TokenVerifier::access`] refuses, or the remembered token has expired.
    pub fn access_claims(&self, verifier: &TokenVerifier, token: &str, now: u64) -> Result<AccessClaims, TokenError> {
        let hash = sha256(token);
        if let Some(known) = &self.state().token
            && bool::from(known.hash.ct_eq(&hash))
        {
            known.claims.check_time(now)?;
            return Ok(known.claims.clone());
        }
        let claims = verifier.access(token, now)?;
        self.state().token = Some(VerifiedToken { hash, claims: claims.clone() });
        Ok(claims)
    }
}

fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}
