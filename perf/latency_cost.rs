//! What recording latency costs, per packet, per-packet vs per-burst: the
//! measurement behind `dataplane/src/latency.rs`'s choice. Run:
//!
//!     cargo run --release --example latency_cost
//!
//! Per packet: one TSC read and one histogram record per packet (a packet's
//! own rx->tx time needs a TSC read at its tx, and its rx stamp).
//! Per burst: two TSC reads and one `record_n` per burst of 32.

use hbgw_dataplane::latency::{exchange, CyclesToNs};
use std::hint::black_box;
use std::time::Instant;

use hbgw::dpdk::rdtsc as tsc;

fn main() {
    const PACKETS: u64 = 50_000_000;
    const BURST: u64 = 32;
    let (mut recs, _ex) = exchange(1, 2_000_000_000, u64::MAX);
    let rec = &mut recs[0];
    let _ = CyclesToNs::new(1);

    let t = Instant::now();
    let mut prev = tsc();
    for _ in 0..PACKETS {
        let now = tsc();
        rec.record_burst(black_box(now.wrapping_sub(prev) & 0xfff), 1);
        prev = now;
    }
    let per_packet = t.elapsed().as_nanos() as f64 / PACKETS as f64;

    let t = Instant::now();
    for _ in 0..PACKETS / BURST {
        let start = tsc();
        let end = tsc();
        rec.record_burst(black_box(end.wrapping_sub(start) & 0xfff), BURST);
    }
    let per_burst = t.elapsed().as_nanos() as f64 / PACKETS as f64;

    println!("latency recording cost per packet: per-packet {per_packet:.2} ns, per-burst (32) {per_burst:.3} ns");
}
