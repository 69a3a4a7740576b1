//! The vault most tests start from: account `alice` on a memory keystore, in a scratch
//! directory that also holds the test's other files.

use std::path::PathBuf;

use fieldvault_client::{Unlocked, Vault};
use fieldvault_core::AccountName;
use fieldvault_keystore::MemoryStore;

pub(crate) fn alice() -> AccountName {
    AccountName::new("alice").expect("valid")
}

pub(crate) struct Fixture {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) store: MemoryStore,
}

impl Fixture {
    /// A new vault at `tmp/v` with the account `alice`.
    pub(crate) fn new() -> Self {
        let f = Fixture { tmp: tempfile::tempdir().expect("tempdir"), store: MemoryStore::default() };
        Vault::init(&f.vault(), &f.store, &alice()).expect("init");
        f
    }

    pub(crate) fn vault(&self) -> PathBuf {
        self.tmp.path().join("v")
    }

    pub(crate) fn unlock(&self) -> Unlocked {
        Vault::open(&self.vault()).expect("open").unlock(&self.store).expect("unlock")
    }

    /// What a power cut right now would leave of alice's database, as far as SQLite has
    /// promised: the main file as it is, without the write-ahead log, whose frames
    /// `synchronous = NORMAL` does not sync at commit. Call while the vault is open; give
    /// the result to [`Fixture::power_cut`] after dropping it.
    pub(crate) fn durable_database(&self) -> Vec<u8> {
        std::fs::read(self.vault().join("accounts/alice/documents.db")).expect("read the database")
    }

    /// Puts back alice's database as [`Fixture::durable_database`] took it, with no WAL:
    /// the state after the power cut. Key files and attachment files stay as they are (they
    /// are synced when written).
    pub(crate) fn power_cut(&self, durable: &[u8]) {
        let db = self.vault().join("accounts/alice/documents.db");
        let _ = std::fs::remove_file(db.with_file_name("documents.db-wal"));
        std::fs::write(&db, durable).expect("write the database back");
    }
}
