//! `dpdk-telemetry.py` (DPDK's own client) reads hbgw's `/hbgw/stats` and
//! `/hbgw/latency` from a running gateway.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn telemetry(prefix: &str, cmd: &str) -> Option<serde_json::Value> {
    let mut child = Command::new("dpdk-telemetry.py")
        .args(["-f", prefix])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dpdk-telemetry.py is installed by scripts/install-deps.sh (package dpdk-dev)");
    child.stdin.take().unwrap().write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|v| v.get(cmd).is_some())
}

#[test]
fn dpdk_telemetry_reads_hbgw_commands() {
    let lan_in = frames(1200, 5);
    let bed = PcapBed::new(&lan_in, &[]);
    let args = bed.args(false, &["--stats-interval", "100", "--duration", "120"]);
    let prefix = args.iter().find_map(|a| a.strip_prefix("--file-prefix=")).unwrap().to_owned();
    let child = Command::new(HBGW).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        assert!(Instant::now() < deadline, "telemetry never showed all frames");
        if let Some(v) = telemetry(&prefix, "/hbgw/stats") {
            if v["/hbgw/stats"]["total"]["rx"] == lan_in.len() {
                break v;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let s = &stats["/hbgw/stats"];
    assert_eq!(s["total"]["tx"], lan_in.len());
    assert_eq!(s["port_net_pcap0"]["rx"], lan_in.len());
    assert_eq!(s["port_net_pcap1"]["tx"], lan_in.len());
    let lat = telemetry(&prefix, "/hbgw/latency").unwrap();
    assert_eq!(lat["/hbgw/latency"]["total"]["count"], lan_in.len(), "{lat}");
    assert!(lat["/hbgw/latency"]["total"]["p99_99"].as_u64().unwrap() > 0);

    signal(&child, libc::SIGINT);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert!(out.status.success());
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "runtime dir removed at exit");
}
