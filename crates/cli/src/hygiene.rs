//! Process hygiene (SPEC section 3): no core dumps, no ptrace by other same-user processes.

use rustix::process::{
    DumpableBehavior, Resource, Rlimit, dumpable_behavior, getrlimit, set_dumpable_behavior, setrlimit,
};

/// Sets RLIMIT_CORE to 0 and PR_SET_DUMPABLE to 0. Returns what failed, if anything.
pub fn disable_core_dumps() -> Result<(), String> {
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })
        .map_err(|e| format!("setrlimit(RLIMIT_CORE): {e}"))?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))
}

/// Whether this process can write a core dump, read back from the kernel.
pub fn core_dumps_disabled() -> bool {
    let limit = getrlimit(Resource::Core);
    limit.current == Some(0)
        && limit.maximum == Some(0)
        && matches!(dumpable_behavior(), Ok(DumpableBehavior::NotDumpable))
}
