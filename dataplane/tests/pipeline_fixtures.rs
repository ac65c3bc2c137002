//! The fixture table: {description, frame bytes, expected verdict} run
//! through the pure pipeline (parse -> enforce), against one published state:
//! a policy with every heartbeat option, a threat feed with every indicator
//! kind, exclusions, and endpoints of every health.
//!
//! Each row's frame is built by the helpers in `common/` (etherparse for
//! L2-L4, hand-written DNS/TLS/HTTP payloads); the comment names the case.

mod common;
use common::*;
use hbgw_dataplane::enforce::{EnforcementConfig, LateralMovement, MalformedAction, PortContext};
use hbgw_dataplane::events::{EventKind, ThreatModule, WorkerEvent};
use hbgw_dataplane::pipeline::{Pipeline, Standalone};
use hbgw_dataplane::verdict::{DropReason, Verdict};
use hbgw_dataplane::counters::WorkerCounters;
use hbgw_shared::endpoint::{Endpoint, EndpointHealth, EndpointId, EndpointInterface, MacAddr};
use hbgw_shared::indicators::{FeedAction, FeedSettings, IndicatorSet, ThreatFeedSettings, ThreatIndicator};
use hbgw_shared::policy::{Policy, PortRole};
use hbgw_shared::state::GatewayState;
use std::path::Path;
use std::sync::Arc;

const LAN: usize = 0;
const WAN: usize = 1;
const GW_MAC: Mac = [0x02, 0xee, 0, 0, 0, 1];

// Endpoints on the LAN (MAC, IP, health).
const GREEN: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 0, 0x01], [10, 0, 0, 1]);
const YELLOW: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 0, 0x02], [10, 0, 0, 2]);
const RED: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 0, 0x03], [10, 0, 0, 3]);
const MISSING: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 0, 0x04], [10, 0, 0, 4]);
const NOHB: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 0, 0x05], [10, 0, 0, 5]);
const UNMANAGED: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 0, 0x06], [10, 0, 0, 6]);
// A managed server on the WAN side (destination-heartbeat rules).
const SERVER_GREEN: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 1, 0x01], [10, 20, 0, 1]);
const SERVER_RED: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 1, 0x02], [10, 20, 0, 2]);
const SERVER_NOHB: (Mac, [u8; 4]) = ([0x02, 0, 0, 0, 1, 0x03], [10, 20, 0, 3]);
const INTERNET: [u8; 4] = [203, 0, 113, 80];
const EVIL_IP: [u8; 4] = [198, 51, 100, 66];
const EXCLUDED_IP: [u8; 4] = [198, 51, 100, 77];
const LOGONLY_IP: [u8; 4] = [192, 0, 2, 99];

const POLICY: &str = r#"
default_action = "drop"
missing_heartbeat_zones = ["lan"]

[[zone]]
name = "lan"
role = "lan"

[[zone]]
name = "wan"
role = "wan"

[[rule]]
name = "lan to servers: destination must be green"
source_zones = ["lan"]
destination_zones = ["wan"]
destination_networks = ["10.20.0.0/16"]
action = "accept"
min_destination_heartbeat = "green"
block_destinations_without_heartbeat = true

[[rule]]
name = "lan to internet: green only, no unmanaged"
source_zones = ["lan"]
destination_zones = ["wan"]
action = "accept"
min_source_heartbeat = "green"
block_clients_without_heartbeat = true

[[rule]]
name = "replies from the internet"
source_zones = ["wan"]
destination_zones = ["lan"]
action = "accept"
"#;

