//! The Central wire format (`docs/central-protocol.md`) and the gateway's
//! model of what Central shared: [`SyncedState`].
//!
//! This module owns the JSON shapes both sides speak and the validation every
//! received value passes before it can reach a worker: an update is checked
//! and compiled whole ([`SyncedState::prepare`]) and only then committed
//! ([`SyncedState::commit`]), so a bad value rejects the whole update and the
//! previous state stays. It must never publish anything itself (that is the
//! client's job, with the compiled result) and never panic on input.

use crate::heartbeat::CertFingerprint;
use super::held_map::HeldMap;
use hbgw_shared::indicator_overlay::{FoldedLayers, IndicatorOverlay, TouchedIds};
use hbgw_shared::indicators::{
    ExclusionSet, IndicatorKind, IndicatorSet, IndicatorSetBuilder, ThreatExclusion, ThreatFeedSettings,
};
use hbgw_shared::policy::{CompiledPolicy, Policy};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Longest indicator value accepted.
pub const MAX_VALUE_LEN: usize = 2048;
/// Longest audit ID accepted.
pub const MAX_AUDIT_ID_LEN: usize = 256;
/// Longest feed name accepted.
pub const MAX_FEED_LEN: usize = 64;
/// Most events in one log batch.
pub const MAX_LOG_BATCH: usize = 1000;
/// Largest log batch body.
pub const MAX_LOG_BATCH_BYTES: usize = 16 << 20;
/// Longest long-poll wait Central grants, seconds.
pub const MAX_WAIT_S: u64 = 60;

/// One indicator as Central sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireIndicator {
    /// An IPv4/IPv6 address or network, a domain, or a URL.
    pub value: String,
    /// The analyst's id; the indicator's identity.
    pub audit_id: String,
    /// The feed it belongs to.
    pub feed: String,
}

/// A pinned endpoint certificate as Central sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEndpointCert {
    /// The endpoint's name.
    pub name: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// The certificate, PEM.
    pub pem: String,
}

/// One journaled change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Indicators added (an existing audit ID is replaced).
    IndicatorsAdd {
        /// The indicators.
        indicators: Vec<WireIndicator>,
    },
    /// Indicators added, in the compact form (sync protocol version 2): one
    /// line per indicator, `VALUE\tAUDIT_ID\tFEED\n` (see
    /// [`IndicatorLines`]); an existing audit ID is replaced.
    IndicatorsAddLines {
        /// The lines.
        lines: String,
    },
    /// Indicators removed by audit ID.
    IndicatorsRemove {
        /// Their audit IDs.
        audit_ids: Vec<String>,
    },
    /// A new policy (TOML, `shared/src/policy.rs` format).
    PolicySet {
        /// The policy text.
        policy: String,
    },
    /// New MDR threat feed settings.
    FeedSettingsSet {
        /// The settings.
        settings: ThreatFeedSettings,
    },
    /// The whole exclusion list.
    ExclusionsSet {
        /// The exclusions.
        exclusions: Vec<String>,
    },
    /// An endpoint certificate to pin.
    EndpointCertAdd(WireEndpointCert),
    /// An endpoint certificate to unpin.
    EndpointCertRemove {
        /// SHA-256 of the DER, hex.
        fingerprint: String,
    },
    /// New heartbeat settings.
    HeartbeatSet {
        /// The settings.
        settings: HeartbeatSettings,
    },
}

/// Heartbeat settings Central gives the gateway (applied live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    /// The heartbeat interval endpoints are told, milliseconds (100..=3,600,000).
    pub interval_ms: u64,
    /// Heartbeats missed before an endpoint is lost or missing (1..=100).
    pub missed_limit: u32,
    /// Zones where missing and no-heartbeat are detected; empty: the gateway's own.
    #[serde(default)]
    pub missing_zones: Vec<String>,
}

/// Checks heartbeat settings.
pub fn check_heartbeat_settings(h: &HeartbeatSettings) -> Result<(), UpdateError> {
    if !(100..=3_600_000).contains(&h.interval_ms) {
        return Err(bad(format!("heartbeat interval_ms {}: use 100 to 3600000 (15000 in the product)", h.interval_ms)));
    }
    if !(1..=100).contains(&h.missed_limit) {
        return Err(bad(format!("heartbeat missed_limit {}: use 1 to 100 (3 in the product)", h.missed_limit)));
    }
    for z in &h.missing_zones {
        if z.is_empty() || z.len() > 64 || !z.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(bad(format!("missing-heartbeat zone {z:?}: use 1 to 64 letters, digits, '.', '_' or '-'")));
        }
    }
    Ok(())
}

/// A change with its revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// The revision the change made.
    pub revision: u64,
    /// The change.
    pub change: Change,
}

/// Everything Central shares, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The policy text; none yet: the gateway's before-first-policy choice.
    #[serde(default)]
    pub policy: Option<String>,
    /// MDR threat feed settings.
    #[serde(default)]
    pub feed_settings: ThreatFeedSettings,
    /// Threat exclusions.
    #[serde(default)]
    pub exclusions: Vec<String>,
    /// Indicators.
    #[serde(default)]
    pub indicators: Vec<WireIndicator>,
    /// Endpoint certificates.
    #[serde(default)]
    pub endpoint_certs: Vec<WireEndpointCert>,
    /// Heartbeat settings; none: the gateway's own `[heartbeat]` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatSettings>,
}

/// The answer to `GET /v1/sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncAnswer {
    /// Central's revision.
    pub revision: u64,
    /// The changes after the gateway's revision (incremental answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<JournalEntry>>,
    /// Everything (full answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

/// `POST /v1/enroll` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token.
    pub token: String,
    /// The gateway's name.
    pub name: String,
}

/// `POST /v1/enroll` answer; stored by the gateway as its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayIdentity {
    /// Central's id for the gateway.
    pub gateway_id: String,
    /// Its secret (hex).
    pub secret: String,
}

impl GatewayIdentity {
    /// The bearer credential.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.gateway_id, self.secret)
    }
}

/// One uploaded log event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEvent {
    /// The gateway's sequence number (idempotency key).
    pub seq: u64,
    /// The log record (one JSON line of the event log).
    pub record: serde_json::Value,
}

/// `POST /v1/logs` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    /// `FIRST-LAST` sequence numbers.
    pub batch_id: String,
    /// The events, in sequence order.
    pub events: Vec<LogEvent>,
}

/// `POST /v1/logs` answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogAck {
    /// Events stored now.
    pub accepted: u64,
    /// Events Central already had.
    pub duplicates: u64,
}

/// `{"error": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line: cause and fix.
    pub error: String,
}

/// Why an update (or a persisted state) cannot be applied; always one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// A value fails validation.
    #[error("{0}")]
    Invalid(String),
    /// Revisions out of order or with a hole.
    #[error("revision gap: have {have}, next change is {next}: a full resync is needed")]
    Gap {
        /// The revision in force.
        have: u64,
        /// The first revision offered.
        next: u64,
    },
}

fn bad(msg: impl Into<String>) -> UpdateError {
    UpdateError::Invalid(msg.into())
}

/// Checks an indicator's fields and parses its value.
pub fn check_indicator(i: &WireIndicator) -> Result<IndicatorKind, UpdateError> {
    check_indicator_parts(&i.value, &i.audit_id, &i.feed)
}

