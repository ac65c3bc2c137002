//! The decide stage: a parsed frame, the port it came in on and the state the
//! control plane published -> forward, drop (with a reason) or punt.
//!
//! Order of evaluation, as the vendor documents it:
//!
//! 1. frames for the gateway's own addresses are punted (the exception path);
//! 2. **threat exclusions** win over indicators: an excluded match is noted and
//!    skipped (the exclusion check is inside each indicator lookup);
//! 3. **MDR threat indicators**: destination IP, source IP, then the
//!    application hint (DNS query name, TLS SNI, HTTP host and path). A *log
//!    only* hit is logged and evaluation goes on; a *log and drop* hit is
//!    logged and stops evaluation with a drop;
//! 4. **lateral movement protection**: when both ends are endpoints the
//!    gateway knows and either is Red (or Yellow / Missing, if configured),
//!    the frame is dropped;
//! 5. **missing / no heartbeat, then firewall rules with heartbeat
//!    conditions, then the default action** ([`CompiledPolicy::evaluate`]).
//!
//! Frames that are not IP (ARP not for the gateway, LLDP, ...) are bridged.
//! Nothing here allocates, locks or logs: events go to a sink the caller
//! provides (a bounded channel in the worker, a list in `hbgw explain`).
//!
//! [`CompiledPolicy::evaluate`]: hbgw_shared::policy::CompiledPolicy::evaluate

use crate::events::{EventKind, InlineStr, ThreatModule, WorkerEvent};
use crate::hint_cache::{HintCache, HintKey};
use crate::parse::dns::DnsName;
use crate::parse::{AppHint, Network, ParsedFrame};
use crate::verdict::{DropReason, Verdict};
use hbgw_shared::endpoint::{EndpointHealth, EndpointSnapshot, MacAddr};
use hbgw_shared::indicator_overlay::IndicatorOverlay;
use hbgw_shared::indicators::{FeedAction, IndicatorMatch};
use hbgw_shared::policy::{DecisionReason, FlowKey, PolicyDecision, PortRole, RuleAction};
use hbgw_shared::state::{StateView, WorkerView};
use std::net::IpAddr;

/// What to do with frames whose headers do not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MalformedAction {
    /// Drop and count them (the default: what cannot be parsed cannot be checked).
    #[default]
    Drop,
    /// Bridge them unchecked (counted all the same).
    Forward,
}

/// Lateral movement protection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateralMovement {
    /// Whether traffic between two known endpoints is checked at all.
    pub enabled: bool,
    /// Also block when an end is Yellow.
    pub include_yellow: bool,
    /// Also block when an end is Missing.
    pub include_missing: bool,
}

impl Default for LateralMovement {
    fn default() -> Self {
        Self { enabled: true, include_yellow: false, include_missing: false }
    }
}

/// How the decide stage behaves.
#[derive(Debug, Clone)]
pub struct EnforcementConfig {
    /// Observe only: compute and log every verdict, drop nothing.
    pub tap_mode: bool,
    /// Frames that do not parse.
    pub malformed: MalformedAction,
    /// Lateral movement protection.
    pub lateral: LateralMovement,
    /// The gateway's own addresses: frames for them are punted.
    pub gateway_ips: Vec<IpAddr>,
    /// Entries in the pipeline's flow cache ([`crate::flow_cache`]); 0: off.
    pub flow_cache_entries: usize,
    /// Entries in the decide stage's quiet-hint cache ([`crate::hint_cache`]); 0: off.
    pub hint_cache_entries: usize,
}

impl Default for EnforcementConfig {
    fn default() -> Self {
        EnforcementConfig {
            tap_mode: false,
            malformed: MalformedAction::default(),
            lateral: LateralMovement::default(),
            gateway_ips: Vec::new(),
            flow_cache_entries: hbgw_shared::config::DEFAULT_FLOW_CACHE_ENTRIES,
            hint_cache_entries: hbgw_shared::config::DEFAULT_HINT_CACHE_ENTRIES,
        }
    }
}

/// The role of a port and of the port its frames leave by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortContext {
    /// The ingress port's role.
    pub role: PortRole,
    /// The egress (bridge peer) port's role.
    pub peer_role: PortRole,
}

/// Which stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A frame for the gateway itself.
    Punt,
    /// Not IP: bridged unchecked.
    NotIp,
    /// A *log and drop* threat indicator.
    Indicator(ThreatModule),
    /// Lateral movement protection.
    LateralMovement,
    /// The policy (missing heartbeat, a rule, or the default action).
    Policy(PolicyDecision),
}

