//! The flow cache must never change a verdict or an event: two pipelines
//! over the same published state, one with a (deliberately small) flow cache
//! and one without, are fed the same random interleaving of frames and state
//! changes (health, endpoint bindings, policy, indicators, exclusions, feed
//! settings), and must agree on every verdict and every event.

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

#[derive(Debug, Clone)]
enum Op {
    /// A frame from host `src` to host `dst`: kind 0 TCP, 1 UDP, 2 DNS query,
    /// 3 TLS ClientHello, 4 HTTP request, 5 TCP in VLAN 7.
    Frame {
        src: usize,
        dst: usize,
        kind: u8,
        port: u16,
        wan: bool,
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
    /// The indicator set: these hosts' IPs, plus the domain `bad.example`.
    Indicators(Vec<usize>),
    Exclusions(Vec<usize>),
    LogOnly(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Few hosts and ports, so that flows repeat between state changes
        // and the cache answers (and any key field it ignored would show).
        16 => (0..3usize, prop_oneof![Just(1usize), Just(4), Just(5)], 0u8..6, 7u16..10, any::<bool>())
            .prop_map(|(src, dst, kind, port, wan)| Op::Frame { src, dst, kind, port, wan }),
        2 => (0..4usize, 0..HEALTHS.len()).prop_map(|(host, health)| Op::Health { host, health }),
        1 => (0..4usize, 0..HOSTS).prop_map(|(host, other)| Op::Rebind { host, other }),
        1 => (0..4usize).prop_map(|host| Op::Remove { host }),
        1 => (0..2usize).prop_map(Op::Policy),
        1 => proptest::collection::vec(0..HOSTS, 0..3).prop_map(Op::Indicators),
        1 => proptest::collection::vec(0..HOSTS, 0..2).prop_map(Op::Exclusions),
        1 => any::<bool>().prop_map(Op::LogOnly),
    ]
}

fn frame(src: usize, dst: usize, kind: u8, port: u16) -> Vec<u8> {
    let (sm, dm, si, di) = (mac(src), mac(dst), ip(src), ip(dst));
    match kind {
        0 => tcp(sm, dm, si, di, 40000, port, b""),
        1 => udp(sm, dm, si, di, 40000, port, b"x"),
        2 => udp(sm, dm, si, di, 40001, 53, &dns_query(if port == 7 { "www.bad.example" } else { "good.example" })),
        3 => tcp(sm, dm, si, di, 40002, 443, &client_hello(if port == 8 { "bad.example" } else { "ok.example" })),
        4 => tcp(sm, dm, si, di, 40003, 80, &http_get(if port == 9 { "bad.example" } else { "ok.example" }, "/")),
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
}

impl Bed {
    fn new(cache_entries: usize) -> Bed {
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
        let config = |entries| EnforcementConfig { flow_cache_entries: entries, ..Default::default() };
        let cached = Standalone::new(&state, config(cache_entries), ports(), 0);
        let plain = Standalone::new(&state, config(0), ports(), 0);
        Bed {
            state,
            writer,
            cached,
            plain,
            settings: ThreatFeedSettings::default(),
            indicators: vec![],
            exclusions: vec![],
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
        feed.push(ThreatIndicator { kind: "bad.example".parse().unwrap(), audit_id: "DOM".into(), feed: "mdr".into() });
        let exclusions: Vec<ThreatExclusion> = self
            .exclusions
            .iter()
            .map(|h| {
                let [a, b, c, d] = ip(*h);
                format!("{a}.{b}.{c}.{d}").parse().unwrap()
            })
            .collect();
        self.state.set_indicators(IndicatorSet::build(&feed, &exclusions, &self.settings).unwrap());
    }

    /// Applies `op`; for a frame, checks both pipelines agree.
    fn apply(&mut self, op: &Op, now: &mut u64) -> Result<(), TestCaseError> {
        match op {
            Op::Frame { src, dst, kind, port, wan } => {
                let f = frame(*src, *dst, *kind, *port);
                *now += 1000;
                let slot = usize::from(*wan);
                self.cached.pipeline.begin_burst(*now);
                self.plain.pipeline.begin_burst(*now);
                let a = self.cached.pipeline.verdict(&f, slot);
                let b = self.plain.pipeline.verdict(&f, slot);
                prop_assert_eq!(a, b, "verdict of {:?}", op);
                let ea: Vec<WorkerEvent> = self.cached.events.try_iter().collect();
                let eb: Vec<WorkerEvent> = self.plain.events.try_iter().collect();
                prop_assert_eq!(ea, eb, "events of {:?}", op);
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
    fn cached_and_uncached_pipelines_agree(ops in proptest::collection::vec(op(), 1..200), entries in prop_oneof![Just(2usize), Just(8), Just(1024)]) {
        let mut bed = Bed::new(entries);
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
    let mut bed = Bed::new(1024);
    bed.state.set_policy(policy(1));
    let f = frame(0, 1, 0, 7); // host 0 (green) -> host 1, TCP 7: needs source >= yellow
    let mut now = 0;
    for _ in 0..10 {
        bed.apply(&Op::Frame { src: 0, dst: 1, kind: 0, port: 7, wan: false }, &mut now).unwrap();
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
    let mut bed = Bed::new(1024);
    let f = frame(0, 5, 0, 7);
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
