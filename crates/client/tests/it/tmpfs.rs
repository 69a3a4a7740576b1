//! A small tmpfs mounted for a test, to fill a real file system (needs root, as in CI;
//! elsewhere `None` with a message, unless FIELDVAULT_REQUIRE_ROOT_TESTS is set). Shared by
//! the client's, the CLI's and the server's test suites (`#[path]`).

use std::path::PathBuf;
use std::process::Command;

/// A mounted tmpfs at `dir`, unmounted on drop.
pub(crate) struct Tmpfs {
    _tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it), mode 0700.
    pub(crate) fn mount(size: &str) -> Option<Tmpfs> {
        if rustix::process::geteuid().as_raw() != 0 {
            assert!(std::env::var_os("FIELDVAULT_REQUIRE_ROOT_TESTS").is_none(), "these tests must run as root here");
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("small");
        std::fs::create_dir(&dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "mount tmpfs");
        Some(Tmpfs { _tmp: tmp, dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}
