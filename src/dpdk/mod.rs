//! The DPDK layer: the only place in hbgw with `unsafe`.
//!
//! * [`ffi`] — bindgen's raw bindings plus the C shim (`csrc/shim.c`);
//! * [`eal`] — EAL start and cleanup, and the checks that turn EAL's failures
//!   into one-line errors;
//! * [`lcore`] — worker lcores and launching closures on them;
//! * [`mempool`] — the packet buffer pool;
//! * [`port`] — ethdev ports: find by name, configure queues and RSS, start,
//!   stop, read device counters;
//! * [`mbuf`] — [`hbgw_dataplane::io::PacketIo`] over mbuf bursts, which is how
//!   the DPDK-free worker loop runs on real ports;
//! * [`telemetry`] — `/hbgw/stats` and `/hbgw/latency` for `dpdk-telemetry.py`.
//!
//! Every `unsafe` block carries a `SAFETY:` note saying why it holds.

pub mod eal;
pub mod ffi;
pub mod lcore;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod telemetry;

use std::ffi::CStr;

/// DPDK's description of an errno value (`rte_strerror`), which knows DPDK's
/// own error numbers as well as libc's.
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any input value.
    let ptr = unsafe { ffi::rte_strerror(errno) };
    if ptr.is_null() {
        return format!("error {errno}");
    }
    // SAFETY: non-null, NUL-terminated, valid until the next call on this
    // thread; we copy it out at once.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local integer through the shim.
    unsafe { ffi::hbgw_errno() }
}

/// Reads the TSC (`rte_rdtsc`); valid with or without EAL.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: the shim executes one rdtsc instruction; no state is touched.
    unsafe { ffi::hbgw_rdtsc() }
}

/// Prefetches the cache line at `addr` into all cache levels (what
/// `rte_prefetch0` does), so a later read of it does not wait on memory.
#[inline(always)]
pub fn prefetch(addr: *const u8) {
    // SAFETY: `prefetcht0` only hints the cache; it never faults and reads
    // nothing the program sees, whatever the address. SSE is part of the
    // x86_64 baseline, so the instruction always exists.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// The TSC frequency EAL measured.
pub fn tsc_hz() -> u64 {
    // SAFETY: valid after EAL init, which every caller has done (the Eal
    // handle exists); before it, DPDK returns 0, which callers treat as 1 Hz.
    unsafe { ffi::hbgw_get_tsc_hz() }
}

/// The DPDK version string, e.g. `DPDK 22.11.11`.
pub fn version() -> String {
    // rte_version() is a static inline in rte_version.h; the constants it is
    // built from are in the bindings.
    format!(
        "DPDK {}.{:02}.{}",
        ffi::RTE_VER_YEAR,
        ffi::RTE_VER_MONTH,
        ffi::RTE_VER_MINOR
    )
}
