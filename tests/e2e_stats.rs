//! `hbgw stats` against a running gateway returns counters that match what
//! was sent; SIGINT and SIGTERM stop the gateway cleanly with the final table.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stats_json(socket: &std::path::Path) -> Option<serde_json::Value> {
    let out = Command::new(HBGW).args(["stats", "--json", "--socket"]).arg(socket).output().unwrap();
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn run_until_counted(sig: i32) {
    let lan_in = frames(2500, 7);
    let wan_in = frames(900, 8);
    let bed = PcapBed::new(&lan_in, &wan_in);
    // No --exit-on-idle: the gateway keeps running until the signal.
    let args = bed.args(false, &["--stats-interval", "100", "--duration", "120"]);
    let child = Command::new(HBGW).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        assert!(Instant::now() < deadline, "stats never showed all frames");
        if let Some(r) = stats_json(&bed.socket()) {
            let rx: u64 = r["workers"].as_array().unwrap().iter().map(|w| w["total"]["rx"].as_u64().unwrap()).sum();
            if rx == (lan_in.len() + wan_in.len()) as u64 {
                break r;
            }
            assert!(rx < (lan_in.len() + wan_in.len()) as u64, "more frames than sent: {r}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ports = report["ports"].as_array().unwrap();
    let lan = ports.iter().find(|p| p["name"] == "net_pcap0").unwrap();
    let wan = ports.iter().find(|p| p["name"] == "net_pcap1").unwrap();
    assert_eq!(lan["total"]["rx"], lan_in.len());
    assert_eq!(lan["total"]["tx"], wan_in.len());
    assert_eq!(wan["total"]["rx"], wan_in.len());
    assert_eq!(wan["total"]["tx"], lan_in.len());
    assert_eq!(lan["total"]["dropped"], 0);
    assert_eq!(lan["role"], "lan0");
    assert_eq!(wan["device"]["opackets"], lan_in.len(), "the device agrees");
    assert_eq!(report["stopped"], false);

    // The table form and --watch.
    let table = Command::new(HBGW)
        .args(["stats", "--watch", "0.1", "--count", "2", "--socket"])
        .arg(bed.socket())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    assert_eq!(t.matches("hbgw stats").count(), 2, "{t}");
    assert!(t.contains("p99.99") && t.contains("net_pcap1"), "{t}");

    // --clear starts a fresh measurement: totals restart from zero.
    let cleared = Command::new(HBGW).args(["stats", "--json", "--clear", "--socket"]).arg(bed.socket()).output().unwrap();
    assert!(cleared.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = stats_json(&bed.socket()).unwrap();
        if r["ports"][0]["total"]["rx"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "totals did not restart after --clear: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }

    signal(&child, sig);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?} after signal {sig}\n{stderr}", out.status);
    assert!(stdout.contains("hbgw final stats"), "{stdout}");
    assert!(stderr.contains("signal received"), "{stderr}");
    assert!(!bed.socket().exists(), "the stats socket is removed at exit");
    assert_eq!(read_pcap(&bed.path("wan_out.pcap")), lan_in);
}

#[test]
fn stats_match_what_was_sent_then_sigint_stops_cleanly() {
    run_until_counted(libc::SIGINT);
}

#[test]
fn sigterm_stops_cleanly() {
    run_until_counted(libc::SIGTERM);
}