/// The decision, with what an explanation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to do (before tap mode turns drops into forwards).
    pub verdict: Verdict,
    /// The stage that decided.
    pub stage: Stage,
    /// Source endpoint's health (by MAC, else by IP).
    pub src_health: EndpointHealth,
    /// Destination endpoint's health.
    pub dst_health: EndpointHealth,
    /// An indicator match that an exclusion overrode, if any.
    pub excluded: Option<(ThreatModule, u32)>,
}

fn health(endpoints: &EndpointSnapshot, mac: [u8; 6], ip: Option<IpAddr>) -> EndpointHealth {
    let by_mac = endpoints.health_by_mac(&MacAddr(mac));
    if by_mac != EndpointHealth::Unknown {
        return by_mac;
    }
    ip.map_or(EndpointHealth::Unknown, |ip| endpoints.health_by_ip(ip))
}

/// `ip` as text in `buf`, without allocating (only on an indicator hit).
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as usize;
    &buf[..n]
}

fn policy_reason(d: &PolicyDecision) -> DropReason {
    match (d.reason, d.action) {
        (DecisionReason::MissingHeartbeat, _) => DropReason::MissingHeartbeat,
        (DecisionReason::SourceHeartbeat, _) => DropReason::SourceHeartbeat,
        (DecisionReason::SourceWithoutHeartbeat, _) => DropReason::SourceWithoutHeartbeat,
        (DecisionReason::DestinationHeartbeat, _) => DropReason::DestinationHeartbeat,
        (DecisionReason::DestinationWithoutHeartbeat, _) => DropReason::DestinationWithoutHeartbeat,
        (DecisionReason::Default, _) => DropReason::DefaultDrop,
        (_, RuleAction::Reject) => DropReason::PolicyReject,
        _ => DropReason::PolicyDrop,
    }
}

/// The per-worker decide stage (owns its scratch buffers).
#[derive(Debug)]
pub struct Enforcer {
    config: EnforcementConfig,
    dns_name: DnsName,
    /// Hints that matched no indicator (`None`: off).
    hints: Option<HintCache>,
}

/// The facts of one frame that every event repeats.
struct Facts<'a> {
    pf: &'a ParsedFrame<'a>,
    ingress_slot: u16,
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    src_health: EndpointHealth,
    dst_health: EndpointHealth,
}

impl Enforcer {
    /// A decide stage with `config`.
    pub fn new(config: EnforcementConfig) -> Self {
        let hints = HintCache::new(config.hint_cache_entries);
        Self { config, dns_name: DnsName::new(), hints }
    }

    /// The configuration.
    pub fn config(&self) -> &EnforcementConfig {
        &self.config
    }

    /// The quiet-hint cache's hits and misses so far (`None`: it is off).
    pub fn hint_cache_counts(&self) -> Option<(u64, u64)> {
        self.hints.as_ref().map(|h| (h.hits, h.misses))
    }

    fn event(&self, f: &Facts<'_>, kind: EventKind, reason: &'static str, dropped: bool) -> WorkerEvent {
        let (src_port, dst_port) = f.pf.ports().unwrap_or((0, 0));
        WorkerEvent {
            kind,
            reason,
            dropped: dropped && !self.config.tap_mode,
            tap: self.config.tap_mode,
            ingress_slot: f.ingress_slot,
            src_mac: f.pf.src_mac,
            dst_mac: f.pf.dst_mac,
            src_ip: f.src_ip,
            dst_ip: f.dst_ip,
            protocol: f.pf.ip_protocol().unwrap_or(0),
            src_port,
            dst_port,
            src_health: f.src_health,
            dst_health: f.dst_health,
            audit_id: InlineStr::default(),
            feed: InlineStr::default(),
            matched: InlineStr::default(),
            rule: None,
            coalesced: 0,
        }
    }

    /// Logs a hit; returns `Some(module)` when it stops evaluation (log and drop).
    fn check(
        &self,
        facts: &Facts<'_>,
        module: ThreatModule,
        m: IndicatorMatch<'_>,
        matched: &[u8],
        decision: &mut Decision,
        sink: &mut dyn FnMut(WorkerEvent),
    ) -> Option<ThreatModule> {
        match m {
            IndicatorMatch::NoMatch => None,
            IndicatorMatch::Excluded(hit) => {
                decision.excluded.get_or_insert((module, hit.index));
                None
            }
            IndicatorMatch::Hit(hit) => {
                let drops = hit.action == FeedAction::LogAndDrop;
                let reason = if drops { DropReason::ThreatIndicator.as_str() } else { "forwarded" };
                let kind = EventKind::ThreatIndicator { module, indicator: hit.index, action: hit.action };
                let mut ev = self.event(facts, kind, reason, drops);
                ev.audit_id = InlineStr::new(hit.audit_id.as_bytes());
                ev.feed = InlineStr::new(hit.feed.as_bytes());
                ev.matched = InlineStr::new(matched);
                sink(ev);
                drops.then_some(module)
            }
        }
    }

