//! Running the gateway: from a parsed command line to workers forwarding
//! frames, and back to an orderly stop.
//!
//! Order of start: config -> EAL -> lcores -> ports -> mempool -> queues ->
//! control plane (stats socket) -> workers. Order of stop (SIGINT, SIGTERM,
//! `--exit-on-idle`, `--duration`): workers told to stop and waited for ->
//! control plane takes their last samples and builds the final report ->
//! ports stopped and closed (pcap devices flush their files) -> final table
//! printed -> `rte_eal_cleanup`.

use crate::cli::{AppArgs, Live};
use crate::demo::DemoTraffic;
use crate::dpdk::eal::{has_flag, Eal};
use crate::dpdk::mbuf::DpdkIo;
use crate::dpdk::mempool::Mempool;
use crate::dpdk::port::{Port, PortSetup};
use crate::dpdk::{lcore, tsc_hz};
use anyhow::{anyhow, bail, Result};
use hbgw_controlplane::stats::{DeviceStats, PortInfo, StatsAggregator, WorkerInfo};
use hbgw_controlplane::{ControlPlane, ControlPlaneConfig, LiveOutput};
use hbgw_dataplane::counters::WorkerCounters;
use hbgw_dataplane::latency;
use hbgw_dataplane::pipeline::Pipeline;
use hbgw_dataplane::worker::{RxAssignment, Worker, WorkerPlan};
use hbgw_controlplane::event_log::{EventLog, EventLogConfig};
use hbgw_controlplane::threat_log::{NoUsers, ThreatLog};
use hbgw_controlplane::explain::Explainer;
use hbgw_controlplane::heartbeat::{
    FileDirectory, HeartbeatConfig, LdapDirectory, LdapDirectoryConfig, PinnedCertStore, UserDirectory,
};
use hbgw_controlplane::central::client::{load_start, CentralSetup};
use hbgw_controlplane::{EnforcementPlane, HeartbeatSetup};
use hbgw_shared::stats::CentralStatus;
use hbgw_shared::config::HeartbeatSection;
use hbgw_dataplane::enforce::{EnforcementConfig, Enforcer, LateralMovement, MalformedAction, PortContext};
use hbgw_dataplane::events::{self, EventGate};
use hbgw_dataplane::flow_cache::FlowCache;
use hbgw_dataplane::pipeline::Enforcing;
use hbgw_dataplane::seen_macs::{self, SeenMacs};
use hbgw_shared::config::{BridgeConfig, Config, EnforcementSection, MalformedPolicy};
use hbgw_shared::endpoint::EndpointTableWriter;
use hbgw_shared::indicators::IndicatorSet;
use hbgw_shared::policy::{CompiledPolicy, Policy, PortRole};
use hbgw_shared::state::GatewayState;
use hbgw_shared::stats::DeviceCounts;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a worker hands its latency histogram to the control plane.
const LATENCY_FLUSH: Duration = Duration::from_millis(100);
/// The exception path's TAP device (DPDK's name for it).
const EXCEPTION_VDEV: &str = "net_tap_exception0";

/// How often the main lcore checks for a stop condition.
const MAIN_POLL: Duration = Duration::from_millis(20);
/// Distinct (source MAC, port) pairs a worker records per flush period.
const SEEN_MACS_PER_FLUSH: usize = 65_536;
/// Identical events a worker folds into one within this window (per key).
const EVENT_GATE_WINDOW: Duration = Duration::from_millis(100);
/// Distinct event keys a worker remembers for folding.
const EVENT_GATE_SLOTS: usize = 4096;

/// The enforcement state loaded from files, before any worker starts.
pub struct LoadedState {
    /// What the workers read.
    pub state: Arc<GatewayState>,
    /// The endpoint table's writer (goes to the control plane).
    pub writer: EndpointTableWriter,
    /// The decide stage's settings.
    pub config: EnforcementConfig,
    /// The policy zone of LAN ports and of WAN ports (for the heartbeat
    /// service's missing-heartbeat zones).
    pub port_zones: (String, String),
    /// The policy's missing-heartbeat zones.
    pub missing_zones: Vec<String>,
}

