//! What came back: counts, loss, reordering and end-to-end latency of one
//! trial, from the stamps of received frames.
//!
//! Sequence numbers run on across the trials of one generator process; a
//! trial accepts only its own range, so a straggler from an earlier trial is
//! counted as stale, never as this trial's.

use hdrhistogram::Histogram;

/// Receive-side accounting of one trial.
#[derive(Debug)]
pub struct Receiver {
    first_seq: u64,
    /// One past the highest sequence number received so far.
    next_expected: u64,
    /// Template count: a frame's template is `seq % templates`.
    templates: u64,
    /// Frames of this trial received.
    pub received: u64,
    /// Received with a lower sequence number than one received before.
    pub reordered: u64,
    /// Received, but sent by an earlier trial.
    pub stale: u64,
    /// Received without a stamp (not the generator's frame).
    pub foreign: u64,
    /// Received although calibration found the DUT drops their template.
    pub unexpected: u64,
    /// End-to-end latency in nanoseconds.
    pub latency_ns: Histogram<u64>,
    ns_per_cycle: f64,
}

impl Receiver {
    /// Accounting for a trial whose first frame has sequence number `first_seq`.
    pub fn new(first_seq: u64, templates: usize, tsc_hz: u64) -> Self {
        Receiver {
            first_seq,
            next_expected: first_seq,
            templates: templates.max(1) as u64,
            received: 0,
            reordered: 0,
            stale: 0,
            foreign: 0,
            unexpected: 0,
            // 1 ns .. 100 s, 3 significant digits.
            latency_ns: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds"),
            ns_per_cycle: 1e9 / tsc_hz.max(1) as f64,
        }
    }

    /// Accounts one received frame's stamp (`None`: no stamp) at TSC `now`.
    /// `forwarded` says which templates the DUT is expected to forward.
    #[inline]
    pub fn record(&mut self, stamp: Option<(u64, u64)>, now: u64, forwarded: &[bool]) {
        let Some((seq, sent)) = stamp else {
            self.foreign += 1;
            return;
        };
        if seq < self.first_seq {
            self.stale += 1;
            return;
        }
        if !forwarded.get((seq % self.templates) as usize).copied().unwrap_or(true) {
            self.unexpected += 1;
        }
        self.received += 1;
        if seq < self.next_expected {
            self.reordered += 1;
        } else {
            self.next_expected = seq + 1;
        }
        let ns = (now.saturating_sub(sent) as f64 * self.ns_per_cycle) as u64;
        self.latency_ns.saturating_record(ns.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_reordering_and_stragglers() {
        let fwd = [true; 4];
        let mut r = Receiver::new(100, 4, 1_000_000_000);
        for seq in [100, 101, 103, 102, 104] {
            r.record(Some((seq, 1_000)), 3_000, &fwd);
        }
        r.record(Some((99, 0)), 3_000, &fwd);
        r.record(None, 3_000, &fwd);
        assert_eq!((r.received, r.reordered, r.stale, r.foreign), (5, 1, 1, 1));
        assert_eq!(r.latency_ns.len(), 5);
        // 2000 cycles at 1 GHz = 2 us.
        assert!(r.latency_ns.equivalent(r.latency_ns.value_at_quantile(0.5), 2_000));
    }

    #[test]
    fn frames_the_dut_should_have_dropped_are_flagged() {
        let fwd = [true, false];
        let mut r = Receiver::new(0, 2, 1);
        r.record(Some((0, 0)), 1, &fwd);
        r.record(Some((1, 0)), 1, &fwd);
        assert_eq!((r.received, r.unexpected), (2, 1));
    }
}
