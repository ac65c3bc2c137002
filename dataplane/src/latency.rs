//! Worker processing latency, recorded into a worker-local HDR histogram and
//! handed to the control plane every flush period.
//!
//! **What is measured**: for each burst, the TSC from just after `rx_burst`
//! returns to just after `tx_burst` returns: parse, decide, transmit. Every
//! packet of the burst waits that whole time (the first one is held until
//! the last one is decided), so the burst's latency is recorded once with a
//! count of `n` packets (`record_n`). This is per-packet latency at the cost of
//! two TSC reads per burst instead of per packet. Measured here
//! (`cargo run --release --example latency_cost`, perf/RESULTS.md): recording
//! per packet costs ~18 ns (~47 cycles) a packet, more than the whole bridge
//! path (~20 cycles); per burst of 32 it costs ~0.9 ns (~2.3 cycles) a packet. Time a frame spent in the
//! device's rx ring before the poll is not visible here; end-to-end latency
//! comes from the traffic generator.
//!
//! **Hand-over**: the worker records into one histogram; every flush period it
//! swaps it for an empty spare (from a return channel the control plane
//! refills) and `try_send`s the full one. Histograms are allocated up front, so
//! the steady state allocates nothing. If no spare is back yet the worker just
//! keeps recording into the same histogram (the interval stretches); it never
//! waits.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;

/// Highest latency recorded exactly; larger values are clamped to it.
pub const MAX_LATENCY_NS: u64 = 10_000_000_000;
/// Significant decimal digits of the histograms.
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Histograms in circulation per worker: the one being recorded plus spares.
pub const HISTOGRAMS_PER_WORKER: usize = 3;

/// A new, empty latency histogram with the gateway's range and precision.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGNIFICANT_DIGITS).expect("static bounds are valid")
}

/// A worker's flushed histogram.
#[derive(Debug)]
pub struct LatencyFlush {
    /// Which worker.
    pub worker: usize,
    /// The samples since its previous flush, in ns.
    pub histogram: Histogram<u64>,
}

/// Converts TSC cycles to nanoseconds with one multiply and shift.
#[derive(Debug, Clone, Copy)]
pub struct CyclesToNs {
    mul: u64,
}

impl CyclesToNs {
    /// For a TSC running at `hz`.
    pub fn new(hz: u64) -> Self {
        // ns = cycles * 1e9 / hz, as (cycles * mul) >> 32.
        Self { mul: ((1_000_000_000u128 << 32) / u128::from(hz.max(1))) as u64 }
    }

    /// `cycles` in ns.
    #[inline]
    pub fn ns(self, cycles: u64) -> u64 {
        ((u128::from(cycles) * u128::from(self.mul)) >> 32) as u64
    }
}

/// The worker's side: records bursts and flushes periodically.
#[derive(Debug)]
pub struct LatencyRecorder {
    worker: usize,
    histogram: Histogram<u64>,
    to_ns: CyclesToNs,
    flush_every: u64,
    last_flush: u64,
    to_control: Sender<LatencyFlush>,
    spares: Receiver<Histogram<u64>>,
    /// Flushes skipped because no spare histogram was back.
    pub skipped_flushes: u64,
}

/// The control plane's side of one set of workers' latency hand-over.
#[derive(Debug)]
pub struct LatencyExchange {
    /// Flushed histograms arrive here.
    pub flushes: Receiver<LatencyFlush>,
    /// Spares go back to each worker (index = worker id) after being read and reset.
    pub spares: Vec<Sender<Histogram<u64>>>,
}

