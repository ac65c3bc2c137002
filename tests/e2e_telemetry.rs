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
    // Latency arrives with the workers' next histogram flush (every 100 ms).
    let lat = loop {
        let lat = telemetry(&prefix, "/hbgw/latency").unwrap();
        if lat["/hbgw/latency"]["total"]["count"] == lan_in.len() {
            break lat;
        }
        assert!(Instant::now() < deadline, "latency never counted every frame: {lat}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(lat["/hbgw/latency"]["total"]["p99_99"].as_u64().unwrap() > 0);

    signal(&child, libc::SIGINT);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert!(out.status.success());
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "runtime dir removed at exit");
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn prometheus_serves_counters_and_a_bucketed_latency_histogram() {
    let lan_in = frames(800, 6);
    let bed = PcapBed::new(&lan_in, &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let args = bed.args(false, &["--stats-interval", "100", "--duration", "120", "--prometheus", &addr]);
    let child = Command::new(HBGW).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        assert!(Instant::now() < deadline, "metrics never showed all frames");
        if let Some(p) = http_get(&addr, "/metrics") {
            // Counters are read live; latency arrives with the workers' next
            // flush (every 100 ms), so wait for both.
            if p.contains(&format!("hbgw_port_rx_packets_total{{port=\"net_pcap0\",role=\"lan0\"}} {}", lan_in.len()))
                && p.contains(&format!("hbgw_worker_latency_seconds_count {}", lan_in.len()))
            {
                break p;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("# TYPE hbgw_worker_latency_seconds histogram"));
    assert!(page.contains(&format!("hbgw_worker_latency_seconds_bucket{{le=\"+Inf\"}} {}", lan_in.len())), "{page}");
    assert!(page.contains(&format!("hbgw_worker_latency_seconds_count {}", lan_in.len())));
    let missing = http_get(&addr, "/nope").unwrap();
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    signal(&child, libc::SIGTERM);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert!(out.status.success());
}
