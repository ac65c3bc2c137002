//! # hbgw-controlplane
//!
//! The gateway's control plane: one thread running a tokio runtime, on a core
//! no worker uses (it inherits the main lcore's CPU affinity). Today it owns:
//!
//! * [`stats`] — merging the workers' counters and latency histograms into
//!   interval and cumulative views ([`stats::StatsAggregator`]);
//! * [`admin`] — the stats socket `hbgw stats` talks to (one JSON line per
//!   request; the protocol is in `docs/stats-protocol.md`);
//! * [`hlog`] — the HdrHistogram interval log (`--hlog`);
//! * [`event_log`] — JSON-lines event log, rotated, identical events folded;
//! * [`metrics`] — Prometheus metrics with bucketed latency histograms;
//! * [`threat_log`] — Active threat response and heartbeat-drop logs from the
//!   workers' events.
//!
//! What it must never do: touch a worker's memory except to read counters,
//! make a worker wait (all hand-over is through bounded channels the workers
//! `try_send` into), or run on a worker's core.
#![deny(missing_docs)]

pub mod admin;
pub mod event_log;
pub mod hlog;
pub mod metrics;
pub mod stats;
pub mod threat_log;

use hbgw_shared::stats::StatsReport;
use stats::StatsAggregator;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the control plane runs.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// The stats socket path.
    pub stats_socket: PathBuf,
    /// Stats interval.
    pub interval: Duration,
    /// HdrHistogram interval log file, if wanted.
    pub hlog: Option<PathBuf>,
    /// What to print on stdout every interval.
    pub live: LiveOutput,
    /// Serve Prometheus metrics on this local address.
    pub prometheus: Option<std::net::SocketAddr>,
}

/// Live output on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveOutput {
    /// Nothing.
    Off,
    /// One line per interval: rates, drops, latency percentiles.
    Line,
    /// The whole stats table per interval.
    Table,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The stats socket could not be bound.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The metrics port could not be opened.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The histogram log could not be created.
    #[error("cannot create histogram log {path}: {source}: check the --hlog path")]
    Hlog {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime thread could not start.
    #[error("cannot start the control-plane thread: {0}")]
    Thread(std::io::Error),
}

/// The running control plane.
pub struct ControlPlane {
    thread: std::thread::JoinHandle<()>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    aggregator: Arc<Mutex<StatsAggregator>>,
}

impl ControlPlane {
    /// Starts the control-plane thread. The socket and log file are opened
    /// before this returns, so their errors are reported here.
    pub fn start(config: ControlPlaneConfig, aggregator: StatsAggregator) -> Result<Self, ControlPlaneError> {
        let listener = admin::bind(&config.stats_socket)?;
        let metrics_listener = config.prometheus.map(metrics::bind).transpose()?;
        let hlog = match &config.hlog {
            Some(path) => Some(
                hlog::HlogFile::create(path)
                    .map_err(|source| ControlPlaneError::Hlog { path: path.clone(), source })?,
            ),
            None => None,
        };
        let aggregator = Arc::new(Mutex::new(aggregator));
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel();
        let agg = aggregator.clone();
        let thread = std::thread::Builder::new()
            .name("hbgw-control".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(run(config, agg, listener, metrics_listener, hlog, shutdown_rx));
            })
            .map_err(ControlPlaneError::Thread)?;
        Ok(Self { thread, shutdown, aggregator })
    }

    /// The aggregator (the gateway's main thread polls it for idleness).
    pub fn aggregator(&self) -> &Arc<Mutex<StatsAggregator>> {
        &self.aggregator
    }

    /// Stops the control plane after the workers have stopped: takes their
    /// last latency samples and returns the final report.
    pub fn stop(self) -> StatsReport {
        let _ = self.shutdown.send(());
        let _ = self.thread.join();
        let report = match self.aggregator.lock() {
            Ok(mut a) => a.final_report(),
            Err(poisoned) => poisoned.into_inner().final_report(),
        };
        report
    }
}

async fn run(
    config: ControlPlaneConfig,
    aggregator: Arc<Mutex<StatsAggregator>>,
    listener: std::os::unix::net::UnixListener,
    metrics_listener: Option<std::net::TcpListener>,
    mut hlog: Option<hlog::HlogFile>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let server = tokio::spawn(admin::serve(listener, config.stats_socket.clone(), aggregator.clone()));
    let metrics_server = metrics_listener.map(|l| tokio::spawn(metrics::serve(l, aggregator.clone())));
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let (report, interval) = {
                    let mut a = aggregator.lock().unwrap_or_else(|p| p.into_inner());
                    a.tick()
                };
                if let Some(h) = hlog.as_mut() {
                    if let Err(e) = h.write_interval(&interval) {
                        tracing::warn!("histogram log write failed, stopping the log: {e}");
                        hlog = None;
                    }
                }
                print_live(config.live, &report);
            }
            _ = &mut shutdown => break,
        }
    }
    server.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    let _ = std::fs::remove_file(&config.stats_socket);
    // The final interval goes to the log too, so it covers the whole run.
    if let Some(h) = hlog.as_mut() {
        let interval = aggregator.lock().unwrap_or_else(|p| p.into_inner()).drain_interval();
        let _ = h.write_interval(&interval);
        let _ = h.flush();
    }
}

fn print_live(live: LiveOutput, report: &StatsReport) {
    use std::io::Write;
    let text = match live {
        LiveOutput::Off => return,
        LiveOutput::Line => report.render_line(),
        LiveOutput::Table => report.render_table(),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
