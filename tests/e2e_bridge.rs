//! End to end through the real binary: frames fed in on one port of a
//! net_pcap bridge come out of the other port identical, frame for frame, in
//! both directions; the gateway exits by itself when input is exhausted; its
//! final table and histogram log account for every frame.

mod common;
use common::*;
use std::time::Duration;

fn check_bridge(huge: bool) {
    let lan_in = frames(3000, 1);
    let wan_in = frames(1700, 2);
    let bed = PcapBed::new(&lan_in, &wan_in);
    let hlog = bed.path("latency.hlog");
    let args = bed.args(huge, &["--exit-on-idle", "1000", "--hlog", hlog.to_str().unwrap(), "--stats-interval", "200"]);
    let out = run(&args, Duration::from_secs(60));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");

    let wan_out = read_pcap(&bed.path("wan_out.pcap"));
    let lan_out = read_pcap(&bed.path("lan_out.pcap"));
    assert_eq!(wan_out.len(), lan_in.len(), "every LAN frame left on the WAN port");
    assert_eq!(lan_out.len(), wan_in.len(), "every WAN frame left on the LAN port");
    for (i, (a, b)) in lan_in.iter().zip(&wan_out).enumerate() {
        assert_eq!(a, b, "LAN -> WAN frame {i} changed");
    }
    for (i, (a, b)) in wan_in.iter().zip(&lan_out).enumerate() {
        assert_eq!(a, b, "WAN -> LAN frame {i} changed");
    }

    // The final table: per-port counts match what was sent.
    assert!(stdout.contains("hbgw final stats"), "{stdout}");
    let lan_row = stdout.lines().find(|l| l.contains("net_pcap0")).unwrap();
    let cols: Vec<&str> = lan_row.split_whitespace().collect();
    assert_eq!(cols[3], lan_in.len().to_string(), "lan rx: {lan_row}");
    assert_eq!(cols[4], wan_in.len().to_string(), "lan tx: {lan_row}");
    assert_eq!(cols[5], "0", "no drops: {lan_row}");

    // The histogram log holds one sample per frame.
    let bytes = std::fs::read(&hlog).unwrap();
    let mut deser = hdrhistogram::serialization::Deserializer::new();
    let mut samples = 0u64;
    for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&bytes) {
        if let hdrhistogram::serialization::interval_log::LogEntry::Interval(iv) = entry.unwrap() {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(iv.encoded_histogram()).unwrap();
            let h: hdrhistogram::Histogram<u64> = deser.deserialize(&mut raw.as_slice()).unwrap();
            samples += h.len();
        }
    }
    assert_eq!(samples, (lan_in.len() + wan_in.len()) as u64, "hlog samples");

    // And HdrHistogram's own Python reader agrees (scripts/test.sh installs it).
    if std::env::var("HBGW_TEST_PY_HDRH").is_ok_and(|v| v == "1") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/perf/hlog-summary.py");
        let out = std::process::Command::new("python3").arg(script).arg(&hlog).arg("--json").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["samples"], samples, "{summary}");
    }
}

#[test]
fn pcap_crosses_the_bridge_unchanged_both_ways() {
    check_bridge(false);
}

#[test]
fn pcap_crosses_the_bridge_on_hugepages() {
    if !hugepage_tests() {
        eprintln!("HBGW_TEST_HUGEPAGES is not 1 (scripts/test.sh sets it after reserving pages): skipped");
        return;
    }
    check_bridge(true);
}

#[test]
fn runts_are_dropped_and_counted_by_reason() {
    let mut lan_in = frames(10, 3);
    lan_in.insert(5, vec![0xaa; 10]);
    let bed = PcapBed::new(&lan_in, &[]);
    let out = run(&bed.args(false, &["--exit-on-idle", "1000"]), Duration::from_secs(60));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(read_pcap(&bed.path("wan_out.pcap")).len(), 10);
    assert!(stdout.contains("runt=1"), "{stdout}");
}
