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
//! * [`explain`] — `hbgw explain`: what decides a given flow, and why;
//! * [`threat_log`] — Active threat response and heartbeat-drop logs from the
//!   workers' events;
//! * [`central`] — Central sync, the reference Central, the last-known-good
//!   state; [`heartbeat`] — the Security Heartbeat service;
//! * [`background`] — the lowered priority of catch-up threads.
//!
//! What it must never do: touch a worker's memory except to read counters,
//! make a worker wait (all hand-over is through bounded channels the workers
//! `try_send` into), or run on a worker's core.
#![deny(missing_docs)]

pub mod admin;
pub mod background;
pub mod central;
pub mod event_log;
pub mod explain;
pub mod heartbeat;
pub mod hlog;
pub mod metrics;
pub mod stats;
pub mod threat_log;

use hbgw_dataplane::events::WorkerEvent;
use hbgw_dataplane::seen_macs::SeenMacsExchange;
use hbgw_shared::endpoint::{EndpointTableWriter, MacAddr};
use hbgw_shared::state::GatewayState;
use hbgw_shared::stats::StatsReport;
use std::collections::HashMap;
use threat_log::ThreatLog;
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

/// The control plane's share of enforcement: the state it writes and the
/// workers' reports it consumes.
pub struct EnforcementPlane {
    /// The published state (policy, indicators, endpoint table).
    pub state: Arc<GatewayState>,
    /// The endpoint table's only writer, shared within the control plane.
    pub endpoints: Arc<Mutex<EndpointTableWriter>>,
    /// Events from the workers.
    pub events: crossbeam_channel::Receiver<WorkerEvent>,
    /// Source MACs the workers saw (taken by the heartbeat service when it runs).
    pub seen_macs: Option<SeenMacsExchange>,
    /// The Security Heartbeat service to start, if configured.
    pub heartbeat: Option<HeartbeatSetup>,
    /// Where events are written.
    pub threat_log: ThreatLog,
    /// Answers `explain` on the stats socket.
    pub explainer: Arc<explain::Explainer>,
    /// The Central client to start, if `[central]` is configured.
    pub central: Option<central::client::CentralSetup>,
}

/// What the heartbeat service needs besides the shared table and seen MACs.
pub struct HeartbeatSetup {
    /// Listener, certificates, timers.
    pub config: heartbeat::HeartbeatConfig,
    /// The pinned endpoint certificates.
    pub certs: heartbeat::PinnedCertStore,
    /// Synchronized user ID's directory.
    pub directory: Arc<dyn heartbeat::UserDirectory>,
    /// The zone of each port slot.
    pub zone_of: heartbeat::ZoneOf,
}

/// User names for the threat log, from the heartbeat service.
struct HeartbeatUsers(Arc<heartbeat::HeartbeatService>);
impl threat_log::UserLookup for HeartbeatUsers {
    fn user_of(&self, ip: std::net::IpAddr) -> Option<String> {
        self.0.user_of_ip(ip).map(|u| u.account.to_string())
    }
}

/// Where and when each source MAC was last seen sending traffic (the
/// evidence the missing-heartbeat timers need).
#[derive(Debug, Default)]
pub struct SeenMacLedger {
    last_seen: HashMap<MacAddr, (std::time::Instant, usize)>,
}

impl SeenMacLedger {
    /// Takes every pending report and returns the buffers to their workers.
    pub fn drain(&mut self, exchange: &SeenMacsExchange, now: std::time::Instant) -> usize {
        let mut n = 0;
        while let Ok(report) = exchange.reports.try_recv() {
            for key in &report.macs {
                self.last_seen.insert(MacAddr(key.mac()), (now, key.slot()));
            }
            n += report.macs.len();
            if let Some(spare) = exchange.spares.get(report.worker) {
                let _ = spare.try_send(report.macs);
            }
        }
        n
    }

    /// When and on which port slot `mac` was last seen.
    pub fn last_seen(&self, mac: &MacAddr) -> Option<(std::time::Instant, usize)> {
        self.last_seen.get(mac).copied()
    }

    /// MACs seen so far.
    pub fn len(&self) -> usize {
        self.last_seen.len()
    }

