//! hbgw-gen against the real gateway over a pair of net_memif links (hbgw the
//! server, the generator the client), all on --no-huge: the generator's
//! counts must agree with the gateway's, its histogram log must parse, its
//! search must produce a result, a plot and a table, and bad input must be
//! refused with one line. Short runs: these check counts, not speed.

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const GEN: &str = env!("CARGO_BIN_EXE_hbgw-gen");

fn memif(n: u8, role: &str, dir: &Path, sock: &str) -> String {
    format!("--vdev=net_memif{n},role={role},socket={},socket-abstract=no", dir.join(sock).display())
}

fn eal(dir: &Path, role: &str, lcores: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-l", lcores, "--no-pci", "--no-huge", "--no-shconf", "-m", "256"].iter().map(|s| s.to_string()).collect();
    a.push(format!("--file-prefix={}", file_prefix()));
    a.push(memif(0, role, dir, "lan.sock"));
    a.push(memif(1, role, dir, "wan.sock"));
    a
}

/// The gateway as memif server, until the test stops it.
struct Gateway {
    child: Option<Child>,
}

impl Gateway {
    fn start(dir: &Path) -> Gateway {
        let mut args = eal(dir, "server", "0,1");
        args.extend(["--", "--port-pair", "net_memif0,net_memif1", "--live", "off", "--stats-interval", "100", "--stats-socket"].iter().map(|s| s.to_string()));
        args.push(dir.join("s.sock").display().to_string());
        let child = Command::new(HBGW).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        while !(dir.join("lan.sock").exists() && dir.join("wan.sock").exists() && dir.join("s.sock").exists()) {
            assert!(start.elapsed() < Duration::from_secs(30), "the gateway did not create its memif sockets");
            std::thread::sleep(Duration::from_millis(50));
        }
        Gateway { child: Some(child) }
    }

