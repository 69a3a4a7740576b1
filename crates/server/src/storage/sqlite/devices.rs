//! Devices on the SQLCipher store: a device outlives its sessions (SPEC section 5). Each
//! device row holds its sealed device secret and its one lease (sealed key, expiry); a login
//! makes, continues or takes over a device in the transaction that makes its session, and
//! retiring a device (wipe, plain logout, rollback) revokes its sessions in the same
//! transaction. Every call runs on the store's one connection in a `BEGIN IMMEDIATE`
//! transaction, so each is atomic against every other.

use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::protocol::auth::DeviceReason;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::storage::{
    DeviceState, LeaseRecord, LoginDevice, LoginOutcome, NewDirective, NewLogin, StoreError, lease, retirement,
    to_column,
};

/// Version 3: devices hold their secret and their lease (moved from the newest session that
/// had one), and why they were retired; sessions no longer hold leases. A device that had a
/// wipe directive is recorded as wiped.
pub(super) const SCHEMA_V3: &str = "
    ALTER TABLE devices ADD COLUMN secret_sealed BLOB;
    ALTER TABLE devices ADD COLUMN lease_id TEXT;
    ALTER TABLE devices ADD COLUMN lease_sealed BLOB;
    ALTER TABLE devices ADD COLUMN lease_expires_at INTEGER;
    ALTER TABLE devices ADD COLUMN retired_at INTEGER;
    ALTER TABLE devices ADD COLUMN retired_reason TEXT;
    UPDATE devices SET (lease_id, lease_sealed, lease_expires_at) = (
        SELECT s.lease_id, s.lease_sealed, s.lease_expires_at FROM sessions s
        WHERE s.device_id = devices.id AND s.lease_id IS NOT NULL AND s.lease_sealed IS NOT NULL
        ORDER BY s.created_at DESC, s.id LIMIT 1);
    UPDATE devices SET retired_reason = 'wiped', lease_id = NULL, lease_sealed = NULL, lease_expires_at = NULL,
        retired_at = (SELECT min(x.issued_at) FROM directives x WHERE x.device_id = devices.id AND x.kind = 'wipe')
        WHERE EXISTS (SELECT 1 FROM directives x WHERE x.device_id = devices.id AND x.kind = 'wipe');
    ALTER TABLE sessions DROP COLUMN lease_id;
    ALTER TABLE sessions DROP COLUMN lease_sealed;
    ALTER TABLE sessions DROP COLUMN lease_issued_at;
    ALTER TABLE sessions DROP COLUMN lease_expires_at;
    CREATE INDEX sessions_by_device ON sessions (device_id);
    CREATE INDEX devices_by_user ON devices (user_name);
";

/// A device row's lease columns: id, sealed key, expiry.
type LeaseColumns = (Option<String>, Option<Vec<u8>>, Option<i64>);

/// The device's directives not yet acknowledged, oldest first.
pub(super) fn pending_directives(c: &Connection, device_id: &str) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached("SELECT token FROM directives WHERE device_id = ?1 AND acked_at IS NULL ORDER BY issued_at, jti")?
        .query_map([device_id], |r| r.get(0))?
        .collect()
}

pub(super) fn device(c: &mut Connection, id: &str) -> Result<Option<DeviceState>, StoreError> {
    let tx = c.transaction()?;
    type Row = (String, String, Option<Vec<u8>>, Option<String>, Option<Vec<u8>>, Option<i64>, Option<String>);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT id, user_name, secret_sealed, lease_id, lease_sealed, lease_expires_at, retired_reason
             FROM devices WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .optional()?;
    let Some((id, user, secret_sealed, lease_id, lease_sealed, lease_expires_at, retired)) = row else {
        return Ok(None);
    };
    let directives = pending_directives(&tx, &id)?;
    Ok(Some(DeviceState {
        lease: lease(lease_id, lease_sealed, lease_expires_at)?,
        retired: retirement(retired)?,
        id,
        user,
        secret_sealed,
        directives,
    }))
}

/// Revokes every live session of a device and spends their refresh tokens.
pub(super) fn revoke_device_sessions(tx: &Transaction<'_>, device_id: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE refresh_tokens SET spent_at = ?2
         WHERE spent_at IS NULL AND session_id IN (SELECT id FROM sessions WHERE device_id = ?1)",
        params![device_id, now],
    )?;
    tx.execute(
        "UPDATE sessions SET revoked_at = ?2 WHERE device_id = ?1 AND revoked_at IS NULL",
        params![device_id, now],
    )?;
    Ok(())
}

fn insert_device(
    tx: &Transaction<'_>,
    l: &NewLogin,
    id: &str,
    secret_sealed: &[u8],
    lease: &LeaseRecord,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO devices (id, user_name, name, created_at, last_seen_at, secret_sealed,
             lease_id, lease_sealed, lease_expires_at)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8)",
        params![
            id,
            l.user,
            l.device_name,
            to_column(l.now, "devices.created_at")?,
            secret_sealed,
            lease.id,
            lease.key_sealed,
            to_column(lease.expires_at, "devices.lease_expires_at")?
        ],
    )?;
    Ok(())
}

