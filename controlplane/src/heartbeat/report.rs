//! The heartbeat view (`hbgw endpoints`): every endpoint with its health,
//! last heartbeat, missed count, addresses and user, and the summary counts
//! of the product's Security Heartbeat widget.

use super::missing::{MissingEvidence, TrafficSeen};
use hbgw_shared::endpoint::{EndpointHealth, EndpointId, EndpointInterface};
use serde::Serialize;
use std::fmt::Write;

/// Counts by health, like the vendor's widget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeartbeatSummary {
    /// Endpoints with a live session.
    pub connected: usize,
    /// Green.
    pub green: usize,
    /// Yellow.
    pub warning: usize,
    /// Red.
    pub at_risk: usize,
    /// Missing heartbeat.
    pub missing: usize,
    /// MACs sending traffic with no heartbeat.
    pub no_heartbeat: usize,
}

/// One row of the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointEntry {
    /// The table id.
    pub id: EndpointId,
    /// Computer name (the MAC for a no-heartbeat entry).
    pub name: String,
    /// Health as the table holds it now.
    pub health: EndpointHealth,
    /// Whether a session is live.
    pub connected: bool,
    /// The session's peer address.
    pub peer: Option<String>,
    /// Seconds since the last heartbeat (`None`: never had one).
    pub last_heartbeat_secs_ago: Option<u64>,
    /// Whole heartbeat intervals since the last heartbeat.
    pub missed_heartbeats: u32,
    /// MACs and addresses.
    pub interfaces: Vec<EndpointInterface>,
    /// Signed-in domain users checked in the directory (`DOMAIN\user`).
    pub users: Vec<String>,
    /// The agent's own id from its Hello (informational).
    pub agent_id: Option<String>,
    /// Certificate fingerprint (SHA-256), for heartbeat endpoints.
    pub certificate: Option<String>,
    /// Why it is missing, when it is.
    pub missing: Option<MissingEvidence>,
    /// Where a no-heartbeat MAC's traffic was seen.
    pub seen: Option<TrafficSeen>,
}

/// The whole view, serializable for the admin socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndpointsReport {
    /// The heartbeat interval, seconds.
    pub interval_secs: f64,
    /// Counts.
    pub summary: HeartbeatSummary,
    /// Heartbeat endpoints by id, then no-heartbeat MACs.
    pub endpoints: Vec<EndpointEntry>,
}

impl EndpointsReport {
    /// Recomputes the summary from the rows.
    pub(crate) fn summarize(&mut self) {
        let mut s = HeartbeatSummary::default();
        for e in &self.endpoints {
            s.connected += usize::from(e.connected);
            match e.health {
                EndpointHealth::Green => s.green += 1,
                EndpointHealth::Yellow => s.warning += 1,
                EndpointHealth::Red => s.at_risk += 1,
                EndpointHealth::Missing => s.missing += 1,
                EndpointHealth::NoHeartbeat => s.no_heartbeat += 1,
                EndpointHealth::Unknown => {}
            }
        }
        self.summary = s;
    }

    /// A plain-text table for a terminal.
    pub fn render_table(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "Security Heartbeat: {} connected | {} green | {} warning | {} at risk | {} missing | {} no heartbeat\n",
            s.connected, s.green, s.warning, s.at_risk, s.missing, s.no_heartbeat
        );
        out.push_str("  name                 health        conn  last hb   missed  MACs / IPs                                user\n");
        for e in &self.endpoints {
            let last = e.last_heartbeat_secs_ago.map(|s| format!("{s}s ago")).unwrap_or_else(|| "never".into());
            let addrs = e
                .interfaces
                .iter()
                .map(|i| {
                    let ips: Vec<String> = i.ips.iter().map(|ip| ip.to_string()).collect();
                    if ips.is_empty() { i.mac.to_string() } else { format!("{} {}", i.mac, ips.join(",")) }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(
                out,
                "  {:<20} {:<13} {:<5} {:<9} {:<7} {:<41} {}",
                truncate(&e.name, 20),
                e.health.as_str(),
                if e.connected { "yes" } else { "no" },
                last,
                e.missed_heartbeats,
                addrs,
                if e.users.is_empty() { "-".to_owned() } else { e.users.join(",") }
            );
        }
        out
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}
