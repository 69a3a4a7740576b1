//! Crash-safe file operations and the vault's permission rules.
//!
//! Every change to a vault record is: write a temporary file (0600) in the same directory,
//! fsync it, rename it over the target, fsync the directory. A crash at any point leaves
//! either the old file or the new one, never a mix. Tests inject a "crash" before any
//! single step (see [`Disk::crashing_at`]); from then on every step fails, as it would in
//! a dead process, so no cleanup runs either.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Error;

/// Mode of every directory in a vault.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file in a vault.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Suffix of temporary files; any left by a crash are removed on the next open.
pub(crate) const TMP_SUFFIX: &str = ".fvtmp";

#[derive(Debug)]
struct Crash {
    at: usize,
    steps: AtomicUsize,
}

/// The file system, with an optional injected crash.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    crash: Option<Arc<Crash>>,
}

/// Maps an I/O error on `path` during `op` to [`Error::Io`].
pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io { op, path: path.to_path_buf(), source }
}

impl Disk {
    /// A disk on which step number `at` (0-based) and every later step fail.
    #[cfg(test)]
    pub(crate) fn crashing_at(at: usize) -> Self {
        Disk { crash: Some(Arc::new(Crash { at, steps: AtomicUsize::new(0) })) }
    }

    /// Whether the injected crash has happened.
    #[cfg(test)]
    pub(crate) fn crashed(&self) -> bool {
        self.crash.as_ref().is_some_and(|c| c.steps.load(Ordering::SeqCst) > c.at)
    }

    pub(crate) fn step(&self, op: &'static str, path: &Path) -> Result<(), Error> {
        if let Some(c) = &self.crash
            && c.steps.fetch_add(1, Ordering::SeqCst) >= c.at
        {
            return Err(Error::Io { op, path: path.to_path_buf(), source: io::Error::other("injected crash") });
        }
        Ok(())
    }

    /// Creates a directory with mode 0700 whatever the umask, and syncs its parent.
    pub(crate) fn create_dir(&self, path: &Path) -> Result<(), Error> {
        self.step("create directory", path)?;
        DirBuilder::new().mode(DIR_MODE).create(path).map_err(io_err("create directory", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err("chmod", path))?;
        self.sync_parent(path)
    }

    /// Replaces `path` with `bytes` atomically (temp file, fsync, rename, fsync directory).
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let tmp = tmp_path(path);
        self.step("create", &tmp)?;
        // A temporary file left by a crash is ours (callers hold the vault lock): replace it.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &tmp)(e)),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE)).map_err(io_err("chmod", &tmp))?;
        self.step("write", &tmp)?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        self.step("fsync", &tmp)?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        self.step("rename", path)?;
        fs::rename(&tmp, path).map_err(io_err("rename", path))?;
        self.sync_parent(path)
    }

    /// Removes a file (absent is fine) and syncs its directory.
    pub(crate) fn remove_file(&self, path: &Path) -> Result<(), Error> {
        self.step("remove", path)?;
        match fs::remove_file(path) {
            Ok(()) => self.sync_parent(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", path)(e)),
        }
    }

    /// Removes a directory tree (absent is fine; symbolic links are removed, not followed)
    /// and syncs its parent.
    pub(crate) fn remove_tree(&self, path: &Path) -> Result<(), Error> {
        self.step("remove directory", path)?;
        match fs::remove_dir_all(path) {
            Ok(()) => self.sync_parent(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove directory", path)(e)),
        }
    }

    /// Syncs a file's contents to disk.
    pub(crate) fn sync_file(&self, path: &Path) -> Result<(), Error> {
        self.step("fsync", path)?;
        File::open(path).and_then(|f| f.sync_all()).map_err(io_err("fsync", path))
    }

    /// Renames `from` over `to` (same directory) and syncs the directory.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<(), Error> {
        self.step("rename", to)?;
        fs::rename(from, to).map_err(io_err("rename", to))?;
        self.sync_parent(to)
    }

    /// Fails with [`Error::NoSpace`] unless the file system holding `path` has `needed`
    /// bytes free for this user.
    pub(crate) fn ensure_free_space(&self, path: &Path, needed: u64) -> Result<(), Error> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let st = rustix::fs::statvfs(dir).map_err(|e| io_err("statvfs", dir)(e.into()))?;
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        if available < needed {
            return Err(Error::NoSpace { path: dir.to_path_buf(), needed, available });
        }
        Ok(())
    }

