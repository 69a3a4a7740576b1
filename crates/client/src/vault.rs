//! The vault directory: creating it, opening it (checks only, no secrets), its status, and
//! wiping it.
//!
//! ```text
//! VAULT/                 0700
//!   vault.fv             marker: "this is vault <id>"; written last by init
//!   keys.fvk             key file: keystore parameters, wrapped master key, data keys
//!   unlock.fvc           failed passphrase unlocks (absent when zero)
//!   lock                 flock'd while a process has the vault open
//!   accounts/<name>/     0700, one per account (databases and attachments live here)
//! ```

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fieldvault_core::{
    AccountName, KeyFile, KeyMeta, KeystoreKind, KeystoreParams, OwedLogout, SlotState, UnlockCounter, VaultId,
    VaultMarker,
};
use fieldvault_keystore::KeyStore;

use crate::Error;
use crate::disk::{DIR_MODE, Disk, TMP_SUFFIX, check_private_dir, open_private, read_private};

pub(crate) const MARKER: &str = "vault.fv";
pub(crate) const KEYS: &str = "keys.fvk";
pub(crate) const COUNTER: &str = "unlock.fvc";
pub(crate) const LOCK: &str = "lock";
pub(crate) const ACCOUNTS: &str = "accounts";

/// An open vault, still locked: it has read and checked the key file's structure and holds
/// the directory lock, but no key. [`Vault::unlock`] turns it into an
/// [`Unlocked`](crate::Unlocked) vault.
pub struct Vault {
    pub(crate) dir: PathBuf,
    pub(crate) disk: Disk,
    pub(crate) keyfile: KeyFile,
    _lock: File,
}

/// What `status` shows: the key hierarchy's metadata, readable without unlocking.
#[derive(Clone, Debug)]
pub struct Status {
    /// The vault's id.
    pub vault: VaultId,
    /// Which keystore wraps the master key, with its parameters (no secrets).
    pub keystore: KeystoreParams,
    /// The key file's generation (raised on every change).
    pub generation: u64,
    /// The master key's id and version.
    pub master: KeyMeta,
    /// Every data key.
    pub keys: Vec<KeyStatus>,
    /// Consecutive failed passphrase unlocks (and recovery attempts).
    pub failed_unlocks: u32,
    /// The recovery key, if the vault has one: its id and when it was made.
    pub recovery: Option<RecoveryStatus>,
}

/// The recovery key in [`Status`] (the key itself is never stored).
#[derive(Clone, Debug)]
pub struct RecoveryStatus {
    /// Its id (a new recovery key has a new id).
    pub id: fieldvault_core::KeyId,
    /// When it was made, Unix seconds.
    pub created_at: u64,
}

/// One data key in [`Status`].
#[derive(Clone, Debug)]
pub struct KeyStatus {
    /// Its account.
    pub account: AccountName,
    /// Purpose, version, id.
    pub meta: KeyMeta,
    /// Live, or pending (a rotation in progress).
    pub state: SlotState,
}

/// What [`Vault::wipe`] did.
#[derive(Clone, Debug)]
pub struct WipeReport {
    /// The wiped vault's id, when it could be read.
    pub vault: Option<VaultId>,
    /// Whether an OS keystore entry was deleted (or there was none to delete). `false` means
    /// the entry may remain and holds a key that opens nothing any more.
    pub keystore_entry_removed: bool,
}

fn take_lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK);
    let f = open_private(&path)?;
    // A lock released a moment ago can still be held by a child process between its fork
    // and exec (it inherits the descriptor until exec closes it): wait briefly before
    // saying the vault is in use.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                if std::time::Instant::now() >= deadline {
                    return Err(Error::InUse { dir: dir.to_path_buf() });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(Error::Io { op: "lock", path, source: e.into() }),
        }
    }
}

