//! Missing heartbeats and MACs with no heartbeat at all.
//!
//! The rule (product docs): an endpoint is *missing* when three consecutive
//! heartbeats do not arrive while it still sends traffic through the gateway;
//! it is keyed by MAC, over all its interfaces, and becomes active again with
//! its next heartbeat. A MAC that sends traffic and never had a heartbeat is
//! *no heartbeat*.
//!
//! How it is decided here:
//!
//! * Every heartbeat (re)arms one deadline per endpoint, `missed_limit`
//!   intervals ahead, in a [`DelayQueue`] (a hierarchical timing wheel): the
//!   work per tick is proportional to the deadlines that expire, never to the
//!   number of endpoints.
//! * Traffic evidence comes from the workers' [`SeenMacReport`]s, one
//!   [`MissingHeartbeatTimer::observe`] per (MAC, port) key: a hash lookup.
//!   Only ports whose zone (`zone_of(port_slot)`) is a missing-heartbeat
//!   zone count, for both rules: outside them (a WAN port, where the
//!   upstream router's MAC is seen all the time) nothing is concluded.
//! * "Still sends traffic" means a frame from one of the endpoint's MACs in
//!   the last heartbeat interval. At the deadline, with such traffic the
//!   endpoint is [`TimerEvent::Missing`]; without it the heartbeat is only
//!   [`TimerEvent::HeartbeatLost`], and the first later frame makes it
//!   missing at once.
//! * A MAC with traffic that no heartbeat endpoint claims is reported once
//!   ([`TimerEvent::NoHeartbeat`]) and forgotten ([`TimerEvent::NoHeartbeatGone`])
//!   after `missed_limit` intervals without traffic, so memory follows the
//!   MACs actually active. Its deadline is re-armed lazily, at expiry, from
//!   the last time it was seen: traffic costs no queue operation.
//!
//! [`SeenMacReport`]: hbgw_dataplane::seen_macs::SeenMacReport

use hbgw_shared::endpoint::{EndpointId, MacAddr};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::time::delay_queue::{DelayQueue, Key};

/// Which zone a port slot belongs to (`None`: no zone).
pub type ZoneOf = Arc<dyn Fn(usize) -> Option<String> + Send + Sync>;

/// The table id of a MAC that sends traffic without a heartbeat: the MAC in
/// the low 48 bits and the top bit set, so it never equals a certificate's
/// id ([`super::certs::CertFingerprint::endpoint_id`]) and is replaced when a
/// real endpoint claims the MAC.
pub fn no_heartbeat_id(mac: MacAddr) -> EndpointId {
    EndpointId((1 << 63) | mac.to_u64())
}

/// Whether `id` is one [`no_heartbeat_id`] made.
pub fn is_no_heartbeat_id(id: EndpointId) -> bool {
    id.0 >> 63 == 1
}

/// Traffic seen from one MAC, as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficSeen {
    /// The source MAC.
    pub mac: MacAddr,
    /// The ingress port slot.
    pub port_slot: usize,
    /// That port's zone.
    pub zone: String,
    /// Seconds since the last frame.
    pub secs_ago: u64,
}

/// Why an endpoint was declared missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingEvidence {
    /// Seconds since its last heartbeat.
    pub last_heartbeat_secs_ago: u64,
    /// Heartbeat intervals elapsed since then.
    pub missed_heartbeats: u32,
    /// Its MACs.
    pub macs: Vec<MacAddr>,
    /// The traffic seen from them in missing-heartbeat zones.
    pub traffic: Vec<TrafficSeen>,
}

/// What the timer concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerEvent {
    /// Heartbeats stopped while the endpoint sends traffic.
    Missing {
        /// Which.
        endpoint: EndpointId,
        /// Why.
        evidence: MissingEvidence,
    },
    /// Heartbeats stopped and no traffic is seen (shut down or gone): its
    /// users are signed out, its health is left as last reported.
    HeartbeatLost {
        /// Which.
        endpoint: EndpointId,
    },
    /// A MAC sends traffic in a missing-heartbeat zone and no endpoint claims it.
    NoHeartbeat {
        /// The MAC.
        mac: MacAddr,
        /// Where it was first seen.
        port_slot: usize,
        /// That port's zone.
        zone: String,
    },
    /// A no-heartbeat MAC sent nothing for `missed_limit` intervals.
    NoHeartbeatGone {
        /// The MAC.
        mac: MacAddr,
    },
}