/// The heartbeat service's settings from `[heartbeat]`: certificates and
/// directories are read here, before EAL, so that a bad file stops the start.
pub fn heartbeat_setup(section: &HeartbeatSection, loaded: &LoadedState) -> Result<HeartbeatSetup> {
    let certs = PinnedCertStore::new();
    for path in &section.endpoint_certs {
        let added = certs.add_pem_file(path).map_err(|e| anyhow!("{e}"))?;
        tracing::info!("pinned {} endpoint certificate(s) from {}", added.len(), path.display());
    }
    let directory: Arc<dyn UserDirectory> = match (&section.users, &section.ldap) {
        (Some(_), Some(_)) => bail!("[heartbeat] names both `users` and `ldap`: keep one directory"),
        (Some(path), None) => Arc::new(FileDirectory::load(path).map_err(|e| anyhow!("{e}"))?),
        (None, Some(l)) => {
            let bind_password = match &l.bind_password_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow!("cannot read heartbeat.ldap.bind_password_file {}: {e}", p.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            Arc::new(LdapDirectory::new(LdapDirectoryConfig {
                url: l.url.clone(),
                base_dn: l.base_dn.clone(),
                bind_dn: l.bind_dn.clone(),
                bind_password,
                domains: l.domains.clone(),
                timeout: Duration::from_secs(5),
            }))
        }
        (None, None) => Arc::new(FileDirectory::from_users(Vec::new())),
    };
    let (lan_zone, wan_zone) = loaded.port_zones.clone();
    let mut zones: std::collections::HashSet<String> = section.missing_heartbeat_zones.iter().cloned().collect();
    if zones.is_empty() {
        zones = loaded.missing_zones.iter().cloned().collect();
    }
    if zones.is_empty() {
        zones.insert(lan_zone.clone());
    }
    let config = HeartbeatConfig {
        listen: section.listen,
        server_cert: section.server_cert.clone(),
        server_key: section.server_key.clone(),
        allow_tls12: section.allow_tls12,
        interval: Duration::from_millis(section.interval_ms.max(100)),
        missed_limit: section.missed_limit.max(1),
        missing_heartbeat_zones: zones,
        ..Default::default()
    };
    let zone_of: hbgw_controlplane::heartbeat::ZoneOf =
        Arc::new(move |slot| Some(if slot % 2 == 0 { lan_zone.clone() } else { wan_zone.clone() }));
    Ok(HeartbeatSetup { config, certs, directory, zone_of })
}

/// Port slot 2k is bridge k's LAN side, 2k+1 its WAN side.
pub fn port_context(slot: usize) -> PortContext {
    if slot % 2 == 0 {
        PortContext { role: PortRole::Lan, peer_role: PortRole::Wan }
    } else {
        PortContext { role: PortRole::Wan, peer_role: PortRole::Lan }
    }
}

/// The role name of a port slot in stats and logs: `lan0`, `wan0`, `lan1`, ...
pub fn port_role_name(slot: usize) -> String {
    format!("{}{}", if slot % 2 == 0 { "lan" } else { "wan" }, slot / 2)
}

/// The policy zone of LAN and WAN ports, and the missing-heartbeat zones.
fn policy_zones(source: Option<&Policy>) -> ((String, String), Vec<String>) {
    // A port's zone (without VLAN): the first zone of its role that names no VLAN.
    let zone_of_role = |role: PortRole, fallback: &str| {
        source
            .and_then(|p| p.zones.iter().find(|z| z.role == role && z.vlans.is_empty()).map(|z| z.name.clone()))
            .unwrap_or_else(|| fallback.to_owned())
    };
    let port_zones = (zone_of_role(PortRole::Lan, "lan"), zone_of_role(PortRole::Wan, "wan"));
    (port_zones, source.map(|p| p.missing_heartbeat_zones.clone()).unwrap_or_default())
}

/// Loads `[enforcement]`: policy, threat feed and static endpoints. Any error
/// refuses the whole start: no half-applied policy.
pub fn load_enforcement(section: &EnforcementSection) -> Result<LoadedState> {
    let source = section.policy.as_ref().map(|path| Policy::load(path)).transpose()?;
    let policy = match &source {
        Some(p) => p.compile()?,
        None => CompiledPolicy::default(),
    };
    let (port_zones, missing_zones) = policy_zones(source.as_ref());
    let indicators = match &section.threat_feed {
        Some(path) => hbgw_shared::feed_file::load_threat_feed(path)?,
        None => IndicatorSet::empty(),
    };
    let (state, mut writer) = GatewayState::new(policy, indicators);
    if let Some(path) = &section.endpoints {
        writer.upsert_many(hbgw_shared::feed_file::load_endpoints(path)?);
    }
    let lm = section.lateral_movement;
    let config = EnforcementConfig {
        tap_mode: section.tap_mode,
        malformed: match section.malformed {
            MalformedPolicy::Drop => MalformedAction::Drop,
            MalformedPolicy::Forward => MalformedAction::Forward,
        },
        lateral: LateralMovement {
            enabled: lm.enabled,
            include_yellow: lm.include_yellow,
            include_missing: lm.include_missing,
        },
        gateway_ips: section.gateway_addresses.clone(),
        flow_cache_entries: section.flow_cache_entries,
        hint_cache_entries: section.hint_cache_entries,
    };
    Ok(LoadedState { state, writer, config, port_zones, missing_zones })
}

/// The configuration after the file and the command-line overrides.
pub fn effective_config(app: &AppArgs) -> Result<Config> {
    let mut cfg = match &app.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !app.port_pairs.is_empty() {
        cfg.bridges = app
            .port_pairs
            .iter()
            .map(|p| match p.split_once(',') {
                Some((lan, wan)) => Ok(BridgeConfig { lan: lan.trim().into(), wan: wan.trim().into() }),
                None => Err(anyhow!("--port-pair {p:?} is not LAN,WAN: write e.g. --port-pair net_pcap0,net_pcap1")),
            })
            .collect::<Result<_>>()?;
    }
    if let Some(w) = &app.workers {
        cfg.dataplane.workers = w.clone();
    }
    if let Some(n) = app.rx_queues {
        cfg.dataplane.rx_queues = n;
    }
    if let Some(n) = app.burst {
        cfg.dataplane.burst_size = n;
    }
    if let Some(n) = app.mempool_size {
        cfg.dataplane.mempool_size = n;
    }
    if let Some(p) = &app.stats_socket {
        cfg.stats.socket = p.clone();
    }
    if let Some(ms) = app.stats_interval {
        cfg.stats.interval_ms = ms;
    }
    if let Some(p) = &app.hlog {
        cfg.stats.hlog = Some(p.clone());
    }
    if let Some(a) = app.prometheus {
        cfg.stats.prometheus = Some(a);
    }
    Ok(cfg)
}

/// Whether the EAL arguments name any device (so no demo traffic is added).
fn names_devices(eal: &[String]) -> bool {
    eal.iter().any(|a| a == "-a" || a.starts_with("-a") || a.starts_with("--allow") || a.starts_with("--vdev"))
}

/// The EAL arguments hbgw actually passes: the user's, plus the safe defaults
/// they did not override.
pub fn eal_args(user: &[String], extra_vdevs: &[String]) -> Vec<String> {
    let mut args = user.to_vec();
    let allow_list = user.iter().any(|a| a == "-a" || (a.starts_with("-a") && a.len() > 2) || a.starts_with("--allow"));
    if !allow_list && !has_flag(user, &["--no-pci"]) {
        // Never probe a PCI device nobody named: the machine's own NIC is not ours.
        args.push("--no-pci".into());
    }
    if !has_flag(user, &["--file-prefix"]) {
        args.push(format!("--file-prefix=hbgw-{}", std::process::id()));
    }
    let no_huge = has_flag(user, &["--no-huge"]);
    if no_huge {
        if !has_flag(user, &["--no-shconf", "--in-memory"]) {
            args.push("--no-shconf".into());
        }
        if !user.iter().any(|a| a == "-m" || a.starts_with("--socket-mem")) {
            args.push("-m".into());
            args.push("512".into());
        }
    } else if !has_flag(user, &["--in-memory", "--huge-unlink"]) {
        // Do not leave hugepage files behind when we exit.
        args.push("--huge-unlink".into());
    }
    args.extend(extra_vdevs.iter().cloned());
    args
}

struct DpdkDeviceStats;
impl DeviceStats for DpdkDeviceStats {
    fn read(&self, port_id: u16) -> DeviceCounts {
        Port::device_counts(port_id)
    }
}

/// Picks worker lcores and checks them against what EAL enabled.
fn worker_lcores(cfg: &Config) -> Result<Vec<u32>> {
    let main = lcore::main_lcore();
    let available = lcore::worker_lcores();
    let chosen = if cfg.dataplane.workers.is_empty() { available.clone() } else { cfg.dataplane.workers.clone() };
    for &l in &chosen {
        if l == main {
            bail!(
                "dataplane.workers includes lcore {l}, the main lcore (it runs the control plane): remove it, or pick another main lcore with --main-lcore"
            );
        }
        if !lcore::is_enabled(l) {
            bail!("dataplane.workers names lcore {l}, which EAL was not given: add it to -l (e.g. -l {main},{l}) or remove it from the workers");
        }
    }
    if chosen.is_empty() {
        bail!("no worker lcore: give EAL at least two lcores (e.g. -l 0,1): the main one runs the control plane, the others run workers");
    }
    Ok(chosen)
}

/// Runs the gateway until a stop condition; returns once everything is released.
pub fn run(user_eal: Vec<String>, app: AppArgs) -> Result<()> {
    let mut cfg = effective_config(&app)?;

    // The built-in default: no device and no bridge named anywhere.
    let demo = if cfg.bridges.is_empty() && !names_devices(&user_eal) {
        let d = DemoTraffic::create().map_err(|e| anyhow!("cannot write the built-in traffic files: {e}: check that the temp dir is writable"))?;
        cfg.bridges = vec![BridgeConfig { lan: d.bridge.0.clone(), wan: d.bridge.1.clone() }];
        tracing::info!("no port named: bridging the built-in traffic source {} <-> {}", d.bridge.0, d.bridge.1);
        Some(d)
    } else {
        None
    };
    let mut extra_vdevs: Vec<String> = demo.as_ref().map_or(Vec::new(), |d| d.vdev_args.clone());
    if let Some(exc) = &cfg.exception {
        extra_vdevs.push(format!("--vdev={EXCEPTION_VDEV},iface={},mac={}", exc.tap, exc.mac));
    }
    let args = eal_args(&user_eal, &extra_vdevs);
    if cfg.bridges.is_empty() {
        // Validated after EAL: ports may be paired in the order EAL probed them.
        let mut probe = cfg.clone();
        probe.bridges = vec![BridgeConfig { lan: "a".into(), wan: "b".into() }];
        probe.validate()?;
    } else {
        cfg.validate()?;
    }

    // Policy, feed and endpoints are loaded before EAL starts: a bad file
    // stops the gateway before it touches a port. The heartbeat service needs
    // the enforcing pipeline (its seen-MAC reports), so it implies one.
    if (cfg.heartbeat.is_some() || cfg.exception.is_some()) && cfg.enforcement.is_none() {
        cfg.enforcement = Some(EnforcementSection::default());
    }
    // Central: the last-known-good state is read before EAL too, and it
    // replaces the policy and feed files (one source of truth).
    let central_start = match &cfg.central {
        Some(c) => {
            let e = cfg.enforcement.get_or_insert_with(EnforcementSection::default);
            if e.policy.is_some() || e.threat_feed.is_some() {
                bail!("[central] and [enforcement] policy/threat_feed are both set: with Central, policy and feeds come from Central; remove them from [enforcement]");
            }
            if cfg.events.log.is_none() {
                // Logs are uploaded from the event log: keep one in the state directory.
                cfg.events.log = Some(c.state_dir.join("events.jsonl"));
            }
            Some(load_start(c).map_err(|e| anyhow!("{e}"))?)
        }
        None => None,
    };
    let mut loaded = cfg.enforcement.as_ref().map(load_enforcement).transpose()?;
    if let (Some(start), Some(l)) = (&central_start, loaded.as_mut()) {
        l.state.set_policy(start.compiled.clone());
        l.state.set_overlay(start.indicators.clone());
        (l.port_zones, l.missing_zones) = policy_zones(start.policy.as_ref());
        tracing::info!(
            "Central: enforcing revision {} from the state directory ({} indicators, {}, {} endpoint certificate(s))",
            start.synced.revision,
            start.synced.indicator_count(),
            if start.synced.policy.is_some() { "policy from Central".to_owned() } else { format!("no policy yet: {:?}", cfg.central.as_ref().map(|c| c.before_first_sync)) },
            start.synced.certs.len()
        );
    }
    if let (Some(exc), Some(l)) = (&cfg.exception, loaded.as_mut()) {
        // The exception path's addresses are the gateway's own: punt them.
        for a in &exc.addresses {
            if let Some(ip) = a.split_once('/').and_then(|(ip, _)| ip.parse().ok()) {
                if !l.config.gateway_ips.contains(&ip) {
                    l.config.gateway_ips.push(ip);
                }
            }
        }
    }
    let heartbeat = match (&cfg.heartbeat, &loaded) {
        (Some(section), Some(l)) => Some(heartbeat_setup(section, l)?),
        _ => None,
    };
    let central = match (central_start, &cfg.central) {
        (Some(start), Some(section)) => {
            if let Some(h) = &heartbeat {
                for c in start.synced.certs.values() {
                    h.certs.add_der(&c.der).map_err(|e| anyhow!("endpoint certificate {} in the state directory: {e}", c.name))?;
                }
            }
            Some(CentralSetup {
                config: section.clone(),
                start,
                certs: heartbeat.as_ref().map(|h| h.certs.clone()),
                status: Arc::new(std::sync::Mutex::new(CentralStatus::default())),
            })
        }
        _ => None,
    };

    tracing::info!("EAL arguments: {}", args[1..].join(" "));
    let eal = Eal::init(&args)?;
    let result = run_with_eal(&mut cfg, &app, loaded, heartbeat, central);
    drop(demo);
    eal.cleanup();
    result
}

fn run_with_eal(
    cfg: &mut Config,
    app: &AppArgs,
    loaded: Option<LoadedState>,
    heartbeat: Option<HeartbeatSetup>,
    central: Option<CentralSetup>,
) -> Result<()> {
    if cfg.bridges.is_empty() {
        let ports: Vec<_> = crate::dpdk::port::available().into_iter().filter(|p| p.name != EXCEPTION_VDEV).collect();
        if ports.is_empty() || ports.len() % 2 != 0 {
            bail!(
                "no bridge configured and EAL found {} port(s), which cannot be paired: name the pairs with --port-pair LAN,WAN or [[bridge]] in the config",
                ports.len()
            );
        }
        cfg.bridges = ports
            .chunks(2)
            .map(|p| BridgeConfig { lan: p[0].name.clone(), wan: p[1].name.clone() })
            .collect();
        for b in &cfg.bridges {
            tracing::info!("no bridge configured: pairing ports in probe order, {} <-> {}", b.lan, b.wan);
        }
    }
    let dp = cfg.dataplane.clone();
    let lcores = worker_lcores(cfg)?;
    let nworkers = lcores.len();

    // Ports, in bridge order: slot 2k is bridge k's LAN, 2k+1 its WAN.
    let mut ports = Vec::new();
    let mut infos = Vec::new();
    for b in &cfg.bridges {
        for name in [&b.lan, &b.wan] {
            let port = Port::find(name).map_err(|e| anyhow!(e))?;
            infos.push(PortInfo { slot: ports.len(), port_id: port.id, name: port.name.clone(), role: port_role_name(ports.len()) });
            ports.push(port);
        }
    }

    let bridge_ports = ports.len();
    // The exception path: the TAP port comes after the bridges' ports.
    let exception = match &cfg.exception {
        Some(exc) => {
            let port = Port::find(EXCEPTION_VDEV).map_err(|e| anyhow!(e))?;
            let out_slot = infos.iter().position(|i| i.role == exc.port).ok_or_else(|| {
                anyhow!("exception.port `{}` is not a bridge port: use one of lan0, wan0, ... (there are {} bridges)", exc.port, cfg.bridges.len())
            })?;
            let slot = ports.len();
            infos.push(PortInfo { slot, port_id: port.id, name: exc.tap.clone(), role: "exception".into() });
            ports.push(port);
            Some((slot, out_slot, exc.clone()))
        }
        None => None,
    };

    let pool = Mempool::new("hbgw_pkt", dp.mempool_size, dp.mempool_cache).map_err(|e| anyhow!(e))?;
    let setup = PortSetup {
        rx_queues: dp.rx_queues,
        tx_queues: nworkers as u16,
        rx_descriptors: dp.rx_descriptors,
        tx_descriptors: dp.tx_descriptors,
    };
    let mut need = 0u64;
    for (slot, p) in ports.iter().enumerate() {
        let setup = if slot >= bridge_ports { PortSetup { rx_queues: 1, ..setup } } else { setup };
        let outcome = p.setup(setup, &pool).map_err(|e| anyhow!(e))?;
        need += u64::from(outcome.rx_descriptors) * u64::from(dp.rx_queues)
            + u64::from(outcome.tx_descriptors) * nworkers as u64;
        tracing::info!(
            "port {} ({}, driver {}): {} rx queue(s){}, {} tx queue(s)",
            p.id,
            p.name,
            p.driver(),
            dp.rx_queues,
            if outcome.rss { " with RSS" } else { "" },
            nworkers
        );
    }
    need += (nworkers as u64) * u64::from(dp.burst_size) * 3 + u64::from(dp.mempool_cache) * (nworkers as u64 + 1);
    if u64::from(dp.mempool_size) < need {
        bail!(
            "dataplane.mempool_size {} cannot fill every descriptor and cache ({need} mbufs needed): raise it to at least {need} or lower the descriptor counts",
            dp.mempool_size
        );
    }

    // Every (port, rx queue) to exactly one worker, round-robin.
    let mut plans: Vec<WorkerPlan> = lcores
        .iter()
        .enumerate()
        .map(|(id, &lcore)| WorkerPlan {
            id,
            lcore,
            tx_queue: id as u16,
            burst_size: usize::from(dp.burst_size),
            rx: vec![],
            punt: exception.as_ref().map(|(slot, _, _)| (ports[*slot].id, *slot)),
        })
        .collect();
    let mut next = 0;
    for (slot, p) in ports.iter().enumerate().take(bridge_ports) {
        let peer_slot = slot ^ 1;
        for q in 0..dp.rx_queues {
            plans[next % nworkers].rx.push(RxAssignment {
                rx_port: p.id,
                rx_queue: q,
                rx_slot: slot,
                tx_port: ports[peer_slot].id,
                tx_slot: peer_slot,
                bypass: false,
            });
            next += 1;
        }
    }
    if let Some((slot, out_slot, _)) = &exception {
        // The kernel's replies, from the TAP to the wire, unchecked.
        plans[0].rx.push(RxAssignment {
            rx_port: ports[*slot].id,
            rx_queue: 0,
            rx_slot: *slot,
            tx_port: ports[*out_slot].id,
            tx_slot: *out_slot,
            bypass: true,
        });
    }
    if let Some(idle) = plans.iter().find(|p| p.rx.is_empty()) {
        bail!(
            "worker on lcore {} would have no rx queue to poll ({} workers, {} queues): raise dataplane.rx_queues or use fewer workers",
            idle.lcore,
            nworkers,
            bridge_ports * usize::from(dp.rx_queues)
        );
    }

    let hz = tsc_hz().max(1);
    let flush_cycles = (hz as f64 * LATENCY_FLUSH.as_secs_f64()) as u64;
    let (recorders, exchange) = latency::exchange(nworkers, hz, flush_cycles);
    let counters: Vec<Arc<WorkerCounters>> = (0..nworkers).map(|_| Arc::new(WorkerCounters::new(ports.len()))).collect();
    let infos_roles: Vec<String> = infos.iter().map(|i| i.role.clone()).collect();
    let aggregator = StatsAggregator::new(
        infos,
        plans
            .iter()
            .zip(&counters)
            .map(|(p, c)| WorkerInfo { id: p.id, lcore: p.lcore, counters: c.clone() })
            .collect(),
        Box::new(DpdkDeviceStats),
        exchange,
    );
    let mut aggregator = aggregator;
    aggregator.mode = (loaded.is_some(), loaded.as_ref().is_some_and(|l| l.config.tap_mode));
    aggregator.central = central.as_ref().map(|c| c.status.clone());

    // Enforcement: one pipeline per worker over the shared state, and the
    // control plane's end of the events and seen-MAC channels.
    let port_contexts: Vec<PortContext> = (0..ports.len()).map(port_context).collect();
    let (mut pipelines, plane): (Vec<Option<Enforcing>>, Option<EnforcementPlane>) = match loaded {
        None => {
            drop(heartbeat);
            drop(central);
            ((0..nworkers).map(|_| None).collect(), None)
        }
        Some(l) => {
            let (senders, event_rx) = events::channel(nworkers, cfg.events.channel_capacity);
            let gate_cycles = (hz as f64 * EVENT_GATE_WINDOW.as_secs_f64()) as u64;
            let (flushers, seen_exchange) = seen_macs::exchange(nworkers, SEEN_MACS_PER_FLUSH);
            let pipelines = senders
                .into_iter()
                .zip(flushers)
                .zip(&counters)
                .map(|((events, seen_flusher), counters)| {
                    Some(Enforcing {
                        enforcer: Enforcer::new(l.config.clone()),
                        flows: FlowCache::new(l.config.flow_cache_entries),
                        epoch: l.state.epoch().clone(),
                        view: l.state.worker_view(),
                        ports: port_contexts.clone().into_boxed_slice(),
                        events,
                        gate: EventGate::new(EVENT_GATE_SLOTS, gate_cycles),
                        now: 0,
                        seen: SeenMacs::new(SEEN_MACS_PER_FLUSH),
                        seen_flusher,
                        counters: counters.clone(),
                    })
                })
                .collect();
            let log = match &cfg.events.log {
                Some(path) => Some(
                    EventLog::open(EventLogConfig {
                        path: path.clone(),
                        max_bytes: cfg.events.max_bytes,
                        keep: cfg.events.keep,
                        window: Duration::from_millis(cfg.events.rate_limit_ms),
                    })
                    .map_err(|e| anyhow!("cannot open event log {}: {e}: check [events] log", path.display()))?,
                ),
                None => None,
            };
            let roles: Vec<String> = infos_roles.clone();
            let explainer = Arc::new(Explainer::new(
                l.state.clone(),
                l.config.clone(),
                roles.iter().cloned().zip(port_contexts.iter().copied()).collect(),
            ));
            let threat_log = ThreatLog::new(log, Some(l.state.clone()), roles, Box::new(NoUsers));
            let plane = EnforcementPlane {
                explainer,
                state: l.state,
                endpoints: Arc::new(std::sync::Mutex::new(l.writer)),
                events: event_rx,
                seen_macs: Some(seen_exchange),
                heartbeat,
                threat_log,
                central,
            };
            (pipelines, Some(plane))
        }
    };
    if plane.is_some() {
        tracing::info!(
            "enforcing{}: policy, threat feed and endpoints loaded",
            if aggregator.mode.1 { " in tap mode (observing only)" } else { "" }
        );
    }

    for p in &ports {
        p.start().map_err(|e| anyhow!(e))?;
    }
    if let Some((_, out_slot, exc)) = &exception {
        configure_tap(exc)?;
        tracing::info!(
            "exception path: frames for {} go to kernel interface {}; its replies leave by {}",
            exc.addresses.join(", "),
            exc.tap,
            infos_roles[*out_slot]
        );
    }

    let live = match app.live {
        Live::Off => LiveOutput::Off,
        Live::Line => LiveOutput::Line,
        Live::Table => LiveOutput::Table,
    };
    let control = ControlPlane::start(
        ControlPlaneConfig {
            stats_socket: cfg.stats.socket.clone(),
            interval: Duration::from_millis(cfg.stats.interval_ms),
            hlog: cfg.stats.hlog.clone(),
            live,
            prometheus: cfg.stats.prometheus,
        },
        aggregator,
        plane,
    );
    let control = match control {
        Ok(c) => c,
        Err(e) => {
            for p in &ports {
                p.stop_and_close();
            }
            return Err(e.into());
        }
    };

    if let Err(e) = crate::dpdk::telemetry::register(control.aggregator().clone()) {
        tracing::warn!("{e}: dpdk-telemetry.py will not show hbgw's commands");
    }

    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone())?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut launch_error = None;
    for ((plan, counters), recorder) in plans.iter().cloned().zip(counters.iter().cloned()).zip(recorders) {
        let stop = stop.clone();
        let lcore_id = plan.lcore;
        let enforcing = pipelines[plan.id].take();
        tracing::info!("worker {} on lcore {}: {} rx queue(s)", plan.id, lcore_id, plan.rx.len());
        let launched = lcore::launch(lcore_id, move || {
            let pipeline = match enforcing {
                Some(parts) => Pipeline::enforcing(parts),
                None => Pipeline::bridge(),
            };
            let mut worker = Worker::new(plan, DpdkIo::new(), pipeline, counters, recorder);
            worker.run(&stop);
            0
        });
        if let Err(e) = launched {
            launch_error = Some(e);
            break;
        }
    }
    tracing::info!("forwarding; stats: hbgw stats --socket {}", cfg.stats.socket.display());

    if launch_error.is_none() {
        wait_for_stop(&term, app, &counters);
    }

    stop.store(true, Ordering::Relaxed);
    lcore::wait_all();
    let report = control.stop();
    for p in &ports {
        p.stop_and_close();
    }
    println!("{}", report.render_table());
    if let Some(e) = launch_error {
        bail!(e);
    }
    Ok(())
}

