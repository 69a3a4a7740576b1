//! Process hygiene for the Fieldvault binaries (SPEC section 3): a process that holds keys
//! writes no core dump, and other processes of the same user cannot attach to it or read
//! its memory.
//!
//! - [`disable_core_dumps`]: `RLIMIT_CORE` to 0 (soft and hard) and `PR_SET_DUMPABLE` to 0.
//!   `fieldvault` and `fieldvault-server` call it first thing in `main`, before anything can
//!   hold a key, and warn if it fails.
//! - [`core_dumps_disabled`]: whether both hold for this process, read back from the kernel.
//! - [`observe`]: the same two facts about another process, as `/proc` shows them (tests).
//! - [`usage_error`]: a malformed command line as one line on stderr and exit code 2, the
//!   same in both binaries.
//!
//! A crate of its own because it makes system calls: `fieldvault-core` does no IO.
//!
//! ```
//! if let Err(why) = fieldvault_hygiene::disable_core_dumps() {
//!     eprintln!("warning: could not disable core dumps ({why})");
//! }
//! assert!(fieldvault_hygiene::core_dumps_disabled());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod usage;

pub use usage::{reason as usage_reason, usage_error};

use std::io;
use std::os::unix::fs::MetadataExt;

use rustix::process::{
    DumpableBehavior, Resource, Rlimit, dumpable_behavior, getrlimit, set_dumpable_behavior, setrlimit,
};

/// Which step of [`disable_core_dumps`] the kernel refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `setrlimit(RLIMIT_CORE, 0)` failed.
    #[error("setrlimit(RLIMIT_CORE): {0}")]
    CoreLimit(rustix::io::Errno),
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("prctl(PR_SET_DUMPABLE): {0}")]
    Dumpable(rustix::io::Errno),
}

/// Sets `RLIMIT_CORE` to 0 (soft and hard, so nothing in the process can raise it again) and
/// `PR_SET_DUMPABLE` to 0 (no core dump whatever the limit, no `ptrace` by other non-root
/// processes, and the process's `/proc/PID` entries belong to root).
///
/// # Errors
/// The step the kernel refused; the steps before it stay done. Lowering a limit and clearing
/// the dumpable flag need no privilege, so neither fails on Linux in practice.
pub fn disable_core_dumps() -> Result<(), Error> {
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }).map_err(Error::CoreLimit)?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(Error::Dumpable)
}

/// Whether this process can write no core dump: `RLIMIT_CORE` is 0 (soft and hard) and the
/// process is not dumpable, read back from the kernel.
pub fn core_dumps_disabled() -> bool {
    let limit = getrlimit(Resource::Core);
    limit.current == Some(0)
        && limit.maximum == Some(0)
        && matches!(dumpable_behavior(), Ok(DumpableBehavior::NotDumpable))
}

/// A process's core dump settings as another process sees them in `/proc` (Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `RLIMIT_CORE`'s soft limit in bytes (`None`: unlimited), from `/proc/PID/limits`.
    pub core_soft_limit: Option<u64>,
    /// `RLIMIT_CORE`'s hard limit in bytes (`None`: unlimited).
    pub core_hard_limit: Option<u64>,
    /// Whether the process is dumpable. The kernel gives the entries under `/proc/PID` of a
    /// process that is not dumpable (`fd`, `environ`, `mem`, ...) to root, so this compares
    /// the owner of `/proc/PID/fd` with the process's effective user. `None` for a process
    /// running as root, whose entries belong to root either way.
    pub dumpable: Option<bool>,
}

/// Reads process `pid`'s core dump settings from `/proc`; needs no privilege.
///
/// # Errors
/// The process does not exist (any more), or `/proc` is not mounted or has an unexpected
/// shape (`InvalidData`).
pub fn observe(pid: u32) -> io::Result<Observed> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}: {what}"));
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let core = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max core file size"))
        .ok_or_else(|| bad("no core file size in limits"))?;
    let mut fields = core.split_whitespace();
    let mut limit = || match fields.next() {
        Some("unlimited") => Ok(None),
        Some(n) => n.parse().map(Some).map_err(|_| bad("core file size is not a number")),
        None => Err(bad("core file size has no soft and hard limits")),
    };
    let (core_soft_limit, core_hard_limit) = (limit()?, limit()?);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| bad("no effective uid in status"))?;
    let owner = std::fs::metadata(format!("/proc/{pid}/fd"))?.uid();
    let dumpable = (euid != 0).then_some(owner == euid);
    Ok(Observed { core_soft_limit, core_hard_limit, dumpable })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabling_core_dumps_sets_both_settings_as_the_kernel_reports_them() {
        disable_core_dumps().expect("lowering a limit and clearing dumpable need no privilege");
        assert!(core_dumps_disabled());
        let seen = observe(std::process::id()).expect("/proc");
        assert_eq!((seen.core_soft_limit, seen.core_hard_limit), (Some(0), Some(0)));
        if !rustix::process::geteuid().is_root() {
            assert_eq!(seen.dumpable, Some(false));
        }
    }

    #[test]
    fn an_ordinary_process_is_observed_as_dumpable() {
        // `cat` waiting on its stdin, as an unprivileged user when the test runs as root (a
        // root process's `/proc` entries belong to root whether it is dumpable or not).
        let mut cmd = std::process::Command::new("cat");
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
        if rustix::process::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            cmd.uid(65534).gid(65534);
        }
        let mut child = cmd.spawn().expect("spawn cat");
        let seen = observe(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(seen.expect("/proc").dumpable, Some(true));
    }
}
