//! Priorities of the control plane's background threads, and the thread
//! that frees the indicator sets workers let go of ([`free_retired`]).
//!
//! On a gateway the workers own their cores, and everything else (the
//! control plane's runtime, Central's updates being applied, heartbeats)
//! shares what is left. Work that is only ever catching up — serialising
//! and writing the whole last-known-good state, folding indicator layers
//! into a new base — runs at a lower priority, so that an update on its way
//! to the workers never waits behind it for a core. It must never be used
//! for a thread that holds a lock an update needs, even the allocator's: a
//! preempted holder makes the update wait (priority inversion; measured at
//! ~1 s when the state copy, Central's materialiser or the freeing of a
//! parsed snapshot ran lowered).

use hbgw_shared::state::GatewayState;

/// The niceness of catch-up threads (serialising and writing the whole
/// state): under contention they get ~1.5% of a
/// core against a normal thread (CFS weights 15 : 1024), never nothing, and
/// all of an idle one.
pub const CATCH_UP_NICE: i32 = 19;

/// The niceness of the indicator compaction: ~10% of a core against a
/// normal thread (110 : 1024). Its result is what keeps every lookup to one
/// probe, so it must not starve behind a steady stream of updates either.
pub const COMPACTION_NICE: i32 = 10;

/// Lowers the calling thread's priority to `nice` (see [`CATCH_UP_NICE`],
/// [`COMPACTION_NICE`]). Failing is harmless (the thread runs at normal
/// priority) and logged.
pub fn lower_current_thread(nice: i32) {
    // Linux applies a thread ID's niceness to that thread alone.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::debug!("cannot lower a background thread's priority ({e}); it runs at normal priority");
    }
}

/// Puts thread `tid` of this process back at the process's own priority:
/// for a background thread that work on the critical path has come to
/// wait for (see `client::maybe_compact`). Needs `CAP_SYS_NICE` (a
/// gateway runs as root); failing leaves the thread lowered, and is
/// logged. Returns whether it was raised.
pub fn restore_thread(tid: i32) -> bool {
    let raised = rustix::process::Pid::from_raw(tid).ok_or(rustix::io::Errno::INVAL).and_then(|pid| {
        let own = rustix::process::getpriority_process(None)?;
        rustix::process::setpriority_process(Some(pid), own)
    });
    if let Err(e) = &raised {
        tracing::debug!("cannot raise background thread {tid} to normal priority ({e}); it stays lowered");
    }
    raised.is_ok()
}

/// The calling thread's ID, for [`restore_thread`].
pub fn current_thread_id() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// The CPU time the calling thread has used (zero if the clock cannot be
/// read): what a background job cost, apart from the time it waited.
pub fn thread_cpu_time() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Frees, on a thread of its own, the indicator sets the workers have let
/// go of ([`GatewayState::reclaim`]): a replaced base of millions of
/// indicators takes a fraction of a second to free (~0.2 s measured at
/// 2.8M), which neither a worker nor the control plane's runtime may spend.
/// At normal priority: freeing takes the allocator's arena locks (see the
/// module docs). Call it after publishing indicators, and now and then.
pub fn free_retired(state: &GatewayState) {
    let unheld = state.reclaim();
    if unheld.is_empty() {
        return;
    }
    // Should the thread not start, the closure, and with it the sets, is
    // dropped here.
    if let Err(e) = std::thread::Builder::new().name("hbgw-free".into()).spawn(move || drop(unheld)) {
        tracing::debug!("cannot start a thread to free old indicator sets ({e}): freed on this one");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thread_cpu_time_counts_work_not_waiting() {
        use std::time::{Duration, Instant};
        let t0 = super::thread_cpu_time();
        std::thread::sleep(Duration::from_millis(60));
        let slept = super::thread_cpu_time() - t0;
        assert!(slept < Duration::from_millis(30), "{slept:?} of CPU while asleep");
        let t1 = super::thread_cpu_time();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while super::thread_cpu_time() - t1 < Duration::from_millis(20) {
            assert!(Instant::now() < deadline, "20 ms of work never showed as CPU time");
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

    #[test]
    fn a_lowered_thread_is_restored_to_the_process_priority() {
        let own = rustix::process::getpriority_process(None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            super::lower_current_thread(super::CATCH_UP_NICE);
            tx.send(super::current_thread_id()).unwrap();
            wait.recv().unwrap();
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        });
        let tid = rx.recv().unwrap();
        let lowered = rustix::process::getpriority_process(rustix::process::Pid::from_raw(tid)).unwrap();
        let raised = super::restore_thread(tid);
        go.send(()).unwrap();
        let after = t.join().unwrap();
        if raised {
            assert_eq!(after, own, "raised back to the process's priority");
        } else {
            // No CAP_SYS_NICE here: it stays where it was.
            assert_eq!(after, lowered);
        }
        assert!(!super::restore_thread(0), "no such thread");
    }

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let inside = std::thread::spawn(|| {
            super::lower_current_thread(super::CATCH_UP_NICE);
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        })
        .join()
        .unwrap();
        if before <= super::CATCH_UP_NICE {
            assert_eq!(inside, super::CATCH_UP_NICE);
        }
        assert_eq!(rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap(), before);
    }
}
