//! The firewall policy: zones, ordered rules with Synchronized Security
//! heartbeat options, and a default action; compiled into a
//! [`CompiledPolicy`] that a worker evaluates per flow without allocating.
//!
//! ```toml
//! default_action = "drop"               # when no rule matches: accept | drop | reject
//! missing_heartbeat_zones = ["lan"]     # endpoints with a missing heartbeat here are cut off
//!
//! [[zone]]
//! name = "lan"
//! role = "lan"                          # the bridge port side: lan | wan
//! vlans = [10, 20]                      # optional: only these VLANs (empty: any, untagged included)
//!
//! [[zone]]
//! name = "wan"
//! role = "wan"
//!
//! [[rule]]
//! name = "lan to web"
//! source_zones = ["lan"]                # empty or ["any"]: any zone
//! destination_zones = ["wan"]
//! source_networks = ["10.0.0.0/8", "2001:db8::/32"]   # empty or ["any"]: any address
//! destination_networks = ["any"]
//! services = [{ protocol = "tcp", ports = [80, 443, "8000-8080"] }, { protocol = "icmp" }]
//! action = "accept"                     # accept | drop | reject
//! min_source_heartbeat = "green"        # no_restriction | yellow | green
//! block_clients_without_heartbeat = true
//! min_destination_heartbeat = "no_restriction"
//! block_destinations_without_heartbeat = false
//! ```
//!
//! # Semantics
//!
//! * The first rule whose zones, networks and service match the flow decides.
//!   No rule: `default_action`.
//! * Heartbeat options apply to a matching `accept` rule; when one is not met
//!   the flow is dropped (the rule still decided: it does not fall through).
//!   Health order: Green > Yellow > Red. `Missing`, `NoHeartbeat` and
//!   `Unknown` satisfy no minimum of Yellow or Green. "Block clients
//!   (destinations) without heartbeat" drops sources (destinations) whose
//!   health is `NoHeartbeat` or `Unknown`.
//! * Before any rule: a source in a `missing_heartbeat_zones` zone whose
//!   health is `Missing` is dropped (all traffic from an endpoint with a
//!   missing heartbeat is blocked).
//! * A flow's source zones are those whose role is the ingress port's role and
//!   whose VLAN list is empty or holds the flow's VLAN; destination zones
//!   likewise with the egress port. A flow may be in several zones.

use crate::endpoint::EndpointHealth;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Which side of a bridge a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortRole {
    /// The LAN side.
    Lan,
    /// The WAN side.
    Wan,
}

/// A zone: a port role and optionally some VLANs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// The name rules use.
    pub name: String,
    /// The port role it covers.
    pub role: PortRole,
    /// Only these VLAN ids (1-4094); empty means any, untagged included.
    #[serde(default)]
    pub vlans: Vec<u16>,
}

/// What a rule (or the default) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Let it through.
    Accept,
    /// Discard silently.
    Drop,
    /// Discard and answer (TCP RST / ICMP unreachable).
    Reject,
}

/// The minimum heartbeat a rule requires of a source or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MinHeartbeat {
    /// Any health, and none, will do.
    #[default]
    NoRestriction,
    /// Yellow or green.
    Yellow,
    /// Green only.
    Green,
}

impl MinHeartbeat {
    /// Whether `health` meets this minimum.
    pub const fn satisfied_by(self, health: EndpointHealth) -> bool {
        match self {
            MinHeartbeat::NoRestriction => true,
            MinHeartbeat::Yellow => matches!(health, EndpointHealth::Green | EndpointHealth::Yellow),
            MinHeartbeat::Green => matches!(health, EndpointHealth::Green),
        }
    }
}

/// The protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1) and ICMPv6 (58).
    Icmp,
    /// Any protocol.
    Any,
}

impl Protocol {
    /// IP protocol number of TCP.
    pub const TCP: u8 = 6;
    /// IP protocol number of UDP.
    pub const UDP: u8 = 17;
    /// IP protocol number of ICMP.
    pub const ICMP: u8 = 1;
    /// IP protocol number of ICMPv6.
    pub const ICMPV6: u8 = 58;

    #[inline]
    fn matches(self, proto: u8) -> bool {
        match self {
            Protocol::Tcp => proto == Self::TCP,
            Protocol::Udp => proto == Self::UDP,
            Protocol::Icmp => proto == Self::ICMP || proto == Self::ICMPV6,
            Protocol::Any => true,
        }
    }
}

/// A port or a port range (`"8000-8080"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// One port.
    Port(u16),
    /// `"N"` or `"LOW-HIGH"`, inclusive.
    Range(String),
}

/// A protocol and (for TCP and UDP) ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The protocol.
    pub protocol: Protocol,
    /// Destination ports; empty means any.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Source ports; empty means any.
    #[serde(default)]
    pub source_ports: Vec<PortSpec>,
}

/// One firewall rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Its name, in logs and errors.
    pub name: String,
    /// Source zones; empty or `["any"]` means any.
    #[serde(default)]
    pub source_zones: Vec<String>,
    /// Destination zones; empty or `["any"]` means any.
    #[serde(default)]
    pub destination_zones: Vec<String>,
    /// Source addresses or CIDRs; empty or `["any"]` means any.
    #[serde(default)]
    pub source_networks: Vec<String>,
    /// Destination addresses or CIDRs; empty or `["any"]` means any.
    #[serde(default)]
    pub destination_networks: Vec<String>,
    /// Services; empty means any.
    #[serde(default)]
    pub services: Vec<Service>,
    /// What a match does.
    pub action: RuleAction,
    /// Minimum source heartbeat.
    #[serde(default)]
    pub min_source_heartbeat: MinHeartbeat,
    /// Drop sources that have no heartbeat (`NoHeartbeat`, `Unknown`).
    #[serde(default)]
    pub block_clients_without_heartbeat: bool,
    /// Minimum destination heartbeat.
    #[serde(default)]
    pub min_destination_heartbeat: MinHeartbeat,
    /// Drop destinations that have no heartbeat (`NoHeartbeat`, `Unknown`).
    #[serde(default)]
    pub block_destinations_without_heartbeat: bool,
}

fn default_action() -> RuleAction {
    RuleAction::Drop
}

/// The policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// When no rule matches (default: drop).
    #[serde(default = "default_action")]
    pub default_action: RuleAction,
    /// Zones where endpoints with a missing heartbeat are cut off.
    #[serde(default)]
    pub missing_heartbeat_zones: Vec<String>,
    /// Zones (TOML `[[zone]]`).
    #[serde(default, rename = "zone")]
    pub zones: Vec<Zone>,
    /// Rules in order (TOML `[[rule]]`).
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

