//! Enforcement end to end through the real binary: a pcap on each side of a
//! net_pcap bridge, a policy, a threat feed and endpoints from files. Checks
//! which frames came out of the other port, what the Active threat response
//! and heartbeat logs say, and that tap mode drops nothing and logs all.

mod common;
use common::*;
use hbgw_dataplane::synth::*;
use std::path::Path;
use std::time::Duration;

const GW: Mac = [0x02, 0xee, 0, 0, 0, 1];
const INET_MAC: Mac = [0x02, 0x99, 0, 0, 0, 1];
const GREEN: (Mac, [u8; 4]) = ([2, 0, 0, 0, 0, 1], [10, 0, 0, 1]);
const YELLOW: (Mac, [u8; 4]) = ([2, 0, 0, 0, 0, 2], [10, 0, 0, 2]);
const RED: (Mac, [u8; 4]) = ([2, 0, 0, 0, 0, 3], [10, 0, 0, 3]);
const MISSING: (Mac, [u8; 4]) = ([2, 0, 0, 0, 0, 4], [10, 0, 0, 4]);
const NOHB: (Mac, [u8; 4]) = ([2, 0, 0, 0, 0, 5], [10, 0, 0, 5]);
const SRV_GREEN: [u8; 4] = [10, 20, 0, 1];
const SRV_YELLOW: [u8; 4] = [10, 20, 0, 2];
const SRV_NOHB: [u8; 4] = [10, 20, 0, 3];
const INTERNET: [u8; 4] = [203, 0, 113, 80];

const POLICY: &str = r#"
default_action = "drop"
missing_heartbeat_zones = ["office"]

[[zone]]
name = "lan"
role = "lan"

[[zone]]
name = "office"
role = "lan"
vlans = [10]

[[zone]]
name = "lab"
role = "lan"
vlans = [20]

[[zone]]
name = "wan"
role = "wan"

[[rule]]
name = "lab: no heartbeat conditions"
source_zones = ["lab"]
destination_zones = ["wan"]
action = "accept"

[[rule]]
name = "servers must be green"
source_zones = ["lan"]
destination_zones = ["wan"]
destination_networks = ["10.20.0.0/16"]
action = "accept"
min_destination_heartbeat = "green"
block_destinations_without_heartbeat = true

[[rule]]
name = "internet for green clients"
source_zones = ["lan"]
destination_zones = ["wan"]
action = "accept"
min_source_heartbeat = "green"
block_clients_without_heartbeat = true

[[rule]]
name = "replies"
source_zones = ["wan"]
destination_zones = ["lan"]
action = "accept"
"#;

const FEED: &str = r#"
exclusions = ["198.51.100.77"]

[settings]
action = "log_and_drop"

[settings.feeds.watch]
action = "log_only"

[[indicator]]
value = "198.51.100.66"
audit_id = "MDR-IP"

[[indicator]]
value = "198.51.100.64/28"
audit_id = "MDR-NET"

[[indicator]]
value = "malware.example"
audit_id = "MDR-DOMAIN"

[[indicator]]
value = "c2.example.net"
audit_id = "MDR-SNI"

[[indicator]]
value = "http://downloads.example.org/payload"
audit_id = "MDR-URL"

[[indicator]]
value = "192.0.2.99"
audit_id = "WATCH-IP"
feed = "watch"
"#;

const ENDPOINTS: &str = r#"
[[endpoint]]
id = 1
health = "green"
interfaces = [{ mac = "02:00:00:00:00:01", ips = ["10.0.0.1"] }]

[[endpoint]]
id = 2
health = "yellow"
interfaces = [{ mac = "02:00:00:00:00:02", ips = ["10.0.0.2"] }]

[[endpoint]]
id = 3
health = "red"
interfaces = [{ mac = "02:00:00:00:00:03", ips = ["10.0.0.3"] }]

[[endpoint]]
id = 4
health = "missing"
interfaces = [{ mac = "02:00:00:00:00:04", ips = ["10.0.0.4"] }]

[[endpoint]]
id = 5
health = "no_heartbeat"
interfaces = [{ mac = "02:00:00:00:00:05", ips = ["10.0.0.5"] }]

