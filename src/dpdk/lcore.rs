//! Lcores: which ones EAL enabled, and running a closure on one.

use super::{ffi, strerror};
use std::ffi::{c_int, c_void};

/// The main lcore (the thread that called `rte_eal_init`).
pub fn main_lcore() -> u32 {
    // SAFETY: reads EAL's configuration; valid after init.
    unsafe { ffi::rte_get_main_lcore() }
}

/// Whether EAL enabled `lcore` (`-l`/`-c`).
pub fn is_enabled(lcore: u32) -> bool {
    if lcore >= ffi::RTE_MAX_LCORE {
        return false;
    }
    // SAFETY: reads EAL's configuration; the index is in range.
    unsafe { ffi::rte_lcore_is_enabled(lcore) != 0 }
}

/// Every enabled lcore except the main one, in order.
pub fn worker_lcores() -> Vec<u32> {
    let mut out = Vec::new();
    let mut i = u32::MAX; // rte_get_next_lcore starts after -1
    loop {
        // SAFETY: reads EAL's configuration; returns RTE_MAX_LCORE when done.
        i = unsafe { ffi::rte_get_next_lcore(i, 1, 0) };
        if i >= ffi::RTE_MAX_LCORE {
            return out;
        }
        out.push(i);
    }
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch` for exactly this call;
    // EAL calls the function once, so the box is reclaimed once.
    let job = unsafe { Box::from_raw(arg as *mut Job) };
    job()
}

/// Runs `job` on worker lcore `lcore` (`rte_eal_remote_launch`).
pub fn launch(lcore: u32, job: impl FnOnce() -> i32 + Send + 'static) -> Result<(), String> {
    let boxed: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: the trampoline has the signature EAL expects and takes
    // ownership of `arg`; the closure is Send, so running it on another
    // thread is sound.
    let rc = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if rc != 0 {
        // SAFETY: EAL did not take the job, so we still own the box.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(format!("cannot launch a worker on lcore {lcore}: {}", strerror(-rc)));
    }
    Ok(())
}

/// Waits until every worker lcore has returned.
pub fn wait_all() {
    // SAFETY: called from the main lcore after launching; blocks until the
    // workers return.
    unsafe { ffi::rte_eal_mp_wait_lcore() }
}
