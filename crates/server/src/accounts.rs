//! `fieldvault-server user add | passwd | disable | enable | remove | access | mfa`: account
//! administration on the store. Password changes and disabling end sessions, never devices:
//! a device's next login continues it with its lease key (SPEC section 5, "Offline lease").
//!
//! A new user's name follows [`fieldvault_core::names::check_user_name`] (1 to 64 of
//! `A-Z a-z 0-9 _ . - @`, starting with a letter or digit); a new password, at `user add`,
//! `user passwd` and the console's add and reset alike, is 12 to 1024 characters and must
//! reach the zxcvbn floor the vault passphrase has ([`fieldvault_core::MIN_SECRET_SCORE`]),
//! counting the user's name and "fieldvault" as words an attacker tries first.
//!
//! Every change is recorded in the audit log in its own transaction, before it takes effect:
//! each function takes `by`, the actor the record names (`cli:<os user>` for the
//! `fieldvault-server` subcommands, `admin:<name>` for the console), and `now`. A call that
//! changes nothing (no such user) records nothing.

use std::sync::Arc;

use fieldvault_core::names::{NameError, check_user_name};
use fieldvault_core::{MIN_SECRET_SCORE, TOTP_SECRET_LEN, TotpSecret, otpauth_uri, strength};
use zeroize::Zeroizing;

use crate::auth::{Password, Passwords};
use crate::seal::{Purpose, Sealer};
use crate::storage::{AuditEvent, Store, StoreError, UserRecord};

/// The issuer an authenticator app shows beside the account name.
pub const TOTP_ISSUER: &str = "Fieldvault";

/// Shortest password accepted for a server account.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// What account administration can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// A new user's name (shown as given) breaks the name rule ([`check_user_name`]).
    #[error("user name {0:?} is not valid: {1}")]
    BadName(String, NameError),
    /// An existing user's name given to `user link` is empty, too long or has control
    /// characters.
    #[error("user names are 1 to 128 characters without control characters")]
    BadExistingName,
    /// A role is empty, too long or has characters other than letters, digits, `_`, `-`, `.`.
    #[error("role {0:?} is not valid: use letters, digits, '_', '-' and '.' (at most 64)")]
    BadRole(String),
    /// An attribute is not `key=value` with a key of letters, digits and `_`.
    #[error("attribute {0:?} is not valid: write key=value, the key 1 to 64 of letters, digits and '_'")]
    BadAttribute(String),
    /// The password is too short or too long.
    #[error("passwords must be {MIN_PASSWORD_CHARS} to 1024 characters")]
    PasswordLength,
    /// The password scores below the zxcvbn floor.
    #[error("password too weak (strength {score} of 4, at least {MIN_SECRET_SCORE} needed){hint}")]
    WeakPassword {
        /// zxcvbn's score, 0 to 4.
        score: u8,
        /// zxcvbn's advice, prefixed with ": " when there is any.
        hint: String,
    },
    /// No such user.
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    /// Storage failed (or the user exists).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// An identity's issuer or subject is empty or has control characters.
    #[error("an identity is an issuer URL and a non-empty subject without control characters")]
    BadIdentity,
    /// The identity is linked to another user.
    #[error("that identity is linked to user {0:?}; unlink it first")]
    IdentityTaken(String),
    /// The identity is linked to no user.
    #[error("that identity is not linked to any user")]
    NoSuchIdentity,
}

/// The audit record of an account action by `by` on user `target`.
fn event(now: u64, by: &str, action: &str, target: &str) -> AuditEvent {
    AuditEvent::new(now, by, action, target)
}

/// Roles and attributes as an audit record's detail shows them.
fn access_detail(
    e: AuditEvent,
    roles: &[String],
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> AuditEvent {
    e.with("roles", roles.to_vec()).with("attributes", serde_json::Value::Object(attributes.clone()))
}

/// An existing user's name, as `user link` takes it: users made before the name rule keep
/// their names.
fn check_existing_name(name: &str) -> Result<(), AccountError> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(AccountError::BadExistingName);
    }
    Ok(())
}

/// A new password for user `name`: its length, then the zxcvbn floor (the length first, so
/// that zxcvbn never runs over a megabyte of input).
fn check_password(name: &str, p: &Password) -> Result<(), AccountError> {
    if !(MIN_PASSWORD_CHARS..=1024).contains(&p.chars()) {
        return Err(AccountError::PasswordLength);
    }
    let s = strength(p.expose_secret(), &["fieldvault", name]);
    if !s.acceptable() {
        return Err(AccountError::WeakPassword { score: s.score, hint: s.hint });
    }
    Ok(())
}

