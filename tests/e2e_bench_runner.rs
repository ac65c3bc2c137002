//! perf/bench.sh, the RFC 2544 runner, end to end on a tiny budget: testpmd
//! and hbgw as devices under test over net_memif, hbgw-gen searching up to
//! 50k frames/s with 0.2 s trials, no hugepages. Checks that every stage runs
//! and its outputs are there and readable: the table, the JSON results, the
//! histogram logs and the plot. It measures nothing (see perf/RESULTS.md).

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn runner_writes_table_results_histograms_and_plot() {
    let out_dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(HBGW).parent().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let child = Command::new("bash")
        .arg(format!("{root}/perf/bench.sh"))
        .args(["--sizes", "64", "--duts", "testpmd,hbgw", "--trial-secs", "0.2", "--latency-secs", "0.2"])
        .args(["--max-rate", "50k", "--no-record", "--no-huge", "--out"])
        .arg(out_dir.path())
        .env("HBGW_BENCH_BIN", bin_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(240));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for dut in ["testpmd", "hbgw"] {
        assert!(stdout.contains(&format!("| 64 | {dut} |")), "no row for {dut}:\n{stdout}");
        let json = out_dir.path().join(format!("{dut}-64.json"));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(r["label"], dut);
        assert!(r["throughput"]["trials"].as_array().is_some_and(|t| !t.is_empty()), "{r}");
        assert!(out_dir.path().join(format!("{dut}-64.hlog")).exists());
    }
    // The baseline's own ratio is 1.00 whenever it passed any rate.
    let base: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.path().join("testpmd-64.json")).unwrap()).unwrap();
    if base["throughput"]["rate_pps"].as_f64().unwrap_or(0.0) > 0.0 {
        assert!(stdout.lines().any(|l| l.starts_with("| 64 | testpmd |") && l.contains("| 1.00 |")), "{stdout}");
        let svg = std::fs::read_to_string(out_dir.path().join("latency-64.svg")).unwrap();
        assert!(svg.contains("testpmd-64 load50"), "the plot names its lines");
    }
    // The runner leaves no EAL runtime directory of its DUTs behind.
    let leftovers: Vec<_> = std::fs::read_dir("/var/run/dpdk")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("bench-dut-")).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
