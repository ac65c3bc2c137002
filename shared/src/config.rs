//! The gateway's configuration file (TOML).
//!
//! Unknown keys are rejected, and every error names the file, the line and
//! column, the key path, and what to do about it, in one line. Values are
//! checked here ([`Config::validate`]); what can only be checked against the
//! running DPDK (port names, lcores) is checked where the ports are opened.
//!
//! ```toml
//! [dataplane]
//! workers = [1]          # worker lcores (EAL -l); never the main lcore
//! rx_queues = 1          # rx queues per port, spread over the workers (RSS)
//! burst_size = 32
//! mempool_size = 16383
//!
//! [[bridge]]             # a transparent LAN <-> WAN pair
//! lan = "net_pcap0"
//! wan = "net_pcap1"
//!
//! [stats]
//! socket = "/run/hbgw/hbgw.sock"
//! interval_ms = 1000
//! ```

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Largest burst a worker handles at once (the size of its on-stack arrays).
pub const MAX_BURST: u16 = 256;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Workers, queues and buffers.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// LAN <-> WAN port pairs (TOML `[[bridge]]` tables).
    #[serde(default, rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,
    /// The stats socket, interval and histogram log.
    #[serde(default)]
    pub stats: StatsConfig,
    /// Synchronized Security enforcement. Absent: a plain bridge.
    pub enforcement: Option<EnforcementSection>,
    /// The event log (Active threat response and heartbeat drops).
    #[serde(default)]
    pub events: EventsConfig,
    /// Security Heartbeat: the TLS service endpoints report their health to.
    /// Absent: no heartbeat service (health comes from `[enforcement] endpoints`).
    pub heartbeat: Option<HeartbeatSection>,
    /// The exception path: frames for the gateway's own addresses go to a
    /// kernel TAP interface, and the kernel's replies out of a data port.
    pub exception: Option<ExceptionSection>,
    /// Central: registration, policy, feeds, certificates and log upload.
    /// Absent: state comes from `[enforcement]` files only.
    pub central: Option<CentralSection>,
}

/// What the workers do before any policy from Central exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeforeFirstSync {
    /// Drop everything until the first policy arrives.
    #[default]
    FailClosed,
    /// Forward everything, counted and logged.
    FailOpen,
}

/// The format of a third-party feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThirdPartyFormat {
    /// One IoC per line, one type per feed.
    List,
    /// A STIX 2.1 bundle.
    Stix,
}

/// `[[central.feed]]`: a third-party feed the gateway polls itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThirdPartyFeedSection {
    /// The feed's name (indicators carry it; feed settings name it).
    pub name: String,
    /// `https://host:port/path`.
    pub url: String,
    /// `list` or `stix`.
    pub format: ThirdPartyFormat,
    /// For a list: what it holds: `ipv4`, `ipv6`, `domain` or `url`.
    #[serde(default, rename = "type")]
    pub list_type: Option<String>,
    /// The CA that signs the feed server's certificate (default: `[central] ca`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Poll period, seconds (default 300).
    #[serde(default = "default_feed_interval")]
    pub interval_s: u64,
    /// Largest feed accepted, bytes (default 64 MiB); a larger one is refused whole.
    #[serde(default = "default_feed_max_bytes")]
    pub max_bytes: usize,
}

fn default_feed_interval() -> u64 {
    300
}
fn default_feed_max_bytes() -> usize {
    64 << 20
}
fn default_central_wait() -> u64 {
    25
}
fn default_max_indicators() -> usize {
    20_000_000
}
fn default_max_update_bytes() -> usize {
    2 << 30
}
fn default_spool_max() -> usize {
    1_000_000
}
fn default_upload_ms() -> u64 {
    500
}
fn default_health_s() -> u64 {
    10
}
fn default_gateway_name() -> String {
    "hbgw".into()
}