/// Creates recorders for `workers` workers and the control plane's exchange.
/// All histograms are allocated here, none later.
pub fn exchange(workers: usize, tsc_hz: u64, flush_every_cycles: u64) -> (Vec<LatencyRecorder>, LatencyExchange) {
    // Every worker can have at most HISTOGRAMS_PER_WORKER in flight, so a
    // channel that holds them all never refuses a flush.
    let (to_control, flushes) = crossbeam_channel::bounded(workers * HISTOGRAMS_PER_WORKER);
    let mut recorders = Vec::with_capacity(workers);
    let mut spares = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(HISTOGRAMS_PER_WORKER);
        for _ in 1..HISTOGRAMS_PER_WORKER {
            spare_tx.send(new_histogram()).expect("receiver alive");
        }
        spares.push(spare_tx);
        recorders.push(LatencyRecorder {
            worker,
            histogram: new_histogram(),
            to_ns: CyclesToNs::new(tsc_hz),
            flush_every: flush_every_cycles,
            last_flush: 0,
            to_control: to_control.clone(),
            spares: spare_rx,
            skipped_flushes: 0,
        });
    }
    (recorders, LatencyExchange { flushes, spares })
}

impl LatencyRecorder {
    /// Records a burst of `packets` that took `cycles`.
    #[inline]
    pub fn record_burst(&mut self, cycles: u64, packets: u64) {
        let ns = self.to_ns.ns(cycles).clamp(1, MAX_LATENCY_NS);
        // Cannot fail: the value is within the histogram's bounds.
        let _ = self.histogram.record_n(ns, packets);
    }

    /// Flushes if a flush period has passed since the last one; returns
    /// whether it did (the worker does its other periodic work then too).
    #[inline]
    pub fn maybe_flush(&mut self, now: u64) -> bool {
        if now.wrapping_sub(self.last_flush) >= self.flush_every {
            self.flush(now);
            return true;
        }
        false
    }

    /// Hands the current histogram to the control plane if a spare is back.
    pub fn flush(&mut self, now: u64) {
        self.last_flush = now;
        if self.histogram.is_empty() {
            return;
        }
        let Ok(spare) = self.spares.try_recv() else {
            self.skipped_flushes += 1;
            return;
        };
        let full = std::mem::replace(&mut self.histogram, spare);
        match self.to_control.try_send(LatencyFlush { worker: self.worker, histogram: full }) {
            Ok(()) => {}
            // Cannot happen while the channel holds every histogram in
            // circulation; if it does, keep the samples and the spare.
            Err(TrySendError::Full(back)) | Err(TrySendError::Disconnected(back)) => {
                let mut back = back.histogram;
                let _ = back.add(&self.histogram);
                self.histogram.reset();
                let spare = std::mem::replace(&mut self.histogram, back);
                drop(spare);
                self.skipped_flushes += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_to_ns() {
        let c = CyclesToNs::new(2_000_000_000);
        assert_eq!(c.ns(2_000), 1_000);
        assert_eq!(c.ns(0), 0);
        let c = CyclesToNs::new(2_400_000_000);
        assert!((c.ns(2_400_000_000) as i64 - 1_000_000_000).abs() <= 1);
    }

    #[test]
    fn flushes_recycle_histograms_without_loss() {
        let (mut recs, ex) = exchange(1, 1_000_000_000, 10);
        let r = &mut recs[0];
        let mut total = 0;
        for round in 0..20u64 {
            r.record_burst(500, 32);
            total += 32;
            r.maybe_flush(round * 10 + 10);
            // The control plane reads and returns histograms.
            while let Ok(f) = ex.flushes.try_recv() {
                assert_eq!(f.worker, 0);
                let mut h = f.histogram;
                total -= h.len();
                h.reset();
                ex.spares[0].send(h).unwrap();
            }
        }
        r.flush(1_000);
        while let Ok(f) = ex.flushes.try_recv() {
            total -= f.histogram.len();
        }
        assert_eq!(total, 0, "every recorded packet reached the control plane");
    }

    #[test]
    fn no_spare_keeps_recording() {
        let (mut recs, ex) = exchange(1, 1_000_000_000, 1);
        let r = &mut recs[0];
        // Never return spares: after the spares run out the worker keeps its histogram.
        for i in 0..10 {
            r.record_burst(100, 1);
            r.flush(i);
        }
        let received: u64 = ex.flushes.try_iter().map(|f| f.histogram.len()).sum();
        assert_eq!(received + r.histogram.len(), 10);
        assert!(r.skipped_flushes > 0);
    }
}
