//! Per-worker counters, written by exactly one worker and read by the control
//! plane at any time.
//!
//! Each counter is an `AtomicU64` updated with a relaxed load + store (no
//! locked read-modify-write: there is one writer), once per burst rather than
//! once per packet. Each port's block is cache-line aligned so that two
//! workers never write the same line.

use crate::parse::Malformed;
use crate::verdict::DropReason;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one ingress/egress port, as seen by one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received on the port.
    pub rx: AtomicU64,
    /// Frames transmitted out of the port.
    pub tx: AtomicU64,
    /// Frames punted to the control plane.
    pub punted: AtomicU64,
    /// Rejected frames answered (TCP RST / ICMP unreachable sent back out
    /// of this port; also counted in `tx`).
    pub rejects_answered: AtomicU64,
    /// Frames that arrived on the port and were dropped, by reason.
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Frames whose headers did not parse, by reason (dropped or not,
    /// depending on the malformed-frame policy).
    pub malformed: [AtomicU64; Malformed::COUNT],
    /// Tap mode: frames that would have been dropped, by reason (forwarded).
    pub tap_would_drop: [AtomicU64; DropReason::COUNT],
}

/// Worker-wide counters of what could not be handed to the control plane.
#[derive(Debug, Default)]
pub struct MiscCounters {
    /// Events lost to a full event channel.
    pub events_lost: AtomicU64,
    /// Folded (identical) events whose count was lost when their gate slot
    /// was reused by another event.
    pub events_folded_lost: AtomicU64,
    /// Source MACs not recorded because the worker's seen-MAC set was full.
    pub seen_macs_overflow: AtomicU64,
    /// Frames whose verdict came from the flow cache.
    pub flow_cache_hits: AtomicU64,
    /// Frames without an application hint that the flow cache could not
    /// answer (decided in full; frames with a hint are in neither count).
    pub flow_cache_misses: AtomicU64,
    /// Flush periods the flow cache sat out because too few lookups hit.
    pub flow_cache_bypassed_periods: AtomicU64,
    /// Application hints of flow-cached frames found quiet in the
    /// quiet-hint cache (no indicator lookup).
    pub hint_cache_hits: AtomicU64,
    /// Such hints looked up in the indicators (not cached, or too long to be).
    pub hint_cache_misses: AtomicU64,
}

/// A snapshot of [`PortCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortCountersSnapshot {
    /// Frames received.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames punted.
    pub punted: u64,
    /// Drops by reason index.
    pub drops: [u64; DropReason::COUNT],
    /// Malformed frames by reason index.
    pub malformed: [u64; Malformed::COUNT],
    /// Tap mode: would-drop by reason index.
    pub tap_would_drop: [u64; DropReason::COUNT],
}

impl PortCountersSnapshot {
    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// All counters of one worker, indexed by port slot (the position of the port
/// in the gateway's port list, not its DPDK id).
#[derive(Debug)]
pub struct WorkerCounters {
    ports: Box<[CachePadded<PortCounters>]>,
    /// Worker-wide figures.
    pub misc: CachePadded<MiscCounters>,
}

/// Adds `n` to a counter this thread alone writes.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerCounters {
    /// Zeroed counters for `ports` port slots.
    pub fn new(ports: usize) -> Self {
        Self {
            ports: (0..ports).map(|_| CachePadded::new(PortCounters::default())).collect(),
            misc: CachePadded::new(MiscCounters::default()),
        }
    }

    /// The counters of port slot `slot`.
    #[inline]
    pub fn port(&self, slot: usize) -> &PortCounters {
        &self.ports[slot]
    }

    /// Number of port slots.
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// Reads one port slot's counters.
    pub fn snapshot(&self, slot: usize) -> PortCountersSnapshot {
        let p = &self.ports[slot];
        let load = |out: &mut [u64], from: &[AtomicU64]| {
            for (d, c) in out.iter_mut().zip(from) {
                *d = c.load(Relaxed);
            }
        };
        let mut s = PortCountersSnapshot {
            rx: p.rx.load(Relaxed),
            tx: p.tx.load(Relaxed),
            punted: p.punted.load(Relaxed),
            ..Default::default()
        };
        load(&mut s.drops, &p.drops);
        load(&mut s.malformed, &p.malformed);
        load(&mut s.tap_would_drop, &p.tap_would_drop);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_and_snapshot() {
        let c = WorkerCounters::new(2);
        bump(&c.port(1).rx, 5);
        bump(&c.port(1).rx, 2);
        bump(&c.port(1).drops[DropReason::Runt.index()], 1);
        let s = c.snapshot(1);
        assert_eq!((s.rx, s.dropped()), (7, 1));
        assert_eq!(c.snapshot(0), PortCountersSnapshot::default());
    }
}