/// Checks an indicator's fields (value, audit ID, feed) and parses its value.
/// None of them may hold a control character (so that the compact form,
/// [`IndicatorLines`], is unambiguous).
pub fn check_indicator_parts(value: &str, audit_id: &str, feed: &str) -> Result<IndicatorKind, UpdateError> {
    check_feed_name(feed)?;
    check_value_and_audit_id(value, audit_id)
}

/// Whether `s` holds a control character. ASCII text, the usual case, is
/// checked in one pass over its bytes without an early exit (so that it
/// compiles to vector compares), characters decoded only if a byte is not
/// ASCII.
fn has_control(s: &str) -> bool {
    let (control, wide) = s.bytes().fold((false, false), |(c, w), b| (c | (b < 0x20) | (b == 0x7f), w | (b >= 0x80)));
    if wide {
        s.chars().any(char::is_control)
    } else {
        control
    }
}

/// [`check_indicator_parts`] but the feed name, which the caller checked.
fn check_value_and_audit_id(value: &str, audit_id: &str) -> Result<IndicatorKind, UpdateError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(bad(format!(
            "indicator `{}...` is {} bytes: keep values under {MAX_VALUE_LEN} bytes",
            value.chars().take(40).collect::<String>(),
            value.len()
        )));
    }
    if has_control(value) {
        return Err(bad(format!("indicator {value:?} has a control character (tab, newline...): remove it")));
    }
    if audit_id.is_empty() || audit_id.len() > MAX_AUDIT_ID_LEN || has_control(audit_id) {
        return Err(bad(format!(
            "indicator `{value}`: audit id {audit_id:?} is empty, longer than {MAX_AUDIT_ID_LEN} bytes or has control characters: give a printable audit id"
        )));
    }
    value.parse::<IndicatorKind>().map_err(|e| bad(e.to_string()))
}

/// The version of `GET /v1/sync` answers a gateway asks for with `v=`: 2
/// understands `indicators_add_lines`; without `v`, Central answers
/// version 1 (every batch as `indicators_add`).
pub const SYNC_VERSION: u32 = 2;

/// Indicators in the compact form of `indicators_add_lines`: one line per
/// indicator, `VALUE \t AUDIT_ID \t FEED \n` (every line ends with `\n`).
/// No field may hold a control character ([`check_indicator_parts`]), so a
/// line splits one way only. Cheap to write and to read: no object per
/// indicator at either end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndicatorLines(pub String);

impl IndicatorLines {
    /// Room for `n` indicators.
    pub fn with_capacity(n: usize) -> Self {
        IndicatorLines(String::with_capacity(n * 32))
    }

    /// Appends one indicator (checked by the caller).
    pub fn push(&mut self, value: &str, audit_id: &str, feed: &str) {
        let s = &mut self.0;
        s.push_str(value);
        s.push('\t');
        s.push_str(audit_id);
        s.push('\t');
        s.push_str(feed);
        s.push('\n');
    }

    /// The lines of `list`.
    pub fn from_wire(list: &[WireIndicator]) -> Self {
        let mut l = Self::with_capacity(list.len());
        for i in list {
            l.push(&i.value, &i.audit_id, &i.feed);
        }
        l
    }

    /// Splits `text` into (value, audit ID, feed); a malformed line is an
    /// error naming it (fields are not checked here).
    pub fn split(text: &str) -> impl Iterator<Item = Result<(&str, &str, &str), UpdateError>> + '_ {
        let body = text.strip_suffix('\n');
        let unterminated = !text.is_empty() && body.is_none();
        LineFields { body: body.unwrap_or_default(), at: if body.is_some() { 0 } else { usize::MAX } }.enumerate().map(|(n, f)| {
            f.map_err(|line| {
                bad(format!(
                    "indicator line {}: {:?} is not VALUE<tab>AUDIT_ID<tab>FEED: resend the batch",
                    n + 1,
                    line.chars().take(80).collect::<String>()
                ))
            })
        })
        .chain(unterminated.then(|| Err(bad("indicator lines do not end with a newline: the batch was cut short; resend it"))))
    }

    /// Number of lines.
    pub fn count(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'\n').count()
    }

    /// The lines as wire indicators (for version-1 answers).
    pub fn to_wire(&self) -> Result<Vec<WireIndicator>, UpdateError> {
        Self::split(&self.0)
            .map(|r| r.map(|(v, a, f)| WireIndicator { value: v.to_owned(), audit_id: a.to_owned(), feed: f.to_owned() }))
            .collect()
    }
}

/// The lines of a body (its last `\n` taken off) split at their two tabs,
/// in one pass over each line's bytes (`str::split` and `splitn` made a
/// seventh of a 100k batch's validation); a line without exactly two tabs
/// is returned whole as the error.
struct LineFields<'t> {
    body: &'t str,
    /// Where the next line starts (`usize::MAX`: done).
    at: usize,
}

impl<'t> Iterator for LineFields<'t> {
    type Item = Result<(&'t str, &'t str, &'t str), &'t str>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.at;
        let bytes = self.body.as_bytes();
        if start > bytes.len() {
            return None;
        }
        let mut tabs = [start; 2];
        let mut n = 0;
        let mut end = start;
        while end < bytes.len() {
            match bytes[end] {
                b'\n' => break,
                b'\t' => {
                    if n < 2 {
                        tabs[n] = end;
                    }
                    n += 1;
                }
                _ => {}
            }
            end += 1;
        }
        self.at = if end < bytes.len() { end + 1 } else { usize::MAX };
        // Tabs and newlines are ASCII: these are character boundaries.
        let line = &self.body[start..end];
        Some(if n == 2 {
            Ok((&self.body[start..tabs[0]], &self.body[tabs[0] + 1..tabs[1]], &self.body[tabs[1] + 1..end]))
        } else {
            Err(line)
        })
    }
}

impl Change {
    /// This change as a version-1 gateway understands it (`indicators_add_lines`
    /// becomes `indicators_add`).
    pub fn to_v1(&self) -> Result<Change, UpdateError> {
        Ok(match self {
            Change::IndicatorsAddLines { lines } => {
                Change::IndicatorsAdd { indicators: IndicatorLines(lines.clone()).to_wire()? }
            }
            other => other.clone(),
        })
    }
}

