//! What each indicator layer costs a worker's lookup: a base of HELD
//! indicators (IPv4 addresses and domains), then the same base with 1, 2
//! and 4 layers of LAYER new indicators each on top, as the Central client
//! leaves them between folds (see `docs/central-protocol.md`, Compaction).
//! Each configuration answers the same queries (hits in the base, hits in
//! the newest layer, misses), in rounds that alternate the configurations;
//! the median of the rounds is printed, in ns per lookup.
//!
//!     cargo run --release --example overlay_layers -- [HELD] [LAYER] [ROUNDS]
//!
//! One thread, no DPDK: the lookups a worker makes when its flow cache
//! does not answer.

use hbgw_shared::indicator_overlay::{IndicatorOverlay, TouchedIds};
use hbgw_shared::indicators::{IndicatorKind, IndicatorSet, IndicatorSetBuilder, ThreatFeedSettings};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

fn ip(i: u32) -> Ipv4Addr {
    // 10.0.0.0/8 and up, spread (not sequential: a real feed is not).
    Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) >> 8))
}

fn domain(i: u32) -> String {
    format!("d{i}.evil{}.example", i % 97)
}

/// The audit IDs of indicators `from..from + n` (what a layer of new ones touched).
fn touched(from: u32, n: u32) -> TouchedIds {
    let mut t = TouchedIds::with_capacity(n as usize, n as usize * 8);
    for i in from..from + n {
        t.insert(&format!("A{i}")).expect("inserted");
    }
    t
}

/// Indicators `from..from + n`, one in four a domain.
fn set(from: u32, n: u32) -> IndicatorSet {
    let mut b = IndicatorSetBuilder::with_capacity(n as usize);
    for i in from..from + n {
        let kind: IndicatorKind =
            if i % 4 == 0 { domain(i).parse() } else { ip(i).to_string().parse() }.expect("a valid indicator");
        b.add_parts(&kind, &format!("A{i}"), "mdr").expect("added");
    }
    b.build(&ThreatFeedSettings::default())
}

fn arg(n: usize, default: u32) -> u32 {
    std::env::args().nth(n).map_or(default, |a| a.parse().expect("a number"))
}

fn main() {
    let held = arg(1, 1_000_000);
    let layer = arg(2, 100_000);
    let rounds = arg(3, 7) as usize;
    let t = Instant::now();
    let base = IndicatorOverlay::from_set(set(0, held));
    let mut overlays = vec![(0usize, base.clone())];
    let mut o = base;
    for n in 1..=4u32 {
        let from = held + (n - 1) * layer;
        o = o.push_layer(set(from, layer), touched(from, layer), 0).expect("a layer");
        if matches!(n, 1 | 2 | 4) {
            overlays.push((n as usize, o.clone()));
        }
    }
    eprintln!("built {held} + 4 x {layer} indicators in {:.1} s", t.elapsed().as_secs_f64());
    // Queries: half hits in the base, a tenth in the newest layer of the
    // 4-layer overlay (misses elsewhere), the rest misses everywhere.
    let newest = held + 3 * layer;
    let mut ips = Vec::new();
    let mut names = Vec::new();
    for q in 0..8192u32 {
        let i = match q % 10 {
            0..=4 => (q * 7919) % held,
            5 => newest + (q * 31) % layer,
            _ => held + 4 * layer + q,
        };
        let i = if q % 2 == 0 { i - i % 4 + 1 } else { i - i % 4 };
        if i % 4 == 0 {
            names.push(domain(i).into_bytes());
        } else {
            ips.push(IpAddr::V4(ip(i)));
        }
    }
    for (layers, o) in &overlays {
        let hit_ips = ips.iter().filter(|q| o.match_ip(**q).hit().is_some()).count();
        let hit_names = names.iter().filter(|q| o.match_domain(q).hit().is_some()).count();
        eprintln!(
            "{layers} layers: {hit_ips} of {} IPv4 and {hit_names} of {} domain queries hit",
            ips.len(),
            names.len()
        );
    }
    let mut ns: Vec<Vec<(f64, f64)>> = vec![Vec::new(); overlays.len()];
    for _ in 0..rounds {
        for (k, (_, o)) in overlays.iter().enumerate() {
            let t = Instant::now();
            let mut hits = 0usize;
            for _ in 0..20 {
                for q in &ips {
                    hits += usize::from(black_box(o).match_ip(*q).hit().is_some());
                }
            }
            let per_ip = t.elapsed().as_nanos() as f64 / (20 * ips.len()) as f64;
            let t = Instant::now();
            for _ in 0..20 {
                for q in &names {
                    hits += usize::from(black_box(o).match_domain(q).hit().is_some());
                }
            }
            let per_name = t.elapsed().as_nanos() as f64 / (20 * names.len()) as f64;
            black_box(hits);
            ns[k].push((per_ip, per_name));
        }
    }
    println!("{held} indicators held, layers of {layer}; ns per lookup (median of {rounds} rounds; {} IPv4, {} domain queries)", ips.len(), names.len());
    println!("{:>8} {:>10} {:>10}", "layers", "IPv4", "domain");
    for (k, (layers, _)) in overlays.iter().enumerate() {
        let mut a: Vec<f64> = ns[k].iter().map(|x| x.0).collect();
        let mut b: Vec<f64> = ns[k].iter().map(|x| x.1).collect();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        println!("{layers:>8} {:>10.1} {:>10.1}", a[a.len() / 2], b[b.len() / 2]);
    }
}
