//! Merging the workers' counters and latency histograms into the report.
//!
//! Counters are read straight from each worker's single-writer atomics.
//! Latency histograms arrive as flushes from the workers (see
//! `hbgw_dataplane::latency`); each is added to the worker's interval and
//! cumulative histograms and to the all-worker ones, then reset and returned
//! to its worker as a spare. Like Envoy's per-thread histograms: workers
//! record without sharing, the control plane merges.

use crate::hlog::IntervalHistogram;
use hbgw_dataplane::counters::{PortCountersSnapshot, WorkerCounters};
use hbgw_dataplane::latency::LatencyExchange;
use hbgw_dataplane::parse::Malformed;
use hbgw_dataplane::verdict::DropReason;
use hbgw_shared::stats::{Counts, DeviceCounts, Percentiles, PortReport, StatsReport, WorkerReport};
use hdrhistogram::Histogram;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use hbgw_dataplane::latency::new_histogram;

/// A port as the report names it.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// The port's slot in worker counters.
    pub slot: usize,
    /// DPDK port id.
    pub port_id: u16,
    /// Device name.
    pub name: String,
    /// `lan0`, `wan0`, ...
    pub role: String,
}

/// A worker as the report names it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Worker index.
    pub id: usize,
    /// Its lcore.
    pub lcore: u32,
    /// Its counters.
    pub counters: Arc<WorkerCounters>,
}

/// Reads a device's own counters (implemented over `rte_eth_stats_get`).
pub trait DeviceStats: Send {
    /// The counters of `port_id`.
    fn read(&self, port_id: u16) -> DeviceCounts;
}

/// No device counters (tests).
pub struct NoDeviceStats;
impl DeviceStats for NoDeviceStats {
    fn read(&self, _: u16) -> DeviceCounts {
        DeviceCounts::default()
    }
}

struct WorkerLatency {
    interval: Histogram<u64>,
    total: Histogram<u64>,
}

/// Builds reports from worker counters and latency flushes.
pub struct StatsAggregator {
    ports: Vec<PortInfo>,
    workers: Vec<WorkerInfo>,
    device: Box<dyn DeviceStats>,
    latency: LatencyExchange,
    worker_latency: Vec<WorkerLatency>,
    all_interval: Histogram<u64>,
    all_total: Histogram<u64>,
    prev_worker: Vec<Counts>,
    prev_port: Vec<Counts>,
    /// Baselines subtracted from totals after `clear`.
    base_worker: Vec<Counts>,
    base_port: Vec<Counts>,
    start: Instant,
    interval_start: Instant,
    last_report: StatsReport,
    /// Shown in reports: whether workers enforce, and in tap mode.
    pub mode: (bool, bool),
    /// The Central client's status, copied into each report.
    pub central: Option<Arc<std::sync::Mutex<hbgw_shared::stats::CentralStatus>>>,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        min: h.min(),
        mean: h.mean(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        p9999: h.value_at_quantile(0.9999),
        max: h.max(),
    }
}

fn counts(s: &PortCountersSnapshot, rx_side: bool, tx_side: bool) -> Counts {
    let mut c = Counts::default();
    if rx_side {
        c.rx = s.rx;
        c.punted = s.punted;
        c.dropped = s.dropped();
        for r in DropReason::ALL {
            let n = s.drops[r.index()];
            if n > 0 {
                c.drops.insert(r.as_str().to_owned(), n);
            }
            let t = s.tap_would_drop[r.index()];
            if t > 0 {
                c.tap_would_drop.insert(r.as_str().to_owned(), t);
            }
        }
        for m in Malformed::ALL {
            let n = s.malformed[m.index()];
            if n > 0 {
                c.malformed.insert(m.as_str().to_owned(), n);
            }
        }
    }
    if tx_side {
        c.tx = s.tx;
    }
    c
}

impl StatsAggregator {
    /// An aggregator over these ports and workers.
    pub fn new(
        ports: Vec<PortInfo>,
        workers: Vec<WorkerInfo>,
        device: Box<dyn DeviceStats>,
        latency: LatencyExchange,
    ) -> Self {
        let now = Instant::now();
        Self {
            worker_latency: workers
                .iter()
                .map(|_| WorkerLatency { interval: new_histogram(), total: new_histogram() })
                .collect(),
            prev_worker: vec![Counts::default(); workers.len()],
            prev_port: vec![Counts::default(); ports.len()],
            base_worker: vec![Counts::default(); workers.len()],
            base_port: vec![Counts::default(); ports.len()],
            all_interval: new_histogram(),
            all_total: new_histogram(),
            ports,
            workers,
            device,
            latency,
            start: now,
            interval_start: now,
            last_report: StatsReport::default(),
            mode: (false, false),
            central: None,
        }
    }

