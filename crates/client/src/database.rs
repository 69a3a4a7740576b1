//! One account's SQLCipher 4 database (`accounts/<name>/documents.db`).
//!
//! Keyed with the account's raw 256-bit database key (`PRAGMA key = "x'…'"`: no PBKDF2 on
//! this path). Every cipher setting is set explicitly on open, so the file does not depend
//! on a library's defaults; `docs/formats/database.md` lists them for other SQLCipher 4
//! clients. A file that starts with the plaintext SQLite header is refused: encryption that
//! is silently off is a failure, not a mode.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use fieldvault_core::DataKey;
use rusqlite::{Connection, OpenFlags};
use zeroize::Zeroizing;

use crate::Error;
use crate::disk::Disk;

/// The database file in an account directory.
pub(crate) const DB_FILE: &str = "documents.db";
use fieldvault_core::sqlcipher::PLAINTEXT_HEADER;

/// The connection settings applied after the key checks out.
const CONNECTION_SETTINGS: &str = "
    PRAGMA page_size = 8192;
    PRAGMA temp_store = MEMORY;
    PRAGMA trusted_schema = OFF;
    PRAGMA foreign_keys = ON;
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    -- SQLCipher keeps decrypted pages only in SQLite's page cache: every miss costs an HMAC
    -- and an AES pass, where plain SQLite copies from the OS cache. SQLite's 2 MiB default
    -- made warm reads 3.5x plain SQLite. The cap is 256 MiB; memory is taken only as pages
    -- are read, so a small vault uses little.
    PRAGMA cache_size = -262144;
";

/// Schema version 1. A rowid table, not WITHOUT ROWID: a WITHOUT ROWID b-tree keeps at most
/// about 1000 bytes of a row on its 4 KiB page, so every ~1 KiB document spilled onto an
/// overflow page of its own (4x the file, and an extra page to decrypt per read).
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS documents (
        seq        INTEGER PRIMARY KEY,
        collection TEXT NOT NULL,
        id         TEXT NOT NULL,
        version    INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        body       TEXT NOT NULL,
        UNIQUE (collection, id)
    );
";

