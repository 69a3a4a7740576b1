//! The unlocked vault's databases: opening each account's SQLCipher database with its
//! data key, re-keying it on rotation, and checking it (`verify`).

use std::path::Path;

use fieldvault_core::{AccountName, KeyMeta, Purpose};
use rusqlite::params;

use crate::database::{self, DB_FILE};
use crate::documents::{AccountDb, Documents};
use crate::{Error, Unlocked};

/// One thing `verify` found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// What `verify` looked at and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// What was checked and passed.
    pub checked: Vec<String>,
    /// What failed. Empty means the vault is sound.
    pub findings: Vec<Finding>,
}

impl Unlocked {
    /// The documents of `account`, opening its database on first use.
    ///
    /// # Errors
    /// [`Error::NoSuchAccount`]; [`Error::PlaintextDatabase`]; [`Error::DatabaseKey`] when
    /// neither the live key nor the pending key of an interrupted rotation opens it;
    /// [`Error::DatabaseLost`] for a database lost outside Fieldvault; [`Error::LeaseExpired`]
    /// for a synced account whose offline lease has ended (log in to open it again).
    pub fn documents(&mut self, account: &AccountName) -> Result<Documents<'_>, Error> {
        // A synced account shuts when its lease ends, even in a process that holds its keys.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.enforce_lease(account, now)?;
        if !self.dbs.contains_key(account) {
            let db = self.open_db(account)?;
            self.dbs.insert(account.clone(), db);
        }
        let db = self.dbs.get_mut(account).expect("inserted above");
        Ok(Documents { db })
    }

    fn open_db(&mut self, account: &AccountName) -> Result<AccountDb, Error> {
        let path = self.vault.account_dir(account).join(DB_FILE);
        // A database lost outside Fieldvault: opening would start an empty one, and the
        // orphan sweep below would then delete every attachment file. Refuse instead.
        check_not_lost(&path)?;
        let conn = match database::open(&path, self.data_key(account, Purpose::Database)?) {
            Ok(conn) => conn,
            // A rotation that re-keyed the file but crashed before promoting the new key.
            Err(Error::DatabaseKey { .. }) if self.pending_data_key(account, Purpose::Database).is_some() => {
                let pending = self.pending_data_key(account, Purpose::Database).expect("checked");
                drop(database::open(&path, pending)?);
                self.rotate_data_key(account, Purpose::Database, |_, _, _| Ok(()))?;
                database::open(&path, self.data_key(account, Purpose::Database)?)?
            }
            Err(e) => return Err(e),
        };
        database::attach_memory(&conn, &path)?;
        crate::attachments::remove_orphans(&conn, &path, &self.vault.disk)?;
        AccountDb::new(conn, path)
    }

    /// Rotates `account`'s database key and re-keys its database crash-safely (export to a
    /// temporary file under the new key, fsync, rename). Memory-only collections survive.
    ///
    /// # Errors
    /// [`Error::NoSpace`] when a second copy of the database would not fit (nothing is
    /// changed); database errors. A crash at any point leaves a database that opens with the
    /// old key or the new one, and the next open or rotation finishes the job.
    pub(crate) fn rotate_database_key(&mut self, account: &AccountName) -> Result<KeyMeta, Error> {
        let path = self.vault.account_dir(account).join(DB_FILE);
        // A lost database keeps its key: the new key would not open the backup.
        check_not_lost(&path)?;
        // Before anything is recorded: a full disk changes nothing at all.
        self.vault.disk.ensure_free_space(&path, database::space_for_copy(&path))?;
        let saved = match self.dbs.remove(account) {
            Some(db) => Some(save_memory(&db)?),
            None => None,
        };
        let disk = self.vault.disk.clone();
        let result =
            self.rotate_data_key(account, Purpose::Database, |old, new, _| database::rekey(&disk, &path, old, new));
        // Memory-only documents come back whether or not the rotation went through.
        if let Some((memory, rows)) = saved {
            let docs = self.documents(account)?;
            docs.db.memory = memory;
            restore_memory(docs.db, rows)?;
        }
        result
    }

    /// Checks every file at rest: every key unwraps (they did, to get here); every account's
    /// database is not plaintext, opens with its key, and every page authenticates (`PRAGMA
    /// cipher_integrity_check`); every attachment decrypts and authenticates end to end; and
    /// nothing else lies under the vault directory (any other file is a finding: verify
    /// cannot vouch that it is encrypted).
    pub fn verify(&mut self) -> Result<Report, Error> {
        self.verify_with_progress(&mut |_, _| {})
    }

    /// [`Unlocked::verify`], reporting progress through the attachments as
    /// `progress(done, total)`.
    pub fn verify_with_progress(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<Report, Error> {
        let mut report = Report::default();
        let st = self.vault.status()?;
        report.checked.push(format!("master key v{} unwraps", st.master.version));
        for k in &st.keys {
            report.checked.push(format!("account '{}' {} key v{} unwraps", k.account, k.meta.purpose, k.meta.version));
        }
        let accounts = self.vault.accounts();
        for account in &accounts {
            let path = self.vault.account_dir(account).join(DB_FILE);
            if let Err(lost) = check_not_lost(&path) {
                report.findings.push(Finding { path, problem: lost.to_string() });
                continue;
            }
            if !path.exists() && !self.dbs.contains_key(account) {
                report.checked.push(format!("account '{account}' has no database yet (nothing stored)"));
                continue;
            }
            // The open connection if there is one (reopening would forget the session's
            // memory-only collections, and their next writes would go to disk).
            match self.documents(account).and_then(|d| integrity_problems(d.db)) {
                Ok(problems) if problems.is_empty() => {
                    report.checked.push(format!("{} is encrypted and every page authenticates", path.display()))
                }
                Ok(problems) => {
                    report.findings.extend(problems.into_iter().map(|problem| Finding { path: path.clone(), problem }))
                }
                Err(e) => {
                    report.findings.push(Finding { path: path.clone(), problem: e.to_string() });
                    continue;
                }
            }
            let (n, problems) = match self.verify_attachments(account, progress) {
                Ok(found) => found,
                Err(e) => {
                    report.findings.push(Finding { path: path.clone(), problem: e.to_string() });
                    continue;
                }
            };
            let bad = problems.len() as u64;
            report.findings.extend(problems.into_iter().map(|(path, problem)| Finding { path, problem }));
            if n > 0 {
                report.checked.push(format!(
                    "account '{account}': {} of {n} attachment(s) decrypt and authenticate end to end",
                    n - bad
                ));
            }
        }
        let names: Vec<&str> = accounts.iter().map(AccountName::as_str).collect();
        let strays = strays(self.vault.dir(), &names);
        if strays.is_empty() {
            report.checked.push("no other file lies under the vault directory".to_owned());
        }
        report.findings.extend(strays);
        Ok(report)
    }
}