/// The read-only checks of `init`: `dir` must be missing, or a directory with nothing in it
/// but leftovers of an interrupted init. Returns whether it exists.
fn init_target(dir: &Path) -> Result<bool, Error> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(Error::UnexpectedFileType { path: dir.to_path_buf(), expected: "directory" }),
        Ok(_) => {
            let names = fs::read_dir(dir)
                .map_err(|source| Error::Io { op: "list", path: dir.to_path_buf(), source })?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| Error::Io { op: "list", path: dir.to_path_buf(), source })?;
            if names.iter().any(|n| n == MARKER || n == KEYS) {
                return Err(Error::AlreadyAVault { dir: dir.to_path_buf() });
            }
            if !names.iter().all(|n| is_leftover(n)) {
                return Err(Error::NotEmpty { dir: dir.to_path_buf() });
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Io { op: "stat", path: dir.to_path_buf(), source }),
    }
}

/// Whether a directory entry is one a crashed `init` may leave behind.
fn is_leftover(name: &str) -> bool {
    name == LOCK || name.ends_with(TMP_SUFFIX)
}

/// Reads and parses one vault record; damage is [`Error::Corrupt`] naming the file.
fn read_record<T>(
    dir: &Path,
    name: &str,
    parse: fn(&[u8]) -> Result<T, fieldvault_core::Error>,
) -> Result<Option<T>, Error> {
    let path = dir.join(name);
    match read_private(&path)? {
        None => Ok(None),
        Some(bytes) => parse(&bytes).map(Some).map_err(|source| Error::Corrupt { path, source }),
    }
}

fn read_keyfile(dir: &Path) -> Result<Option<KeyFile>, Error> {
    read_record(dir, KEYS, KeyFile::from_bytes)
}

fn read_marker(dir: &Path) -> Result<Option<VaultMarker>, Error> {
    read_record(dir, MARKER, VaultMarker::from_bytes)
}

pub(crate) fn read_counter(dir: &Path) -> Result<UnlockCounter, Error> {
    read_counter_checked(dir).map(|(counter, _)| counter)
}

/// The counter, and whether the file was damaged. A damaged counter must neither lock the
/// owner out for ever nor reset to zero: it reads as the last free failure, so the next
/// wrong passphrase waits.
pub(crate) fn read_counter_checked(dir: &Path) -> Result<(UnlockCounter, bool), Error> {
    let path = dir.join(COUNTER);
    match read_private(&path)? {
        None => Ok((UnlockCounter::default(), false)),
        Some(bytes) => Ok(match UnlockCounter::from_bytes(&bytes) {
            Ok(counter) => (counter, false),
            Err(_) => (UnlockCounter { failures: fieldvault_core::FREE_FAILURES, last_failure_unix: 0 }, true),
        }),
    }
}

impl Vault {
    /// Creates a vault in `dir` (missing, or empty) whose master key is wrapped by `store`,
    /// with one account, and returns it unlocked.
    ///
    /// # Errors
    /// [`Error::AlreadyAVault`] or [`Error::NotEmpty`] without changing anything;
    /// [`Error::Keystore`] when the store refuses (a weak passphrase, no OS keystore).
    pub fn init(dir: &Path, store: &dyn KeyStore, account: &AccountName) -> Result<crate::Unlocked, Error> {
        Self::init_on(Disk::default(), dir, store, account, None)
    }

    /// Whether `init` could create a vault at `dir`, checked without writing anything: so
    /// a caller can refuse before it asks for a passphrase.
    ///
    /// # Errors
    /// As [`Vault::init`] for the directory: [`Error::AlreadyAVault`], [`Error::NotEmpty`],
    /// [`Error::UnexpectedFileType`], [`Error::Io`].
    pub fn check_init_target(dir: &Path) -> Result<(), Error> {
        init_target(dir).map(drop)
    }

