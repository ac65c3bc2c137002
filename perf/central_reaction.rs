//! Central -> gateway: from an indicator posted at Central to the first
//! matching packet a worker drops, and the full sync of a large feed.
//!
//!     cargo build --release -p hbgw-controlplane --bin hbgw-central
//!     cargo run --release --example central_reaction -- single [ROUNDS]
//!     cargo run --release --example central_reaction -- batch [ROUNDS] [SIZE] [--gap-ms G] [--refresh K] [--layout split|shared]
//!     cargo run --release --example central_reaction -- sync [INDICATORS]
//!
//! `single` and `batch` take `--held N`: Central holds N indicators (in
//! 10.0.0.0/8) before the gateway starts, and the gateway enforces them all
//! before the first round. `--gap-ms G` waits G ms before each round (the
//! rounds are then batches arriving apart, each on a system done with the
//! one before; Central first finishes writing the held indicators into its
//! table); without it each round starts as soon as the one before dropped
//! (back to back: the gateway may still be committing and compacting the
//! previous batch).
//!
//! A real `hbgw-central` runs as a child process (HTTPS, SQLite). In this
//! process, the gateway's Central client (the one `hbgw` runs, on its own
//! current-thread runtime, like the control plane) enrolls and long-polls,
//! and a worker thread runs the enforcing pipeline over a frame to the next
//! indicator's address, in bursts, as a DPDK worker would (no rx/tx).
//!
//! `--layout split` (the default on two CPUs or more): Central runs pinned
//! to CPU 1, as it would on its own machine, and this process (the
//! gateway's control plane, its worker and the admin's requests) to CPU 0,
//! the worker polling a burst every ~0.1 ms instead of spinning (a worker
//! core of its own would be a third CPU). `--layout shared`: nothing is
//! pinned and the worker spins, so everything competes for both CPUs and
//! the control plane also takes time from the worker's (the layout of the
//! runs before 2026-11-22T21:00Z).
//!
//! * `single`: each round posts one indicator (admin API) and waits for the
//!   worker's first drop of a frame to it; indicators accumulate.
//! * `batch --refresh K`: round R re-issues the audit IDs of round R - K
//!   with new values (a feed refreshing what it published), so the gateway
//!   holds at most K batches more than `--held` however many rounds run:
//!   enough rounds for a p99 that is not just the slowest one.
//! * `batch`: each round posts SIZE indicators in one request (the frame's
//!   address is the last of them).
//! * `sync`: Central holds INDICATORS; a gateway with an empty state
//!   directory starts; time to the whole set enforced and to its state file
//!   written, and this process's resident memory before, after (steady)
//!   and at its peak (Central's memory is its own process).

use hbgw::gateway::port_context;
use hbgw_controlplane::central::client::{load_start, CentralClient, CentralSetup};
use hbgw_controlplane::central::http::HttpsClient;
use hbgw_dataplane::enforce::EnforcementConfig;
use hbgw_dataplane::pipeline::Standalone;
use hbgw_dataplane::synth::tcp;
use hbgw_dataplane::verdict::Verdict;
use hbgw_shared::config::{BeforeFirstSync, CentralSection};
use hbgw_shared::indicators::IndicatorSet;
use hbgw_shared::policy::CompiledPolicy;
use hbgw_shared::state::GatewayState;
use hbgw_shared::stats::CentralStatus;
use std::path::{Path, PathBuf};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct CentralChild {
    child: Child,
    data: PathBuf,
    admin: HttpsClient,
    token: String,
}

impl Drop for CentralChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn central_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let p = exe.parent().and_then(Path::parent).expect("target dir").join("hbgw-central");
    assert!(p.exists(), "{} missing: cargo build --release -p hbgw-controlplane --bin hbgw-central", p.display());
    p
}

