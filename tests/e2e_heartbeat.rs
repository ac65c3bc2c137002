//! Security Heartbeat end to end through the binaries: simulated endpoints
//! (`hbgw-endpoint-sim`, each with its own pinned certificate) keep TLS
//! sessions to the gateway; one turns Red; its traffic through the gateway is
//! then dropped, and the other endpoints receive the updated Red list.
//! `hbgw endpoints` shows the view.

mod common;
use common::*;
use hbgw_dataplane::synth::tcp;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sim_bin() -> PathBuf {
    let p = Path::new(HBGW).with_file_name("hbgw-endpoint-sim");
    assert!(p.exists(), "{} is missing: build it with `cargo build --workspace`", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn stats(socket: &Path) -> Option<serde_json::Value> {
    let out = Command::new(HBGW).args(["stats", "--json", "--socket"]).arg(socket).output().ok()?;
    if !out.status.success() {
        eprintln!("stats: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn an_endpoint_turns_red_its_traffic_is_dropped_and_the_others_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = d.join("pki");
    let out = Command::new(sim_bin()).args(["certs", "--endpoints", "3", "--dir"]).arg(&certs).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // ep2 (MAC 02:5e:00:00:00:02, IP 10.77.0.3) talks to the internet, endlessly.
    let ep2 = ([0x02, 0x5e, 0, 0, 0, 2], [10, 77, 0, 3]);
    let frame = tcp(ep2.0, [2, 0xee, 0, 0, 0, 1], ep2.1, [203, 0, 113, 80], 40000, 443, b"");
    write_pcap(&d.join("lan.pcap"), &[frame]);
    std::fs::write(
        d.join("policy.toml"),
        "default_action = \"drop\"\n[[zone]]\nname = \"lan\"\nrole = \"lan\"\n[[zone]]\nname = \"wan\"\nrole = \"wan\"\n\
         [[rule]]\nname = \"green to the internet\"\nsource_zones = [\"lan\"]\ndestination_zones = [\"wan\"]\naction = \"accept\"\nmin_source_heartbeat = \"green\"\n",
    )
    .unwrap();
    let hb_port = free_port();
    std::fs::write(
        d.join("hbgw.toml"),
        format!(
            "[enforcement]\npolicy = \"{d}/policy.toml\"\n\n[events]\nlog = \"{d}/events.jsonl\"\n\n\
             [heartbeat]\nlisten = \"127.0.0.1:{hb_port}\"\nserver_cert = \"{c}/gateway.pem\"\nserver_key = \"{c}/gateway.key\"\n\
             endpoint_certs = [\"{c}/pinned.pem\"]\ninterval_ms = 1000\n",
            d = d.display(),
            c = certs.display()
        ),
    )
    .unwrap();
    let socket = d.join("stats.sock");
    let gateway = Command::new(HBGW)
        .args(["-l", "0,1", "--no-pci", "--no-huge", "--no-shconf", "-m", "512"])
        .arg(format!("--file-prefix={}", file_prefix()))
        .arg(format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", d.join("lan.pcap").display()))
        .arg("--vdev=net_null0,no-rx=1")
        .args(["--", "--port-pair", "net_pcap0,net_null0", "--live", "off", "--stats-interval", "200", "--duration", "120"])
        .arg("--config")
        .arg(d.join("hbgw.toml"))
        .arg("--stats-socket")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut gateway = gateway;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats(&socket).is_none() {
        if gateway.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = gateway.kill();
            let out = gateway.wait_with_output().unwrap();
            panic!("the gateway never answered:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Three endpoints connect; ep2 turns red after 3 s.
    let sim = Command::new(sim_bin())
        .args(["run", "--endpoints", "3", "--script", "3s:ep2=red", "--duration", "8", "--gateway"])
        .arg(format!("127.0.0.1:{hb_port}"))
        .arg("--dir")
        .arg(&certs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // While ep2 is green (and connected) its frames are forwarded.
    let wait_for = |what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = stats(&socket) {
                if pred(&r) {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let fwd = |r: &serde_json::Value| r["ports"][0]["interval"]["rx"].as_u64().unwrap_or(0) > 0 && r["ports"][1]["interval"]["tx"] == r["ports"][0]["interval"]["rx"];
    let dropped_red = |r: &serde_json::Value| {
        r["ports"][0]["interval"]["drops"]["source_heartbeat"].as_u64().unwrap_or(0) > 0 && r["ports"][1]["interval"]["tx"] == 0
    };
    wait_for("ep2 green: its traffic forwarded", &fwd);
    let view = Command::new(HBGW).args(["endpoints", "--json", "--socket"]).arg(&socket).output().unwrap();
    let view: serde_json::Value = serde_json::from_slice(&view.stdout).unwrap();
    assert!(view.to_string().contains("10.77.0.3"), "{view}");

    // ep2 turns red: every frame of it is dropped.
    wait_for("ep2 red: its traffic dropped (source_heartbeat), nothing forwarded", &dropped_red);

    let sim_out = wait_with_timeout(sim, Duration::from_secs(30));
    let printed = String::from_utf8_lossy(&sim_out.stdout);
    // The other endpoints received a list naming ep2's MAC as red.
    let told: Vec<&str> = printed.lines().filter(|l| l.contains("endpoint list") && l.contains("02:5e:00:00:00:02")).collect();
    assert!(told.iter().any(|l| l.contains("ep0")), "ep0 was not told:\n{printed}");
    assert!(told.iter().any(|l| l.contains("ep1")), "ep1 was not told:\n{printed}");

    signal(&gateway, libc::SIGINT);
    let out = wait_with_timeout(gateway, Duration::from_secs(30));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The heartbeat log names the red source.
    let events = std::fs::read_to_string(d.join("events.jsonl")).unwrap();
    assert!(events.lines().any(|l| l.contains("\"reason\":\"source_heartbeat\"") && l.contains("\"src_health\":\"red\"") && l.contains("10.77.0.3")), "{events}");
}
