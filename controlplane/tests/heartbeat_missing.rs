//! Missing heartbeat and no heartbeat, on tokio's paused clock: exact
//! deadlines, traffic evidence, zones, recovery.

use hbgw_controlplane::heartbeat::missing::{no_heartbeat_id, is_no_heartbeat_id, WatchState};
use hbgw_controlplane::heartbeat::{MissingHeartbeatTimer, TimerEvent, ZoneOf};
use hbgw_shared::endpoint::{EndpointId, MacAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{advance, Instant};

const INTERVAL: Duration = Duration::from_secs(15);
const LAN: usize = 0;
const WAN: usize = 1;
const UNZONED: usize = 7;

fn zone_of() -> ZoneOf {
    Arc::new(|slot| match slot {
        0 => Some("LAN".to_owned()),
        1 => Some("WAN".to_owned()),
        _ => None,
    })
}

fn timer() -> MissingHeartbeatTimer {
    MissingHeartbeatTimer::new(INTERVAL, 3, ["LAN".to_owned()].into(), zone_of())
}

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

/// What is due now, without letting the paused clock move.
fn due(t: &mut MissingHeartbeatTimer) -> Option<TimerEvent> {
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match t.poll_event(&mut cx) {
        Poll::Ready(e) => Some(e),
        Poll::Pending => None,
    }
}

/// Advances the clock in 1 s steps for `secs`, sending traffic from `mac`
/// on `slot` every step; returns the first event and when it came.
async fn run_with_traffic(t: &mut MissingHeartbeatTimer, secs: u64, traffic: Option<(MacAddr, usize)>, start: Instant) -> Option<(TimerEvent, Duration)> {
    for _ in 0..secs {
        if let Some((m, slot)) = traffic {
            if let Some(e) = t.observe(m, slot, Instant::now()) {
                return Some((e, start.elapsed()));
            }
        }
        advance(Duration::from_secs(1)).await;
        if let Some(e) = due(t) {
            return Some((e, start.elapsed()));
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn missing_after_exactly_three_intervals_with_traffic() {
    let mut t = timer();
    let ep = EndpointId(1);
    let start = Instant::now();
    t.claim(ep, &[mac(1), mac(2)], start);
    t.heartbeat(ep, start);
    // Traffic from the second interface only: all interfaces count.
    let (event, at) = run_with_traffic(&mut t, 100, Some((mac(2), LAN)), start).await.expect("an event");
    assert_eq!(at, INTERVAL * 3, "exactly three intervals");
    let TimerEvent::Missing { endpoint, evidence } = event else { panic!("{event:?}") };
    assert_eq!(endpoint, ep);
    assert_eq!(evidence.missed_heartbeats, 3);
    assert_eq!(evidence.last_heartbeat_secs_ago, 45);
    assert_eq!(evidence.macs, vec![mac(1), mac(2)]);
    assert_eq!(evidence.traffic.len(), 1);
    assert_eq!(evidence.traffic[0].mac, mac(2));
    assert_eq!(evidence.traffic[0].zone, "LAN");
    assert_eq!(t.state(ep), Some(WatchState::Missing));
    // Active again with its next heartbeat.
    assert_eq!(t.heartbeat(ep, Instant::now()), Some(WatchState::Missing));
    assert_eq!(t.state(ep), Some(WatchState::Active));
    assert_eq!(t.missed(ep, Instant::now()), 0);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_in_time_keep_it_active() {
    let mut t = timer();
    let ep = EndpointId(1);
    let start = Instant::now();
    t.claim(ep, &[mac(1)], start);
    t.heartbeat(ep, start);
    for _ in 0..20 {
        // A heartbeat every 44 s would be late; every 15 s is on time.
        assert!(run_with_traffic(&mut t, 15, Some((mac(1), LAN)), start).await.is_none());
        t.heartbeat(ep, Instant::now());
    }
    assert_eq!(t.state(ep), Some(WatchState::Active));
    assert_eq!(t.pending_deadlines(), 1, "one deadline per endpoint, re-armed in place");
}

#[tokio::test(start_paused = true)]
async fn without_traffic_only_lost_then_missing_on_first_frame() {
    let mut t = timer();
    let ep = EndpointId(1);
    let start = Instant::now();
    t.claim(ep, &[mac(1)], start);
    t.heartbeat(ep, start);
    // Traffic long ago (in the first interval) does not count as "still sending".
    assert!(t.observe(mac(1), LAN, Instant::now()).is_none());
    let (event, at) = run_with_traffic(&mut t, 100, None, start).await.expect("an event");
    assert_eq!(event, TimerEvent::HeartbeatLost { endpoint: ep });
    assert_eq!(at, INTERVAL * 3);
    assert!(run_with_traffic(&mut t, 60, None, start).await.is_none(), "no traffic: never missing");
    assert_eq!(t.state(ep), Some(WatchState::Lost));
    // The first frame afterwards makes it missing at once.
    let e = t.observe(mac(1), LAN, Instant::now()).expect("missing at once");
    assert!(matches!(e, TimerEvent::Missing { endpoint, .. } if endpoint == ep));
    assert!(t.observe(mac(1), LAN, Instant::now()).is_none(), "reported once");
}

#[tokio::test(start_paused = true)]
async fn not_outside_missing_heartbeat_zones() {
    let mut t = timer();
    let ep = EndpointId(1);
    let start = Instant::now();
    t.claim(ep, &[mac(1)], start);
    t.heartbeat(ep, start);
    let (event, _) = run_with_traffic(&mut t, 100, Some((mac(1), WAN)), start).await.expect("an event");
    assert_eq!(event, TimerEvent::HeartbeatLost { endpoint: ep }, "WAN traffic is no evidence");
    assert!(run_with_traffic(&mut t, 30, Some((mac(1), UNZONED)), start).await.is_none());
    assert!(t.observe(mac(9), WAN, Instant::now()).is_none(), "no no-heartbeat outside the zones");
    assert_eq!(t.unclaimed(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_heartbeat_for_unclaimed_traffic_until_idle_or_claimed() {
    let mut t = timer();
    let start = Instant::now();
    let e = t.observe(mac(5), LAN, start).expect("no heartbeat");
    assert_eq!(e, TimerEvent::NoHeartbeat { mac: mac(5), port_slot: LAN, zone: "LAN".into() });
    assert!(t.observe(mac(5), LAN, start).is_none(), "reported once");
    // Traffic continues for 100 s: it stays (lazy re-arm), then goes idle.
    let (gone, at) = run_with_traffic(&mut t, 200, None, start).await.expect("forgotten when idle");
    assert_eq!(gone, TimerEvent::NoHeartbeatGone { mac: mac(5) });
    assert_eq!(at, INTERVAL * 3);
    let start = Instant::now();
    t.observe(mac(6), LAN, start).expect("no heartbeat");
    assert!(run_with_traffic(&mut t, 100, Some((mac(6), LAN)), start).await.is_none(), "active MAC stays");
    assert_eq!(t.unclaimed(), 1);
    // An endpoint claims the MAC: its no-heartbeat record is to be replaced.
    let claimed = t.claim(EndpointId(3), &[mac(6)], Instant::now());
    assert_eq!(claimed, vec![mac(6)]);
    assert_eq!(t.unclaimed(), 0);
    assert!(is_no_heartbeat_id(no_heartbeat_id(mac(6))));
    assert!(!is_no_heartbeat_id(EndpointId(3)));
}

#[tokio::test(start_paused = true)]
async fn work_per_tick_follows_expiries_not_endpoints() {
    let mut t = timer();
    let now = Instant::now();
    for i in 0..10_000u64 {
        t.heartbeat(EndpointId(i), now);
    }
    assert_eq!(t.pending_deadlines(), 10_000);
    advance(Duration::from_secs(44)).await;
    let polled = std::time::Instant::now();
    assert!(due(&mut t).is_none());
    // Polling with nothing due does not visit the 10 000 endpoints.
    assert!(polled.elapsed() < Duration::from_millis(50));
    advance(Duration::from_secs(1)).await;
    let mut lost = 0;
    let mut yields = 0;
    while lost < 10_000 {
        match due(&mut t) {
            Some(e) => {
                assert!(matches!(e, TimerEvent::HeartbeatLost { .. }));
                lost += 1;
            }
            None => {
                // tokio's cooperative budget: the queue yields every 128 items.
                yields += 1;
                assert!(yields < 1_000, "only {lost} expired");
                tokio::task::yield_now().await;
            }
        }
    }
    assert!(due(&mut t).is_none());
    assert_eq!(t.pending_deadlines(), 0);
}

#[tokio::test(start_paused = true)]
async fn settings_from_central_apply_from_the_next_heartbeat() {
    let mut t = timer();
    // Central: every 5 s, missing after 2 missed, detected in WAN only.
    t.set_settings(Duration::from_secs(5), 2, ["WAN".to_owned()].into());
    assert_eq!(t.window(), Duration::from_secs(10));
    let start = Instant::now();
    let ep = EndpointId(1);
    t.claim(ep, &[mac(1)], start);
    t.heartbeat(ep, start);
    let (event, at) = run_with_traffic(&mut t, 100, Some((mac(1), WAN)), start).await.expect("an event");
    assert_eq!(at, Duration::from_secs(10), "two intervals of 5 s");
    assert!(matches!(event, TimerEvent::Missing { endpoint, .. } if endpoint == ep), "{event:?}");

    // Traffic in LAN is no longer evidence: the endpoint is lost, not missing.
    let ep2 = EndpointId(2);
    let start = Instant::now();
    t.claim(ep2, &[mac(2)], start);
    t.heartbeat(ep2, start);
    let (event, at) = run_with_traffic(&mut t, 100, Some((mac(2), LAN)), start).await.expect("an event");
    assert_eq!(at, Duration::from_secs(10));
    assert!(matches!(event, TimerEvent::HeartbeatLost { endpoint } if endpoint == ep2), "{event:?}");
}
