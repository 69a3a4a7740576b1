//! Admission on PostgreSQL: a batch of request nonces in one multi-row `INSERT` that reads
//! the revocation epoch in the same statement (one snapshot), sent again as `INSERT .. ON
//! CONFLICT DO NOTHING RETURNING` when it holds a replay, and a session read together with
//! the epoch (`crate::storage::admission`).

use sqlx::{PgPool, Row};

use crate::storage::admission::{ClaimedNonces, NonceClaim, SessionRead};
use crate::storage::{StoreError, from_column, to_column};

/// Schema version 10: the revocation epoch and the triggers that raise it, one row each
/// (`WHEN` keeps an update that changes nothing a cached session holds, such as recording
/// when directives were sent, from raising it).
pub(super) const SCHEMA_V10: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS revocation_epoch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL
    )",
    "INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0) ON CONFLICT DO NOTHING",
    "CREATE OR REPLACE FUNCTION fv_raise_revocation_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
         UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
         RETURN NULL;
     END $$",
    "CREATE OR REPLACE TRIGGER sessions_changed_epoch AFTER UPDATE ON sessions FOR EACH ROW
        WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.key_id IS DISTINCT FROM NEW.key_id
              OR OLD.user_name IS DISTINCT FROM NEW.user_name OR OLD.device_id IS DISTINCT FROM NEW.device_id
              OR OLD.secret_sealed IS DISTINCT FROM NEW.secret_sealed)
        EXECUTE FUNCTION fv_raise_revocation_epoch()",
    "CREATE OR REPLACE TRIGGER sessions_deleted_epoch AFTER DELETE ON sessions FOR EACH ROW
        EXECUTE FUNCTION fv_raise_revocation_epoch()",
    "CREATE OR REPLACE TRIGGER directives_added_epoch AFTER INSERT OR DELETE ON directives FOR EACH ROW
        EXECUTE FUNCTION fv_raise_revocation_epoch()",
    "CREATE OR REPLACE TRIGGER directives_acked_epoch AFTER UPDATE ON directives FOR EACH ROW
        WHEN (OLD.acked_at IS DISTINCT FROM NEW.acked_at OR OLD.device_id IS DISTINCT FROM NEW.device_id
              OR OLD.token IS DISTINCT FROM NEW.token)
        EXECUTE FUNCTION fv_raise_revocation_epoch()",
];

