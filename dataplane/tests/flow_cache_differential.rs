//! The flow cache and the quiet-hint cache must never change a verdict or an
//! event: two pipelines over the same published state, one with
//! (deliberately small) caches and one without, are fed the same random
//! interleaving of frames and state changes (health, endpoint bindings,
//! policy, indicators by address, domain and URL, exclusions, feed
//! settings), and must agree on every verdict and every event. Frames repeat
//! application hints (DNS names, TLS server names, HTTP hosts and paths) in
//! other letter cases, under and beside listed domains, and too long for the
//! hint cache, so that a remembered "no match" that a state change or a case
//! or path difference should overturn would show.

mod common;
use common::*;
use hbgw_dataplane::enforce::{EnforcementConfig, PortContext};
use hbgw_dataplane::events::WorkerEvent;
use hbgw_dataplane::pipeline::Standalone;
use hbgw_dataplane::verdict::{DropReason, Verdict};
use hbgw_shared::endpoint::{Endpoint, EndpointHealth, EndpointId, EndpointInterface, EndpointTableWriter, MacAddr};
use hbgw_shared::indicators::{FeedAction, IndicatorSet, ThreatExclusion, ThreatFeedSettings, ThreatIndicator};
use hbgw_shared::policy::{CompiledPolicy, Policy, PortRole};
use hbgw_shared::state::GatewayState;
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

const HOSTS: usize = 8;
const HEALTHS: [EndpointHealth; 5] = [
    EndpointHealth::Green,
    EndpointHealth::Yellow,
    EndpointHealth::Red,
    EndpointHealth::Missing,
    EndpointHealth::NoHeartbeat,
];

fn mac(h: usize) -> Mac {
    [0x02, 0, 0, 0, 0, h as u8 + 1]
}

fn ip(h: usize) -> [u8; 4] {
    // Hosts 0..4 on the LAN, 4..8 "on the internet".
    if h < 4 {
        [10, 0, 0, h as u8 + 1]
    } else {
        [198, 51, 100, h as u8]
    }
}

const POLICIES: [&str; 2] = [
    r#"
default_action = "drop"
missing_heartbeat_zones = ["lan"]
[[zone]]
name = "lan"
role = "lan"
[[zone]]
name = "wan"
role = "wan"
[[zone]]
name = "guest"
role = "lan"
vlans = [7]
[[rule]]
name = "no guests"
source_zones = ["guest"]
action = "drop"
[[rule]]
name = "no tcp 8 in from the internet"
source_zones = ["wan"]
services = [{ protocol = "tcp", ports = [8] }]
action = "reject"
[[rule]]
name = "lan out, green only"
source_zones = ["lan"]
action = "accept"
min_source_heartbeat = "green"
block_clients_without_heartbeat = true
[[rule]]
name = "replies"
source_zones = ["wan"]
action = "accept"
min_destination_heartbeat = "yellow"
"#,
    r#"
default_action = "accept"
[[rule]]
name = "no udp 9"
services = [{ protocol = "udp", ports = [9] }]
action = "drop"
[[rule]]
name = "tcp 7 needs a heartbeat"
services = [{ protocol = "tcp", ports = [7] }]
action = "accept"
block_destinations_without_heartbeat = true
min_source_heartbeat = "yellow"
"#,
];

fn policy(i: usize) -> CompiledPolicy {
    Policy::parse(POLICIES[i], Path::new("p.toml")).unwrap().compile().unwrap()
}

/// Names that DNS queries, TLS server names and HTTP hosts ask for: listed
/// or not, in other cases, under a listed domain, as long as a hint cache
/// entry holds and longer.
const NAMES: [&str; 9] = [
    "good.example",
    "GOOD.Example",
    "www.bad.example",
    "ok.example",
    "Ok.Example",
    "x.ok.example",
    "a-name-longer-than-a-quiet-hint-cache-entry-holds.bad.example",
    // As long as an entry holds (56 bytes in DNS wire form), one listed and
    // one not, different in their last byte only.
    "a-name-that-fills-a-hint-cache-entry-whole.bad.example",
    "a-name-that-fills-a-hint-cache-entry-whole.bad.exampla",
];