/// Where an endpoint stands with its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchState {
    /// Heartbeats arrive.
    Active,
    /// Heartbeats stopped, no traffic seen since.
    Lost,
    /// Heartbeats stopped while traffic goes on.
    Missing,
}

#[derive(Debug)]
struct Watch {
    macs: Vec<MacAddr>,
    last_heartbeat: Instant,
    key: Option<Key>,
    state: WatchState,
}

#[derive(Debug)]
struct Traffic {
    last_seen: Instant,
    slot: usize,
    zone: String,
}

#[derive(Debug)]
enum Due {
    Heartbeat(EndpointId),
    Unclaimed(MacAddr),
}

/// Decides missing and no-heartbeat; see the module docs.
pub struct MissingHeartbeatTimer {
    interval: Duration,
    missed_limit: u32,
    zones: HashSet<String>,
    zone_of: ZoneOf,
    watches: HashMap<EndpointId, Watch>,
    mac_owner: HashMap<MacAddr, EndpointId>,
    traffic: HashMap<MacAddr, Traffic>,
    unclaimed: HashMap<MacAddr, Key>,
    queue: DelayQueue<Due>,
}

impl std::fmt::Debug for MissingHeartbeatTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MissingHeartbeatTimer")
            .field("interval", &self.interval)
            .field("missed_limit", &self.missed_limit)
            .field("zones", &self.zones)
            .field("watches", &self.watches.len())
            .field("unclaimed", &self.unclaimed.len())
            .finish()
    }
}

fn secs_since(then: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(then).as_secs()
}

impl MissingHeartbeatTimer {
    /// A timer for heartbeats every `interval`; missing after `missed_limit`
    /// (3 in the product) intervals; evidence only from ports whose
    /// `zone_of` is in `zones`.
    pub fn new(interval: Duration, missed_limit: u32, zones: HashSet<String>, zone_of: ZoneOf) -> Self {
        MissingHeartbeatTimer {
            interval,
            missed_limit: missed_limit.max(1),
            zones,
            zone_of,
            watches: HashMap::new(),
            mac_owner: HashMap::new(),
            traffic: HashMap::new(),
            unclaimed: HashMap::new(),
            queue: DelayQueue::new(),
        }
    }

    /// New interval, missed limit and zones (from Central). Deadlines already
    /// armed keep their time; each endpoint's next heartbeat arms the new
    /// window, and traffic is judged against the new zones from now on.
    pub fn set_settings(&mut self, interval: Duration, missed_limit: u32, zones: HashSet<String>) {
        self.interval = interval;
        self.missed_limit = missed_limit.max(1);
        self.zones = zones;
    }

    /// The zones where missing and no-heartbeat are detected.
    pub fn zones(&self) -> &HashSet<String> {
        &self.zones
    }

    /// The time without heartbeat after which an endpoint is lost or missing.
    pub fn window(&self) -> Duration {
        self.interval * self.missed_limit
    }

