//! Key rotation's one public home: [`Unlocked::rotate_keys`] for an account's data keys,
//! beside [`Unlocked::rotate_master`] for the master key.
//!
//! Each data key rotates in three steps (`rotate_data_key`, crate-private): the new key is
//! recorded as pending, what it protects is re-encrypted, then it becomes live. That step in
//! the middle is what no public call may skip, so the callers that know what each key
//! protects are here and nowhere else.

use fieldvault_core::{AccountName, KeyMeta, Purpose};

use crate::{Error, Unlocked};

impl Unlocked {
    /// Rotates every data key of `account`: the database key (the database is re-keyed:
    /// exported under the new key, fsynced, renamed over), the files key (every attachment's
    /// content key re-wrapped in one transaction; no attachment file is rewritten), and the
    /// sync key. Returns the new keys' metadata in that order.
    ///
    /// Crash-safe: a crash at any point leaves each key either the old one or the new one,
    /// with its data readable; the next open finishes an interrupted database re-key, and
    /// calling `rotate_keys` again takes up a pending key where it was left.
    ///
    /// # Errors
    /// [`Error::NoSuchAccount`]; [`Error::NoSpace`] when a second copy of the database would
    /// not fit (nothing changed); [`Error::DatabaseLost`] (nothing changed: the only key that
    /// opens a backup is kept); [`Error::LeaseExpired`]; database and file-system errors.
    pub fn rotate_keys(&mut self, account: &AccountName) -> Result<Vec<KeyMeta>, Error> {
        let database = self.rotate_database_key(account)?;
        let files = self.rotate_files_key(account)?;
        // Nothing is encrypted under the sync key at rest: it only needs a new version.
        let sync = self.rotate_data_key(account, Purpose::Sync, |_, _, _| Ok(()))?;
        Ok(vec![database, files, sync])
    }
}