/// Paths of HTTP requests (URL indicators match them case-sensitively).
const PATHS: [&str; 4] = ["/", "/bad", "/BAD", "/bad/more"];

/// Domain and URL indicators a state may list (by position).
const NAME_INDICATORS: [&str; 5] =
    ["bad.example", "good.example", "http://ok.example/bad", "x.ok.example", "http://good.example/"];

/// Domain and URL exclusions a state may list (by position).
const NAME_EXCLUSIONS: [&str; 3] = ["ok.example", "http://ok.example/bad/more", "www.bad.example"];

#[derive(Debug, Clone)]
enum Op {
    /// A frame from host `src` to host `dst`: kind 0 TCP, 1 UDP, 2 DNS query
    /// (UDP to port 53), 3 TLS ClientHello, 4 HTTP request, 5 TCP in VLAN 7;
    /// hints ask for `NAMES[name]` (HTTP: at `PATHS[path]`).
    Frame {
        src: usize,
        dst: usize,
        kind: u8,
        port: u16,
        wan: bool,
        name: usize,
        path: usize,
    },
    Health {
        host: usize,
        health: usize,
    },
    /// Endpoint `host` now also claims host `other`'s IP (or gives it back).
    Rebind {
        host: usize,
        other: usize,
    },
    Remove {
        host: usize,
    },
    Policy(usize),
    /// Frames on one flow from host `src` to host `dst`, one after the
    /// other: UDP to port 53 or TCP to `port`, each `(hint, which name,
    /// which path)`: hint 0 none, 1 a DNS query (UDP) or TLS ClientHello
    /// (TCP), 2 an HTTP request (TCP), for one of the burst's two `names`
    /// (of `NAMES`) at one of its two `paths` (of `PATHS`). So that a flow's
    /// cached verdict meets the same hints, and hints that differ in a
    /// letter's case or a path, again and again.
    Burst {
        src: usize,
        dst: usize,
        wan: bool,
        udp: bool,
        port: u16,
        names: [usize; 2],
        paths: [usize; 2],
        frames: Vec<(u8, usize, usize)>,
    },
    /// The indicator set: these hosts' IPs.
    Indicators(Vec<usize>),
    Exclusions(Vec<usize>),
    /// The domain and URL indicators: these of `NAME_INDICATORS`.
    NameIndicators(Vec<usize>),
    /// The domain and URL exclusions: these of `NAME_EXCLUSIONS`.
    NameExclusions(Vec<usize>),
    LogOnly(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Few hosts and ports, so that flows repeat between state changes
        // and the cache answers (and any key field it ignored would show).
        16 => (
            (
                0..3usize,
                prop_oneof![Just(1usize), Just(4), Just(5)],
                0u8..6,
                prop_oneof![7u16..10, Just(53)],
                any::<bool>(),
            ),
            (0..NAMES.len(), 0..PATHS.len()),
        )
            .prop_map(|((src, dst, kind, port, wan), (name, path))| {
                Op::Frame { src, dst, kind, port, wan, name, path }
            }),
        8 => (
            (0..3usize, prop_oneof![Just(1usize), Just(4), Just(5)], any::<bool>(), any::<bool>(), 7u16..10),
            ([0..NAMES.len(), 0..NAMES.len()], [0..PATHS.len(), 0..PATHS.len()]),
            proptest::collection::vec((0u8..3, 0..2usize, 0..2usize), 2..8),
        )
            .prop_map(|((src, dst, wan, udp, port), (names, paths), frames)| Op::Burst {
                src,
                dst,
                wan,
                udp,
                port,
                names,
                paths,
                frames,
            }),
        2 => (0..4usize, 0..HEALTHS.len()).prop_map(|(host, health)| Op::Health { host, health }),
        1 => (0..4usize, 0..HOSTS).prop_map(|(host, other)| Op::Rebind { host, other }),
        1 => (0..4usize).prop_map(|host| Op::Remove { host }),
        1 => (0..2usize).prop_map(Op::Policy),
        1 => proptest::collection::vec(0..HOSTS, 0..3).prop_map(Op::Indicators),
        1 => proptest::collection::vec(0..HOSTS, 0..2).prop_map(Op::Exclusions),
        1 => proptest::collection::vec(0..NAME_INDICATORS.len(), 0..3).prop_map(Op::NameIndicators),
        1 => proptest::collection::vec(0..NAME_EXCLUSIONS.len(), 0..2).prop_map(Op::NameExclusions),
        1 => any::<bool>().prop_map(Op::LogOnly),
    ]
}