/// `[central]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralSection {
    /// `https://HOST:PORT` of Central.
    pub url: String,
    /// Central's CA certificate (PEM): the only trust anchor for Central.
    pub ca: PathBuf,
    /// Where the gateway keeps its identity, last-known-good state and log spool.
    pub state_dir: PathBuf,
    /// The one-time enrollment token (used only while `state_dir` holds no identity).
    #[serde(default)]
    pub enrollment_token: Option<String>,
    /// The name the gateway enrolls under.
    #[serde(default = "default_gateway_name")]
    pub name: String,
    /// What the workers do before any policy from Central exists.
    #[serde(default)]
    pub before_first_sync: BeforeFirstSync,
    /// Long-poll wait asked of Central, seconds (default 25, at most 60).
    #[serde(default = "default_central_wait")]
    pub wait_s: u64,
    /// Most indicators held; an update beyond is refused whole.
    #[serde(default = "default_max_indicators")]
    pub max_indicators: usize,
    /// Largest sync answer accepted, bytes.
    #[serde(default = "default_max_update_bytes")]
    pub max_update_bytes: usize,
    /// Log events kept while Central is unreachable; beyond, new ones are dropped and counted.
    #[serde(default = "default_spool_max")]
    pub spool_max_events: usize,
    /// How often spooled logs are sent, milliseconds.
    #[serde(default = "default_upload_ms")]
    pub upload_interval_ms: u64,
    /// How often the health summary is sent, seconds.
    #[serde(default = "default_health_s")]
    pub health_interval_s: u64,
    /// Third-party feeds (TOML `[[central.feed]]`).
    #[serde(default, rename = "feed")]
    pub feeds: Vec<ThirdPartyFeedSection>,
}

fn default_exception_port() -> String {
    "lan0".into()
}

/// `[exception]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSection {
    /// The kernel interface name (at most 15 characters), e.g. `hbgw0`.
    pub tap: String,
    /// The gateway's addresses, with prefix length (`192.0.2.1/24`): set on
    /// the interface, and every frame for them (ARP, ICMP, TCP 8347, the admin
    /// port) is handed to the kernel.
    pub addresses: Vec<String>,
    /// The data port the kernel's frames leave by (`lan0`, `wan0`, ...).
    #[serde(default = "default_exception_port")]
    pub port: String,
    /// The interface's MAC (what endpoints learn by ARP for the gateway's
    /// addresses); a fixed locally administered address by default.
    #[serde(default = "default_exception_mac")]
    pub mac: String,
}

/// The exception interface's default MAC ("hbgw" in a locally administered address).
pub const DEFAULT_EXCEPTION_MAC: &str = "02:68:62:67:77:01";

fn default_exception_mac() -> String {
    DEFAULT_EXCEPTION_MAC.into()
}

fn default_heartbeat_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 8347))
}
fn default_interval_ms() -> u64 {
    15_000
}
fn default_missed_limit() -> u32 {
    3
}

/// `[heartbeat]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    /// Where endpoints connect (default `0.0.0.0:8347`).
    #[serde(default = "default_heartbeat_listen")]
    pub listen: std::net::SocketAddr,
    /// The gateway's TLS certificate chain (PEM).
    pub server_cert: PathBuf,
    /// Its private key (PEM).
    pub server_key: PathBuf,
    /// PEM files holding the endpoint certificates the gateway accepts (the
    /// ones Central shared); each certificate is pinned, not just its CA.
    #[serde(default)]
    pub endpoint_certs: Vec<PathBuf>,
    /// A file-backed user directory for synchronized user ID.
    #[serde(default)]
    pub users: Option<PathBuf>,
    /// An LDAP / Active Directory server for synchronized user ID.
    #[serde(default)]
    pub ldap: Option<LdapSection>,
    /// The heartbeat interval endpoints are told (default 15000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Missed heartbeats before an endpoint still sending traffic is Missing (default 3).
    #[serde(default = "default_missed_limit")]
    pub missed_limit: u32,
    /// Also accept TLS 1.2 (default: TLS 1.3 only).
    #[serde(default)]
    pub allow_tls12: bool,
    /// Zones where missing and no-heartbeat are detected; empty: the
    /// policy's `missing_heartbeat_zones`.
    #[serde(default)]
    pub missing_heartbeat_zones: Vec<String>,
}

