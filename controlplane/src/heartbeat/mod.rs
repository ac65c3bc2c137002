//! # Security Heartbeat
//!
//! Endpoints keep a mutually authenticated TLS session to the gateway and
//! report their health; the gateway writes it into the endpoint table the
//! workers read, detects missing heartbeats, tells every endpoint which
//! endpoints are red or yellow, binds signed-in domain users to addresses,
//! and can ask an endpoint which process owned a flow.
//!
//! One file per concern:
//!
//! * [`protocol`] — the messages; [`codec`] — framing (length + JSON, bounded);
//! * [`certs`] — the pinned endpoint certificates and the TLS client verifier;
//! * [`server`] — the TLS listener, admission limits and the sessions;
//! * [`missing`] — [`MissingHeartbeatTimer`]: missing and no-heartbeat;
//! * [`broadcast`] — the red/yellow list;
//! * [`directory`] — synchronized user ID (directory lookups, IP -> user);
//! * [`report`] — the `hbgw endpoints` view;
//! * [`client`], [`pki`] — the endpoint side and a test PKI, for the
//!   simulator (`hbgw-endpoint-sim`) and the tests.
//!
//! ## State and locking
//!
//! [`HeartbeatService`] keeps its state in one `std::sync::Mutex` (the
//! registry: endpoint records, sessions, timer, list, user bindings). The
//! endpoint table writer is shared with the rest of the control plane as
//! `Arc<std::sync::Mutex<EndpointTableWriter>>`. Both are std mutexes
//! because every critical section is short and synchronous: no lock is ever
//! held across an `.await`. Order: registry, then table. Health changes go
//! through the registry, so a heartbeat and a missing-heartbeat expiry for
//! the same endpoint are applied in one order, never interleaved.
//!
//! What it must never do: block the runtime thread, or trust an endpoint's
//! own claims about who it is (the id comes from its pinned certificate).

pub mod broadcast;
pub mod certs;
pub mod client;
pub mod codec;
pub mod directory;
pub mod missing;
pub mod pki;
pub mod protocol;
pub mod report;
pub mod server;

pub use certs::{CertFingerprint, PinnedCert, PinnedCertStore, PinnedCertVerifier};
pub use directory::{BoundUser, FileDirectory, LdapDirectory, LdapDirectoryConfig, UserDirectory};
pub use missing::{MissingHeartbeatTimer, TimerEvent, ZoneOf};
pub use protocol::{Flow, IocAnswer};
pub use report::EndpointsReport;

use arc_swap::ArcSwap;
use broadcast::RedYellowList;
use codec::{encode_body, Encoded};
use directory::{is_local_account, UserBindings};
use hbgw_dataplane::seen_macs::{SeenMac, SeenMacReport, SeenMacsExchange};
use hbgw_shared::endpoint::{Endpoint, EndpointHealth, EndpointId, EndpointInterface, EndpointTableWriter, MacAddr};
use missing::{no_heartbeat_id, MissingEvidence, TrafficSeen, WatchState};
use protocol::{GatewayMessage, Hello, ReportedHealth, UserAccount};
use report::EndpointEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The heartbeat port of the product.
pub const DEFAULT_PORT: u16 = 8347;

