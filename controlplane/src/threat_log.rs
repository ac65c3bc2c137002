//! Active threat response and heartbeat-drop logs: the control plane drains
//! the workers' event channel, names what the workers only numbered (ports,
//! rules), and writes JSON lines through the [`EventLog`] (rotated, identical
//! events folded).
//!
//! One line per event, e.g.:
//!
//! ```json
//! {"time":"2026-11-22T06:50:01.123Z","log":"active_threat_response","module":"dns",
//!  "indicator":"malware.example","audit_id":"MDR-1234","feed":"mdr","action":"log_and_drop",
//!  "verdict":"dropped","reason":"threat_indicator","port":"lan0","protocol":17,
//!  "src_mac":"02:00:00:00:00:01","src_ip":"10.0.0.1","src_port":5353,"src_health":"green",
//!  "dst_mac":"02:ee:00:00:00:01","dst_ip":"203.0.113.80","dst_port":53,"dst_health":"unknown"}
//! ```

use crate::event_log::EventLog;
use hbgw_dataplane::events::{EventKind, WorkerEvent};
use hbgw_shared::endpoint::MacAddr;
use hbgw_shared::indicators::FeedAction;
use hbgw_shared::state::GatewayState;
use serde::Serialize;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One log line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThreatLogRecord {
    /// RFC 3339 UTC time the control plane received the event.
    pub time: String,
    /// `active_threat_response` or `heartbeat`.
    pub log: &'static str,
    /// `firewall`, `dns`, `tls_sni`, `http`; absent for heartbeat drops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<&'static str>,
    /// What matched: the domain, SNI, URL, or the listed IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicator: Option<String>,
    /// The indicator's audit id (give it to the MDR analyst).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
    /// The indicator's feed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    /// The feed's action: `log_only` or `log_and_drop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// `dropped`, `forwarded`, or `would_drop` (tap mode).
    pub verdict: &'static str,
    /// The drop reason, or `forwarded`.
    pub reason: &'static str,
    /// The deciding rule's name, for heartbeat-rule drops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Ingress port role (`lan0`, `wan0`).
    pub port: String,
    /// IP protocol number.
    pub protocol: u8,
    /// Source MAC.
    pub src_mac: String,
    /// Source IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    /// Source port.
    pub src_port: u16,
    /// Source endpoint's health.
    pub src_health: &'static str,
    /// The user signed in on the source endpoint, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Destination MAC.
    pub dst_mac: String,
    /// Destination IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
    /// Destination port.
    pub dst_port: u16,
    /// Destination endpoint's health.
    pub dst_health: &'static str,
}

/// Who is signed in where (synchronized user ID); empty until the heartbeat
/// service provides it.
pub trait UserLookup: Send {
    /// The user bound to `ip`.
    fn user_of(&self, ip: IpAddr) -> Option<String>;
}

/// No user bindings.
pub struct NoUsers;
impl UserLookup for NoUsers {
    fn user_of(&self, _: IpAddr) -> Option<String> {
        None
    }
}

/// Turns worker events into log records.
pub struct ThreatLog {
    log: Option<EventLog>,
    state: Option<Arc<GatewayState>>,
    port_roles: Vec<String>,
    users: Box<dyn UserLookup>,
    /// Events received since start.
    pub received: u64,
}

fn rfc3339_now() -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

impl ThreatLog {
    /// A log writing to `log` (or only counting when `None`).
    pub fn new(
        log: Option<EventLog>,
        state: Option<Arc<GatewayState>>,
        port_roles: Vec<String>,
        users: Box<dyn UserLookup>,
    ) -> Self {
        Self { log, state, port_roles, users, received: 0 }
    }

    /// Hands every logged line to Central's upload spool as well; false
    /// when there is no event log to mirror.
    pub fn set_mirror(&mut self, spool: Arc<std::sync::Mutex<crate::central::spool::LogSpool>>) -> bool {
        match self.log.as_mut() {
            Some(l) => {
                l.set_mirror(spool);
                true
            }
            None => false,
        }
    }

    /// Where user names come from (the heartbeat service, once it runs).
    pub fn set_users(&mut self, users: Box<dyn UserLookup>) {
        self.users = users;
    }

