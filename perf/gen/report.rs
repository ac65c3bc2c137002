//! Results as JSON (one file per run, what the runner collects) and the
//! markdown table that compares runs against a baseline of the same frame
//! size, the way `perf/bench.sh` prints it and appends it to
//! `perf/RESULTS.md`.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// 50th percentile.
    pub p50: u64,
    /// 90th.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// From a histogram.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |x: f64| h.highest_equivalent(h.value_at_quantile(x));
        Percentiles { count: h.len(), p50: q(0.50), p90: q(0.90), p99: q(0.99), p999: q(0.999), max: h.max() }
    }
}

/// One trial's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadResult {
    /// Percent of the throughput rate this trial ran at (latency trials).
    pub percent: Option<f64>,
    /// Asked rate (None: unlimited).
    pub asked_pps: Option<f64>,
    /// Achieved offered rate.
    pub offered_pps: f64,
    /// Received rate.
    pub received_pps: f64,
    /// Frames offered.
    pub offered: u64,
    /// Frames the tx port took.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
    /// Expected frames not received.
    pub lost: u64,
    /// `lost` / expected.
    pub loss: f64,
    /// Frames the tx port refused.
    pub refused: u64,
    /// Received out of order.
    pub reordered: u64,
    /// Received from an earlier trial.
    pub stale: u64,
    /// Received without a stamp.
    pub foreign: u64,
    /// Received although the DUT dropped their template in calibration.
    pub unexpected: u64,
    /// Frames back on the tx port.
    pub returned: u64,
    /// Whether the tester fell short of the asked rate.
    pub tester_limited: bool,
    /// End-to-end latency.
    pub latency_ns: Percentiles,
}

/// One trial of the throughput search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchTrial {
    /// Asked rate.
    pub asked_pps: f64,
    /// Achieved offered rate.
    pub offered_pps: f64,
    /// Loss fraction.
    pub loss: f64,
}

/// The throughput search's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    /// Highest passing rate.
    pub rate_pps: f64,
    /// Loss tolerated (0: NDR).
    pub loss_tolerance: f64,
    /// Upper bound of the search.
    pub max_pps: f64,
    /// Whether the tester's own limit bounded the result.
    pub tester_limited: bool,
    /// Every trial.
    pub trials: Vec<SearchTrial>,
}

/// Everything one generator run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Names the device under test (`testpmd`, `hbgw`, ...).
    pub label: String,
    /// Frame size (`64`, ..., `imix`, `pcap`).
    pub size: String,
    /// Mean frame size on the wire, with FCS.
    pub mean_frame_bytes: f64,
    /// Templates in the cycle.
    pub templates: usize,
    /// Templates the DUT drops on purpose (calibration).
    pub policy_dropped_templates: usize,
    /// TSC frequency (cycles per packet are computed with it).
    pub tsc_hz: u64,
    /// The links' stated speed.
    pub link_speed_mbps: Option<u32>,
    /// The throughput search, if one ran.
    pub throughput: Option<Throughput>,
    /// The trials at fixed rates (latency loads, or the single trial).
    pub loads: Vec<LoadResult>,
}

impl RunResult {
    /// Reads a result file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not an hbgw-gen result ({e}): give files written with --json", path.display()))
    }
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// The comparison table: per frame size, each run's throughput, its ratio to
/// the baseline run of that size, cycles per packet at that rate (one DUT
/// core), and latency at each load.
pub fn table(results: &[RunResult], baseline: &str) -> String {
    let mut out = String::from(
        "| frame | DUT | throughput Mpps | x baseline | cycles/pkt | load | offered Mpps | loss | latency us p50 / p90 / p99 / p99.9 / max |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut sizes: Vec<&str> = Vec::new();
    for r in results {
        if !sizes.contains(&r.size.as_str()) {
            sizes.push(&r.size);
        }
    }
    for size in sizes {
        let base = results.iter().find(|r| r.size == size && r.label == baseline).and_then(|r| r.throughput.as_ref()).map(|t| t.rate_pps);
        for r in results.iter().filter(|r| r.size == size) {
            let (tput, ratio, cycles) = match &r.throughput {
                Some(t) => (
                    format!("{:.2}{}", t.rate_pps / 1e6, if t.tester_limited { " (tester-limited)" } else { "" }),
                    base.filter(|b| *b > 0.0).map(|b| format!("{:.2}", t.rate_pps / b)).unwrap_or_else(|| "-".into()),
                    if t.rate_pps > 0.0 { format!("{:.0}", r.tsc_hz as f64 / t.rate_pps) } else { "-".into() },
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let frame = if r.size == "imix" || r.size == "pcap" { format!("{} ({:.0} B)", r.size, r.mean_frame_bytes) } else { r.size.clone() };
            for l in &r.loads {
                let p = &l.latency_ns;
                out.push_str(&format!(
                    "| {frame} | {} | {tput} | {ratio} | {cycles} | {} | {:.2} | {:.4}% | {} / {} / {} / {} / {} |\n",
                    r.label,
                    l.percent.map(|x| format!("{x:.0}%")).unwrap_or_else(|| "-".into()),
                    l.offered_pps / 1e6,
                    l.loss * 100.0,
                    us(p.p50),
                    us(p.p90),
                    us(p.p99),
                    us(p.p999),
                    us(p.max)
                ));
            }
            if r.loads.is_empty() {
                out.push_str(&format!("| {frame} | {} | {tput} | {ratio} | {cycles} | - | - | - | - |\n", r.label));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, size: &str, rate: f64) -> RunResult {
        RunResult {
            label: label.into(),
            size: size.into(),
            mean_frame_bytes: 64.0,
            templates: 100,
            policy_dropped_templates: 0,
            tsc_hz: 2_000_000_000,
            link_speed_mbps: None,
            throughput: Some(Throughput { rate_pps: rate, loss_tolerance: 0.0, max_pps: 20e6, tester_limited: false, trials: vec![] }),
            loads: vec![LoadResult {
                percent: Some(50.0),
                asked_pps: Some(rate / 2.0),
                offered_pps: rate / 2.0,
                received_pps: rate / 2.0,
                offered: 10,
                sent: 10,
                received: 10,
                lost: 0,
                loss: 0.0,
                refused: 0,
                reordered: 0,
                stale: 0,
                foreign: 0,
                unexpected: 0,
                returned: 0,
                tester_limited: false,
                latency_ns: Percentiles { count: 10, p50: 1500, p90: 2000, p99: 3000, p999: 4000, max: 5000 },
            }],
        }
    }

    #[test]
    fn ratio_is_against_the_baseline_of_the_same_size() {
        let rs = vec![run("testpmd", "64", 10e6), run("hbgw", "64", 8e6), run("testpmd", "1518", 2e6), run("hbgw", "1518", 2e6)];
        let t = table(&rs, "testpmd");
        assert!(t.contains("| 64 | hbgw | 8.00 | 0.80 | 250 | 50% | 4.00 | 0.0000% | 1.5 / 2.0 / 3.0 / 4.0 / 5.0 |"), "{t}");
        assert!(t.contains("| 1518 | hbgw | 2.00 | 1.00 | 1000 |"), "{t}");
    }

    #[test]
    fn json_round_trips() {
        let r = run("hbgw", "imix", 1e6);
        let back: RunResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
