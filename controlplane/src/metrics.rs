//! Prometheus metrics on a local HTTP port (`[stats] prometheus =
//! "127.0.0.1:9469"` or `--prometheus ADDR`): counters per port and worker,
//! drops by reason, and worker latency as a real Prometheus *histogram*
//! (cumulative `_bucket{le=...}` series, `_sum`, `_count`) derived from the
//! cumulative HDR histograms, so `histogram_quantile()` and heatmaps work
//! across scrapes and across gateways. Not a summary: quantiles of
//! summaries cannot be aggregated.
//!
//! The server answers `GET /metrics` (and `GET /`) with text format 0.0.4 and
//! anything else with 404; it reads at most 8 KiB of request and closes each
//! connection after one answer.

use crate::stats::StatsAggregator;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bucket upper bounds in nanoseconds: 1-2-5 steps from 50 ns to 10 ms.
pub const BUCKETS_NS: [u64; 18] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000, 10_000_000, 100_000_000,
];

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    let sep = if labels.is_empty() { "" } else { "," };
    for b in BUCKETS_NS {
        // Values recorded at or below b (HDR buckets are equivalent ranges).
        let n = if h.is_empty() { 0 } else { h.count_between(0, b) };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{}\"}} {n}", b as f64 / 1e9);
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.len());
    let sum_s = if h.is_empty() { 0.0 } else { h.mean() * h.len() as f64 / 1e9 };
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {sum_s}");
    let _ = writeln!(out, "{name}_count{braces} {}", h.len());
}

/// The metrics page for the aggregator's last report and cumulative histograms.
pub fn render(agg: &StatsAggregator) -> String {
    let r = agg.report();
    let mut out = String::new();
    let counter = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    };
    counter(&mut out, "hbgw_port_rx_packets_total", "Frames received on the port.");
    for p in &r.ports {
        let _ = writeln!(out, "hbgw_port_rx_packets_total{{port=\"{}\",role=\"{}\"}} {}", p.name, p.role, p.total.rx);
    }
    counter(&mut out, "hbgw_port_tx_packets_total", "Frames sent out of the port.");
    for p in &r.ports {
        let _ = writeln!(out, "hbgw_port_tx_packets_total{{port=\"{}\",role=\"{}\"}} {}", p.name, p.role, p.total.tx);
    }
    counter(&mut out, "hbgw_port_dropped_packets_total", "Frames that arrived on the port and were dropped, by reason.");
    for p in &r.ports {
        for (reason, n) in &p.total.drops {
            let _ = writeln!(out, "hbgw_port_dropped_packets_total{{port=\"{}\",reason=\"{reason}\"}} {n}", p.name);
        }
    }
    counter(&mut out, "hbgw_port_device_missed_total", "Frames the device dropped because its rx ring was full.");
    for p in &r.ports {
        let _ = writeln!(out, "hbgw_port_device_missed_total{{port=\"{}\"}} {}", p.name, p.device.imissed);
    }
    counter(&mut out, "hbgw_worker_rx_packets_total", "Frames a worker received.");
    for w in &r.workers {
        let _ = writeln!(out, "hbgw_worker_rx_packets_total{{worker=\"{}\",lcore=\"{}\"}} {}", w.id, w.lcore, w.total.rx);
    }
    let _ = writeln!(
        out,
        "# HELP hbgw_worker_latency_seconds Worker processing latency per packet (rx_burst return to tx_burst return).\n# TYPE hbgw_worker_latency_seconds histogram"
    );
    histogram(&mut out, "hbgw_worker_latency_seconds", "", agg.total_histogram());
    for (id, h) in agg.worker_total_histograms() {
        histogram(&mut out, "hbgw_worker_latency_seconds", &format!("worker=\"{id}\""), h);
    }
    let _ = writeln!(out, "# HELP hbgw_uptime_seconds Seconds since the workers started.\n# TYPE hbgw_uptime_seconds gauge");
    let _ = writeln!(out, "hbgw_uptime_seconds {}", r.uptime_s);
    out
}

/// Why the metrics port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for Prometheus on {addr}: {source}: choose a free local address with --prometheus ADDR")]
pub struct MetricsError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Binds the metrics port (before the runtime starts, to report errors early).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| MetricsError { addr, source })?;
    l.set_nonblocking(true).map_err(|source| MetricsError { addr, source })?;
    Ok(l)
}

/// Serves `/metrics` until the task is aborted.
pub async fn serve(listener: std::net::TcpListener, aggregator: Arc<Mutex<StatsAggregator>>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let aggregator = aggregator.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                }
                None
            })
            .await;
            if !matches!(read, Ok(Some(()))) {
                return;
            }
            let request_line = buf[..len].split(|&b| b == b'\r').next().unwrap_or_default();
            let mut parts = request_line.split(|&b| b == b' ');
            let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            let (status, body, ctype) = if method == b"GET" && (path == b"/metrics" || path == b"/") {
                let body = render(&aggregator.lock().unwrap_or_else(|p| p.into_inner()));
                ("200 OK", body, "text/plain; version=0.0.4; charset=utf-8")
            } else {
                ("404 Not Found", "not found: GET /metrics\n".to_owned(), "text/plain; charset=utf-8")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{NoDeviceStats, PortInfo, StatsAggregator, WorkerInfo};
    use hbgw_dataplane::counters::{bump, WorkerCounters};

    #[test]
    fn histogram_buckets_are_cumulative_and_complete() {
        let counters = Arc::new(WorkerCounters::new(2));
        let (mut recs, ex) = hbgw_dataplane::latency::exchange(1, 1_000_000_000, 1);
        let mut agg = StatsAggregator::new(
            vec![PortInfo { slot: 0, port_id: 0, name: "lan".into(), role: "lan0".into() }],
            vec![WorkerInfo { id: 0, lcore: 1, counters: counters.clone() }],
            Box::new(NoDeviceStats),
            ex,
        );
        bump(&counters.port(0).rx, 30);
        recs[0].record_burst(80, 10); // 80 ns
        recs[0].record_burst(3_000, 20); // 3 us
        recs[0].flush(10);
        agg.tick();
        let page = render(&agg);
        assert!(page.contains("hbgw_port_rx_packets_total{port=\"lan\",role=\"lan0\"} 30"), "{page}");
        assert!(page.contains("# TYPE hbgw_worker_latency_seconds histogram"));
        assert!(page.contains("hbgw_worker_latency_seconds_bucket{le=\"0.00000005\"} 0"), "{page}");
        assert!(page.contains("hbgw_worker_latency_seconds_bucket{le=\"0.0000001\"} 10"), "{page}");
        assert!(page.contains("hbgw_worker_latency_seconds_bucket{le=\"0.000005\"} 30"), "{page}");
        assert!(page.contains("hbgw_worker_latency_seconds_bucket{le=\"+Inf\"} 30"));
        assert!(page.contains("hbgw_worker_latency_seconds_count 30"));
        assert!(page.contains("hbgw_worker_latency_seconds_bucket{worker=\"0\",le=\"+Inf\"} 30"), "{page}");
        // Buckets never decrease.
        let mut last = 0;
        for line in page.lines().filter(|l| l.starts_with("hbgw_worker_latency_seconds_bucket{le=")) {
            let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(n >= last);
            last = n;
        }
    }
}
