//! Devices on PostgreSQL: the same rows and rules as `sqlite/devices.rs`, shared by every
//! server instance. A login's device step is one conditional `UPDATE` (or an `INSERT`) in the
//! transaction that makes the session, so the row lock it takes orders it against a
//! concurrent wipe, logout or takeover of the same device: whichever commits second sees the
//! first's effect, and a login whose condition no longer holds changes nothing and reports
//! it. Locks are taken user row first (a login with a TOTP code uses up its step there, and
//! `user remove` takes it first too), then the device row, then sessions, then refresh tokens,
//! the order of every other path (a refresh spend locks its session, then its tokens), so no two paths
//! wait on each other in a cycle.

use fieldvault_core::protocol::DirectiveKind;
use fieldvault_core::protocol::auth::DeviceReason;
use sqlx::{PgConnection, PgPool, Row};

use crate::storage::{
    DeviceState, LeaseRecord, LoginDevice, LoginOutcome, NewDirective, NewLogin, StoreError, lease, retirement,
    to_column,
};

/// Version 3 (see `sqlite/devices.rs`), one statement each.
pub(super) const SCHEMA_V3: &[&str] = &[
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS secret_sealed BYTEA NULL",
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS lease_id TEXT NULL",
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS lease_sealed BYTEA NULL",
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS lease_expires_at BIGINT NULL",
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS retired_at BIGINT NULL",
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS retired_reason TEXT NULL",
    "UPDATE devices d SET lease_id = s.lease_id, lease_sealed = s.lease_sealed, lease_expires_at = s.lease_expires_at
     FROM (SELECT DISTINCT ON (device_id) device_id, lease_id, lease_sealed, lease_expires_at FROM sessions
           WHERE lease_id IS NOT NULL AND lease_sealed IS NOT NULL ORDER BY device_id, created_at DESC, id) s
     WHERE s.device_id = d.id",
    "UPDATE devices d SET retired_reason = 'wiped', lease_id = NULL, lease_sealed = NULL, lease_expires_at = NULL,
         retired_at = (SELECT min(x.issued_at) FROM directives x WHERE x.device_id = d.id AND x.kind = 'wipe')
     WHERE EXISTS (SELECT 1 FROM directives x WHERE x.device_id = d.id AND x.kind = 'wipe')",
    "ALTER TABLE sessions DROP COLUMN IF EXISTS lease_id, DROP COLUMN IF EXISTS lease_sealed,
         DROP COLUMN IF EXISTS lease_issued_at, DROP COLUMN IF EXISTS lease_expires_at",
    "CREATE INDEX IF NOT EXISTS sessions_device_id ON sessions (device_id)",
    "CREATE INDEX IF NOT EXISTS devices_user_name ON devices (user_name)",
];

pub(super) async fn device(pool: &PgPool, id: &str) -> Result<Option<DeviceState>, StoreError> {
    let row = sqlx::query(
        "SELECT id, user_name, secret_sealed, lease_id, lease_sealed, lease_expires_at, retired_reason,
             COALESCE((SELECT array_agg(x.token ORDER BY x.issued_at, x.jti) FROM directives x
                       WHERE x.device_id = devices.id AND x.acked_at IS NULL), ARRAY[]::text[]) AS directives
         FROM devices WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(DeviceState {
        id: r.try_get("id")?,
        user: r.try_get("user_name")?,
        secret_sealed: r.try_get("secret_sealed")?,
        lease: lease(r.try_get("lease_id")?, r.try_get("lease_sealed")?, r.try_get("lease_expires_at")?)?,
        retired: retirement(r.try_get("retired_reason")?)?,
        directives: r.try_get("directives")?,
    }))
}

/// Revokes every live session of a device and spends their refresh tokens.
pub(super) async fn revoke_device_sessions(
    conn: &mut PgConnection,
    device_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    super::sessions::revoke_sessions_where(conn, super::sessions::SessionsOf::Device, device_id, now).await.map(|_| ())
}

