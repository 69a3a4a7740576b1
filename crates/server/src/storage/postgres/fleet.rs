//! The console's views of devices and sessions on PostgreSQL (see
//! [`crate::storage::fleet`]): the same rows and rules as `sqlite/fleet.rs`.

use sqlx::{PgConnection, PgPool, Row};

use crate::storage::{
    DIRECTIVES_PER_DEVICE, DeviceRecord, DirectiveRecord, Page, SessionSummary, Sessions, StoreError, from_column,
    retirement, to_column,
};

/// Version 9 (see `sqlite/fleet.rs`), one statement each.
pub(super) const SCHEMA_V9: &[&str] = &[
    "ALTER TABLE directives ADD COLUMN IF NOT EXISTS sent_at BIGINT NULL",
    "CREATE INDEX IF NOT EXISTS directives_by_device ON directives (device_id, issued_at)",
    "CREATE INDEX IF NOT EXISTS sessions_by_user_created ON sessions (user_name, created_at)",
];

fn optional_time(t: Option<i64>, what: &'static str) -> Result<Option<u64>, StoreError> {
    t.map(|t| from_column(t, what)).transpose()
}

/// The devices of `user` (None: of every user), or the one with `id`, in `page` (None: all
/// of them), each with its directives (see `sqlite/fleet.rs`): two statements in all.
pub(super) async fn devices(
    pool: &PgPool,
    user: Option<&str>,
    id: Option<&str>,
    page: Option<Page>,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let (limit, offset) = match page {
        Some(p) => (Some(i64::from(p.limit)), to_column(p.offset, "page offset")?),
        None => (None, 0),
    };
    let rows = sqlx::query(
        "SELECT d.id, d.user_name, d.name, d.created_at, d.last_seen_at,
            (SELECT s.id FROM sessions s WHERE s.device_id = d.id ORDER BY s.created_at DESC, s.id LIMIT 1),
            EXISTS (SELECT 1 FROM sessions s WHERE s.device_id = d.id AND s.revoked_at IS NULL),
            d.retired_reason, CASE WHEN d.lease_id IS NULL THEN NULL ELSE d.lease_expires_at END
         FROM devices d WHERE ($1::text IS NULL OR d.user_name = $1) AND ($2::text IS NULL OR d.id = $2)
         ORDER BY d.user_name, d.created_at, d.id LIMIT $3 OFFSET $4",
    )
    .bind(user)
    .bind(id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let lease_expires_at: Option<i64> = r.try_get(8)?;
        out.push(DeviceRecord {
            id: r.try_get(0)?,
            user: r.try_get(1)?,
            name: r.try_get(2)?,
            created_at: from_column(r.try_get(3)?, "devices.created_at")?,
            last_seen_at: from_column(r.try_get(4)?, "devices.last_seen_at")?,
            session_id: r.try_get(5)?,
            active: r.try_get(6)?,
            retired: retirement(r.try_get(7)?)?,
            lease_expires_at: optional_time(lease_expires_at, "devices.lease_expires_at")?,
            directives: Vec::new(),
        });
    }
    if out.is_empty() {
        return Ok(out);
    }
    let ids: Vec<&str> = out.iter().map(|d| d.id.as_str()).collect();
    // Per device: every pending one and the newest acknowledged while fewer than the limit.
    let listed = sqlx::query(
        "SELECT device_id, jti, kind, issued_at, sent_at, acked_at FROM (
             SELECT x.*, row_number() OVER (PARTITION BY device_id
                 ORDER BY acked_at IS NULL DESC, issued_at DESC, jti DESC) AS n
             FROM directives x WHERE device_id = ANY($1)) ranked
         WHERE acked_at IS NULL OR n <= $2
         ORDER BY device_id, issued_at DESC, jti DESC",
    )
    .bind(&ids)
    .bind(i64::from(DIRECTIVES_PER_DEVICE))
    .fetch_all(pool)
    .await?;
    let mut by_device: std::collections::HashMap<String, Vec<DirectiveRecord>> = std::collections::HashMap::new();
    for r in listed {
        by_device.entry(r.try_get(0)?).or_default().push(DirectiveRecord {
            jti: r.try_get(1)?,
            kind: r.try_get(2)?,
            issued_at: from_column(r.try_get(3)?, "directives.issued_at")?,
            sent_at: optional_time(r.try_get(4)?, "directives.sent_at")?,
            acked_at: optional_time(r.try_get(5)?, "directives.acked_at")?,
        });
    }
    for d in &mut out {
        d.directives = by_device.remove(&d.id).unwrap_or_default();
    }
    Ok(out)
}

pub(super) async fn mark_sent(pool: &PgPool, device_id: &str, tokens: &[String], now: u64) -> Result<(), StoreError> {
    sqlx::query("UPDATE directives SET sent_at = $3 WHERE device_id = $1 AND token = ANY($2) AND sent_at IS NULL")
        .bind(device_id)
        .bind(tokens)
        .bind(to_column(now, "directives.sent_at")?)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn sessions_page(pool: &PgPool, user: &str, page: Page) -> Result<Vec<SessionSummary>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.id, s.device_id, COALESCE(d.name, ''), s.created_at,
            COALESCE((SELECT max(t.issued_at) FROM refresh_tokens t WHERE t.session_id = s.id), s.created_at),
            s.revoked_at
         FROM sessions s LEFT JOIN devices d ON d.id = s.device_id
         WHERE s.user_name = $1 ORDER BY s.created_at DESC, s.id DESC LIMIT $2 OFFSET $3",
    )
    .bind(user)
    .bind(i64::from(page.limit))
    .bind(to_column(page.offset, "page offset")?)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(SessionSummary {
            id: r.try_get(0)?,
            device_id: r.try_get(1)?,
            device_name: r.try_get(2)?,
            created_at: from_column(r.try_get(3)?, "sessions.created_at")?,
            refreshed_at: from_column(r.try_get(4)?, "refresh_tokens.issued_at")?,
            revoked_at: optional_time(r.try_get(5)?, "sessions.revoked_at")?,
        });
    }
    Ok(out)
}

/// Revokes `which` of `user`'s live sessions inside `tx`, session rows first (the lock order
/// of every path: sessions, then refresh tokens); returns how many were live.
pub(super) async fn revoke_sessions(
    tx: &mut PgConnection,
    user: &str,
    which: Sessions<'_>,
    now: u64,
) -> Result<u64, StoreError> {
    let now = to_column(now, "sessions.revoked_at")?;
    let Sessions::One(id) = which else { return super::sessions::revoke_user_in(tx, user, now).await };
    let revoked =
        sqlx::query("UPDATE sessions SET revoked_at = $3 WHERE id = $1 AND user_name = $2 AND revoked_at IS NULL")
            .bind(id)
            .bind(user)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if revoked > 0 {
        sqlx::query("UPDATE refresh_tokens SET spent_at = $2 WHERE session_id = $1 AND spent_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    Ok(revoked)
}
