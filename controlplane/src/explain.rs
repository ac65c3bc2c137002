//! `hbgw explain`: which rule, indicator, exclusion or health decided the
//! verdict for a given flow, and why.
//!
//! The question (MACs, IPs, protocol, ports, ingress port, VLAN, and
//! optionally the DNS name, TLS SNI or HTTP host/path the flow carries) is
//! turned into a real frame ([`hbgw_dataplane::synth`]), parsed and decided by
//! the same code the workers run ([`hbgw_dataplane::enforce`]), against the
//! state the workers read. So the answer is what a worker would do with that
//! frame now, not a second implementation's opinion.

use hbgw_dataplane::enforce::{Decision, EnforcementConfig, Enforcer, PortContext, Stage};
use hbgw_dataplane::events::{EventKind, WorkerEvent};
use hbgw_dataplane::parse::parse_frame;
use hbgw_dataplane::synth;
use hbgw_dataplane::verdict::Verdict;
use hbgw_shared::endpoint::MacAddr;
use hbgw_shared::indicators::FeedAction;
use hbgw_shared::state::{GatewayState, WorkerView};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The flow to explain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// Ingress port role: `lan0`, `wan0`, ...
    pub ingress: String,
    /// Source MAC.
    pub src_mac: MacAddr,
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// Source IP.
    pub src_ip: IpAddr,
    /// Destination IP.
    pub dst_ip: IpAddr,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// 802.1Q VLAN id.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// A DNS query name the flow carries.
    #[serde(default)]
    pub dns: Option<String>,
    /// A TLS server name the flow carries.
    #[serde(default)]
    pub sni: Option<String>,
    /// An HTTP host the flow carries (with `http_path`).
    #[serde(default)]
    pub http_host: Option<String>,
    /// The HTTP request path.
    #[serde(default)]
    pub http_path: Option<String>,
}

/// One indicator hit on the way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExplainedHit {
    /// firewall / dns / tls_sni / http.
    pub module: String,
    /// The audit id.
    pub audit_id: String,
    /// The feed.
    pub feed: String,
    /// log_only / log_and_drop.
    pub action: String,
    /// What matched.
    pub matched: String,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExplainAnswer {
    /// forward / drop / punt (what a worker does; in tap mode a drop is
    /// reported here and forwarded on the wire).
    pub verdict: String,
    /// The drop reason, if dropped.
    pub reason: Option<String>,
    /// Which stage decided: punt, not_ip, indicator, lateral_movement, policy.
    pub stage: String,
    /// The deciding rule (index and name), when a rule decided.
    pub rule: Option<(u32, String)>,
    /// Why the policy decided as it did (rule, default, missing_heartbeat, ...).
    pub policy_reason: Option<String>,
    /// Source endpoint health (by MAC, else by IP).
    pub src_health: String,
    /// Destination endpoint health.
    pub dst_health: String,
    /// Indicator hits, in evaluation order (log-only ones included).
    pub indicator_hits: Vec<ExplainedHit>,
    /// An indicator an exclusion overrode: module and indicator index.
    pub excluded: Option<(String, u32)>,
    /// Whether the gateway is in tap mode.
    pub tap_mode: bool,
    /// One sentence.
    pub summary: String,
}

/// Why a question cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Unknown ingress name.
    #[error("unknown ingress port `{0}`: use one of {1}")]
    UnknownIngress(String, String),
    /// Not tcp/udp, or an IPv6 flow with an application hint.
    #[error("cannot build that flow: {0}")]
    Unsupported(String),
}

/// Decides synthetic frames against live (or loaded) state.
pub struct Explainer {
    state: Arc<GatewayState>,
    decide: Mutex<(Enforcer, WorkerView)>,
    tap_mode: bool,
    ports: Vec<(String, PortContext)>,
}

impl Explainer {
    /// An explainer over `state`, with the workers' decide settings and the
    /// port roles by name (`lan0` -> context).
    pub fn new(state: Arc<GatewayState>, config: EnforcementConfig, ports: Vec<(String, PortContext)>) -> Self {
        let tap_mode = config.tap_mode;
        let view = state.worker_view();
        Explainer { state, decide: Mutex::new((Enforcer::new(config), view)), tap_mode, ports }
    }