/// How the heartbeat service runs. Every field has a default; the
/// certificate paths must be set.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// Where to listen (default `0.0.0.0:8347`).
    pub listen: SocketAddr,
    /// The gateway's certificate chain, PEM.
    pub server_cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub server_key: PathBuf,
    /// Also accept TLS 1.2 (default: TLS 1.3 only).
    pub allow_tls12: bool,
    /// The heartbeat interval endpoints are told to use (default 15 s).
    pub interval: Duration,
    /// Heartbeats missed before an endpoint is lost or missing (default 3).
    pub missed_limit: u32,
    /// How long changes to the red/yellow list are coalesced before the list
    /// goes out (default 500 ms; at most 1 s).
    pub list_debounce: Duration,
    /// Zones where missing and no-heartbeat are detected.
    pub missing_heartbeat_zones: HashSet<String>,
    /// Time allowed for the TLS handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Time allowed between the handshake and the Hello (default 10 s).
    pub hello_timeout: Duration,
    /// Sessions at most, handshakes included (default 10 000).
    pub max_connections: usize,
    /// Handshakes in progress at most (default 256).
    pub max_handshakes: usize,
    /// Largest frame accepted, bytes (default 64 KiB).
    pub max_frame_len: usize,
    /// How long [`HeartbeatService::ask_ioc`] waits (default 5 s).
    pub ioc_timeout: Duration,
    /// How often the workers' seen-MAC reports are drained (default 500 ms).
    pub seen_macs_poll: Duration,
    /// The gateway's name in Welcome.
    pub gateway_name: String,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            server_cert: PathBuf::from("/etc/hbgw/heartbeat.pem"),
            server_key: PathBuf::from("/etc/hbgw/heartbeat.key"),
            allow_tls12: false,
            interval: Duration::from_secs(15),
            missed_limit: 3,
            list_debounce: Duration::from_millis(500),
            missing_heartbeat_zones: HashSet::from(["LAN".to_owned()]),
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_handshakes: 256,
            max_frame_len: codec::DEFAULT_MAX_FRAME_LEN,
            ioc_timeout: Duration::from_secs(5),
            seen_macs_poll: Duration::from_millis(500),
            gateway_name: "hbgw".to_owned(),
        }
    }
}

/// What the service works with, from the rest of the gateway.
pub struct HeartbeatDeps {
    /// The endpoint table writer, shared in the control plane.
    pub table: Arc<Mutex<EndpointTableWriter>>,
    /// The endpoint certificates accepted (Central sync adds and removes).
    pub certs: PinnedCertStore,
    /// Where signed-in domain users are checked.
    pub directory: Arc<dyn UserDirectory>,
    /// The zone of each port slot.
    pub zone_of: ZoneOf,
    /// The workers' seen-MAC reports, drained by the service (or feed them
    /// with [`HeartbeatService::feed_seen_macs`]).
    pub seen_macs: Option<SeenMacsExchange>,
}

/// Why the service could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// A configuration value out of range.
    #[error("heartbeat configuration: {0}")]
    Config(String),
    /// The server certificate or key could not be loaded.
    #[error("cannot load the heartbeat TLS {what} from {path}: {detail}: give PEM files readable by hbgw")]
    Tls {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen for heartbeats on {addr}: {source}: choose a free address/port or stop what holds it")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A live session, as the registry sees it.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    pub(crate) conn: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) tx: mpsc::Sender<Encoded>,
    pub(crate) close: CancellationToken,
}

#[derive(Debug)]
struct EndpointRecord {
    name: String,
    agent_id: String,
    fingerprint: CertFingerprint,
    reported: EndpointHealth,
    interfaces: Vec<EndpointInterface>,
    pending_users: BTreeSet<UserAccount>,
    missing: Option<MissingEvidence>,
}

impl EndpointRecord {
    fn ips(&self) -> Vec<IpAddr> {
        self.interfaces.iter().flat_map(|i| i.ips.iter().copied()).collect()
    }
}

#[derive(Debug)]
struct NoHeartbeatRecord {
    port_slot: usize,
    zone: String,
}

pub(crate) struct Registry {
    endpoints: BTreeMap<EndpointId, EndpointRecord>,
    sessions: HashMap<EndpointId, SessionHandle>,
    no_heartbeat: BTreeMap<MacAddr, NoHeartbeatRecord>,
    timer: MissingHeartbeatTimer,
    list: RedYellowList,
    users: UserBindings,
}

/// The settings Central can change while the service runs (open sessions
/// follow them: see `server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveSettings {
    /// The heartbeat interval endpoints are told (in `welcome`).
    pub(crate) interval: Duration,
    /// Heartbeats missed before a session is closed, an endpoint lost or missing.
    pub(crate) missed_limit: u32,
}

