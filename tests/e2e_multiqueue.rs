//! Several workers and several rx queues per port: every (port, queue) is
//! polled by exactly one worker, each worker sends on its own tx queue, and
//! every frame still crosses the bridge unchanged. Two workers share CPU 1
//! here (`--lcores 0@0,1@1,2@1`): this checks the plan, not the speed.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn multiset(frames: impl IntoIterator<Item = Vec<u8>>) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for f in frames {
        *m.entry(f).or_default() += 1;
    }
    m
}

#[test]
fn two_workers_two_queues_per_port() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let lan: Vec<Vec<Vec<u8>>> = vec![frames(700, 1), frames(500, 2)];
    let wan: Vec<Vec<Vec<u8>>> = vec![frames(300, 3), frames(400, 4)];
    for (q, f) in lan.iter().enumerate() {
        write_pcap(&dir.path().join(format!("lan_in{q}.pcap")), f);
    }
    for (q, f) in wan.iter().enumerate() {
        write_pcap(&dir.path().join(format!("wan_in{q}.pcap")), f);
    }
    // One rx_pcap per rx queue, one tx_pcap per tx queue (= per worker).
    let lan_vdev = format!(
        "net_pcap0,rx_pcap={},rx_pcap={},tx_pcap={},tx_pcap={}",
        p("lan_in0.pcap"),
        p("lan_in1.pcap"),
        p("lan_out0.pcap"),
        p("lan_out1.pcap")
    );
    let wan_vdev = format!(
        "net_pcap1,rx_pcap={},rx_pcap={},tx_pcap={},tx_pcap={}",
        p("wan_in0.pcap"),
        p("wan_in1.pcap"),
        p("wan_out0.pcap"),
        p("wan_out1.pcap")
    );
    let args: Vec<String> = [
        "--lcores", "0@0,1@1,2@1", "--no-pci", "--no-huge", "--no-shconf", "-m", "512",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--file-prefix={}", file_prefix()), format!("--vdev={lan_vdev}"), format!("--vdev={wan_vdev}")])
    .chain(
        ["--", "--port-pair", "net_pcap0,net_pcap1", "--rx-queues", "2", "--live", "off", "--exit-on-idle", "1500", "--stats-socket"]
            .iter()
            .map(|s| s.to_string()),
    )
    .chain([p("s.sock")])
    .collect();
    let out = run(&args, Duration::from_secs(90));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    let wan_out = multiset((0..2).flat_map(|q| read_pcap(&dir.path().join(format!("wan_out{q}.pcap")))));
    let lan_out = multiset((0..2).flat_map(|q| read_pcap(&dir.path().join(format!("lan_out{q}.pcap")))));
    assert_eq!(wan_out, multiset(lan.iter().flatten().cloned()), "LAN -> WAN");
    assert_eq!(lan_out, multiset(wan.iter().flatten().cloned()), "WAN -> LAN");

    // Both workers polled: each owns two of the four (port, queue) pairs.
    assert!(stderr.contains("worker 0 on lcore 1: 2 rx queue(s)"), "{stderr}");
    assert!(stderr.contains("worker 1 on lcore 2: 2 rx queue(s)"), "{stderr}");
    for w in ["  0    1 ", "  1    2 "] {
        let row = stdout.lines().find(|l| l.starts_with(w)).unwrap_or_else(|| panic!("worker row {w:?}\n{stdout}"));
        let rx: u64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(rx > 0, "worker idle: {row}");
    }
    // Within one queue, order is kept: queue 0 of the LAN goes out in order on some tx queue.
    let out0 = read_pcap(&dir.path().join("wan_out0.pcap"));
    let from_q0: Vec<_> = out0.iter().filter(|f| lan[0].contains(f)).cloned().collect();
    let expected: Vec<_> = lan[0].iter().filter(|f| from_q0.contains(f)).cloned().collect();
    assert_eq!(from_q0, expected, "per-queue order kept");
}
