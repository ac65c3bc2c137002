//! Reaction time through Security Heartbeat: from an endpoint sending
//! `HealthChange { Red }` on its TLS session to the first of its packets a
//! worker drops. The whole chain is real: TLS 1.3 with a pinned client
//! certificate on loopback, the gateway's heartbeat service decoding the frame
//! and writing the endpoint table, and a worker thread running the enforcing
//! pipeline over the endpoint's frames in bursts of 32.
//!
//!     cargo run --release --example heartbeat_reaction [ROUNDS]
//!
//! Prints p50/p99/p99.9/max in microseconds.

use hbgw::gateway::port_context;
use hbgw_controlplane::heartbeat::client::{client_config, EndpointConnection};
use hbgw_controlplane::heartbeat::pki::TestPki;
use hbgw_controlplane::heartbeat::protocol::{EndpointMessage, Hello, ReportedHealth};
use hbgw_controlplane::heartbeat::{FileDirectory, HeartbeatConfig, HeartbeatDeps, HeartbeatService, PinnedCertStore};
use hbgw_dataplane::enforce::EnforcementConfig;
use hbgw_dataplane::pipeline::Standalone;
use hbgw_dataplane::synth::tcp;
use hbgw_dataplane::verdict::Verdict;
use hbgw_shared::endpoint::{EndpointInterface, MacAddr};
use hbgw_shared::indicators::IndicatorSet;
use hbgw_shared::policy::Policy;
use hbgw_shared::state::GatewayState;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 9];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(500);
    let policy = Policy::parse(
        "default_action = \"drop\"\n[[zone]]\nname = \"lan\"\nrole = \"lan\"\n[[zone]]\nname = \"wan\"\nrole = \"wan\"\n\
         [[rule]]\nname = \"green only\"\nsource_zones = [\"lan\"]\ndestination_zones = [\"wan\"]\naction = \"accept\"\nmin_source_heartbeat = \"green\"\n",
        Path::new("policy.toml"),
    )
    .expect("policy")
    .compile()
    .expect("policy compiles");
    let (state, writer) = GatewayState::new(policy, IndicatorSet::empty());
    let writer = Arc::new(Mutex::new(writer));

    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::generate("localhost", &["ep0".to_owned()]).expect("pki");
    pki.write_to(dir.path()).expect("pki files");
    let certs = PinnedCertStore::new();
    certs.add_pem_file(&dir.path().join("pinned.pem")).expect("pinned");
    let service = HeartbeatService::start(
        HeartbeatConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            server_cert: dir.path().join("gateway.pem"),
            server_key: dir.path().join("gateway.key"),
            ..HeartbeatConfig::default()
        },
        HeartbeatDeps {
            table: writer.clone(),
            certs,
            directory: Arc::new(FileDirectory::from_users(Vec::new())),
            zone_of: Arc::new(|_| Some("LAN".to_owned())),
            seen_macs: None,
        },
    )
    .await
    .expect("heartbeat service");

    // The worker: the enforcing pipeline over the endpoint's frames.
    let frame = tcp(MAC, [2, 0xee, 0, 0, 0, 1], [10, 0, 0, 9], [203, 0, 113, 80], 40000, 443, b"");
    let stop = Arc::new(AtomicBool::new(false));
    let dropped_at = Arc::new(AtomicU64::new(0));
    let forwarding = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stop, dropped_at, forwarding, state) = (stop.clone(), dropped_at.clone(), forwarding.clone(), state.clone());
        std::thread::spawn(move || {
            let mut p = Standalone::new(&state, EnforcementConfig::default(), vec![port_context(0), port_context(1)], u64::MAX).pipeline;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..32 {
                    let forwarded = p.verdict(&frame, 0) == Verdict::Forward;
                    forwarding.store(forwarded, Ordering::Relaxed);
                    if !forwarded && dropped_at.load(Ordering::Relaxed) == 0 {
                        dropped_at.store(hbgw::dpdk::rdtsc(), Ordering::Release);
                    }
                }
            }
        })
    };

    let ep = &pki.endpoints[0];
    let cfg = client_config(pki.ca_pem.as_bytes(), ep.cert_pem.as_bytes(), ep.key_pem.as_bytes(), false).expect("client tls");
    let mut conn = EndpointConnection::connect(service.local_addr(), "localhost", cfg).await.expect("connect");
    conn.send(EndpointMessage::Hello(Hello {
        endpoint_id: "agent-9".into(),
        name: "PC9".into(),
        health: ReportedHealth::Green,
        interfaces: vec![EndpointInterface { mac: MacAddr(MAC), ips: vec!["10.0.0.9".parse().expect("ip")] }],
        users: vec![],
    }))
    .await
    .expect("hello");
    // Read the gateway's messages in the background so its session never blocks.
    let wait_for = |want: bool, forwarding: Arc<AtomicBool>| async move {
        let deadline = Instant::now() + Duration::from_secs(5);
        while forwarding.load(Ordering::Relaxed) != want {
            assert!(Instant::now() < deadline, "the worker never saw the change");
            tokio::time::sleep(Duration::from_micros(50)).await;
        }
    };
    let (t0, c0) = (Instant::now(), hbgw::dpdk::rdtsc());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hz = (hbgw::dpdk::rdtsc() - c0) as f64 / t0.elapsed().as_secs_f64();
    wait_for(true, forwarding.clone()).await;

    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    for i in 0..rounds {
        tokio::time::sleep(Duration::from_micros(300 + (i as u64 * 7919) % 700)).await;
        dropped_at.store(0, Ordering::Relaxed);
        let sent = hbgw::dpdk::rdtsc();
        conn.send(EndpointMessage::HealthChange { health: ReportedHealth::Red, reason: None }).await.expect("send red");
        // Let the gateway's session task run until the worker drops.
        let deadline = Instant::now() + Duration::from_secs(5);
        let at = loop {
            let at = dropped_at.load(Ordering::Acquire);
            if at != 0 {
                break at;
            }
            assert!(Instant::now() < deadline, "no drop after Red");
            tokio::task::yield_now().await;
        };
        hist.record(((at.saturating_sub(sent)) as f64 / hz * 1e9).max(1.0) as u64).expect("in range");
        conn.send(EndpointMessage::HealthChange { health: ReportedHealth::Green, reason: None }).await.expect("send green");
        wait_for(true, forwarding.clone()).await;
        // Drain whatever the gateway sent (lists, welcome) without blocking.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_micros(10), conn.recv()).await {}
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("worker");
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "heartbeat Red -> first drop, through TLS ({} rounds): p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        hist.len(),
        us(0.5),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0
    );
    service.shutdown().await;
}