pub(crate) struct Shared {
    pub(crate) config: HeartbeatConfig,
    /// Watched by every session (its idle limit, the interval it told its
    /// endpoint) and by the endpoint-list broadcaster (its period).
    pub(crate) live: tokio::sync::watch::Sender<LiveSettings>,
    registry: Mutex<Registry>,
    table: Arc<Mutex<EndpointTableWriter>>,
    pub(crate) certs: PinnedCertStore,
    directory: Arc<dyn UserDirectory>,
    pub(crate) tls: ArcSwap<rustls::ServerConfig>,
    pub(crate) list_changed: Notify,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pending_ioc: Mutex<HashMap<(EndpointId, u64), oneshot::Sender<IocAnswer>>>,
    next_query: AtomicU64,
    next_conn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn live_settings(&self) -> LiveSettings {
        *self.live.borrow()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    fn table(&self) -> MutexGuard<'_, EndpointTableWriter> {
        lock(&self.table)
    }

    pub(crate) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// A Hello: the endpoint enters (or re-enters) the table with its
    /// interfaces and health. With a new session, returns the one it replaces
    /// (`None` for a repeated Hello within a session).
    pub(crate) fn on_hello(
        &self,
        id: EndpointId,
        fingerprint: CertFingerprint,
        hello: &Hello,
        session: Option<SessionHandle>,
    ) -> Option<SessionHandle> {
        let now = Instant::now();
        let health = EndpointHealth::from(hello.health);
        let mut guard = self.registry();
        let reg = &mut *guard;
        let macs: Vec<MacAddr> = hello.interfaces.iter().map(|i| i.mac).collect();
        let claimed = reg.timer.claim(id, &macs, now);
        let previous = reg.timer.heartbeat(id, now);
        {
            let mut table = self.table();
            for mac in claimed.iter().chain(macs.iter()) {
                if reg.no_heartbeat.remove(mac).is_some() {
                    let _ = table.remove(no_heartbeat_id(*mac));
                }
            }
            table.upsert(Endpoint { id, interfaces: hello.interfaces.clone(), health });
        }
        let record = EndpointRecord {
            name: hello.name.clone(),
            agent_id: hello.endpoint_id.clone(),
            fingerprint,
            reported: health,
            interfaces: hello.interfaces.clone(),
            pending_users: BTreeSet::new(),
            missing: None,
        };
        let ips = record.ips();
        if let Some(old) = reg.endpoints.insert(id, record) {
            if let Some(rec) = reg.endpoints.get_mut(&id) {
                rec.pending_users = old.pending_users;
            }
        }
        reg.users.set_addresses(id, ips);
        if previous == Some(WatchState::Missing) {
            tracing::info!(endpoint = %id, name = %hello.name, %health, "heartbeat back: endpoint active again");
        }
        if reg.list.update(id, health, &hello.interfaces) {
            self.list_changed.notify_one();
        }
        session.and_then(|s| reg.sessions.insert(id, s))
    }

    /// A heartbeat or health change.
    pub(crate) fn on_health(&self, id: EndpointId, reported: ReportedHealth, reason: Option<&str>) {
        let now = Instant::now();
        let health = EndpointHealth::from(reported);
        let mut guard = self.registry();
        let reg = &mut *guard;
        let Some(rec) = reg.endpoints.get_mut(&id) else { return };
        let old = std::mem::replace(&mut rec.reported, health);
        rec.missing = None;
        let previous = reg.timer.heartbeat(id, now);
        {
            let mut table = self.table();
            if table.set_health(id, health).is_err() {
                // The table was replaced under us (a bulk reload): put it back.
                table.upsert(Endpoint { id, interfaces: rec.interfaces.clone(), health });
            }
        }
        if previous == Some(WatchState::Missing) {
            tracing::info!(endpoint = %id, name = %rec.name, %health, "heartbeat back: endpoint active again");
        }
        if old != health {
            tracing::info!(endpoint = %id, name = %rec.name, from = %old, to = %health, reason = reason.unwrap_or(""), "endpoint health changed");
        }
        if reg.list.update(id, health, &rec.interfaces) {
            self.list_changed.notify_one();
        }
    }

    /// A session ended (only the current one of that endpoint is dropped).
    pub(crate) fn on_session_end(&self, id: EndpointId, conn: u64) {
        let mut reg = self.registry();
        if reg.sessions.get(&id).is_some_and(|s| s.conn == conn) {
            reg.sessions.remove(&id);
        }
    }

