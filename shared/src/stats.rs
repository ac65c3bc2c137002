//! The stats report: what the control plane serves on its socket, what
//! `hbgw stats` prints, and what the gateway prints when it stops.
//!
//! Latency figures are nanoseconds of worker processing time (see
//! `dataplane::latency` for what is measured). The JSON form is the table's
//! source of truth: `hbgw stats --json` prints it unchanged.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency percentiles of one histogram, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples (packets) recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// 50th percentile.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest value.
    pub max: u64,
}

/// Packet counters over some span (an interval or since start).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Frames received.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames dropped, all reasons.
    pub dropped: u64,
    /// Frames punted to the control plane.
    pub punted: u64,
    /// Drops by reason (reason name -> count); only reasons seen.
    pub drops: BTreeMap<String, u64>,
    /// Frames whose headers did not parse, by reason (dropped or forwarded
    /// by the malformed-frame policy); only reasons seen.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub malformed: BTreeMap<String, u64>,
    /// Tap mode: frames that would have been dropped, by reason (forwarded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tap_would_drop: BTreeMap<String, u64>,
}

fn map_since(now: &BTreeMap<String, u64>, earlier: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, v) in now {
        let d = v.saturating_sub(earlier.get(k).copied().unwrap_or(0));
        if d > 0 {
            out.insert(k.clone(), d);
        }
    }
    out
}

fn map_add(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Counts {
    /// `self - earlier`, counter by counter (counters only grow).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            rx: self.rx.saturating_sub(earlier.rx),
            tx: self.tx.saturating_sub(earlier.tx),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            punted: self.punted.saturating_sub(earlier.punted),
            drops: map_since(&self.drops, &earlier.drops),
            malformed: map_since(&self.malformed, &earlier.malformed),
            tap_would_drop: map_since(&self.tap_would_drop, &earlier.tap_would_drop),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counts) {
        self.rx += other.rx;
        self.tx += other.tx;
        self.dropped += other.dropped;
        self.punted += other.punted;
        map_add(&mut self.drops, &other.drops);
        map_add(&mut self.malformed, &other.malformed);
        map_add(&mut self.tap_would_drop, &other.tap_would_drop);
    }
}

/// One worker lcore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Worker index.
    pub id: usize,
    /// The EAL lcore it runs on.
    pub lcore: u32,
    /// Since start.
    pub total: Counts,
    /// During the last complete interval.
    pub interval: Counts,
    /// Latency during the last complete interval.
    pub latency_interval: Percentiles,
    /// Latency since start (or since the last `--clear`).
    pub latency_total: Percentiles,
}

/// What the device itself reports (`rte_eth_stats_get`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounts {
    /// Packets the device received.
    pub ipackets: u64,
    /// Packets the device sent.
    pub opackets: u64,
    /// Packets the device dropped because rx queues were full.
    pub imissed: u64,
    /// Erroneous received packets.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// One port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortReport {
    /// DPDK port id.
    pub port_id: u16,
    /// Device name.
    pub name: String,
    /// `lan` or `wan`, and the bridge it belongs to.
    pub role: String,
    /// hbgw's own counters: rx = received on this port, tx = sent out of it,
    /// drops = frames that arrived here and were not forwarded.
    pub total: Counts,
    /// The same over the last complete interval.
    pub interval: Counts,
    /// The device's own counters.
    pub device: DeviceCounts,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Seconds since the workers started.
    pub uptime_s: f64,
    /// Length of the interval the `interval` figures cover, seconds.
    pub interval_s: f64,
    /// Whether this is the final report of a stopped gateway.
    pub stopped: bool,
    /// Per worker.
    pub workers: Vec<WorkerReport>,
    /// Per port.
    pub ports: Vec<PortReport>,
    /// All workers merged, last interval.
    pub latency_interval: Percentiles,
    /// All workers merged, since start.
    pub latency_total: Percentiles,
    /// Events the workers could not hand to the control plane (a full channel).
    pub channel_overflows: u64,
    /// Source MACs the workers could not record (their seen-MAC set was full).
    #[serde(default)]
    pub seen_macs_overflow: u64,
    /// Frames whose verdict came from the workers' flow caches, since start.
    #[serde(default)]
    pub flow_cache_hits: u64,
    /// Frames without an application hint the flow caches could not answer
    /// (decided in full), since start.
    #[serde(default)]
    pub flow_cache_misses: u64,
    /// Flush periods (~100 ms) a worker's flow cache sat out because too
    /// few of its lookups hit (many more flows than entries), since start.
    #[serde(default)]
    pub flow_cache_bypassed_periods: u64,
    /// Application hints of flow-cached frames that the workers' quiet-hint
    /// caches knew matched no indicator (no lookup), since start.
    #[serde(default)]
    pub hint_cache_hits: u64,
    /// Such hints looked up in the indicators, since start.
    #[serde(default)]
    pub hint_cache_misses: u64,
    /// Whether the workers enforce policy (false: plain bridge).
    #[serde(default)]
    pub enforcing: bool,
    /// Whether the gateway only observes (tap mode).
    #[serde(default)]
    pub tap_mode: bool,
    /// The Central connection, when `[central]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central: Option<CentralStatus>,
}