fn start_central(dir: &Path, own_cpu: bool) -> CentralChild {
    let data = dir.join("central");
    let st = Command::new(central_bin()).arg("--data").arg(&data).arg("init").stdout(Stdio::null()).status().expect("init");
    assert!(st.success());
    let mut serve = Command::new(central_bin());
    if own_cpu {
        // SAFETY: the closure only makes one async-signal-safe system call.
        unsafe {
            serve.pre_exec(|| if pin(CENTRAL_CPU) { Ok(()) } else { Err(std::io::Error::last_os_error()) });
        }
    }
    let child = serve
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        // CENTRAL_LOG=1 (with RUST_LOG) shows Central's log lines too.
        .stderr(if std::env::var_os("CENTRAL_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .expect("serve");
    let t0 = Instant::now();
    while !data.join("url").exists() {
        assert!(t0.elapsed() < Duration::from_secs(20), "Central did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = std::fs::read_to_string(data.join("url")).expect("url").trim().to_owned();
    let admin = HttpsClient::new(&url, &std::fs::read(data.join("ca.pem")).expect("ca")).expect("client");
    let token = std::fs::read_to_string(data.join("admin.token")).expect("token").trim().to_owned();
    CentralChild { child, data, admin, token }
}

impl CentralChild {
    fn call(&self, rt: &tokio::runtime::Runtime, method: hyper::Method, path: &str, body: Option<(&str, Vec<u8>)>) -> serde_json::Value {
        let (_, b) = rt
            .block_on(self.admin.call(method, path, Some(&self.token), body, Duration::from_secs(3600), 1 << 30))
            .expect("admin call");
        serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null)
    }
    fn url(&self) -> String {
        std::fs::read_to_string(self.data.join("url")).expect("url").trim().to_owned()
    }
}

/// Starts the gateway's Central client on its own thread; returns the status.
/// The gateway's Central client, running on a thread of its own.
struct GatewayClient {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GatewayClient {
    /// Stops the client (its tasks, and the persist thread, which writes
    /// into the state directory) before the temporary directory holding it
    /// goes: one still appending to its journal as the directory was
    /// removed left the directory behind.
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_gateway(
    central: &CentralChild,
    rt: &tokio::runtime::Runtime,
    state: Arc<GatewayState>,
    dir: &Path,
) -> (Arc<Mutex<CentralStatus>>, GatewayClient) {
    let token = central.call(rt, hyper::Method::POST, "/v1/admin/tokens", None)["token"].as_str().expect("token").to_owned();
    let section = CentralSection {
        url: central.url(),
        ca: central.data.join("ca.pem"),
        state_dir: dir.join("gw-state"),
        enrollment_token: Some(token),
        name: "bench".into(),
        before_first_sync: BeforeFirstSync::FailOpen,
        wait_s: 25,
        max_indicators: 20_000_000,
        max_update_bytes: 4 << 30,
        spool_max_events: 1000,
        upload_interval_ms: 1000,
        health_interval_s: 60,
        feeds: vec![],
    };
    let start = load_start(&section).expect("state dir");
    let status = Arc::new(Mutex::new(CentralStatus::default()));
    let setup = CentralSetup { config: section, start, certs: None, status: status.clone() };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let client = CentralClient::start(setup, state, Box::new(|| serde_json::json!({}))).expect("client");
            let _ = stopped.await;
            client.finish();
        });
    });
    (status, GatewayClient { stop: Some(stop), thread: Some(thread) })
}

/// This process's resident memory now (`VmRSS`) or at its peak (`VmHWM`), KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn addr(i: usize) -> [u8; 4] {
    // 100.64.0.0/10, one address per round.
    [100, 64 + (i >> 16) as u8 % 64, (i >> 8) as u8, i as u8]
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Posts `n` indicators at Central (plain lists of 500,000).
fn preload(central: &CentralChild, rt: &tokio::runtime::Runtime, n: usize) {
    let t = Instant::now();
    let mut posted = 0;
    while posted < n {
        let chunk = (n - posted).min(500_000);
        let mut body = String::with_capacity(chunk * 24);
        for i in posted..posted + chunk {
            // 10.0.0.0/8 holds 16M distinct addresses, 100.64/10 (used by the rounds) 4M more.
            let a = if i < 1 << 24 { [10, (i >> 16) as u8, (i >> 8) as u8, i as u8] } else { [11, (i >> 16) as u8, (i >> 8) as u8, i as u8] };
            body.push_str(&format!("{}.{}.{}.{} S-{i}\n", a[0], a[1], a[2], a[3]));
        }
        central.call(rt, hyper::Method::POST, "/v1/admin/indicators?format=list", Some(("text/plain", body.into_bytes())));
        posted += chunk;
    }
    println!("posted {n} indicators at Central in {:.1} s", t.elapsed().as_secs_f64());
}

/// With `--layout split` (the default): the CPU of this process (the
/// gateway's control plane, its worker, the admin) and Central's.
const GATEWAY_CPU: usize = 0;
const CENTRAL_CPU: usize = 1;

/// Pins the calling thread (and the threads it starts after) to `cpu`;
/// false if this machine has no such CPU (then nothing is pinned).
fn pin_current_thread(cpu: usize) -> bool {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return false;
    }
    pin(cpu)
}

fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, CPU_SET writes within
    // it, and sched_setaffinity only reads it (it is also async-signal-safe,
    // as `pre_exec` needs).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn main() {
    // RUST_LOG=hbgw_controlplane=debug shows where each sync answer's time goes.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let layout = match args.iter().position(|a| a == "--layout") {
        Some(i) => {
            let l = args.get(i + 1).cloned().unwrap_or_default();
            args.drain(i..i + 2);
            l
        }
        None => "split".to_owned(),
    };
    // `split`: Central on a CPU of its own, as on its own machine, and the
    // gateway (control plane and a polling worker) on the other.
    // `shared`: nothing pinned, the worker spinning (every process and
    // thread competes for both CPUs; the earlier runs' layout).
    let mut option = |name: &str| match args.iter().position(|a| a == name) {
        Some(i) => {
            let n = args.get(i + 1).and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| panic!("{name} N"));
            args.drain(i..i + 2);
            n
        }
        None => 0,
    };
    let held = option("--held") as usize;
    let split = match layout.as_str() {
        "split" => pin_current_thread(GATEWAY_CPU),
        "shared" => false,
        other => panic!("--layout {other}: use split or shared"),
    };
    let gap = Duration::from_millis(option("--gap-ms"));
    let refresh = option("--refresh") as usize;
    let mode = args.first().map(String::as_str).unwrap_or("single");
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let central = start_central(dir.path(), split);
    let (state, _writer) = GatewayState::new(CompiledPolicy::default(), IndicatorSet::empty());

    if mode == "sync" {
        let n = arg(1, 1_000_000);
        preload(&central, &rt, n);
        let rss0 = rss_kib();
        let t = Instant::now();
        let (status, _client) = start_gateway(&central, &rt, state.clone(), dir.path());
        // A snapshot publishes one base set, no layers: its records are
        // the indicators in force.
        while state.indicators().records() < n {
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = t.elapsed();
        // Steady state: the snapshot written as the state file (the answer
        // is held until then) and its parsed form freed.
        let state_file = dir.path().join("gw-state").join(hbgw_controlplane::central::client::STATE_FILE);
        let t_written = Instant::now();
        while !state_file.exists() {
            assert!(t_written.elapsed() < Duration::from_secs(600), "the state file was never written");
            std::thread::sleep(Duration::from_millis(100));
        }
        let written = t.elapsed();
        std::thread::sleep(Duration::from_secs(3));
        let (rss1, peak) = (rss_kib(), status_kib("VmHWM:"));
        println!(
            "full sync of {n} indicators: enforced after {:.2} s, state file written after {:.2} s; gateway process RSS {} MiB -> {} MiB (+{} MiB, {} B/indicator), peak {} MiB; revision {}",
            took.as_secs_f64(),
            written.as_secs_f64(),
            rss0 / 1024,
            rss1 / 1024,
            (rss1.saturating_sub(rss0)) / 1024,
            (rss1.saturating_sub(rss0)) * 1024 / n as u64,
            peak / 1024,
            status.lock().map(|s| s.revision).unwrap_or(0)
        );
        return;
    }

    let rounds = arg(1, if mode == "batch" { 5 } else { 200 });
    let batch = if mode == "batch" { arg(2, 100_000) } else { 1 };
    // The batches the gateway holds at the end.
    let slots = if refresh > 0 { rounds.min(refresh) } else { rounds };
    // A round's frame must not match what the gateway already holds:
    // 100.64/10 has 4M addresses, reused only once their indicators are
    // replaced (`--refresh`), so the held batches and the next must fit.
    let live = slots + usize::from(refresh > 0);
    assert!(live * batch <= 1 << 22, "{live} batches of {batch} exceed 100.64/10: fewer rounds, or --refresh");
    preload(&central, &rt, held);
    let (status, _client) = start_gateway(&central, &rt, state.clone(), dir.path());
    let t0 = Instant::now();
    let held_now = || status.lock().map(|s| s.indicators).unwrap_or(0);
    while status.lock().map(|s| s.state != "connected").unwrap_or(true) || held_now() < held as u64 {
        assert!(t0.elapsed() < Duration::from_secs(600), "the gateway never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("gateway connected, {} indicators held", held_now());
    if !gap.is_zero() {
        // Settled rounds: Central's table holds the preloaded indicators
        // (its status call finishes materialising them) before the first.
        let t = Instant::now();
        let status = central.call(&rt, hyper::Method::GET, "/v1/admin/status", None);
        println!("Central settled ({status}) in {:.1} s", t.elapsed().as_secs_f64());
    }

    // The worker: bursts of 32 over the current round's frame.
    let frames: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..rounds).map(|r| tcp([2, 0, 0, 0, 0, 7], [2, 0xee, 0, 0, 0, 1], [172, 16, 0, 7], addr(r * batch + batch - 1), 40000, 443, b"")).collect(),
    );
    let round = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(Mutex::new(None::<Instant>));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (frames, round, dropped, stop, state) = (frames.clone(), round.clone(), dropped.clone(), stop.clone(), state.clone());
        std::thread::spawn(move || {
            let mut p = Standalone::new(&state, EnforcementConfig::default(), vec![port_context(0), port_context(1)], u64::MAX).pipeline;
            let mut seen = usize::MAX;
            while !stop.load(Ordering::Relaxed) {
                let r = round.load(Ordering::Acquire);
                for _ in 0..32 {
                    if seen != r && p.verdict(&frames[r], 0) != Verdict::Forward {
                        *dropped.lock().expect("lock") = Some(Instant::now());
                        seen = r;
                    }
                }
                if split {
                    // A burst every ~0.1 ms (a sleep's granularity), not
                    // spinning: the worker's own CPU would be a third one.
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        })
    };

    let mut lat_ms = Vec::with_capacity(rounds);
    let mut central_ms = Vec::with_capacity(rounds);
    for r in 0..rounds {
        std::thread::sleep(gap);
        round.store(r, Ordering::Release);
        *dropped.lock().expect("lock") = None;
        let mut body = String::with_capacity(batch * 40);
        body.push_str("{\"indicators\":[");
        // The audit IDs' slot: the round's own, or with `--refresh K` the
        // one round R - K used (its indicators are replaced).
        let slot = if refresh > 0 { r % refresh } else { r };
        for i in 0..batch {
            let a = addr(r * batch + i);
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!("{{\"value\":\"{}.{}.{}.{}\",\"audit_id\":\"B-{slot}-{i}\"}}", a[0], a[1], a[2], a[3]));
        }
        body.push_str("]}");
        let body = body.into_bytes();
        let t = Instant::now();
        central.call(&rt, hyper::Method::POST, "/v1/admin/indicators", Some(("application/json", body)));
        central_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let at = loop {
            if let Some(at) = *dropped.lock().expect("lock") {
                break at;
            }
            assert!(t.elapsed() < Duration::from_secs(600), "round {r}: never dropped");
            std::thread::sleep(Duration::from_micros(200));
        };
        lat_ms.push(at.duration_since(t).as_secs_f64() * 1e3);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
    let mut c = central_ms.clone();
    c.sort_by(|a, b| a.total_cmp(b));
    println!("of which the admin POST at Central (validated, committed, answered): p50 {:.1} ms, max {:.1} ms", percentile(&c, 0.5), c[c.len() - 1]);
    if mode == "batch" {
        let each: Vec<String> = lat_ms.iter().map(|v| format!("{v:.0}")).collect();
        println!("posted -> first drop by round (ms): {}", each.join(" "));
    }
    // The last round's commit (after its drop was seen) before counting.
    let t_end = Instant::now();
    while held_now() < (held + slots * batch) as u64 && t_end.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut sorted = lat_ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{mode}: {rounds} rounds of {batch} indicator(s) (held at the end: {}): posted -> first drop p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        held_now(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1]
    );
}
