//! The red/yellow list every endpoint receives (lateral movement
//! protection): the endpoints whose reported health is red or yellow, with
//! their MACs and addresses, so that endpoints can refuse them.
//!
//! Timing: the list goes to every session every second heartbeat interval
//! (30 s at the default 15 s), to a new session right after its Welcome, and
//! within `list_debounce` (at most 1 s) of any change: changes are
//! coalesced for that long, so a burst of changes costs one list.
//!
//! The list is kept up to date on each change ([`RedYellowList::update`]),
//! so building a message costs the flagged endpoints, not all of them. It
//! holds *reported* health: a missing endpoint keeps its last colour here
//! (the gateway itself blocks missing endpoints by its rules).

use super::codec::{encode_body, Encoded};
use super::protocol::{GatewayMessage, ListedEndpoint};
use super::Shared;
use hbgw_shared::endpoint::{EndpointHealth, EndpointId, EndpointInterface};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{interval_at, sleep, Instant, MissedTickBehavior};

/// The red and yellow endpoints now.
#[derive(Debug, Default)]
pub struct RedYellowList {
    flagged: BTreeMap<EndpointId, ListedEndpoint>,
    seq: u64,
}

impl RedYellowList {
    /// Records an endpoint's health and interfaces; returns whether the list changed.
    pub fn update(&mut self, id: EndpointId, health: EndpointHealth, interfaces: &[EndpointInterface]) -> bool {
        if matches!(health, EndpointHealth::Red | EndpointHealth::Yellow) {
            let entry = ListedEndpoint { interfaces: interfaces.to_vec(), health };
            match self.flagged.get(&id) {
                Some(old) if *old == entry => false,
                _ => {
                    self.flagged.insert(id, entry);
                    true
                }
            }
        } else {
            self.flagged.remove(&id).is_some()
        }
    }

    /// Drops an endpoint; returns whether it was listed.
    pub fn remove(&mut self, id: EndpointId) -> bool {
        self.flagged.remove(&id).is_some()
    }

    /// Endpoints listed.
    pub fn len(&self) -> usize {
        self.flagged.len()
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.flagged.is_empty()
    }

    /// The next `endpoint_list` message (sequence number counts up).
    pub fn message(&mut self) -> GatewayMessage {
        self.seq += 1;
        GatewayMessage::EndpointList { seq: self.seq, endpoints: self.flagged.values().cloned().collect() }
    }

    /// The next message, encoded once for all sessions.
    pub fn encoded(&mut self) -> Encoded {
        let body = encode_body(&self.message()).expect("an endpoint list always serializes");
        Encoded(body)
    }
}

/// Sends the list every `period`, and `debounce` after any change.
pub(crate) async fn run(shared: Arc<Shared>, period: Duration, debounce: Duration) {
    let mut period = period;
    let mut periodic = interval_at(Instant::now() + period, period);
    periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The period follows the heartbeat interval (two of them) when it changes.
    let mut live = shared.live.subscribe();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = periodic.tick() => {}
            Ok(()) = live.changed() => {
                let now = live.borrow_and_update().interval * 2;
                if now != period {
                    period = now;
                    periodic = interval_at(Instant::now() + period, period);
                    periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
                }
                continue;
            }
            _ = shared.list_changed.notified() => {
                // Coalesce: every change in this window goes out in one list.
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = sleep(debounce) => {}
                }
                periodic.reset();
            }
        }
        shared.send_list_to_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbgw_shared::endpoint::MacAddr;

    fn iface(n: u8) -> Vec<EndpointInterface> {
        vec![EndpointInterface { mac: MacAddr([2, 0, 0, 0, 0, n]), ips: vec![format!("10.0.0.{n}").parse().unwrap()] }]
    }

    #[test]
    fn lists_only_red_and_yellow_and_reports_changes() {
        let mut l = RedYellowList::default();
        assert!(!l.update(EndpointId(1), EndpointHealth::Green, &iface(1)));
        assert!(l.update(EndpointId(2), EndpointHealth::Red, &iface(2)));
        assert!(!l.update(EndpointId(2), EndpointHealth::Red, &iface(2)), "same entry: no change");
        assert!(l.update(EndpointId(2), EndpointHealth::Yellow, &iface(2)));
        assert!(l.update(EndpointId(3), EndpointHealth::Yellow, &iface(3)));
        assert!(l.update(EndpointId(2), EndpointHealth::Green, &iface(2)));
        let GatewayMessage::EndpointList { seq, endpoints } = l.message() else { panic!() };
        assert_eq!(seq, 1);
        assert_eq!(endpoints.len(), 1);
        assert!(endpoints[0].has_mac(MacAddr([2, 0, 0, 0, 0, 3])));
        assert!(l.remove(EndpointId(3)));
        assert!(l.is_empty());
        let GatewayMessage::EndpointList { seq, .. } = l.message() else { panic!() };
        assert_eq!(seq, 2);
    }
}