/// Checks a feed name.
pub fn check_feed_name(feed: &str) -> Result<(), UpdateError> {
    if feed.is_empty()
        || feed.len() > MAX_FEED_LEN
        || !feed.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(bad(format!(
            "feed name {feed:?}: use 1 to {MAX_FEED_LEN} letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// Parses and compiles a policy text.
pub fn check_policy(text: &str) -> Result<(Policy, CompiledPolicy), UpdateError> {
    let policy = Policy::parse(text, Path::new("central policy")).map_err(|e| bad(e.to_string()))?;
    let compiled = policy.compile().map_err(|e| bad(e.to_string()))?;
    Ok((policy, compiled))
}

/// Parses an exclusion list.
pub fn check_exclusions(list: &[String]) -> Result<Vec<ThreatExclusion>, UpdateError> {
    list.iter()
        .map(|e| {
            if e.len() > MAX_VALUE_LEN {
                return Err(bad(format!("threat exclusion of {} bytes: keep it under {MAX_VALUE_LEN}", e.len())));
            }
            e.parse::<ThreatExclusion>().map_err(|err| bad(err.to_string()))
        })
        .collect()
}

/// Checks feed settings' feed names.
pub fn check_feed_settings(s: &ThreatFeedSettings) -> Result<(), UpdateError> {
    s.feeds.keys().try_for_each(|f| check_feed_name(f))
}

/// Parses a fingerprint in hex.
pub fn parse_fingerprint(hex: &str) -> Result<CertFingerprint, UpdateError> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return Err(bad(format!("certificate fingerprint {hex:?}: give 64 hex digits (SHA-256 of the DER)")));
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok().and_then(|s| u8::from_str_radix(s, 16).ok());
        out[i] = s.ok_or_else(|| bad(format!("certificate fingerprint {hex:?} is not hex: give 64 hex digits")))?;
    }
    Ok(CertFingerprint(out))
}

/// Parses an endpoint certificate and checks its fingerprint; returns the DER.
pub fn check_cert(c: &WireEndpointCert) -> Result<(CertFingerprint, Vec<u8>), UpdateError> {
    let claimed = parse_fingerprint(&c.fingerprint)?;
    let der = CertificateDer::from_pem_slice(c.pem.as_bytes()).map_err(|e| {
        bad(format!("endpoint certificate `{}`: not a PEM certificate ({e}): send the certificate Central issued", c.name))
    })?;
    x509_parser::parse_x509_certificate(&der).map_err(|e| {
        bad(format!("endpoint certificate `{}`: does not parse ({e}): send the certificate Central issued", c.name))
    })?;
    let actual = CertFingerprint::of(&der);
    if actual != claimed {
        return Err(bad(format!(
            "endpoint certificate `{}`: fingerprint {} does not match its certificate ({actual}): resend it",
            c.name, c.fingerprint
        )));
    }
    Ok((actual, der.to_vec()))
}

/// One indicator as the gateway keeps it: parsed once, never re-parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldIndicator {
    /// What it matches.
    pub kind: IndicatorKind,
    /// Its feed (interned).
    pub feed: Arc<str>,
}

/// A pinned certificate as the gateway keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCert {
    /// The endpoint's name.
    pub name: String,
    /// The PEM text (persisted as received).
    pub pem: String,
    /// The DER.
    pub der: Vec<u8>,
}

/// The compiled indicators in force and what it takes to change them
/// without rebuilding the base: the overlay last published (the base set,
/// built from the whole model, and a layer per update since, each naming
/// the audit IDs it touched: see `indicator_overlay`), and a count of the
/// changes to indicators (each added or removed audit ID counts one),
/// since the base was built too. Nothing is looked up in the model to
/// publish a change: a layer supersedes whatever its audit IDs were.
#[derive(Debug, Clone, Default)]
pub struct IndicatorBook {
    overlay: IndicatorOverlay,
    /// Changes to indicators so far.
    seq: u64,
    /// Changes to indicators the base holds.
    base_seq: u64,
    /// Bumped by every change.
    generation: u64,
    /// Set when a compaction starts ([`IndicatorBook::mark`]): the generation
    /// and changes it folds, so that it can be installed under the layers
    /// of the changes that came in meanwhile.
    mark: Option<CompactionMark>,
}

#[derive(Debug, Clone, Default)]
struct CompactionMark {
    generation: u64,
    seq: u64,
    /// The layers the compaction folds (the oldest; no update merges into them).
    layers: usize,
}

/// The audit IDs `changes` touch, in order, with the indicator each has after.
fn touches(changes: &[ValidChange]) -> impl Iterator<Item = (&str, Option<&HeldIndicator>)> {
    changes.iter().flat_map(|c| -> Box<dyn Iterator<Item = (&str, Option<&HeldIndicator>)> + '_> {
        match c {
            ValidChange::Add(batch) => Box::new(batch.iter().map(|(a, h)| (&**a, Some(h)))),
            ValidChange::Remove(ids) => Box::new(ids.iter().map(|a| (a.as_str(), None))),
            _ => Box::new(std::iter::empty()),
        }
    })
}

impl IndicatorBook {
    /// A freshly built whole set, holding every change up to `seq`.
    pub fn from_set(set: IndicatorSet, generation: u64, seq: u64) -> Self {
        IndicatorBook { overlay: IndicatorOverlay::from_set(set), seq, base_seq: seq, generation: generation + 1, mark: None }
    }

    /// Notes that a compaction of this book's overlay starts now; returns
    /// its generation (give it to [`SyncedState::install_compacted`]).
    pub fn mark(&mut self) -> u64 {
        self.mark = Some(CompactionMark {
            generation: self.generation,
            seq: self.seq,
            layers: self.overlay.layers().len(),
        });
        self.generation
    }

    /// Whether a compaction is under way ([`IndicatorBook::mark`]) and the
    /// updates since have filled the layers it leaves them: the next one
    /// merges two on its way to the workers, a cost that grows for as long
    /// as the compaction has not landed.
    pub fn compaction_outrun(&self) -> bool {
        self.mark.as_ref().is_some_and(|m| self.overlay.merges_next_push(m.layers))
    }

    /// What workers should see.
    pub fn overlay(&self) -> &IndicatorOverlay {
        &self.overlay
    }

    /// Changes to indicators since the base was built.
    pub fn touched(&self) -> usize {
        usize::try_from(self.seq - self.base_seq).unwrap_or(usize::MAX)
    }

    /// Changes since this book was made.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What Central shared, as the gateway holds it, at [`SyncedState::revision`].
#[derive(Debug, Clone, Default)]
pub struct SyncedState {
    /// The revision this state is at (0: nothing from Central yet).
    pub revision: u64,
    /// The policy text, if Central sent one.
    pub policy: Option<String>,
    /// MDR threat feed settings.
    pub feed_settings: ThreatFeedSettings,
    /// Threat exclusions as sent.
    pub exclusions: Vec<String>,
    /// Indicators by audit ID.
    pub indicators: HeldMap<HeldIndicator>,
    /// Endpoint certificates by fingerprint.
    pub certs: BTreeMap<CertFingerprint, HeldCert>,
    /// Indicators from third-party feeds the gateway polls itself, by feed name.
    pub third_party: BTreeMap<String, Vec<(IndicatorKind, String)>>,
    /// The compiled indicators (see [`SyncedState::rebuild`]).
    pub book: IndicatorBook,
    /// Heartbeat settings, if Central gave some.
    pub heartbeat: Option<HeartbeatSettings>,
}

/// What changes when an update is committed, compiled and ready to publish.
#[derive(Debug)]
pub struct Prepared {
    /// The revision after the update.
    pub revision: u64,
    /// `Some`: the policy to publish (`Some(None)`: Central has no policy,
    /// the gateway's before-first-policy choice applies); `None`: unchanged.
    pub policy: Option<Option<CompiledPolicy>>,
    /// New indicators to publish (indicators, settings or exclusions changed).
    pub indicators: Option<IndicatorOverlay>,
    /// Certificates to pin.
    pub certs_added: Vec<(CertFingerprint, HeldCert)>,
    /// Certificates to unpin.
    pub certs_removed: Vec<CertFingerprint>,
    /// Heartbeat settings to apply (changed by this update).
    pub heartbeat: Option<HeartbeatSettings>,
    /// The model after the update (moved into place by [`SyncedState::commit`]).
    next: Pending,
}

#[derive(Debug)]
enum Pending {
    /// Replace everything.
    Whole(Box<SyncedState>),
    /// Apply these changes to the current model (already validated), and,
    /// when the indicators changed, make this overlay the book's (recording
    /// the audit IDs the changes touch).
    Changes(Vec<ValidChange>, Option<IndicatorOverlay>),
}

#[derive(Debug)]
enum ValidChange {
    Add(Vec<(Box<str>, HeldIndicator)>),
    Remove(Vec<String>),
    Policy(String),
    Settings(ThreatFeedSettings),
    Exclusions(Vec<String>),
    CertAdd(CertFingerprint, HeldCert),
    CertRemove(CertFingerprint),
    Heartbeat(HeartbeatSettings),
}

/// Interns feed names so that a million indicators share a handful of
/// strings, checking each name the first time it is seen.
#[derive(Default)]
struct FeedNames {
    all: HashMap<String, Arc<str>>,
    /// The name asked for last (a batch is mostly one feed's).
    last: Option<Arc<str>>,
}
impl FeedNames {
    fn get(&mut self, name: &str) -> Result<Arc<str>, UpdateError> {
        if let Some(a) = self.last.as_ref().filter(|a| ***a == *name) {
            return Ok(a.clone());
        }
        let a = match self.all.get(name) {
            Some(a) => a.clone(),
            None => {
                check_feed_name(name)?;
                let a: Arc<str> = Arc::from(name);
                self.all.insert(name.to_owned(), a.clone());
                a
            }
        };
        self.last = Some(a.clone());
        Ok(a)
    }