fn state() -> Arc<GatewayState> {
    let policy = Policy::parse(POLICY, Path::new("policy.toml")).unwrap().compile().unwrap();
    let ind = |v: &str, audit: &str, feed: &str| ThreatIndicator { kind: v.parse().unwrap(), audit_id: audit.into(), feed: feed.into() };
    let feed = [
        ind("198.51.100.66", "MDR-IP-1", "mdr"),
        ind("198.51.100.64/28", "MDR-NET-1", "mdr"),
        ind("malware.example", "MDR-DOM-1", "mdr"),
        ind("c2.example.net", "MDR-SNI-1", "mdr"),
        ind("http://downloads.example.org/payload", "MDR-URL-1", "mdr"),
        ind("192.0.2.99", "WATCH-1", "watch"),
        ind("watched.example", "WATCH-2", "watch"),
    ];
    let mut settings = ThreatFeedSettings::default();
    settings.feeds.insert("watch".into(), FeedSettings { enabled: true, action: FeedAction::LogOnly });
    let exclusions = ["198.51.100.77".parse().unwrap(), "safe.malware.example".parse().unwrap()];
    let set = IndicatorSet::build(&feed, &exclusions, &settings).unwrap();
    let (state, mut writer) = GatewayState::new(policy, set);
    let eps = [
        (1, GREEN, EndpointHealth::Green),
        (2, YELLOW, EndpointHealth::Yellow),
        (3, RED, EndpointHealth::Red),
        (4, MISSING, EndpointHealth::Missing),
        (5, NOHB, EndpointHealth::NoHeartbeat),
        (11, SERVER_GREEN, EndpointHealth::Green),
        (12, SERVER_RED, EndpointHealth::Red),
        (13, SERVER_NOHB, EndpointHealth::NoHeartbeat),
    ];
    for (id, (mac, ip), health) in eps {
        writer.upsert(Endpoint {
            id: EndpointId(id),
            interfaces: vec![EndpointInterface { mac: MacAddr(mac), ips: vec![ip.into()] }],
            health,
        });
    }
    // The writer must outlive the test: health lives in its slots.
    std::mem::forget(writer);
    state
}

struct Bed {
    pipeline: Pipeline,
    events: crossbeam_channel::Receiver<WorkerEvent>,
    counters: Arc<WorkerCounters>,
}

/// An enforcing pipeline over `state` on a LAN/WAN pair (the gate folds
/// nothing: window 0).
fn enforcing(state: &GatewayState, config: EnforcementConfig) -> Standalone {
    let ports = vec![
        PortContext { role: PortRole::Lan, peer_role: PortRole::Wan },
        PortContext { role: PortRole::Wan, peer_role: PortRole::Lan },
    ];
    Standalone::new(state, config, ports, 0)
}

fn bed(config: EnforcementConfig) -> Bed {
    let s = enforcing(&state(), config);
    Bed { pipeline: s.pipeline, events: s.events, counters: s.counters }
}

fn config() -> EnforcementConfig {
    EnforcementConfig {
        gateway_ips: vec!["10.0.0.254".parse().unwrap()],
        ..Default::default()
    }
}

struct Row {
    what: &'static str,
    ingress: usize,
    frame: Vec<u8>,
    expect: Verdict,
}

fn out(ep: (Mac, [u8; 4]), dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp(ep.0, GW_MAC, ep.1, dst, 40000, dport, payload)
}