[[endpoint]]
id = 11
health = "green"
interfaces = [{ mac = "02:00:00:00:01:01", ips = ["10.20.0.1"] }]

[[endpoint]]
id = 12
health = "yellow"
interfaces = [{ mac = "02:00:00:00:01:02", ips = ["10.20.0.2"] }]

[[endpoint]]
id = 13
health = "no_heartbeat"
interfaces = [{ mac = "02:00:00:00:01:03", ips = ["10.20.0.3"] }]
"#;

/// (what, frame, forwarded?)
fn lan_frames() -> Vec<(&'static str, Vec<u8>, bool)> {
    let t = |ep: (Mac, [u8; 4]), dst: [u8; 4], dport: u16, payload: &[u8]| tcp(ep.0, GW, ep.1, dst, 40000, dport, payload);
    let u = |ep: (Mac, [u8; 4]), dst: [u8; 4], dport: u16, payload: &[u8]| udp(ep.0, GW, ep.1, dst, 5353, dport, payload);
    vec![
        ("green to the internet", t(GREEN, INTERNET, 443, b""), true),
        ("yellow blocked by minimum source heartbeat green", t(YELLOW, INTERNET, 443, b""), false),
        ("red blocked by minimum source heartbeat green", t(RED, INTERNET, 443, b""), false),
        ("no-heartbeat client blocked", t(NOHB, INTERNET, 443, b""), false),
        ("missing endpoint in the office (missing-heartbeat zone)", vlan_tcp(MISSING.0, GW, 10, MISSING.1, INTERNET, 443), false),
        ("missing endpoint in the lab (not a missing-heartbeat zone)", vlan_tcp(MISSING.0, GW, 20, MISSING.1, INTERNET, 443), true),
        ("to a green server", t(GREEN, SRV_GREEN, 445, b""), true),
        ("to a yellow server: below minimum destination green", t(GREEN, SRV_YELLOW, 445, b""), false),
        ("to a server without heartbeat", t(GREEN, SRV_NOHB, 445, b""), false),
        ("DNS/UDP for a listed domain", u(GREEN, INTERNET, 53, &dns_query("malware.example")), false),
        ("DNS/UDP for its subdomain", u(GREEN, INTERNET, 53, &dns_query("www.malware.example")), false),
        ("DNS/TCP for a listed domain", t(GREEN, INTERNET, 53, &dns_query_tcp("malware.example")), false),
        ("DNS for an unlisted sibling", u(GREEN, INTERNET, 53, &dns_query("notmalware.example")), true),
        ("TLS ClientHello with a listed SNI", t(GREEN, INTERNET, 443, &client_hello("c2.example.net")), false),
        ("HTTP request to a listed URL", t(GREEN, INTERNET, 80, &http_get("downloads.example.org", "/payload/a.exe")), false),
        ("to an IPv4 indicator", t(GREEN, [198, 51, 100, 66], 443, b""), false),
        ("excluded address inside a listed network", t(GREEN, [198, 51, 100, 77], 443, b""), true),
        ("log-only indicator: logged, forwarded", t(GREEN, [192, 0, 2, 99], 443, b""), true),
    ]
}

fn wan_frames() -> Vec<(&'static str, Vec<u8>, bool)> {
    vec![
        ("reply to green", tcp(INET_MAC, GREEN.0, INTERNET, GREEN.1, 443, 40000, b""), true),
        ("from an IPv4 indicator (inbound)", tcp(INET_MAC, GREEN.0, [198, 51, 100, 66], GREEN.1, 443, 40000, b""), false),
    ]
}

