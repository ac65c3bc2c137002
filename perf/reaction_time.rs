//! Reaction time: from the control plane's write "endpoint X is Red" (one
//! `EndpointTableWriter::set_health`) to the first of X's packets a worker
//! drops. A worker thread runs the enforcing pipeline over X's frames in
//! bursts of 32, as a DPDK worker would; the writer thread turns X Red at a
//! random moment, waits for the drop, turns it Green, and repeats.
//!
//!     cargo run --release --example reaction_time [ROUNDS]
//!
//! The frames are all of one flow, so with the flow cache on (the default;
//! `FLOW_CACHE_ENTRIES=N` sets its size, 0 turns it off) every frame before
//! the write is a cache hit: this is the case where a cached verdict must
//! give way to the new health at once.
//!
//! Prints p50/p99/p99.9/max in microseconds (TSC, calibrated against the
//! monotonic clock). No DPDK: this measures state propagation and decision,
//! not rx/tx; in a running gateway a burst also waits for rx_burst.

use hbgw::gateway::port_context;
use hbgw_dataplane::enforce::EnforcementConfig;
use hbgw_dataplane::pipeline::Standalone;
use hbgw_dataplane::synth::tcp;
use hbgw_dataplane::verdict::Verdict;
use hbgw_shared::endpoint::{Endpoint, EndpointHealth, EndpointId, EndpointInterface, MacAddr};
use hbgw_shared::indicators::IndicatorSet;
use hbgw_shared::policy::Policy;
use hbgw_shared::state::GatewayState;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let policy = Policy::parse(
        "default_action = \"drop\"\n[[zone]]\nname = \"lan\"\nrole = \"lan\"\n[[zone]]\nname = \"wan\"\nrole = \"wan\"\n\
         [[rule]]\nname = \"green only\"\nsource_zones = [\"lan\"]\ndestination_zones = [\"wan\"]\naction = \"accept\"\nmin_source_heartbeat = \"green\"\n",
        Path::new("policy.toml"),
    )
    .expect("policy parses")
    .compile()
    .expect("policy compiles");
    let (state, mut writer) = GatewayState::new(policy, IndicatorSet::empty());
    let mac = [0x02, 0, 0, 0, 0, 7];
    let id = EndpointId(7);
    writer.upsert(Endpoint {
        id,
        interfaces: vec![EndpointInterface { mac: MacAddr(mac), ips: vec!["10.0.0.7".parse().expect("ip")] }],
        health: EndpointHealth::Green,
    });
    let frame = tcp(mac, [2, 0xee, 0, 0, 0, 1], [10, 0, 0, 7], [203, 0, 113, 80], 40000, 443, b"");

    let stop = Arc::new(AtomicBool::new(false));
    let dropped_at = Arc::new(AtomicU64::new(0));
    let worker = {
        let (stop, dropped_at, state) = (stop.clone(), dropped_at.clone(), state.clone());
        std::thread::spawn(move || {
            let mut p = Standalone::new(
                &state,
                EnforcementConfig {
                    flow_cache_entries: std::env::var("FLOW_CACHE_ENTRIES")
                        .map_or(1 << 16, |v| v.parse().expect("FLOW_CACHE_ENTRIES is a number")),
                    ..Default::default()
                },
                vec![port_context(0), port_context(1)],
                u64::MAX,
            )
            .pipeline;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..32 {
                    if p.verdict(&frame, 0) != Verdict::Forward && dropped_at.load(Ordering::Relaxed) == 0 {
                        dropped_at.store(hbgw::dpdk::rdtsc(), Ordering::Release);
                    }
                }
            }
        })
    };

    // Calibrate the TSC.
    let (t0, c0) = (Instant::now(), hbgw::dpdk::rdtsc());
    std::thread::sleep(Duration::from_millis(200));
    let hz = (hbgw::dpdk::rdtsc() - c0) as f64 / t0.elapsed().as_secs_f64();

    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    let mut seed = 0x1234_5678u64;
    for _ in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(200 + seed % 800));
        dropped_at.store(0, Ordering::Relaxed);
        let written = hbgw::dpdk::rdtsc();
        writer.set_health(id, EndpointHealth::Red).expect("known endpoint");
        let deadline = Instant::now() + Duration::from_secs(1);
        let at = loop {
            let at = dropped_at.load(Ordering::Acquire);
            if at != 0 {
                break at;
            }
            assert!(Instant::now() < deadline, "the worker never dropped after the write");
            std::hint::spin_loop();
        };
        let ns = (at.saturating_sub(written) as f64 / hz * 1e9) as u64;
        hist.record(ns.max(1)).expect("in range");
        writer.set_health(id, EndpointHealth::Green).expect("known endpoint");
        // Let the worker see Green again before the next round.
        std::thread::sleep(Duration::from_micros(100));
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("worker thread");
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "reaction time, health write -> first drop ({} rounds): p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.2} us",
        hist.len(),
        us(0.5),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0
    );
}
