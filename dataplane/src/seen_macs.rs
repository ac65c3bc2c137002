//! Which source MACs sent traffic, on which port: the evidence the control
//! plane's missing-heartbeat timers need ("still sends traffic through the
//! gateway"), collected per worker without locks or allocation.
//!
//! Each worker owns a [`SeenMacs`] set: a fixed-capacity open-addressing
//! table of `(MAC, ingress port slot)` keys. Inserting is a hash, a probe and
//! at most one store into worker-local memory. Every flush period the worker
//! copies the set into a spare buffer from a return channel and `try_send`s
//! it ([`SeenMacsFlusher`]); buffers are allocated up front and recycled, like
//! the latency histograms. A key that finds the table full is counted in
//! `overflowed` (the control plane shows it), never waited for.

use crossbeam_channel::{Receiver, Sender};

/// A (MAC, port slot) key packed into 64 bits: MAC in the low 48 bits, the
/// slot + 1 in the top 16 (so that 0 means an empty table slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeenMac(u64);

impl SeenMac {
    /// Packs `mac` seen on port `slot`.
    #[inline]
    pub fn new(mac: [u8; 6], slot: usize) -> Self {
        let m = u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
        SeenMac(m | ((slot as u64 + 1) & 0xffff) << 48)
    }

    /// The MAC.
    pub fn mac(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// The ingress port slot.
    pub fn slot(self) -> usize {
        ((self.0 >> 48) as usize).saturating_sub(1)
    }
}

/// A worker's set of MACs seen since the last flush.
#[derive(Debug)]
pub struct SeenMacs {
    table: Box<[u64]>,
    mask: usize,
    len: usize,
    max_len: usize,
    /// Keys dropped because the set was full, since creation.
    pub overflowed: u64,
    /// How many times the set was drained (a flow cache entry remembers the
    /// period it reported its MAC in, to skip the probe until the next one).
    period: u32,
}

impl SeenMacs {
    /// A set holding up to `capacity` keys per flush period (the table is
    /// twice that, rounded up to a power of two, to keep probes short).
    pub fn new(capacity: usize) -> Self {
        let size = (capacity.max(1) * 2).next_power_of_two();
        SeenMacs {
            table: vec![0; size].into_boxed_slice(),
            mask: size - 1,
            len: 0,
            max_len: capacity.max(1),
            overflowed: 0,
            period: 0,
        }
    }