/// Most zones a policy may define (zone sets are 64-bit masks).
pub const MAX_ZONES: usize = 64;

/// A policy that cannot be used, with what to do about it; always one line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}: check the path")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or a key or value of the wrong kind.
    #[error("{path}:{line}:{column}: {key}{message}: fix this key (see the policy format in hbgw_shared::policy)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// `key `a.b`: ` or empty.
        key: String,
        /// The parser's message, on one line.
        message: String,
    },
    /// A rule (or `missing_heartbeat_zones`) names a zone no `[[zone]]` defines.
    #[error("policy: {place} names unknown zone `{zone}`: define it with [[zone]] name = \"{zone}\" or use one of: {known}")]
    UnknownZone {
        /// `rule `name`` or `missing_heartbeat_zones`.
        place: String,
        /// The unknown name.
        zone: String,
        /// The zones defined (or `any`).
        known: String,
    },
    /// A value that parses but cannot work.
    #[error("policy: {place}: {problem}: {fix}")]
    Invalid {
        /// Where: `rule `name``, `zone `name``, ...
        place: String,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
}

fn invalid(place: &str, problem: impl Into<String>, fix: impl Into<String>) -> PolicyError {
    PolicyError::Invalid { place: place.to_owned(), problem: problem.into(), fix: fix.into() }
}

impl Policy {
    /// Reads and parses a policy file; not yet compiled.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, PolicyError> {
        crate::toml_file::parse(text).map_err(|e| PolicyError::Parse {
            path: origin.to_owned(),
            line: e.line,
            column: e.column,
            key: e.key,
            message: e.message,
        })
    }

    /// Validates and compiles the policy for evaluation.
    pub fn compile(&self) -> Result<CompiledPolicy, PolicyError> {
        if self.zones.len() > MAX_ZONES {
            return Err(invalid(
                "zone",
                format!("{} zones defined", self.zones.len()),
                format!("define at most {MAX_ZONES} zones (use VLAN lists to group)"),
            ));
        }
        let mut zones = Vec::with_capacity(self.zones.len());
        let mut names = BTreeSet::new();
        for z in &self.zones {
            let place = format!("zone `{}`", z.name);
            if z.name.trim().is_empty() {
                return Err(invalid("zone", "has an empty name", "give every [[zone]] a name"));
            }
            if z.name == "any" {
                return Err(invalid(&place, "`any` is reserved", "rename the zone (`any` means every zone)"));
            }
            if !names.insert(z.name.as_str()) {
                return Err(invalid(&place, "is defined twice", "give each [[zone]] its own name"));
            }
            let mut vlans = z.vlans.clone();
            if let Some(v) = vlans.iter().find(|v| !(1..=4094).contains(*v)) {
                return Err(invalid(&place, format!("VLAN {v} is out of range"), "use VLAN ids 1-4094"));
            }
            vlans.sort_unstable();
            vlans.dedup();
            zones.push(CompiledZone { role: z.role, vlans: vlans.into() });
        }
        let known = || {
            if self.zones.is_empty() {
                "any (no [[zone]] defined)".to_owned()
            } else {
                let mut k: Vec<&str> = self.zones.iter().map(|z| z.name.as_str()).collect();
                k.push("any");
                k.join(", ")
            }
        };
        let zone_mask = |place: &str, list: &[String]| -> Result<u64, PolicyError> {
            let mut mask = 0u64;
            for name in list {
                if name == "any" {
                    return Ok(0);
                }
                match self.zones.iter().position(|z| &z.name == name) {
                    Some(i) => mask |= 1 << i,
                    None => {
                        return Err(PolicyError::UnknownZone {
                            place: place.to_owned(),
                            zone: name.clone(),
                            known: known(),
                        })
                    }
                }
            }
            Ok(mask)
        };
        let missing_zones = if self.missing_heartbeat_zones.iter().any(|z| z == "any") {
            u64::MAX
        } else {
            zone_mask("missing_heartbeat_zones", &self.missing_heartbeat_zones)?
        };

        let mut rules = Vec::with_capacity(self.rules.len());
        let mut rule_names = BTreeSet::new();
        for r in &self.rules {
            let place = format!("rule `{}`", r.name);
            if r.name.trim().is_empty() {
                return Err(invalid(
                    &format!("rule {}", rules.len() + 1),
                    "has an empty name",
                    "give every [[rule]] a name",
                ));
            }
            if !rule_names.insert(r.name.as_str()) {
                return Err(invalid(&place, "is defined twice", "give each [[rule]] its own name"));
            }
            let services = r
                .services
                .iter()
                .map(|s| compile_service(&place, s))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(CompiledRule {
                name: r.name.as_str().into(),
                src_zones: zone_mask(&place, &r.source_zones)?,
                dst_zones: zone_mask(&place, &r.destination_zones)?,
                src_nets: compile_nets(&place, "source_networks", &r.source_networks)?,
                dst_nets: compile_nets(&place, "destination_networks", &r.destination_networks)?,
                services: services.into(),
                action: r.action,
                min_src: r.min_source_heartbeat,
                block_src_without: r.block_clients_without_heartbeat,
                min_dst: r.min_destination_heartbeat,
                block_dst_without: r.block_destinations_without_heartbeat,
            });
        }
        if u32::try_from(rules.len()).is_err() {
            return Err(invalid("rule", "too many rules", "use fewer than 4 billion rules"));
        }
        let heads: Box<[RuleHead]> = rules.iter().map(RuleHead::of).collect();
        let candidates = Candidates::build(&heads, zones.len());
        Ok(CompiledPolicy {
            zones: zones.into(),
            missing_zones,
            rules: rules.into(),
            heads,
            candidates,
            default_action: self.default_action,
        })
    }
}

fn compile_nets(place: &str, key: &str, list: &[String]) -> Result<NetList, PolicyError> {
    let mut nets = NetList::default();
    if list.is_empty() || list.iter().any(|n| n.trim() == "any") {
        nets.any = true;
        return Ok(nets);
    }
    for text in list {
        let t = text.trim();
        let net = match t.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => t.parse::<IpNet>().map_err(|_| {
                invalid(
                    place,
                    format!("{key} entry `{text}` is not an address or CIDR"),
                    "write an address or network like 10.0.0.0/8 or 2001:db8::/32, or \"any\"",
                )
            })?,
        };
        if net.trunc() != net {
            return Err(invalid(
                place,
                format!("{key} entry `{text}` has host bits set"),
                format!("write the network address, {}", net.trunc()),
            ));
        }
        match net {
            IpNet::V4(n) => nets.v4.push((u32::from(n.network()), u32::from(n.netmask()))),
            IpNet::V6(n) => nets.v6.push((u128::from(n.network()), u128::from(n.netmask()))),
        }
    }
    Ok(nets)
}