pub(super) fn login(tx: &Transaction<'_>, l: &NewLogin) -> Result<LoginOutcome, StoreError> {
    let now = to_column(l.now, "sessions.created_at")?;
    // First, so that a code used meanwhile leaves nothing of the login behind.
    if let Some(code) = &l.totp
        && !super::users::use_totp_step(tx, &l.user, code)?
    {
        return Ok(LoginOutcome::CodeUsed);
    }
    match &l.device {
        LoginDevice::New { id, secret_sealed, lease } => insert_device(tx, l, id, secret_sealed, lease)?,
        LoginDevice::Continue { id, expected_lease, lease } => {
            let continued = tx.execute(
                "UPDATE devices SET name = ?3, last_seen_at = ?4, lease_id = ?5, lease_sealed = ?6,
                     lease_expires_at = ?7
                 WHERE id = ?1 AND user_name = ?2 AND retired_at IS NULL AND lease_id IS ?8",
                params![
                    id,
                    l.user,
                    l.device_name,
                    now,
                    lease.id,
                    lease.key_sealed,
                    to_column(lease.expires_at, "devices.lease_expires_at")?,
                    expected_lease
                ],
            )?;
            if continued != 1 {
                return Ok(LoginOutcome::DeviceChanged);
            }
            revoke_device_sessions(tx, id, now)?;
        }
        LoginDevice::TakeOver { id, secret_sealed, from, lease } => {
            let released = tx.execute(
                "UPDATE devices SET lease_id = NULL, lease_sealed = NULL, lease_expires_at = NULL
                 WHERE id = ?1 AND user_name = ?2 AND retired_reason = 'rollback' AND lease_id = ?3",
                params![from, l.user, lease.id],
            )?;
            if released != 1 {
                return Ok(LoginOutcome::DeviceChanged);
            }
            insert_device(tx, l, id, secret_sealed, lease)?;
        }
    }
    tx.execute(
        "INSERT INTO sessions (id, key_id, user_name, device_id, secret_sealed, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![l.session_id, l.key_id, l.user, l.device.id(), l.secret_sealed, now],
    )?;
    tx.execute(
        "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, ?3)",
        params![&l.refresh_hash[..], l.session_id, now],
    )?;
    Ok(LoginOutcome::Recorded)
}

/// Retires a device inside `tx` (see [`crate::storage::Store::retire_device`]). A wipe is never turned
/// back into a plain retirement.
pub(super) fn retire_in(tx: &Transaction<'_>, device_id: &str, why: DeviceReason, now: i64) -> rusqlite::Result<()> {
    match why {
        DeviceReason::Rollback => {
            tx.execute(
                "UPDATE devices SET retired_at = ?2, retired_reason = 'rollback' WHERE id = ?1 AND retired_at IS NULL",
                params![device_id, now],
            )?;
        }
        _ => {
            tx.execute(
                "UPDATE devices SET retired_at = COALESCE(retired_at, ?2),
                     retired_reason = CASE WHEN retired_reason = 'wiped' THEN 'wiped' ELSE ?3 END,
                     lease_id = NULL, lease_sealed = NULL, lease_expires_at = NULL
                 WHERE id = ?1",
                params![device_id, now, why.as_str()],
            )?;
        }
    }
    revoke_device_sessions(tx, device_id, now)
}

pub(super) fn renew_lease(
    c: &mut Connection,
    device_id: &str,
    expires_at: u64,
    now: u64,
) -> Result<Option<LeaseRecord>, StoreError> {
    let row: Option<LeaseColumns> = c
        .prepare_cached(
            "UPDATE devices SET lease_expires_at = ?2, last_seen_at = ?3
             WHERE id = ?1 AND retired_at IS NULL AND lease_id IS NOT NULL AND lease_sealed IS NOT NULL
             RETURNING lease_id, lease_sealed, lease_expires_at",
        )?
        .query_row(
            params![
                device_id,
                to_column(expires_at, "devices.lease_expires_at")?,
                to_column(now, "devices.last_seen_at")?
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.map(|(id, key, expires)| lease(id, key, expires)).transpose()?.flatten())
}

pub(super) fn retire(c: &mut Connection, device_id: &str, why: DeviceReason, now: u64) -> Result<(), StoreError> {
    let now = to_column(now, "devices.retired_at")?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    retire_in(&tx, device_id, why, now)?;
    Ok(tx.commit()?)
}

pub(super) fn add_directive(tx: &Transaction<'_>, d: &NewDirective) -> Result<bool, StoreError> {
    let now = to_column(d.now, "directives.issued_at")?;
    let exists: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1)", [&d.device_id], |r| r.get(0))?;
    if !exists {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO directives (jti, device_id, kind, token, issued_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![d.jti, d.device_id, d.kind.as_str(), d.token, now],
    )?;
    match d.kind {
        DirectiveKind::Wipe => retire_in(tx, &d.device_id, DeviceReason::Wiped, now)?,
        DirectiveKind::Revoke => revoke_device_sessions(tx, &d.device_id, now)?,
    }
    Ok(true)
}

pub(super) fn ack_directives(
    tx: &Transaction<'_>,
    device_id: &str,
    jtis: &[String],
    now: u64,
) -> Result<u64, StoreError> {
    let now = to_column(now, "directives.acked_at")?;
    let mut n = 0;
    for jti in jtis {
        n += tx.execute(
            "UPDATE directives SET acked_at = ?3 WHERE jti = ?1 AND device_id = ?2 AND acked_at IS NULL",
            params![jti, device_id, now],
        )? as u64;
    }
    Ok(n)
}