    /// Checks an indicator's value and audit ID, and its feed name.
    fn check(&mut self, value: &str, audit_id: &str, feed: &str) -> Result<HeldIndicator, UpdateError> {
        let feed = self.get(feed)?;
        Ok(HeldIndicator { kind: check_value_and_audit_id(value, audit_id)?, feed })
    }
}

impl SyncedState {
    /// The state of a snapshot, validated whole.
    pub fn from_snapshot(revision: u64, snap: &Snapshot, limit: usize) -> Result<SyncedState, UpdateError> {
        if snap.indicators.len() > limit {
            return Err(bad(format!(
                "snapshot holds {} indicators, over this gateway's limit of {limit}: raise [central] max_indicators or trim the feeds",
                snap.indicators.len()
            )));
        }
        if let Some(p) = &snap.policy {
            check_policy(p)?;
        }
        check_feed_settings(&snap.feed_settings)?;
        check_exclusions(&snap.exclusions)?;
        let mut names = FeedNames::default();
        let mut indicators = HeldMap::with_capacity(snap.indicators.len());
        for i in &snap.indicators {
            indicators.insert(Box::from(i.audit_id.as_str()), names.check(&i.value, &i.audit_id, &i.feed)?);
        }
        let mut certs = BTreeMap::new();
        for c in &snap.endpoint_certs {
            let (fp, der) = check_cert(c)?;
            certs.insert(fp, HeldCert { name: c.name.clone(), pem: c.pem.clone(), der });
        }
        if let Some(h) = &snap.heartbeat {
            check_heartbeat_settings(h)?;
        }
        Ok(SyncedState {
            revision,
            policy: snap.policy.clone(),
            feed_settings: snap.feed_settings.clone(),
            exclusions: snap.exclusions.clone(),
            indicators,
            certs,
            third_party: BTreeMap::new(),
            book: IndicatorBook::default(),
            heartbeat: snap.heartbeat.clone(),
        })
    }

    /// The snapshot of this state (what is persisted), indicators sorted by audit ID.
    pub fn to_snapshot(&self) -> Snapshot {
        let mut snap = self.to_snapshot_unless(|| false).unwrap_or_default();
        snap.indicators.sort_by(|a, b| a.audit_id.cmp(&b.audit_id));
        snap
    }

    /// The snapshot of this state, indicators in no particular order; gives
    /// up as soon as `stop` says so (checked every 4096 indicators), so that
    /// whoever holds this state's lock for it can yield to an update. Given
    /// up, it returns what it had copied: for the caller to free after
    /// letting go of the lock (freeing a million strings takes ~0.1 s).
    pub fn to_snapshot_unless(&self, stop: impl Fn() -> bool) -> Result<Snapshot, Vec<WireIndicator>> {
        let mut indicators: Vec<WireIndicator> = Vec::with_capacity(self.indicators.len());
        for (n, (a, h)) in self.indicators.iter().enumerate() {
            if n % 4096 == 0 && stop() {
                return Err(indicators);
            }
            indicators.push(WireIndicator { value: h.kind.to_string(), audit_id: a.to_string(), feed: h.feed.to_string() });
        }
        Ok(Snapshot {
            policy: self.policy.clone(),
            feed_settings: self.feed_settings.clone(),
            exclusions: self.exclusions.clone(),
            indicators,
            endpoint_certs: self
                .certs
                .iter()
                .map(|(fp, c)| WireEndpointCert { name: c.name.clone(), fingerprint: fp.to_string(), pem: c.pem.clone() })
                .collect(),
            heartbeat: self.heartbeat.clone(),
        })
    }

    /// Indicators in force: Central's (one per audit ID) and third-party feeds'.
    pub fn indicator_count(&self) -> usize {
        self.indicators.len() + self.third_party.values().map(Vec::len).sum::<usize>()
    }

    /// Compiles the policy in force (`None`: no policy from Central yet).
    pub fn compiled_policy(&self) -> Result<Option<(Policy, CompiledPolicy)>, UpdateError> {
        self.policy.as_deref().map(check_policy).transpose()
    }

    /// Builds the indicator set of this state (Central's and third-party indicators).
    pub fn build_indicators(&self) -> Result<IndicatorSet, UpdateError> {
        build_set(
            self.indicators.iter().map(|(a, h)| (&h.kind, &**a, &*h.feed)),
            &self.third_party,
            &self.feed_settings,
            &self.exclusions,
        )
    }

    /// Builds the whole indicator set anew and makes it the base (no delta).
    pub fn rebuild(&mut self) -> Result<&IndicatorOverlay, UpdateError> {
        let set = self.build_indicators()?;
        self.book = IndicatorBook::from_set(set, self.book.generation, self.book.seq);
        Ok(&self.book.overlay)
    }

    /// Makes `built` the new base: `built` is `book.overlay().compacted()`
    /// of the book [`IndicatorBook::mark`]ed at `generation`. The layers of
    /// the changes that came in since stay as they are, on top of it:
    /// nothing is recompiled, and they supersede what they replaced or
    /// removed of it as they did in the levels it folds. `None` when the
    /// book was replaced since (a snapshot or a rebuild): `built` is stale.
    /// Returns the overlay to publish.
    pub fn install_compacted(&mut self, generation: u64, built: IndicatorSet) -> Option<&IndicatorOverlay> {
        if self.book.generation == generation {
            let mut book = IndicatorBook::from_set(built, generation, self.book.seq);
            book.generation = self.book.generation + 1;
            self.book = book;
            return Some(&self.book.overlay);
        }
        let mark = self.book.mark.take().filter(|m| m.generation == generation)?;
        self.book.overlay = self.book.overlay.rebase(built, mark.layers);
        self.book.base_seq = mark.seq;
        self.book.generation += 1;
        Some(&self.book.overlay)
    }

    /// Makes `merged` the one layer over the base in place of the layers
    /// it folds: `merged` is `book.overlay().layers_compacted()` of the
    /// book [`IndicatorBook::mark`]ed at `generation`. The base stays; the
    /// layers of the changes that came in since stay above `merged`,
    /// superseding what they replaced or removed of it.
    /// `None` when the book was replaced since (a snapshot or a rebuild)
    /// or a full compaction was marked after it: `merged` is stale.
    /// Returns the overlay to publish.
    pub fn install_folded_layers(&mut self, generation: u64, merged: FoldedLayers) -> Option<&IndicatorOverlay> {
        let mark = self.book.mark.take().filter(|m| m.generation == generation)?;
        self.book.overlay = self.book.overlay.fold_layers(merged, mark.layers);
        self.book.generation += 1;
        Some(&self.book.overlay)
    }