    /// Whether no MAC was seen.
    pub fn is_empty(&self) -> bool {
        self.last_seen.is_empty()
    }
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
    /// The heartbeat service could not start.
    #[error(transparent)]
    Heartbeat(#[from] heartbeat::HeartbeatError),
    /// The Central client could not start.
    #[error("{0}")]
    Central(String),
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
    pub fn start(
        config: ControlPlaneConfig,
        aggregator: StatsAggregator,
        enforcement: Option<EnforcementPlane>,
    ) -> Result<Self, ControlPlaneError> {
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
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let agg = aggregator.clone();
        let thread = std::thread::Builder::new()
            .name("hbgw-control".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(run(config, agg, listener, metrics_listener, hlog, enforcement, shutdown_rx, ready_tx));
            })
            .map_err(ControlPlaneError::Thread)?;
        // Services that start inside the runtime (heartbeat) report here.
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ControlPlaneError::Thread(std::io::Error::other("the control-plane thread ended at start")));
            }
        }
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
    mut enforcement: Option<EnforcementPlane>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), ControlPlaneError>>,
) {
    let mut heartbeat_service: Option<Arc<heartbeat::HeartbeatService>> = None;
    if let Some(e) = enforcement.as_mut() {
        if let Some(setup) = e.heartbeat.take() {
            let deps = heartbeat::HeartbeatDeps {
                table: e.endpoints.clone(),
                certs: setup.certs,
                directory: setup.directory,
                zone_of: setup.zone_of,
                seen_macs: e.seen_macs.take(),
            };
            match heartbeat::HeartbeatService::start(setup.config, deps).await {
                Ok(svc) => {
                    let svc = Arc::new(svc);
                    tracing::info!("Security Heartbeat listening on {} (TLS, pinned endpoint certificates)", svc.local_addr());
                    e.threat_log.set_users(Box::new(HeartbeatUsers(svc.clone())));
                    heartbeat_service = Some(svc);
                }
                Err(err) => {
                    let _ = ready.send(Err(err.into()));
                    return;
                }
            }
        }
    }
    let mut central_client: Option<central::client::CentralClient> = None;
    if let Some(e) = enforcement.as_mut() {
        if let Some(setup) = e.central.take() {
            let hb = heartbeat_service.clone();
            let agg = aggregator.clone();
            let health: central::client::HealthSource = Box::new(move || {
                let drops = {
                    let a = agg.lock().unwrap_or_else(|p| p.into_inner());
                    let mut d = std::collections::BTreeMap::<String, u64>::new();
                    for p in &a.report().ports {
                        for (k, v) in &p.total.drops {
                            *d.entry(k.clone()).or_default() += v;
                        }
                    }
                    d
                };
                let endpoints = hb.as_ref().map(|h| serde_json::to_value(h.report().summary).unwrap_or_default());
                serde_json::json!({"endpoints": endpoints, "drops": drops})
            });
            match central::client::CentralClient::start(setup, e.state.clone(), health) {
                Ok(c) => {
                    if let Some(svc) = &heartbeat_service {
                        c.attach_heartbeat(svc.clone());
                    }
                    if !e.threat_log.set_mirror(c.spool()) {
                        tracing::warn!("no [events] log: nothing is uploaded to Central");
                    }
                    central_client = Some(c);
                }
                Err(err) => {
                    let _ = ready.send(Err(ControlPlaneError::Central(err)));
                    return;
                }
            }
        }
    }
    let _ = ready.send(Ok(()));
    let mut ledger = SeenMacLedger::default();
    // Events are drained often so that the workers' bounded channel rarely fills.
    let mut drain = tokio::time::interval(std::time::Duration::from_millis(20));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let explainer = enforcement.as_ref().map(|e| e.explainer.clone());
    let server = tokio::spawn(admin::serve(
        listener,
        config.stats_socket.clone(),
        aggregator.clone(),
        admin::Services { explainer, heartbeat: heartbeat_service.clone() },
    ));
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
                if let Some(c) = &central_client {
                    c.on_tick(&report);
                }
                print_live(config.live, &report);
            }
            _ = drain.tick(), if enforcement.is_some() => {
                if let Some(e) = enforcement.as_mut() {
                    drain_enforcement(e, &mut ledger);
                }
            }
            _ = &mut shutdown => break,
        }
    }
    if let Some(svc) = heartbeat_service.take() {
        match Arc::try_unwrap(svc) {
            Ok(svc) => svc.shutdown().await,
            Err(svc) => drop(svc),
        }
    }
    // The workers have stopped: take their last events and close the log.
    if let Some(mut e) = enforcement.take() {
        drain_enforcement(&mut e, &mut ledger);
        while !e.events.is_empty() {
            drain_enforcement(&mut e, &mut ledger);
        }
        if let Err(err) = e.threat_log.close() {
            tracing::warn!("event log: {err}");
        }
    }
    if let Some(c) = central_client.take() {
        c.finish();
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

/// Events taken per drain pass (every 20 ms): bounds the time the runtime
/// spends on them, so the sockets stay responsive however busy the workers
/// are; what does not fit waits in the bounded channel, and what overflows
/// that is counted.
const MAX_EVENTS_PER_DRAIN: usize = 8192;

fn drain_enforcement(e: &mut EnforcementPlane, ledger: &mut SeenMacLedger) {
    let now = std::time::Instant::now();
    for ev in e.events.try_iter().take(MAX_EVENTS_PER_DRAIN) {
        if let Err(err) = e.threat_log.handle(&ev, now) {
            tracing::warn!("event log write failed: {err}: events are counted but not written");
        }
    }
    if let Err(err) = e.threat_log.tick(now) {
        tracing::warn!("event log flush failed: {err}");
    }
    if let Some(seen) = &e.seen_macs {
        ledger.drain(seen, now);
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