fn compile_ports(place: &str, list: &[PortSpec]) -> Result<Box<[(u16, u16)]>, PolicyError> {
    let bad = |spec: &str| {
        invalid(place, format!("port `{spec}` is not a port or range"), "write a port 0-65535 or a range like \"8000-8080\"")
    };
    let mut out = Vec::with_capacity(list.len());
    for spec in list {
        let (lo, hi) = match spec {
            PortSpec::Port(p) => (*p, *p),
            PortSpec::Range(s) => {
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                let lo: u16 = a.trim().parse().map_err(|_| bad(s))?;
                let hi: u16 = b.trim().parse().map_err(|_| bad(s))?;
                if lo > hi {
                    return Err(invalid(
                        place,
                        format!("port range `{s}` is reversed"),
                        format!("write it low-high, \"{hi}-{lo}\""),
                    ));
                }
                (lo, hi)
            }
        };
        out.push((lo, hi));
    }
    Ok(out.into())
}

fn compile_service(place: &str, s: &Service) -> Result<CompiledService, PolicyError> {
    let has_ports = !s.ports.is_empty() || !s.source_ports.is_empty();
    if has_ports && !matches!(s.protocol, Protocol::Tcp | Protocol::Udp) {
        return Err(invalid(
            place,
            format!("service with protocol {:?} has ports", s.protocol).to_lowercase(),
            "ports need protocol \"tcp\" or \"udp\"; remove them or change the protocol",
        ));
    }
    Ok(CompiledService {
        protocol: s.protocol,
        dst_ports: compile_ports(place, &s.ports)?,
        src_ports: compile_ports(place, &s.source_ports)?,
    })
}

#[derive(Debug, Clone)]
struct CompiledZone {
    role: PortRole,
    vlans: Box<[u16]>,
}

