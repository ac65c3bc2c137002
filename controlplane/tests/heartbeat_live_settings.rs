//! Heartbeat settings changed while the service runs: by the service's own
//! call, and from Central through the gateway's Central client (applied at
//! once, persisted, and applied again at the next start).

#[path = "heartbeat_support/mod.rs"]
mod support;

#[path = "central_support/mod.rs"]
mod central_support;
use central_support::{section, start_client, TestCentral};
use hbgw_controlplane::central::client::{load_start, load_state, CentralClient};
use hbgw_controlplane::heartbeat::client::{client_config, EndpointConnection};
use hbgw_controlplane::heartbeat::protocol::{GatewayMessage, ReportedHealth};
use hbgw_controlplane::heartbeat::HeartbeatService;
use hbgw_shared::config::CentralSection;
use hbgw_shared::stats::CentralStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// Connects endpoint `i`, sends its Hello; returns the session and the interval Welcome gave.
async fn welcome(service: &HeartbeatService, pki: &hbgw_controlplane::heartbeat::pki::TestPki, i: usize) -> (EndpointConnection, u64) {
    let ep = &pki.endpoints[i];
    let cfg = client_config(pki.ca_pem.as_bytes(), ep.cert_pem.as_bytes(), ep.key_pem.as_bytes(), false).unwrap();
    let mut c = EndpointConnection::connect(service.local_addr(), "localhost", cfg).await.unwrap();
    c.send(hello(i, ReportedHealth::Green, vec![])).await.unwrap();
    let GatewayMessage::Welcome { heartbeat_interval_ms, .. } = recv(&mut c).await else { panic!("welcome expected") };
    (c, heartbeat_interval_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sessions_get_the_new_interval_and_missed_limit() {
    let gw = start(3, |_| {}).await;
    let (_c0, interval) = welcome(&gw.service, &gw.pki, 0).await;
    assert_eq!(interval, 15_000);

    gw.service.set_settings(Duration::from_millis(300), 1, None).unwrap();
    assert_eq!(gw.service.report().interval_secs, 0.3);
    let (mut c1, interval) = welcome(&gw.service, &gw.pki, 1).await;
    assert_eq!(interval, 300);
    // Silent after Welcome: closed after (1 + 1) x 300 ms, not after 60 s.
    let t = std::time::Instant::now();
    expect_closed(&mut c1).await;
    assert!(t.elapsed() < Duration::from_secs(3), "closed after {:?}", t.elapsed());

    for (interval, missed) in [(Duration::from_millis(50), 3), (Duration::from_secs(7200), 3), (Duration::from_secs(1), 0)] {
        let e = gw.service.set_settings(interval, missed, None).unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains(": use"), "{e}");
    }
    assert_eq!(gw.service.report().interval_secs, 0.3, "a refused change changes nothing");
}

/// A session opened before the change follows it: a new `welcome` with
/// the new interval, the endpoint list every two new intervals, and its
/// idle limit from the new settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_follow_changed_settings() {
    let gw = start(3, |_| {}).await;
    let (mut c0, interval) = welcome(&gw.service, &gw.pki, 0).await;
    assert_eq!(interval, 15_000);
    // A change of the missed limit alone tells the endpoint nothing.
    gw.service.set_settings(Duration::from_secs(15), 5, None).unwrap();
    gw.service.set_settings(Duration::from_millis(400), 2, None).unwrap();
    let t = std::time::Instant::now();
    let mut welcomes = Vec::new();
    let mut lists = 0;
    // Until the second endpoint list after the new welcome (the period was 30 s).
    while lists < 2 {
        assert!(t.elapsed() < Duration::from_secs(4), "welcomes {welcomes:?}, lists {lists} after {:?}", t.elapsed());
        match recv(&mut c0).await {
            GatewayMessage::Welcome { heartbeat_interval_ms, endpoint_id, .. } => {
                welcomes.push(heartbeat_interval_ms);
                assert_eq!(endpoint_id, gw.pki.endpoints[0].fingerprint.endpoint_id().0);
            }
            GatewayMessage::EndpointList { .. } if !welcomes.is_empty() => lists += 1,
            _ => {}
        }
        // Keep the session up meanwhile (heartbeats at the new interval).
        c0.send(hbgw_controlplane::heartbeat::protocol::EndpointMessage::Heartbeat { health: ReportedHealth::Green }).await.unwrap();
    }
    assert_eq!(welcomes, [400], "one new welcome, with the new interval");
    // Silent now: closed after (2 + 1) x 400 ms, not after (5 + 1) x 15 s.
    let t = std::time::Instant::now();
    assert_eq!(expect_closed(&mut c0).await.as_deref(), Some("idle_timeout"));
    assert!(t.elapsed() < Duration::from_secs(3), "closed after {:?}", t.elapsed());
}

fn client(cfg: CentralSection, service: Arc<HeartbeatService>) -> (CentralClient, Arc<Mutex<CentralStatus>>) {
    let start = load_start(&cfg).unwrap();
    let (_state, status, c) = start_client(cfg, start, serde_json::json!({}));
    c.attach_heartbeat(service);
    (c, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_settings_from_central_apply_live_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let central = TestCentral::start(d, 100).await;
    let call = |method: hyper::Method, path: &'static str, body: String| {
        let central = &central;
        async move { central.try_call(method, path, &body).await }
    };

    let Gw { service, pki, dir: _pki_dir, .. } = start(3, |_| {}).await;
    let service = Arc::new(service);
    let (_, enroll) = call(hyper::Method::POST, "/v1/admin/tokens", String::new()).await.unwrap();
    let mut cfg = section(central.url.clone(), d, &d.join("central/ca.pem"));
    cfg.enrollment_token = Some(serde_json::from_slice::<serde_json::Value>(&enroll).unwrap()["token"].as_str().unwrap().to_owned());
    let (c, status) = client(cfg.clone(), service.clone());
    wait_until(Duration::from_secs(10), "connected", || status.lock().unwrap().state == "connected").await;

    // Bad settings are refused at Central with a one-line error.
    let e = call(hyper::Method::PUT, "/v1/admin/heartbeat", r#"{"interval_ms": 5, "missed_limit": 3}"#.into()).await.unwrap_err().to_string();
    assert!(e.contains("interval_ms 5") && !e.contains('\n'), "{e}");

    call(hyper::Method::PUT, "/v1/admin/heartbeat", r#"{"interval_ms": 400, "missed_limit": 2, "missing_zones": ["LAN", "DMZ"]}"#.into())
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "interval from Central", || service.report().interval_secs == 0.4).await;
    let (_s, interval) = welcome(&service, &pki, 0).await;
    assert_eq!(interval, 400);
    c.finish();
    let persisted = load_state(&d.join("gw"), 1000).unwrap().unwrap().heartbeat.unwrap();
    assert_eq!((persisted.interval_ms, persisted.missed_limit), (400, 2));
    assert_eq!(persisted.missing_zones, ["LAN", "DMZ"]);

    // A restart applies the persisted settings before Central answers.
    service.set_settings(Duration::from_secs(15), 3, None).unwrap();
    let mut down = cfg;
    down.url = "https://127.0.0.1:9".into();
    let (c2, _) = client(down, service.clone());
    assert_eq!(service.report().interval_secs, 0.4);
    let (_s, interval) = welcome(&service, &pki, 1).await;
    assert_eq!(interval, 400);
    c2.finish();
}