    /// A sign-in: domain accounts are checked in the directory, then bound.
    pub(crate) fn sign_in(self: &Arc<Self>, id: EndpointId, account: UserAccount) {
        {
            let mut reg = self.registry();
            let Some(rec) = reg.endpoints.get_mut(&id) else { return };
            if is_local_account(&account, &rec.name) {
                tracing::debug!(endpoint = %id, user = %account, "local account sign-in ignored");
                return;
            }
            rec.pending_users.insert(account.clone());
        }
        let shared = Arc::clone(self);
        self.tasks.spawn(async move {
            let found = shared.directory.lookup(&account).await;
            let mut guard = shared.registry();
            let reg = &mut *guard;
            let Some(rec) = reg.endpoints.get_mut(&id) else { return };
            if !rec.pending_users.remove(&account) {
                return; // signed out (or heartbeat lost) while we looked
            }
            match found {
                Ok(Some(user)) if user.enabled => {
                    tracing::info!(endpoint = %id, name = %rec.name, user = %account, "synchronized user ID: user signed in");
                    let ips = rec.ips();
                    reg.users.bind(id, ips, BoundUser { account, display_name: user.display_name, endpoint: id });
                }
                Ok(Some(_)) => {
                    tracing::warn!(endpoint = %id, user = %account, "sign-in refused: the account is disabled in the directory")
                }
                Ok(None) => tracing::warn!(
                    endpoint = %id,
                    user = %account,
                    directory = %shared.directory.describe(),
                    "sign-in refused: no such account in the directory"
                ),
                Err(e) => tracing::warn!(endpoint = %id, user = %account, "sign-in not checked: {e}"),
            }
        });
    }

    /// A sign-out.
    pub(crate) fn sign_out(&self, id: EndpointId, account: &UserAccount) {
        let mut guard = self.registry();
        let reg = &mut *guard;
        if let Some(rec) = reg.endpoints.get_mut(&id) {
            rec.pending_users.remove(account);
        }
        if reg.users.unbind(id, account) {
            tracing::info!(endpoint = %id, user = %account, "synchronized user ID: user signed out");
        }
    }

    /// An IoC answer from the endpoint asked.
    pub(crate) fn on_ioc_answer(&self, id: EndpointId, answer: IocAnswer) {
        match lock(&self.pending_ioc).remove(&(id, answer.query_id)) {
            Some(tx) => {
                let _ = tx.send(answer);
            }
            None => tracing::debug!(endpoint = %id, query = answer.query_id, "IoC answer to no pending query ignored"),
        }
    }

    fn apply_timer_event(&self, reg: &mut Registry, event: TimerEvent) {
        match event {
            TimerEvent::Missing { endpoint, evidence } => {
                let name = reg.endpoints.get(&endpoint).map(|r| r.name.clone()).unwrap_or_default();
                if self.table().set_health(endpoint, EndpointHealth::Missing).is_err() {
                    if let Some(rec) = reg.endpoints.get(&endpoint) {
                        self.table().upsert(Endpoint { id: endpoint, interfaces: rec.interfaces.clone(), health: EndpointHealth::Missing });
                    }
                }
                let traffic: Vec<String> = evidence
                    .traffic
                    .iter()
                    .map(|t| format!("{} on port {} zone {} {}s ago", t.mac, t.port_slot, t.zone, t.secs_ago))
                    .collect();
                tracing::warn!(
                    endpoint = %endpoint,
                    %name,
                    last_heartbeat_secs_ago = evidence.last_heartbeat_secs_ago,
                    missed = evidence.missed_heartbeats,
                    traffic = %traffic.join("; "),
                    "heartbeat missing: no heartbeat for {} intervals while the endpoint sends traffic",
                    evidence.missed_heartbeats
                );
                if let Some(rec) = reg.endpoints.get_mut(&endpoint) {
                    rec.missing = Some(evidence);
                    rec.pending_users.clear();
                }
                self.sign_out_all(reg, endpoint);
            }
            TimerEvent::HeartbeatLost { endpoint } => {
                tracing::info!(endpoint = %endpoint, "heartbeat lost (no traffic seen from the endpoint)");
                if let Some(rec) = reg.endpoints.get_mut(&endpoint) {
                    rec.pending_users.clear();
                }
                self.sign_out_all(reg, endpoint);
            }
            TimerEvent::NoHeartbeat { mac, port_slot, zone } => {
                let mut table = self.table();
                if table.table().load().endpoint_by_mac(&mac).is_some() {
                    return; // another source (Central) knows this MAC
                }
                table.upsert(Endpoint {
                    id: no_heartbeat_id(mac),
                    interfaces: vec![EndpointInterface { mac, ips: Vec::new() }],
                    health: EndpointHealth::NoHeartbeat,
                });
                tracing::info!(%mac, port_slot, %zone, "traffic from a MAC with no heartbeat");
                reg.no_heartbeat.insert(mac, NoHeartbeatRecord { port_slot, zone });
            }
            TimerEvent::NoHeartbeatGone { mac } => {
                if reg.no_heartbeat.remove(&mac).is_some() {
                    let _ = self.table().remove(no_heartbeat_id(mac));
                    tracing::debug!(%mac, "no-heartbeat MAC idle: forgotten");
                }
            }
        }
    }