    /// Whether a frame's application hint (if any) matches no indicator that
    /// would be logged: step 3 of [`Enforcer::decide`] for the hint alone,
    /// without its events. When it holds, the hint changes nothing, and a
    /// frame of a flow whose verdict is cached gets that verdict
    /// ([`crate::flow_cache`]). Excluded matches are silent, as in `decide`.
    ///
    /// `epoch` is the state's change counter, read before the indicators
    /// (from `view`, only when they are looked up): a hint that matched
    /// nothing at all is remembered under it ([`crate::hint_cache`]), and the
    /// next frame with the same hint in the same state skips the lookups.
    #[inline]
    pub fn app_hint_is_silent(&mut self, app: Option<AppHint<'_>>, view: &mut WorkerView, epoch: u64) -> bool {
        let Some(app) = app else { return true };
        let Some(hints) = self.hints.as_mut() else { return self.hint_lookups(app, view.indicators()).0 };
        let key = match app {
            AppHint::DnsQuery(q) => HintKey::dns(&q),
            AppHint::TlsSni(sni) => HintKey::sni(sni),
            AppHint::HttpRequest(req) => req.host().and_then(|host| HintKey::http(host, req.path)),
        };
        let Some(key) = key else { return self.hint_lookups(app, view.indicators()).0 };
        let miss = match hints.lookup(&key, epoch) {
            Ok(()) => return true,
            Err(miss) => miss,
        };
        let (silent, no_match) = self.hint_lookups(app, view.indicators());
        if no_match {
            if let Some(hints) = self.hints.as_mut() {
                hints.insert(miss, &key, epoch);
            }
        }
        silent
    }

    /// The indicator lookups of a hint: whether none would be logged (no
    /// hit; an excluded match is silent), and whether none matched at all
    /// (what the quiet-hint cache may remember).
    #[inline]
    fn hint_lookups(&mut self, app: AppHint<'_>, indicators: &IndicatorOverlay) -> (bool, bool) {
        let quiet = |m: IndicatorMatch<'_>| (!matches!(m, IndicatorMatch::Hit(_)), m == IndicatorMatch::NoMatch);
        match app {
            AppHint::DnsQuery(q) => {
                q.decode_into(&mut self.dns_name);
                quiet(indicators.match_domain(self.dns_name.as_bytes()))
            }
            AppHint::TlsSni(sni) => quiet(indicators.match_domain(sni)),
            AppHint::HttpRequest(req) => match req.host() {
                Some(host) => {
                    let (silent, no_match) = quiet(indicators.match_url(host, req.path));
                    if !silent {
                        return (false, false);
                    }
                    // As `decide`: the domain lookup only when the URL one logs nothing.
                    let (silent, domain_no_match) = quiet(indicators.match_domain(host));
                    (silent, no_match && domain_no_match)
                }
                None => (true, true),
            },
        }
    }