/// Brings the TAP interface up with the gateway's addresses (once, at start,
/// from the main lcore: never a worker's business).
fn configure_tap(exc: &hbgw_shared::config::ExceptionSection) -> Result<()> {
    let ip = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("ip").args(args).output().map_err(|e| {
            anyhow!("cannot run `ip` to configure {}: {e}: install iproute2", exc.tap)
        })?;
        if !out.status.success() {
            bail!(
                "`ip {}` failed: {}: check that hbgw runs as root and the address is free",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    // Refuse an address this namespace already uses elsewhere: the kernel
    // would route the gateway's own replies out of that other interface.
    for a in &exc.addresses {
        let ip_only = a.split_once('/').map_or(a.as_str(), |(ip, _)| ip);
        let out = std::process::Command::new("ip").args(["-o", "addr", "show", "to", ip_only]).output();
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().find(|l| !l.contains(&format!(" {} ", exc.tap))) {
                let dev = line.split_whitespace().nth(1).unwrap_or("?");
                bail!(
                    "exception.addresses: {ip_only} is already on interface {dev}: give the gateway an address of its own, or run it in its own network namespace"
                );
            }
        }
        let net_clash = std::process::Command::new("ip").args(["-o", "route", "show", "match", ip_only]).output();
        if let Ok(out) = net_clash {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().find(|l| l.contains(" dev ") && !l.starts_with("default") && !l.contains(&format!("dev {} ", exc.tap))) {
                bail!(
                    "exception.addresses: {a} overlaps a network this host already reaches directly ({}): pick another network for the gateway, or run it in its own network namespace",
                    line.trim()
                );
            }
        }
    }
    // Only the configured addresses: no IPv6 autoconfiguration chatter on the wire.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", exc.tap), "1");
    ip(&["link", "set", "dev", &exc.tap, "up"])?;
    for a in &exc.addresses {
        if a.contains(':') {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", exc.tap), "0");
        }
        ip(&["addr", "add", a, "dev", &exc.tap])?;
    }
    Ok(())
}

fn total_rx(counters: &[Arc<WorkerCounters>]) -> u64 {
    counters.iter().map(|c| (0..c.port_count()).map(|s| c.snapshot(s).rx).sum::<u64>()).sum()
}

fn wait_for_stop(term: &AtomicBool, app: &AppArgs, counters: &[Arc<WorkerCounters>]) {
    let start = Instant::now();
    let deadline = app.duration.map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let idle_limit = app.exit_on_idle.map(Duration::from_millis);
    let mut last_rx = 0;
    let mut last_change = start;
    loop {
        std::thread::sleep(MAIN_POLL);
        let now = Instant::now();
        if term.load(Ordering::Relaxed) {
            tracing::info!("signal received: stopping");
            return;
        }
        if deadline.is_some_and(|d| now >= d) {
            tracing::info!("--duration reached: stopping");
            return;
        }
        if let Some(limit) = idle_limit {
            let rx = total_rx(counters);
            if rx != last_rx {
                last_rx = rx;
                last_change = now;
            } else if now.duration_since(last_change) >= limit {
                tracing::info!("no frame for {} ms (--exit-on-idle): stopping", limit.as_millis());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn eal_defaults_protect_the_machine() {
        let a = eal_args(&v("hbgw -l 0,1"), &[]);
        assert!(a.contains(&"--no-pci".to_owned()));
        assert!(a.iter().any(|x| x.starts_with("--file-prefix=hbgw-")));
        assert!(a.contains(&"--huge-unlink".to_owned()));

        let a = eal_args(&v("hbgw -l 0,1 -a 0000:03:00.0 --file-prefix me"), &[]);
        assert!(!a.contains(&"--no-pci".to_owned()), "an allow-list names what to probe");
        assert_eq!(a.iter().filter(|x| x.starts_with("--file-prefix")).count(), 1);

        let a = eal_args(&v("hbgw --no-huge"), &[]);
        assert!(a.contains(&"--no-shconf".to_owned()) && a.contains(&"512".to_owned()));
        assert!(!a.contains(&"--huge-unlink".to_owned()));
    }
}