fn frame(src: usize, dst: usize, kind: u8, port: u16, name: &str, path: &str) -> Vec<u8> {
    let (sm, dm, si, di) = (mac(src), mac(dst), ip(src), ip(dst));
    match kind {
        0 => tcp(sm, dm, si, di, 40000, port, b""),
        1 => udp(sm, dm, si, di, 40000, port, b"x"),
        // Hints on the same flows as the plain frames above (same ports),
        // so that a flow's cached verdict meets its hints.
        2 => udp(sm, dm, si, di, 40000, 53, &dns_query(name)),
        3 => tcp(sm, dm, si, di, 40000, port, &client_hello(name)),
        4 => tcp(sm, dm, si, di, 40000, port, &http_get(name, path)),
        _ => vlan_tcp(sm, dm, 7, si, di, port),
    }
}

fn endpoint(host: usize, extra_ip: Option<usize>, health: EndpointHealth) -> Endpoint {
    let mut ips = vec![ip(host).into()];
    ips.extend(extra_ip.map(|o| std::net::IpAddr::from(ip(o))));
    Endpoint {
        id: EndpointId(host as u64 + 1),
        interfaces: vec![EndpointInterface { mac: MacAddr(mac(host)), ips }],
        health,
    }
}

struct Bed {
    state: Arc<GatewayState>,
    writer: EndpointTableWriter,
    cached: Standalone,
    plain: Standalone,
    settings: ThreatFeedSettings,
    indicators: Vec<usize>,
    exclusions: Vec<usize>,
    name_indicators: Vec<usize>,
    name_exclusions: Vec<usize>,
}

impl Bed {
    /// A flow cache of `cache_entries` and a quiet-hint cache of
    /// `hint_entries` against no caches at all.
    fn new(cache_entries: usize, hint_entries: usize) -> Bed {
        let (state, mut writer) = GatewayState::new(policy(0), IndicatorSet::empty());
        for (h, health) in HEALTHS.iter().enumerate().take(4) {
            writer.upsert(endpoint(h, None, *health));
        }
        let ports = || {
            vec![
                PortContext { role: PortRole::Lan, peer_role: PortRole::Wan },
                PortContext { role: PortRole::Wan, peer_role: PortRole::Lan },
            ]
        };
        let config = |flows, hints| EnforcementConfig {
            flow_cache_entries: flows,
            hint_cache_entries: hints,
            ..Default::default()
        };
        let cached = Standalone::new(&state, config(cache_entries, hint_entries), ports(), 0);
        let plain = Standalone::new(&state, config(0, 0), ports(), 0);
        Bed {
            state,
            writer,
            cached,
            plain,
            settings: ThreatFeedSettings::default(),
            indicators: vec![],
            exclusions: vec![],
            // Listed from the first publication on: bad.example.
            name_indicators: vec![0],
            name_exclusions: vec![],
        }
    }

    fn publish_indicators(&self) {
        let mut feed: Vec<ThreatIndicator> = self
            .indicators
            .iter()
            .map(|h| {
                let [a, b, c, d] = ip(*h);
                ThreatIndicator {
                    kind: format!("{a}.{b}.{c}.{d}").parse().unwrap(),
                    audit_id: format!("IP-{h}").as_str().into(),
                    feed: "mdr".into(),
                }
            })
            .collect();
        feed.extend(self.name_indicators.iter().map(|&i| ThreatIndicator {
            kind: NAME_INDICATORS[i].parse().unwrap(),
            audit_id: format!("NAME-{i}").as_str().into(),
            feed: "mdr".into(),
        }));
        let mut exclusions: Vec<ThreatExclusion> = self
            .exclusions
            .iter()
            .map(|h| {
                let [a, b, c, d] = ip(*h);
                format!("{a}.{b}.{c}.{d}").parse().unwrap()
            })
            .collect();
        exclusions.extend(self.name_exclusions.iter().map(|&i| NAME_EXCLUSIONS[i].parse::<ThreatExclusion>().unwrap()));
        self.state.set_indicators(IndicatorSet::build(&feed, &exclusions, &self.settings).unwrap());
    }