    pub(crate) fn init_on(
        disk: Disk,
        dir: &Path,
        store: &dyn KeyStore,
        account: &AccountName,
        recovery: Option<&fieldvault_core::RecoveryKey>,
    ) -> Result<crate::Unlocked, Error> {
        // Read-only checks first, then the keystore (a weak passphrase is refused here),
        // and only then the first write: a refused init leaves no trace.
        let exists = init_target(dir)?;
        let vault_id = VaultId::from_bytes(crate::random());
        let (kek, params) = store.create(&vault_id)?;
        if exists {
            // An empty directory we own becomes private; one owned by someone else is refused.
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(|source| Error::Io {
                op: "chmod",
                path: dir.to_path_buf(),
                source,
            })?;
            check_private_dir(dir)?;
        } else {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(|source| Error::Io {
                    op: "create directory",
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            disk.create_dir(dir)?;
        }
        let lock = take_lock(dir)?;
        // Again under the lock: another init may have made a vault here since the check
        // above (it held the lock while it did); its key file must never be overwritten.
        init_target(dir)?;
        let (mut keyfile, keys) = crate::keys::KeySet::create(vault_id, kek, params, account);
        if let Some(rk) = recovery {
            keyfile.recovery = Some(crate::recovery::seal_slot(rk, keys.master(), keyfile.master.meta(), &vault_id));
        }
        disk.write_atomic(&dir.join(KEYS), &keyfile.to_bytes())?;
        disk.create_dir(&dir.join(ACCOUNTS))?;
        disk.create_dir(&dir.join(ACCOUNTS).join(account.as_str()))?;
        disk.write_atomic(&dir.join(MARKER), &VaultMarker { vault: vault_id }.to_bytes())?;
        let vault = Vault { dir: dir.to_path_buf(), disk, keyfile, _lock: lock };
        Ok(crate::Unlocked::from_parts(vault, keys))
    }

    /// Opens the vault in `dir` without unlocking it: checks ownership and permissions,
    /// takes the directory lock, reads and checks the key file, and finishes an account wipe
    /// that a crash interrupted.
    ///
    /// # Errors
    /// [`Error::NotAVault`], [`Error::KeysGone`], [`Error::LoosePermissions`],
    /// [`Error::NotOwned`], [`Error::InUse`], [`Error::Corrupt`] (naming the file and slot),
    /// [`Error::VaultMismatch`].
    pub fn open(dir: &Path) -> Result<Vault, Error> {
        Self::open_on(Disk::default(), dir)
    }

    pub(crate) fn open_on(disk: Disk, dir: &Path) -> Result<Vault, Error> {
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotAVault { dir: dir.to_path_buf(), missing: true });
            }
            Err(source) => {
                return Err(Error::Io { op: "stat", path: dir.to_path_buf(), source });
            }
            Ok(_) => check_private_dir(dir)?,
        }
        if !dir.join(MARKER).exists() && !dir.join(KEYS).exists() {
            return Err(Error::NotAVault { dir: dir.to_path_buf(), missing: false });
        }
        // Lock first, then read: another process may be committing a change right now.
        let lock = take_lock(dir)?;
        let marker = read_marker(dir)?;
        let keyfile = read_keyfile(dir)?;
        let (marker, keyfile) = match (marker, keyfile) {
            (None, None) => {
                return Err(Error::NotAVault { dir: dir.to_path_buf(), missing: false });
            }
            (Some(_), None) => {
                return Err(Error::KeysGone { dir: dir.to_path_buf() });
            }
            // init writes the marker last: keys without a marker is an init that did not finish.
            (None, Some(_)) => {
                return Err(Error::Corrupt {
                    path: dir.join(MARKER),
                    source: fieldvault_core::Error::Malformed {
                        what: "vault",
                        reason: "vault.fv is missing: `init` did not finish; run `fieldvault wipe` and init again",
                    },
                });
            }
            (Some(m), Some(k)) => (m, k),
        };
        if marker.vault != keyfile.vault {
            return Err(Error::VaultMismatch { marker: marker.vault.to_hex(), keyfile: keyfile.vault.to_hex() });
        }
        let vault = Vault { dir: dir.to_path_buf(), disk, keyfile, _lock: lock };
        vault.tidy()?;
        Ok(vault)
    }

    /// Removes what a crash can leave: temporary files, and the directory of an account
    /// whose keys are already gone (an interrupted account wipe). Checks the permissions of
    /// what remains.
    fn tidy(&self) -> Result<(), Error> {
        let list = |p: &Path| -> Result<Vec<fs::DirEntry>, Error> {
            fs::read_dir(p).and_then(|it| it.collect::<Result<Vec<_>, _>>()).map_err(|source| Error::Io {
                op: "list",
                path: p.to_path_buf(),
                source,
            })
        };
        // Only plain files are removed: anything else by those names was not left by
        // Fieldvault, and must not stop the vault from opening (`verify` reports it).
        let is_file = |e: &fs::DirEntry| e.file_type().is_ok_and(|t| t.is_file());
        for e in list(&self.dir)? {
            if e.file_name().to_string_lossy().ends_with(TMP_SUFFIX) && is_file(&e) {
                self.disk.remove_file(&e.path())?;
            }
        }
        let accounts = self.dir.join(ACCOUNTS);
        if accounts.exists() {
            check_private_dir(&accounts)?;
        } else {
            self.disk.create_dir(&accounts)?;
        }
        let live = self.keyfile.accounts();
        for e in list(&accounts)? {
            let name = e.file_name().to_string_lossy().into_owned();
            match AccountName::new(&name) {
                Ok(a) if live.contains(&a) => {
                    check_private_dir(&e.path())?;
                    // A re-key's temporary copy (and its journal) left by a crash.
                    for f in list(&e.path())? {
                        let n = f.file_name().to_string_lossy().into_owned();
                        if (n.ends_with(TMP_SUFFIX) || n.ends_with(&format!("{TMP_SUFFIX}-journal"))) && is_file(&f) {
                            self.disk.remove_file(&f.path())?;
                        }
                    }
                }
                // The files of an account whose keys are gone: an interrupted account wipe.
                Ok(_) if e.file_type().is_ok_and(|t| t.is_dir()) => self.disk.remove_tree(&e.path())?,
                // Anything else was not put there by Fieldvault: leave it alone.
                _ => {}
            }
        }
        // An account whose keys were written but whose directory was not (a crash in add_account).
        for a in &live {
            if !self.account_dir(a).exists() {
                self.disk.create_dir(&self.account_dir(a))?;
            }
        }
        Ok(())
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The vault id.
    pub fn id(&self) -> VaultId {
        self.keyfile.vault
    }

    /// Which keystore this vault's master key is wrapped by.
    pub fn keystore_kind(&self) -> KeystoreKind {
        self.keyfile.keystore.kind()
    }

    /// The accounts in this vault.
    pub fn accounts(&self) -> Vec<AccountName> {
        self.keyfile.accounts().into_iter().collect()
    }

    /// The directory of one account's files.
    pub fn account_dir(&self, account: &AccountName) -> PathBuf {
        self.dir.join(ACCOUNTS).join(account.as_str())
    }

    /// The key hierarchy's metadata.
    pub fn status(&self) -> Result<Status, Error> {
        let k = &self.keyfile;
        Ok(Status {
            vault: k.vault,
            keystore: k.keystore.clone(),
            generation: k.generation,
            master: k.master.meta(),
            keys: k
                .slots
                .iter()
                .map(|s| KeyStatus { account: s.account.clone(), meta: s.key.meta(), state: s.state })
                .collect(),
            failed_unlocks: read_counter(&self.dir)?.failures,
            recovery: k.recovery.as_ref().map(|r| RecoveryStatus { id: r.id, created_at: r.created_at }),
        })
    }

    /// Replaces the key file with `next` (generation raised) atomically.
    pub(crate) fn commit(&mut self, mut next: KeyFile) -> Result<(), Error> {
        next.generation = self.keyfile.generation + 1;
        self.disk.write_atomic(&self.dir.join(KEYS), &next.to_bytes())?;
        self.keyfile = next;
        Ok(())
    }

    /// Wipes one account: its wrapped keys first (crypto-shredding), then its files. Needs
    /// no key. A crash in between leaves files nobody can decrypt, removed on the next open.
    ///
    /// # Errors
    /// [`Error::NoSuchAccount`].
    pub fn wipe_account(&mut self, account: &AccountName) -> Result<(), Error> {
        self.shred_account(account, None)
    }

    /// Wipes one account as [`wipe_account`](Self::wipe_account) does, recording in the same
    /// atomic write of the key file a logout its server is still owed (so a crash after the
    /// shred cannot lose it).
    pub(crate) fn shred_account(&mut self, account: &AccountName, owed: Option<OwedLogout>) -> Result<(), Error> {
        if !self.keyfile.accounts().contains(account) {
            return Err(Error::NoSuchAccount(account.to_string()));
        }
        let mut next = self.keyfile.clone();
        next.slots.retain(|s| &s.account != account);
        next.leases.retain(|l| &l.account != account);
        next.devices.retain(|d| &d.account != account);
        if let Some(o) = owed {
            next.owed.retain(|x| !(x.account == o.account && x.device_id == o.device_id));
            next.owed.push(o);
        }
        self.commit(next)?;
        self.disk.remove_tree(&self.account_dir(account))
    }

    /// Wipes the whole vault in `dir`: the key file first (crypto-shredding), then the
    /// keystore's entry (`store`, when given and it is the kind the vault used), then every
    /// file. Needs no key, and finishes a wipe that a crash interrupted.
    ///
    /// # Errors
    /// [`Error::NotAVault`] when `dir` holds neither a marker nor a key file (nothing is
    /// removed); [`Error::InUse`].
    pub fn wipe(dir: &Path, store: Option<&dyn KeyStore>) -> Result<WipeReport, Error> {
        Self::wipe_on(&Disk::default(), dir, store)
    }

    pub(crate) fn wipe_on(disk: &Disk, dir: &Path, store: Option<&dyn KeyStore>) -> Result<WipeReport, Error> {
        if !dir.join(MARKER).exists() && !dir.join(KEYS).exists() {
            return Err(Error::NotAVault { dir: dir.to_path_buf(), missing: !dir.exists() });
        }
        check_private_dir(dir)?;
        let _lock = take_lock(dir)?;
        let keyfile = read_keyfile(dir).ok().flatten();
        let vault = keyfile.as_ref().map(|k| k.vault).or_else(|| read_marker(dir).ok().flatten().map(|m| m.vault));
        let os_kind = keyfile.as_ref().map(|k| k.keystore.kind());
        disk.remove_file(&dir.join(KEYS))?;
        let keystore_entry_removed = match (store, vault) {
            (Some(s), Some(v)) if os_kind.is_none_or(|k| k == s.kind()) => s.destroy(&v).is_ok(),
            _ => !matches!(os_kind, Some(KeystoreKind::Os) | None),
        };
        // Everything but the marker (the lock file too: our descriptor keeps the lock), then
        // the marker, then the directory. Until the marker goes, a crashed wipe can be
        // finished by wiping again; after it, at most an empty directory is left.
        let entries = fs::read_dir(dir)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|source| Error::Io { op: "list", path: dir.to_path_buf(), source })?;
        for e in entries {
            let name = e.file_name();
            if name == MARKER {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                disk.remove_tree(&e.path())?;
            } else {
                disk.remove_file(&e.path())?;
            }
        }
        disk.remove_file(&dir.join(MARKER))?;
        disk.remove_tree(dir)?;
        Ok(WipeReport { vault, keystore_entry_removed })
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("dir", &self.dir).field("id", &self.keyfile.vault).finish_non_exhaustive()
    }
}