/// Refuses an account database (`path`, in its account directory) that was lost outside
/// Fieldvault: shorter than one page (no database is), or missing or empty while attachment
/// files of the account remain. Starting an empty database then would let the orphan sweep
/// delete the attachments, and rotating its key would retire the only key to a backup. With
/// no attachments a missing or empty database cannot be told from an account that never
/// stored anything, and is left to be created. One `stat` on every open; the attachment
/// directory is listed only when the database is missing or empty.
fn check_not_lost(path: &Path) -> Result<(), Error> {
    let size = match std::fs::symlink_metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => return Err(Error::Io { op: "stat", path: path.to_path_buf(), source }),
    };
    let attachments = || path.parent().map_or(0, crate::attachments::stored_files);
    let lost = match size {
        0 => Some(attachments()).filter(|&n| n > 0),
        n if n < database::MIN_DATABASE_BYTES => Some(attachments()),
        _ => None,
    };
    match lost {
        Some(attachments) => Err(Error::DatabaseLost { path: path.to_path_buf(), size, attachments }),
        None => Ok(()),
    }
}

/// Everything under the vault directory `dir` that is not a file Fieldvault keeps there
/// (`docs/keys.md`, section 4): such a file may hold plaintext, and `verify` cannot vouch
/// for it. Leftovers of an interrupted write are named as such.
fn strays(dir: &Path, accounts: &[&str]) -> Vec<Finding> {
    use crate::vault::{ACCOUNTS, COUNTER, KEYS, LOCK, MARKER};
    let wal = format!("{DB_FILE}-wal");
    let mut findings = Vec::new();
    // (directory, what may lie in it: files by name, and subdirectories to walk in turn)
    let mut todo = vec![(dir.to_path_buf(), Level::Root)];
    while let Some((at, level)) = todo.pop() {
        let entries = match std::fs::read_dir(&at) {
            Ok(entries) => entries,
            Err(e) => {
                findings.push(Finding { path: at, problem: format!("cannot be listed: {e}") });
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    findings.push(Finding { path: at.clone(), problem: format!("cannot be listed: {e}") });
                    continue;
                }
            };
            let (path, name) = (entry.path(), entry.file_name().to_string_lossy().into_owned());
            let kind = match entry.file_type() {
                Ok(t) if t.is_symlink() => {
                    findings.push(Finding { path, problem: "a symbolic link; Fieldvault writes none".to_owned() });
                    continue;
                }
                Ok(t) if t.is_dir() => Kind::Dir,
                Ok(t) if t.is_file() => Kind::File,
                _ => Kind::Other,
            };
            // A file Fieldvault keeps at this level, or a directory to walk next.
            let walk_into = match (level, kind) {
                (Level::Root, Kind::Dir) if name == ACCOUNTS => Some(Level::Accounts),
                (Level::Accounts, Kind::Dir) if accounts.contains(&name.as_str()) => Some(Level::Account),
                (Level::Account, Kind::Dir) if name == crate::attachments::FILES_DIR => Some(Level::Files),
                _ => None,
            };
            let expected = match (level, kind) {
                _ if walk_into.is_some() => true,
                (Level::Root, Kind::File) => [MARKER, KEYS, COUNTER, LOCK].contains(&name.as_str()),
                (Level::Account, Kind::File) => name == DB_FILE || name == wal,
                (Level::Files, Kind::File) => crate::attachments::is_attachment_file(&name),
                _ => false,
            };
            if let Some(next) = walk_into {
                todo.push((path.clone(), next));
            }
            if !expected {
                let problem = if name.ends_with(crate::disk::TMP_SUFFIX) {
                    "a temporary file left by an interrupted write (the next write of its kind removes it)"
                } else if level == Level::Accounts && kind == Kind::Dir {
                    "a directory of no account of this vault; verify cannot vouch for what it holds"
                } else {
                    "not a file Fieldvault keeps here; verify cannot vouch that it is encrypted"
                };
                findings.push(Finding { path, problem: problem.to_owned() });
            }
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    findings
}

/// What a directory entry is (a symbolic link is reported before it is classified).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Other,
}