async fn insert_device(
    conn: &mut PgConnection,
    l: &NewLogin,
    id: &str,
    secret_sealed: &[u8],
    lease: &LeaseRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO devices (id, user_name, name, created_at, last_seen_at, secret_sealed,
             lease_id, lease_sealed, lease_expires_at)
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(&l.user)
    .bind(&l.device_name)
    .bind(to_column(l.now, "devices.created_at")?)
    .bind(secret_sealed)
    .bind(&lease.id)
    .bind(&lease.key_sealed[..])
    .bind(to_column(lease.expires_at, "devices.lease_expires_at")?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn login(tx: &mut PgConnection, l: &NewLogin) -> Result<LoginOutcome, StoreError> {
    let now = to_column(l.now, "sessions.created_at")?;
    // First, so that a code used meanwhile leaves nothing of the login behind.
    if let Some(code) = &l.totp
        && !super::users::use_totp_step(&mut *tx, &l.user, code).await?
    {
        return Ok(LoginOutcome::CodeUsed);
    }
    match &l.device {
        LoginDevice::New { id, secret_sealed, lease } => insert_device(&mut *tx, l, id, secret_sealed, lease).await?,
        LoginDevice::Continue { id, expected_lease, lease } => {
            let continued = sqlx::query(
                "UPDATE devices SET name = $3, last_seen_at = $4, lease_id = $5, lease_sealed = $6,
                     lease_expires_at = $7
                 WHERE id = $1 AND user_name = $2 AND retired_at IS NULL AND lease_id IS NOT DISTINCT FROM $8",
            )
            .bind(id)
            .bind(&l.user)
            .bind(&l.device_name)
            .bind(now)
            .bind(&lease.id)
            .bind(&lease.key_sealed[..])
            .bind(to_column(lease.expires_at, "devices.lease_expires_at")?)
            .bind(expected_lease)
            .execute(&mut *tx)
            .await?;
            if continued.rows_affected() != 1 {
                return Ok(LoginOutcome::DeviceChanged);
            }
            revoke_device_sessions(&mut *tx, id, now).await?;
        }
        LoginDevice::TakeOver { id, secret_sealed, from, lease } => {
            let released = sqlx::query(
                "UPDATE devices SET lease_id = NULL, lease_sealed = NULL, lease_expires_at = NULL
                 WHERE id = $1 AND user_name = $2 AND retired_reason = 'rollback' AND lease_id = $3",
            )
            .bind(from)
            .bind(&l.user)
            .bind(&lease.id)
            .execute(&mut *tx)
            .await?;
            if released.rows_affected() != 1 {
                return Ok(LoginOutcome::DeviceChanged);
            }
            insert_device(&mut *tx, l, id, secret_sealed, lease).await?;
        }
    }
    sqlx::query(
        "INSERT INTO sessions (id, key_id, user_name, device_id, secret_sealed, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&l.session_id)
    .bind(&l.key_id)
    .bind(&l.user)
    .bind(l.device.id())
    .bind(&l.secret_sealed[..])
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)")
        .bind(&l.refresh_hash[..])
        .bind(&l.session_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(LoginOutcome::Recorded)
}

/// Retires a device inside a transaction (see [`crate::storage::Store::retire_device`]). A wipe is
/// never turned back into a plain retirement.
pub(super) async fn retire_in(
    conn: &mut PgConnection,
    device_id: &str,
    why: DeviceReason,
    now: i64,
) -> Result<(), StoreError> {
    let retire = match why {
        DeviceReason::Rollback => sqlx::query(
            "UPDATE devices SET retired_at = $2, retired_reason = 'rollback' WHERE id = $1 AND retired_at IS NULL",
        )
        .bind(device_id)
        .bind(now),
        _ => sqlx::query(
            "UPDATE devices SET retired_at = COALESCE(retired_at, $2),
                 retired_reason = CASE WHEN retired_reason = 'wiped' THEN 'wiped' ELSE $3 END,
                 lease_id = NULL, lease_sealed = NULL, lease_expires_at = NULL
             WHERE id = $1",
        )
        .bind(device_id)
        .bind(now)
        .bind(why.as_str()),
    };
    retire.execute(&mut *conn).await?;
    revoke_device_sessions(conn, device_id, now).await
}

pub(super) async fn renew_lease(
    pool: &PgPool,
    device_id: &str,
    expires_at: u64,
    now: u64,
) -> Result<Option<LeaseRecord>, StoreError> {
    let row = sqlx::query(
        "UPDATE devices SET lease_expires_at = $2, last_seen_at = $3
         WHERE id = $1 AND retired_at IS NULL AND lease_id IS NOT NULL AND lease_sealed IS NOT NULL
         RETURNING lease_id, lease_sealed, lease_expires_at",
    )
    .bind(device_id)
    .bind(to_column(expires_at, "devices.lease_expires_at")?)
    .bind(to_column(now, "devices.last_seen_at")?)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    lease(r.try_get("lease_id")?, r.try_get("lease_sealed")?, r.try_get("lease_expires_at")?)
}

pub(super) async fn retire(pool: &PgPool, device_id: &str, reason: DeviceReason, now: u64) -> Result<(), StoreError> {
    let now = to_column(now, "devices.retired_at")?;
    let mut tx = pool.begin().await?;
    retire_in(&mut tx, device_id, reason, now).await?;
    Ok(tx.commit().await?)
}

pub(super) async fn add_directive(tx: &mut PgConnection, d: &NewDirective) -> Result<bool, StoreError> {
    let now = to_column(d.now, "directives.issued_at")?;
    // The device row is locked first, as by every path that changes a device.
    let exists = sqlx::query("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE")
        .bind(&d.device_id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if !exists {
        return Ok(false);
    }
    sqlx::query("INSERT INTO directives (jti, device_id, kind, token, issued_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&d.jti)
        .bind(&d.device_id)
        .bind(d.kind.as_str())
        .bind(&d.token)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    match d.kind {
        DirectiveKind::Wipe => retire_in(&mut *tx, &d.device_id, DeviceReason::Wiped, now).await?,
        DirectiveKind::Revoke => revoke_device_sessions(&mut *tx, &d.device_id, now).await?,
    }
    Ok(true)
}

pub(super) async fn ack_directives(
    tx: &mut PgConnection,
    device_id: &str,
    jtis: &[String],
    now: u64,
) -> Result<u64, StoreError> {
    let r =
        sqlx::query("UPDATE directives SET acked_at = $3 WHERE device_id = $1 AND jti = ANY($2) AND acked_at IS NULL")
            .bind(device_id)
            .bind(jtis)
            .bind(to_column(now, "directives.acked_at")?)
            .execute(&mut *tx)
            .await?;
    Ok(r.rows_affected())
}
