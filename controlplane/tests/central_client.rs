//! The gateway's Central client against a real in-process Central, and
//! against a server that answers garbage: the last-known-good state stays in
//! force, the refusal is counted and shown, and a good Central is followed
//! again afterwards.

mod central_support;
use central_support::*;
use hbgw_controlplane::central::client::{load_start, save_state};
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
    // What was applied is what a restart loads.
    let again = hbgw_controlplane::central::client::load_state(&d.join("gw"), 1000).unwrap().unwrap();
    assert_eq!(again.revision, 8);
    assert_eq!(again.indicators.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_follows_a_real_central_and_resyncs_after_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = TestCentral::start(d, 2).await;
    let call = |method, path, body| central.call(method, path, body);
    let enroll = call(hyper::Method::POST, "/v1/admin/tokens", "").await["token"].as_str().unwrap().to_owned();

    let mut cfg = section(central.url.clone(), d, &d.join("central/ca.pem"));
    cfg.enrollment_token = Some(enroll);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_is_reported_to_central_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = TestCentral::start(d, 100).await;
    let enroll = central.call(hyper::Method::POST, "/v1/admin/tokens", "").await["token"].as_str().unwrap().to_owned();
    let mut cfg = section(central.url.clone(), d, &d.join("central/ca.pem"));
    cfg.enrollment_token = Some(enroll);
    cfg.max_indicators = 2;
    cfg.health_interval_s = 3600; // only a refusal makes it upload within the test
    let start = load_start(&cfg).unwrap();
    let (state, status, client) = start_client(cfg, start, serde_json::json!({"endpoints": {"green": 1}}));
    let st = || status.lock().unwrap().clone();
    wait_until("connected", Duration::from_secs(15), || st().state == "connected").await;

    central.call(hyper::Method::POST, "/v1/admin/indicators", r#"{"indicators":[{"value":"203.0.113.1","audit_id":"K1"}]}"#).await;
    wait_until("first indicator", Duration::from_secs(15), || state.indicators().match_ip(ip("203.0.113.1")).drops()).await;
    assert_eq!(central.call(hyper::Method::GET, "/v1/admin/health", "").await, serde_json::json!([]), "nothing reported yet");

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
    assert_eq!(rej["revision_in_force"], 1);
    assert!(report["updates_rejected"].as_u64().unwrap() >= 1);
    assert_eq!(report["endpoints"]["green"], 1, "the usual summary comes along");
    assert_eq!(report["last_rejected_feed"], serde_json::Value::Null);
    // The previous state stays in force.
    assert!(state.indicators().match_ip(ip("203.0.113.1")).drops());
    assert!(!state.indicators().match_ip(ip("203.0.113.2")).drops());
    assert_eq!(st().revision, 1);
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
    let enroll = central.call(hyper::Method::POST, "/v1/admin/tokens", "").await["token"].as_str().unwrap().to_owned();
    let mut cfg = section(central.url.clone(), d, &d.join("central/ca.pem"));
    cfg.enrollment_token = Some(enroll);
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
    let after = st();
    assert_eq!((after.revision, after.snapshots, after.updates_applied), (1, 2, 2), "{after:?}");
    client.finish();
}