/// What access rules see of a user besides the name: roles and attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Access {
    /// Roles, sorted, without duplicates.
    pub roles: Vec<String>,
    /// Attributes (`user.attributes` in rules).
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl Access {
    /// From the command line: roles, and attributes as `key=value` where a value that parses
    /// as JSON (`3`, `true`, `["a","b"]`) is that JSON and anything else is a string.
    ///
    /// # Errors
    /// [`AccountError::BadRole`], [`AccountError::BadAttribute`].
    pub fn parse(roles: &[String], attributes: &[String]) -> Result<Access, AccountError> {
        for r in roles {
            if r.is_empty() || r.len() > 64 || !r.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                return Err(AccountError::BadRole(r.clone()));
            }
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let mut map = serde_json::Map::new();
        for a in attributes {
            let Some((k, v)) = a.split_once('=') else { return Err(AccountError::BadAttribute(a.clone())) };
            if k.is_empty() || k.len() > 64 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(AccountError::BadAttribute(a.clone()));
            }
            let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
            map.insert(k.to_owned(), value);
        }
        Ok(Access { roles, attributes: map })
    }
}

/// Adds a user with roles and attributes.
///
/// # Errors
/// [`AccountError::BadName`] for a name outside the rule, [`AccountError::PasswordLength`]
/// and [`AccountError::WeakPassword`] for a password below the floor (nothing changes);
/// [`StoreError::UserExists`] if the name is taken (nothing changes).
pub async fn add_user(
    store: &Arc<dyn Store>,
    by: &str,
    passwords: &Passwords,
    name: &str,
    access: Access,
    password: Password,
    now: u64,
) -> Result<(), AccountError> {
    check_user_name(name).map_err(|e| AccountError::BadName(name.to_owned(), e))?;
    check_password(name, &password)?;
    let hash = passwords.hash(password).await.map_err(AccountError::Hash)?;
    let record = UserRecord {
        name: name.into(),
        password_hash: hash,
        roles: access.roles,
        disabled: false,
        attributes: access.attributes,
    };
    let audit = access_detail(event(now, by, "user.add", name), &record.roles, &record.attributes);
    store.add_user(&record, now, &audit).await?;
    Ok(())
}

/// Replaces a user's roles and attributes. Devices lose, at their next pull, whatever the
/// new access no longer lets them read.
///
/// # Errors
/// [`AccountError::NoSuchUser`], storage errors.
pub async fn set_access(
    store: &Arc<dyn Store>,
    by: &str,
    name: &str,
    access: &Access,
    now: u64,
) -> Result<(), AccountError> {
    let audit = access_detail(event(now, by, "user.access", name), &access.roles, &access.attributes);
    if !store.set_user_access(name, &access.roles, &access.attributes, &audit).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(())
}