    /// Sets the MACs of an endpoint (from its Hello). MACs another endpoint
    /// had move to this one. Returns the MACs that were no-heartbeat until
    /// now (their table records are to be replaced by this endpoint).
    pub fn claim(&mut self, endpoint: EndpointId, macs: &[MacAddr], now: Instant) -> Vec<MacAddr> {
        let old = self.watches.get(&endpoint).map(|w| w.macs.clone()).unwrap_or_default();
        for mac in old.iter().filter(|m| !macs.contains(m)) {
            if self.mac_owner.get(mac) == Some(&endpoint) {
                self.mac_owner.remove(mac);
                self.traffic.remove(mac);
            }
        }
        let mut was_unclaimed = Vec::new();
        for mac in macs {
            if let Some(prev) = self.mac_owner.insert(*mac, endpoint) {
                if prev != endpoint {
                    if let Some(w) = self.watches.get_mut(&prev) {
                        w.macs.retain(|m| m != mac);
                    }
                }
            }
            if let Some(key) = self.unclaimed.remove(mac) {
                self.queue.remove(&key);
                was_unclaimed.push(*mac);
            }
        }
        let mut unique = macs.to_vec();
        unique.sort();
        unique.dedup();
        let watch = self.watches.entry(endpoint).or_insert(Watch {
            macs: Vec::new(),
            last_heartbeat: now,
            key: None,
            state: WatchState::Active,
        });
        watch.macs = unique;
        was_unclaimed
    }

    /// A heartbeat (or Hello, or health change) from `endpoint`: re-arms its
    /// deadline. Returns the state it leaves when that was not `Active`
    /// (the endpoint is active again).
    pub fn heartbeat(&mut self, endpoint: EndpointId, now: Instant) -> Option<WatchState> {
        let deadline = now + self.window();
        let watch = self.watches.entry(endpoint).or_insert(Watch {
            macs: Vec::new(),
            last_heartbeat: now,
            key: None,
            state: WatchState::Active,
        });
        watch.last_heartbeat = now;
        match watch.key {
            Some(ref key) => self.queue.reset_at(key, deadline),
            None => watch.key = Some(self.queue.insert_at(Due::Heartbeat(endpoint), deadline)),
        }
        let previous = std::mem::replace(&mut watch.state, WatchState::Active);
        (previous != WatchState::Active).then_some(previous)
    }

    /// Stops watching an endpoint (its certificate was removed and its
    /// record dropped). Its MACs become unclaimed.
    pub fn forget(&mut self, endpoint: EndpointId) {
        if let Some(w) = self.watches.remove(&endpoint) {
            if let Some(key) = w.key {
                self.queue.remove(&key);
            }
            for mac in w.macs {
                if self.mac_owner.get(&mac) == Some(&endpoint) {
                    self.mac_owner.remove(&mac);
                    self.traffic.remove(&mac);
                }
            }
        }
    }

    /// Traffic from `mac` on port `port_slot`. Returns what that concludes
    /// at once: a lost endpoint becomes missing, an unknown MAC no-heartbeat.
    pub fn observe(&mut self, mac: MacAddr, port_slot: usize, now: Instant) -> Option<TimerEvent> {
        let zone = (self.zone_of)(port_slot)?;
        if !self.zones.contains(&zone) {
            return None;
        }
        let owner = self.mac_owner.get(&mac).copied();
        match self.traffic.get_mut(&mac) {
            Some(t) => {
                t.last_seen = now;
                if t.slot != port_slot {
                    t.slot = port_slot;
                    t.zone = zone.clone();
                }
            }
            None => {
                self.traffic.insert(mac, Traffic { last_seen: now, slot: port_slot, zone: zone.clone() });
            }
        }
        match owner {
            Some(endpoint) => {
                let watch = self.watches.get_mut(&endpoint)?;
                if watch.state != WatchState::Lost {
                    return None;
                }
                watch.state = WatchState::Missing;
                Some(TimerEvent::Missing { endpoint, evidence: self.evidence_at(endpoint, now)? })
            }
            None if self.unclaimed.contains_key(&mac) => None,
            None => {
                let key = self.queue.insert_at(Due::Unclaimed(mac), now + self.window());
                self.unclaimed.insert(mac, key);
                Some(TimerEvent::NoHeartbeat { mac, port_slot, zone })
            }
        }
    }