/// The gateway's view of its Central connection (`hbgw stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentralStatus {
    /// Central's URL.
    pub url: String,
    /// `connected`, `disconnected`, `not enrolled`, or `starting`.
    pub state: String,
    /// The gateway's id at Central, once enrolled.
    pub gateway_id: Option<String>,
    /// The revision in force (0: nothing from Central yet).
    pub revision: u64,
    /// Unix milliseconds of the last answer from Central.
    pub last_contact_ms: Option<u64>,
    /// The last error (unreachable, refused update, ...), one line.
    pub last_error: Option<String>,
    /// Updates applied since start.
    pub updates_applied: u64,
    /// Updates refused whole since start.
    pub updates_rejected: u64,
    /// Full snapshots applied since start.
    pub snapshots: u64,
    /// Indicators held (Central's and third-party).
    pub indicators: u64,
    /// Endpoint certificates pinned from Central.
    pub endpoint_certs: u64,
    /// Whether a policy from Central is in force; if not, `before_first_sync` applies.
    pub policy_from_central: bool,
    /// `fail_closed` or `fail_open`.
    pub before_first_sync: String,
    /// Frames forwarded because no policy existed yet (fail-open decisions).
    pub fail_open_frames: u64,
    /// Log events waiting in the spool.
    pub events_spooled: u64,
    /// Log events Central acknowledged since start.
    pub events_uploaded: u64,
    /// Log events dropped because the spool was full.
    pub events_dropped: u64,
}

fn rate(n: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    human(n as f64 / secs)
}

fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn latency_row(out: &mut String, label: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {label:<14} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        p.count, p.p50, p.p90, p.p99, p.p999, p.p9999, p.max
    );
}

impl StatsReport {
    /// One line for live output: interval rates, drops and latency.
    pub fn render_line(&self) -> String {
        let mut rx = 0;
        let mut tx = 0;
        let mut dropped = 0;
        for w in &self.workers {
            rx += w.interval.rx;
            tx += w.interval.tx;
            dropped += w.interval.dropped;
        }
        let l = &self.latency_interval;
        format!(
            "[{:>7.1}s] rx {:>8}pps tx {:>8}pps drop {:>8}pps | latency ns p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {}",
            self.uptime_s,
            rate(rx, self.interval_s),
            rate(tx, self.interval_s),
            rate(dropped, self.interval_s),
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.p9999,
            l.max
        )
    }