/// Sets a new password and revokes every session of the user; devices and their lease keys
/// stay.
///
/// # Errors
/// [`AccountError::NoSuchUser`], [`AccountError::PasswordLength`],
/// [`AccountError::WeakPassword`], storage errors.
pub async fn set_password(
    store: &Arc<dyn Store>,
    by: &str,
    passwords: &Passwords,
    name: &str,
    password: Password,
    now: u64,
) -> Result<(), AccountError> {
    check_password(name, &password)?;
    if store.user(name).await?.is_none() {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    let hash = passwords.hash(password).await.map_err(AccountError::Hash)?;
    if !store.set_password(name, &hash, now, &event(now, by, "user.passwd", name)).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(())
}

/// Disables a user: no login, no refresh, every session revoked; devices and their lease keys
/// stay, so [`enable_user`] brings the same devices back.
///
/// # Errors
/// [`AccountError::NoSuchUser`], storage errors.
pub async fn disable_user(store: &Arc<dyn Store>, by: &str, name: &str, now: u64) -> Result<(), AccountError> {
    if !store.disable_user(name, now, &event(now, by, "user.disable", name)).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(())
}

/// Enables a disabled user again (enabling an enabled user changes nothing).
///
/// # Errors
/// [`AccountError::NoSuchUser`], storage errors.
pub async fn enable_user(store: &Arc<dyn Store>, by: &str, name: &str, now: u64) -> Result<(), AccountError> {
    if !store.enable_user(name, &event(now, by, "user.enable", name)).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(())
}

/// Removes a user and everything that acts as them: sessions, devices with their device
/// secrets and lease keys (so every copy of their synced data is readable at most until its
/// lease ends), held ids, directives, idempotency records, login failures. The documents and
/// attachments they own stay, owned by the name: a user added later under the same name
/// owns them again.
///
/// # Errors
/// [`AccountError::NoSuchUser`], storage errors.
pub async fn remove_user(store: &Arc<dyn Store>, by: &str, name: &str, now: u64) -> Result<(), AccountError> {
    if !store.remove_user(name, &event(now, by, "user.remove", name)).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(())
}

/// Links an OpenID Connect identity (issuer, `sub`) to a user: signing in through that
/// provider as that identity is then signing in as the user.
///
/// # Errors
/// [`AccountError::NoSuchUser`]; [`AccountError::IdentityTaken`] when the identity is
/// linked to another user (unlink it first).
pub async fn link_identity(
    store: &Arc<dyn Store>,
    by: &str,
    name: &str,
    issuer: &str,
    subject: &str,
    now: u64,
) -> Result<(), AccountError> {
    check_existing_name(name)?;
    if issuer.is_empty() || subject.is_empty() || subject.chars().any(char::is_control) {
        return Err(AccountError::BadIdentity);
    }
    let audit = event(now, by, "user.link", name).with("issuer", issuer).with("subject", subject);
    match store.link_oidc(issuer, subject, name, now, &audit).await? {
        crate::storage::LinkOutcome::Linked => Ok(()),
        crate::storage::LinkOutcome::NoSuchUser => Err(AccountError::NoSuchUser(name.to_owned())),
        crate::storage::LinkOutcome::LinkedToOther(other) => Err(AccountError::IdentityTaken(other)),
    }
}

/// Removes the link of an identity; its user's sessions stay (revoke them with `user
/// disable` or `device revoke` if the identity must stop working at once).
///
/// # Errors
/// [`AccountError::NoSuchIdentity`] when it was not linked.
pub async fn unlink_identity(
    store: &Arc<dyn Store>,
    by: &str,
    issuer: &str,
    subject: &str,
    now: u64,
) -> Result<(), AccountError> {
    let user = store.oidc_user(issuer, subject).await?.unwrap_or_default();
    let audit = event(now, by, "user.unlink", &user).with("issuer", issuer).with("subject", subject);
    if store.unlink_oidc(issuer, subject, &audit).await? { Ok(()) } else { Err(AccountError::NoSuchIdentity) }
}

/// Enrolls a user in multi-factor login with a fresh 20-byte TOTP secret, sealed in the store
/// ([`Purpose::TotpSecret`], owner: the user name), replacing any earlier one (whose codes
/// stop working at once). Returns the `otpauth://` URI for the user's authenticator app; from
/// then on the user's logins need a code. Sessions stay.
///
/// # Errors
/// [`AccountError::NoSuchUser`] (nothing stored), storage errors.
///
/// # Security
/// The URI carries the secret: show it to the user being enrolled, never log it.
pub async fn enroll_totp(
    store: &Arc<dyn Store>,
    by: &str,
    sealer: &Sealer,
    name: &str,
    now: u64,
) -> Result<Zeroizing<String>, AccountError> {
    let mut bytes = Zeroizing::new([0u8; TOTP_SECRET_LEN]);
    aws_lc_rs::rand::fill(&mut bytes[..]).expect("the OS random source works");
    let secret = TotpSecret::from_bytes(bytes);
    let sealed = sealer.seal(Purpose::TotpSecret, name, secret.expose_secret());
    // The record says that a secret was enrolled, never the secret.
    if !store.enroll_totp(name, &sealed, &event(now, by, "user.mfa.enroll", name)).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(otpauth_uri(TOTP_ISSUER, name, &secret))
}

/// Ends a user's multi-factor login: the secret is forgotten and the password alone logs in
/// again (disabling a user who is not enrolled changes nothing).
///
/// # Errors
/// [`AccountError::NoSuchUser`], storage errors.
pub async fn disable_totp(store: &Arc<dyn Store>, by: &str, name: &str, now: u64) -> Result<(), AccountError> {
    if !store.disable_totp(name, &event(now, by, "user.mfa.disable", name)).await? {
        return Err(AccountError::NoSuchUser(name.into()));
    }
    Ok(())
}