    /// The record for `ev`.
    pub fn record(&self, ev: &WorkerEvent) -> ThreatLogRecord {
        let (log, module, action) = match ev.kind {
            EventKind::ThreatIndicator { module, action, .. } => (
                "active_threat_response",
                Some(module.as_str()),
                Some(match action {
                    FeedAction::LogOnly => "log_only",
                    FeedAction::LogAndDrop => "log_and_drop",
                }),
            ),
            EventKind::HeartbeatDrop => ("heartbeat", None, None),
        };
        // What matched: the listed address (either end), name or URL.
        let indicator = match ev.kind {
            EventKind::ThreatIndicator { .. } if !ev.matched.is_empty() => Some(ev.matched.to_string_lossy()),
            _ => None,
        };
        let verdict = if ev.tap && ev.reason != "forwarded" {
            "would_drop"
        } else if ev.dropped {
            "dropped"
        } else {
            "forwarded"
        };
        let rule = ev.rule.and_then(|r| self.state.as_ref()?.policy().rule_name(r).map(str::to_owned));
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        ThreatLogRecord {
            time: rfc3339_now(),
            log,
            module,
            indicator,
            audit_id: nonempty(ev.audit_id.to_string_lossy()),
            feed: nonempty(ev.feed.to_string_lossy()),
            action,
            verdict,
            reason: ev.reason,
            rule,
            port: self.port_roles.get(usize::from(ev.ingress_slot)).cloned().unwrap_or_default(),
            protocol: ev.protocol,
            src_mac: MacAddr(ev.src_mac).to_string(),
            src_ip: ev.src_ip,
            src_port: ev.src_port,
            src_health: ev.src_health.as_str(),
            user: ev.src_ip.and_then(|ip| self.users.user_of(ip)),
            dst_mac: MacAddr(ev.dst_mac).to_string(),
            dst_ip: ev.dst_ip,
            dst_port: ev.dst_port,
            dst_health: ev.dst_health.as_str(),
        }
    }

    /// What makes two events identical for rate limiting: everything but the
    /// time, the source port (a new connection from the same host to the same
    /// place is the same event) and the health snapshot.
    fn key(ev: &WorkerEvent) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::mem::discriminant(&ev.kind).hash(&mut h);
        if let EventKind::ThreatIndicator { module, indicator, .. } = ev.kind {
            (module, indicator).hash(&mut h);
        }
        (ev.reason, ev.dropped, ev.src_mac, ev.src_ip, ev.dst_ip, ev.dst_port, ev.protocol, ev.rule).hash(&mut h);
        ev.matched.as_bytes().hash(&mut h);
        h.finish()
    }

    /// Logs one event.
    pub fn handle(&mut self, ev: &WorkerEvent, now: Instant) -> std::io::Result<()> {
        self.received += 1;
        if self.log.is_none() {
            return Ok(());
        }
        let record = self.record(ev);
        match self.log.as_mut() {
            Some(log) => log.record(Self::key(ev), &record, now, u64::from(ev.coalesced)),
            None => Ok(()),
        }
    }

    /// Closes rate-limit windows that are due and flushes.
    pub fn tick(&mut self, now: Instant) -> std::io::Result<()> {
        match self.log.as_mut() {
            Some(l) => l.expire(now),
            None => Ok(()),
        }
    }

    /// Writes out pending counts and closes the file.
    pub fn close(self) -> std::io::Result<()> {
        match self.log {
            Some(l) => l.close(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_log::EventLogConfig;
    use hbgw_dataplane::events::{InlineStr, ThreatModule};
    use hbgw_shared::endpoint::EndpointHealth;
    use std::time::Duration;

    fn ev() -> WorkerEvent {
        WorkerEvent {
            kind: EventKind::ThreatIndicator { module: ThreatModule::Dns, indicator: 3, action: FeedAction::LogAndDrop },
            reason: "threat_indicator",
            dropped: true,
            tap: false,
            ingress_slot: 0,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Some("10.0.0.1".parse().unwrap()),
            dst_ip: Some("203.0.113.80".parse().unwrap()),
            protocol: 17,
            src_port: 5353,
            dst_port: 53,
            src_health: EndpointHealth::Green,
            dst_health: EndpointHealth::Unknown,
            audit_id: InlineStr::new(b"MDR-1"),
            feed: InlineStr::new(b"mdr"),
            matched: InlineStr::new(b"malware.example"),
            rule: None,
            coalesced: 0,
        }
    }

    #[test]
    fn records_name_everything() {
        let t = ThreatLog::new(None, None, vec!["lan0".into()], Box::new(NoUsers));
        let r = t.record(&ev());
        assert_eq!(r.log, "active_threat_response");
        assert_eq!(r.module, Some("dns"));
        assert_eq!(r.indicator.as_deref(), Some("malware.example"));
        assert_eq!(r.audit_id.as_deref(), Some("MDR-1"));
        assert_eq!((r.verdict, r.action), ("dropped", Some("log_and_drop")));
        assert_eq!(r.port, "lan0");
        assert_eq!(r.src_mac, "02:00:00:00:00:01");
        assert_eq!(r.src_health, "green");
        assert!(r.time.ends_with('Z') && r.time.len() == 24, "{}", r.time);
    }

    #[test]
    fn repeated_events_fold_new_connections_included() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ev.jsonl");
        let log = EventLog::open(EventLogConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 1,
            window: Duration::from_secs(1),
        })
        .unwrap();
        let mut t = ThreatLog::new(Some(log), None, vec!["lan0".into()], Box::new(NoUsers));
        let now = Instant::now();
        for port in 0..50u16 {
            let mut e = ev();
            e.src_port = 1000 + port;
            t.handle(&e, now).unwrap();
        }
        t.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[1].contains("\"repeated\":49"));
    }
}
