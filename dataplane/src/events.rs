//! What workers tell the control plane about individual packets: Active
//! threat response events (an indicator matched) and heartbeat-rule drops.
//!
//! A [`WorkerEvent`] is a fixed-size `Copy` value (names are copied into
//! inline buffers, truncated if long), so building and sending one allocates
//! nothing. Events go through a bounded crossbeam channel with `try_send`:
//! when the control plane falls behind, events are counted as lost
//! ([`EventSender::lost`]), and forwarding never waits.

use crossbeam_channel::{Receiver, Sender};
use hbgw_shared::endpoint::EndpointHealth;
use hbgw_shared::indicators::FeedAction;
use std::net::IpAddr;

/// A short string held inline (no allocation), truncated to `N` bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineStr<const N: usize> {
    buf: [u8; N],
    len: u16,
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self { buf: [0; N], len: 0 }
    }
}

impl<const N: usize> InlineStr<N> {
    /// Copies `bytes` (truncated to `N`).
    #[inline]
    pub fn new(bytes: &[u8]) -> Self {
        let mut s = Self::default();
        let n = bytes.len().min(N);
        s.buf[..n].copy_from_slice(&bytes[..n]);
        s.len = n as u16;
        s
    }

    /// The bytes held.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// As text (lossy for non-UTF-8 input).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> std::fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

/// Which part of the gateway saw the indicator (the vendor's "module").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreatModule {
    /// The source or destination IP address.
    Firewall,
    /// A DNS query name.
    Dns,
    /// A TLS ClientHello's server name.
    TlsSni,
    /// An HTTP request's host and path.
    Http,
}

impl ThreatModule {
    /// The name in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ThreatModule::Firewall => "firewall",
            ThreatModule::Dns => "dns",
            ThreatModule::TlsSni => "tls_sni",
            ThreatModule::Http => "http",
        }
    }
}

/// What the event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A threat indicator matched.
    ThreatIndicator {
        /// Where.
        module: ThreatModule,
        /// The indicator's index in the set that was in force.
        indicator: u32,
        /// Its feed's action.
        action: FeedAction,
    },
    /// A frame was dropped for a heartbeat reason (rule option, missing
    /// heartbeat zone, lateral movement); the reason is the event's `reason`.
    HeartbeatDrop,
}

/// One event, as the worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerEvent {
    /// What happened.
    pub kind: EventKind,
    /// The verdict's reason (`crate::verdict::DropReason::as_str`), or
    /// `"forwarded"` for a log-only hit.
    pub reason: &'static str,
    /// Whether the frame was dropped (false for log-only and in tap mode).
    pub dropped: bool,
    /// Whether the gateway is in tap mode (observing only).
    pub tap: bool,
    /// The ingress port slot.
    pub ingress_slot: u16,
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source IP.
    pub src_ip: Option<IpAddr>,
    /// Destination IP.
    pub dst_ip: Option<IpAddr>,
    /// IP protocol number.
    pub protocol: u8,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Source endpoint's health.
    pub src_health: EndpointHealth,
    /// Destination endpoint's health.
    pub dst_health: EndpointHealth,
    /// The matched indicator's audit id.
    pub audit_id: InlineStr<64>,
    /// The matched indicator's feed.
    pub feed: InlineStr<32>,
    /// What matched: the domain, SNI, host+path (empty for IP matches).
    pub matched: InlineStr<192>,
    /// The deciding rule's index, for policy drops.
    pub rule: Option<u32>,
    /// Identical events the worker folded into this one since it last sent
    /// one with the same key (see [`EventGate`]).
    pub coalesced: u32,
}

/// What makes two events identical: what happened, to whom, where, what
/// matched, and why (not the source port: a new connection from the same
/// host to the same place is the same event).
pub fn event_key(e: &WorkerEvent) -> u64 {
    // A multiply-xorshift mix of the fields; collisions only merge two
    // events' repeat counts in one cache slot, never lose an event.
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
    };
    match e.kind {
        EventKind::ThreatIndicator { module, indicator, .. } => {
            mix(1);
            mix(module as u64);
            mix(u64::from(indicator));
        }
        EventKind::HeartbeatDrop => mix(2),
    }
    mix(e.reason.as_ptr() as u64);
    mix(u64::from(e.dropped));
    let mut mac = [0u8; 8];
    mac[..6].copy_from_slice(&e.src_mac);
    mix(u64::from_le_bytes(mac));
    for ip in [e.src_ip, e.dst_ip] {
        match ip {
            Some(IpAddr::V4(v4)) => mix(u64::from(u32::from(v4))),
            Some(IpAddr::V6(v6)) => {
                let b = v6.octets();
                mix(u64::from_le_bytes(b[..8].try_into().expect("8 bytes")));
                mix(u64::from_le_bytes(b[8..].try_into().expect("8 bytes")));
            }
            None => mix(0),
        }
    }
    mix(u64::from(e.dst_port) << 8 | u64::from(e.protocol));
    mix(e.rule.map_or(u64::MAX, u64::from));
    for chunk in e.matched.as_bytes().chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        mix(u64::from_le_bytes(b));
    }
    h
}