#[derive(Debug, Clone, Default)]
struct NetList {
    any: bool,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl NetList {
    #[inline]
    fn matches(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledService {
    protocol: Protocol,
    dst_ports: Box<[(u16, u16)]>,
    src_ports: Box<[(u16, u16)]>,
}

#[inline]
fn in_ranges(ranges: &[(u16, u16)], port: u16) -> bool {
    ranges.is_empty() || ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
}

impl CompiledService {
    #[inline]
    fn matches(&self, flow: &FlowKey) -> bool {
        self.protocol.matches(flow.protocol)
            && in_ranges(&self.dst_ports, flow.dst_port)
            && in_ranges(&self.src_ports, flow.src_port)
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    name: Box<str>,
    /// Zone bit masks; 0 means any.
    src_zones: u64,
    dst_zones: u64,
    src_nets: NetList,
    dst_nets: NetList,
    services: Box<[CompiledService]>,
    action: RuleAction,
    min_src: MinHeartbeat,
    block_src_without: bool,
    min_dst: MinHeartbeat,
    block_dst_without: bool,
}

/// A rule's cheap necessary conditions, kept inline in one contiguous array
/// so that the rule walk streams through ~24 bytes per rule and only follows
/// a rule's heap data (networks, services) when its head matches. Measured
/// (perf/pipeline_stages.rs, 100 rules): the walk without heads chased two to
/// three heap blocks per rule.
#[derive(Debug, Clone, Copy)]
struct RuleHead {
    src_zones: u64,
    dst_zones: u64,
    /// The one IPv4 destination network when the rule has exactly one and no
    /// IPv6 ones: (net, mask); (0, 0) otherwise (matches anything).
    dst_v4: (u32, u32),
    /// Bit per protocol class: 1 TCP, 2 UDP, 4 ICMP, 8 other; 0xff any.
    protocols: u8,
    /// The hull of every service's destination ports.
    dport_lo: u16,
    dport_hi: u16,
}

fn protocol_bit(proto: u8) -> u8 {
    match proto {
        Protocol::TCP => 1,
        Protocol::UDP => 2,
        Protocol::ICMP | Protocol::ICMPV6 => 4,
        _ => 8,
    }
}

impl RuleHead {
    fn of(r: &CompiledRule) -> Self {
        let (protocols, dport_lo, dport_hi) = if r.services.is_empty() {
            (0xff, 0, u16::MAX)
        } else {
            let mut bits = 0u8;
            let (mut lo, mut hi) = (u16::MAX, 0u16);
            for s in r.services.iter() {
                bits |= match s.protocol {
                    Protocol::Tcp => 1,
                    Protocol::Udp => 2,
                    Protocol::Icmp => 4,
                    Protocol::Any => 0xff,
                };
                if s.dst_ports.is_empty() || !matches!(s.protocol, Protocol::Tcp | Protocol::Udp) {
                    (lo, hi) = (0, u16::MAX);
                } else {
                    for &(a, b) in s.dst_ports.iter() {
                        lo = lo.min(a);
                        hi = hi.max(b);
                    }
                }
            }
            (bits, lo, hi)
        };
        let dst_v4 = if !r.dst_nets.any && r.dst_nets.v4.len() == 1 && r.dst_nets.v6.is_empty() {
            r.dst_nets.v4[0]
        } else {
            (0, 0)
        };
        RuleHead { src_zones: r.src_zones, dst_zones: r.dst_zones, dst_v4, protocols, dport_lo, dport_hi }
    }

    #[inline]
    fn may_match(&self, flow: &FlowKey, proto_bit: u8, dst_v4: Option<u32>, src_zones: u64, dst_zones: u64) -> bool {
        (self.src_zones == 0 || self.src_zones & src_zones != 0)
            && (self.dst_zones == 0 || self.dst_zones & dst_zones != 0)
            && self.protocols & proto_bit != 0
            && (proto_bit > 2 || (self.dport_lo..=self.dport_hi).contains(&flow.dst_port))
            && match dst_v4 {
                Some(a) => a & self.dst_v4.1 == self.dst_v4.0,
                // An IPv6 flow cannot match a rule whose only network is IPv4.
                None => self.dst_v4.1 == 0,
            }
    }
}

/// The rule heads turned around: for each dimension of [`RuleHead`], which
/// rules a value admits, as a bit set over rule numbers (bit `i` of word
/// `i / 64`). A flow's candidates are the AND of its five sets; only those
/// are checked in full, lowest number first, so the first that matches is the
/// rule the walk over `heads` would have found (the sets say exactly what
/// [`RuleHead::may_match`] says, dimension by dimension). This is the
/// bit-vector scheme of packet classifiers (Lakshman & Stiliadis, 1998):
/// measured with 100 rules (perf/pipeline_stages.rs) it replaces a walk of
/// ~100 heads per packet by a few word ANDs and two binary searches.
///
/// Ports and IPv4 destinations are cut into elementary intervals at every
/// rule's bounds; each interval stores its set. That costs (2R + 1) * R / 8
/// bytes per dimension for R rules, hence [`Candidates::MAX_RULES`].
#[derive(Debug, Clone)]
struct Candidates {
    /// u64 words per set.
    words: usize,
    /// Per zone: rules naming it as a source zone; then rules with any source zone.
    src_zone: Box<[u64]>,
    /// The same for destination zones.
    dst_zone: Box<[u64]>,
    /// Per protocol class (TCP, UDP, ICMP, other): rules that may take it.
    proto: Box<[u64]>,
    /// Destination-port intervals.
    ports: Intervals<u16>,
    /// Per port interval: rules whose port hull holds it.
    port_sets: Box<[u64]>,
    /// IPv4-destination intervals.
    v4: Intervals<u32>,
    /// Per IPv4 interval: rules whose destination network holds it.
    v4_sets: Box<[u64]>,
    /// Rules an IPv6 destination may match (no single-IPv4-network head).
    v6_set: Box<[u64]>,
}

/// Elementary intervals of a key space, found in two steps: the key's top
/// bits index a table of where intervals starting under that prefix begin,
/// then a binary search among those few (usually none or one). A plain
/// binary search over ~200 starts was eight dependent steps per dimension
/// (measured: the largest part of `evaluate`).
#[derive(Debug, Clone)]
struct Intervals<T> {
    /// Start of each interval, ascending, the first 0.
    starts: Box<[T]>,
    /// For each value `p` of the top bits: how many starts have top bits below `p`.
    below: Box<[u16]>,
    /// Bits below the top ones.
    shift: u32,
}

impl<T: Copy + Ord + Into<u64>> Intervals<T> {
    fn new(starts: Vec<T>, top_bits: u32) -> Self {
        let shift = (std::mem::size_of::<T>() as u32 * 8) - top_bits;
        let below = (0..=1u64 << top_bits)
            .map(|p| {
                let n = starts.partition_point(|&s| s.into() >> shift < p);
                // At most 2 * MAX_RULES + 1 starts.
                u16::try_from(n).expect("interval count fits u16")
            })
            .collect();
        Intervals { starts: starts.into(), below, shift }
    }

    /// The interval holding `key`.
    #[inline]
    fn find(&self, key: T) -> usize {
        let p = (key.into() >> self.shift) as usize;
        let (lo, hi) = (usize::from(self.below[p]), usize::from(self.below[p + 1]));
        // starts[0] = 0, so lo > 0 or a start <= key is in the range.
        lo + self.starts[lo..hi].partition_point(|&s| s <= key) - 1
    }
}

impl Candidates {
    /// Above this many rules the sets would take megabytes; the head walk is
    /// used instead.
    const MAX_RULES: usize = 1024;

    fn build(heads: &[RuleHead], zones: usize) -> Option<Self> {
        if heads.is_empty() || heads.len() > Self::MAX_RULES {
            return None;
        }
        let words = heads.len().div_ceil(64);
        let sets = |n: usize, admits: &dyn Fn(usize, &RuleHead) -> bool| -> Box<[u64]> {
            let mut out = vec![0u64; n * words];
            for k in 0..n {
                for (i, h) in heads.iter().enumerate() {
                    if admits(k, h) {
                        out[k * words + i / 64] |= 1 << (i % 64);
                    }
                }
            }
            out.into()
        };
        let zone_sets = |mask_of: fn(&RuleHead) -> u64| {
            sets(zones + 1, &|z, h| if z == zones { mask_of(h) == 0 } else { mask_of(h) & (1 << z) != 0 })
        };
        let classes = [1u8, 2, 4, 8];

        let mut port_starts = vec![0u16];
        for h in heads {
            port_starts.push(h.dport_lo);
            if let Some(next) = h.dport_hi.checked_add(1) {
                port_starts.push(next);
            }
        }
        port_starts.sort_unstable();
        port_starts.dedup();
        let port_sets = sets(port_starts.len(), &|k, h| (h.dport_lo..=h.dport_hi).contains(&port_starts[k]));

        let mut v4_starts = vec![0u32];
        for h in heads {
            let (net, mask) = h.dst_v4;
            v4_starts.push(net);
            if let Some(next) = (net | !mask).checked_add(1) {
                v4_starts.push(next);
            }
        }
        v4_starts.sort_unstable();
        v4_starts.dedup();
        let v4_sets = sets(v4_starts.len(), &|k, h| v4_starts[k] & h.dst_v4.1 == h.dst_v4.0);

        Some(Candidates {
            words,
            src_zone: zone_sets(|h| h.src_zones),
            dst_zone: zone_sets(|h| h.dst_zones),
            proto: sets(classes.len(), &|k, h| h.protocols & classes[k] != 0),
            v6_set: sets(1, &|_, h| h.dst_v4.1 == 0),
            ports: Intervals::new(port_starts, 8),
            port_sets,
            v4: Intervals::new(v4_starts, 16),
            v4_sets,
        })
    }

    /// Word `w` of the set of rules admitting a packet in the zones `mask`.
    #[inline]
    fn zone_word(sets: &[u64], words: usize, zones: usize, mut mask: u64, w: usize) -> u64 {
        let mut word = sets[zones * words + w];
        while mask != 0 {
            word |= sets[mask.trailing_zeros() as usize * words + w];
            mask &= mask - 1;
        }
        word
    }

    /// The lowest-numbered candidate for which `full` holds.
    #[inline]
    fn first_match(
        &self,
        dst_port: u16,
        proto_bit: u8,
        dst_v4: Option<u32>,
        src_zones: u64,
        dst_zones: u64,
        mut full: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let words = self.words;
        let zones = self.src_zone.len() / words - 1;
        let proto = &self.proto[proto_bit.trailing_zeros() as usize * words..][..words];
        // Ports only narrow TCP and UDP (other protocols have none).
        let port = (proto_bit <= 2).then(|| {
            let k = self.ports.find(dst_port);
            &self.port_sets[k * words..][..words]
        });
        let dst = match dst_v4 {
            Some(a) => {
                let k = self.v4.find(a);
                &self.v4_sets[k * words..][..words]
            }
            None => &self.v6_set[..],
        };
        for w in 0..words {
            let mut bits = proto[w] & dst[w] & port.map_or(u64::MAX, |p| p[w]);
            if bits != 0 {
                bits &= Self::zone_word(&self.src_zone, words, zones, src_zones, w);
                bits &= Self::zone_word(&self.dst_zone, words, zones, dst_zones, w);
            }
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                if full(i) {
                    return Some(i);
                }
                bits &= bits - 1;
            }
        }
        None
    }
}

impl CompiledRule {
    #[inline]
    fn matches(&self, flow: &FlowKey, src_zones: u64, dst_zones: u64) -> bool {
        (self.src_zones == 0 || self.src_zones & src_zones != 0)
            && (self.dst_zones == 0 || self.dst_zones & dst_zones != 0)
            && self.src_nets.matches(flow.src)
            && self.dst_nets.matches(flow.dst)
            && (self.services.is_empty() || self.services.iter().any(|s| s.matches(flow)))
    }
}

/// What a worker knows of a flow when it asks the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// Role of the port the packet came in on.
    pub ingress: PortRole,
    /// Role of the port it would leave by.
    pub egress: PortRole,
    /// Its 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Source port (0 when the protocol has none).
    pub src_port: u16,
    /// Destination port (0 when the protocol has none).
    pub dst_port: u16,
}

/// Why the policy decided what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionReason {
    /// A rule matched and its heartbeat options, if any, were met.
    Rule,
    /// No rule matched.
    Default,
    /// The source is in a missing-heartbeat zone and its heartbeat is missing.
    MissingHeartbeat,
    /// The source's health is below the rule's minimum.
    SourceHeartbeat,
    /// The rule blocks sources without heartbeat and this one has none.
    SourceWithoutHeartbeat,
    /// The destination's health is below the rule's minimum.
    DestinationHeartbeat,
    /// The rule blocks destinations without heartbeat and this one has none.
    DestinationWithoutHeartbeat,
}

impl DecisionReason {
    /// A short name for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecisionReason::Rule => "rule",
            DecisionReason::Default => "default",
            DecisionReason::MissingHeartbeat => "missing_heartbeat",
            DecisionReason::SourceHeartbeat => "source_heartbeat",
            DecisionReason::SourceWithoutHeartbeat => "source_without_heartbeat",
            DecisionReason::DestinationHeartbeat => "destination_heartbeat",
            DecisionReason::DestinationWithoutHeartbeat => "destination_without_heartbeat",
        }
    }
}

