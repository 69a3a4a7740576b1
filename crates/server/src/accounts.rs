//! `fieldvault-server user add | passwd | disable`: account administration on the store.

use std::sync::Arc;

use crate::auth::{Password, Passwords};
use crate::storage::{Store, StoreError, UserRecord};

/// Shortest password accepted for a server account.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// What account administration can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The name is empty, too long or has control characters.
    #[error("user names are 1 to 128 characters without control characters")]
    BadName,
    /// A role is empty, too long or has characters other than letters, digits, `_`, `-`, `.`.
    #[error("role {0:?} is not valid: use letters, digits, '_', '-' and '.' (at most 64)")]
    BadRole(String),
    /// The password is too short or too long.
    #[error("passwords must be {MIN_PASSWORD_CHARS} to 1024 characters")]
    WeakPassword,
    /// No such user.
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    /// Storage failed (or the user exists).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn check_name(name: &str) -> Result<(), AccountError> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(AccountError::BadName);
    }
    Ok(())
}

fn check_password(p: &Password) -> Result<(), AccountError> {
    if !(MIN_PASSWORD_CHARS..=1024).contains(&p.chars()) {
        return Err(AccountError::WeakPassword);
    }
    Ok(())
}

/// Adds a user with `roles`.
///
/// # Errors
/// [`AccountError`]; [`StoreError::UserExists`] if the name is taken (nothing changes).
pub async fn add_user(
    store: &Arc<dyn Store>,
    passwords: &Passwords,
    name: &str,
    roles: &[String],
    password: Password,
    now: u64,
) -> Result<(), AccountError> {
    check_name(name)?;
    for r in roles {
        if r.is_empty() || r.len() > 64 || !r.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Err(AccountError::BadRole(r.clone()));
        }
    }
    check_password(&password)?;
    let hash = passwords.hash(password).await.map_err(AccountError::Hash)?;
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    store.add_user(&UserRecord { name: name.into(), password_hash: hash, roles, disabled: false }, now).await?;
    Ok(())
}

/// Sets a new password and revokes every session of the user.
///
/// # Errors
/// [`AccountError::NoSuchUser`], [`AccountError::WeakPassword`], storage errors.
pub async fn set_password(
    store: &Arc<dyn Store>,
    passwords: &Passwords,
    name: &str,
    password: Password,
    now: u64,
) -> Result<(), AccountError> {
    check_password(&password)?;
    if store.user(name).await?.is_none() {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    let hash = passwords.hash(password).await.map_err(AccountError::Hash)?;
    if !store.set_password(name, &hash, now).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(())
}

/// Disables a user: no login, no refresh, every session revoked.
///
/// # Errors
/// [`AccountError::NoSuchUser`], storage errors.
pub async fn disable_user(store: &Arc<dyn Store>, name: &str, now: u64) -> Result<(), AccountError> {
    if !store.disable_user(name, now).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(())
}