    /// The overlay after `changes` (validated, in order) touched the
    /// indicators, with new `settings` or `exclusions` if given: the
    /// current one with one more layer holding only what `changes` leave in
    /// force (compiled here) and the audit IDs they touch (which supersede
    /// whatever those were below). Nothing is looked up in the model but
    /// when the update may take the indicators over `limit`. Copies nothing
    /// of the book: [`SyncedState::commit`] moves the changes into the model.
    fn incremental(
        &self,
        changes: &[ValidChange],
        settings: Option<&ThreatFeedSettings>,
        exclusions: Option<&[String]>,
        limit: usize,
    ) -> Result<IndicatorOverlay, UpdateError> {
        let t0 = std::time::Instant::now();
        let book = &self.book;
        let mut o = book.overlay.clone();
        if let Some(s) = settings {
            o = o.with_settings(s);
        }
        if let Some(x) = exclusions {
            o = o.with_exclusion_set(Arc::new(ExclusionSet::compile(&check_exclusions(x)?).map_err(|e| bad(e.to_string()))?));
        }
        let touches: Vec<(&str, Option<&HeldIndicator>)> = touches(changes).collect();
        if touches.is_empty() {
            return Ok(o);
        }
        // Each audit ID once, and where it is touched last in this update:
        // that touch says what is in force after it.
        let bytes = touches.iter().map(|(a, _)| a.len()).sum();
        let mut touched = TouchedIds::with_capacity(touches.len(), bytes);
        let mut last_at: Vec<usize> = Vec::with_capacity(touches.len());
        for (i, &(audit, _)) in touches.iter().enumerate() {
            match touched.insert(audit).map_err(|e| bad(e.to_string()))? {
                (_, true) => last_at.push(i),
                (n, false) => last_at[n] = i,
            }
        }
        let mut last = vec![false; touches.len()];
        for &i in &last_at {
            last[i] = true;
        }
        drop(last_at);
        let t_touched = t0.elapsed();
        // The last touches, in order: (audit ID, in force after).
        let lasts = || touches.iter().zip(&last).filter(|(_, &l)| l).map(|(&t, _)| t);
        // At most every added audit ID is new; only when that would cross
        // the limit are they looked up, to count exactly.
        let added = lasts().filter(|(_, now)| now.is_some()).count();
        if self.indicators.len() + added > limit {
            let keys: Vec<&str> = lasts().map(|(a, _)| a).collect();
            let olds = self.indicators.get_batch(&keys);
            let (mut new, mut gone) = (0, 0);
            for ((_, now), old) in lasts().zip(&olds) {
                new += usize::from(now.is_some() && old.is_none());
                gone += usize::from(now.is_none() && old.is_some());
            }
            let count = self.indicators.len() + new - gone;
            if count > limit {
                return Err(bad(format!(
                    "update would hold {count} indicators, over this gateway's limit of {limit}: raise [central] max_indicators or trim the feeds"
                )));
            }
        }
        let mut b = IndicatorSetBuilder::with_capacity(added);
        for (audit, now) in lasts() {
            if let Some(h) = now {
                b.add_parts(&h.kind, audit, &h.feed).map_err(|e| bad(e.to_string()))?;
            }
        }
        let set = b.build(o.settings());
        let t_compiled = t0.elapsed();
        let frozen = book.mark.as_ref().map_or(0, |m| m.layers);
        let distinct = touched.len();
        let next = o.push_layer(set, touched, frozen).map_err(|e| bad(e.to_string()))?;
        tracing::debug!(
            "indicator layer: {distinct} touched, listed at {t_touched:?}, compiled at {t_compiled:?}, pushed at {:?} ({} layers, top {} records)",
            t0.elapsed(),
            next.layers().len(),
            next.layers().last().map_or(0, |l| l.set().len())
        );
        Ok(next)
    }

    /// Validates and compiles an answer from Central against this state,
    /// changing nothing. `limit` caps the indicators held.
    pub fn prepare(&self, answer: &SyncAnswer, limit: usize) -> Result<Prepared, UpdateError> {
        self.prepare_with(answer, limit, true)
    }

    /// Validates a journaled answer of changes and applies it to the model
    /// without compiling the indicators (call [`SyncedState::rebuild`] after
    /// the last one). A snapshot is not a journal record: refused.
    pub fn replay(&mut self, answer: &SyncAnswer, limit: usize) -> Result<(), UpdateError> {
        if answer.snapshot.is_some() {
            return Err(bad("a journal record holds a snapshot"));
        }
        let prepared = self.prepare_with(answer, limit, false)?;
        self.commit(prepared);
        Ok(())
    }

