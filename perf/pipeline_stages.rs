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
//! Those four are measured with the flow cache and the quiet-hint cache off,
//! so that they split the cost of deciding a frame in full. Then the full
//! state with the flow cache on (the default, 65,536 entries), first on the
//! trace as it is (each of its 4096 frames is its own flow, recurring every
//! 4096 frames; a frame with a DNS/TLS/HTTP hint still has its hint checked
//! against the indicators, unless the quiet-hint cache, on by default,
//! remembers it matched none: the same row with that cache off shows what it
//! saves), then with more concurrent flows: on pass p over the trace
//! every frame's source port is moved by p mod V, so V variants of each flow
//! take turns (V = 16, 64, 256: ~65k, ~262k, ~1M flows; one packet per flow
//! every 4096 x V frames). The same rewriting runs with the cache off at the
//! largest V, so both sides pay for it. Hit rates are printed with each line.
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
use hbgw_dataplane::enforce::EnforcementConfig;
use hbgw_dataplane::parse::parse_frame;
use hbgw_dataplane::pipeline::Standalone;
use hbgw_shared::config::EnforcementSection;
use hbgw_shared::policy::CompiledPolicy;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
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
/// What a worker does for a burst before deciding it: prefetch each frame's
/// flow cache set (nothing when there is no cache).
trait Prefetch {
    fn prefetch(&self, frame: &[u8]);
}

impl Prefetch for () {
    fn prefetch(&self, _: &[u8]) {}
}

impl Prefetch for Standalone {
    #[inline(always)]
    fn prefetch(&self, frame: &[u8]) {
        if let Some(addr) = self.pipeline.prefetch_address(frame, 0) {
            hbgw::dpdk::prefetch(addr);
        }
    }
}

fn measure<S: Prefetch>(
    frames: &[Vec<u8>],
    packets: usize,
    s: &mut S,
    step: impl FnMut(&mut S, &[u8], u64),
    housekeeping: impl FnMut(&mut S),
) -> (f64, f64) {
    let mut frames = frames.to_vec();
    measure_flows(&mut frames, &[], 1, packets, s, step, housekeeping)
}

/// Where the L4 source port of each IPv4 TCP or UDP frame is, for making
/// more flows out of the trace.
fn sport_offsets(frames: &[Vec<u8>]) -> Vec<(usize, usize, u16)> {
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let Ok(pf) = parse_frame(f) else { continue };
        if pf.ports().is_none() || f.len() < 34 || f[12..14] != [8, 0] {
            continue;
        }
        let off = 14 + usize::from(f[14] & 0x0f) * 4;
        out.push((i, off, u16::from_be_bytes([f[off], f[off + 1]])));
    }
    out
}