    /// Takes every flushed histogram and returns it to its worker.
    fn drain_latency(&mut self) {
        while let Ok(flush) = self.latency.flushes.try_recv() {
            let mut h = flush.histogram;
            if let Some(w) = self.worker_latency.get_mut(flush.worker) {
                // Same bounds everywhere, so `add` cannot fail.
                let _ = w.interval.add(&h);
                let _ = w.total.add(&h);
            }
            let _ = self.all_interval.add(&h);
            let _ = self.all_total.add(&h);
            h.reset();
            if let Some(spare) = self.latency.spares.get(flush.worker) {
                let _ = spare.try_send(h);
            }
        }
    }

    fn raw_worker_counts(&self) -> Vec<Counts> {
        self.workers
            .iter()
            .map(|w| {
                let mut total = Counts::default();
                for slot in 0..w.counters.port_count() {
                    total.add(&counts(&w.counters.snapshot(slot), true, true));
                }
                total
            })
            .collect()
    }

    fn raw_port_counts(&self) -> Vec<Counts> {
        self.ports
            .iter()
            .map(|p| {
                let mut total = Counts::default();
                for w in &self.workers {
                    total.add(&counts(&w.counters.snapshot(p.slot), true, true));
                }
                total
            })
            .collect()
    }

    /// Ends the current interval: returns the new report and the interval's
    /// merged histogram (for the histogram log).
    pub fn tick(&mut self) -> (StatsReport, IntervalHistogram) {
        self.drain_latency();
        let now = Instant::now();
        let interval_s = now.duration_since(self.interval_start).as_secs_f64();
        let worker_now = self.raw_worker_counts();
        let port_now = self.raw_port_counts();

        let mut report = StatsReport {
            uptime_s: now.duration_since(self.start).as_secs_f64(),
            interval_s,
            stopped: false,
            latency_interval: percentiles(&self.all_interval),
            latency_total: percentiles(&self.all_total),
            channel_overflows: self.workers.iter().map(|w| w.counters.misc.events_lost.load(Relaxed)).sum(),
            seen_macs_overflow: self.workers.iter().map(|w| w.counters.misc.seen_macs_overflow.load(Relaxed)).sum(),
            flow_cache_hits: self.workers.iter().map(|w| w.counters.misc.flow_cache_hits.load(Relaxed)).sum(),
            flow_cache_misses: self.workers.iter().map(|w| w.counters.misc.flow_cache_misses.load(Relaxed)).sum(),
            flow_cache_bypassed_periods: self
                .workers
                .iter()
                .map(|w| w.counters.misc.flow_cache_bypassed_periods.load(Relaxed))
                .sum(),
            hint_cache_hits: self.workers.iter().map(|w| w.counters.misc.hint_cache_hits.load(Relaxed)).sum(),
            hint_cache_misses: self.workers.iter().map(|w| w.counters.misc.hint_cache_misses.load(Relaxed)).sum(),
            enforcing: self.mode.0,
            tap_mode: self.mode.1,
            central: self.central.as_ref().map(|c| c.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            ..Default::default()
        };
        for (i, w) in self.workers.iter().enumerate() {
            let wl = &self.worker_latency[i];
            report.workers.push(WorkerReport {
                id: w.id,
                lcore: w.lcore,
                total: worker_now[i].since(&self.base_worker[i]),
                interval: worker_now[i].since(&self.prev_worker[i]),
                latency_interval: percentiles(&wl.interval),
                latency_total: percentiles(&wl.total),
            });
        }
        for (i, p) in self.ports.iter().enumerate() {
            report.ports.push(PortReport {
                port_id: p.port_id,
                name: p.name.clone(),
                role: p.role.clone(),
                total: port_now[i].since(&self.base_port[i]),
                interval: port_now[i].since(&self.prev_port[i]),
                device: self.device.read(p.port_id),
            });
        }

        let interval = IntervalHistogram {
            start: self.interval_start.duration_since(self.start),
            length: Duration::from_secs_f64(interval_s),
            histogram: self.all_interval.clone(),
        };
        self.all_interval.reset();
        for wl in &mut self.worker_latency {
            wl.interval.reset();
        }
        self.prev_worker = worker_now;
        self.prev_port = port_now;
        self.interval_start = now;
        self.last_report = report.clone();
        (report, interval)
    }

    /// The report of the last complete interval.
    pub fn report(&self) -> &StatsReport {
        &self.last_report
    }

    /// Starts a fresh measurement: totals and histograms restart from zero.
    pub fn clear(&mut self) {
        self.drain_latency();
        self.base_worker = self.raw_worker_counts();
        self.base_port = self.raw_port_counts();
        self.all_total.reset();
        for wl in &mut self.worker_latency {
            wl.total.reset();
        }
    }

    /// All workers' latency since start (or the last `clear`).
    pub fn total_histogram(&self) -> &Histogram<u64> {
        &self.all_total
    }

    /// Each worker's latency since start, by worker id.
    pub fn worker_total_histograms(&self) -> impl Iterator<Item = (usize, &Histogram<u64>)> {
        self.workers.iter().zip(&self.worker_latency).map(|(w, l)| (w.id, &l.total))
    }

    /// The samples since the last tick (for the final histogram-log entry).
    pub fn drain_interval(&mut self) -> IntervalHistogram {
        self.drain_latency();
        let now = Instant::now();
        let iv = IntervalHistogram {
            start: self.interval_start.duration_since(self.start),
            length: now.duration_since(self.interval_start),
            histogram: self.all_interval.clone(),
        };
        self.all_interval.reset();
        iv
    }

    /// The final report, after the workers have stopped and flushed.
    pub fn final_report(&mut self) -> StatsReport {
        // The interval view of a final report covers the whole run.
        let (mut report, _) = self.tick();
        for (w, wl) in report.workers.iter_mut().zip(&self.worker_latency) {
            w.interval = w.total.clone();
            w.latency_interval = percentiles(&wl.total);
        }
        for p in &mut report.ports {
            p.interval = p.total.clone();
        }
        report.latency_interval = report.latency_total.clone();
        report.interval_s = report.uptime_s;
        report.stopped = true;
        self.last_report = report.clone();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbgw_dataplane::counters::bump;
    use hbgw_dataplane::latency::exchange;

    fn setup() -> (StatsAggregator, Arc<WorkerCounters>, Vec<hbgw_dataplane::latency::LatencyRecorder>) {
        let counters = Arc::new(WorkerCounters::new(2));
        let (recs, ex) = exchange(1, 1_000_000_000, 1);
        let agg = StatsAggregator::new(
            vec![
                PortInfo { slot: 0, port_id: 0, name: "lan".into(), role: "lan0".into() },
                PortInfo { slot: 1, port_id: 1, name: "wan".into(), role: "wan0".into() },
            ],
            vec![WorkerInfo { id: 0, lcore: 1, counters: counters.clone() }],
            Box::new(NoDeviceStats),
            ex,
        );
        (agg, counters, recs)
    }

    #[test]
    fn intervals_and_totals() {
        let (mut agg, c, mut recs) = setup();
        bump(&c.port(0).rx, 10);
        bump(&c.port(1).tx, 9);
        bump(&c.port(0).drops[DropReason::Runt.index()], 1);
        recs[0].record_burst(1000, 10);
        recs[0].flush(100);
        let (r1, iv1) = agg.tick();
        assert_eq!(r1.ports[0].total.rx, 10);
        assert_eq!(r1.ports[1].total.tx, 9);
        assert_eq!(r1.ports[0].total.drops["runt"], 1);
        assert_eq!(r1.workers[0].interval.rx, 10);
        assert_eq!(r1.latency_interval.count, 10);
        assert_eq!(iv1.histogram.len(), 10);

        bump(&c.port(0).rx, 5);
        let (r2, iv2) = agg.tick();
        assert_eq!(r2.workers[0].interval.rx, 5);
        assert_eq!(r2.workers[0].total.rx, 15);
        assert_eq!(r2.latency_interval.count, 0);
        assert_eq!(r2.latency_total.count, 10);
        assert_eq!(iv2.histogram.len(), 0);

        agg.clear();
        bump(&c.port(0).rx, 1);
        let (r3, _) = agg.tick();
        assert_eq!(r3.workers[0].total.rx, 1);
        assert_eq!(r3.latency_total.count, 0);
    }

    #[test]
    fn final_report_includes_last_flush() {
        let (mut agg, c, mut recs) = setup();
        bump(&c.port(0).rx, 3);
        recs[0].record_burst(500, 3);
        recs[0].flush(100);
        let r = agg.final_report();
        assert!(r.stopped);
        assert_eq!(r.latency_total.count, 3);
        assert_eq!(r.workers[0].interval.rx, 3);
    }
}