    fn prepare_with<'a>(&self, answer: &'a SyncAnswer, limit: usize, compile: bool) -> Result<Prepared, UpdateError> {
        if let Some(snap) = &answer.snapshot {
            let mut next = Self::from_snapshot(answer.revision, snap, limit)?;
            next.third_party = self.third_party.clone();
            let policy = next.compiled_policy()?.map(|(_, c)| c);
            next.book = IndicatorBook::from_set(next.build_indicators()?, self.book.generation, self.book.seq);
            let indicators = next.book.overlay.clone();
            let certs_added: Vec<_> = next.certs.iter().filter(|(fp, _)| !self.certs.contains_key(fp)).map(|(f, c)| (*f, c.clone())).collect();
            let certs_removed: Vec<_> = self.certs.keys().filter(|fp| !next.certs.contains_key(fp)).copied().collect();
            return Ok(Prepared {
                revision: answer.revision,
                policy: Some(policy),
                indicators: Some(indicators),
                certs_added,
                certs_removed,
                heartbeat: next.heartbeat.clone().filter(|h| Some(h) != self.heartbeat.as_ref()),
                next: Pending::Whole(Box::new(next)),
            });
        }
        let t_validate = std::time::Instant::now();
        let changes = answer.changes.as_deref().unwrap_or_default();
        let mut expect = self.revision;
        let mut valid = Vec::with_capacity(changes.len());
        let mut names = FeedNames::default();
        // What the indicator map will look like, without copying it.
        let mut policy_text: Option<&str> = None;
        let mut settings: Option<&ThreatFeedSettings> = None;
        let mut exclusions: Option<&[String]> = None;
        let mut indicators_touched = false;
        let mut certs_added = Vec::new();
        let mut certs_removed = Vec::new();
        let mut heartbeat = None;
        for e in changes {
            if e.revision != expect + 1 {
                return Err(UpdateError::Gap { have: expect, next: e.revision });
            }
            expect = e.revision;
            let at = |err: UpdateError| match err {
                UpdateError::Invalid(m) => bad(format!("revision {}: {m}", e.revision)),
                other => other,
            };
            let mut add = |value: &str, audit: &'a str, feed: &str, batch: &mut Vec<(Box<str>, HeldIndicator)>| {
                batch.push((Box::from(audit), names.check(value, audit, feed).map_err(at)?));
                Ok::<_, UpdateError>(())
            };
            match &e.change {
                Change::IndicatorsAdd { indicators } => {
                    let mut batch = Vec::with_capacity(indicators.len());
                    for i in indicators {
                        add(&i.value, &i.audit_id, &i.feed, &mut batch)?;
                    }
                    indicators_touched = true;
                    valid.push(ValidChange::Add(batch));
                }
                Change::IndicatorsAddLines { lines } => {
                    let mut batch = Vec::with_capacity(lines.len() / 32);
                    for l in IndicatorLines::split(lines) {
                        let (v, a, f) = l.map_err(at)?;
                        add(v, a, f, &mut batch)?;
                    }
                    indicators_touched = true;
                    valid.push(ValidChange::Add(batch));
                }
                Change::IndicatorsRemove { audit_ids } => {
                    indicators_touched = true;
                    valid.push(ValidChange::Remove(audit_ids.clone()));
                }
                Change::PolicySet { policy } => {
                    check_policy(policy).map_err(at)?;
                    policy_text = Some(policy);
                    valid.push(ValidChange::Policy(policy.clone()));
                }
                Change::FeedSettingsSet { settings: s } => {
                    check_feed_settings(s).map_err(at)?;
                    settings = Some(s);
                    valid.push(ValidChange::Settings(s.clone()));
                }
                Change::ExclusionsSet { exclusions: x } => {
                    check_exclusions(x).map_err(at)?;
                    exclusions = Some(x);
                    valid.push(ValidChange::Exclusions(x.clone()));
                }
                Change::EndpointCertAdd(c) => {
                    let (fp, der) = check_cert(c).map_err(at)?;
                    let held = HeldCert { name: c.name.clone(), pem: c.pem.clone(), der };
                    certs_removed.retain(|f| *f != fp);
                    certs_added.push((fp, held.clone()));
                    valid.push(ValidChange::CertAdd(fp, held));
                }
                Change::EndpointCertRemove { fingerprint } => {
                    let fp = parse_fingerprint(fingerprint).map_err(at)?;
                    certs_added.retain(|(f, _)| *f != fp);
                    certs_removed.push(fp);
                    valid.push(ValidChange::CertRemove(fp));
                }
                Change::HeartbeatSet { settings: h } => {
                    check_heartbeat_settings(h).map_err(at)?;
                    heartbeat = Some(h.clone());
                    valid.push(ValidChange::Heartbeat(h.clone()));
                }
            }
        }
        if answer.revision != expect {
            return Err(UpdateError::Gap { have: expect, next: answer.revision });
        }
        tracing::debug!("sync answer validated in {:?}", t_validate.elapsed());
        let policy = policy_text.map(check_policy).transpose()?.map(|(_, c)| Some(c));
        let book = if compile && (indicators_touched || settings.is_some() || exclusions.is_some()) {
            Some(self.incremental(&valid, settings, exclusions, limit)?)
        } else {
            None
        };
        Ok(Prepared {
            revision: answer.revision,
            policy,
            indicators: book.clone(),
            certs_added,
            certs_removed,
            heartbeat,
            next: Pending::Changes(valid, book),
        })
    }

    /// Moves a prepared update into the model (cannot fail: it was validated).
    pub fn commit(&mut self, prepared: Prepared) -> Prepared {
        let Prepared { revision, policy, indicators, certs_added, certs_removed, heartbeat, next } = prepared;
        match next {
            Pending::Whole(s) => *self = *s,
            Pending::Changes(changes, book) => {
                if let Some(o) = book {
                    self.book.overlay = o;
                    self.book.generation += 1;
                }
                let book = &mut self.book;
                for c in changes {
                    match c {
                        ValidChange::Add(batch) => {
                            book.seq += batch.len() as u64;
                            self.indicators.insert_batch(batch);
                        }
                        ValidChange::Remove(ids) => {
                            for a in ids {
                                book.seq += 1;
                                self.indicators.remove(a.as_str());
                            }
                        }
                        ValidChange::Policy(p) => self.policy = Some(p),
                        ValidChange::Settings(s) => self.feed_settings = s,
                        ValidChange::Exclusions(x) => self.exclusions = x,
                        ValidChange::CertAdd(fp, c) => {
                            self.certs.insert(fp, c);
                        }
                        ValidChange::CertRemove(fp) => {
                            self.certs.remove(&fp);
                        }
                        ValidChange::Heartbeat(h) => self.heartbeat = Some(h),
                    }
                }
                // A doubling of the map under way advances by what this
                // update inserted (see `held_map`).
                self.indicators.settle();
                self.revision = revision;
            }
        }
        Prepared { revision, policy, indicators, certs_added, certs_removed, heartbeat, next: Pending::Changes(Vec::new(), None) }
    }
}

