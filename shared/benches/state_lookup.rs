//! Worker-side lookups of the shared state, and the cost of building it.
//!
//! * Endpoint health by MAC: the arc-swap index + per-endpoint atomic byte
//!   (`hbgw_shared::endpoint`) against `dashmap::DashMap<MacAddr, u8>` (with
//!   its default SipHash and with FxHash), on one thread, and on two reader
//!   threads while a third thread keeps changing health.
//! * Threat indicators: building a set of 1,000,000 mixed indicators, and the
//!   lookups (IP, domain, URL; hit and miss).
//!
//! Quick run: `CARGO_TARGET_DIR=... cargo bench -p hbgw-shared --bench state_lookup -- --quick`

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dashmap::DashMap;
use hbgw_shared::endpoint::{Endpoint, EndpointHealth, EndpointId, EndpointInterface, EndpointTableWriter, MacAddr};
use hbgw_shared::indicators::{IndicatorKind, IndicatorSetBuilder, ThreatFeedSettings};
use rustc_hash::FxBuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const ENDPOINTS: u64 = 10_000;
/// MACs looked up per iteration (a few bursts' worth).
const BATCH: usize = 1024;
/// Pause between two health changes of the writer thread.
const WRITER_PAUSE: Duration = Duration::from_micros(20);

fn mac(i: u64) -> MacAddr {
    let b = i.wrapping_mul(0x9e37_79b9).to_be_bytes();
    MacAddr([0x02, b[3], b[4], b[5], b[6], b[7]])
}

/// Lookup keys: mostly known MACs, one in eight unknown.
fn keys() -> Vec<MacAddr> {
    let mut x = 0x1234_5678_u64;
    (0..BATCH)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 8 == 7 {
                mac(ENDPOINTS + x % ENDPOINTS)
            } else {
                mac(x % ENDPOINTS)
            }
        })
        .collect()
}

fn endpoint_table() -> EndpointTableWriter {
    let mut w = EndpointTableWriter::new();
    w.replace_all((0..ENDPOINTS).map(|i| Endpoint {
        id: EndpointId(i),
        interfaces: vec![EndpointInterface {
            mac: mac(i),
            ips: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))],
        }],
        health: EndpointHealth::Green,
    }));
    w
}

fn dashmap<S: Default + Clone + std::hash::BuildHasher>() -> Arc<DashMap<MacAddr, u8, S>> {
    let m = DashMap::with_hasher(S::default());
    for i in 0..ENDPOINTS {
        m.insert(mac(i), EndpointHealth::Green.as_u8());
    }
    Arc::new(m)
}

fn health_of(i: u64) -> EndpointHealth {
    [EndpointHealth::Green, EndpointHealth::Yellow, EndpointHealth::Red][(i % 3) as usize]
}

/// Runs `iters` batches on each of two reader threads while `write` runs on
/// a third thread every `WRITER_PAUSE`; returns the slower reader's time.
fn contended<R, W>(iters: u64, make_reader: impl Fn() -> R, write: W) -> Duration
where
    R: FnMut() -> u64 + Send + 'static,
    W: FnMut(u64) + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut write = write;
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                write(n);
                n += 1;
                std::thread::sleep(WRITER_PAUSE);
            }
            n
        })
    };
    let barrier = Arc::new(Barrier::new(2));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut read = make_reader();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let mut sum = 0u64;
                for _ in 0..iters {
                    sum = sum.wrapping_add(read());
                }
                black_box(sum);
                start.elapsed()
            })
        })
        .collect();
    let elapsed = readers.into_iter().map(|r| r.join().unwrap()).max().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    elapsed
}

fn bench_endpoints(c: &mut Criterion) {
    let keys = Arc::new(keys());
    let mut g = c.benchmark_group("endpoint_health_by_mac");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));

    // --- single thread ---
    let writer = endpoint_table();
    let table = writer.table();
    let mut reader = table.reader();
    g.bench_function("arcswap_atomic/1_reader", |b| {
        b.iter(|| {
            let snap = reader.snapshot(); // once per batch, as a worker per burst
            let mut sum = 0u64;
            for k in keys.iter() {
                sum += snap.health_by_mac(k) as u64;
            }
            sum
        })
    });
    let sip = dashmap::<std::collections::hash_map::RandomState>();
    g.bench_function("dashmap_sip/1_reader", |b| {
        b.iter(|| keys.iter().map(|k| sip.get(k).map_or(0, |v| *v as u64)).sum::<u64>())
    });
    let fx = dashmap::<FxBuildHasher>();
    g.bench_function("dashmap_fx/1_reader", |b| {
        b.iter(|| keys.iter().map(|k| fx.get(k).map_or(0, |v| *v as u64)).sum::<u64>())
    });

    // --- two readers, one writer changing health ---
    let writer = Arc::new(Mutex::new(writer));
    g.bench_function("arcswap_atomic/2_readers_1_writer", |b| {
        b.iter_custom(|iters| {
            let writer = Arc::clone(&writer);
            contended(
                iters,
                || {
                    let mut reader = table.reader();
                    let keys = Arc::clone(&keys);
                    move || {
                        let snap = reader.snapshot();
                        keys.iter().map(|k| snap.health_by_mac(k) as u64).sum()
                    }
                },
                move |n| {
                    let _ = writer.lock().unwrap().set_health(EndpointId(n % ENDPOINTS), health_of(n));
                },
            )
        })
    });
    g.bench_function("dashmap_fx/2_readers_1_writer", |b| {
        b.iter_custom(|iters| {
            let map = Arc::clone(&fx);
            contended(
                iters,
                || {
                    let map = Arc::clone(&fx);
                    let keys = Arc::clone(&keys);
                    move || keys.iter().map(|k| map.get(k).map_or(0, |v| *v as u64)).sum()
                },
                move |n| {
                    if let Some(mut v) = map.get_mut(&mac(n % ENDPOINTS)) {
                        *v = health_of(n).as_u8();
                    }
                },
            )
        })
    });
    g.finish();

    // Refreshing a worker's cached snapshot when nothing changed.
    let mut reader = table.reader();
    c.bench_function("endpoint_reader_refresh", |b| b.iter(|| reader.snapshot().generation()));
}

