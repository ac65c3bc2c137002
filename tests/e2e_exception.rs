//! The exception path through the real binary: frames for the gateway's own
//! address (ARP, ICMP echo, TCP) arriving on the LAN port are handed to a
//! kernel TAP interface, and the kernel's answers (ARP reply, echo reply,
//! TCP RST for a closed port) go back out of the LAN port; other traffic
//! still crosses the bridge.
//!
//! The gateway runs inside a network namespace this test creates (and
//! deletes): its TAP interface, the addresses on it and every packet the
//! kernel sends stay there, whatever networks this machine's own interfaces
//! are on.

mod common;
use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use hbgw_dataplane::synth::tcp;
use std::time::Duration;

const CLIENT: ([u8; 6], [u8; 4]) = ([0x02, 0xc1, 0, 0, 0, 1], [198, 18, 77, 50]);
const GATEWAY_IP: [u8; 4] = [198, 18, 77, 1];

/// A network namespace for the duration of a test.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = std::process::Command::new("ip").args(["netns", "delete", name]).output();
        let out = std::process::Command::new("ip").args(["netns", "add", name]).output().expect("iproute2 is installed");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        Netns(name.to_owned())
    }
}

impl Netns {
    /// Runs hbgw with `args` inside the namespace, to completion.
    fn run_hbgw(&self, args: Vec<String>) -> std::process::Output {
        let mut all: Vec<String> = vec!["netns".into(), "exec".into(), self.0.clone(), HBGW.into()];
        all.extend(args);
        let child = std::process::Command::new("ip")
            .args(&all)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_with_timeout(child, Duration::from_secs(60))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "delete", &self.0]).output();
    }
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CLIENT.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT.0);
    f.extend_from_slice(&CLIENT.1);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&GATEWAY_IP);
    f.resize(60, 0);
    f
}

#[test]
fn frames_for_the_gateway_reach_the_kernel_and_its_answers_the_wire() {
    let tap = format!("hbgwt{}", std::process::id() % 100_000);
    // The exception interface's default MAC, as an endpoint learns it by ARP.
    let gw_mac = [0x02, 0x68, 0x62, 0x67, 0x77, 0x01];
    let mut ping = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT.0, gw_mac)
        .ipv4(CLIENT.1, GATEWAY_IP, 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut ping, b"hbgw exception path")
        .unwrap();
    let mut syn = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT.0, gw_mac)
        .ipv4(CLIENT.1, GATEWAY_IP, 64)
        .tcp(40000, 9, 1000, 64240)
        .syn()
        .write(&mut syn, &[])
        .unwrap();
    let internet = tcp(CLIENT.0, [2, 0xee, 0, 0, 0, 1], CLIENT.1, [203, 0, 113, 80], 40001, 443, b"");
    let bed = PcapBed::new(&[arp_request(), ping, syn, internet.clone()], &[]);
    let cfg = bed.path("hbgw.toml");
    std::fs::write(&cfg, format!("[exception]\ntap = \"{tap}\"\naddresses = [\"198.18.77.1/24\"]\nport = \"lan0\"\n")).unwrap();
    let ns = Netns::new(&format!("hbgw-test-{}", std::process::id()));
    let out = ns.run_hbgw(bed.args(false, &["--config", cfg.to_str().unwrap(), "--exit-on-idle", "2000"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("exception path"), "{stderr}");

    assert_eq!(read_pcap(&bed.path("wan_out.pcap")), vec![internet], "only ordinary traffic crosses");
    let answers = read_pcap(&bed.path("lan_out.pcap"));
    let arp_reply = answers.iter().any(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == GATEWAY_IP);
    assert!(arp_reply, "no ARP reply for the gateway's address among {} frames", answers.len());
    assert!(answers.iter().any(|f| f[6..12] == gw_mac), "the kernel answers from the configured MAC");
    let mut echo_reply = false;
    let mut rst = false;
    for f in &answers {
        let Ok(p) = SlicedPacket::from_ethernet(f) else { continue };
        let Some(NetSlice::Ipv4(ip)) = &p.net else { continue };
        if ip.header().source() != GATEWAY_IP || ip.header().destination() != CLIENT.1 {
            continue;
        }
        match &p.transport {
            Some(TransportSlice::Icmpv4(i)) if i.type_u8() == 0 => echo_reply = true,
            Some(TransportSlice::Tcp(t)) if t.rst() && t.source_port() == 9 => rst = true,
            _ => {}
        }
    }
    assert!(echo_reply, "no echo reply from the kernel");
    assert!(rst, "no RST from the kernel for the closed port");
    assert!(stdout.contains("exception"), "the TAP port is in the table: {stdout}");
    let gone = std::process::Command::new("ip").args(["-n", &ns.0, "link", "show", &tap]).output().unwrap();
    assert!(!gone.status.success(), "the TAP interface is gone after exit");
}

#[test]
fn an_address_on_a_network_the_host_already_reaches_is_refused() {
    let ns = Netns::new(&format!("hbgw-test-clash-{}", std::process::id()));
    for args in [
        vec!["-n", &ns.0, "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1"],
        vec!["-n", &ns.0, "addr", "add", "198.18.79.2/24", "dev", "dummy0"],
        vec!["-n", &ns.0, "link", "set", "dummy0", "up"],
    ] {
        let out = std::process::Command::new("ip").args(&args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let bed = PcapBed::new(&frames(2, 1), &[]);
    let cfg = bed.path("hbgw.toml");
    std::fs::write(&cfg, "[exception]\ntap = \"hbgwclash0\"\naddresses = [\"198.18.79.1/24\"]\n").unwrap();
    let out = ns.run_hbgw(bed.args(false, &["--config", cfg.to_str().unwrap(), "--exit-on-idle", "500"]));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    let line = stderr.lines().find(|l| l.starts_with("hbgw: ")).unwrap_or_default();
    assert!(line.contains("overlaps a network this host already reaches directly") && line.contains("dummy0"), "{stderr}");
}