fn build_set<'a>(
    central: impl Iterator<Item = (&'a IndicatorKind, &'a str, &'a str)>,
    third_party: &BTreeMap<String, Vec<(IndicatorKind, String)>>,
    settings: &ThreatFeedSettings,
    exclusions: &[String],
) -> Result<IndicatorSet, UpdateError> {
    let (lower, _) = central.size_hint();
    let mut b = IndicatorSetBuilder::with_capacity(lower + third_party.values().map(Vec::len).sum::<usize>());
    for (kind, audit, feed) in central {
        b.add_parts(kind, audit, feed).map_err(|e| bad(e.to_string()))?;
    }
    // A third-party feed's audit IDs are not Central's: no change from
    // Central supersedes its indicators (see `indicator_overlay`).
    for (feed, list) in third_party {
        for (kind, audit) in list {
            b.add_fixed_parts(kind, audit, feed).map_err(|e| bad(e.to_string()))?;
        }
    }
    let ex = check_exclusions(exclusions)?;
    b.build(settings).with_exclusions(&ex).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbgw_shared::indicators::FeedAction;
    use proptest::prelude::*;

    /// `IndicatorLines::split` as `str::split` and `splitn` say it.
    fn split_by_std(text: &str) -> Vec<Result<(&str, &str, &str), String>> {
        let body = text.strip_suffix('\n');
        let mut out: Vec<_> = body
            .into_iter()
            .flat_map(|b| b.split('\n'))
            .map(|line| {
                let mut f = line.splitn(3, '\t');
                match (f.next(), f.next(), f.next()) {
                    (Some(v), Some(a), Some(feed)) if !feed.contains('\t') => Ok((v, a, feed)),
                    _ => Err(format!("{:?}", line.chars().take(80).collect::<String>())),
                }
            })
            .collect();
        if !text.is_empty() && body.is_none() {
            out.push(Err("unterminated".into()));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The hand-written split yields the same fields and the same
        /// malformed lines, in the same order, as the standard library's.
        #[test]
        fn lines_split_like_the_standard_library(text in "[a\t\né]{0,24}") {
            let ours: Vec<_> = IndicatorLines::split(&text)
                .map(|r| r.map_err(|e| {
                    let e = e.to_string();
                    if e.contains("do not end with a newline") { "unterminated".to_owned() } else { e.split(": ").nth(1).unwrap_or_default().split(" is not").next().unwrap_or_default().to_owned() }
                }))
                .collect();
            prop_assert_eq!(ours, split_by_std(&text));
        }
    }

    fn ind(v: &str, a: &str) -> WireIndicator {
        WireIndicator { value: v.into(), audit_id: a.into(), feed: "mdr".into() }
    }
    fn delta(from: u64, changes: Vec<Change>) -> SyncAnswer {
        let n = changes.len() as u64;
        SyncAnswer {
            revision: from + n,
            changes: Some(changes.into_iter().enumerate().map(|(i, change)| JournalEntry { revision: from + 1 + i as u64, change }).collect()),
            snapshot: None,
        }
    }

    #[test]
    fn changes_apply_in_order_and_build_the_set() {
        let mut s = SyncedState::default();
        let a = delta(0, vec![
            Change::IndicatorsAdd { indicators: vec![ind("203.0.113.9", "A1"), ind("evil.example", "A2")] },
            Change::IndicatorsRemove { audit_ids: vec!["A1".into()] },
            Change::FeedSettingsSet { settings: ThreatFeedSettings { action: FeedAction::LogOnly, ..Default::default() } },
        ]);
        let p = s.prepare(&a, 100).unwrap();
        let set = p.indicators.as_ref().unwrap();
        assert!(set.match_ip("203.0.113.9".parse().unwrap()).hit().is_none());
        assert!(set.match_domain(b"www.evil.example").hit().is_some());
        assert_eq!(set.settings().action, FeedAction::LogOnly);
        assert_eq!(s.revision, 0, "prepare changes nothing");
        s.commit(p);
        assert_eq!(s.revision, 3);
        assert_eq!(s.indicators.len(), 1);
        let again = s.build_indicators().unwrap();
        assert_eq!(again.len(), 1);
    }

    /// Updates applied incrementally (a base and layers superseding what
    /// they touch, compacted now and then) answer every lookup like the set
    /// rebuilt from the model; a third-party feed whose audit IDs are also
    /// Central's stays in force.
    #[test]
    fn incremental_updates_match_a_full_rebuild() {
        let mut s = SyncedState::default();
        // No value Central's changes use (no ties), audit IDs they do.
        s.third_party.insert("tp".into(), vec![("10.0.1.0/24".parse().unwrap(), "A3".into()), ("evil1.example".parse().unwrap(), "A7".into())]);
        s.rebuild().unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let value = |v: u64| match v % 4 {
            0 => format!("10.0.{}.{}", v % 3, v % 7),
            1 => format!("10.{}.0.0/16", v % 3),
            2 => format!("{}.evil{}.example", ["a", "b", "c"][(v % 3) as usize], v % 2),
            _ => format!("http://evil{}.example/p{}", v % 2, v % 3),
        };
        let queries_ip: Vec<std::net::IpAddr> = (0..3).flat_map(|a| (0..7).map(move |b| format!("10.0.{a}.{b}").parse().unwrap())).chain(["10.1.2.3".parse().unwrap()]).collect();
        let names = ["a.evil0.example", "x.b.evil1.example", "c.evil0.example", "evil1.example"];
        let urls = [("evil0.example", "/p1/x"), ("evil1.example", "/p2"), ("evil0.example", "/q")];
        let mut rev = 0;
        let mut most_held = 0;
        let mut most_layers = 0;
        let mut pending = None;
        let mut folded = 0;
        for round in 0..120 {
            let mut changes = Vec::new();
            let mut used = std::collections::HashSet::new();
            for _ in 0..1 + next(3) {
                if next(3) == 0 && !s.indicators.is_empty() {
                    // In a fixed order, so that the sequence is the same every run.
                    let mut keys: Vec<&Box<str>> = s.indicators.keys().collect();
                    keys.sort();
                    let ids: Vec<String> = keys.iter().take(1 + next(2) as usize).map(|k| k.to_string()).collect();
                    changes.push(Change::IndicatorsRemove { audit_ids: ids });
                } else {
                    // One live indicator per value at most (also within one
                    // answer), so that no two tie and the order of a rebuild
                    // (a hash map's) cannot matter.
                    let v = value(next(40));
                    if !used.insert(v.clone()) || s.indicators.values().any(|h| h.kind.to_string() == v) {
                        continue;
                    }
                    let feed = ["mdr", "f1", "f2"][next(3) as usize];
                    changes.push(Change::IndicatorsAdd {
                        indicators: vec![WireIndicator { value: v, audit_id: format!("A{}", next(30)), feed: feed.into() }],
                    });
                }
            }
            if round % 17 == 5 {
                let mut st = ThreatFeedSettings::default();
                st.feeds.insert("f1".into(), hbgw_shared::indicators::FeedSettings { enabled: next(2) == 0, action: FeedAction::LogOnly });
                changes.push(Change::FeedSettingsSet { settings: st });
            }
            if round % 23 == 7 {
                changes.push(Change::ExclusionsSet { exclusions: vec![format!("10.0.{}.0/24", next(3)), "c.evil0.example".into()] });
            }
            if changes.is_empty() {
                continue;
            }
            let a = delta(rev, changes);
            rev = a.revision;
            let p = s.prepare(&a, 1000).unwrap();
            s.commit(p);
            if round % 31 == 30 && pending.is_none() {
                let g = s.book.mark();
                let built = s.book.overlay().compacted().unwrap();
                assert!(s.install_compacted(g, built).is_some());
                assert_eq!(s.book.touched(), 0);
            }
            if round % 13 == 6 {
                // A compaction outrun by this update: installed under it.
                pending = Some((s.book.mark(), Ok(s.book.overlay().compacted().unwrap()), round));
            } else if round % 11 == 4 {
                // A fold of the layers alone, outrun by the next three
                // updates (which may touch an audit ID twice).
                pending = Some((s.book.mark(), Err(s.book.overlay().layers_compacted().unwrap()), round));
            } else if let Some((g, built, at)) = pending.take() {
                let base = s.book.overlay().base().len();
                match built {
                    Err(merged) if round < at + 4 => pending = Some((g, Err(merged), at)),
                    Ok(built) => assert!(s.install_compacted(g, built).is_some(), "round {round}"),
                    Err(merged) => {
                        assert!(s.install_folded_layers(g, merged).is_some(), "round {round}");
                        assert_eq!(s.book.overlay().base().len(), base, "round {round}: the base stays");
                        folded += 1;
                    }
                }
            }
            if round % 7 == 3 && pending.is_none() && !s.book.overlay().layers().is_empty() {
                let g = s.book.mark();
                let merged = s.book.overlay().layers_compacted().unwrap();
                assert!(s.install_folded_layers(g, merged).is_some());
                assert_eq!(s.book.overlay().layers().len(), 1, "round {round}: the layers folded into one");
                folded += 1;
            }
            most_held = most_held.max(s.indicators.len());
            let o = s.book.overlay().clone();
            most_layers = most_layers.max(o.layers().len());
            assert!(o.layers().len() <= hbgw_shared::indicator_overlay::MAX_LAYERS + hbgw_shared::indicator_overlay::ABOVE_FROZEN, "round {round}: {} layers", o.layers().len());
            let full = s.build_indicators().unwrap();
            let sum = |m: hbgw_shared::indicators::IndicatorMatch<'_>| match m {
                hbgw_shared::indicators::IndicatorMatch::NoMatch => None,
                hbgw_shared::indicators::IndicatorMatch::Hit(h) => Some((h.audit_id.to_owned(), h.action, false)),
                hbgw_shared::indicators::IndicatorMatch::Excluded(h) => Some((h.audit_id.to_owned(), h.action, true)),
            };
            assert_eq!(o.compacted().unwrap().len(), full.len(), "round {round}");
            assert_eq!(s.indicator_count(), full.len(), "round {round}");
            for q in &queries_ip {
                assert_eq!(sum(o.match_ip(*q)), sum(full.match_ip(*q)), "round {round}: {q}");
            }
            for n in names {
                assert_eq!(sum(o.match_domain(n.as_bytes())), sum(full.match_domain(n.as_bytes())), "round {round}: {n}");
            }
            for (h, pth) in urls {
                assert_eq!(sum(o.match_url(h.as_bytes(), pth.as_bytes())), sum(full.match_url(h.as_bytes(), pth.as_bytes())), "round {round}: {h}{pth}");
            }
        }
        assert!(most_held > 5, "the sequence exercised a populated state ({most_held} held at most)");
        assert!(most_layers >= hbgw_shared::indicator_overlay::MAX_LAYERS, "layers were merged ({most_layers} at most)");
        assert!(folded >= 10, "layers were folded ({folded} times)");
        // A compaction outrun by a snapshot is not installed.
        let g = s.book.mark();
        let built = s.book.overlay().compacted().unwrap();
        let snap = SyncAnswer { revision: rev + 1, changes: None, snapshot: Some(Snapshot::default()) };
        s.commit(s.prepare(&snap, 1000).unwrap());
        assert!(s.install_compacted(g, built).is_none());
    }

    /// A compaction is outrun once the updates since it started fill the
    /// layers it leaves them (the next one merges), not before, and not
    /// after it lands.
    #[test]
    fn a_compaction_is_outrun_when_the_next_update_merges() {
        use hbgw_shared::indicator_overlay::{ABOVE_FROZEN, MAX_LAYERS};
        let mut s = SyncedState::default();
        let mut rev = 0;
        let mut push = |s: &mut SyncedState| {
            let a = delta(rev, vec![Change::IndicatorsAdd { indicators: vec![ind(&format!("10.0.0.{}", rev % 250), &format!("A{rev}"))] }]);
            rev = a.revision;
            s.commit(s.prepare(&a, 1000).unwrap());
        };
        for _ in 0..MAX_LAYERS {
            push(&mut s);
        }
        assert!(!s.book.compaction_outrun(), "no compaction under way");
        let g = s.book.mark();
        let built = s.book.overlay().compacted().unwrap();
        for k in 0..ABOVE_FROZEN {
            assert!(!s.book.compaction_outrun(), "{k} update(s) over the compaction's layers");
            push(&mut s);
        }
        assert!(s.book.compaction_outrun());
        push(&mut s);
        assert_eq!(s.book.overlay().layers().len(), MAX_LAYERS + ABOVE_FROZEN, "merged above the frozen");
        assert!(s.book.compaction_outrun());
        assert!(s.install_compacted(g, built).is_some());
        assert!(!s.book.compaction_outrun(), "landed");
    }

    #[test]
    fn one_bad_value_rejects_the_whole_update() {
        let mut s = SyncedState::default();
        s.commit(s.prepare(&delta(0, vec![Change::IndicatorsAdd { indicators: vec![ind("198.51.100.1", "K")] }]), 10).unwrap());
        let cases = vec![
            Change::IndicatorsAdd { indicators: vec![ind("203.0.113.9", "A1"), ind("not a domain!", "A2")] },
            Change::PolicySet { policy: "[[rule]]\nname = \"r\"\nsource_zones = [\"nowhere\"]\naction = \"accept\"\n".into() },
            Change::ExclusionsSet { exclusions: vec!["10.0.0.0/99".into()] },
            Change::EndpointCertRemove { fingerprint: "zz".into() },
            Change::IndicatorsAdd { indicators: vec![WireIndicator { value: "1.2.3.4".into(), audit_id: "x".into(), feed: "bad feed".into() }] },
        ];
        for c in cases {
            let a = delta(1, vec![Change::IndicatorsRemove { audit_ids: vec!["K".into()] }, c.clone()]);
            let err = s.prepare(&a, 10).unwrap_err().to_string();
            assert!(err.starts_with("revision 3:"), "{c:?}: {err}");
            assert!(!err.contains('\n'));
        }
        assert_eq!(s.revision, 1);
        assert_eq!(s.indicators.len(), 1);
        let too_many = delta(1, vec![Change::IndicatorsAdd { indicators: (0..20).map(|i| ind(&format!("10.0.0.{i}"), &format!("B{i}"))).collect() }]);
        assert!(s.prepare(&too_many, 10).unwrap_err().to_string().contains("limit of 10"));
    }

    /// The limit counts what an update leaves in force: replacing held
    /// audit IDs, or removing one for a new one, fits a full gateway; a
    /// new one more does not (an audit ID touched twice counts once).
    #[test]
    fn the_limit_counts_what_is_in_force_after() {
        let mut s = SyncedState::default();
        let held = (1..=3).map(|i| ind(&format!("10.0.0.{i}"), &format!("A{i}"))).collect();
        s.commit(s.prepare(&delta(0, vec![Change::IndicatorsAdd { indicators: held }]), 3).unwrap());
        let replace = delta(1, vec![Change::IndicatorsAdd { indicators: vec![ind("10.0.1.1", "A1"), ind("10.0.1.2", "A2"), ind("10.0.1.9", "A2")] }]);
        s.commit(s.prepare(&replace, 3).expect("replacing fits"));
        let swap = delta(2, vec![
            Change::IndicatorsRemove { audit_ids: vec!["A3".into()] },
            Change::IndicatorsAdd { indicators: vec![ind("10.0.2.1", "B1"), ind("10.0.2.2", "B1")] },
        ]);
        s.commit(s.prepare(&swap, 3).expect("one out, one in fits"));
        assert_eq!(s.indicators.len(), 3);
        let more = delta(4, vec![Change::IndicatorsAdd { indicators: vec![ind("10.0.1.1", "A1"), ind("10.0.3.1", "B2")] }]);
        let err = s.prepare(&more, 3).unwrap_err().to_string();
        assert!(err.contains("would hold 4 indicators, over this gateway's limit of 3"), "{err}");
        let o = s.book.overlay();
        assert!(o.match_ip("10.0.2.2".parse().unwrap()).drops() && !o.match_ip("10.0.2.1".parse().unwrap()).drops());
        assert!(o.match_ip("10.0.1.9".parse().unwrap()).drops() && !o.match_ip("10.0.0.3".parse().unwrap()).drops());
    }

    #[test]
    fn a_hole_in_the_revisions_is_a_gap() {
        let s = SyncedState { revision: 5, ..Default::default() };
        let mut a = delta(6, vec![Change::ExclusionsSet { exclusions: vec![] }]);
        assert!(matches!(s.prepare(&a, 10), Err(UpdateError::Gap { have: 5, next: 7 })));
        a.revision = 9;
        a.changes = Some(vec![]);
        assert!(matches!(s.prepare(&a, 10), Err(UpdateError::Gap { .. })));
    }

    #[test]
    fn snapshot_round_trips_and_replaces_certs() {
        let pki = crate::heartbeat::pki::TestPki::generate("gw", &["ep0".into(), "ep1".into()]).unwrap();
        let cert = |i: usize| WireEndpointCert {
            name: pki.endpoints[i].name.clone(),
            fingerprint: pki.endpoints[i].fingerprint.to_string(),
            pem: pki.endpoints[i].cert_pem.clone(),
        };
        let mut s = SyncedState::default();
        s.commit(s.prepare(&delta(0, vec![Change::EndpointCertAdd(cert(0))]), 10).unwrap());
        let snap = Snapshot {
            policy: Some("default_action = \"accept\"\n".into()),
            indicators: vec![ind("malware.example", "M1")],
            endpoint_certs: vec![cert(1)],
            ..Default::default()
        };
        let p = s.prepare(&SyncAnswer { revision: 40, changes: None, snapshot: Some(snap.clone()) }, 10).unwrap();
        assert_eq!(p.certs_added.len(), 1);
        assert_eq!(p.certs_removed, vec![pki.endpoints[0].fingerprint]);
        assert!(p.policy.is_some());
        s.commit(p);
        assert_eq!(s.revision, 40);
        assert_eq!(s.to_snapshot(), snap);
        let mut forged = cert(1);
        forged.fingerprint = pki.endpoints[0].fingerprint.to_string();
        assert!(check_cert(&forged).unwrap_err().to_string().contains("does not match"));
    }
}
