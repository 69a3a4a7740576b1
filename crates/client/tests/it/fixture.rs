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
}