/// `[heartbeat.ldap]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSection {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Where accounts are searched (by sAMAccountName).
    pub base_dn: String,
    /// Bind DN for the search (anonymous when absent).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A file holding the bind password (never the password itself in config).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// NetBIOS/DNS domain names this directory answers for.
    #[serde(default)]
    pub domains: Vec<String>,
}

/// `[enforcement]`: where the state comes from and how the decide stage acts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforcementSection {
    /// Firewall policy file (`shared/src/policy.rs` format). Absent: accept
    /// everything that no indicator or heartbeat check stops.
    pub policy: Option<PathBuf>,
    /// Threat feed file (`shared/src/feed_file.rs` format).
    pub threat_feed: Option<PathBuf>,
    /// Static endpoints file, for running without heartbeats (tests, demo).
    pub endpoints: Option<PathBuf>,
    /// Observe only: compute and log every verdict, drop nothing.
    pub tap_mode: bool,
    /// Frames whose headers do not parse: `drop` (default) or `forward`.
    pub malformed: MalformedPolicy,
    /// The gateway's own addresses: frames for them go to the exception path.
    pub gateway_addresses: Vec<std::net::IpAddr>,
    /// Lateral movement protection.
    pub lateral_movement: LateralMovementConfig,
    /// Entries in each worker's flow cache (the verdict of a flow's frames
    /// without an application hint, until the state changes); rounded up to
    /// a power of two, 64 bytes each. 0 turns the cache off.
    pub flow_cache_entries: usize,
    /// Entries in each worker's quiet-hint cache (DNS names, TLS server
    /// names and HTTP hosts and paths that matched no indicator, until the
    /// state changes); rounded up to a power of two, 64 bytes each. 0 turns
    /// the cache off.
    pub hint_cache_entries: usize,
}

/// Default flow cache entries per worker: 4 MiB, for ~64,000 concurrent flows.
pub const DEFAULT_FLOW_CACHE_ENTRIES: usize = 1 << 16;
/// Largest flow cache per worker: 1 GiB.
pub const MAX_FLOW_CACHE_ENTRIES: usize = 1 << 24;
/// Default quiet-hint cache entries per worker: 1 MiB.
pub const DEFAULT_HINT_CACHE_ENTRIES: usize = 1 << 14;
/// Largest quiet-hint cache per worker: 64 MiB.
pub const MAX_HINT_CACHE_ENTRIES: usize = 1 << 20;

impl Default for EnforcementSection {
    fn default() -> Self {
        EnforcementSection {
            policy: None,
            threat_feed: None,
            endpoints: None,
            tap_mode: false,
            malformed: MalformedPolicy::default(),
            gateway_addresses: Vec::new(),
            lateral_movement: LateralMovementConfig::default(),
            flow_cache_entries: DEFAULT_FLOW_CACHE_ENTRIES,
            hint_cache_entries: DEFAULT_HINT_CACHE_ENTRIES,
        }
    }
}

/// What to do with frames that do not parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedPolicy {
    /// Drop and count.
    #[default]
    Drop,
    /// Forward unchecked, and count.
    Forward,
}

/// `[enforcement.lateral_movement]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LateralMovementConfig {
    /// Drop traffic between two known endpoints when either is Red.
    pub enabled: bool,
    /// Yellow counts too.
    pub include_yellow: bool,
    /// Missing counts too.
    pub include_missing: bool,
}

impl Default for LateralMovementConfig {
    fn default() -> Self {
        Self { enabled: true, include_yellow: false, include_missing: false }
    }
}

/// `[events]`: the JSON-lines event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// The log file. Absent: events are counted but not written.
    pub log: Option<PathBuf>,
    /// Rotate when the file passes this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
    /// Identical events within this many milliseconds are folded into one
    /// line and a count.
    pub rate_limit_ms: u64,
    /// Capacity of the workers' event channel.
    pub channel_capacity: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { log: None, max_bytes: 64 << 20, keep: 5, rate_limit_ms: 1000, channel_capacity: 65536 }
    }
}