    /// Feeds `f` to both pipelines; checks they agree on its verdict and events.
    fn compare(
        &mut self,
        f: &[u8],
        slot: usize,
        now: &mut u64,
        what: &dyn std::fmt::Debug,
    ) -> Result<(), TestCaseError> {
        *now += 1000;
        self.cached.pipeline.begin_burst(*now);
        self.plain.pipeline.begin_burst(*now);
        let a = self.cached.pipeline.verdict(f, slot);
        let b = self.plain.pipeline.verdict(f, slot);
        prop_assert_eq!(a, b, "verdict of {:?}", what);
        let ea: Vec<WorkerEvent> = self.cached.events.try_iter().collect();
        let eb: Vec<WorkerEvent> = self.plain.events.try_iter().collect();
        prop_assert_eq!(ea, eb, "events of {:?}", what);
        Ok(())
    }

    /// Applies `op`; for frames, checks both pipelines agree.
    fn apply(&mut self, op: &Op, now: &mut u64) -> Result<(), TestCaseError> {
        match op {
            Op::Frame { src, dst, kind, port, wan, name, path } => {
                let f = frame(*src, *dst, *kind, *port, NAMES[*name], PATHS[*path]);
                self.compare(&f, usize::from(*wan), now, op)?;
            }
            Op::Burst { src, dst, wan, udp, port, names, paths, frames } => {
                for (i, &(hint, name, path)) in frames.iter().enumerate() {
                    let (name, path) = (names[name], paths[path]);
                    let kind = match (udp, hint) {
                        (true, 0) => 1,
                        (true, _) => 2,
                        (false, 0) => 0,
                        (false, 1) => 3,
                        (false, _) => 4,
                    };
                    let port = if *udp { 53 } else { *port };
                    let f = frame(*src, *dst, kind, port, NAMES[name], PATHS[path]);
                    self.compare(&f, usize::from(*wan), now, &format!("frame {i} of {op:?}"))?;
                }
            }
            Op::Health { host, health } => {
                let _ = self.writer.set_health(EndpointId(*host as u64 + 1), HEALTHS[*health]);
            }
            Op::Rebind { host, other } => {
                let health = self.writer.get(EndpointId(*host as u64 + 1)).map_or(EndpointHealth::Green, |e| e.health);
                self.writer.upsert(endpoint(*host, (other != host).then_some(*other), health));
            }
            Op::Remove { host } => {
                let _ = self.writer.remove(EndpointId(*host as u64 + 1));
            }
            Op::Policy(i) => self.state.set_policy(policy(*i)),
            Op::Indicators(hosts) => {
                self.indicators = hosts.clone();
                self.publish_indicators();
            }
            Op::Exclusions(hosts) => {
                self.exclusions = hosts.clone();
                self.publish_indicators();
            }
            Op::NameIndicators(names) => {
                self.name_indicators = names.clone();
                self.publish_indicators();
            }
            Op::NameExclusions(names) => {
                self.name_exclusions = names.clone();
                self.publish_indicators();
            }
            Op::LogOnly(on) => {
                self.settings.action = if *on { FeedAction::LogOnly } else { FeedAction::LogAndDrop };
                self.state.set_feed_settings(&self.settings);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cached_and_uncached_pipelines_agree(
        ops in proptest::collection::vec(op(), 1..200),
        entries in prop_oneof![Just(2usize), Just(8), Just(1024)],
        hint_entries in prop_oneof![Just(0usize), Just(2), Just(8), Just(1024)],
    ) {
        let mut bed = Bed::new(entries, hint_entries);
        let mut now = 0;
        for op in &ops {
            bed.apply(op, &mut now)?;
        }
    }
}

/// The cache answers repeated frames, and one health store still changes
/// the very next frame's verdict.
#[test]
fn a_health_change_overrides_a_cached_verdict_on_the_next_frame() {
    let mut bed = Bed::new(1024, 1024);
    bed.state.set_policy(policy(1));
    let f = frame(0, 1, 0, 7, "", ""); // host 0 (green) -> host 1, TCP 7: needs source >= yellow
    let mut now = 0;
    for _ in 0..10 {
        bed.apply(&Op::Frame { src: 0, dst: 1, kind: 0, port: 7, wan: false, name: 0, path: 0 }, &mut now).unwrap();
    }
    bed.cached.pipeline.housekeeping();
    let misc = &bed.cached.counters.misc;
    let hits = misc.flow_cache_hits.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((hits, misc.flow_cache_misses.load(std::sync::atomic::Ordering::Relaxed)), (9, 1));
    assert_eq!(bed.cached.pipeline.verdict(&f, 0), Verdict::Forward);

    bed.writer.set_health(EndpointId(1), EndpointHealth::Red).unwrap();
    let v = bed.cached.pipeline.verdict(&f, 0);
    assert!(matches!(v, Verdict::Drop(DropReason::LateralMovement | DropReason::SourceHeartbeat)), "{v:?}");
    // Back to green: forwarded again on the next frame.
    bed.writer.set_health(EndpointId(1), EndpointHealth::Green).unwrap();
    assert_eq!(bed.cached.pipeline.verdict(&f, 0), Verdict::Forward);
}

/// Frames from a cached flow still count as seen traffic for the
/// missing-heartbeat timers, once per flush period.
#[test]
fn cached_frames_still_report_their_source_mac_every_period() {
    let mut bed = Bed::new(1024, 1024);
    let f = frame(0, 5, 0, 7, "", "");
    for period in 0..3 {
        for _ in 0..5 {
            bed.cached.pipeline.verdict(&f, 0);
        }
        bed.cached.pipeline.housekeeping();
        let report = bed.cached.seen_macs.reports.try_recv().unwrap_or_else(|_| panic!("a report in period {period}"));
        assert_eq!(report.macs.len(), 1);
        assert_eq!(report.macs[0].mac(), mac(0));
        bed.cached.seen_macs.spares[0].send(report.macs).unwrap();
    }
}

/// The quiet-hint cache answers the repeated hint of a cached flow (in any
/// letter case), and a domain listed since drops the very next frame that
/// asks for it.
#[test]
fn a_newly_listed_domain_overrides_a_remembered_quiet_hint() {
    let mut bed = Bed::new(1024, 1024);
    let mut now = 0;
    // Host 0 (green, LAN) asks for good.example, then GOOD.Example.
    for name in [0, 0, 0, 0, 0, 1, 1, 1, 1, 1] {
        bed.apply(&Op::Frame { src: 0, dst: 5, kind: 2, port: 53, wan: false, name, path: 0 }, &mut now).unwrap();
    }
    let f = frame(0, 5, 2, 53, NAMES[1], "/");
    assert_eq!(bed.cached.pipeline.verdict(&f, 0), Verdict::Forward);
    bed.cached.pipeline.housekeeping();
    let misc = &bed.cached.counters.misc;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // The first frame is decided in full; the second is the flow's first
    // hit and looks its hint up; the other nine find it quiet.
    assert_eq!((load(&misc.flow_cache_hits), load(&misc.flow_cache_misses)), (10, 1));
    assert_eq!((load(&misc.hint_cache_hits), load(&misc.hint_cache_misses)), (9, 1));

    bed.apply(&Op::NameIndicators(vec![1]), &mut now).unwrap(); // good.example listed
    assert_eq!(bed.cached.pipeline.verdict(&f, 0), Verdict::Drop(DropReason::ThreatIndicator));
    let event = bed.cached.events.try_recv().expect("the hit is logged");
    assert_eq!(event.matched.as_bytes(), b"good.example");
}
