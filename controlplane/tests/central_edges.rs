//! The Central client's edges: third-party feeds polled over HTTPS from a
//! server in this test (loopback), a Central that answers after the client
//! gave up, and the fail-open counter.

mod central_support;
use central_support::{ip, section, start_client, wait_until};
use hbgw_controlplane::central::client::{load_start, CentralClient};
use hbgw_controlplane::central::http::{self, error, json_bytes};
use hbgw_controlplane::central::protocol::{Snapshot, SyncAnswer};
use hbgw_controlplane::central::server;
use hbgw_shared::config::{BeforeFirstSync, CentralSection, ThirdPartyFeedSection, ThirdPartyFormat};
use hbgw_shared::indicators::IndicatorMatch;
use hbgw_shared::state::GatewayState;
use hbgw_shared::stats::{CentralStatus, Counts, PortReport, StatsReport};
use hyper::StatusCode;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An HTTPS server on loopback with the certificate `server::init` made for
/// localhost (signed by the CA the client trusts); `answer(path)` is the body.
async fn serve(d: &Path, answer: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static) -> String {
    if !d.join("central/ca.pem").exists() {
        server::init(&d.join("central"), "localhost").unwrap();
    }
    let cert = std::fs::read(d.join("central/server.pem")).unwrap();
    let key = std::fs::read(d.join("central/server.key")).unwrap();
    let answer = Arc::new(answer);
    let handler: http::Handler = Arc::new(move |req| {
        let a = answer.clone();
        Box::pin(async move {
            match a(req.uri().path()) {
                Some(body) => json_bytes(StatusCode::OK, body),
                None => error(StatusCode::SERVICE_UNAVAILABLE, "down"),
            }
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(listener, http::server_tls(&cert, &key).unwrap(), handler));
    url
}

fn start(cfg: CentralSection) -> (Arc<GatewayState>, Arc<Mutex<CentralStatus>>, CentralClient) {
    let start = load_start(&cfg).unwrap();
    start_client(cfg, start, serde_json::json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_feeds_are_polled_and_a_bad_poll_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 0: a good list; 1: a list with one bad line; 2: a list over max_bytes; 3: a smaller good list.
    let mode = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let (m, p) = (mode.clone(), polls.clone());
    let url = serve(d, move |path| {
        p.fetch_add(1, Ordering::SeqCst);
        let body = match (path, m.load(Ordering::SeqCst)) {
            ("/list.txt", 0) => "# test feed\n198.51.100.7\n198.51.100.8 AUD-8\n".to_owned(),
            ("/list.txt", 1) => "198.51.100.9\nnot-an-address\n".to_owned(),
            ("/list.txt", 2) => format!("198.51.100.10\n{}", "# padding\n".repeat(200)),
            ("/list.txt", _) => "198.51.100.11\n".to_owned(),
            ("/bundle.json", _) => r#"{"type":"bundle","id":"bundle--1","objects":[
                {"type":"indicator","id":"indicator--a","pattern_type":"stix","pattern":"[domain-name:value = 'stix-evil.example']"},
                {"type":"indicator","id":"indicator--b","pattern_type":"stix","pattern":"[ipv4-addr:value = '203.0.113.77']","valid_until":"2000-01-01T00:00:00Z"}
            ]}"#
            .to_owned(),
            _ => return None,
        };
        Some(body.into_bytes())
    })
    .await;
    let feed = |name: &str, path: &str, format, list_type: Option<&str>| ThirdPartyFeedSection {
        name: name.into(),
        url: format!("{url}{path}"),
        format,
        list_type: list_type.map(str::to_owned),
        ca: None,
        interval_s: 1,
        max_bytes: 1024,
    };
    // Central itself is not reachable (nothing listens on port 9 here); feeds are polled regardless.
    let mut cfg = section("https://127.0.0.1:9".into(), d, &d.join("central/ca.pem"));
    cfg.feeds = vec![
        feed("tp-list", "/list.txt", ThirdPartyFormat::List, Some("ipv4")),
        feed("tp-stix", "/bundle.json", ThirdPartyFormat::Stix, None),
    ];
    let (state, status, client) = start(cfg);
    let st = || status.lock().unwrap().clone();
    let long = Duration::from_secs(15);

    wait_until("list feed enforced", long, || state.indicators().match_ip(ip("198.51.100.7")).drops()).await;
    wait_until("STIX feed enforced", long, || state.indicators().match_domain(b"www.stix-evil.example").drops()).await;
    let set = state.indicators();
    let IndicatorMatch::Hit(h) = set.match_ip(ip("198.51.100.8")) else { panic!("198.51.100.8 not hit") };
    assert_eq!((h.audit_id, h.feed), ("AUD-8", "tp-list"));
    let IndicatorMatch::Hit(h) = set.match_ip(ip("198.51.100.7")) else { panic!() };
    assert_eq!(h.audit_id, "tp-list:2", "an IoC without an audit id is named by feed and line");
    assert_eq!(set.match_ip(ip("203.0.113.77")), IndicatorMatch::NoMatch, "expired STIX indicator");

    // A bad line refuses the whole poll: the previous list stays, nothing of the new one.
    mode.store(1, Ordering::SeqCst);
    wait_until("bad list refused", long, || st().last_error.is_some_and(|e| e.contains("tp-list") && e.contains("line 2"))).await;
    let set = state.indicators();
    assert!(set.match_ip(ip("198.51.100.7")).drops());
    assert!(!set.match_ip(ip("198.51.100.9")).drops());

    // Over max_bytes: refused whole too.
    mode.store(2, Ordering::SeqCst);
    wait_until("oversized list refused", long, || st().last_error.is_some_and(|e| e.contains("tp-list") && e.contains("1024"))).await;
    assert!(state.indicators().match_ip(ip("198.51.100.7")).drops());
    assert!(!state.indicators().match_ip(ip("198.51.100.10")).drops());

    // A good list replaces the feed's indicators; the other feed's stay.
    mode.store(3, Ordering::SeqCst);
    wait_until("new list enforced", long, || state.indicators().match_ip(ip("198.51.100.11")).drops()).await;
    let set = state.indicators();
    assert!(!set.match_ip(ip("198.51.100.7")).drops(), "the feed's old indicators are gone");
    assert!(set.match_domain(b"stix-evil.example").drops());
    assert!(polls.load(Ordering::SeqCst) >= 5);
    client.finish();
    // Third-party indicators are part of the last-known-good state.
    let again = hbgw_controlplane::central::client::load_state(&d.join("gw"), 1000).unwrap().unwrap();
    assert_eq!(again.third_party["tp-list"].len(), 1);
    assert_eq!(again.third_party["tp-stix"].len(), 1);
}

fn snapshot_answer(revision: u64, policy: Option<&str>, indicator: &str) -> Vec<u8> {
    serde_json::to_vec(&SyncAnswer {
        revision,
        changes: None,
        snapshot: Some(Snapshot {
            policy: policy.map(str::to_owned),
            indicators: vec![hbgw_controlplane::central::protocol::WireIndicator {
                value: indicator.into(),
                audit_id: format!("S{revision}"),
                feed: "mdr".into(),
            }],
            ..Default::default()
        }),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_slower_than_the_timeout_is_treated_as_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("gw")).unwrap();
    std::fs::write(d.join("gw/identity.json"), r#"{"gateway_id":"gw-1","secret":"s"}"#).unwrap();
    // 0: a snapshot at once; 1: answers only after 40 s (the client waits
    // wait_s + 10 = 11 s); 2: a newer snapshot at once.
    let mode = Arc::new(AtomicUsize::new(0));
    let m = mode.clone();
    if !d.join("central/ca.pem").exists() {
        server::init(&d.join("central"), "localhost").unwrap();
    }
    let cert = std::fs::read(d.join("central/server.pem")).unwrap();
    let key = std::fs::read(d.join("central/server.key")).unwrap();
    let handler: http::Handler = Arc::new(move |req| {
        let mode = m.load(Ordering::SeqCst);
        let since: u64 = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")?.parse().ok())).unwrap_or(0);
        Box::pin(async move {
            match mode {
                0 if since == 0 => json_bytes(StatusCode::OK, snapshot_answer(1, Some("default_action = \"accept\"\n"), "203.0.113.5")),
                0 | 1 => {
                    // Long-poll with nothing new at mode 0; far too slow at mode 1.
                    let secs = if mode == 1 { 40 } else { 1 };
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    json_bytes(StatusCode::OK, serde_json::to_vec(&SyncAnswer { revision: since, changes: Some(vec![]), snapshot: None }).unwrap())
                }
                _ => json_bytes(StatusCode::OK, snapshot_answer(2, Some("default_action = \"accept\"\n"), "203.0.113.6")),
            }
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(listener, http::server_tls(&cert, &key).unwrap(), handler));

    let (state, status, client) = start(section(url, d, &d.join("central/ca.pem")));
    let st = || status.lock().unwrap().clone();
    wait_until("first snapshot", Duration::from_secs(10), || st().revision == 1).await;
    assert!(state.indicators().match_ip(ip("203.0.113.5")).drops());

    mode.store(1, Ordering::SeqCst);
    let t = Instant::now();
    wait_until("slow Central shown as disconnected", Duration::from_secs(30), || st().state == "disconnected").await;
    let waited = t.elapsed();
    assert!(waited >= Duration::from_secs(5), "gave up after {waited:?}, before its timeout");
    let e = st().last_error.unwrap();
    assert!(e.contains("did not answer within 11 s"), "{e}");
    assert!(state.indicators().match_ip(ip("203.0.113.5")).drops(), "last-known-good still enforced");
    assert_eq!(st().revision, 1);

    // Central answers promptly again: the client follows.
    mode.store(2, Ordering::SeqCst);
    wait_until("recovered", Duration::from_secs(15), || st().revision == 2).await;
    assert!(state.indicators().match_ip(ip("203.0.113.6")).drops());
    assert_eq!(st().state, "connected");
    client.finish();
}

fn report(tx: &[u64]) -> StatsReport {
    StatsReport {
        ports: tx.iter().map(|&tx| PortReport { interval: Counts { tx, ..Default::default() }, ..Default::default() }).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_frames_are_counted_until_a_policy_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("gw")).unwrap();
    std::fs::write(d.join("gw/identity.json"), r#"{"gateway_id":"gw-1","secret":"s"}"#).unwrap();
    let policy = Arc::new(AtomicUsize::new(0));
    let p = policy.clone();
    let url = serve(d, move |_| match p.load(Ordering::SeqCst) {
        0 => None,
        _ => Some(snapshot_answer(3, Some("default_action = \"drop\"\n"), "203.0.113.5")),
    })
    .await;

    // Fail-closed counts nothing: nothing is forwarded without a policy.
    let mut closed_cfg = section(url.clone(), d, &d.join("central/ca.pem"));
    closed_cfg.state_dir = d.join("gw-closed");
    let (_, status_closed, closed) = start(closed_cfg);
    closed.on_tick(&report(&[5, 7]));
    assert_eq!(status_closed.lock().unwrap().fail_open_frames, 0);
    closed.finish();

    let mut cfg = section(url, d, &d.join("central/ca.pem"));
    cfg.before_first_sync = BeforeFirstSync::FailOpen;
    let (state, status, client) = start(cfg);
    let st = || status.lock().unwrap().clone();
    assert_eq!(st().before_first_sync, "fail_open");
    // No policy yet: the published policy forwards.
    let flow = hbgw_shared::policy::FlowKey {
        ingress: hbgw_shared::policy::PortRole::Lan,
        egress: hbgw_shared::policy::PortRole::Wan,
        vlan: None,
        src: ip("10.0.0.5"),
        dst: ip("198.51.100.1"),
        protocol: hbgw_shared::policy::Protocol::TCP,
        src_port: 40000,
        dst_port: 443,
    };
    let unknown = hbgw_shared::endpoint::EndpointHealth::Unknown;
    assert_eq!(state.policy().evaluate(&flow, unknown, unknown).action, hbgw_shared::policy::RuleAction::Accept);
    client.on_tick(&report(&[5, 7]));
    client.on_tick(&report(&[0, 0]));
    client.on_tick(&report(&[1]));
    assert_eq!(st().fail_open_frames, 13);

    // Central's first policy: forwarding is no longer a fail-open decision.
    policy.store(1, Ordering::SeqCst);
    wait_until("policy from Central", Duration::from_secs(15), || st().policy_from_central).await;
    assert_eq!(state.policy().evaluate(&flow, unknown, unknown).action, hbgw_shared::policy::RuleAction::Drop);
    client.on_tick(&report(&[100]));
    assert_eq!(st().fail_open_frames, 13);
    client.finish();
}