fn rows() -> Vec<Row> {
    use DropReason::*;
    let d = Verdict::Drop;
    let fwd = Verdict::Forward;
    vec![
        // --- heartbeat: minimum source heartbeat green, block clients without heartbeat
        Row { what: "green source to the internet", ingress: LAN, frame: out(GREEN, INTERNET, 443, b""), expect: fwd },
        Row { what: "yellow source blocked by min source green", ingress: LAN, frame: out(YELLOW, INTERNET, 443, b""), expect: d(SourceHeartbeat) },
        Row { what: "red source blocked by min source green", ingress: LAN, frame: out(RED, INTERNET, 443, b""), expect: d(SourceHeartbeat) },
        Row { what: "no-heartbeat client blocked", ingress: LAN, frame: out(NOHB, INTERNET, 443, b""), expect: d(SourceWithoutHeartbeat) },
        Row { what: "unmanaged client (never seen) blocked", ingress: LAN, frame: out(UNMANAGED, INTERNET, 443, b""), expect: d(SourceWithoutHeartbeat) },
        // --- missing heartbeat zone (lan) blocks everything from a Missing endpoint
        Row { what: "missing endpoint blocked in the lan zone", ingress: LAN, frame: out(MISSING, INTERNET, 443, b""), expect: d(MissingHeartbeat) },
        // --- destination heartbeat
        Row { what: "to a green server", ingress: LAN, frame: out(GREEN, SERVER_GREEN.1, 445, b""), expect: fwd },
        Row { what: "to a red server: below min destination green (lateral movement first)", ingress: LAN, frame: out(GREEN, SERVER_RED.1, 445, b""), expect: d(LateralMovement) },
        Row { what: "to a server without heartbeat", ingress: LAN, frame: out(GREEN, SERVER_NOHB.1, 445, b""), expect: d(DestinationWithoutHeartbeat) },
        // --- replies from the internet: accepted by the wan->lan rule
        Row { what: "reply to a green endpoint", ingress: WAN, frame: tcp([2, 9, 9, 9, 9, 9], GREEN.0, INTERNET, GREEN.1, 443, 40000, b""), expect: fwd },
        // --- MDR indicators, both directions, every module
        Row { what: "to an IPv4 indicator", ingress: LAN, frame: out(GREEN, EVIL_IP, 443, b""), expect: d(ThreatIndicator) },
        Row { what: "from an IPv4 indicator (inbound)", ingress: WAN, frame: tcp([2, 9, 9, 9, 9, 9], GREEN.0, EVIL_IP, GREEN.1, 443, 40000, b""), expect: d(ThreatIndicator) },
        Row { what: "to an address in an indicator CIDR", ingress: LAN, frame: out(GREEN, [198, 51, 100, 70], 80, b""), expect: d(ThreatIndicator) },
        Row { what: "excluded address inside the indicator CIDR passes", ingress: LAN, frame: out(GREEN, EXCLUDED_IP, 443, b""), expect: fwd },
        Row { what: "DNS/UDP query for a listed domain", ingress: LAN, frame: udp(GREEN.0, GW_MAC, GREEN.1, INTERNET, 5353, 53, &dns_query("malware.example")), expect: d(ThreatIndicator) },
        Row { what: "DNS/UDP query for a subdomain of a listed domain", ingress: LAN, frame: udp(GREEN.0, GW_MAC, GREEN.1, INTERNET, 5353, 53, &dns_query("cdn.MALWARE.example")), expect: d(ThreatIndicator) },
        Row { what: "DNS/TCP query for a listed domain", ingress: LAN, frame: out(GREEN, INTERNET, 53, &dns_query_tcp("malware.example")), expect: d(ThreatIndicator) },
        Row { what: "DNS query for an unlisted sibling", ingress: LAN, frame: udp(GREEN.0, GW_MAC, GREEN.1, INTERNET, 5353, 53, &dns_query("notmalware.example")), expect: fwd },
        Row { what: "DNS query for an excluded subdomain", ingress: LAN, frame: udp(GREEN.0, GW_MAC, GREEN.1, INTERNET, 5353, 53, &dns_query("safe.malware.example")), expect: fwd },
        Row { what: "TLS ClientHello with a listed SNI (any port)", ingress: LAN, frame: out(GREEN, INTERNET, 8443, &client_hello("c2.example.net")), expect: d(ThreatIndicator) },
        Row { what: "TLS ClientHello with an unlisted SNI", ingress: LAN, frame: out(GREEN, INTERNET, 443, &client_hello("www.example.net")), expect: fwd },
        Row { what: "HTTP request to a listed URL", ingress: LAN, frame: out(GREEN, INTERNET, 80, &http_get("downloads.example.org", "/payload/x.exe")), expect: d(ThreatIndicator) },
        Row { what: "HTTP request to another path on that host", ingress: LAN, frame: out(GREEN, INTERNET, 80, &http_get("downloads.example.org", "/docs")), expect: fwd },
        Row { what: "HTTP request to a listed domain", ingress: LAN, frame: out(GREEN, INTERNET, 80, &http_get("www.malware.example", "/")), expect: d(ThreatIndicator) },
        // --- log only: logged, forwarded
        Row { what: "log-only IP indicator forwards", ingress: LAN, frame: out(GREEN, LOGONLY_IP, 443, b""), expect: fwd },
        Row { what: "log-only domain indicator forwards", ingress: LAN, frame: udp(GREEN.0, GW_MAC, GREEN.1, INTERNET, 5353, 53, &dns_query("watched.example")), expect: fwd },
        // --- indicators come before heartbeat: a red endpoint to a listed IP is an indicator drop
        Row { what: "indicator drop wins over heartbeat", ingress: LAN, frame: out(RED, EVIL_IP, 443, b""), expect: d(ThreatIndicator) },
        // --- lateral movement between known endpoints
        Row { what: "green to red endpoint: lateral movement", ingress: LAN, frame: out(GREEN, RED.1, 445, b""), expect: d(LateralMovement) },
        Row { what: "red server to green endpoint: lateral movement", ingress: WAN, frame: tcp(SERVER_RED.0, GREEN.0, SERVER_RED.1, GREEN.1, 445, 40000, b""), expect: d(LateralMovement) },
        // --- exception path, non-IP, malformed
        Row { what: "to the gateway's own address: punted", ingress: LAN, frame: out(GREEN, [10, 0, 0, 254], 8347, b""), expect: Verdict::Punt },
        Row { what: "IPv6 from an unmanaged client: blocked", ingress: LAN, frame: tcp6(UNMANAGED.0, GW_MAC, [0xfd; 16], [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 40000, 443), expect: d(SourceWithoutHeartbeat) },
        Row { what: "VLAN-tagged green client", ingress: LAN, frame: vlan_udp(GREEN.0, GW_MAC, 10, GREEN.1, INTERNET, 123), expect: fwd },
        Row { what: "truncated IPv4 header: malformed", ingress: LAN, frame: out(GREEN, INTERNET, 443, b"")[..24].to_vec(), expect: d(Malformed) },
        Row { what: "runt", ingress: LAN, frame: vec![0; 10], expect: d(Runt) },
    ]
}

#[test]
fn fixture_table() {
    let mut b = bed(config());
    let mut failures = Vec::new();
    for row in rows() {
        let got = b.pipeline.verdict(&row.frame, row.ingress);
        if got != row.expect {
            failures.push(format!("{}: expected {:?}, got {:?}", row.what, row.expect, got));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows().len(), failures.join("\n"));
    assert!(b.counters.snapshot(LAN).malformed.iter().sum::<u64>() >= 1);
}

#[test]
fn indicator_hits_and_heartbeat_drops_are_logged() {
    let mut b = bed(config());
    for row in rows() {
        b.pipeline.verdict(&row.frame, row.ingress);
    }
    let evs: Vec<WorkerEvent> = b.events.try_iter().collect();
    let find = |audit: &str| evs.iter().find(|e| e.audit_id.as_bytes() == audit.as_bytes()).copied();
    let dns = find("MDR-DOM-1").expect("DNS hit logged");
    assert!(matches!(dns.kind, EventKind::ThreatIndicator { module: ThreatModule::Dns, action: FeedAction::LogAndDrop, .. }));
    assert!(dns.dropped);
    assert_eq!(dns.matched.to_string_lossy(), "malware.example");
    assert_eq!(dns.src_health, EndpointHealth::Green);
    let sni = find("MDR-SNI-1").unwrap();
    assert!(matches!(sni.kind, EventKind::ThreatIndicator { module: ThreatModule::TlsSni, .. }));
    let url = find("MDR-URL-1").unwrap();
    assert_eq!(url.matched.to_string_lossy(), "downloads.example.org/payload/x.exe");
    let watch = find("WATCH-1").expect("log-only hit logged");
    assert!(!watch.dropped && watch.reason == "forwarded");
    assert!(evs.iter().any(|e| e.kind == EventKind::HeartbeatDrop && e.reason == "source_heartbeat" && e.src_health == EndpointHealth::Red));
    assert!(evs.iter().any(|e| e.kind == EventKind::HeartbeatDrop && e.reason == "missing_heartbeat"));
    assert!(evs.iter().any(|e| e.kind == EventKind::HeartbeatDrop && e.reason == "lateral_movement"));
    // Excluded matches are not logged as hits.
    assert!(!evs.iter().any(|e| e.dst_ip == Some(EXCLUDED_IP.into())));
}

#[test]
fn tap_mode_drops_nothing_and_logs_everything() {
    let mut b = bed(EnforcementConfig { tap_mode: true, ..config() });
    let mut would = 0;
    for row in rows() {
        let got = b.pipeline.verdict(&row.frame, row.ingress);
        match row.expect {
            Verdict::Drop(_) => {
                would += 1;
                assert_eq!(got, Verdict::Forward, "{}", row.what);
            }
            other => assert_eq!(got, other, "{}", row.what),
        }
    }
    let counted: u64 = (0..2).map(|s| b.counters.snapshot(s).tap_would_drop.iter().sum::<u64>()).sum();
    assert_eq!(counted, would);
    let evs: Vec<WorkerEvent> = b.events.try_iter().collect();
    assert!(evs.iter().all(|e| e.tap && !e.dropped));
    assert!(evs.iter().any(|e| e.reason == "threat_indicator"));
}

#[test]
fn malformed_frames_can_be_forwarded_by_policy() {
    let mut b = bed(EnforcementConfig { malformed: MalformedAction::Forward, ..config() });
    let frame = out(GREEN, INTERNET, 443, b"")[..24].to_vec();
    assert_eq!(b.pipeline.verdict(&frame, LAN), Verdict::Forward);
    assert_eq!(b.counters.snapshot(LAN).malformed.iter().sum::<u64>(), 1);
}

#[test]
fn lateral_movement_can_include_yellow_and_missing_or_be_off() {
    let frame = out(GREEN, YELLOW.1, 445, b"");
    let mut b = bed(config());
    // By default only Red ends count: green -> yellow goes on to the policy,
    // whose lan -> wan rule accepts a green source.
    assert_eq!(b.pipeline.verdict(&frame, LAN), Verdict::Forward);
    let mut b = bed(EnforcementConfig {
        lateral: LateralMovement { enabled: true, include_yellow: true, include_missing: true },
        ..config()
    });
    assert_eq!(b.pipeline.verdict(&frame, LAN), Verdict::Drop(DropReason::LateralMovement));
    assert_eq!(b.pipeline.verdict(&out(GREEN, MISSING.1, 445, b""), LAN), Verdict::Drop(DropReason::LateralMovement));
    let mut b = bed(EnforcementConfig { lateral: LateralMovement { enabled: false, ..Default::default() }, ..config() });
    assert_ne!(b.pipeline.verdict(&out(GREEN, RED.1, 445, b""), LAN), Verdict::Drop(DropReason::LateralMovement));
}

#[test]
fn a_health_change_takes_effect_on_the_next_packet() {
    let policy = Policy::parse(POLICY, Path::new("policy.toml")).unwrap().compile().unwrap();
    let (state, mut writer) = GatewayState::new(policy, IndicatorSet::empty());
    writer.upsert(Endpoint {
        id: EndpointId(1),
        interfaces: vec![EndpointInterface { mac: MacAddr(GREEN.0), ips: vec![GREEN.1.into()] }],
        health: EndpointHealth::Green,
    });
    let mut p = enforcing(&state, config()).pipeline;
    let f = out(GREEN, INTERNET, 443, b"");
    assert_eq!(p.verdict(&f, LAN), Verdict::Forward);
    writer.set_health(EndpointId(1), EndpointHealth::Red).unwrap();
    assert_eq!(p.verdict(&f, LAN), Verdict::Drop(DropReason::SourceHeartbeat));
    writer.set_health(EndpointId(1), EndpointHealth::Green).unwrap();
    assert_eq!(p.verdict(&f, LAN), Verdict::Forward);
}

#[test]
fn seen_macs_reach_the_control_plane() {
    let Standalone { pipeline: mut p, seen_macs: ex, .. } = enforcing(&state(), config());
    for ep in [GREEN, RED, MISSING, GREEN] {
        p.verdict(&out(ep, INTERNET, 443, b""), LAN);
    }
    p.housekeeping();
    let report = ex.reports.try_recv().unwrap();
    let mut macs: Vec<_> = report.macs.iter().map(|m| (m.mac(), m.slot())).collect();
    macs.sort();
    assert_eq!(macs, vec![(GREEN.0, LAN), (RED.0, LAN), (MISSING.0, LAN)]);
}