    /// Renders the report as the table `hbgw stats` and the final print show.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let iv = self.interval_s;
        let _ = writeln!(
            out,
            "hbgw {} — uptime {:.1}s, interval {:.1}s, {}",
            if self.stopped { "final stats" } else { "stats" },
            self.uptime_s,
            iv,
            match (self.enforcing, self.tap_mode) {
                (false, _) => "bridge (no policy)",
                (true, false) => "enforcing",
                (true, true) => "tap mode (observing, nothing dropped)",
            }
        );
        if let Some(c) = &self.central {
            let _ = writeln!(
                out,
                "Central {}: {}, revision {}{}; {} indicators, {} endpoint certs; logs: {} spooled, {} uploaded, {} dropped{}",
                c.url,
                c.state,
                c.revision,
                if c.policy_from_central { String::new() } else { format!(" (no policy yet: {}, {} frames forwarded fail-open)", c.before_first_sync, c.fail_open_frames) },
                c.indicators,
                c.endpoint_certs,
                c.events_spooled,
                c.events_uploaded,
                c.events_dropped,
                c.last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default()
            );
        }
        let _ = writeln!(out, "\nPorts (hbgw's counters; device counters in brackets)");
        let _ = writeln!(
            out,
            "  {:<4} {:<14} {:<6} {:>14} {:>14} {:>12} {:>9} {:>9}  [dev ipkts/opkts/missed/nombuf/oerr]",
            "id", "name", "role", "rx", "tx", "dropped", "rx/s", "tx/s"
        );
        for p in &self.ports {
            let _ = writeln!(
                out,
                "  {:<4} {:<14} {:<6} {:>14} {:>14} {:>12} {:>9} {:>9}  [{}/{}/{}/{}/{}]",
                p.port_id,
                p.name,
                p.role,
                p.total.rx,
                p.total.tx,
                p.total.dropped,
                rate(p.interval.rx, iv),
                rate(p.interval.tx, iv),
                p.device.ipackets,
                p.device.opackets,
                p.device.imissed,
                p.device.rx_nombuf,
                p.device.oerrors
            );
        }
        let _ = writeln!(out, "\nWorkers");
        let _ = writeln!(
            out,
            "  {:<4} {:<6} {:>14} {:>14} {:>12} {:>9}  drops by reason",
            "id", "lcore", "rx", "tx", "dropped", "rx/s"
        );
        for w in &self.workers {
            let mut reasons: Vec<String> = w.total.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
            reasons.extend(w.total.tap_would_drop.iter().map(|(k, v)| format!("would_drop.{k}={v}")));
            reasons.extend(w.total.malformed.iter().map(|(k, v)| format!("malformed.{k}={v}")));
            let _ = writeln!(
                out,
                "  {:<4} {:<6} {:>14} {:>14} {:>12} {:>9}  {}",
                w.id,
                w.lcore,
                w.total.rx,
                w.total.tx,
                w.total.dropped,
                rate(w.interval.rx, iv),
                if reasons.is_empty() { "-".into() } else { reasons.join(" ") }
            );
        }
        let _ = writeln!(out, "\nLatency, ns (worker rx -> tx, per packet)");
        let _ = writeln!(
            out,
            "  {:<14} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "packets", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        latency_row(&mut out, "all, interval", &self.latency_interval);
        latency_row(&mut out, "all, total", &self.latency_total);
        for w in &self.workers {
            latency_row(&mut out, &format!("worker {} int.", w.id), &w.latency_interval);
            latency_row(&mut out, &format!("worker {} total", w.id), &w.latency_total);
        }
        let looked_up = self.flow_cache_hits + self.flow_cache_misses;
        if self.enforcing && looked_up > 0 {
            let _ = writeln!(
                out,
                "\nflow cache (since start): {} hits, {} misses ({:.1}% hit), {} periods sat out for too few hits",
                self.flow_cache_hits,
                self.flow_cache_misses,
                100.0 * self.flow_cache_hits as f64 / looked_up as f64,
                self.flow_cache_bypassed_periods
            );
        }
        let hints = self.hint_cache_hits + self.hint_cache_misses;
        if self.enforcing && hints > 0 {
            let _ = writeln!(
                out,
                "quiet-hint cache (since start): {} hits, {} misses ({:.1}% hit)",
                self.hint_cache_hits,
                self.hint_cache_misses,
                100.0 * self.hint_cache_hits as f64 / hints as f64
            );
        }
        if self.channel_overflows > 0 || self.seen_macs_overflow > 0 {
            let _ = writeln!(
                out,
                "\nlost to full channels: {} events, {} seen-MAC records",
                self.channel_overflows, self.seen_macs_overflow
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_since_and_add() {
        let mut a = Counts { rx: 10, tx: 8, dropped: 2, ..Default::default() };
        a.drops.insert("runt".into(), 2);
        let b = Counts { rx: 4, tx: 4, ..Default::default() };
        let d = a.since(&b);
        assert_eq!((d.rx, d.tx, d.dropped), (6, 4, 2));
        assert_eq!(d.drops["runt"], 2);
        let mut s = Counts::default();
        s.add(&a);
        s.add(&a);
        assert_eq!(s.drops["runt"], 4);
        assert_eq!(s.rx, 20);
    }

    #[test]
    fn table_shows_ports_workers_and_percentiles() {
        let mut r = StatsReport { uptime_s: 2.0, interval_s: 1.0, ..Default::default() };
        r.ports.push(PortReport {
            port_id: 0,
            name: "net_pcap0".into(),
            role: "lan0".into(),
            total: Counts { rx: 123, ..Default::default() },
            ..Default::default()
        });
        r.workers.push(WorkerReport { id: 0, lcore: 1, ..Default::default() });
        r.latency_total.p9999 = 777;
        let t = r.render_table();
        assert!(t.contains("net_pcap0") && t.contains("123") && t.contains("777"), "{t}");
        let json = serde_json::to_string(&r).unwrap();
        let back: StatsReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