/// 1,000,000 mixed indicators: 600k IPv4 addresses, 100k IPv4 networks,
/// 50k IPv6, 200k domains, 50k URLs.
fn million() -> Vec<(IndicatorKind, String)> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(1_000_000);
    for i in 0..1_000_000u32 {
        let r = next();
        let kind = match i % 20 {
            0..=11 => IndicatorKind::Ipv4(Ipv4Addr::from(r as u32)),
            12 | 13 => IndicatorKind::Ipv4Net(
                ipnet::Ipv4Net::new(Ipv4Addr::from(r as u32), [16, 20, 24, 28][(r >> 40) as usize % 4]).unwrap().trunc(),
            ),
            14 => IndicatorKind::Ipv6(Ipv6Addr::from(u128::from(r) | (0x2001_0db8u128 << 96))),
            15..=18 => IndicatorKind::Domain(format!("h{:x}.example{}.com", r, r % 1000)),
            _ => IndicatorKind::Url(format!("http://site{}.test/dl/{:x}/payload.bin", r % 5000, r)),
        };
        out.push((kind, format!("{:016x}-{i:08}", r >> 3)));
    }
    out
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench_indicators(c: &mut Criterion) {
    let input = million();
    let settings = ThreatFeedSettings::default();
    let build = |input: &[(IndicatorKind, String)]| {
        let mut b = IndicatorSetBuilder::with_capacity(input.len());
        for (i, (kind, audit)) in input.iter().enumerate() {
            b.add_parts(kind, audit, if i % 2 == 0 { "mdr" } else { "x-ops" }).unwrap();
        }
        b.build(&settings)
    };
    // One build outside criterion: time and resident memory it adds.
    let before = rss_kib();
    let start = Instant::now();
    let set = build(&input);
    let took = start.elapsed();
    if let (Some(a), Some(b)) = (before, rss_kib()) {
        eprintln!(
            "indicator set: {} indicators {:?} built in {:.0} ms, RSS +{} MiB ({} bytes/indicator)",
            set.len(),
            set.counts(),
            took.as_secs_f64() * 1e3,
            b.saturating_sub(a) / 1024,
            b.saturating_sub(a) * 1024 / set.len() as u64,
        );
    }

    let mut g = c.benchmark_group("indicator_build");
    g.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("1M_mixed", |b| b.iter_batched(|| (), |_| build(&input), BatchSize::PerIteration));
    g.finish();

    let IndicatorKind::Ipv4(hit_v4) = input[0].0 else { unreachable!() };
    let IndicatorKind::Domain(ref hit_domain) = input[15].0 else { unreachable!() };
    let sub = format!("WWW.{}.", hit_domain.to_uppercase());
    let net_hit = input.iter().find_map(|(k, _)| match k {
        IndicatorKind::Ipv4Net(n) => Some(IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1))),
        _ => None,
    });
    let mut g = c.benchmark_group("indicator_lookup");
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.bench_function("ip_hit_exact", |b| b.iter(|| set.match_ip(black_box(IpAddr::V4(hit_v4))).hit().is_some()));
    g.bench_function("ip_hit_cidr", |b| b.iter(|| set.match_ip(black_box(net_hit.unwrap())).hit().is_some()));
    g.bench_function("ip_miss", |b| {
        b.iter(|| set.match_ip(black_box(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))).hit().is_some())
    });
    g.bench_function("ipv6_miss", |b| {
        b.iter(|| set.match_ip(black_box(IpAddr::V6(Ipv6Addr::LOCALHOST))).hit().is_some())
    });
    g.bench_function("domain_hit_subdomain_mixed_case", |b| {
        b.iter(|| set.match_domain(black_box(sub.as_bytes())).hit().is_some())
    });
    g.bench_function("domain_miss_4_labels", |b| {
        b.iter(|| set.match_domain(black_box(b"cdn.static.example.org")).hit().is_some())
    });
    g.bench_function("url_hit", |b| {
        let IndicatorKind::Url(ref u) = input[19].0 else { unreachable!() };
        let rest = u.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let path = format!("{path}?x=1");
        b.iter(|| set.match_url(black_box(host.as_bytes()), black_box(path.as_bytes())).hit().is_some())
    });
    g.bench_function("url_miss", |b| {
        b.iter(|| set.match_url(black_box(b"site1.test"), black_box(b"/index.html")).hit().is_some())
    });
    g.finish();
}

criterion_group!(benches, bench_endpoints, bench_indicators);
criterion_main!(benches);