/// Workers, queues and buffers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    /// Worker lcore ids. Empty means every worker lcore EAL was given (`-l`).
    pub workers: Vec<u32>,
    /// Receive queues per port; several queues are spread by RSS where the
    /// device supports it.
    pub rx_queues: u16,
    /// Packets a worker takes per `rx_burst`.
    pub burst_size: u16,
    /// Mbufs in the packet pool (a power of two minus one is most efficient).
    pub mempool_size: u32,
    /// Per-lcore mempool cache size.
    pub mempool_cache: u32,
    /// Receive descriptors per queue.
    pub rx_descriptors: u16,
    /// Transmit descriptors per queue.
    pub tx_descriptors: u16,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            workers: Vec::new(),
            rx_queues: 1,
            burst_size: 32,
            mempool_size: 16383,
            mempool_cache: 256,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
        }
    }
}

/// One transparent bridge: a frame entering one port leaves the other
/// unchanged unless policy drops it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The LAN-side port: a DPDK device name (`net_pcap0`, `0000:03:00.0`) or port id.
    pub lan: String,
    /// The WAN-side port, named the same way.
    pub wan: String,
}

/// Where and how often stats are published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Unix socket `hbgw stats` connects to.
    pub socket: PathBuf,
    /// Length of one stats interval (interval view, `--hlog` entries, live lines).
    pub interval_ms: u64,
    /// Write an HdrHistogram interval log here (one entry per interval).
    pub hlog: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g.
    /// `127.0.0.1:9469`. Off when absent.
    pub prometheus: Option<std::net::SocketAddr>,
}

/// Default path of the stats socket.
pub const DEFAULT_STATS_SOCKET: &str = "/run/hbgw/hbgw.sock";

impl Default for StatsConfig {
    fn default() -> Self {
        Self { socket: PathBuf::from(DEFAULT_STATS_SOCKET), interval_ms: 1000, hlog: None, prometheus: None }
    }
}

/// A configuration that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}: check the path given to --config")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or a key or value of the wrong kind.
    #[error("{path}:{line}:{column}: {key}{message}: fix this key (see README.md, Configuration)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// `key `a.b.c`: ` or empty when the error is not about one key.
        key: String,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("config: {key} {problem}: {fix}")]
    Invalid {
        /// The key path.
        key: String,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
}