    fn sync_parent(&self, path: &Path) -> Result<(), Error> {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        self.step("fsync directory", parent)?;
        File::open(parent).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", parent))
    }
}

/// `dir/.name.fvtmp`: hidden, in the same directory (so the rename is atomic).
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}{TMP_SUFFIX}"))
}

/// Reads a whole vault file after checking that it is a plain file, ours and private.
/// `Ok(None)` when it does not exist.
pub(crate) fn read_private(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let file = match open_checked(OpenOptions::new().read(true), path) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        other => other?,
    };
    let mut bytes = Vec::new();
    (&file).read_to_end(&mut bytes).map_err(io_err("read", path))?;
    Ok(Some(bytes))
}

/// Opens (creating if needed) a private file without following a symbolic link, and
/// checks the file it opened.
pub(crate) fn open_private(path: &Path) -> Result<File, Error> {
    open_checked(OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(FILE_MODE), path)
}

/// Opens an existing vault file for reading, without following a symbolic link, and checks
/// the file it opened (a plain file, ours, private).
pub(crate) fn open_read_private(path: &Path) -> Result<File, Error> {
    open_checked(OpenOptions::new().read(true), path)
}

/// Opens with O_NOFOLLOW, then checks the file actually opened (fstat): no window between
/// the check and the use.
fn open_checked(options: &mut OpenOptions, path: &Path) -> Result<File, Error> {
    let file = options.custom_flags(NOFOLLOW).open(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            Error::UnexpectedFileType { path: path.to_path_buf(), expected: "file" }
        } else {
            io_err("open", path)(e)
        }
    })?;
    let meta = file.metadata().map_err(io_err("stat", path))?;
    check_private(path, &meta, false)?;
    Ok(file)
}

const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Checks a directory: a real directory, ours, mode 0700 (no group or other bits).
pub(crate) fn check_private_dir(path: &Path) -> Result<(), Error> {
    let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    check_private(path, &meta, true)
}

fn check_private(path: &Path, meta: &fs::Metadata, dir: bool) -> Result<(), Error> {
    let right_type = if dir { meta.file_type().is_dir() } else { meta.file_type().is_file() };
    if !right_type {
        return Err(Error::UnexpectedFileType {
            path: path.to_path_buf(),
            expected: if dir { "directory" } else { "file" },
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::NotOwned { path: path.to_path_buf(), owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        let expected = if dir { DIR_MODE } else { FILE_MODE };
        return Err(Error::LoosePermissions { path: path.to_path_buf(), mode, expected });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_is_private_whatever_the_umask_and_crashes_leave_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        Disk::default().write_atomic(&p, b"old").expect("write");
        assert_eq!(fs::metadata(&p).expect("stat").mode() & 0o777, 0o600);
        // Steps: create, write, fsync, rename, fsync directory.
        for at in 0..4 {
            let d = Disk::crashing_at(at);
            assert!(d.write_atomic(&p, b"new").is_err());
            assert_eq!(fs::read(&p).expect("read"), b"old", "crash at step {at}");
        }
        // The temporary file a crash left behind does not block the next write.
        Disk::default().write_atomic(&p, b"old2").expect("write over a stale temporary file");
        assert!(!tmp_path(&p).exists());
        // Crashing at the final fsync leaves the new file in place: the rename happened.
        let d = Disk::crashing_at(4);
        assert!(d.write_atomic(&p, b"new").is_err());
        assert_eq!(fs::read(&p).expect("read"), b"new");
    }

    #[test]
    fn loose_permissions_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        Disk::default().write_atomic(&p, b"x").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(read_private(&p), Err(Error::LoosePermissions { mode: 0o644, .. })));
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&p, &link).expect("symlink");
        assert!(matches!(read_private(&link), Err(Error::UnexpectedFileType { .. })));
    }
}
