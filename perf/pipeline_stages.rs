//! Cycles per packet of each stage of the enforcing pipeline, on the frames
//! and state `perf/make-state.py` writes (no DPDK: the stages alone, in a
//! loop over the frames as a worker would run them, bursts of 32):
//!
//!     cargo run --release --example pipeline_stages -- STATE_DIR [ROUNDS]
//!
//! * parse — `parse_frame` only;
//! * classify — parse + seen-MAC + decide against no policy, no indicators,
//!   no endpoints (the fixed cost of classifying), minus parse;
//! * lookups — the same with 100,000 endpoints and 1,000,000 indicators but
//!   no rules (endpoint health by MAC/IP, indicators by IP, name and URL),
//!   minus classify;
//! * rules — the same with the 100-rule policy, minus lookups.
//!
//! Every ~1M frames the pipeline does its periodic housekeeping and the
//! benchmark plays the control plane's part (seen-MAC buffers returned,
//! events drained), as a worker's 100 ms flush period would.
//!
//! The stages are measured in ROUNDS interleaved rounds (default 7) and each
//! figure is the median round, so that a burst of load from other processes
//! on this shared machine skews one round rather than one stage.
//!
//! What a packet costs in rx/tx is the rest of the worker's cycles per packet
//! measured under DPDK (perf/bench-enforce.sh).

use hbgw::gateway::{load_enforcement, port_context};
use hbgw_dataplane::parse::parse_frame;
use hbgw_dataplane::pipeline::Standalone;
use hbgw_shared::config::EnforcementSection;
use hbgw_shared::policy::CompiledPolicy;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

const TARGET_PACKETS: usize = 20_000_000;

fn frames(path: &Path) -> Vec<Vec<u8>> {
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(path).expect("traffic.pcap")).expect("a pcap");
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.expect("a packet").data.into_owned());
    }
    out
}

/// Frames between two housekeeping calls: about a worker's flush period
/// (100 ms) at ~100 ns a frame.
const HOUSEKEEPING_EVERY: usize = 1 << 20;

/// Runs `step` over `packets` frames, and `housekeeping` as often as a worker
/// would; returns (ns per packet, TSC cycles per packet).
fn measure<S>(
    frames: &[Vec<u8>],
    packets: usize,
    s: &mut S,
    mut step: impl FnMut(&mut S, &[u8], u64),
    mut housekeeping: impl FnMut(&mut S),
) -> (f64, f64) {
    let reps = (packets / frames.len()).max(1);
    // Warm up caches and branch predictors once.
    for f in frames {
        step(s, f, hbgw::dpdk::rdtsc());
    }
    housekeeping(s);
    let t = Instant::now();
    let c0 = hbgw::dpdk::rdtsc();
    let mut since = 0;
    for _ in 0..reps {
        for burst in frames.chunks(32) {
            let now = hbgw::dpdk::rdtsc();
            for f in burst {
                step(s, f, now);
            }
        }
        since += frames.len();
        if since >= HOUSEKEEPING_EVERY {
            housekeeping(s);
            since = 0;
        }
    }
    let cycles = hbgw::dpdk::rdtsc() - c0;
    let n = (reps * frames.len()) as f64;
    (t.elapsed().as_nanos() as f64 / n, cycles as f64 / n)
}

fn pipeline(section: &EnforcementSection) -> (Standalone, hbgw::gateway::LoadedState) {
    let loaded = load_enforcement(section).expect("state loads");
    let p = Standalone::new(&loaded.state, loaded.config.clone(), vec![port_context(0), port_context(1)], 1 << 40);
    (p, loaded)
}

/// What the worker and the control plane do every flush period: the worker
/// hands over its seen MACs, the control plane returns the buffers.
fn housekeeping(s: &mut Standalone) {
    s.pipeline.housekeeping();
    for r in s.seen_macs.reports.try_iter() {
        let _ = s.seen_macs.spares[r.worker].send(r.macs);
    }
    while s.events.try_recv().is_ok() {}
}

fn median(mut v: Vec<(f64, f64)>) -> (f64, f64) {
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    v[v.len() / 2]
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: pipeline_stages STATE_DIR [ROUNDS]"));
    let rounds: usize = std::env::args().nth(2).map_or(7, |r| r.parse().expect("ROUNDS is a number"));
    let frames = frames(&dir.join("traffic.pcap"));
    let packets = TARGET_PACKETS / rounds;

    let (mut empty, _l1) = pipeline(&EnforcementSection::default());
    let t = Instant::now();
    let full_section = EnforcementSection {
        policy: Some(dir.join("policy.toml")),
        threat_feed: Some(dir.join("feed.toml")),
        endpoints: Some(dir.join("endpoints.toml")),
        ..Default::default()
    };
    let (mut full, loaded) = pipeline(&full_section);
    let load = t.elapsed();
    // The same state without rules: the pipeline picks up a published policy
    // on its next frame, so one pipeline serves both.
    let policy = CompiledPolicy::clone(&loaded.state.policy());

    let mut results: [Vec<(f64, f64)>; 4] = Default::default();
    let mut dropped = 0usize;
    let mut decided = 0usize;
    for _ in 0..rounds {
        results[0].push(measure(
            &frames,
            packets,
            &mut (),
            |_, f, _| {
                black_box(parse_frame(black_box(f)).is_ok());
            },
            |_| {},
        ));
        let run = |p: &mut Standalone, f: &[u8], now: u64| {
            p.pipeline.begin_burst(now);
            black_box(p.pipeline.verdict(black_box(f), 0))
        };
        results[1].push(measure(&frames, packets, &mut empty, |p, f, now| {
            run(p, f, now);
        }, housekeeping));
        loaded.state.set_policy(CompiledPolicy::default());
        results[2].push(measure(&frames, packets, &mut full, |p, f, now| {
            run(p, f, now);
        }, housekeeping));
        loaded.state.set_policy(policy.clone());
        results[3].push(measure(
            &frames,
            packets,
            &mut full,
            |p, f, now| {
                let v = run(p, f, now);
                decided += 1;
                dropped += usize::from(!matches!(v, hbgw_dataplane::verdict::Verdict::Forward));
            },
            housekeeping,
        ));
    }
    let [parse, classify, lookups, all] = results.map(median);

    println!("state load (policy + 1M indicators + 100k endpoints from files): {:.2} s", load.as_secs_f64());
    println!("stage (median of {rounds} rounds)          ns/pkt  cycles/pkt");
    println!("parse                              {:6.1}  {:6.1}", parse.0, parse.1);
    println!("+ classify (empty state)           {:6.1}  {:6.1}", classify.0 - parse.0, classify.1 - parse.1);
    println!("+ lookups (100k endpoints, 1M ind.) {:5.1}  {:6.1}", lookups.0 - classify.0, lookups.1 - classify.1);
    println!("+ rules (100)                      {:6.1}  {:6.1}", all.0 - lookups.0, all.1 - lookups.1);
    println!("= pipeline, full state             {:6.1}  {:6.1}   ({:.1}% of frames not forwarded)", all.0, all.1, 100.0 * dropped as f64 / decided.max(1) as f64);
}