impl Config {
    /// Reads and parses `path`; the result is not yet validated.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        crate::toml_file::parse(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            line: e.line,
            column: e.column,
            key: e.key,
            message: e.message,
        })
    }

    /// Checks the values that need no running DPDK.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let dp = &self.dataplane;
        let invalid = |key: &str, problem: String, fix: &str| ConfigError::Invalid {
            key: key.to_owned(),
            problem,
            fix: fix.to_owned(),
        };
        if dp.burst_size == 0 || dp.burst_size > MAX_BURST {
            return Err(invalid(
                "dataplane.burst_size",
                format!("is {}", dp.burst_size),
                &format!("use 1..={MAX_BURST} (32 is typical)"),
            ));
        }
        if dp.rx_queues == 0 {
            return Err(invalid("dataplane.rx_queues", "is 0".into(), "use 1 or more"));
        }
        if dp.rx_descriptors == 0 || dp.tx_descriptors == 0 {
            return Err(invalid(
                "dataplane.rx_descriptors/tx_descriptors",
                "is 0".into(),
                "use 512..4096 (1024 is typical)",
            ));
        }
        let min_pool = u32::from(dp.burst_size) * 4;
        if dp.mempool_size < min_pool {
            return Err(invalid(
                "dataplane.mempool_size",
                format!("is {}, too small for bursts of {}", dp.mempool_size, dp.burst_size),
                "use at least 4 bursts' worth (16383 is typical)",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for w in &dp.workers {
            if !seen.insert(*w) {
                return Err(invalid(
                    "dataplane.workers",
                    format!("names lcore {w} twice"),
                    "list each worker lcore once",
                ));
            }
        }
        if let Some(e) = &self.enforcement {
            if e.flow_cache_entries > MAX_FLOW_CACHE_ENTRIES {
                return Err(invalid(
                    "enforcement.flow_cache_entries",
                    format!("is {} (64 bytes each)", e.flow_cache_entries),
                    &format!("use 0 (off) ..= {MAX_FLOW_CACHE_ENTRIES}; {DEFAULT_FLOW_CACHE_ENTRIES} is typical"),
                ));
            }
            if e.hint_cache_entries > MAX_HINT_CACHE_ENTRIES {
                return Err(invalid(
                    "enforcement.hint_cache_entries",
                    format!("is {} (64 bytes each)", e.hint_cache_entries),
                    &format!("use 0 (off) ..= {MAX_HINT_CACHE_ENTRIES}; {DEFAULT_HINT_CACHE_ENTRIES} is typical"),
                ));
            }
        }
        if self.bridges.is_empty() {
            return Err(invalid(
                "bridge",
                "is missing: no LAN <-> WAN port pair".into(),
                "add a [[bridge]] table with lan = \"...\" and wan = \"...\", or pass --port-pair LAN,WAN",
            ));
        }
        let mut ports = std::collections::BTreeSet::new();
        for (i, b) in self.bridges.iter().enumerate() {
            for (side, name) in [("lan", &b.lan), ("wan", &b.wan)] {
                if name.trim().is_empty() {
                    return Err(invalid(&format!("bridge[{i}].{side}"), "is empty".into(), "name a DPDK port"));
                }
                if !ports.insert(name.as_str()) {
                    return Err(invalid(
                        &format!("bridge[{i}].{side}"),
                        format!("uses port `{name}` a second time"),
                        "each port belongs to exactly one bridge, on one side",
                    ));
                }
            }
        }
        if let Some(e) = &self.exception {
            if e.tap.is_empty() || e.tap.len() > 15 || !e.tap.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(invalid("exception.tap", format!("is {:?}", e.tap), "name a kernel interface of 1 to 15 letters, digits, '-' or '_'"));
            }
            let mac_ok = e.mac.split(':').count() == 6 && e.mac.split(':').all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok());
            if !mac_ok {
                return Err(invalid("exception.mac", format!("is {:?}", e.mac), "write six hex bytes, e.g. 02:68:62:67:77:01"));
            }
            if e.addresses.is_empty() {
                return Err(invalid("exception.addresses", "is empty".into(), "give the gateway's address, e.g. [\"192.0.2.1/24\"]"));
            }
            for a in &e.addresses {
                let ok = a.split_once('/').is_some_and(|(ip, len)| {
                    ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
                });
                if !ok {
                    return Err(invalid("exception.addresses", format!("has {a:?}"), "write ADDRESS/PREFIX, e.g. 192.0.2.1/24"));
                }
            }
        }
        if let Some(c) = &self.central {
            if !c.url.starts_with("https://") {
                return Err(invalid("central.url", format!("is {:?}", c.url), "give Central's https://HOST:PORT (plain HTTP is not supported)"));
            }
            if c.wait_s == 0 || c.wait_s > 60 {
                return Err(invalid("central.wait_s", format!("is {}", c.wait_s), "use 1..=60 (25 is typical)"));
            }
            if c.spool_max_events == 0 || c.upload_interval_ms == 0 || c.health_interval_s == 0 {
                return Err(invalid("central", "spool_max_events, upload_interval_ms or health_interval_s is 0".into(), "use 1 or more"));
            }
            for (i, f) in c.feeds.iter().enumerate() {
                if !f.url.starts_with("https://") {
                    return Err(invalid(&format!("central.feed[{i}].url"), format!("is {:?}", f.url), "give an https:// URL"));
                }
                let typed = matches!(f.list_type.as_deref(), Some("ipv4" | "ipv6" | "domain" | "url"));
                if f.format == ThirdPartyFormat::List && !typed {
                    return Err(invalid(&format!("central.feed[{i}].type"), format!("is {:?}", f.list_type), "a list feed holds one type: ipv4, ipv6, domain or url"));
                }
                if f.interval_s == 0 {
                    return Err(invalid(&format!("central.feed[{i}].interval_s"), "is 0".into(), "use 1 or more (300 is typical)"));
                }
            }
        }
        if self.stats.interval_ms < 10 {
            return Err(invalid("stats.interval_ms", format!("is {}", self.stats.interval_ms), "use 10 or more"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn full_file_parses_and_validates() {
        let cfg = parse(
            r#"
[dataplane]
workers = [1]
rx_queues = 2
burst_size = 64

[[bridge]]
lan = "net_pcap0"
wan = "net_pcap1"

[stats]
socket = "/tmp/x.sock"
interval_ms = 500
"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.dataplane.workers, vec![1]);
        assert_eq!(cfg.dataplane.rx_queues, 2);
        assert_eq!(cfg.dataplane.mempool_size, 16383);
        assert_eq!(cfg.bridges[0].wan, "net_pcap1");
        assert_eq!(cfg.stats.interval_ms, 500);
    }

    #[test]
    fn unknown_key_names_line_column_and_path() {
        let err = parse("[dataplane]\nburst_size = 32\nbursts = 4\n").unwrap_err().to_string();
        assert!(err.starts_with("test.toml:3:1: key `dataplane.bursts`: unknown field `bursts`"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn wrong_type_names_key() {
        let err = parse("[[bridge]]\nlan = 3\nwan = \"b\"\n").unwrap_err().to_string();
        assert!(err.contains("test.toml:2:7"), "{err}");
        assert!(err.contains("key `bridge[0].lan`"), "{err}");
    }

    #[test]
    fn unknown_table_rejected() {
        let err = parse("[dataplan]\nworkers = [1]\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `dataplan`"), "{err}");
    }

    #[test]
    fn validation_errors_are_one_line_with_a_fix() {
        let cases = [
            ("[dataplane]\nburst_size = 0\n[[bridge]]\nlan='a'\nwan='b'\n", "dataplane.burst_size"),
            ("[dataplane]\nburst_size = 1000\n[[bridge]]\nlan='a'\nwan='b'\n", "dataplane.burst_size"),
            ("[dataplane]\nworkers = [1, 1]\n[[bridge]]\nlan='a'\nwan='b'\n", "dataplane.workers"),
            ("[dataplane]\nrx_queues = 0\n[[bridge]]\nlan='a'\nwan='b'\n", "dataplane.rx_queues"),
            ("[dataplane]\nmempool_size = 10\n[[bridge]]\nlan='a'\nwan='b'\n", "dataplane.mempool_size"),
            ("[dataplane]\n", "bridge is missing"),
            ("[[bridge]]\nlan='a'\nwan='a'\n", "bridge[0].wan"),
            ("[[bridge]]\nlan='a'\nwan='b'\n[[bridge]]\nlan='c'\nwan='b'\n", "bridge[1].wan"),
            (
                "[enforcement]\nflow_cache_entries = 999999999\n[[bridge]]\nlan='a'\nwan='b'\n",
                "enforcement.flow_cache_entries",
            ),
            (
                "[enforcement]\nhint_cache_entries = 99999999\n[[bridge]]\nlan='a'\nwan='b'\n",
                "enforcement.hint_cache_entries",
            ),
        ];
        for (text, expect) in cases {
            let err = parse(text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?} -> {err}");
            assert!(err.contains(": "), "has a fix: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn cache_sizes_default_and_zero_is_off() {
        let cfg = parse("[enforcement]\nhint_cache_entries = 0\n[[bridge]]\nlan='a'\nwan='b'\n").unwrap();
        cfg.validate().unwrap();
        let e = cfg.enforcement.unwrap();
        assert_eq!((e.hint_cache_entries, e.flow_cache_entries), (0, DEFAULT_FLOW_CACHE_ENTRIES));
        assert_eq!(EnforcementSection::default().hint_cache_entries, DEFAULT_HINT_CACHE_ENTRIES);
    }
}