    fn stats(&self, dir: &Path) -> serde_json::Value {
        let out = Command::new(HBGW).args(["stats", "--json", "--socket"]).arg(dir.join("s.sock")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn stop(mut self) -> Output {
        let child = self.child.take().unwrap();
        signal(&child, libc::SIGINT);
        wait_with_timeout(child, Duration::from_secs(30))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_gen(args: &[String], timeout: Duration) -> Output {
    let child = Command::new(GEN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_with_timeout(child, timeout)
}

fn gen_args(dir: &Path, app: &[&str]) -> Vec<String> {
    let mut a = eal(dir, "client", "0");
    a.push("--".into());
    a.extend(app.iter().map(|s| s.to_string()));
    a
}

fn port_counts(stats: &serde_json::Value, name: &str) -> (u64, u64) {
    let ports = stats["ports"].as_array().expect("ports in stats");
    let p = ports.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("port {name} in {stats}"));
    (p["total"]["rx"].as_u64().unwrap(), p["total"]["tx"].as_u64().unwrap())
}

/// (tag, sample count) of every interval of an hlog, read with the hdrhistogram crate.
fn hlog_intervals(path: &Path) -> Vec<(String, u64)> {
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    let text = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    for e in IntervalLogIterator::new(&text) {
        if let LogEntry::Interval(i) = e.unwrap() {
            let bytes = base64::engine::general_purpose::STANDARD.decode(i.encoded_histogram()).unwrap();
            let h: hdrhistogram::Histogram<u64> = Deserializer::new().deserialize(&mut std::io::Cursor::new(bytes)).unwrap();
            out.push((i.tag().map(|t| t.as_str().to_owned()).unwrap_or_default(), h.len()));
        }
    }
    out
}

#[test]
fn generator_counts_agree_with_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path());
    let json = dir.path().join("r.json");
    let hlog = dir.path().join("r.hlog");
    let out = run_gen(
        &gen_args(
            dir.path(),
            &["--rate", "50k", "--duration", "1", "--size", "imix", "--endpoints", "20", "--no-calibrate", "--label", "hbgw",
              "--json", json.to_str().unwrap(), "--hlog", hlog.to_str().unwrap()],
        ),
        Duration::from_secs(60),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The gateway counted every frame the generator's port took, and sent on
    // every frame it received; the generator received exactly what the
    // gateway sent (memif refuses rather than drops, so the counts are exact).
    std::thread::sleep(Duration::from_millis(400)); // a few stats intervals
    let stats = gw.stats(dir.path());
    let final_out = gw.stop();
    assert!(final_out.status.success(), "{}", String::from_utf8_lossy(&final_out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let run = &r["loads"][0];
    let (sent, received, offered, refused) =
        (run["sent"].as_u64().unwrap(), run["received"].as_u64().unwrap(), run["offered"].as_u64().unwrap(), run["refused"].as_u64().unwrap());
    let (lan_rx, _) = port_counts(&stats, "net_memif0");
    let (_, wan_tx) = port_counts(&stats, "net_memif1");
    assert_eq!(offered, sent + refused, "{r}");
    assert!(offered >= 45_000 && offered <= 55_000, "50k frames/s for 1 s: {offered}");
    assert_eq!(lan_rx, sent, "gateway rx vs generator sent\n{stats}\n{r}");
    assert_eq!(wan_tx, received, "gateway tx vs generator received\n{stats}\n{r}");
    assert_eq!(run["lost"].as_u64().unwrap(), offered - received, "{r}");
    assert_eq!(run["reordered"].as_u64().unwrap(), 0, "one worker, one queue: no reordering");
    assert_eq!(r["size"], "imix");
    assert!((r["mean_frame_bytes"].as_f64().unwrap() - 353.83).abs() < 0.1, "{r}");
    // Latency of every received frame, in a log HdrHistogram's reader parses.
    let intervals = hlog_intervals(&hlog);
    assert_eq!(intervals, vec![("run".to_owned(), received)]);
    assert!(run["latency_ns"]["p50"].as_u64().unwrap() > 0);
    if std::env::var("HBGW_TEST_PY_HDRH").is_ok_and(|v| v == "1") {
        let py = Command::new("python3")
            .args([concat!(env!("CARGO_MANIFEST_DIR"), "/perf/hlog-summary.py"), hlog.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
        let s: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
        assert_eq!(s["samples"].as_u64(), Some(received), "{s}");
    }
}

#[test]
fn search_writes_results_histograms_a_plot_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path());
    let json = dir.path().join("hbgw-64.json");
    let hlog = dir.path().join("hbgw-64.hlog");
    let out = run_gen(
        &gen_args(
            dir.path(),
            &["--search", "--max-rate", "100k", "--trial-secs", "0.2", "--latency-secs", "0.2", "--resolution", "0.1",
              "--ignore-link-speed", "--label", "hbgw", "--json", json.to_str().unwrap(), "--hlog", hlog.to_str().unwrap()],
        ),
        Duration::from_secs(90),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    gw.stop();
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let t = &r["throughput"];
    let rate = t["rate_pps"].as_f64().unwrap();
    assert!((0.0..=100_000.0).contains(&rate), "{r}");
    let trials = t["trials"].as_array().unwrap();
    assert!(!trials.is_empty() && trials.len() <= 12, "{r}");
    assert_eq!(trials[0]["asked_pps"].as_f64(), Some(100_000.0), "the search starts at the upper bound");
    assert_eq!(r["policy_dropped_templates"], 0, "a bridge drops nothing on purpose");
    if rate > 0.0 {
        let loads: Vec<f64> = r["loads"].as_array().unwrap().iter().map(|l| l["percent"].as_f64().unwrap()).collect();
        assert_eq!(loads, vec![10.0, 50.0, 90.0]);
        let tags: Vec<String> = hlog_intervals(&hlog).into_iter().map(|(t, _)| t).collect();
        assert_eq!(tags, vec!["load10", "load50", "load90"]);
        let svg = dir.path().join("p.svg");
        let plot = Command::new(GEN).args(["plot", "--out", svg.to_str().unwrap(), hlog.to_str().unwrap()]).output().unwrap();
        assert!(plot.status.success(), "{}", String::from_utf8_lossy(&plot.stderr));
        let text = std::fs::read_to_string(&svg).unwrap();
        assert_eq!(text.matches(r#"stroke-width="2""#).count(), 6, "one line per load, and its legend");
        assert!(text.contains("hbgw-64 load90"));
    }
    let table = Command::new(GEN).args(["report", "--baseline", "hbgw", json.to_str().unwrap()]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("| 64 | hbgw |"), "{table}");
}

#[test]
fn bad_input_gets_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let one_line = |out: &Output, needle: &str| {
        let (stdout, stderr) = text(out);
        assert!(!out.status.success(), "should fail: {stdout}{stderr}");
        let line = stderr.lines().find(|l| l.starts_with("hbgw-gen:")).unwrap_or_else(|| panic!("no error line: {stderr}"));
        assert!(line.contains(needle), "{line}");
    };
    // Refused before EAL starts.
    let out = run_gen(&gen_args(dir.path(), &["--size", "2000"]), Duration::from_secs(10));
    one_line(&out, "frame size 2000 is out of range");
    let out = run_gen(&gen_args(dir.path(), &["--rate", "fast"]), Duration::from_secs(10));
    one_line(&out, "rate `fast` is not understood");
    // No gateway on the other end: the links never come up.
    let start = Instant::now();
    let out = run_gen(&gen_args(dir.path(), &["--link-timeout", "1"]), Duration::from_secs(30));
    one_line(&out, "is the device under test running");
    assert!(start.elapsed() < Duration::from_secs(20));
    // A rate above the link: net_null states 10 Gbit/s (14.88 Mpps at 64 B).
    let mut args: Vec<String> = ["-l", "0", "--no-pci", "--no-huge", "--no-shconf", "-m", "256", "--vdev=net_null0", "--vdev=net_null1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("--file-prefix={}", file_prefix()));
    args.extend(["--", "--rate", "20M", "--duration", "0.1"].iter().map(|s| s.to_string()));
    let out = run_gen(&args, Duration::from_secs(30));
    one_line(&out, "above what the 10000 Mbit/s link carries");
}
