//! Central end to end through the binaries: a reference Central
//! (`hbgw-central`, HTTPS, SQLite, its own CA), a gateway enrolled with it
//! forwarding an endless stream of frames on DPDK virtual devices, and the
//! admin CLI changing what Central shares while traffic flows.

mod common;
use common::*;
use hbgw_dataplane::synth::tcp;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    let p = Path::new(HBGW).with_file_name(name);
    assert!(p.exists(), "{} is missing: build it with `cargo build --workspace`", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Central process serving `data` on a fixed port (so that it can be
/// killed and restarted at the same URL).
struct CentralProc {
    data: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl CentralProc {
    fn init(dir: &Path) -> Self {
        let data = dir.join("central");
        let out = Command::new(bin("hbgw-central")).arg("--data").arg(&data).arg("init").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut c = CentralProc { data, port: free_port(), child: None };
        c.start();
        c
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(self.data.join("url"));
        let child = Command::new(bin("hbgw-central"))
            .arg("--data")
            .arg(&self.data)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.data.join("url").exists() {
            assert!(Instant::now() < deadline, "Central did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: Central vanishes mid-conversation.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(bin("hbgw-central")).arg("--data").arg(&self.data).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "hbgw-central {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0i64;
        loop {
            let text = self.admin(&["logs", "--json", "--limit", "100000", "--after", &after.to_string()]);
            let page: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if page.is_empty() {
                return all;
            }
            after = page.last().unwrap()["id"].as_i64().unwrap();
            all.extend(page);
        }
    }
}

impl Drop for CentralProc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Gateway {
    child: Option<Child>,
    socket: PathBuf,
    /// Where its stdout and stderr go: files, not pipes, so that a
    /// chatty log can never fill a pipe nobody reads and stall the gateway.
    out: (PathBuf, PathBuf),
    /// Its EAL file prefix (its runtime directory is removed if it had to be killed).
    prefix: String,
}

impl Gateway {
    /// A gateway whose LAN port replays `pcap` forever.
    fn start(dir: &Path, config: &Path, pcap: &Path) -> Self {
        let socket = dir.join("stats.sock");
        let out = (dir.join("gateway.stdout"), dir.join("gateway.stderr"));
        let prefix = file_prefix();
        let child = Command::new(HBGW)
            .args(["-l", "0,1", "--no-pci", "--no-huge", "--no-shconf", "-m", "512"])
            .arg(format!("--file-prefix={prefix}"))
            .arg(format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()))
            .arg("--vdev=net_null0,no-rx=1")
            .args(["--", "--port-pair", "net_pcap0,net_null0", "--live", "off", "--stats-interval", "200", "--duration", "180"])
            .arg("--config")
            .arg(config)
            .arg("--stats-socket")
            .arg(&socket)
            .stdout(std::fs::File::create(&out.0).unwrap())
            .stderr(std::fs::File::create(&out.1).unwrap())
            .spawn()
            .unwrap();
        let mut g = Gateway { child: Some(child), socket, out, prefix };
        g.wait_for("the stats socket answers", |_| true);
        g
    }

    fn stats(&self) -> Option<Value> {
        let out = Command::new(HBGW).args(["stats", "--json", "--socket"]).arg(&self.socket).output().ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    fn endpoints(&self) -> Value {
        let out = Command::new(HBGW).args(["endpoints", "--json", "--socket"]).arg(&self.socket).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(r) = self.stats() {
                if pred(&r) {
                    return r;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().unwrap().is_some() {
                    self.child = None;
                    let (o, e) = self.output();
                    panic!("the gateway exited while waiting for {what}:\n{o}\n{e}");
                }
            }
            if Instant::now() > deadline {
                let last = self.stats();
                let (o, e) = self.output();
                panic!("timed out waiting for: {what}; last stats: {last:?}\ngateway stdout:\n{o}\ngateway stderr:\n{e}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the gateway has written so far (stdout, stderr).
    fn output(&self) -> (String, String) {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (read(&self.out.0), read(&self.out.1))
    }

    fn stop(&mut self) -> (String, String) {
        let child = self.child.take().unwrap();
        signal(&child, libc::SIGINT);
        let status = wait_with_timeout(child, Duration::from_secs(30)).status;
        let t = self.output();
        assert!(status.success(), "{}\n{}", t.0, t.1);
        t
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A test that failed midway: killed, it cannot remove its EAL
            // runtime directory, so the test does.
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
        }
    }
}

fn forwarded(r: &Value) -> bool {
    r["ports"][0]["interval"]["rx"].as_u64().unwrap_or(0) > 0 && r["ports"][1]["interval"]["tx"] == r["ports"][0]["interval"]["rx"]
}

fn dropped_for(reason: &'static str) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["ports"][0]["interval"]["drops"][reason].as_u64().unwrap_or(0) > 0 && r["ports"][1]["interval"]["tx"] == 0
}

const POLICY: &str = "default_action = \"accept\"\n[[zone]]\nname = \"lan\"\nrole = \"lan\"\n[[zone]]\nname = \"wan\"\nrole = \"wan\"\n";

/// One endpoint (MAC 02:5e:00:00:00:01, IP 10.77.0.2) talks to 203.0.113.80, endlessly.
fn bed(dir: &Path, central: &CentralProc, heartbeat: Option<u16>) -> PathBuf {
    let frame = tcp([0x02, 0x5e, 0, 0, 0, 1], [2, 0xee, 0, 0, 0, 1], [10, 77, 0, 2], [203, 0, 113, 80], 40000, 443, b"");
    write_pcap(&dir.join("lan.pcap"), &[frame]);
    let token = central.admin(&["token"]).trim().to_owned();
    let mut cfg = format!(
        "[events]\nlog = \"{d}/events.jsonl\"\nrate_limit_ms = 300\nmax_bytes = 1000000000\n\n\
         [central]\nurl = \"{url}\"\nca = \"{c}/ca.pem\"\nstate_dir = \"{d}/state\"\nenrollment_token = \"{token}\"\nwait_s = 5\nupload_interval_ms = 100\nhealth_interval_s = 1\n",
        d = dir.display(),
        url = central.url(),
        c = central.data.display(),
    );
    if let Some(port) = heartbeat {
        central.admin(&["gateway-cert", "gw1", "--out", &dir.join("gw").display().to_string()]);
        cfg.push_str(&format!(
            "\n[heartbeat]\nlisten = \"127.0.0.1:{port}\"\nserver_cert = \"{g}/gateway.pem\"\nserver_key = \"{g}/gateway.key\"\ninterval_ms = 1000\n",
            g = dir.join("gw").display()
        ));
    }
    let path = dir.join("hbgw.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn policy_indicators_and_endpoint_certificates_follow_central() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = CentralProc::init(d);
    let hb_port = free_port();
    let config = bed(d, &central, Some(hb_port));
    let mut gw = Gateway::start(d, &config, &d.join("lan.pcap"));

    // Enrolled, no policy yet: fail-closed (the default) drops everything.
    let r = gw.wait_for("connected to Central, failing closed", |r| {
        r["central"]["state"] == "connected" && dropped_for("default_drop")(r)
    });
    assert_eq!(r["central"]["policy_from_central"], false);
    assert!(r["central"]["gateway_id"].as_str().unwrap().starts_with("gw-"), "{r}");

    std::fs::write(d.join("policy.toml"), POLICY).unwrap();
    central.admin(&["policy", &d.join("policy.toml").display().to_string()]);
    gw.wait_for("the policy from Central lets the traffic pass", forwarded);

    // An indicator posted at Central: the gateway drops matching traffic.
    central.admin(&["indicator", "add", "203.0.113.80", "--audit-id", "MDR-7"]);
    let r = gw.wait_for("the indicator drops the traffic", dropped_for("threat_indicator"));
    assert_eq!(r["central"]["indicators"], 1);
    // A bad indicator is refused by Central and changes nothing.
    let out = Command::new(bin("hbgw-central")).arg("--data").arg(&central.data).args(["indicator", "add", "bad..example"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty label"), "{}", String::from_utf8_lossy(&out.stderr));
    // Removed: it passes again.
    central.admin(&["indicator", "remove", "203.0.113.80"]);
    gw.wait_for("the removed indicator no longer drops", forwarded);
    // Log only: the feed settings travel too.
    central.admin(&["indicator", "add", "203.0.113.0/24", "--audit-id", "MDR-8"]);
    gw.wait_for("the network indicator drops", dropped_for("threat_indicator"));
    central.admin(&["feeds", "--action", "log_only"]);
    gw.wait_for("log only: traffic passes", forwarded);

    // An endpoint registered at Central can open a heartbeat session.
    let pki = d.join("pki");
    central.admin(&["endpoint", "add", "ep0", "--out", &pki.display().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = gw.stats().unwrap_or_default();
        if r["central"]["endpoint_certs"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the certificate never reached the gateway: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sim = Command::new(bin("hbgw-endpoint-sim"))
        .args(["run", "--endpoints", "1", "--duration", "60", "--gateway", &format!("127.0.0.1:{hb_port}")])
        .arg("--dir")
        .arg(&pki)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sim = scopeguard(sim);
    let connected = |gw: &Gateway, n: u64| gw.endpoints()["summary"]["connected"].as_u64() == Some(n);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !connected(&gw, 1) {
        assert!(Instant::now() < deadline, "ep0 never connected: {}", gw.endpoints());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Deleted at Central: its session is closed, and it cannot come back.
    central.admin(&["endpoint", "remove", "ep0"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !connected(&gw, 0) {
        assert!(Instant::now() < deadline, "ep0's session stayed open: {}", gw.endpoints());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(connected(&gw, 0), "ep0 reconnected without a pinned certificate: {}", gw.endpoints());
    let _ = sim.0.kill();

    // The health summary reached Central.
    let health: Value = serde_json::from_str(&central.admin(&["health"])).unwrap();
    assert!(health[0]["summary"]["revision"].as_u64().unwrap_or(0) >= 1, "{health}");

    let (stdout, _) = gw.stop();
    assert!(stdout.contains("final stats"), "{stdout}");
}

/// Kills the child (by PID) when dropped.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: Child) -> Guard {
    Guard(c)
}

#[test]
fn logs_arrive_exactly_once_across_outages_and_a_restart_keeps_the_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut central = CentralProc::init(d);
    let config = bed(d, &central, None);
    std::fs::write(d.join("policy.toml"), POLICY).unwrap();
    central.admin(&["policy", &d.join("policy.toml").display().to_string()]);
    central.admin(&["indicator", "add", "203.0.113.80", "--audit-id", "MDR-1"]);
    let mut gw = Gateway::start(d, &config, &d.join("lan.pcap"));
    gw.wait_for("the indicator drops the traffic", dropped_for("threat_indicator"));

    // IoC hits go on while Central is killed and restarted.
    std::thread::sleep(Duration::from_secs(1));
    central.kill();
    gw.wait_for("the gateway sees Central gone", |r| r["central"]["state"] == "disconnected");
    let r = gw.wait_for("events spool while Central is down", |r| r["central"]["events_spooled"].as_u64().unwrap_or(0) >= 3);
    assert!(dropped_for("threat_indicator")(&r), "the last-known-good state is still enforced: {r}");
    central.start();
    gw.wait_for("reconnected", |r| r["central"]["state"] == "connected");

    // Stop the hits, let the spool drain, and count.
    central.admin(&["indicator", "remove", "--audit-id", "MDR-1"]);
    gw.wait_for("traffic passes", forwarded);
    std::thread::sleep(Duration::from_secs(1));
    gw.wait_for("the spool is empty", |r| r["central"]["events_spooled"] == 0);
    let local: Vec<Value> = std::fs::read_to_string(d.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at_central = central.logs();
    assert!(local.len() >= 4, "too few events to count: {}", local.len());
    assert_eq!(at_central.len(), local.len(), "every event arrives exactly once");
    let seqs: Vec<u64> = at_central.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=local.len() as u64).collect::<Vec<_>>(), "in order, none twice, none missing");
    for (l, c) in local.iter().zip(&at_central) {
        assert_eq!(l, &c["record"]);
    }
    assert!(local.iter().any(|e| e["audit_id"] == "MDR-1" && e["verdict"] == "dropped"), "{local:?}");

    // Restart the gateway while Central is down: the same verdicts.
    central.admin(&["indicator", "add", "203.0.113.80", "--audit-id", "MDR-2"]);
    gw.wait_for("the new indicator drops", dropped_for("threat_indicator"));
    std::thread::sleep(Duration::from_millis(1500)); // the state file is written within a second
    central.kill();
    gw.stop();
    let mut gw = Gateway::start(d, &config, &d.join("lan.pcap"));
    let r = gw.wait_for("the restarted gateway enforces the last-known-good state", dropped_for("threat_indicator"));
    assert_eq!(r["central"]["state"], "disconnected", "{r}");
    assert!(r["central"]["policy_from_central"] == true && r["central"]["indicators"] == 1, "{r}");
    gw.stop();

    // A corrupt state file: a one-line error and no start.
    std::fs::write(d.join("state/central-state.json"), "{\"format\":1,\"revision\":3,\"snap").unwrap();
    let out = Command::new(HBGW)
        .args(["-l", "0,1", "--no-pci", "--no-huge", "--no-shconf", "-m", "512"])
        .arg(format!("--file-prefix={}", file_prefix()))
        .args(["--vdev=net_null0", "--vdev=net_null1", "--", "--port-pair", "net_null0,net_null1", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("central-state.json")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("corrupt") && line.contains("delete it"), "{line}");
}