    fn sign_out_all(&self, reg: &mut Registry, endpoint: EndpointId) {
        for user in reg.users.unbind_all(endpoint) {
            tracing::info!(endpoint = %endpoint, %user, "synchronized user ID: user signed out (heartbeat lost)");
        }
    }

    pub(crate) fn feed(&self, macs: &[SeenMac]) {
        let now = Instant::now();
        let mut guard = self.registry();
        let reg = &mut *guard;
        for key in macs {
            if let Some(event) = reg.timer.observe(MacAddr(key.mac()), key.slot(), now) {
                self.apply_timer_event(reg, event);
            }
        }
    }

    /// The current list, encoded (for a new session).
    pub(crate) fn current_list(&self) -> Encoded {
        self.registry().list.encoded()
    }

    /// Sends the list to every session; a session whose queue is full skips
    /// this one (the next list supersedes it).
    pub(crate) fn send_list_to_all(&self) {
        let mut reg = self.registry();
        if reg.sessions.is_empty() {
            return;
        }
        let list = reg.list.encoded();
        for (id, s) in &reg.sessions {
            if s.tx.try_send(list.clone()).is_err() {
                tracing::debug!(endpoint = %id, "session queue full: endpoint list skipped");
            }
        }
    }
}

/// The running heartbeat service.
pub struct HeartbeatService {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for HeartbeatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatService").field("local_addr", &self.local_addr).finish()
    }
}