    /// The next conclusion; pending while nothing is due (an insert wakes
    /// the task that waits).
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TimerEvent> {
        loop {
            let due = match self.queue.poll_expired(cx) {
                Poll::Ready(Some(expired)) => expired.into_inner(),
                // Empty: the queue keeps the waker and wakes it on insert.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            };
            let now = Instant::now();
            match due {
                Due::Unclaimed(mac) => {
                    let last_seen = self.traffic.get(&mac).map(|t| t.last_seen);
                    match last_seen {
                        Some(seen) if seen + self.window() > now => {
                            let key = self.queue.insert_at(Due::Unclaimed(mac), seen + self.window());
                            self.unclaimed.insert(mac, key);
                        }
                        _ => {
                            self.unclaimed.remove(&mac);
                            self.traffic.remove(&mac);
                            return Poll::Ready(TimerEvent::NoHeartbeatGone { mac });
                        }
                    }
                }
                Due::Heartbeat(endpoint) => {
                    let recent = now.checked_sub(self.interval).unwrap_or(now);
                    let Some(watch) = self.watches.get_mut(&endpoint) else { continue };
                    watch.key = None;
                    let sending = watch
                        .macs
                        .iter()
                        .any(|m| self.traffic.get(m).is_some_and(|t| t.last_seen >= recent));
                    if sending {
                        watch.state = WatchState::Missing;
                        if let Some(evidence) = self.evidence_at(endpoint, now) {
                            return Poll::Ready(TimerEvent::Missing { endpoint, evidence });
                        }
                    } else {
                        watch.state = WatchState::Lost;
                        return Poll::Ready(TimerEvent::HeartbeatLost { endpoint });
                    }
                }
            }
        }
    }

    /// Waits for the next conclusion (for a task's `select!`).
    pub async fn next_event(&mut self) -> TimerEvent {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Where the endpoint stands, if watched.
    pub fn state(&self, endpoint: EndpointId) -> Option<WatchState> {
        self.watches.get(&endpoint).map(|w| w.state)
    }

    /// When its last heartbeat arrived.
    pub fn last_heartbeat(&self, endpoint: EndpointId) -> Option<Instant> {
        self.watches.get(&endpoint).map(|w| w.last_heartbeat)
    }

    /// Whole heartbeat intervals elapsed since its last heartbeat.
    pub fn missed(&self, endpoint: EndpointId, now: Instant) -> u32 {
        match self.watches.get(&endpoint) {
            Some(w) => {
                let since = now.saturating_duration_since(w.last_heartbeat);
                u32::try_from(since.as_nanos() / self.interval.as_nanos().max(1)).unwrap_or(u32::MAX)
            }
            None => 0,
        }
    }

    /// The evidence now for an endpoint (last heartbeat, MACs, traffic seen).
    pub fn evidence(&self, endpoint: EndpointId) -> Option<MissingEvidence> {
        self.evidence_at(endpoint, Instant::now())
    }

    fn evidence_at(&self, endpoint: EndpointId, now: Instant) -> Option<MissingEvidence> {
        let w = self.watches.get(&endpoint)?;
        let traffic = w
            .macs
            .iter()
            .filter_map(|m| {
                self.traffic.get(m).map(|t| TrafficSeen {
                    mac: *m,
                    port_slot: t.slot,
                    zone: t.zone.clone(),
                    secs_ago: secs_since(t.last_seen, now),
                })
            })
            .collect();
        Some(MissingEvidence {
            last_heartbeat_secs_ago: secs_since(w.last_heartbeat, now),
            missed_heartbeats: self.missed(endpoint, now),
            macs: w.macs.clone(),
            traffic,
        })
    }

    /// Traffic seen from a MAC: (port slot, zone, when).
    pub fn traffic_of(&self, mac: MacAddr) -> Option<(usize, &str, Instant)> {
        self.traffic.get(&mac).map(|t| (t.slot, t.zone.as_str(), t.last_seen))
    }

    /// Endpoints watched.
    pub fn watched(&self) -> usize {
        self.watches.len()
    }

    /// No-heartbeat MACs held.
    pub fn unclaimed(&self) -> usize {
        self.unclaimed.len()
    }

    /// Deadlines in the queue (one per watched endpoint with a heartbeat
    /// pending, one per no-heartbeat MAC).
    pub fn pending_deadlines(&self) -> usize {
        self.queue.len()
    }
}
