//! Where a batch of indicators spends its time between the admin's POST at
//! Central and the gateway publishing it, stage by stage, without the
//! network or other processes (`central_reaction` measures the whole path).
//!
//!     cargo run --release --example central_stages -- [HELD] [BATCH] [RUNS]
//!
//! The gateway holds HELD indicators (default 1,000,000, compiled into one
//! base set); each run takes a fresh batch of BATCH new ones (default
//! 100,000) through:
//!
//! * Central: `posted_indicators` (parse and validate the admin's JSON),
//!   then `Store::add_indicator_lines` (the commit, in a SQLite database in
//!   a temporary directory) and the sync answer around its journal row;
//! * the gateway: parse the answer, `SyncedState::prepare` (validate, list
//!   the audit IDs the batch touches, compile its layer; publishing is a
//!   pointer swap after it), then `SyncedState::commit` (after publishing: off the
//!   latency path unless the next answer is already waiting).
//!
//! Between batches the indicator layers are compacted into one base set
//! (untimed), as the client does while Central is quiet.
//!
//! Prints the median and the slowest of RUNS for each stage (ms).
//! `RUST_LOG=hbgw_controlplane=debug` splits `prepare` further.

use hbgw_controlplane::central::protocol::{Change, JournalEntry, Snapshot, SyncAnswer, SyncedState, WireIndicator};
use hbgw_controlplane::central::server::posted_indicators;
use hbgw_controlplane::central::store::{answer_around, Store};
use std::time::Instant;

fn addr(i: usize) -> String {
    format!("{}.{}.{}.{}", 100 + (i >> 24), (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

/// The admin's JSON body for `n` indicators from `first`.
fn admin_body(first: usize, n: usize) -> String {
    let mut body = String::with_capacity(n * 48);
    body.push_str("{\"indicators\":[");
    for i in first..first + n {
        if i > first {
            body.push(',');
        }
        body.push_str(&format!("{{\"value\":\"{}\",\"audit_id\":\"B-{i}\"}}", addr(i)));
    }
    body.push_str("]}");
    body
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("HELD BATCH RUNS: numbers")).collect();
    let held = args.first().copied().unwrap_or(1_000_000);
    let batch = args.get(1).copied().unwrap_or(100_000);
    let runs = args.get(2).copied().unwrap_or(7).max(1);

    let t = Instant::now();
    let snap = Snapshot {
        indicators: (0..held)
            .map(|i| WireIndicator {
                value: format!("10.{}.{}.{}", (i >> 16) as u8, (i >> 8) as u8, i as u8),
                audit_id: format!("S-{i}"),
                feed: "mdr".into(),
            })
            .collect(),
        ..Default::default()
    };
    let mut state = SyncedState::from_snapshot(1, &snap, usize::MAX).expect("snapshot");
    state.rebuild().expect("rebuild");
    drop(snap);
    println!("gateway state: {held} indicators held, built in {:.1} s", t.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("central.db")).expect("store");
    let names = [
        "central: validate POST",
        "central: commit",
        "central: answer",
        "gateway: parse",
        "gateway: prepare",
        "gateway: commit",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for run in 0..runs {
        let body = admin_body(run * batch, batch);
        let t = Instant::now();
        let posted = posted_indicators("json", None, &body).expect("valid batch");
        times[0].push(ms(t));
        assert_eq!(posted.missing, 0);
        let t = Instant::now();
        let rev = store.add_indicator_lines(posted.lines).expect("commit");
        times[1].push(ms(t));
        let (_, row) = store.take_committed().expect("committed row");
        let t = Instant::now();
        let answer = answer_around(rev, std::iter::once((rev, row.as_str())));
        times[2].push(ms(t));

        // The gateway is at the revision before (Central's store starts at
        // 0, the gateway's snapshot was revision 1: renumber the answer).
        let t = Instant::now();
        let mut parsed: SyncAnswer = serde_json::from_slice(&answer).expect("answer parses");
        times[3].push(ms(t));
        let change: Vec<JournalEntry> = parsed.changes.take().expect("changes");
        assert!(matches!(change[0].change, Change::IndicatorsAddLines { .. }));
        let parsed = SyncAnswer {
            revision: state.revision + 1,
            changes: Some(
                change.into_iter().map(|e| JournalEntry { revision: state.revision + 1, change: e.change }).collect(),
            ),
            snapshot: None,
        };
        let t = Instant::now();
        let prepared = state.prepare(&parsed, usize::MAX).expect("prepare");
        times[4].push(ms(t));
        assert!(prepared.indicators.is_some());
        let t = Instant::now();
        state.commit(prepared);
        times[5].push(ms(t));
        // What the client does between batches (an idle long poll): the
        // layers folded into a new base, so each batch meets one base set.
        let generation = state.book.mark();
        let built = state.book.overlay().compacted().expect("compaction");
        state.install_compacted(generation, built).expect("installed");
    }
    println!("{runs} batches of {batch} new indicators, {held}..{} held (ms: median, max)", held + runs * batch);
    let mut sum = 0.0;
    for (name, mut v) in names.iter().zip(times) {
        v.sort_by(|a, b| a.total_cmp(b));
        let med = v[v.len() / 2];
        if !name.ends_with("gateway: commit") {
            sum += med;
        }
        println!("  {name:<24} {med:8.1} {:8.1}", v[v.len() - 1]);
    }
    println!("  {:<24} {sum:8.1}", "latency path (medians)");
}