impl HeartbeatService {
    /// Loads the TLS certificate, binds the listener and starts the tasks
    /// (listener, missing-heartbeat timer, list broadcast, seen-MAC drain)
    /// on the current tokio runtime.
    pub async fn start(config: HeartbeatConfig, deps: HeartbeatDeps) -> Result<Self, HeartbeatError> {
        if config.interval.is_zero() {
            return Err(HeartbeatError::Config("interval is zero: set it to the heartbeat period (15 s in the product)".into()));
        }
        if config.list_debounce > Duration::from_secs(1) {
            return Err(HeartbeatError::Config(format!(
                "list_debounce {:?} is over 1 s: endpoints must learn of a red endpoint within 1 s",
                config.list_debounce
            )));
        }
        if config.max_connections == 0 || config.max_handshakes == 0 || config.max_frame_len < 1024 {
            return Err(HeartbeatError::Config(
                "max_connections and max_handshakes must be at least 1 and max_frame_len at least 1024".into(),
            ));
        }
        let tls = server::build_tls(&config, &deps.certs)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| HeartbeatError::Bind { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| HeartbeatError::Bind { addr: config.listen, source })?;
        let timer = MissingHeartbeatTimer::new(
            config.interval,
            config.missed_limit,
            config.missing_heartbeat_zones.clone(),
            deps.zone_of,
        );
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry {
                endpoints: BTreeMap::new(),
                sessions: HashMap::new(),
                no_heartbeat: BTreeMap::new(),
                timer,
                list: RedYellowList::default(),
                users: UserBindings::default(),
            }),
            table: deps.table,
            certs: deps.certs,
            directory: deps.directory,
            tls: ArcSwap::new(tls),
            list_changed: Notify::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            pending_ioc: Mutex::new(HashMap::new()),
            next_query: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            live: tokio::sync::watch::Sender::new(LiveSettings { interval: config.interval, missed_limit: config.missed_limit.max(1) }),
            config,
        });
        shared.tasks.spawn(server::serve(Arc::clone(&shared), listener));
        shared.tasks.spawn(timer_loop(Arc::clone(&shared)));
        shared.tasks.spawn(broadcast::run(
            Arc::clone(&shared),
            shared.config.interval * 2,
            shared.config.list_debounce,
        ));
        if let Some(exchange) = deps.seen_macs {
            shared.tasks.spawn(seen_macs_loop(Arc::clone(&shared), exchange));
        }
        tracing::info!(addr = %local_addr, pinned = shared.certs.len(), "Security Heartbeat listening");
        Ok(HeartbeatService { shared, local_addr })
    }

    /// The address the listener is bound to (an ephemeral port resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The pinned endpoint certificates (add and remove at run time).
    pub fn certs(&self) -> &PinnedCertStore {
        &self.shared.certs
    }

    /// Applies heartbeat settings from Central while running, to open
    /// sessions too: the interval (each open session is sent a new
    /// `welcome` with it, and the endpoint list goes out every two of the new
    /// intervals), the missed-heartbeat limit (each session's idle limit,
    /// counted from its last message, and every endpoint's next heartbeat),
    /// and the zones where missing and no-heartbeat are detected (`None`:
    /// keep the current ones).
    pub fn set_settings(&self, interval: Duration, missed_limit: u32, zones: Option<HashSet<String>>) -> Result<(), HeartbeatError> {
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return Err(HeartbeatError::Config(format!(
                "heartbeat interval {interval:?} is outside 100 ms..1 h: use the endpoints' period (15 s in the product)"
            )));
        }
        if missed_limit == 0 || missed_limit > 100 {
            return Err(HeartbeatError::Config(format!("missed_limit {missed_limit} is outside 1..100: use 3 as in the product")));
        }
        self.shared.live.send_replace(LiveSettings { interval, missed_limit });
        let mut reg = self.shared.registry();
        let zones = zones.unwrap_or_else(|| reg.timer.zones().clone());
        tracing::info!(?interval, missed_limit, ?zones, "heartbeat settings changed");
        reg.timer.set_settings(interval, missed_limit, zones);
        Ok(())
    }

    /// Re-reads the server certificate and key; new connections use them,
    /// live sessions keep theirs.
    pub fn reload(&self) -> Result<(), HeartbeatError> {
        let tls = server::build_tls(&self.shared.config, &self.shared.certs)?;
        self.shared.tls.store(tls);
        tracing::info!("heartbeat TLS certificate reloaded");
        Ok(())
    }

    /// Feeds one worker report of seen MACs (when the service was not given
    /// the exchange to drain itself). The caller returns the buffer.
    pub fn feed_seen_macs(&self, report: &SeenMacReport) {
        self.shared.feed(&report.macs);
    }

    /// Traffic from one MAC on one port slot.
    pub fn observe_traffic(&self, mac: MacAddr, port_slot: usize) {
        self.shared.feed(&[SeenMac::new(mac.0, port_slot)]);
    }

    /// Asks `endpoint` which host, user and process owned `flow`; `None`
    /// when it has no session, does not answer within `ioc_timeout`, or its
    /// queue is full.
    pub async fn ask_ioc(&self, endpoint: EndpointId, flow: Flow) -> Option<IocAnswer> {
        let shared = &self.shared;
        let tx = shared.registry().sessions.get(&endpoint)?.tx.clone();
        let query_id = shared.next_query.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();
        lock(&shared.pending_ioc).insert((endpoint, query_id), answer_tx);
        let body = encode_body(&GatewayMessage::IocQuery { query_id, flow }).ok()?;
        let answer = if tx.try_send(Encoded(body)).is_ok() {
            tokio::time::timeout(shared.config.ioc_timeout, answer_rx).await.ok().and_then(Result::ok)
        } else {
            None
        };
        lock(&shared.pending_ioc).remove(&(endpoint, query_id));
        answer
    }

    /// [`HeartbeatService::ask_ioc`] for the endpoint bound to `ip` in the table.
    pub async fn ask_ioc_by_ip(&self, ip: IpAddr, flow: Flow) -> Option<IocAnswer> {
        let endpoint = self.shared.table().table().load().endpoint_by_ip(ip)?.endpoint;
        self.ask_ioc(endpoint, flow).await
    }

    /// The domain user bound to `ip` (synchronized user ID), for logs.
    pub fn user_of_ip(&self, ip: IpAddr) -> Option<BoundUser> {
        self.shared.registry().users.user_of(ip).cloned()
    }

    /// Endpoints with a live session.
    pub fn connected(&self) -> usize {
        self.shared.registry().sessions.len()
    }

    /// The heartbeat view (`hbgw endpoints`).
    pub fn report(&self) -> EndpointsReport {
        let now = Instant::now();
        let reg = self.shared.registry();
        let table = self.shared.table();
        let mut report = EndpointsReport { interval_secs: self.shared.live_settings().interval.as_secs_f64(), ..Default::default() };
        for (id, rec) in &reg.endpoints {
            let session = reg.sessions.get(id);
            let health = table.get(*id).map(|e| e.health).unwrap_or(rec.reported);
            report.endpoints.push(EndpointEntry {
                id: *id,
                name: rec.name.clone(),
                health,
                connected: session.is_some(),
                peer: session.map(|s| s.peer.to_string()),
                last_heartbeat_secs_ago: reg.timer.last_heartbeat(*id).map(|t| now.saturating_duration_since(t).as_secs()),
                missed_heartbeats: reg.timer.missed(*id, now),
                interfaces: rec.interfaces.clone(),
                users: reg.users.users_of(*id).map(|u| u.account.to_string()).collect(),
                certificate: Some(rec.fingerprint.to_string()),
                missing: if health == EndpointHealth::Missing { rec.missing.clone() } else { None },
                seen: None,
                agent_id: Some(rec.agent_id.clone()),
            });
        }
        for (mac, rec) in &reg.no_heartbeat {
            let seen = reg.timer.traffic_of(*mac).map(|(slot, zone, at)| TrafficSeen {
                mac: *mac,
                port_slot: slot,
                zone: zone.to_owned(),
                secs_ago: now.saturating_duration_since(at).as_secs(),
            });
            report.endpoints.push(EndpointEntry {
                id: no_heartbeat_id(*mac),
                name: mac.to_string(),
                health: EndpointHealth::NoHeartbeat,
                connected: false,
                peer: None,
                last_heartbeat_secs_ago: None,
                missed_heartbeats: 0,
                interfaces: vec![EndpointInterface { mac: *mac, ips: Vec::new() }],
                users: Vec::new(),
                certificate: None,
                missing: None,
                agent_id: None,
                seen: seen.or_else(|| {
                    Some(TrafficSeen { mac: *mac, port_slot: rec.port_slot, zone: rec.zone.clone(), secs_ago: 0 })
                }),
            });
        }
        report.summarize();
        report
    }

    /// Stops listening, closes every session (each gets a `shutting_down`
    /// error frame) and waits for the tasks, at most 5 s.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait()).await.is_err() {
            tracing::warn!("heartbeat service: tasks still running 5 s after shutdown");
        }
    }
}

impl Drop for HeartbeatService {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn timer_loop(shared: Arc<Shared>) {
    loop {
        let next = std::future::poll_fn(|cx| {
            let mut guard = shared.registry();
            let reg = &mut *guard;
            match reg.timer.poll_event(cx) {
                std::task::Poll::Ready(event) => {
                    shared.apply_timer_event(reg, event);
                    std::task::Poll::Ready(())
                }
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        });
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = next => {}
        }
    }
}

async fn seen_macs_loop(shared: Arc<Shared>, exchange: SeenMacsExchange) {
    let mut tick = tokio::time::interval(shared.config.seen_macs_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for report in exchange.reports.try_iter() {
            shared.feed(&report.macs);
            if let Some(spare) = exchange.spares.get(report.worker) {
                // Never blocks: the channel holds every buffer in circulation.
                let _ = spare.try_send(report.macs);
            }
        }
    }
}
