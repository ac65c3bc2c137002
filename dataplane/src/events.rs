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
        };
        for _ in 0..5 {
            senders[0].send(ev);
        }
        assert_eq!(rx.try_iter().count(), 2);
        assert_eq!(senders[0].lost, 3);
    }
}
