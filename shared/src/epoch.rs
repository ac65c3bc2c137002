//! The state's change counter: every publication a worker could decide
//! differently after bumps it.
//!
//! Workers keep per-flow verdicts (the data plane's flow cache). A cached
//! verdict is valid only while nothing it was computed from changed: the
//! policy, the indicators with their exclusions and feed settings, the
//! endpoint index and every endpoint's health. Rather than tracking which
//! change touches which flow, each of those writes bumps one counter and a
//! worker trusts an entry only if it was computed at the current count.
//!
//! Ordering: a writer stores its change first and bumps with `Release`; a
//! worker loads the count with `Acquire` *before* it reads any state. So a
//! verdict tagged with count N was computed from state at least as new as
//! every write that produced N, and a write that lands during the
//! computation makes the tag stale for the next packet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A shared change counter (one per gateway state).
#[derive(Debug, Default)]
pub struct StateEpoch(AtomicU64);

impl StateEpoch {
    /// A counter at 0, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(StateEpoch(AtomicU64::new(0)))
    }

    /// Records that a change was published (call after storing it).
    #[inline]
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// The current count (read before reading the state it guards).
    #[inline(always)]
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}