/// [`measure`], with pass p over the frames moving each TCP/UDP frame's
/// source port by p mod `variants` (1: the trace as it is).
fn measure_flows<S: Prefetch>(
    frames: &mut [Vec<u8>],
    offsets: &[(usize, usize, u16)],
    variants: u16,
    packets: usize,
    s: &mut S,
    mut step: impl FnMut(&mut S, &[u8], u64),
    mut housekeeping: impl FnMut(&mut S),
) -> (f64, f64) {
    let reps = (packets / frames.len()).max(1);
    // Warm up caches and branch predictors once.
    for f in frames.iter() {
        step(s, f, hbgw::dpdk::rdtsc());
    }
    housekeeping(s);
    let t = Instant::now();
    let c0 = hbgw::dpdk::rdtsc();
    let mut since = 0;
    for rep in 0..reps {
        if variants > 1 {
            let v = (rep % usize::from(variants)) as u16;
            for &(i, off, port) in offsets {
                frames[i][off..off + 2].copy_from_slice(&port.wrapping_add(v).to_be_bytes());
            }
        }
        for burst in frames.chunks(32) {
            let now = hbgw::dpdk::rdtsc();
            for f in burst {
                s.prefetch(f);
            }
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

/// Flow cache hits and misses so far.
fn cache_counts(s: &Standalone) -> (u64, u64) {
    let m = &s.counters.misc;
    (m.flow_cache_hits.load(Relaxed), m.flow_cache_misses.load(Relaxed))
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: pipeline_stages STATE_DIR [ROUNDS]"));
    let rounds: usize = std::env::args().nth(2).map_or(7, |r| r.parse().expect("ROUNDS is a number"));
    let mut frames = frames(&dir.join("traffic.pcap"));
    let offsets = sport_offsets(&frames);
    let packets = TARGET_PACKETS / rounds;
    let no_cache = |s: EnforcementSection| EnforcementSection { flow_cache_entries: 0, hint_cache_entries: 0, ..s };

    let (mut empty, _l1) = pipeline(&no_cache(EnforcementSection::default()));
    let t = Instant::now();
    let full_section = EnforcementSection {
        policy: Some(dir.join("policy.toml")),
        threat_feed: Some(dir.join("feed.toml")),
        endpoints: Some(dir.join("endpoints.toml")),
        // FLOW_CACHE_ENTRIES=N and HINT_CACHE_ENTRIES=N measure other cache sizes.
        flow_cache_entries: std::env::var("FLOW_CACHE_ENTRIES")
            .map_or(EnforcementSection::default().flow_cache_entries, |v| {
                v.parse().expect("FLOW_CACHE_ENTRIES is a number")
            }),
        hint_cache_entries: std::env::var("HINT_CACHE_ENTRIES")
            .map_or(EnforcementSection::default().hint_cache_entries, |v| {
                v.parse().expect("HINT_CACHE_ENTRIES is a number")
            }),
        ..Default::default()
    };
    let (mut full, loaded) = pipeline(&no_cache(full_section.clone()));
    let load = t.elapsed();
    // The same state without rules: the pipeline picks up a published policy
    // on its next frame, so one pipeline serves both.
    let policy = CompiledPolicy::clone(&loaded.state.policy());
    // Flow-cached pipelines over the same published state: a fresh one for
    // each measurement, so that one run's cache contents (or its decision
    // to sit out for lack of hits) do not carry into the next.
    let new_cached = |hint_cache_entries: usize| {
        Standalone::new(
            &loaded.state,
            EnforcementConfig {
                flow_cache_entries: full_section.flow_cache_entries,
                hint_cache_entries,
                ..loaded.config.clone()
            },
            vec![port_context(0), port_context(1)],
            1 << 40,
        )
    };

    const VARIANTS: [u16; 4] = [1, 16, 64, 256];
    let mut results: [Vec<(f64, f64)>; 4] = Default::default();
    let mut cached_results: [Vec<(f64, f64)>; VARIANTS.len()] = Default::default();
    let mut cache_rates = [(0u64, 0u64); VARIANTS.len()];
    let mut sat_out = [0u64; VARIANTS.len()];
    let mut hint_rates = [(0u64, 0u64); VARIANTS.len()];
    let mut no_hint_cache: Vec<(f64, f64)> = Vec::new();
    let mut churn_no_cache: Vec<(f64, f64)> = Vec::new();
    let mut dropped = 0usize;
    let mut decided = 0usize;
    let mut dropped_cached = 0usize;
    let mut decided_cached = 0usize;
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
        results[1].push(measure(
            &frames,
            packets,
            &mut empty,
            |p, f, now| {
                run(p, f, now);
            },
            housekeeping,
        ));
        loaded.state.set_policy(CompiledPolicy::default());
        results[2].push(measure(
            &frames,
            packets,
            &mut full,
            |p, f, now| {
                run(p, f, now);
            },
            housekeeping,
        ));
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
        for (k, &v) in VARIANTS.iter().enumerate() {
            let mut cached = new_cached(full_section.hint_cache_entries);
            let before = cache_counts(&cached);
            cached_results[k].push(measure_flows(
                &mut frames,
                &offsets,
                v,
                packets,
                &mut cached,
                |p, f, now| {
                    let v = run(p, f, now);
                    decided_cached += 1;
                    dropped_cached += usize::from(!matches!(v, hbgw_dataplane::verdict::Verdict::Forward));
                },
                housekeeping,
            ));
            housekeeping(&mut cached);
            let after = cache_counts(&cached);
            cache_rates[k].0 += after.0 - before.0;
            cache_rates[k].1 += after.1 - before.1;
            sat_out[k] += cached.counters.misc.flow_cache_bypassed_periods.load(Relaxed);
            let m = &cached.counters.misc;
            hint_rates[k].0 += m.hint_cache_hits.load(Relaxed);
            hint_rates[k].1 += m.hint_cache_misses.load(Relaxed);
        }
        // The trace as it is again, without the quiet-hint cache: every hint
        // of a flow-cached frame looked up in the indicators.
        let mut cached = new_cached(0);
        no_hint_cache.push(measure_flows(
            &mut frames,
            &offsets,
            1,
            packets,
            &mut cached,
            |p, f, now| {
                run(p, f, now);
            },
            housekeeping,
        ));
        churn_no_cache.push(measure_flows(
            &mut frames,
            &offsets,
            VARIANTS[VARIANTS.len() - 1],
            packets,
            &mut full,
            |p, f, now| {
                run(p, f, now);
            },
            housekeeping,
        ));
    }
    let [parse, classify, lookups, all] = results.map(median);
    let plain =
        frames.iter().filter(|f| parse_frame(f).is_ok_and(|pf| pf.app.is_none())).count() as f64 / frames.len() as f64;

    println!("state load (policy + 1M indicators + 100k endpoints from files): {:.2} s", load.as_secs_f64());
    println!("stage (median of {rounds} rounds), flow cache off  ns/pkt  cycles/pkt");
    println!("parse                              {:6.1}  {:6.1}", parse.0, parse.1);
    println!("+ classify (empty state)           {:6.1}  {:6.1}", classify.0 - parse.0, classify.1 - parse.1);
    println!("+ lookups (100k endpoints, 1M ind.) {:5.1}  {:6.1}", lookups.0 - classify.0, lookups.1 - classify.1);
    println!("+ rules (100)                      {:6.1}  {:6.1}", all.0 - lookups.0, all.1 - lookups.1);
    println!(
        "= pipeline, full state             {:6.1}  {:6.1}   ({:.1}% of frames not forwarded)",
        all.0,
        all.1,
        100.0 * dropped as f64 / decided.max(1) as f64
    );
    println!(
        "full state, flow cache on ({} entries; {:.0}% of frames have a DNS/TLS/HTTP hint, checked on a hit;",
        full_section.flow_cache_entries,
        100.0 * (1.0 - plain)
    );
    println!("  quiet-hint cache {} entries)", full_section.hint_cache_entries);
    let percent = |(h, m): (u64, u64)| 100.0 * h as f64 / (h + m).max(1) as f64;
    for (k, &v) in VARIANTS.iter().enumerate() {
        let m = median(cached_results[k].clone());
        println!(
            "  ~{:>7} flows (x{v:<3})              {:6.1}  {:6.1}   ({:.1}% of lookups hit, hints {:.1}%; sat out {} periods of ~1M frames)",
            offsets.len() * usize::from(v),
            m.0,
            m.1,
            percent(cache_rates[k]),
            percent(hint_rates[k]),
            sat_out[k]
        );
    }
    let h = median(no_hint_cache);
    println!(
        "  ~{:>7} flows (x1), hint cache off  {:6.1}  {:6.1}   (every hint of a cached flow looked up)",
        offsets.len(),
        h.0,
        h.1
    );
    let c = median(churn_no_cache);
    println!(
        "  ~{:>7} flows, flow cache off      {:6.1}  {:6.1}   (same frames, {:.1}% not forwarded with the cache)",
        offsets.len() * usize::from(VARIANTS[VARIANTS.len() - 1]),
        c.0,
        c.1,
        100.0 * dropped_cached as f64 / decided_cached.max(1) as f64
    );
}