/// Schema version 2 adds attachment metadata. The content key is stored wrapped by the
/// account's files key; the encrypted file is `files/<id>.fva`.
const SCHEMA_V2: &str = "
    CREATE TABLE IF NOT EXISTS attachments (
        id          TEXT PRIMARY KEY,
        collection  TEXT NOT NULL,
        doc_id      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        wrapped_cek BLOB NOT NULL,
        key_version INTEGER NOT NULL,
        root        BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS attachments_by_document ON attachments (collection, doc_id);
";
/// Schema version 3 adds sync (docs/sync.md): the version the server last sent of each
/// document, the outbox of local changes, the conflicts and refused changes kept for the app,
/// and the account's sync state (one row of named values).
const SCHEMA_V3: &str = "
    CREATE TABLE IF NOT EXISTS sync_docs (
        collection     TEXT NOT NULL,
        id             TEXT NOT NULL,
        server_version INTEGER NOT NULL,
        base_body      TEXT,
        PRIMARY KEY (collection, id)
    );
    CREATE TABLE IF NOT EXISTS outbox (
        seq             INTEGER PRIMARY KEY,
        collection      TEXT NOT NULL,
        id              TEXT NOT NULL,
        op              TEXT NOT NULL CHECK (op IN ('put', 'delete')),
        idempotency_key TEXT NOT NULL UNIQUE,
        queued_at_ms    INTEGER NOT NULL,
        stamped         INTEGER NOT NULL,
        inflight        INTEGER NOT NULL DEFAULT 0,
        base_version    INTEGER,
        body            TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        held            TEXT,
        UNIQUE (collection, id, inflight)
    );
    CREATE TABLE IF NOT EXISTS conflicts (
        collection     TEXT NOT NULL,
        id             TEXT NOT NULL,
        local_op       TEXT NOT NULL,
        local_body     TEXT,
        server_version INTEGER NOT NULL,
        server_body    TEXT,
        at_ms          INTEGER NOT NULL,
        PRIMARY KEY (collection, id)
    );
    CREATE TABLE IF NOT EXISTS rejected (
        seq        INTEGER PRIMARY KEY,
        collection TEXT NOT NULL,
        id         TEXT NOT NULL,
        op         TEXT NOT NULL,
        body       TEXT,
        status     TEXT NOT NULL,
        at_ms      INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS sync_seen (
        collection TEXT NOT NULL,
        id         TEXT NOT NULL,
        PRIMARY KEY (collection, id)
    );
    CREATE TABLE IF NOT EXISTS sync_state (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
";
/// Schema version 4 adds attachment sync (ADR 0008, docs/sync.md section 13): whether an
/// attachment's bytes are here, the attachments a pulled document lists that this device
/// has no key for yet, the uploads still owed to the server (every attachment made before
/// this version is owed one), the collections whose attachments are downloaded eagerly, the
/// list the server holds with each document's version, and the list frozen with an op in
/// flight.
const SCHEMA_V4: &str = "
    ALTER TABLE attachments ADD COLUMN present INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE IF NOT EXISTS attachment_remote (
        id         TEXT PRIMARY KEY,
        collection TEXT NOT NULL,
        doc_id     TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        error      TEXT
    );
    CREATE INDEX IF NOT EXISTS attachment_remote_by_document ON attachment_remote (collection, doc_id);
    CREATE TABLE IF NOT EXISTS attachment_uploads (
        id           TEXT PRIMARY KEY,
        queued_at_ms INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        relisted     INTEGER NOT NULL DEFAULT 0,
        refused      TEXT
    );
    INSERT OR IGNORE INTO attachment_uploads (id, queued_at_ms) SELECT id, created_at FROM attachments;
    CREATE TABLE IF NOT EXISTS attachment_prefetch (
        collection TEXT PRIMARY KEY
    );
    ALTER TABLE sync_docs ADD COLUMN attachments TEXT;
    ALTER TABLE outbox ADD COLUMN attachments TEXT;
";
/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 4;

fn db_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |source| Error::Database { path: path.to_path_buf(), source }
}

/// `PRAGMA key = "x'<64 hex>'"` in zeroized memory.
fn key_pragma(schema: &str, key: &DataKey) -> Zeroizing<String> {
    fieldvault_core::sqlcipher::key_pragma(schema, key.expose_secret())
}

fn apply_cipher_settings(conn: &Connection, schema: &str, path: &Path) -> Result<(), Error> {
    // One batch: each statement has its own prepare cost, and every open pays it.
    conn.execute_batch(&fieldvault_core::sqlcipher::cipher_settings_sql(schema)).map_err(db_err(path))
}

/// Refuses a file whose first bytes are SQLite's plaintext header. Creates a missing file
/// empty with mode 0600 (SQLite gives its -wal and -journal files the same mode), and checks
/// an existing one is a private regular file of ours. Returns whether the file holds no
/// database yet (missing or shorter than a salt).
fn prepare_file(path: &Path) -> Result<bool, Error> {
    let mut f = crate::disk::open_private(path)?;
    let size = f.metadata().map_err(|source| Error::Io { op: "stat", path: path.to_path_buf(), source })?.len();
    if size == 0 {
        return Ok(true);
    }
    // No database is shorter than one page: this one was cut short (never start afresh
    // over it; SQLite would treat a few bytes as an empty database).
    if size < MIN_DATABASE_BYTES {
        return Err(Error::DatabaseLost { path: path.to_path_buf(), size, attachments: 0 });
    }
    let mut head = [0u8; 16];
    match f.read_exact(&mut head) {
        Ok(()) if &head == PLAINTEXT_HEADER => Err(Error::PlaintextDatabase { path: path.to_path_buf() }),
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(true),
        Err(source) => Err(Error::Io { op: "read", path: path.to_path_buf(), source }),
    }
}

/// Makes every committed transaction durable now: a full checkpoint syncs the WAL, copies it
/// into the database file and syncs that. With `synchronous = NORMAL` a commit alone is not
/// synced, which is fine for ordinary writes (a power cut may lose the last ones, never
/// corrupt) but not before deleting something the commit replaces: a retired key, the
/// plaintext file of a migration, the attachment files of a deleted document.
pub(crate) fn make_durable(conn: &Connection, path: &Path) -> Result<(), Error> {
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(FULL)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(db_err(path))?;
    if busy != 0 {
        return Err(Error::Database {
            path: path.to_path_buf(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("the checkpoint could not finish".into()),
            ),
        });
    }
    Ok(())
}

/// The page cache a sync runs with, in KiB. A sync streams every pulled or pushed document
/// through the cache once, so the 256 MiB cap of everyday reads would only grow the process
/// with pages it will not read again (measured: peak RSS of a 100k-document drain 164 MiB
/// at 256 MiB, 54 MiB at 16 MiB, no slower; docs/performance.md, "Sync").
pub(crate) const SYNC_CACHE_KIB: i64 = 16 * 1024;

/// Runs `f` with the connection's page cache capped at `kib`, then restores the everyday
/// cap and gives back the memory over it.
pub(crate) fn with_cache_cap<T>(
    conn: &mut Connection,
    path: &Path,
    kib: i64,
    f: impl FnOnce(&mut Connection) -> T,
) -> Result<T, Error> {
    conn.execute_batch(&format!("PRAGMA cache_size = -{kib};")).map_err(db_err(path))?;
    let out = f(conn);
    conn.execute_batch("PRAGMA cache_size = -262144; PRAGMA shrink_memory;").map_err(db_err(path))?;
    Ok(out)
}

/// SQLite's smallest page: every database file, once written, holds at least one page.
pub(crate) const MIN_DATABASE_BYTES: u64 = 512;

/// Settles SQLCipher's process-wide state once per process, before the first connection:
/// refuses a build that is not SQLCipher 4 (a plain SQLite build accepts `PRAGMA key`
/// silently and writes plaintext; the build cannot change while the process runs), turns
/// off SQLCipher's log (it would print HMAC failures to stderr; they reach the caller as
/// errors), and makes every cipher setting SQLCipher's default (`cipher_default_*`), so a
/// connection to an existing file needs no setting statement of its own (six statements,
/// about 5 us of every open), and so that they are in force when a key is set: SQLCipher
/// sizes a new file's page reserve then, from the defaults, and SQLite never shrinks it
/// (SQLCipher's own defaults left 80 bytes per page instead of 48). Retried on the next
/// open if it fails.
fn settle_process(path: &Path) -> Result<(), Error> {
    static SETTLED: Mutex<bool> = Mutex::new(false);
    let mut settled = SETTLED.lock().unwrap_or_else(PoisonError::into_inner);
    if *settled {
        return Ok(());
    }
    let conn = Connection::open_in_memory().map_err(db_err(path))?;
    let version: String = conn
        .query_row("PRAGMA cipher_version", [], |r| r.get(0))
        .map_err(|_| Error::PlaintextDatabase { path: path.to_path_buf() })?;
    if !version.starts_with('4') {
        return Err(Error::PlaintextDatabase { path: path.to_path_buf() });
    }
    conn.execute_batch("PRAGMA cipher_log_level = NONE;").map_err(db_err(path))?;
    conn.execute_batch(&fieldvault_core::sqlcipher::cipher_default_settings_sql()).map_err(db_err(path))?;
    *settled = true;
    Ok(())
}

/// Whether an error is SQLCipher's answer to a wrong key or a damaged first page.
fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase)
}