    /// Decides `pf`, which arrived on port slot `ingress_slot` with role
    /// `port`, against `state`; events go to `sink`.
    pub fn decide(
        &mut self,
        pf: &ParsedFrame<'_>,
        ingress_slot: u16,
        port: PortContext,
        state: &StateView<'_>,
        sink: &mut dyn FnMut(WorkerEvent),
    ) -> Decision {
        let mut decision = Decision {
            verdict: Verdict::Forward,
            stage: Stage::NotIp,
            src_health: EndpointHealth::Unknown,
            dst_health: EndpointHealth::Unknown,
            excluded: None,
        };

        // 1. The exception path: ARP for, and IP to, the gateway's addresses.
        let ours = |ip: IpAddr| self.config.gateway_ips.contains(&ip);
        let for_gateway = match pf.network {
            Network::Arp(arp) => ours(IpAddr::from(arp.target_ip)),
            _ => pf.dst_ip().is_some_and(ours),
        };
        if for_gateway {
            decision.verdict = Verdict::Punt;
            decision.stage = Stage::Punt;
            return decision;
        }
        let (Some(src_ip), Some(dst_ip)) = (pf.src_ip(), pf.dst_ip()) else {
            return decision;
        };
        let facts = Facts {
            pf,
            ingress_slot,
            src_ip: Some(src_ip),
            dst_ip: Some(dst_ip),
            src_health: health(state.endpoints, pf.src_mac, Some(src_ip)),
            dst_health: health(state.endpoints, pf.dst_mac, Some(dst_ip)),
        };
        decision.src_health = facts.src_health;
        decision.dst_health = facts.dst_health;

        // 2 + 3. Indicators (exclusions are checked inside each lookup).
        let indicators = state.indicators;
        let mut text = [0u8; 48];
        let mut hit = match indicators.match_ip(dst_ip) {
            IndicatorMatch::NoMatch => None,
            m => self.check(&facts, ThreatModule::Firewall, m, ip_text(dst_ip, &mut text), &mut decision, sink),
        };
        if hit.is_none() {
            hit = match indicators.match_ip(src_ip) {
                IndicatorMatch::NoMatch => None,
                m => self.check(&facts, ThreatModule::Firewall, m, ip_text(src_ip, &mut text), &mut decision, sink),
            };
        }
        if hit.is_none() {
            match pf.app {
                Some(AppHint::DnsQuery(q)) => {
                    // Decoded into the enforcer's own buffer, then read back
                    // through a shared borrow (no 256-byte move per query).
                    q.decode_into(&mut self.dns_name);
                    let text = self.dns_name.as_bytes();
                    hit =
                        self.check(&facts, ThreatModule::Dns, indicators.match_domain(text), text, &mut decision, sink);
                }
                Some(AppHint::TlsSni(sni)) => {
                    hit = self.check(
                        &facts,
                        ThreatModule::TlsSni,
                        indicators.match_domain(sni),
                        sni,
                        &mut decision,
                        sink,
                    );
                }
                Some(AppHint::HttpRequest(req)) => {
                    if let Some(host) = req.host() {
                        // Logged as host + path, as a URL reads.
                        let mut url = [0u8; 192];
                        let n = host.len().min(url.len());
                        url[..n].copy_from_slice(&host[..n]);
                        let p = req.path.len().min(url.len() - n);
                        url[n..n + p].copy_from_slice(&req.path[..p]);
                        hit = self
                            .check(
                                &facts,
                                ThreatModule::Http,
                                indicators.match_url(host, req.path),
                                &url[..n + p],
                                &mut decision,
                                sink,
                            )
                            .or_else(|| {
                                self.check(
                                    &facts,
                                    ThreatModule::Http,
                                    indicators.match_domain(host),
                                    host,
                                    &mut decision,
                                    sink,
                                )
                            });
                    }
                }
                None => {}
            }
        }
        if let Some(module) = hit {
            decision.verdict = Verdict::Drop(DropReason::ThreatIndicator);
            decision.stage = Stage::Indicator(module);
            return decision;
        }

        // 4. Lateral movement between endpoints the gateway knows.
        let lm = self.config.lateral;
        let bad = |h: EndpointHealth| {
            h == EndpointHealth::Red
                || (lm.include_yellow && h == EndpointHealth::Yellow)
                || (lm.include_missing && h == EndpointHealth::Missing)
        };
        if lm.enabled
            && facts.src_health != EndpointHealth::Unknown
            && facts.dst_health != EndpointHealth::Unknown
            && (bad(facts.src_health) || bad(facts.dst_health))
        {
            let reason = DropReason::LateralMovement;
            sink(self.event(&facts, EventKind::HeartbeatDrop, reason.as_str(), true));
            decision.verdict = Verdict::Drop(reason);
            decision.stage = Stage::LateralMovement;
            return decision;
        }

        // 5. Missing heartbeat, rules with heartbeat conditions, default.
        let (src_port, dst_port) = pf.ports().unwrap_or((0, 0));
        let flow = FlowKey {
            ingress: port.role,
            egress: port.peer_role,
            vlan: pf.vlans.outer(),
            src: src_ip,
            dst: dst_ip,
            protocol: pf.ip_protocol().unwrap_or(0),
            src_port,
            dst_port,
        };
        let d = state.policy.evaluate(&flow, facts.src_health, facts.dst_health);
        decision.stage = Stage::Policy(d);
        if d.action != RuleAction::Accept {
            let reason = policy_reason(&d);
            if reason.is_heartbeat() {
                let mut ev = self.event(&facts, EventKind::HeartbeatDrop, reason.as_str(), true);
                ev.rule = d.rule;
                sink(ev);
            }
            decision.verdict = Verdict::Drop(reason);
        }
        decision
    }
}