/// Where in the vault directory a walk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Root,
    Accounts,
    Account,
    Files,
}

fn integrity_problems(db: &AccountDb) -> Result<Vec<String>, Error> {
    let err = |source| Error::Database { path: db.path.clone(), source };
    let mut stmt = db.conn.prepare("PRAGMA cipher_integrity_check").map_err(err)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
    let mut problems = rows.collect::<Result<Vec<_>, _>>().map_err(err)?;
    let quick: String = db.conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(err)?;
    if quick != "ok" {
        problems.push(format!("SQLite structure: {quick}"));
    }
    Ok(problems)
}

type MemoryRows = Vec<(String, String, i64, i64, String)>;

fn save_memory(db: &AccountDb) -> Result<(std::collections::BTreeSet<String>, MemoryRows), Error> {
    let err = |source| Error::Database { path: db.path.clone(), source };
    let mut stmt =
        db.conn.prepare("SELECT collection, id, version, updated_at, body FROM mem.documents").map_err(err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    Ok((db.memory.clone(), rows))
}

fn restore_memory(db: &mut AccountDb, rows: MemoryRows) -> Result<(), Error> {
    let err = |source| Error::Database { path: db.path.clone(), source };
    for (c, id, v, at, body) in rows {
        db.conn
            .execute(
                "INSERT INTO mem.documents (collection, id, version, updated_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![c, id, v, at, body],
            )
            .map_err(err)?;
    }
    Ok(())
}