    /// Records a key; cheap when already present. Returns whether the set
    /// holds it (false: the set was full and the key was counted as lost).
    #[inline]
    pub fn insert(&mut self, key: SeenMac) -> bool {
        // Fibonacci hashing of the packed key; the top bits index the table.
        let mut i = (key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask;
        loop {
            let slot = self.table[i];
            if slot == key.0 {
                return true;
            }
            if slot == 0 {
                if self.len >= self.max_len {
                    self.overflowed += 1;
                    return false;
                }
                self.table[i] = key.0;
                self.len += 1;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The current period: it advances each time the set is drained, so a
    /// key recorded in this period is in the set until then.
    #[inline(always)]
    pub fn period(&self) -> u32 {
        self.period
    }

    /// Moves every key into `out` (cleared first) and empties the set.
    pub fn drain_into(&mut self, out: &mut Vec<SeenMac>) {
        out.clear();
        for slot in self.table.iter_mut() {
            if *slot != 0 {
                // `out` was allocated with the set's capacity: no reallocation.
                out.push(SeenMac(*slot));
                *slot = 0;
            }
        }
        self.len = 0;
        self.period = self.period.wrapping_add(1);
    }
}

/// One worker's flush: the keys seen during one period.
#[derive(Debug)]
pub struct SeenMacReport {
    /// Which worker.
    pub worker: usize,
    /// The keys (a recycled buffer: send it back through the spares channel).
    pub macs: Vec<SeenMac>,
}

/// The worker's side of the hand-over.
#[derive(Debug)]
pub struct SeenMacsFlusher {
    worker: usize,
    to_control: Sender<SeenMacReport>,
    spares: Receiver<Vec<SeenMac>>,
    /// Flushes skipped because no spare buffer was back (the keys stay in the
    /// set and go out with the next flush).
    pub skipped: u64,
}

/// The control plane's side.
#[derive(Debug)]
pub struct SeenMacsExchange {
    /// Reports arrive here.
    pub reports: Receiver<SeenMacReport>,
    /// Return each report's buffer to its worker (index = worker id).
    pub spares: Vec<Sender<Vec<SeenMac>>>,
}

/// Buffers in circulation per worker.
const BUFFERS_PER_WORKER: usize = 2;

/// Creates flushers for `workers` workers; every buffer (`capacity` keys) is
/// allocated here.
pub fn exchange(workers: usize, capacity: usize) -> (Vec<SeenMacsFlusher>, SeenMacsExchange) {
    let (to_control, reports) = crossbeam_channel::bounded(workers * BUFFERS_PER_WORKER);
    let mut flushers = Vec::with_capacity(workers);
    let mut spares = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (tx, rx) = crossbeam_channel::bounded(BUFFERS_PER_WORKER);
        for _ in 0..BUFFERS_PER_WORKER {
            tx.send(Vec::with_capacity(capacity)).expect("receiver alive");
        }
        spares.push(tx);
        flushers.push(SeenMacsFlusher { worker, to_control: to_control.clone(), spares: rx, skipped: 0 });
    }
    (flushers, SeenMacsExchange { reports, spares })
}

impl SeenMacsFlusher {
    /// Hands the set's keys to the control plane if a spare buffer is back.
    pub fn flush(&mut self, set: &mut SeenMacs) {
        if set.is_empty() {
            return;
        }
        let Ok(mut buf) = self.spares.try_recv() else {
            self.skipped += 1;
            return;
        };
        set.drain_into(&mut buf);
        // Cannot be full: the channel holds every buffer in circulation.
        if self.to_control.try_send(SeenMacReport { worker: self.worker, macs: buf }).is_err() {
            self.skipped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn key_round_trip() {
        let k = SeenMac::new([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee], 3);
        assert_eq!(k.mac(), [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        assert_eq!(k.slot(), 3);
        assert_ne!(SeenMac::new([0; 6], 0).0, 0, "an all-zero MAC is still a key");
    }

    #[test]
    fn set_dedups_and_overflows_without_growing() {
        let mut s = SeenMacs::new(4);
        for _ in 0..3 {
            for i in 0..4u8 {
                s.insert(SeenMac::new([2, 0, 0, 0, 0, i], 0));
            }
        }
        assert_eq!(s.len(), 4);
        s.insert(SeenMac::new([2, 0, 0, 0, 0, 9], 0));
        assert_eq!(s.overflowed, 1);
        let mut out = Vec::with_capacity(4);
        s.drain_into(&mut out);
        assert_eq!(out.len(), 4);
        assert!(s.is_empty());
        assert_eq!(out.capacity(), 4, "no reallocation");
    }

    #[test]
    fn same_mac_on_two_ports_is_two_keys() {
        let mut s = SeenMacs::new(8);
        s.insert(SeenMac::new([2, 0, 0, 0, 0, 1], 0));
        s.insert(SeenMac::new([2, 0, 0, 0, 0, 1], 1));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn flushes_reach_the_control_plane_and_buffers_recycle() {
        let (mut f, ex) = exchange(1, 64);
        let mut set = SeenMacs::new(64);
        let mut seen = BTreeSet::new();
        for round in 0..10u8 {
            for i in 0..20u8 {
                set.insert(SeenMac::new([2, round, 0, 0, 0, i], 1));
            }
            f[0].flush(&mut set);
            for r in ex.reports.try_iter() {
                seen.extend(r.macs.iter().copied());
                ex.spares[r.worker].send(r.macs).unwrap();
            }
        }
        assert_eq!(seen.len(), 200);
        assert_eq!(f[0].skipped, 0);
    }
}