impl fmt::Display for DecisionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy's answer for one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyDecision {
    /// The deciding rule's index, `None` for the default action and for the
    /// missing-heartbeat block.
    pub rule: Option<u32>,
    /// What to do.
    pub action: RuleAction,
    /// Why.
    pub reason: DecisionReason,
}

/// A validated policy, evaluated without allocation.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    zones: Box<[CompiledZone]>,
    missing_zones: u64,
    rules: Box<[CompiledRule]>,
    heads: Box<[RuleHead]>,
    /// The heads again, as bit sets per dimension (`None` above
    /// [`Candidates::MAX_RULES`] rules: the walk over `heads` is used then).
    candidates: Option<Candidates>,
    default_action: RuleAction,
}

impl Default for CompiledPolicy {
    /// No zones, no rules, default accept: a pass-through gateway.
    fn default() -> Self {
        CompiledPolicy {
            zones: Box::new([]),
            missing_zones: 0,
            rules: Box::new([]),
            heads: Box::new([]),
            candidates: None,
            default_action: RuleAction::Accept,
        }
    }
}

impl CompiledPolicy {
    /// Rules, in order.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The name of rule `index`.
    pub fn rule_name(&self, index: u32) -> Option<&str> {
        self.rules.get(index as usize).map(|r| &*r.name)
    }

    /// The action when no rule matches.
    pub fn default_action(&self) -> RuleAction {
        self.default_action
    }