    fn frame(q: &ExplainRequest) -> Result<Vec<u8>, ExplainError> {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (q.src_ip, q.dst_ip) else {
            if q.protocol == "tcp" && q.dns.is_none() && q.sni.is_none() && q.http_host.is_none() && q.vlan.is_none() {
                let (IpAddr::V6(s), IpAddr::V6(d)) = (q.src_ip, q.dst_ip) else {
                    return Err(ExplainError::Unsupported("source and destination must both be IPv4 or both IPv6".into()));
                };
                return Ok(synth::tcp6(q.src_mac.0, q.dst_mac.0, s.octets(), d.octets(), q.src_port, q.dst_port));
            }
            return Err(ExplainError::Unsupported(
                "IPv6 is explained for plain TCP without VLAN or application data: drop --dns/--sni/--http-host/--vlan".into(),
            ));
        };
        let payload = if let Some(name) = &q.dns {
            if q.protocol == "tcp" {
                synth::dns_query_tcp(name)
            } else {
                synth::dns_query(name)
            }
        } else if let Some(sni) = &q.sni {
            synth::client_hello(sni)
        } else if let Some(host) = &q.http_host {
            synth::http_get(host, q.http_path.as_deref().unwrap_or("/"))
        } else {
            Vec::new()
        };
        let (s, d) = (src.octets(), dst.octets());
        let frame = match (q.protocol.as_str(), q.vlan) {
            ("tcp", None) => synth::tcp(q.src_mac.0, q.dst_mac.0, s, d, q.src_port, q.dst_port, &payload),
            ("udp", None) => synth::udp(q.src_mac.0, q.dst_mac.0, s, d, q.src_port, q.dst_port, &payload),
            ("tcp", Some(v)) if payload.is_empty() => synth::vlan_tcp(q.src_mac.0, q.dst_mac.0, v, s, d, q.dst_port),
            ("udp", Some(v)) if payload.is_empty() => synth::vlan_udp(q.src_mac.0, q.dst_mac.0, v, s, d, q.dst_port),
            ("tcp" | "udp", Some(_)) => {
                return Err(ExplainError::Unsupported("a VLAN-tagged flow is explained without application data".into()))
            }
            (other, _) => return Err(ExplainError::Unsupported(format!("protocol `{other}`: use tcp or udp"))),
        };
        Ok(frame)
    }

    /// Answers `q`.
    pub fn explain(&self, q: &ExplainRequest) -> Result<ExplainAnswer, ExplainError> {
        let Some(slot) = self.ports.iter().position(|(name, _)| *name == q.ingress) else {
            let names: Vec<&str> = self.ports.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ExplainError::UnknownIngress(q.ingress.clone(), names.join(", ")));
        };
        let frame = Self::frame(q)?;
        let pf = parse_frame(&frame).map_err(|m| ExplainError::Unsupported(format!("the built frame is malformed: {m}")))?;
        let mut events: Vec<WorkerEvent> = Vec::new();
        let decision: Decision = {
            let mut guard = self.decide.lock().unwrap_or_else(|p| p.into_inner());
            let (enforcer, view) = &mut *guard;
            let state = view.refresh();
            enforcer.decide(&pf, slot as u16, self.ports[slot].1, &state, &mut |e| events.push(e))
        };
        let policy = self.state.policy();
        let (verdict, reason) = match decision.verdict {
            Verdict::Forward => ("forward", None),
            Verdict::Drop(r) => ("drop", Some(r.as_str().to_owned())),
            Verdict::Punt => ("punt", None),
        };
        let (stage, rule, policy_reason) = match decision.stage {
            Stage::Punt => ("punt", None, None),
            Stage::NotIp => ("not_ip", None, None),
            Stage::Indicator(_) => ("indicator", None, None),
            Stage::LateralMovement => ("lateral_movement", None, None),
            Stage::Policy(d) => (
                "policy",
                d.rule.map(|i| (i, policy.rule_name(i).unwrap_or("?").to_owned())),
                Some(format!("{:?}", d.reason).to_lowercase()),
            ),
        };
        let hits: Vec<ExplainedHit> = events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::ThreatIndicator { module, action, .. } => Some(ExplainedHit {
                    module: module.as_str().into(),
                    audit_id: e.audit_id.to_string_lossy(),
                    feed: e.feed.to_string_lossy(),
                    action: match action {
                        FeedAction::LogOnly => "log_only".into(),
                        FeedAction::LogAndDrop => "log_and_drop".into(),
                    },
                    matched: e.matched.to_string_lossy(),
                }),
                EventKind::HeartbeatDrop => None,
            })
            .collect();
        let summary = match (&decision.stage, &reason) {
            (Stage::Punt, _) => "the destination is the gateway itself: handed to the exception path".to_owned(),
            (Stage::NotIp, _) => "not IP: bridged unchecked".to_owned(),
            (Stage::Indicator(m), _) => {
                let h = hits.last();
                format!(
                    "dropped by threat indicator {} (feed {}, {} module)",
                    h.map_or("?", |h| h.audit_id.as_str()),
                    h.map_or("?", |h| h.feed.as_str()),
                    m.as_str()
                )
            }
            (Stage::LateralMovement, _) => format!(
                "lateral movement protection: source is {}, destination is {}",
                decision.src_health.as_str(),
                decision.dst_health.as_str()
            ),
            (Stage::Policy(_), None) => match &rule {
                Some((i, name)) => format!("accepted by rule {i} `{name}`"),
                None => "accepted by the default action".to_owned(),
            },
            (Stage::Policy(_), Some(r)) => match &rule {
                Some((i, name)) => format!(
                    "dropped ({r}) by rule {i} `{name}`: source is {}, destination is {}",
                    decision.src_health.as_str(),
                    decision.dst_health.as_str()
                ),
                None => format!("dropped ({r}): source is {}", decision.src_health.as_str()),
            },
        };
        Ok(ExplainAnswer {
            verdict: verdict.into(),
            reason,
            stage: stage.into(),
            rule,
            policy_reason,
            src_health: decision.src_health.as_str().into(),
            dst_health: decision.dst_health.as_str().into(),
            indicator_hits: hits,
            excluded: decision.excluded.map(|(m, i)| (m.as_str().to_owned(), i)),
            tap_mode: self.tap_mode,
            summary,
        })
    }
}