/// Opens (creating if missing) an encrypted database with `key`.
///
/// # Errors
/// [`Error::PlaintextDatabase`] for an unencrypted file; [`Error::DatabaseKey`] when the
/// key does not open it (wrong key, or page 1 damaged: SQLCipher cannot tell these apart);
/// [`Error::Database`] otherwise.
pub(crate) fn open(path: &Path, key: &DataKey) -> Result<Connection, Error> {
    open_with(path, Some(key))
}

/// The same connection, schema and settings without any key: the plain-SQLite baseline the
/// benchmark compares against. Compiled only with the `bench-baseline` feature.
#[cfg(feature = "bench-baseline")]
pub(crate) fn open_plain_baseline(path: &Path) -> Result<Connection, Error> {
    open_with(path, None)
}

fn open_with(path: &Path, key: Option<&DataKey>) -> Result<Connection, Error> {
    let new_file = match key {
        Some(_) => prepare_file(path)?,
        None => false,
    };
    settle_process(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags).map_err(db_err(path))?;
    // One process holds the vault (flock): exclusive locking keeps the WAL index in heap
    // memory, so no -shm file is ever written. Set before the first read touches the file.
    conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE;").map_err(db_err(path))?;
    if let Some(key) = key {
        conn.execute_batch(&key_pragma("main", key)).map_err(db_err(path))?;
        // The process defaults carry every cipher setting (`settle_process`). A file that
        // exists is authenticated under them on the first read below: any page size, HMAC,
        // KDF or header setting other than its own fails page 1 (tested). A new file gets
        // them again explicitly, so what it is created with does not rest on process state.
        if new_file {
            apply_cipher_settings(&conn, "main", path)?;
        }
    }
    // The first read: page 1, decrypted and HMAC-checked. A key that does not decrypt it
    // gets SQLITE_NOTADB from SQLCipher.
    let version: i64 = match conn.query_row("PRAGMA user_version", [], |r| r.get(0)) {
        Ok(v) => v,
        Err(e) if key.is_some() && is_not_a_database(&e) => {
            return Err(Error::DatabaseKey { path: path.to_path_buf() });
        }
        Err(e) => return Err(db_err(path)(e)),
    };
    conn.execute_batch(CONNECTION_SETTINGS).map_err(db_err(path))?;
    // Create or upgrade the schema once: a write on every open would cost every cold read.
    let upgrade = match version {
        0 => format!("{SCHEMA} {SCHEMA_V2} {SCHEMA_V3} {SCHEMA_V4}"),
        1 => format!("{SCHEMA_V2} {SCHEMA_V3} {SCHEMA_V4}"),
        2 => format!("{SCHEMA_V3} {SCHEMA_V4}"),
        3 => SCHEMA_V4.to_owned(),
        SCHEMA_VERSION => String::new(),
        v => {
            return Err(Error::Database {
                path: path.to_path_buf(),
                source: rusqlite::Error::InvalidParameterName(format!(
                    "schema version {v} is newer than this build ({SCHEMA_VERSION})"
                )),
            });
        }
    };
    if !upgrade.is_empty() {
        conn.execute_batch(&format!("BEGIN; {upgrade} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
            .map_err(db_err(path))?;
    }
    Ok(conn)
}

/// Attaches a memory-only database as `mem`, with the same table. Unencrypted because it is
/// never written anywhere: `temp_store = MEMORY`, and an in-memory database has no files.
pub(crate) fn attach_memory(conn: &Connection, path: &Path) -> Result<(), Error> {
    conn.execute_batch("ATTACH DATABASE ':memory:' AS mem KEY '';").map_err(db_err(path))?;
    conn.execute_batch(&SCHEMA.replace("IF NOT EXISTS documents", "IF NOT EXISTS mem.documents")).map_err(db_err(path))
}

/// Re-keys the database at `path` from `old` to `new`, crash-safely: the whole database is
/// exported (`sqlcipher_export`) into a temporary file under `new`, synced, and renamed
/// over the old one. A crash leaves the old file (and a temporary one, removed on the next
/// run) or the new one. Idempotent: a database that already opens with `new` is left as is.
///
/// # Errors
/// [`Error::NoSpace`] when the free space cannot hold a second copy; database errors.
pub(crate) fn rekey(disk: &Disk, path: &Path, old: &DataKey, new: &DataKey) -> Result<(), Error> {
    if !path.exists() {
        return Ok(());
    }
    let conn = match open(path, old) {
        Ok(c) => c,
        Err(Error::DatabaseKey { .. }) => {
            // Already re-keyed before a crash? Then there is nothing left to do.
            open(path, new)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    disk.ensure_free_space(path, space_for_copy(path))?;
    // Everything into the main file first, so the old WAL holds nothing the export lacks.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(db_err(path))?;
    let tmp: PathBuf = crate::disk::tmp_path(path);
    disk.remove_file(&tmp)?;
    disk.remove_file(&journal_path(&tmp))?;
    drop(crate::disk::open_private(&tmp)?); // created 0600 before SQLite writes to it
    let attach = format!("ATTACH DATABASE '{}' AS rekeyed KEY '';", tmp.display().to_string().replace('\'', "''"));
    conn.execute_batch(&attach).map_err(db_err(path))?;
    conn.execute_batch(&key_pragma("rekeyed", new)).map_err(db_err(path))?;
    apply_cipher_settings(&conn, "rekeyed", path)?;
    disk.step("export", path)?;
    conn.query_row("SELECT sqlcipher_export('rekeyed')", [], |_| Ok(())).map_err(db_err(path))?;
    // The export copies tables and rows, not the schema version: without it the copy would
    // be upgraded again from version 0 on its next open.
    let version: i64 = conn.query_row("PRAGMA main.user_version", [], |r| r.get(0)).map_err(db_err(path))?;
    conn.execute_batch(&format!("PRAGMA rekeyed.user_version = {version};")).map_err(db_err(path))?;
    conn.execute_batch("DETACH DATABASE rekeyed;").map_err(db_err(path))?;
    drop(conn);
    disk.sync_file(&tmp)?;
    disk.rename(&tmp, path)?;
    // The old WAL belongs to the old file: after a clean close it is empty or gone.
    disk.remove_file(&wal_path(path))
}

pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The database's write-ahead log.
pub(crate) fn wal_path(path: &Path) -> PathBuf {
    suffixed(path, "-wal")
}

/// A rollback journal (the export target uses one while it is written).
pub(crate) fn journal_path(path: &Path) -> PathBuf {
    suffixed(path, "-journal")
}

/// Free space a re-key needs: a second copy of the database and its WAL, plus margin.
pub(crate) fn space_for_copy(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    (size(path) + size(&wal_path(path))).saturating_mul(11) / 10 + (1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::cipher::{AES_256, DecryptingKey, DecryptionContext, UnboundCipherKey};
    use aws_lc_rs::iv::FixedLength;

    fn test_key() -> DataKey {
        DataKey::from_bytes(Zeroizing::new([0x42; 32]))
    }

    fn written_db(dir: &Path) -> PathBuf {
        let path = dir.join(DB_FILE);
        let conn = open(&path, &test_key()).expect("open");
        conn.execute_batch(
            "INSERT INTO documents (collection, id, version, updated_at, body) VALUES ('c', 'a', 1, 0, '{}');",
        )
        .expect("write");
        drop(conn);
        path
    }

    /// The page reserve recorded in page 1's header, decrypted with `key`. SQLCipher puts
    /// the IV (16) and HMAC-SHA256 (32) in the last 48 bytes of each page whatever reserve
    /// SQLite keeps; page 1 is salt (16), ciphertext up to those 48 bytes, IV, HMAC.
    fn page1_reserve(path: &Path, key: [u8; 32]) -> u8 {
        let file = std::fs::read(path).expect("read");
        let iv_at = 8192 - 48;
        let iv: [u8; 16] = file[iv_at..iv_at + 16].try_into().expect("16 bytes");
        let mut page = file[16..iv_at].to_vec();
        let cbc = DecryptingKey::cbc(UnboundCipherKey::new(&AES_256, &key).expect("key")).expect("cbc");
        let plain = cbc.decrypt(&mut page, DecryptionContext::Iv128(FixedLength::from(iv))).expect("decrypt");
        // Header offsets 16..18: page size; 20: reserved bytes per page.
        assert_eq!(&plain[..2], &[0x20, 0x00], "page 1 did not decrypt to an 8 KiB-page header");
        plain[4]
    }

    #[test]
    fn a_new_file_reserves_exactly_iv_and_hmac_sha256_on_every_page() {
        // SQLCipher sizes a page's reserve when the key is set, from its defaults, and
        // SQLite never shrinks a reserve afterwards: with SQLCipher's own defaults
        // (HMAC-SHA512) files kept 80 bytes per page, 32 of them unused.
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(page1_reserve(&written_db(dir.path()), [0x42; 32]), 48);
    }

    #[test]
    fn a_rotation_rewrites_an_old_80_byte_reserve_as_48() {
        // A file made the way releases before the process defaults made them: keyed while
        // SQLCipher's HMAC-SHA512 sized an 80-byte reserve, then switched to HMAC-SHA256;
        // SQLite keeps the larger reserve for the life of the file.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DB_FILE);
        open(&dir.path().join("settle.db"), &test_key()).expect("process defaults settled");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(&key_pragma("main", &test_key())).expect("key");
        conn.execute_batch("PRAGMA cipher_hmac_algorithm = HMAC_SHA512; PRAGMA cipher_hmac_algorithm = HMAC_SHA256;")
            .expect("settings");
        conn.execute_batch(SCHEMA).expect("schema");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA user_version = 1; INSERT INTO documents \
             (collection, id, version, updated_at, body) VALUES ('c', 'a', 1, 0, '{\"old\":true}');",
        )
        .expect("write");
        drop(conn);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("0600");
        assert_eq!(page1_reserve(&path, [0x42; 32]), 80, "the old layout was not reproduced");
        let conn = open(&path, &test_key()).expect("an 80-byte-reserve file opens as before");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        assert_eq!(version, SCHEMA_VERSION, "a version-1 file is upgraded on open");
        drop(conn);

        let new = DataKey::from_bytes(Zeroizing::new([0x17; 32]));
        rekey(&Disk::default(), &path, &test_key(), &new).expect("rekey");
        assert_eq!(page1_reserve(&path, [0x17; 32]), 48, "the rotated file still leaves 32 bytes a page unused");
        let conn = open(&path, &new).expect("opens under the new key");
        let body: String =
            conn.query_row("SELECT body FROM documents WHERE id = 'a'", [], |r| r.get(0)).expect("the row survived");
        assert_eq!(body, r#"{"old":true}"#);
    }

    #[test]
    fn an_existing_file_under_any_other_cipher_setting_is_refused_on_the_first_read() {
        // Connections to an existing file rely on the process defaults: any setting other
        // than the file's must fail closed, never read the file another way.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written_db(dir.path());
        for other in [
            "PRAGMA cipher_page_size = 4096;",
            "PRAGMA cipher_hmac_algorithm = HMAC_SHA512;",
            "PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA256;",
            "PRAGMA cipher_use_hmac = OFF;",
            "PRAGMA cipher_plaintext_header_size = 32;",
        ] {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(&key_pragma("main", &test_key())).expect("key");
            conn.execute_batch(other).expect("setting");
            let read = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
            assert!(matches!(&read, Err(e) if is_not_a_database(e)), "{other} gave {read:?}");
        }
        open(&path, &test_key()).expect("the documented settings still open it");
    }
}
