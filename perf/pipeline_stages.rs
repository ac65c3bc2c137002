//! Cycles per packet of each stage of the enforcing pipeline, on the frames
//! and state `perf/make-state.py` writes (no DPDK: the stages alone, in a
//! loop over the frames as a worker would run them, bursts of 32):
//!
//!     cargo run --release --example pipeline_stages -- STATE_DIR
//!
//! * parse — `parse_frame` only;
//! * pipeline, empty state — parse + seen-MAC + decide against no policy, no
//!   indicators, no endpoints (the fixed cost of classifying);
//! * pipeline, full state — the same with 100 rules, 100,000 endpoints and
//!   1,000,000 indicators (adds the lookups and the rule walk).
//!
//! What a packet costs in rx/tx is the rest of the worker's cycles per packet
//! measured under DPDK (perf/bench-enforce.sh).

use hbgw::gateway::{load_enforcement, port_context};
use hbgw_dataplane::parse::parse_frame;
use hbgw_dataplane::pipeline::{Pipeline, Standalone};
use hbgw_shared::config::EnforcementSection;
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

/// Returns (ns per packet, TSC cycles per packet).
fn measure(frames: &[Vec<u8>], mut step: impl FnMut(&[u8], u64)) -> (f64, f64) {
    let reps = (TARGET_PACKETS / frames.len()).max(1);
    // Warm up caches and branch predictors once.
    for f in frames {
        step(f, hbgw::dpdk::rdtsc());
    }
    let t = Instant::now();
    let c0 = hbgw::dpdk::rdtsc();
    for _ in 0..reps {
        for burst in frames.chunks(32) {
            let now = hbgw::dpdk::rdtsc();
            for f in burst {
                step(f, now);
            }
        }
    }
    let cycles = hbgw::dpdk::rdtsc() - c0;
    let n = (reps * frames.len()) as f64;
    (t.elapsed().as_nanos() as f64 / n, cycles as f64 / n)
}

fn pipeline(section: &EnforcementSection) -> (Pipeline, hbgw_shared::endpoint::EndpointTableWriter) {
    let loaded = load_enforcement(section).expect("state loads");
    let p = Standalone::new(&loaded.state, loaded.config.clone(), vec![port_context(0), port_context(1)], 1 << 40).pipeline;
    (p, loaded.writer)
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: pipeline_stages STATE_DIR"));
    let frames = frames(&dir.join("traffic.pcap"));

    let (parse_ns, parse_c) = measure(&frames, |f, _| {
        black_box(parse_frame(black_box(f)).is_ok());
    });

    let (mut empty, _w1) = pipeline(&EnforcementSection::default());
    let (empty_ns, empty_c) = measure(&frames, |f, now| {
        empty.begin_burst(now);
        black_box(empty.verdict(black_box(f), 0));
    });

    let t = Instant::now();
    let full_section = EnforcementSection {
        policy: Some(dir.join("policy.toml")),
        threat_feed: Some(dir.join("feed.toml")),
        endpoints: Some(dir.join("endpoints.toml")),
        ..Default::default()
    };
    let (mut full, _w2) = pipeline(&full_section);
    let load = t.elapsed();
    let mut dropped = 0usize;
    let (full_ns, full_c) = measure(&frames, |f, now| {
        full.begin_burst(now);
        dropped += usize::from(!matches!(black_box(full.verdict(black_box(f), 0)), hbgw_dataplane::verdict::Verdict::Forward));
    });

    println!("state load (policy + 1M indicators + 100k endpoints from files): {:.2} s", load.as_secs_f64());
    println!("stage                              ns/pkt  cycles/pkt");
    println!("parse                              {parse_ns:6.1}  {parse_c:6.1}");
    println!("+ classify (empty state)           {:6.1}  {:6.1}", empty_ns - parse_ns, empty_c - parse_c);
    println!("+ lookups and 100 rules (full)     {:6.1}  {:6.1}", full_ns - empty_ns, full_c - empty_c);
    println!("= pipeline, full state             {full_ns:6.1}  {full_c:6.1}   ({:.1}% of frames not forwarded)", 100.0 * dropped as f64 / (dropped.max(1) as f64).max((TARGET_PACKETS / frames.len() * frames.len() + frames.len()) as f64));
}
