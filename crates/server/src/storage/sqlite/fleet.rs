//! The console's views of devices and sessions on the SQLCipher store (see
//! [`crate::storage::fleet`]).

use rusqlite::{Connection, Transaction, params};

use super::sessions::{revoke_in, revoke_user_in};
use crate::storage::{
    DIRECTIVES_PER_DEVICE, DeviceRecord, DirectiveRecord, Page, SessionSummary, Sessions, StoreError, from_column,
    retirement, to_column,
};

/// Version 9: when a directive first rode an answer; indexes for the console's pages.
pub(super) const SCHEMA_V9: &str = "
    ALTER TABLE directives ADD COLUMN sent_at INTEGER;
    CREATE INDEX directives_by_device ON directives (device_id, issued_at);
    CREATE INDEX sessions_by_user_created ON sessions (user_name, created_at);
";

fn optional_time(t: Option<i64>, what: &'static str) -> Result<Option<u64>, StoreError> {
    t.map(|t| from_column(t, what)).transpose()
}

/// A device's directives: every one pending, then the newest acknowledged while fewer than
/// [`DIRECTIVES_PER_DEVICE`] are listed; newest first.
fn directives(c: &Connection, device_id: &str) -> Result<Vec<DirectiveRecord>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT jti, kind, issued_at, sent_at, acked_at FROM directives WHERE device_id = ?1
         ORDER BY acked_at IS NULL DESC, issued_at DESC, jti DESC",
    )?;
    let mut rows = statement.query([device_id])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let acked_at: Option<i64> = r.get(4)?;
        if acked_at.is_some() && out.len() >= DIRECTIVES_PER_DEVICE as usize {
            break;
        }
        out.push(DirectiveRecord {
            jti: r.get(0)?,
            kind: r.get(1)?,
            issued_at: from_column(r.get(2)?, "directives.issued_at")?,
            sent_at: optional_time(r.get(3)?, "directives.sent_at")?,
            acked_at: optional_time(acked_at, "directives.acked_at")?,
        });
    }
    out.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then_with(|| b.jti.cmp(&a.jti)));
    Ok(out)
}

/// The devices of `user` (None: of every user), or the one with `id`, in `page` (None: all
/// of them); see [`DeviceFilter::columns`].
pub(super) fn devices(
    c: &mut Connection,
    user: Option<&str>,
    id: Option<&str>,
    page: Option<Page>,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let (limit, offset) = match page {
        Some(p) => (i64::from(p.limit), to_column(p.offset, "page offset")?),
        None => (-1, 0),
    };
    type Row = (String, String, String, i64, i64, Option<String>, bool, Option<String>, Option<i64>);
    let rows: Vec<Row> = c
        .prepare_cached(
            "SELECT d.id, d.user_name, d.name, d.created_at, d.last_seen_at,
                (SELECT s.id FROM sessions s WHERE s.device_id = d.id ORDER BY s.created_at DESC, s.id LIMIT 1),
                EXISTS (SELECT 1 FROM sessions s WHERE s.device_id = d.id AND s.revoked_at IS NULL),
                d.retired_reason, CASE WHEN d.lease_id IS NULL THEN NULL ELSE d.lease_expires_at END
             FROM devices d WHERE (?1 IS NULL OR d.user_name = ?1) AND (?2 IS NULL OR d.id = ?2)
             ORDER BY d.user_name, d.created_at, d.id LIMIT ?3 OFFSET ?4",
        )?
        .query_map(params![user, id, limit, offset], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, user, name, created_at, last_seen_at, session_id, active, retired, lease_expires_at) in rows {
        out.push(DeviceRecord {
            directives: directives(c, &id)?,
            id,
            user,
            name,
            created_at: from_column(created_at, "devices.created_at")?,
            last_seen_at: from_column(last_seen_at, "devices.last_seen_at")?,
            session_id,
            active,
            retired: retirement(retired)?,
            lease_expires_at: optional_time(lease_expires_at, "devices.lease_expires_at")?,
        });
    }
    Ok(out)
}

pub(super) fn mark_sent(c: &mut Connection, device_id: &str, tokens: &[String], now: u64) -> Result<(), StoreError> {
    let now = to_column(now, "directives.sent_at")?;
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut statement = tx.prepare_cached(
            "UPDATE directives SET sent_at = ?3 WHERE device_id = ?1 AND token = ?2 AND sent_at IS NULL",
        )?;
        for token in tokens {
            statement.execute(params![device_id, token, now])?;
        }
    }
    Ok(tx.commit()?)
}

pub(super) fn sessions_page(c: &mut Connection, user: &str, page: Page) -> Result<Vec<SessionSummary>, StoreError> {
    let mut statement = c.prepare_cached(
        "SELECT s.id, s.device_id, COALESCE(d.name, ''), s.created_at,
            COALESCE((SELECT max(t.issued_at) FROM refresh_tokens t WHERE t.session_id = s.id), s.created_at),
            s.revoked_at
         FROM sessions s LEFT JOIN devices d ON d.id = s.device_id
         WHERE s.user_name = ?1 ORDER BY s.created_at DESC, s.id DESC LIMIT ?2 OFFSET ?3",
    )?;
    let offset = to_column(page.offset, "page offset")?;
    let rows = statement.query_map(params![user, page.limit, offset], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, device_id, device_name, created_at, refreshed_at, revoked_at): (
            String,
            String,
            String,
            i64,
            i64,
            Option<i64>,
        ) = row?;
        out.push(SessionSummary {
            id,
            device_id,
            device_name,
            created_at: from_column(created_at, "sessions.created_at")?,
            refreshed_at: from_column(refreshed_at, "refresh_tokens.issued_at")?,
            revoked_at: optional_time(revoked_at, "sessions.revoked_at")?,
        });
    }
    Ok(out)
}

pub(super) fn revoke_sessions(
    tx: &Transaction<'_>,
    user: &str,
    which: Sessions<'_>,
    now: u64,
) -> Result<u64, StoreError> {
    let now = to_column(now, "sessions.revoked_at")?;
    let Sessions::One(id) = which else { return Ok(revoke_user_in(tx, user, now)?) };
    let live: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND user_name = ?2 AND revoked_at IS NULL)",
        )?
        .query_row(params![id, user], |r| r.get(0))?;
    if live {
        revoke_in(tx, id, now)?;
    }
    Ok(u64::from(live))
}
