//! Whole-service behaviour over real TLS sessions: the red/yellow list,
//! IoC queries, synchronized user ID, missing and no heartbeat end to end.

#[path = "heartbeat_support/mod.rs"]
mod support;

use hbgw_controlplane::heartbeat::missing::no_heartbeat_id;
use hbgw_controlplane::heartbeat::protocol::{EndpointMessage, GatewayMessage, IocAnswer, ReportedHealth, UserAccount};
use hbgw_controlplane::heartbeat::Flow;
use hbgw_shared::endpoint::EndpointHealth;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

fn acct(d: &str, u: &str) -> UserAccount {
    UserAccount { domain: d.into(), user: u.into() }
}

/// Reads lists until one satisfies `pred`; returns how long that took.
async fn list_until(c: &mut hbgw_controlplane::heartbeat::client::EndpointConnection, pred: impl Fn(&[hbgw_controlplane::heartbeat::protocol::ListedEndpoint]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if let GatewayMessage::EndpointList { endpoints, .. } = recv(c).await {
            if pred(&endpoints) {
                return start.elapsed();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_endpoint_reaches_the_others_within_a_second() {
    let gw = start(3, |c| c.list_debounce = Duration::from_millis(300)).await;
    let mut a = gw.join(0, ReportedHealth::Green).await;
    let mut b = gw.join(1, ReportedHealth::Green).await;
    let mut c = gw.join(2, ReportedHealth::Green).await;
    c.send(EndpointMessage::HealthChange { health: ReportedHealth::Red, reason: Some("malware".into()) }).await.unwrap();
    let red = |l: &[hbgw_controlplane::heartbeat::protocol::ListedEndpoint]| {
        l.len() == 1 && l[0].health == EndpointHealth::Red && l[0].has_mac(mac(2)) && l[0].interfaces[0].ips == vec![ip(2)]
    };
    let (ta, tb) = tokio::join!(list_until(&mut a, red), list_until(&mut b, red));
    assert!(ta < Duration::from_secs(1) && tb < Duration::from_secs(1), "{ta:?} {tb:?}");
    // A burst of changes is coalesced, and green leaves the list.
    c.send(EndpointMessage::HealthChange { health: ReportedHealth::Yellow, reason: None }).await.unwrap();
    c.send(EndpointMessage::HealthChange { health: ReportedHealth::Green, reason: None }).await.unwrap();
    let t = list_until(&mut a, |l| l.is_empty()).await;
    assert!(t < Duration::from_secs(1), "{t:?}");
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_goes_out_every_second_interval() {
    let gw = start(1, |c| c.interval = Duration::from_millis(200)).await;
    let mut a = gw.join(0, ReportedHealth::Yellow).await;
    let start = Instant::now();
    let mut seqs = Vec::new();
    while seqs.len() < 4 {
        match recv(&mut a).await {
            GatewayMessage::EndpointList { seq, endpoints } => {
                assert_eq!(endpoints.len(), 1);
                seqs.push(seq);
            }
            other => panic!("{other:?}"),
        }
        a.send(EndpointMessage::Heartbeat { health: ReportedHealth::Yellow }).await.unwrap();
    }
    let took = start.elapsed();
    // The first may be the change (debounced); then one every 400 ms.
    assert!(took >= Duration::from_millis(1000) && took < Duration::from_millis(2500), "{took:?}");
    assert!(seqs.windows(2).all(|w| w[1] > w[0]));
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioc_query_is_answered_or_times_out() {
    let gw = start(2, |c| c.ioc_timeout = Duration::from_millis(300)).await;
    let mut a = gw.join(0, ReportedHealth::Green).await;
    let _b = gw.join(1, ReportedHealth::Green).await;
    let flow = Flow { protocol: 6, src_ip: ip(0), src_port: 50000, dst_ip: "198.51.100.7".parse().unwrap(), dst_port: 443 };
    let responder = tokio::spawn(async move {
        loop {
            if let GatewayMessage::IocQuery { query_id, flow: f } = recv(&mut a).await {
                assert_eq!(f, flow);
                a.send(EndpointMessage::IocAnswer(IocAnswer {
                    query_id,
                    host: Some("PC0".into()),
                    user: Some("CORP\\alice".into()),
                    process: Some("C:\\evil.exe".into()),
                }))
                .await
                .unwrap();
                return a;
            }
        }
    });
    let answer = gw.service.ask_ioc_by_ip(ip(0), flow).await.expect("an answer");
    assert_eq!(answer.process.as_deref(), Some("C:\\evil.exe"));
    assert_eq!(answer.host.as_deref(), Some("PC0"));
    let _a = responder.await.unwrap();
    // Endpoint 1 never answers: None after the timeout.
    let id1 = gw.pki.endpoints[1].fingerprint.endpoint_id();
    let t = Instant::now();
    assert!(gw.service.ask_ioc(id1, flow).await.is_none());
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(gw.service.ask_ioc(hbgw_shared::endpoint::EndpointId(42), flow).await.is_none(), "no session");
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_users_are_checked_and_bound_to_addresses() {
    let gw = start(1, |_| {}).await;
    let mut c = gw.connect(0).await;
    c.send(hello(0, ReportedHealth::Green, vec![acct("PC0", "localadmin"), acct("CORP", "alice")])).await.unwrap();
    assert!(matches!(recv(&mut c).await, GatewayMessage::Welcome { .. }));
    let svc = &gw.service;
    wait_until(Duration::from_secs(2), "alice bound", || svc.user_of_ip(ip(0)).is_some_and(|u| u.account.user == "alice")).await;
    assert_eq!(svc.user_of_ip(ip(0)).unwrap().display_name.as_deref(), Some("Alice"));
    // Unknown and disabled accounts are not bound; bob is.
    c.send(EndpointMessage::SignIn(acct("CORP", "mallory"))).await.unwrap();
    c.send(EndpointMessage::SignIn(acct("CORP", "disabled"))).await.unwrap();
    c.send(EndpointMessage::SignIn(acct("corp", "BOB"))).await.unwrap();
    wait_until(Duration::from_secs(2), "bob bound", || svc.user_of_ip(ip(0)).is_some_and(|u| u.account.user == "BOB")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let users = &svc.report().endpoints[0].users;
    assert_eq!(users, &vec!["CORP\\alice".to_owned(), "corp\\BOB".to_owned()]);
    c.send(EndpointMessage::SignOut(acct("corp", "BOB"))).await.unwrap();
    wait_until(Duration::from_secs(2), "back to alice", || svc.user_of_ip(ip(0)).is_some_and(|u| u.account.user == "alice")).await;
    c.send(EndpointMessage::SignOut(acct("CORP", "alice"))).await.unwrap();
    wait_until(Duration::from_secs(2), "nobody", || svc.user_of_ip(ip(0)).is_none()).await;
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_endpoint_with_traffic_goes_missing_then_comes_back() {
    let gw = start(1, |c| c.interval = Duration::from_millis(200)).await;
    let mut c = gw.connect(0).await;
    c.send(hello(0, ReportedHealth::Green, vec![acct("CORP", "alice")])).await.unwrap();
    assert!(matches!(recv(&mut c).await, GatewayMessage::Welcome { .. }));
    let started = Instant::now();
    wait_until(Duration::from_secs(2), "alice bound", || gw.service.user_of_ip(ip(0)).is_some()).await;
    // Stop heartbeating; the endpoint's MAC keeps sending through the LAN port.
    while gw.table.load().health_by_mac(&mac(0)) != EndpointHealth::Missing {
        assert!(started.elapsed() < Duration::from_secs(3), "never went missing");
        gw.service.observe_traffic(mac(0), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(600), "not before 3 intervals: {:?}", started.elapsed());
    assert!(gw.service.user_of_ip(ip(0)).is_none(), "heartbeat lost signs the user out");
    let report = gw.service.report();
    assert_eq!(report.summary.missing, 1);
    let ev = report.endpoints[0].missing.as_ref().expect("evidence");
    assert_eq!(ev.traffic[0].zone, "LAN");
    assert!(ev.missed_heartbeats >= 3);
    c.send(EndpointMessage::Heartbeat { health: ReportedHealth::Green }).await.unwrap();
    wait_until(Duration::from_secs(2), "active again", || gw.table.load().health_by_mac(&mac(0)) == EndpointHealth::Green).await;
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seen_macs_without_heartbeat_become_no_heartbeat_until_claimed() {
    use hbgw_dataplane::seen_macs::{exchange, SeenMac, SeenMacs};
    let (mut flushers, ex) = exchange(1, 64);
    let gw = start_with(1, |c| c.seen_macs_poll = Duration::from_millis(20), Some(ex)).await;
    let mut set = SeenMacs::new(64);
    set.insert(SeenMac::new(mac(0).0, 0)); // LAN: a MAC no endpoint claims (yet)
    set.insert(SeenMac::new([0x02, 0xee, 0, 0, 0, 1], 1)); // WAN router: ignored
    flushers[0].flush(&mut set);
    wait_until(Duration::from_secs(2), "no heartbeat", || gw.table.load().health_by_mac(&mac(0)) == EndpointHealth::NoHeartbeat).await;
    assert_eq!(gw.table.load().endpoint_by_mac(&mac(0)), Some(no_heartbeat_id(mac(0))));
    assert_eq!(gw.table.load().health_by_mac(&hbgw_shared::endpoint::MacAddr([0x02, 0xee, 0, 0, 0, 1])), EndpointHealth::Unknown);
    let report = gw.service.report();
    assert_eq!(report.summary.no_heartbeat, 1);
    assert_eq!(report.endpoints[0].seen.as_ref().unwrap().zone, "LAN");
    // The endpoint with that MAC starts heartbeating: it replaces the record.
    let _c = gw.join(0, ReportedHealth::Green).await;
    let id = gw.pki.endpoints[0].fingerprint.endpoint_id();
    wait_until(Duration::from_secs(2), "claimed", || gw.table.load().endpoint_by_mac(&mac(0)) == Some(id)).await;
    assert_eq!(gw.table.load().endpoint_count(), 1, "the no-heartbeat record is gone");
    assert_eq!(gw.service.report().summary.no_heartbeat, 0);
    gw.service.shutdown().await;
}