/// Folds identical events on the worker: a blocked host at line rate would
/// otherwise push one event per packet through the channel. A small
/// direct-mapped table remembers, per key, when an event was last sent; an
/// identical event within `window` cycles is only counted, and the count
/// rides on the next event sent for that key ([`WorkerEvent::coalesced`]).
/// Fixed size, allocated once; a slot taken over by another key adds its
/// pending count to [`EventGate::evicted`] so the total stays exact.
#[derive(Debug)]
pub struct EventGate {
    slots: Box<[GateSlot]>,
    window: u64,
    /// Folded events whose count could not ride on a later event (their slot
    /// was reused); shown in stats.
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct GateSlot {
    key: u64,
    sent_at: u64,
    pending: u32,
}

impl EventGate {
    /// A gate of `slots` entries (rounded to a power of two) folding
    /// identical events within `window_cycles`.
    pub fn new(slots: usize, window_cycles: u64) -> Self {
        let n = slots.max(1).next_power_of_two();
        EventGate { slots: vec![GateSlot::default(); n].into_boxed_slice(), window: window_cycles, evicted: 0 }
    }

    /// Sends `event` through `sender` unless an identical one went out less
    /// than a window ago (then it is counted).
    #[inline]
    pub fn offer(&mut self, mut event: WorkerEvent, now: u64, sender: &mut EventSender) {
        let key = event_key(&event) | 1; // never 0: 0 marks an empty slot
        let idx = (key as usize) & (self.slots.len() - 1);
        let slot = &mut self.slots[idx];
        if slot.key == key {
            if now.wrapping_sub(slot.sent_at) < self.window {
                slot.pending = slot.pending.saturating_add(1);
                return;
            }
            event.coalesced = slot.pending;
        } else if slot.key != 0 {
            self.evicted += u64::from(slot.pending);
        }
        *slot = GateSlot { key, sent_at: now, pending: 0 };
        sender.send(event);
    }
}

/// A worker's end of the event channel.
#[derive(Debug)]
pub struct EventSender {
    tx: Sender<WorkerEvent>,
    /// Events not sent because the channel was full.
    pub lost: u64,
}

impl EventSender {
    /// Sends without waiting; counts the event as lost if the channel is full.
    #[inline]
    pub fn send(&mut self, event: WorkerEvent) {
        if self.tx.try_send(event).is_err() {
            self.lost += 1;
        }
    }
}

/// A bounded event channel for `workers` senders.
pub fn channel(workers: usize, capacity: usize) -> (Vec<EventSender>, Receiver<WorkerEvent>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    ((0..workers).map(|_| EventSender { tx: tx.clone(), lost: 0 }).collect(), rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_str_truncates() {
        let s = InlineStr::<4>::new(b"abcdef");
        assert_eq!(s.as_bytes(), b"abcd");
        assert_eq!(InlineStr::<8>::new(b"ab").to_string_lossy(), "ab");
    }

    #[test]
    fn full_channel_counts_instead_of_waiting() {
        let (mut senders, rx) = channel(1, 2);
        let ev = WorkerEvent {
            kind: EventKind::HeartbeatDrop,
            reason: "source_heartbeat",
            dropped: true,
            tap: false,
            ingress_slot: 0,
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src_ip: None,
            dst_ip: None,
            protocol: 0,
            src_port: 0,
            dst_port: 0,
            src_health: EndpointHealth::Red,
            dst_health: EndpointHealth::Unknown,
            audit_id: InlineStr::default(),
            feed: InlineStr::default(),
            matched: InlineStr::default(),
            rule: None,
            coalesced: 0,
        };
        for _ in 0..5 {
            senders[0].send(ev);
        }
        assert_eq!(rx.try_iter().count(), 2);
        assert_eq!(senders[0].lost, 3);

        // The gate folds identical events within its window and carries the count.
        let mut gate = EventGate::new(8, 100);
        let mut s = senders.remove(0);
        for t in 0..50 {
            gate.offer(ev, t, &mut s);
        }
        let first: Vec<_> = rx.try_iter().collect();
        assert_eq!(first.len(), 1);
        gate.offer(ev, 150, &mut s);
        let next: Vec<_> = rx.try_iter().collect();
        assert_eq!((next.len(), next[0].coalesced), (1, 49), "49 folded events ride on the next one");
        // A different source is a different event.
        let mut other = ev;
        other.src_mac = [9; 6];
        gate.offer(other, 151, &mut s);
        assert_eq!(rx.try_iter().count(), 1);
    }
}
