//! Password hashing: Argon2id (RFC 9106) in PHC strings, at most one hash per core at a time
//! (a semaphore), so a burst of logins queues instead of exhausting memory and starving the
//! event loop. Hashing runs on threads of its own, one per permit, made once: on tokio's
//! blocking pool each hash ran on whichever of its (up to 512) threads was free, and each
//! such thread's malloc arena kept its own 19 MiB Argon2 buffer, so a burst of logins grew
//! the server by gigabytes it never gave back (a review measured 9 GB after three bursts of
//! 200). On the same few threads the buffer is reused.
//!
//! Unknown and disabled users are checked against a dummy hash made at start-up with the same
//! parameters, so they take the same time as a wrong password and get the same answer.

use std::fmt;
use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// A user's password (the login body's type, from `fieldvault_core`), in memory only as long
/// as a login or `user add` needs it.
pub use fieldvault_core::protocol::auth::Password;

/// Memory in KiB, passes and lanes: OWASP's first Argon2id setting (19 MiB, 2 passes, 1 lane),
/// about 25 ms here; a login burst is bounded by the semaphore, not by memory.
pub const PARAMS: (u32, u32, u32) = (19_456, 2, 1);

/// The password hasher.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    dummy: Arc<String>,
    threads: Arc<rayon_core::ThreadPool>,
}

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passwords").field("permits", &self.permits.available_permits()).finish()
    }
}

fn argon2() -> Argon2<'static> {
    let (m, t, p) = PARAMS;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(m, t, p, None).expect("valid Argon2id parameters"))
}

fn hash_now(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "the OS random source failed".to_owned())?;
    argon2().hash_password_with_salt(password, &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

impl Passwords {
    /// A hasher allowing `parallel` hashes at once (the number of cores).
    pub fn new(parallel: usize) -> Result<Passwords, String> {
        let dummy = hash_now(b"fieldvault dummy password: never matches a login")?;
        let parallel = parallel.max(1);
        let threads = rayon_core::ThreadPoolBuilder::new()
            .num_threads(parallel)
            .thread_name(|i| format!("fieldvault-argon2-{i}"))
            .build()
            .map_err(|e| format!("cannot start the password threads: {e}"))?;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(parallel)),
            dummy: Arc::new(dummy),
            threads: Arc::new(threads),
        })
    }

    /// Runs `work` on the password threads and waits for it without blocking the caller's
    /// thread; `None` if it panicked.
    async fn on_threads<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.threads.spawn(move || {
            let _ = tx.send(work());
        });
        rx.await.ok()
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: Password) -> Result<String, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        self.on_threads(move || hash_now(password.expose_secret().as_bytes()))
            .await
            .ok_or("the password thread failed")?
    }

    /// True when `password` matches `hash`. With `None` (unknown or disabled user) it checks
    /// against the dummy hash, taking the same time, and returns false.
    pub async fn verify(&self, password: Password, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else { return false };
        // A user without a password (one who signs in through an identity provider only) is
        // checked like an unknown one.
        let hash = hash.filter(|h| !h.is_empty());
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.as_ref().clone());
        let ok = self
            .on_threads(move || argon2().verify_password(password.expose_secret().as_bytes(), hash.as_str()).is_ok())
            .await
            .unwrap_or(false);
        ok && known
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let p = Passwords::new(2).expect("hasher");
        let h = p.hash(Password::new(Zeroizing::new("correct horse".into()))).await.expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(p.verify(Password::new(Zeroizing::new("correct horse".into())), Some(h.clone())).await);
        assert!(!p.verify(Password::new(Zeroizing::new("correct horsf".into())), Some(h)).await);
        let dummy_password = "fieldvault dummy password: never matches a login";
        assert!(!p.verify(Password::new(Zeroizing::new(dummy_password.into())), None).await);
    }

    #[test]
    fn password_debug_is_redacted() {
        assert_eq!(format!("{:?}", Password::new(Zeroizing::new("x".into()))), "Password([redacted])");
    }
}