fn write_state(dir: &Path, tap: bool) -> std::path::PathBuf {
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    std::fs::write(dir.join("feed.toml"), FEED).unwrap();
    std::fs::write(dir.join("endpoints.toml"), ENDPOINTS).unwrap();
    let cfg = dir.join("hbgw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[enforcement]\npolicy = \"{d}/policy.toml\"\nthreat_feed = \"{d}/feed.toml\"\nendpoints = \"{d}/endpoints.toml\"\ntap_mode = {tap}\n\n[events]\nlog = \"{d}/events.jsonl\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    cfg
}

fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_bed(tap: bool) -> (PcapBed, String, Vec<serde_json::Value>) {
    let lan: Vec<Vec<u8>> = lan_frames().into_iter().map(|f| f.1).collect();
    let wan: Vec<Vec<u8>> = wan_frames().into_iter().map(|f| f.1).collect();
    let bed = PcapBed::new(&lan, &wan);
    let cfg = write_state(bed.dir.path(), tap);
    let out = run(&bed.args(false, &["--config", cfg.to_str().unwrap(), "--exit-on-idle", "1000"]), Duration::from_secs(60));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let evs = events(bed.dir.path());
    (bed, stdout, evs)
}

#[test]
fn policy_feed_and_endpoints_decide_what_crosses() {
    let (bed, stdout, evs) = run_bed(false);
    let expect = |frames: Vec<(&str, Vec<u8>, bool)>| frames.into_iter().filter(|f| f.2).map(|f| f.1).collect::<Vec<_>>();
    let wan_out = read_pcap(&bed.path("wan_out.pcap"));
    let lan_out = read_pcap(&bed.path("lan_out.pcap"));
    let names: Vec<&str> = lan_frames().iter().filter(|f| f.2).map(|f| f.0).collect();
    assert_eq!(wan_out, expect(lan_frames()), "LAN -> WAN should carry exactly: {names:?}");
    assert_eq!(lan_out, expect(wan_frames()), "WAN -> LAN");

    assert!(stdout.contains("enforcing"), "{stdout}");
    for reason in ["threat_indicator=", "source_heartbeat=", "source_without_heartbeat=", "missing_heartbeat=", "destination_heartbeat=", "destination_without_heartbeat="] {
        assert!(stdout.contains(reason), "final table lacks {reason}\n{stdout}");
    }
    // The flow cache looked the frames up (nearly every one is its own flow,
    // so nearly all were decided in full; the verdicts are checked above).
    assert!(stdout.contains("flow cache (since start): 1 hits, 19 misses"), "{stdout}");

    let hit = |audit: &str| evs.iter().find(|e| e["audit_id"] == audit).unwrap_or_else(|| panic!("no {audit} event in {evs:#?}"));
    let d = hit("MDR-DOMAIN");
    assert_eq!((d["module"].as_str(), d["verdict"].as_str(), d["action"].as_str()), (Some("dns"), Some("dropped"), Some("log_and_drop")));
    assert_eq!(d["src_ip"], "10.0.0.1");
    assert_eq!(d["src_health"], "green");
    assert_eq!(d["port"], "lan0");
    assert_eq!(hit("MDR-SNI")["module"], "tls_sni");
    assert_eq!(hit("MDR-URL")["indicator"], "downloads.example.org/payload/a.exe");
    assert_eq!(hit("MDR-IP")["module"], "firewall");
    let watch = hit("WATCH-IP");
    assert_eq!((watch["verdict"].as_str(), watch["action"].as_str()), (Some("forwarded"), Some("log_only")));
    // The inbound IP hit is logged with its WAN ingress port, naming the listed source.
    assert!(evs.iter().any(|e| e["audit_id"] == "MDR-IP" && e["port"] == "wan0" && e["indicator"] == "198.51.100.66"), "{evs:#?}");
    assert!(evs.iter().any(|e| e["audit_id"] == "MDR-IP" && e["port"] == "lan0" && e["indicator"] == "198.51.100.66"), "{evs:#?}");
    // Excluded: no event at all.
    assert!(!evs.iter().any(|e| e["dst_ip"] == "198.51.100.77"));
    // Heartbeat drops name the rule and the health.
    let red = evs.iter().find(|e| e["log"] == "heartbeat" && e["src_ip"] == "10.0.0.3").unwrap();
    assert_eq!((red["reason"].as_str(), red["src_health"].as_str()), (Some("source_heartbeat"), Some("red")));
    assert_eq!(red["rule"], "internet for green clients");
    assert!(evs.iter().any(|e| e["log"] == "heartbeat" && e["reason"] == "missing_heartbeat"));
}

#[test]
fn tap_mode_drops_nothing_and_logs_everything() {
    let (bed, stdout, evs) = run_bed(true);
    let all = |frames: Vec<(&str, Vec<u8>, bool)>| frames.into_iter().map(|f| f.1).collect::<Vec<_>>();
    assert_eq!(read_pcap(&bed.path("wan_out.pcap")), all(lan_frames()));
    assert_eq!(read_pcap(&bed.path("lan_out.pcap")), all(wan_frames()));
    assert!(stdout.contains("tap mode"), "{stdout}");
    assert!(stdout.contains("would_drop.threat_indicator="), "{stdout}");
    let blocked = lan_frames().iter().filter(|f| !f.2).count() + wan_frames().iter().filter(|f| !f.2).count();
    // A folded line ("repeated": n) stands for n more identical events.
    let would: u64 = evs
        .iter()
        .map(|e| match (&e["verdict"], &e["repeated"], &e["event"]["verdict"]) {
            (v, _, _) if v == "would_drop" => 1,
            (_, n, v) if v == "would_drop" => n.as_u64().unwrap_or(0),
            _ => 0,
        })
        .sum();
    let blocked = blocked as u64;
    assert_eq!(would, blocked, "one would-drop event per blocked frame: {evs:#?}");
    assert!(evs.iter().all(|e| e["verdict"] != "dropped"));
}

#[test]
fn a_bad_policy_refuses_to_start() {
    let bed = PcapBed::new(&frames(2, 1), &[]);
    write_state(bed.dir.path(), false);
    std::fs::write(bed.path("policy.toml"), "[[rule]]\nname = \"x\"\nsource_zones = [\"nowhere\"]\naction = \"accept\"\n").unwrap();
    let out = run(&bed.args(false, &["--config", bed.path("hbgw.toml").to_str().unwrap()]), Duration::from_secs(60));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    let line = stderr.lines().find(|l| l.starts_with("hbgw: ")).unwrap();
    assert!(line.contains("nowhere"), "{line}");
    assert!(!stderr.contains("EAL:"), "refused before EAL started: {stderr}");
}

fn explain(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(HBGW).arg("explain").args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn explain_names_the_rule_indicator_exclusion_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_state(dir.path(), false);
    let c = cfg.to_str().unwrap();
    let red = explain(&["--config", c, "--src-mac", "02:00:00:00:00:03", "--src-ip", "10.0.0.3", "--dst-ip", "203.0.113.80"]);
    assert_eq!((red["verdict"].as_str(), red["reason"].as_str()), (Some("drop"), Some("source_heartbeat")), "{red}");
    assert_eq!(red["rule"][1], "internet for green clients");
    assert_eq!(red["src_health"], "red");

    let sni = explain(&["--config", c, "--src-mac", "02:00:00:00:00:01", "--src-ip", "10.0.0.1", "--dst-ip", "203.0.113.80", "--sni", "c2.example.net"]);
    assert_eq!(sni["stage"], "indicator", "{sni}");
    assert_eq!(sni["indicator_hits"][0]["audit_id"], "MDR-SNI");
    assert_eq!(sni["indicator_hits"][0]["module"], "tls_sni");

    let excluded = explain(&["--config", c, "--src-mac", "02:00:00:00:00:01", "--src-ip", "10.0.0.1", "--dst-ip", "198.51.100.77"]);
    assert_eq!(excluded["verdict"], "forward", "{excluded}");
    assert_eq!(excluded["excluded"][0], "firewall");

    let missing_lab = explain(&["--config", c, "--src-mac", "02:00:00:00:00:04", "--src-ip", "10.0.0.4", "--dst-ip", "203.0.113.80", "--vlan", "20"]);
    assert_eq!(missing_lab["verdict"], "forward", "{missing_lab}");
    let missing_office = explain(&["--config", c, "--src-mac", "02:00:00:00:00:04", "--src-ip", "10.0.0.4", "--dst-ip", "203.0.113.80", "--vlan", "10"]);
    assert_eq!(missing_office["reason"], "missing_heartbeat", "{missing_office}");

    // Text form names the decision in one sentence.
    let out = std::process::Command::new(HBGW)
        .args(["explain", "--config", c, "--src-mac", "02:00:00:00:00:01", "--src-ip", "10.0.0.1", "--dst-ip", "203.0.113.80", "--proto", "udp", "--dport", "53", "--dns", "www.malware.example"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("dropped by threat indicator MDR-DOMAIN"), "{text}");
}

#[test]
fn explain_asks_the_running_gateway() {
    let bed = PcapBed::new(&frames(10, 1), &[]);
    let cfg = write_state(bed.dir.path(), false);
    let args = bed.args(false, &["--config", cfg.to_str().unwrap(), "--duration", "120"]);
    let child = std::process::Command::new(HBGW)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sock = bed.socket();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "the gateway never opened its socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = sock.to_str().unwrap();
    let yellow = explain(&["--socket", s, "--src-mac", "02:00:00:00:00:02", "--src-ip", "10.0.0.2", "--dst-ip", "203.0.113.80"]);
    assert_eq!(yellow["reason"], "source_heartbeat", "{yellow}");
    assert_eq!(yellow["src_health"], "yellow");
    let bad = std::process::Command::new(HBGW)
        .args(["explain", "--socket", s, "--ingress", "dmz9", "--src-mac", "02:00:00:00:00:02", "--src-ip", "10.0.0.2", "--dst-ip", "203.0.113.80"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown ingress port `dmz9`: use one of lan0, wan0"));
    signal(&child, libc::SIGTERM);
    assert!(wait_with_timeout(child, Duration::from_secs(30)).status.success());
}

#[test]
fn reject_rules_answer_with_rst_and_icmp_out_of_the_ingress_port() {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let syn = {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(GREEN.0, GW)
            .ipv4(GREEN.1, INTERNET, 64)
            .tcp(40000, 23, 5000, 64240)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        f
    };
    let tftp = udp(GREEN.0, GW, GREEN.1, INTERNET, 40001, 69, b"\x00\x01file\x00octet\x00");
    let allowed = tcp(GREEN.0, GW, GREEN.1, INTERNET, 40002, 443, b"");
    let bed = PcapBed::new(&[syn.clone(), tftp.clone(), allowed.clone()], &[]);
    let d = bed.dir.path();
    std::fs::write(
        d.join("policy.toml"),
        "default_action = \"accept\"\n[[zone]]\nname = \"lan\"\nrole = \"lan\"\n\
         [[rule]]\nname = \"no telnet\"\nsource_zones = [\"lan\"]\nservices = [{ protocol = \"tcp\", ports = [23] }]\naction = \"reject\"\n\
         [[rule]]\nname = \"no tftp\"\nsource_zones = [\"lan\"]\nservices = [{ protocol = \"udp\", ports = [69] }]\naction = \"reject\"\n",
    )
    .unwrap();
    std::fs::write(d.join("hbgw.toml"), format!("[enforcement]\npolicy = \"{}/policy.toml\"\n", d.display())).unwrap();
    let out = run(&bed.args(false, &["--config", d.join("hbgw.toml").to_str().unwrap(), "--exit-on-idle", "1000"]), Duration::from_secs(60));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(read_pcap(&bed.path("wan_out.pcap")), vec![allowed], "only the allowed frame crosses");
    let answers = read_pcap(&bed.path("lan_out.pcap"));
    assert_eq!(answers.len(), 2, "one answer per rejected frame, back out of the LAN port");
    let rst = SlicedPacket::from_ethernet(&answers[0]).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &rst.net else { panic!("{rst:?}") };
    assert_eq!((ip.header().source(), ip.header().destination()), (INTERNET, GREEN.1));
    let Some(TransportSlice::Tcp(t)) = &rst.transport else { panic!() };
    assert!(t.rst() && t.ack());
    assert_eq!((t.source_port(), t.destination_port(), t.acknowledgment_number()), (23, 40000, 5001));
    let h = t.to_header();
    assert_eq!(h.calc_checksum_ipv4(&ip.header().to_header(), &[]).unwrap(), h.checksum);
    let icmp = SlicedPacket::from_ethernet(&answers[1]).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = &icmp.transport else { panic!("{icmp:?}") };
    assert_eq!((i.type_u8(), i.code_u8()), (3, 13));
    assert!(stdout.contains("policy_reject=2"), "{stdout}");
}
