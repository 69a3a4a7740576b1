//! Admission on the SQLCipher store: a batch of request nonces in one write transaction, the
//! revocation epoch read inside it, and a session read together with the epoch
//! (`crate::storage::admission`).

use rusqlite::{Connection, TransactionBehavior, params};

use super::sessions;
use crate::storage::admission::{ClaimedNonces, NonceClaim, SessionRead};
use crate::storage::{StoreError, from_column, to_column};

/// Schema version 10: the revocation epoch and the triggers that raise it. `UPDATE OF` names
/// the columns a cached session holds, so that recording when directives were sent, say,
/// raises nothing.
pub(super) const SCHEMA_V10: &str = "
    CREATE TABLE revocation_epoch (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        epoch INTEGER NOT NULL
    );
    INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0);
    CREATE TRIGGER sessions_changed_epoch AFTER UPDATE OF revoked_at, key_id, user_name, device_id, secret_sealed
        ON sessions BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER sessions_deleted_epoch AFTER DELETE ON sessions
        BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER directives_added_epoch AFTER INSERT ON directives
        BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER directives_acked_epoch AFTER UPDATE OF acked_at, device_id, token ON directives
        BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER directives_deleted_epoch AFTER DELETE ON directives
        BEGIN UPDATE revocation_epoch SET epoch = epoch + 1; END;
";

fn epoch(c: &Connection) -> Result<u64, StoreError> {
    let epoch: i64 =
        c.prepare_cached("SELECT epoch FROM revocation_epoch WHERE id = 1")?.query_row([], |r| r.get(0))?;
    from_column(epoch, "revocation_epoch.epoch")
}

pub(super) fn claim_nonces(c: &mut Connection, claims: &[NonceClaim]) -> Result<ClaimedNonces, StoreError> {
    if claims.is_empty() {
        // Nothing to write: one read, no write transaction.
        return Ok(ClaimedNonces { fresh: Vec::new(), revocation_epoch: epoch(c)? });
    }
    // Not synced on its own (`synchronous = NORMAL` for this transaction), as the single
    // insert was before group commit: in WAL mode its frames reach the disk with the next
    // commit that is, and every request that changes anything commits (fully synced) after
    // its nonce. A power cut can only lose the nonces of requests that changed nothing.
    c.execute_batch("PRAGMA synchronous = NORMAL")?;
    let claimed = claim_in(c, claims);
    c.execute_batch("PRAGMA synchronous = FULL")?;
    claimed
}

/// The batch's transaction: every insert and the epoch, committed together or not at all.
fn claim_in(c: &mut Connection, claims: &[NonceClaim]) -> Result<ClaimedNonces, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut fresh = Vec::with_capacity(claims.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO nonces (key_id, nonce, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?;
        for claim in claims {
            let expires_at = to_column(claim.expires_at, "nonces.expires_at")?;
            // A repeat within the batch finds the row its first occurrence inserted.
            fresh.push(insert.execute(params![claim.key_id, &claim.nonce[..], expires_at])? == 1);
        }
    }
    let revocation_epoch = epoch(&tx)?;
    tx.commit()?;
    Ok(ClaimedNonces { fresh, revocation_epoch })
}

pub(super) fn session_read(c: &mut Connection, key_id: &str) -> Result<SessionRead, StoreError> {
    // One read transaction: the epoch and the session in the same snapshot.
    let tx = c.transaction()?;
    let revocation_epoch = epoch(&tx)?;
    let session = sessions::by_key_id_in(&tx, key_id)?;
    tx.commit()?;
    Ok(SessionRead { session, revocation_epoch })
}