    /// The zones (as a bit mask by definition order) a packet on a port of
    /// `role` with `vlan` belongs to.
    #[inline]
    fn zone_mask(&self, role: PortRole, vlan: Option<u16>) -> u64 {
        let mut mask = 0;
        for (i, z) in self.zones.iter().enumerate() {
            let vlan_ok = z.vlans.is_empty() || vlan.is_some_and(|v| z.vlans.binary_search(&v).is_ok());
            if z.role == role && vlan_ok {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// Decides a flow given the health of its source and destination.
    ///
    /// Inlined into the caller: returned through memory, the decision's
    /// byte-wide fields were read back with a wider load that the store
    /// buffer could not forward (a stall per packet, measured with perf
    /// annotate in `Enforcer::decide`).
    #[inline]
    pub fn evaluate(&self, flow: &FlowKey, src: EndpointHealth, dst: EndpointHealth) -> PolicyDecision {
        let src_zones = self.zone_mask(flow.ingress, flow.vlan);
        if src == EndpointHealth::Missing
            && (self.missing_zones == u64::MAX || src_zones & self.missing_zones != 0)
        {
            return PolicyDecision { rule: None, action: RuleAction::Drop, reason: DecisionReason::MissingHeartbeat };
        }
        let dst_zones = self.zone_mask(flow.egress, flow.vlan);
        let proto_bit = protocol_bit(flow.protocol);
        let dst_v4 = match flow.dst {
            IpAddr::V4(a) => Some(u32::from(a)),
            IpAddr::V6(_) => None,
        };
        if let Some(c) = &self.candidates {
            let first = c.first_match(flow.dst_port, proto_bit, dst_v4, src_zones, dst_zones, |i| {
                self.rules[i].matches(flow, src_zones, dst_zones)
            });
            return match first {
                Some(i) => decide(i as u32, &self.rules[i], src, dst),
                None => PolicyDecision { rule: None, action: self.default_action, reason: DecisionReason::Default },
            };
        }
        for (i, head) in self.heads.iter().enumerate() {
            if !head.may_match(flow, proto_bit, dst_v4, src_zones, dst_zones) {
                continue;
            }
            let rule = &self.rules[i];
            if rule.matches(flow, src_zones, dst_zones) {
                return decide(i as u32, rule, src, dst);
            }
        }
        PolicyDecision { rule: None, action: self.default_action, reason: DecisionReason::Default }
    }
}

#[inline]
fn without_heartbeat(h: EndpointHealth) -> bool {
    matches!(h, EndpointHealth::NoHeartbeat | EndpointHealth::Unknown)
}

#[inline]
fn decide(index: u32, rule: &CompiledRule, src: EndpointHealth, dst: EndpointHealth) -> PolicyDecision {
    let drop = |reason| PolicyDecision { rule: Some(index), action: RuleAction::Drop, reason };
    if rule.action != RuleAction::Accept {
        return PolicyDecision { rule: Some(index), action: rule.action, reason: DecisionReason::Rule };
    }
    if rule.block_src_without && without_heartbeat(src) {
        return drop(DecisionReason::SourceWithoutHeartbeat);
    }
    if !rule.min_src.satisfied_by(src) {
        return drop(DecisionReason::SourceHeartbeat);
    }
    if rule.block_dst_without && without_heartbeat(dst) {
        return drop(DecisionReason::DestinationWithoutHeartbeat);
    }
    if !rule.min_dst.satisfied_by(dst) {
        return drop(DecisionReason::DestinationHeartbeat);
    }
    PolicyDecision { rule: Some(index), action: RuleAction::Accept, reason: DecisionReason::Rule }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EndpointHealth::*;

    fn compile(text: &str) -> Result<CompiledPolicy, String> {
        Policy::parse(text, Path::new("policy.toml")).map_err(|e| e.to_string())?.compile().map_err(|e| e.to_string())
    }

    const ZONES: &str = r#"
[[zone]]
name = "lan"
role = "lan"
[[zone]]
name = "guest"
role = "lan"
vlans = [30]
[[zone]]
name = "wan"
role = "wan"
"#;

    fn flow(src: &str, dst: &str, proto: u8, dport: u16) -> FlowKey {
        FlowKey {
            ingress: PortRole::Lan,
            egress: PortRole::Wan,
            vlan: None,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: proto,
            src_port: 40000,
            dst_port: dport,
        }
    }

    fn web() -> FlowKey {
        flow("10.0.0.5", "93.184.216.34", Protocol::TCP, 443)
    }

    /// One accept rule with the given heartbeat options.
    fn with_options(options: &str) -> CompiledPolicy {
        compile(&format!(
            "default_action = \"reject\"\n{ZONES}\n[[rule]]\nname = \"out\"\nsource_zones = [\"lan\"]\naction = \"accept\"\n{options}\n"
        ))
        .unwrap()
    }

    #[test]
    fn heartbeat_comparison() {
        use MinHeartbeat as M;
        let table = [
            (M::NoRestriction, [true; 6]),
            // Unknown, Green, Yellow, Red, Missing, NoHeartbeat
            (M::Yellow, [false, true, true, false, false, false]),
            (M::Green, [false, true, false, false, false, false]),
        ];
        for (min, expect) in table {
            for (h, e) in EndpointHealth::ALL.iter().zip(expect) {
                assert_eq!(min.satisfied_by(*h), e, "{min:?} {h:?}");
            }
        }
    }

    #[test]
    fn no_heartbeat_options_accept_every_health() {
        let p = with_options("");
        for h in EndpointHealth::ALL {
            let d = p.evaluate(&web(), h, h);
            assert_eq!((d.rule, d.action, d.reason), (Some(0), RuleAction::Accept, DecisionReason::Rule), "{h:?}");
        }
    }

    #[test]
    fn min_source_heartbeat() {
        let green = with_options("min_source_heartbeat = \"green\"");
        let yellow = with_options("min_source_heartbeat = \"yellow\"");
        for h in EndpointHealth::ALL {
            let g = green.evaluate(&web(), h, Unknown);
            let y = yellow.evaluate(&web(), h, Unknown);
            assert_eq!(g.action == RuleAction::Accept, h == Green, "green {h:?}");
            assert_eq!(y.action == RuleAction::Accept, matches!(h, Green | Yellow), "yellow {h:?}");
            if g.action == RuleAction::Drop {
                assert_eq!((g.rule, g.reason), (Some(0), DecisionReason::SourceHeartbeat));
            }
        }
    }

    #[test]
    fn block_clients_without_heartbeat() {
        let p = with_options("block_clients_without_heartbeat = true");
        for h in EndpointHealth::ALL {
            let d = p.evaluate(&web(), h, Unknown);
            if matches!(h, NoHeartbeat | Unknown) {
                assert_eq!((d.action, d.reason), (RuleAction::Drop, DecisionReason::SourceWithoutHeartbeat), "{h:?}");
            } else {
                assert_eq!(d.action, RuleAction::Accept, "{h:?}");
            }
        }
        // Together with a minimum, the no-heartbeat reason wins for those without.
        let p = with_options("block_clients_without_heartbeat = true\nmin_source_heartbeat = \"green\"");
        assert_eq!(p.evaluate(&web(), Unknown, Green).reason, DecisionReason::SourceWithoutHeartbeat);
        assert_eq!(p.evaluate(&web(), Red, Green).reason, DecisionReason::SourceHeartbeat);
    }

    #[test]
    fn min_destination_heartbeat_and_block_destinations() {
        let p = with_options("min_destination_heartbeat = \"yellow\"");
        for h in EndpointHealth::ALL {
            let d = p.evaluate(&web(), Green, h);
            assert_eq!(d.action == RuleAction::Accept, matches!(h, Green | Yellow), "{h:?}");
            if d.action == RuleAction::Drop {
                assert_eq!(d.reason, DecisionReason::DestinationHeartbeat);
            }
        }
        let p = with_options("block_destinations_without_heartbeat = true");
        for h in EndpointHealth::ALL {
            let d = p.evaluate(&web(), Red, h);
            if matches!(h, NoHeartbeat | Unknown) {
                assert_eq!(d.reason, DecisionReason::DestinationWithoutHeartbeat, "{h:?}");
            } else {
                assert_eq!(d.action, RuleAction::Accept, "{h:?}");
            }
        }
    }

    #[test]
    fn heartbeat_options_do_not_touch_drop_rules() {
        let p = compile(&format!(
            "{ZONES}\n[[rule]]\nname = \"no\"\naction = \"reject\"\nmin_source_heartbeat = \"green\"\n"
        ))
        .unwrap();
        let d = p.evaluate(&web(), Green, Green);
        assert_eq!((d.action, d.reason), (RuleAction::Reject, DecisionReason::Rule));
    }

    #[test]
    fn missing_heartbeat_zones_cut_off_missing_sources() {
        let p = compile(&format!(
            "missing_heartbeat_zones = [\"guest\"]\n{ZONES}\n[[rule]]\nname = \"all\"\naction = \"accept\"\n"
        ))
        .unwrap();
        let mut f = web();
        assert_eq!(p.evaluate(&f, Missing, Green).action, RuleAction::Accept, "lan is not a missing-heartbeat zone");
        f.vlan = Some(30);
        let d = p.evaluate(&f, Missing, Green);
        assert_eq!((d.rule, d.action, d.reason), (None, RuleAction::Drop, DecisionReason::MissingHeartbeat));
        assert_eq!(p.evaluate(&f, Red, Green).action, RuleAction::Accept);
        let any = compile(&format!("missing_heartbeat_zones = [\"any\"]\n{ZONES}")).unwrap();
        assert_eq!(any.evaluate(&web(), Missing, Green).reason, DecisionReason::MissingHeartbeat);
    }

    #[test]
    fn zones_networks_services_and_order() {
        let p = compile(&format!(
            r#"default_action = "drop"
{ZONES}
[[rule]]
name = "guest web only"
source_zones = ["guest"]
destination_zones = ["wan"]
services = [{{ protocol = "tcp", ports = [80, 443] }}]
action = "accept"
[[rule]]
name = "guest rest"
source_zones = ["guest"]
action = "reject"
[[rule]]
name = "v6 dns"
source_networks = ["2001:db8::/32"]
destination_networks = ["2001:4860:4860::8888"]
services = [{{ protocol = "udp", ports = ["53"] }}, {{ protocol = "tcp", ports = ["50-60"], source_ports = ["1024-65535"] }}]
action = "accept"
[[rule]]
name = "lan net"
source_zones = ["lan"]
source_networks = ["10.0.0.0/8"]
destination_networks = ["any"]
services = [{{ protocol = "icmp" }}]
action = "accept"
"#
        ))
        .unwrap();
        assert_eq!(p.rule_count(), 4);
        let mut f = web();
        f.vlan = Some(30);
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, Some(0));
        f.dst_port = 22;
        let d = p.evaluate(&f, Green, Unknown);
        assert_eq!((d.rule, d.action), (Some(1), RuleAction::Reject));
        assert_eq!(p.rule_name(1), Some("guest rest"));
        // Untagged LAN traffic is in `lan` but not in `guest`.
        let f = flow("10.1.2.3", "8.8.8.8", Protocol::ICMP, 0);
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, Some(3));
        let f = flow("11.1.2.3", "8.8.8.8", Protocol::ICMP, 0);
        assert_eq!(p.evaluate(&f, Green, Unknown).reason, DecisionReason::Default);
        assert_eq!(p.evaluate(&f, Green, Unknown).action, RuleAction::Drop);
        let f = flow("2001:db8::5", "2001:4860:4860::8888", Protocol::UDP, 53);
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, Some(2));
        let f = flow("2001:db8::5", "2001:4860:4860::8888", Protocol::TCP, 55);
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, Some(2));
        let mut f = flow("2001:db8::5", "2001:4860:4860::8888", Protocol::TCP, 55);
        f.src_port = 80;
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, None, "source port outside range");
        let f = flow("2001:db9::5", "2001:4860:4860::8888", Protocol::UDP, 53);
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, None);
        let f = flow("10.1.2.3", "2001:4860:4860::8888", Protocol::ICMPV6, 0);
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, Some(3), "icmp covers ICMPv6");
        let f = flow("::ffff:10.1.2.3", "2001:4860:4860::8888", Protocol::ICMPV6, 0);
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, None, "a v4 network never matches a v6 address");
        // WAN -> LAN is not in source zone `lan`.
        let mut f = flow("10.1.2.3", "8.8.8.8", Protocol::ICMP, 0);
        (f.ingress, f.egress) = (PortRole::Wan, PortRole::Lan);
        assert_eq!(p.evaluate(&f, Green, Unknown).rule, None);
    }

    #[test]
    fn empty_policy_uses_default() {
        let p = compile("").unwrap();
        assert_eq!(p.default_action(), RuleAction::Drop);
        assert_eq!(p.evaluate(&web(), Green, Green).reason, DecisionReason::Default);
        assert_eq!(CompiledPolicy::default().evaluate(&web(), Red, Red).action, RuleAction::Accept);
    }

    #[test]
    fn compile_errors_are_one_line_and_name_the_fix() {
        let rule = |body: &str| format!("{ZONES}\n[[rule]]\nname = \"r1\"\naction = \"accept\"\n{body}\n");
        let cases = [
            (rule("source_zones = [\"dmz\"]"), "rule `r1` names unknown zone `dmz`: define it with [[zone]] name = \"dmz\" or use one of: lan, guest, wan, any"),
            (rule("destination_zones = [\"lan\", \"dmz2\"]"), "unknown zone `dmz2`"),
            ("missing_heartbeat_zones = [\"x\"]".to_owned(), "missing_heartbeat_zones names unknown zone `x`: define it"),
            (rule("source_networks = [\"10.0.0.0/33\"]"), "rule `r1`: source_networks entry `10.0.0.0/33` is not an address or CIDR: write"),
            (rule("destination_networks = [\"10.0.0.1/8\"]"), "has host bits set: write the network address, 10.0.0.0/8"),
            (rule("services = [{ protocol = \"tcp\", ports = [\"443-80\"] }]"), "port range `443-80` is reversed: write it low-high, \"80-443\""),
            (rule("services = [{ protocol = \"tcp\", ports = [\"http\"] }]"), "port `http` is not a port or range"),
            (rule("services = [{ protocol = \"icmp\", ports = [1] }]"), "ports need protocol"),
            (format!("{ZONES}\n[[zone]]\nname = \"lan\"\nrole = \"wan\"\n"), "zone `lan`: is defined twice"),
            ("[[zone]]\nname = \"v\"\nrole = \"lan\"\nvlans = [5000]\n".to_owned(), "VLAN 5000 is out of range: use VLAN ids 1-4094"),
            (format!("{}{}", rule(""), "[[rule]]\nname = \"r1\"\naction = \"drop\"\n"), "rule `r1`: is defined twice"),
        ];
        for (text, expect) in cases {
            let err = compile(&text).unwrap_err();
            assert!(err.contains(expect), "{text}\n-> {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn parse_errors_name_line_and_key() {
        let err = compile("[[rule]]\nname = \"x\"\naction = \"accept\"\nmin_source_heartbeat = \"blue\"\n").unwrap_err();
        assert!(err.starts_with("policy.toml:4:"), "{err}");
        assert!(err.contains("rule[0].min_source_heartbeat"), "{err}");
        let err = compile("[[rule]]\nname = \"x\"\naction = \"accept\"\nblock_clients = true\n").unwrap_err();
        assert!(err.contains("unknown field `block_clients`"), "{err}");
        assert!(!err.contains('\n'));
    }
}

#[cfg(test)]
mod head_prefilter_tests {
    //! The rule heads are only a shortcut: with or without them, every flow
    //! must get the same decision. The reference walks every rule in full.
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn reference(p: &CompiledPolicy, flow: &FlowKey, src: EndpointHealth, dst: EndpointHealth) -> PolicyDecision {
        let src_zones = p.zone_mask(flow.ingress, flow.vlan);
        if src == EndpointHealth::Missing && (p.missing_zones == u64::MAX || src_zones & p.missing_zones != 0) {
            return PolicyDecision { rule: None, action: RuleAction::Drop, reason: DecisionReason::MissingHeartbeat };
        }
        let dst_zones = p.zone_mask(flow.egress, flow.vlan);
        for (i, rule) in p.rules.iter().enumerate() {
            if rule.matches(flow, src_zones, dst_zones) {
                return decide(i as u32, rule, src, dst);
            }
        }
        PolicyDecision { rule: None, action: p.default_action, reason: DecisionReason::Default }
    }

    fn rule_text(i: usize, nets: u8, proto: u8, lo: u16, span: u16) -> String {
        let nets = match nets % 8 {
            0 => "[]".to_owned(),
            1 => format!("[\"10.{}.0.0/16\"]", i % 4),
            2 => format!("[\"10.{}.0.0/16\", \"192.0.2.0/24\"]", i % 4),
            3 => "[\"2001:db8::/32\"]".to_owned(),
            // Single IPv4 networks of several lengths, so that flows land
            // on interval bounds of the candidate sets.
            4 => format!("[\"10.{}.1.{}/32\"]", i % 4, lo % 4),
            5 => format!("[\"10.{}.1.{}/30\"]", i % 4, (lo % 4) * 4),
            6 => "[\"0.0.0.0/0\"]".to_owned(),
            _ => format!("[\"192.0.2.{}/31\"]", (lo % 3) * 2),
        };
        let service = match proto % 5 {
            0 => String::new(),
            1 => format!("services = [{{ protocol = \"tcp\", ports = [\"{lo}-{}\"] }}]\n", lo.saturating_add(span)),
            2 => format!("services = [{{ protocol = \"udp\", ports = [{lo}] }}, {{ protocol = \"tcp\" }}]\n"),
            3 => "services = [{ protocol = \"icmp\" }]\n".to_owned(),
            _ => "services = [{ protocol = \"any\" }]\n".to_owned(),
        };
        let zones = ["[\"lan\"]", "[\"wan\"]", "[]", "[\"guest\"]", "[\"lan\", \"guest\"]"][(i + usize::from(span)) % 5];
        format!(
            "[[rule]]\nname = \"r{i}\"\nsource_zones = {zones}\ndestination_networks = {nets}\n{service}action = \"{}\"\n\n",
            if i % 2 == 0 { "accept" } else { "drop" }
        )
    }

    const ZONES_WITH_GUEST: &str = "default_action = \"drop\"\n[[zone]]\nname = \"lan\"\nrole = \"lan\"\n[[zone]]\nname = \"wan\"\nrole = \"wan\"\n[[zone]]\nname = \"guest\"\nrole = \"lan\"\nvlans = [30]\n\n";

    #[test]
    fn above_the_candidate_limit_the_head_walk_decides() {
        let mut text = String::from(ZONES_WITH_GUEST);
        let n = Candidates::MAX_RULES + 10;
        for i in 0..n {
            text.push_str(&rule_text(i, (i % 8) as u8, (i % 5) as u8, (i % 300) as u16, (i % 20) as u16));
        }
        let policy = Policy::parse(&text, Path::new("p.toml")).unwrap().compile().unwrap();
        assert!(policy.candidates.is_none());
        let mut ruled = 0;
        for port in 0..330u16 {
            for dst in ["10.1.1.2", "192.0.2.3", "2001:db8::3", "8.8.8.8"] {
                let flow = flow("10.9.9.9", dst, [Protocol::TCP, Protocol::UDP][usize::from(port % 2)], port);
                let d = policy.evaluate(&flow, EndpointHealth::Green, EndpointHealth::Green);
                assert_eq!(d, reference(&policy, &flow, EndpointHealth::Green, EndpointHealth::Green), "{flow:?}");
                ruled += usize::from(d.rule.is_some());
            }
        }
        assert!(ruled > 0);
    }

    fn flow(src: &str, dst: &str, protocol: u8, dst_port: u16) -> FlowKey {
        FlowKey {
            ingress: PortRole::Lan,
            egress: PortRole::Wan,
            vlan: None,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            src_port: 40000,
            dst_port,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn heads_never_change_a_decision(
            // Small port and address spaces, so flows land on rule boundaries.
            // Up to 150 rules: candidate sets of one to three words.
            rules in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u16..300, 0u16..20), 0..150),
            flows in proptest::collection::vec((any::<bool>(), 0u8..4, 0u8..8, 0u8..4, 0u16..330, any::<bool>(), any::<bool>()), 50),
        ) {
            let mut text = String::from(ZONES_WITH_GUEST);
            for (i, &(n, p, lo, span)) in rules.iter().enumerate() {
                text.push_str(&rule_text(i, n, p, lo, span));
            }
            let policy = Policy::parse(&text, Path::new("p.toml")).unwrap().compile().unwrap();
            prop_assert_eq!(policy.candidates.is_some(), !rules.is_empty());
            for &(lan, net, host, proto, port, v6, tagged) in &flows {
                let dst: IpAddr = if v6 {
                    format!("2001:db8::{host:x}").parse().unwrap()
                } else {
                    match net {
                        0..=2 => format!("10.{net}.1.{host}").parse().unwrap(),
                        _ => format!("192.0.2.{host}").parse().unwrap(),
                    }
                };
                let src: IpAddr = if v6 { "2001:db8::1".parse().unwrap() } else { "10.9.9.9".parse().unwrap() };
                let (ingress, egress) = if lan { (PortRole::Lan, PortRole::Wan) } else { (PortRole::Wan, PortRole::Lan) };
                let protocol = [Protocol::TCP, Protocol::UDP, Protocol::ICMP, 47][proto as usize];
                let vlan = tagged.then_some(30);
                let flow = FlowKey { ingress, egress, vlan, src, dst, protocol, src_port: 40000, dst_port: port };
                for h in [EndpointHealth::Green, EndpointHealth::Red, EndpointHealth::Unknown] {
                    prop_assert_eq!(policy.evaluate(&flow, h, h), reference(&policy, &flow, h, h), "{:?}", flow);
                }
            }
        }
    }
}