pub(super) async fn claim_nonces(pool: &PgPool, claims: &[NonceClaim]) -> Result<ClaimedNonces, StoreError> {
    // Each distinct (key id, nonce) is sent once: the first claim of it gets the row, a
    // repeat within the batch is a replay of it. In key order: an insert waits on a row
    // another transaction is inserting under the same key, so two batches sharing nonces
    // (replays sent to two instances at once) that took them in opposite orders would each
    // wait for the other (a deadlock, which PostgreSQL breaks after a second by failing one
    // batch whole). In one order, one waits, then finds the other's rows.
    let mut rows: Vec<usize> = (0..claims.len()).collect();
    rows.sort_unstable_by_key(|&i| (key(&claims[i]), i));
    rows.dedup_by_key(|i| key(&claims[*i]));
    let key_ids: Vec<&str> = rows.iter().map(|&i| claims[i].key_id.as_str()).collect();
    let nonces: Vec<&[u8]> = rows.iter().map(|&i| &claims[i].nonce[..]).collect();
    let expiries =
        rows.iter().map(|&i| to_column(claims[i].expires_at, "nonces.expires_at")).collect::<Result<Vec<i64>, _>>()?;
    // Most batches hold no replay: a plain insert records them all, in one autocommitted
    // statement that reads the epoch in its snapshot. Only when the unique key refuses one
    // (a replay, or another instance inserting the same nonce first) is the batch, of which
    // the failed statement recorded nothing, sent again to find out which rows are new.
    match insert_all(pool, &key_ids, &nonces, &expiries).await {
        Ok(epoch) => {
            let epoch =
                epoch.ok_or_else(|| StoreError::corrupt("revocation_epoch.epoch", "the counter row is missing"))?;
            let revocation_epoch = from_column(epoch, "revocation_epoch.epoch")?;
            let mut fresh = vec![false; claims.len()];
            for &i in &rows {
                fresh[i] = true;
            }
            Ok(ClaimedNonces { fresh, revocation_epoch })
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            insert_new(pool, claims, &rows, &key_ids, &nonces, &expiries).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Its commit does not wait for the WAL flush (`synchronous_commit = off` for this
/// transaction alone), as the SQLite store commits nonces at `synchronous = NORMAL`: the rows
/// are visible to every instance once the statement returns, and every request that changes
/// anything commits (flushed) after its nonce, which flushes the WAL up to and including the
/// nonce's commit record. A database crash can only lose the nonces of requests that changed
/// nothing.
macro_rules! unflushed {
    () => {
        "(SELECT set_config('synchronous_commit', 'off', true)) AS unflushed"
    };
}

/// Inserts every row, or none if one is there already (a unique violation); returns the
/// epoch read in the same statement (None: its row is missing). Cheaper for PostgreSQL than
/// `ON CONFLICT` (no speculative insertion: one index search per row instead of two, one WAL
/// record less).
async fn insert_all(
    pool: &PgPool,
    key_ids: &[&str],
    nonces: &[&[u8]],
    expiries: &[i64],
) -> Result<Option<i64>, sqlx::Error> {
    // A data-modifying WITH runs to completion whether or not the query reads it.
    sqlx::query_scalar(concat!(
        "WITH inserted AS (
             INSERT INTO nonces (key_id, nonce, expires_at)
             SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bigint[])
         )
         SELECT epoch FROM revocation_epoch, ",
        unflushed!(),
        " WHERE id = 1"
    ))
    .bind(key_ids)
    .bind(nonces)
    .bind(expiries)
    .fetch_optional(pool)
    .await
}

/// What a batch's rows are sent and ordered by: the unique key.
fn key(claim: &NonceClaim) -> (&str, &[u8; 16]) {
    (claim.key_id.as_str(), &claim.nonce)
}

/// Inserts the rows that are not there yet and tells which those were (`rows`: the claims
/// sent, in key order): one statement, one snapshot (of two instances inserting one nonce, exactly one gets it), the epoch read beside
/// them on a row of its own (key_id NULL), so that it is there when nothing is inserted.
async fn insert_new(
    pool: &PgPool,
    claims: &[NonceClaim],
    rows: &[usize],
    key_ids: &[&str],
    nonces: &[&[u8]],
    expiries: &[i64],
) -> Result<ClaimedNonces, StoreError> {
    let inserted = sqlx::query(concat!(
        "WITH inserted AS (
             INSERT INTO nonces (key_id, nonce, expires_at)
             SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bigint[])
             ON CONFLICT DO NOTHING
             RETURNING key_id, nonce
         )
         SELECT NULL::text AS key_id, NULL::bytea AS nonce, epoch
         FROM revocation_epoch, ",
        unflushed!(),
        " WHERE id = 1
         UNION ALL
         SELECT key_id, nonce, NULL::bigint FROM inserted"
    ))
    .bind(key_ids)
    .bind(nonces)
    .bind(expiries)
    .fetch_all(pool)
    .await?;
    let mut fresh = vec![false; claims.len()];
    let mut revocation_epoch = None;
    for row in inserted {
        let key_id: Option<String> = row.try_get("key_id")?;
        let Some(key_id) = key_id else {
            revocation_epoch = Some(from_column(row.try_get::<i64, _>("epoch")?, "revocation_epoch.epoch")?);
            continue;
        };
        let nonce: Vec<u8> = row.try_get("nonce")?;
        let nonce: [u8; 16] = nonce.try_into().map_err(|_| StoreError::corrupt("nonces.nonce", "not 16 bytes"))?;
        if let Ok(at) = rows.binary_search_by_key(&(key_id.as_str(), &nonce), |&i| key(&claims[i])) {
            fresh[rows[at]] = true;
        }
    }
    let revocation_epoch =
        revocation_epoch.ok_or_else(|| StoreError::corrupt("revocation_epoch.epoch", "the counter row is missing"))?;
    Ok(ClaimedNonces { fresh, revocation_epoch })
}

pub(super) async fn session_read(pool: &PgPool, key_id: &str) -> Result<SessionRead, StoreError> {
    // One statement, one snapshot: the epoch row, and the session beside it when there is one.
    let row = sqlx::query(
        "SELECT e.epoch, s.id, s.key_id, s.user_name, s.device_id, s.secret_sealed,
             s.revoked_at IS NOT NULL AS revoked, s.created_at,
             COALESCE((SELECT array_agg(d.token ORDER BY d.issued_at, d.jti) FROM directives d
                       WHERE d.device_id = s.device_id AND d.acked_at IS NULL), ARRAY[]::text[])
                 AS directives
         FROM revocation_epoch e LEFT JOIN sessions s ON s.key_id = $1
         WHERE e.id = 1",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| StoreError::corrupt("revocation_epoch.epoch", "the counter row is missing"))?;
    let revocation_epoch = from_column(row.try_get::<i64, _>("epoch")?, "revocation_epoch.epoch")?;
    let session = match row.try_get::<Option<String>, _>("id")? {
        None => None,
        Some(id) => Some(super::sessions::session_record(id, &row)?),
    };
    Ok(SessionRead { session, revocation_epoch })
}
