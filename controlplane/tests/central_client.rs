//! The gateway's Central client against a real in-process Central, and
//! against a server that answers garbage: the last-known-good state stays in
//! force, the refusal is counted and shown, and a good Central is followed
//! again afterwards.

mod central_support;
use central_support::*;
use hbgw_controlplane::central::client::{load_start, load_state, save_state};
use hbgw_controlplane::central::state_journal::{JournalRecord, StateJournal, JOURNAL_FILE};
use hbgw_controlplane::central::http::{self, error, json_bytes};
use hbgw_controlplane::central::protocol::{Change, JournalEntry, SyncAnswer, SyncedState, WireIndicator};
use hbgw_controlplane::central::server;
use hyper::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_central_keeps_the_last_known_good_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server::init(&d.join("central"), "localhost").unwrap();
    let cert = std::fs::read(d.join("central/server.pem")).unwrap();
    let key = std::fs::read(d.join("central/server.key")).unwrap();

    // The gateway's last-known-good state: one indicator at revision 7.
    let mut lkg = SyncedState::default();
    let answer = SyncAnswer {
        revision: 7,
        changes: None,
        snapshot: Some(hbgw_controlplane::central::protocol::Snapshot {
            policy: Some("default_action = \"accept\"\n".into()),
            indicators: vec![WireIndicator { value: "203.0.113.9".into(), audit_id: "A1".into(), feed: "mdr".into() }],
            ..Default::default()
        }),
    };
    let p = lkg.prepare(&answer, 1000).unwrap();
    lkg.commit(p);
    std::fs::create_dir_all(d.join("gw")).unwrap();
    save_state(&d.join("gw"), &lkg).unwrap();
    std::fs::write(d.join("gw/identity.json"), r#"{"gateway_id":"gw-1","secret":"s"}"#).unwrap();

    // A server that answers every sync with garbage, then with a delta that
    // holds a bad indicator, then with a good delta.
    let mode = Arc::new(Mutex::new(0));
    let m = mode.clone();
    let handler: http::Handler = Arc::new(move |_req| {
        let mode = *m.lock().unwrap();
        Box::pin(async move {
            let delta = |value: &str| {
                serde_json::to_vec(&SyncAnswer {
                    revision: 8,
                    changes: Some(vec![JournalEntry {
                        revision: 8,
                        change: Change::IndicatorsAdd {
                            indicators: vec![WireIndicator { value: value.into(), audit_id: "A2".into(), feed: "mdr".into() }],
                        },
                    }]),
                    snapshot: None,
                })
                .unwrap()
            };
            match mode {
                0 => json_bytes(StatusCode::OK, b"<html>garbage".to_vec()),
                1 => json_bytes(StatusCode::OK, delta("not..valid")),
                2 => json_bytes(StatusCode::OK, delta("198.51.100.4")),
                _ => error(StatusCode::SERVICE_UNAVAILABLE, "down"),
            }
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(listener, http::server_tls(&cert, &key).unwrap(), handler));

    let cfg = section(url, d, &d.join("central/ca.pem"));
    let start = load_start(&cfg).unwrap();
    assert_eq!(start.synced.revision, 7);
    let (state, status, client) = start_client(cfg, start, serde_json::json!({}));
    let st = || status.lock().unwrap().clone();

    wait_until("garbage refused", Duration::from_secs(15), || st().updates_rejected >= 1).await;
    assert!(st().last_error.unwrap().contains("does not parse"), "{:?}", st());
    assert!(state.indicators().match_ip(ip("203.0.113.9")).drops(), "last-known-good still enforced");
    assert_eq!(st().revision, 7);

    *mode.lock().unwrap() = 1;
    let before = st().updates_rejected;
    wait_until("bad indicator refused", Duration::from_secs(15), || st().updates_rejected > before && st().last_error.is_some_and(|e| e.contains("not..valid"))).await;
    assert_eq!(st().revision, 7);
    assert!(state.indicators().match_ip(ip("203.0.113.9")).drops());

    *mode.lock().unwrap() = 2;
    wait_until("good delta applied", Duration::from_secs(15), || st().revision == 8).await;
    assert!(state.indicators().match_ip(ip("198.51.100.4")).drops());
    assert!(state.indicators().match_ip(ip("203.0.113.9")).drops());
    assert_eq!(st().last_error, None);

    *mode.lock().unwrap() = 3;
    wait_until("unreachable shown", Duration::from_secs(15), || st().state == "disconnected").await;
    assert!(state.indicators().match_ip(ip("198.51.100.4")).drops());
    client.finish();
    // What was applied is what a restart loads: the state file still holds
    // revision 7, the journal the answer that brought revision 8.
    assert!(d.join("gw").join(JOURNAL_FILE).exists());
    assert!(std::fs::read_to_string(d.join("gw/central-state.json")).unwrap().contains("\"revision\":7"));
    let again = hbgw_controlplane::central::client::load_state(&d.join("gw"), 1000).unwrap().unwrap();
    assert_eq!(again.revision, 8);
    assert_eq!(again.indicators.len(), 2);
}

fn changes(revision: u64, change: Change) -> bytes::Bytes {
    serde_json::to_vec(&SyncAnswer { revision, changes: Some(vec![JournalEntry { revision, change }]), snapshot: None }).unwrap().into()
}

#[test]
fn the_journal_replays_onto_the_state_file_and_a_gap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ind = |v: &str, a: &str| WireIndicator { value: v.into(), audit_id: a.into(), feed: "mdr".into() };
    let mut lkg = SyncedState::default();
    let snap = hbgw_controlplane::central::protocol::Snapshot { indicators: vec![ind("203.0.113.9", "A1")], ..Default::default() };
    lkg.commit(lkg.prepare(&SyncAnswer { revision: 7, changes: None, snapshot: Some(snap) }, 1000).unwrap());
    save_state(d, &lkg).unwrap();

    let (mut j, _) = StateJournal::open(d).unwrap();
    let add = changes(8, Change::IndicatorsAdd { indicators: vec![ind("198.51.100.4", "A2"), ind("evil.example", "A3")] });
    let remove = changes(9, Change::IndicatorsRemove { audit_ids: vec!["A1".into()] });
    // A record the state file already holds is skipped.
    j.append(&JournalRecord { since: 6, to: 7, body: changes(7, Change::IndicatorsRemove { audit_ids: vec!["A1".into()] }) }).unwrap();
    j.append(&JournalRecord { since: 7, to: 8, body: add.clone() }).unwrap();
    j.append(&JournalRecord { since: 8, to: 9, body: remove.clone() }).unwrap();
    let s = load_state(d, 1000).unwrap().unwrap();
    let mut expect = lkg.clone();
    for (body, since) in [(&add, 7), (&remove, 8)] {
        let a: SyncAnswer = serde_json::from_slice(body).unwrap();
        assert_eq!(expect.revision, since);
        expect.commit(expect.prepare(&a, 1000).unwrap());
    }
    assert_eq!(s.revision, 9);
    let ids = |s: &SyncedState| s.indicators.keys().map(|k| k.to_string()).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(ids(&s), ids(&expect));
    assert_eq!(ids(&s), ["A2".to_string(), "A3".to_string()].into());
    assert!(s.book.overlay().match_ip(ip("198.51.100.4")).drops());
    assert!(!s.book.overlay().match_ip(ip("203.0.113.9")).drops(), "removed by the journal");
    assert!(s.book.overlay().match_domain(b"www.evil.example").drops());
    // Over the gateway's limit after the replay: refused, naming the knob.
    assert!(load_state(d, 1).unwrap_err().contains("max_indicators"));

    // A record that does not follow: refused with the way out.
    j.append(&JournalRecord { since: 11, to: 12, body: changes(12, Change::IndicatorsRemove { audit_ids: vec![] }) }).unwrap();
    let e = load_state(d, 1000).unwrap_err();
    assert!(e.contains("does not apply") && e.contains("from revision 11 follows revision 9") && e.contains("resync"), "{e}");

    // Writing the state whole empties the journal.
    save_state(d, &s).unwrap();
    assert!(!d.join(JOURNAL_FILE).exists());
    assert_eq!(load_state(d, 1000).unwrap().unwrap().revision, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_follows_a_real_central_and_resyncs_after_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = TestCentral::start(d, 2).await;
    let call = |method, path, body| central.call(method, path, body);

    let cfg = central.gateway_section(d).await;
    let start = load_start(&cfg).unwrap();
    let (state, status, client) = start_client(cfg, start, serde_json::json!({}));
    let st = || status.lock().unwrap().clone();
    wait_until("enrolled and connected", Duration::from_secs(15), || st().state == "connected").await;
    assert!(d.join("gw/identity.json").exists());

    call(hyper::Method::POST, "/v1/admin/indicators", r#"{"indicators":[{"value":"203.0.113.1","audit_id":"X1"}]}"#).await;
    wait_until("indicator 1", Duration::from_secs(15), || state.indicators().match_ip(ip("203.0.113.1")).drops()).await;
    // Journal keeps 2 revisions: a gateway that missed more gets a snapshot.
    for body in [
        r#"{"indicators":[{"value":"203.0.113.2","audit_id":"X2"}]}"#,
        r#"{"indicators":[{"value":"203.0.113.3","audit_id":"X3"}]}"#,
        r#"{"indicators":[{"value":"203.0.113.4","audit_id":"X4"}]}"#,
    ] {
        call(hyper::Method::POST, "/v1/admin/indicators", body).await;
    }
    call(hyper::Method::DELETE, "/v1/admin/indicators", r#"{"audit_ids":["X1"]}"#).await;
    wait_until("revision 5", Duration::from_secs(15), || st().revision == 5).await;
    let set = state.indicators();
    assert!(!set.match_ip(ip("203.0.113.1")).drops());
    for a in ["203.0.113.2", "203.0.113.3", "203.0.113.4"] {
        assert!(set.match_ip(ip(a)).drops(), "{a}");
    }
    assert!(st().updates_applied >= 2);
    client.finish();
}

/// Each applied update is appended to the journal (the state file is not
/// rewritten); once the journal outgrows the state file and
/// `JOURNAL_FOLD_MIN_BYTES`, it is folded into a new state file (from the
/// files, beside the appends) and trimmed; a restart loads exactly what was
/// enforced either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_journaled_and_the_journal_is_folded_into_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = TestCentral::start(d, 1000).await;
    let mut cfg = central.gateway_section(d).await;
    cfg.max_indicators = 100_000;
    let start = load_start(&cfg).unwrap();
    let (state, status, client) = start_client(cfg.clone(), start, serde_json::json!({}));
    let st = || status.lock().unwrap().clone();
    wait_until("connected", Duration::from_secs(15), || st().state == "connected").await;
    let journal = d.join("gw").join(JOURNAL_FILE);
    let state_file = d.join("gw/central-state.json");
    let state_revision = || -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap_or_default()).unwrap_or_default();
        v["revision"].as_u64().unwrap_or(0)
    };
    let post = |n: usize| {
        let list: Vec<String> =
            (0..1000).map(|i| format!(r#"{{"value":"10.{}.{}.{}","audit_id":"J{n}-{i:04}-padding-to-make-the-journal-grow"}}"#, n / 250, n % 250, i % 250)).collect();
        format!(r#"{{"indicators":[{}]}}"#, list.join(","))
    };
    // ~60 KB of journal per update: the first ones are appended only.
    let mut rev = 0;
    for n in 0..3 {
        rev = central.call(hyper::Method::POST, "/v1/admin/indicators", &post(n)).await["revision"].as_u64().unwrap();
        wait_until("applied", Duration::from_secs(15), || st().revision == rev).await;
    }
    wait_until("journaled", Duration::from_secs(15), || {
        std::fs::metadata(&journal).is_ok_and(|m| m.len() > 100_000) && load_state(&d.join("gw"), 100_000).unwrap().unwrap().revision == rev
    })
    .await;
    assert!(state_revision() < rev, "the state file was not rewritten for each update");
    // Past 1 MiB of journal: folded.
    let mut folded = false;
    for n in 3..30 {
        rev = central.call(hyper::Method::POST, "/v1/admin/indicators", &post(n)).await["revision"].as_u64().unwrap();
        wait_until("applied", Duration::from_secs(15), || st().revision == rev).await;
        if state_revision() > 3 {
            folded = true;
            break;
        }
    }
    assert!(folded, "the journal was folded into the state file");
    wait_until("journal trimmed", Duration::from_secs(15), || std::fs::metadata(&journal).map_or(0, |m| m.len()) < 1 << 20).await;
    let left: Vec<String> = std::fs::read_dir(d.join("gw"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".fold") || n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "the fold left {left:?}");
    assert!(state.indicators().match_ip(ip("10.0.2.7")).drops());
    let held = st().indicators;
    client.finish();
    let again = load_state(&d.join("gw"), 100_000).unwrap().unwrap();
    assert_eq!(again.revision, rev);
    assert_eq!(again.indicators.len() as u64, held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_is_reported_to_central_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = TestCentral::start(d, 100).await;
    let mut cfg = central.gateway_section(d).await;
    cfg.max_indicators = 2;
    cfg.health_interval_s = 3600; // only a refusal makes it upload within the test
    let start = load_start(&cfg).unwrap();
    let (state, status, client) = start_client(cfg, start, serde_json::json!({"endpoints": {"green": 1}}));
    let st = || status.lock().unwrap().clone();
    wait_until("connected", Duration::from_secs(15), || st().state == "connected").await;

    central.call(hyper::Method::POST, "/v1/admin/indicators", r#"{"indicators":[{"value":"203.0.113.1","audit_id":"K1"}]}"#).await;
    wait_until("first indicator", Duration::from_secs(15), || state.indicators().match_ip(ip("203.0.113.1")).drops()).await;
    assert_eq!(central.call(hyper::Method::GET, "/v1/admin/health", "").await, serde_json::json!([]), "nothing reported yet");
    // K1 replaced: one indicator in force, two records compiled until the
    // layers are compacted (the summary's total counts the one).
    central.call(hyper::Method::POST, "/v1/admin/indicators", r#"{"indicators":[{"value":"203.0.113.9","audit_id":"K1"}]}"#).await;
    wait_until("K1 replaced", Duration::from_secs(15), || state.indicators().match_ip(ip("203.0.113.9")).drops()).await;
    assert!(!state.indicators().match_ip(ip("203.0.113.1")).drops());

    // Two more would hold 3, over the gateway's limit of 2: refused whole.
    central
        .call(hyper::Method::POST, "/v1/admin/indicators", r#"{"indicators":[{"value":"203.0.113.2","audit_id":"K2"},{"value":"203.0.113.3","audit_id":"K3"}]}"#)
        .await;
    wait_until("refused", Duration::from_secs(15), || st().updates_rejected >= 1).await;
    let t = Instant::now();
    let report = loop {
        let h = central.call(hyper::Method::GET, "/v1/admin/health", "").await;
        if let Some(r) = h.get(0).map(|g| g["summary"].clone()) {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the refusal never reached Central");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rej = &report["last_rejected_update"];
    assert!(rej["error"].as_str().unwrap().contains("over this gateway's limit of 2"), "{report}");
    assert_eq!(rej["revision_in_force"], 2);
    assert_eq!(report["indicators"]["total"], 1, "{report}");
    assert!(report["updates_rejected"].as_u64().unwrap() >= 1);
    assert_eq!(report["endpoints"]["green"], 1, "the usual summary comes along");
    assert_eq!(report["last_rejected_feed"], serde_json::Value::Null);
    // The previous state stays in force.
    assert!(state.indicators().match_ip(ip("203.0.113.9")).drops());
    assert!(!state.indicators().match_ip(ip("203.0.113.2")).drops());
    assert_eq!(st().revision, 2);
    client.finish();
}

/// A gateway and a Central both at revision 0 (nothing posted yet): after
/// the first (empty) snapshot the gateway long-polls like at any other
/// revision instead of asking for an empty snapshot again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gateway_at_revision_zero_waits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = TestCentral::start(d, 100).await;
    let mut cfg = central.gateway_section(d).await;
    cfg.wait_s = 2;
    let start = load_start(&cfg).unwrap();
    let (state, status, client) = start_client(cfg, start, serde_json::json!({}));
    let st = || status.lock().unwrap().clone();
    // The first contact is answered at once (an empty snapshot).
    wait_until("connected", Duration::from_secs(15), || st().state == "connected").await;
    let first = st();
    assert_eq!((first.revision, first.snapshots, first.updates_applied), (0, 1, 1), "{first:?}");
    // Idle for longer than one long poll: at most the poll timing out, no
    // snapshot after snapshot (the bug: hundreds per second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let idle = st();
    assert_eq!((idle.snapshots, idle.updates_applied), (1, 1), "{idle:?}");
    // The first change still arrives at once, not after the poll's wait.
    let t = Instant::now();
    central.call(hyper::Method::POST, "/v1/admin/indicators", r#"{"indicators":[{"value":"203.0.113.7","audit_id":"Z1"}]}"#).await;
    wait_until("indicator", Duration::from_secs(15), || state.indicators().match_ip(ip("203.0.113.7")).drops()).await;
    assert!(t.elapsed() < Duration::from_millis(1500), "the change took {:?}", t.elapsed());
    // (From revision 0 the first change comes as a snapshot of revision 1.)
    // The status is updated after the indicators are published: wait for it.
    wait_until("status updated", Duration::from_secs(15), || st().updates_applied >= 2).await;
    let after = st();
    assert_eq!((after.revision, after.snapshots, after.updates_applied), (1, 2, 2), "{after:?}");
    client.finish();
}

/// Layers left by a small update (under `COMPACT_AFTER` changes) are folded
/// into a new base once Central has been quiet for `QUIET_FOR`, well before
/// the long poll ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_fold_into_a_new_base_when_central_goes_quiet() {
    use hbgw_controlplane::central::client::QUIET_FOR;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = TestCentral::start(d, 1000).await;
    let mut cfg = central.gateway_section(d).await;
    cfg.wait_s = 60;
    let start = load_start(&cfg).unwrap();
    let (state, status, client) = start_client(cfg, start, serde_json::json!({}));
    let st = || status.lock().unwrap().clone();
    wait_until("connected", Duration::from_secs(15), || st().state == "connected").await;
    // The first may come in the gateway's first answer, a snapshot; the
    // second is an update to what it holds.
    let mut posted = Instant::now();
    for (n, v) in [(1, "198.51.100.76"), (2, "198.51.100.77")] {
        let body = format!(r#"{{"indicators":[{{"value":"{v}","audit_id":"Q{n}"}}]}}"#);
        posted = Instant::now();
        let rev = central.call(hyper::Method::POST, "/v1/admin/indicators", &body).await["revision"].as_u64().unwrap();
        wait_until("applied", Duration::from_secs(15), || st().revision == rev).await;
    }
    assert!(!state.indicators().layers().is_empty(), "the update is a layer of its own");
    wait_until("folded into a new base", QUIET_FOR * 5, || state.indicators().layers().is_empty()).await;
    // The quiet time counts from the long poll sent after the update.
    assert!(posted.elapsed() >= QUIET_FOR, "not before Central was quiet for {QUIET_FOR:?}");
    assert!(state.indicators().match_ip(ip("198.51.100.77")).drops());
    client.finish();
}
