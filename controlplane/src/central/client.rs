//! The gateway's Central client: enrollment, the sync long-poll, applying
//! updates, last-known-good persistence, log and health upload, and
//! third-party feed polling.
//!
//! It owns the gateway's [`SyncedState`] and is the only writer of the
//! policy, indicators and endpoint certificates when `[central]` is
//! configured. Every update is validated and compiled aside (on a blocking
//! thread, so the control plane's sockets and heartbeats stay responsive)
//! and published whole through `GatewayState`'s setters and the
//! `PinnedCertStore`; a refused update changes nothing. It must never block
//! a worker, publish half an update, or stop enforcing the last-known-good
//! state because Central is unreachable.

use super::feeds::{parse_plain_list, parse_stix_bundle, ListType};
use super::http::{HttpError, HttpsClient};
use super::protocol::{
    EnrollRequest, GatewayIdentity, HeartbeatSettings, LogAck, Snapshot, SyncAnswer, SyncedState, UpdateError, WireIndicator,
};
use super::spool::LogSpool;
use super::state_journal::{JournalRecord, StateJournal};
use crate::heartbeat::{HeartbeatService, PinnedCertStore};
use hbgw_shared::config::{BeforeFirstSync, CentralSection, ThirdPartyFeedSection, ThirdPartyFormat};
use hbgw_shared::indicator_overlay::IndicatorOverlay;
use hbgw_shared::indicators::IndicatorKind;
use hbgw_shared::policy::{CompiledPolicy, Policy};
use hbgw_shared::state::GatewayState;
use hbgw_shared::stats::{CentralStatus, StatsReport};
use hyper::Method;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last-known-good state file in the state directory.
pub const STATE_FILE: &str = "central-state.json";
/// The identity file in the state directory.
pub const IDENTITY_FILE: &str = "identity.json";
const STATE_FORMAT: u32 = 1;

/// The state file. Central's part is either `snapshot` (written from the
/// state held) or `answer` (a snapshot answer from Central, written as it
/// was received: no copy of the state is made for it).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedState {
    format: u32,
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<Snapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<SyncAnswer>,
    #[serde(default)]
    third_party: BTreeMap<String, Vec<PersistedThirdParty>>,
}

impl PersistedState {
    /// Central's part of it, taken out.
    fn take_snapshot(&mut self) -> Result<Snapshot, String> {
        self.snapshot()?;
        Ok(match self.snapshot.take() {
            Some(s) => s,
            None => self.answer.take().and_then(|a| a.snapshot).unwrap_or_default(),
        })
    }

    /// Central's part of it.
    fn snapshot(&self) -> Result<&Snapshot, String> {
        match (&self.snapshot, &self.answer) {
            (Some(s), None) => Ok(s),
            // As when it was applied: a snapshot answer's changes, if any, are not looked at.
            (None, Some(SyncAnswer { revision, snapshot: Some(s), .. })) if *revision == self.revision => Ok(s),
            (None, Some(_)) => Err("its answer is not a snapshot at its revision".into()),
            _ => Err("it holds both or neither of a snapshot and an answer".into()),
        }
    }
}

/// The third-party feeds as the state file holds them.
fn persisted_third_party(third_party: &BTreeMap<String, Vec<(IndicatorKind, String)>>) -> BTreeMap<String, Vec<PersistedThirdParty>> {
    third_party
        .iter()
        .map(|(f, l)| (f.clone(), l.iter().map(|(k, a)| PersistedThirdParty { value: k.to_string(), audit_id: a.clone() }).collect()))
        .collect()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedThirdParty {
    value: String,
    audit_id: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory,
/// synced, then renamed over the old one.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    write_atomic_parts(path, &[bytes], private)
}

/// [`write_atomic`] of the concatenation of `parts` (not copied into one buffer first).
fn write_atomic_parts(path: &Path, parts: &[&[u8]], private: bool) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_synced(&tmp, parts, private)?;
    rename_synced(&tmp, path)
}

/// Writes the concatenation of `parts` to `path` and syncs it.
fn write_synced(path: &Path, parts: &[&[u8]], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(if private { 0o600 } else { 0o644 }).open(path)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()
}

/// Renames `from` over `to` and syncs their directory.
fn rename_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Loads the last-known-good state; `None` when there is none yet. A state
/// file or journal that cannot be read or is not a valid state is an error:
/// the gateway must not start with half a policy.
pub fn load_state(dir: &Path, limit: usize) -> Result<Option<SyncedState>, String> {
    load_state_and_journal(dir, limit).map(|(s, _)| s)
}

/// [`load_state`], and the journal open for the next appends.
fn load_state_and_journal(dir: &Path, limit: usize) -> Result<(Option<SyncedState>, StateJournal), String> {
    let mut state = read_state_file(dir, limit)?;
    let (journal, records) = StateJournal::open(dir)?;
    replay_journal(dir, &mut state, records, limit, &|| false)?;
    if let Some(s) = state.as_mut() {
        s.rebuild().map_err(|e| corrupt_state(dir, e.to_string()))?;
    }
    Ok((state, journal))
}

fn corrupt_state(dir: &Path, why: String) -> String {
    format!(
        "the last-known-good state {} is corrupt ({why}): restore it from a backup, or delete it to start with [central] before_first_sync and resync from Central",
        dir.join(STATE_FILE).display()
    )
}

/// The state file as written (nothing validated but its format); `None`
/// when there is none.
fn read_persisted(dir: &Path) -> Result<Option<PersistedState>, String> {
    let path = dir.join(STATE_FILE);
    let corrupt = |why: String| corrupt_state(dir, why);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let p: PersistedState = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
            if p.format != STATE_FORMAT {
                return Err(corrupt(format!("format {} is not {STATE_FORMAT}", p.format)));
            }
            Ok(Some(p))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the last-known-good state {}: {e}: fix its permissions", path.display())),
    }
}

/// The state file's state (indicators not compiled); `None` when there is none.
fn read_state_file(dir: &Path, limit: usize) -> Result<Option<SyncedState>, String> {
    let corrupt = |why: String| corrupt_state(dir, why);
    let Some(p) = read_persisted(dir)? else { return Ok(None) };
    let snapshot = p.snapshot().map_err(&corrupt)?;
    let mut s = SyncedState::from_snapshot(p.revision, snapshot, limit).map_err(|e| corrupt(e.to_string()))?;
    for (feed, list) in p.third_party {
        let mut v = Vec::with_capacity(list.len());
        for i in list {
            let kind: IndicatorKind =
                i.value.parse().map_err(|e: hbgw_shared::indicators::IndicatorError| corrupt(e.to_string()))?;
            v.push((kind, i.audit_id));
        }
        s.third_party.insert(feed, v);
    }
    Ok(Some(s))
}

/// Applies the journal's `records` (the answers applied after the state
/// file was written, in order) to `state` (indicators not compiled);
/// `false` when `stop` said so first.
fn replay_journal(
    dir: &Path,
    state: &mut Option<SyncedState>,
    records: Vec<JournalRecord>,
    limit: usize,
    stop: &dyn Fn() -> bool,
) -> Result<bool, String> {
    if records.is_empty() {
        return Ok(true);
    }
    let s = state.get_or_insert_with(SyncedState::default);
    if !replay_records(dir, s, records, limit, stop, |_| Ok(()))? {
        return Ok(false);
    }
    if s.indicators.len() > limit {
        return Err(over_limit(s.indicators.len(), limit));
    }
    Ok(true)
}

fn over_limit(held: usize, limit: usize) -> String {
    format!("the last-known-good state holds {held} indicators, over [central] max_indicators = {limit}: raise it")
}

fn journal_does_not_apply(dir: &Path, why: String) -> String {
    format!(
        "the last-known-good state journal {} does not apply ({why}): restore the state directory from a backup, or delete both central-state files to resync from Central",
        dir.join(super::state_journal::JOURNAL_FILE).display()
    )
}

/// Replays each of `records` that follows `s`'s revision onto it, after
/// `each` has seen (and may have taken from) its answer; `false` when
/// `stop` said so first.
fn replay_records(
    dir: &Path,
    s: &mut SyncedState,
    records: Vec<JournalRecord>,
    limit: usize,
    stop: &dyn Fn() -> bool,
    mut each: impl FnMut(&mut SyncAnswer) -> Result<(), String>,
) -> Result<bool, String> {
    let bad = |why: String| journal_does_not_apply(dir, why);
    for r in records {
        if stop() {
            return Ok(false);
        }
        if r.to <= s.revision {
            continue;
        }
        if r.since != s.revision {
            return Err(bad(format!("a record from revision {} follows revision {}", r.since, s.revision)));
        }
        let mut answer: SyncAnswer = serde_json::from_slice(&r.body).map_err(|e| bad(e.to_string()))?;
        each(&mut answer).map_err(bad)?;
        s.replay(&answer, limit).map_err(|e| bad(e.to_string()))?;
    }
    Ok(true)
}

/// Writes the state atomically: the state file, whole; the journal, which
/// it supersedes, emptied.
pub fn save_state(dir: &Path, s: &SyncedState) -> Result<(), String> {
    let Ok(p) = persisted(s, || false) else { return Ok(()) };
    write_state(dir, p)?;
    match std::fs::remove_file(dir.join(super::state_journal::JOURNAL_FILE)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot empty the state journal in {}: {e}", dir.display())),
    }
}

/// What is written of `s`; when `stop` said so before it was done, what
/// was copied (see [`SyncedState::to_snapshot_unless`]).
fn persisted(s: &SyncedState, stop: impl Fn() -> bool) -> Result<PersistedState, Vec<WireIndicator>> {
    Ok(PersistedState {
        format: STATE_FORMAT,
        revision: s.revision,
        snapshot: Some(s.to_snapshot_unless(stop)?),
        answer: None,
        third_party: persisted_third_party(&s.third_party),
    })
}

/// Writes a persisted state atomically, indicators sorted by audit ID;
/// returns its size.
fn write_state(dir: &Path, p: PersistedState) -> Result<u64, String> {
    write_state_parts(dir, &[&state_bytes(p)?])
}

/// The state file's bytes, indicators sorted by audit ID.
fn state_bytes(mut p: PersistedState) -> Result<Vec<u8>, String> {
    if let Some(s) = p.snapshot.as_mut() {
        s.indicators.sort_unstable_by(|a, b| a.audit_id.cmp(&b.audit_id));
    }
    serde_json::to_vec(&p).map_err(|e| e.to_string())
}

/// Writes the state file atomically from `parts`; returns its size.
fn write_state_parts(dir: &Path, parts: &[&[u8]]) -> Result<u64, String> {
    let path = dir.join(STATE_FILE);
    write_atomic_parts(&path, parts, false).map_err(|e| format!("cannot write the last-known-good state {}: {e}", path.display()))?;
    Ok(parts.iter().map(|p| p.len() as u64).sum())
}

/// A snapshot answer applied, to be written as the state file as it was
/// received (with the third-party feeds held when it was applied).
struct SnapshotRecord {
    revision: u64,
    /// The answer's bytes: JSON that parsed as a [`SyncAnswer`] holding a snapshot.
    answer: bytes::Bytes,
    third_party: BTreeMap<String, Vec<PersistedThirdParty>>,
}

/// Writes the state file of a snapshot answer: the answer's bytes spliced
/// into the file as they are (no copy of the state, no serialising of a
/// million indicators, not even a copy of the answer); returns the size
/// written.
fn write_snapshot_state(dir: &Path, r: &SnapshotRecord) -> Result<u64, String> {
    let third_party = serde_json::to_vec(&r.third_party).map_err(|e| e.to_string())?;
    let head = format!("{{\"format\":{STATE_FORMAT},\"revision\":{},\"answer\":", r.revision);
    write_state_parts(dir, &[head.as_bytes(), &r.answer, b",\"third_party\":", &third_party, b"}"])
}

/// The policy in force while Central has given none.
pub fn no_policy(choice: BeforeFirstSync) -> CompiledPolicy {
    let text = match choice {
        BeforeFirstSync::FailClosed => "default_action = \"drop\"\n",
        BeforeFirstSync::FailOpen => "default_action = \"accept\"\n",
    };
    Policy::parse(text, Path::new("before_first_sync"))
        .and_then(|p| p.compile())
        .unwrap_or_default()
}

/// What the gateway enforces at start, from the state directory, before
/// any worker runs.
pub struct CentralStart {
    /// The synced state (empty when nothing was persisted).
    pub synced: SyncedState,
    /// The policy source (for zones), when Central gave one.
    pub policy: Option<Policy>,
    /// The compiled policy to start with.
    pub compiled: CompiledPolicy,
    /// The indicators to start with.
    pub indicators: IndicatorOverlay,
    /// The identity, when enrolled.
    pub identity: Option<GatewayIdentity>,
    /// The log spool.
    pub spool: LogSpool,
    /// The state journal, open for the next appends.
    pub journal: StateJournal,
}

impl std::fmt::Debug for CentralStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CentralStart").field("revision", &self.synced.revision).finish()
    }
}

/// Reads the state directory: identity, last-known-good state, spool.
pub fn load_start(section: &CentralSection) -> Result<CentralStart, String> {
    let dir = &section.state_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create [central] state_dir {}: {e}: give a writable directory", dir.display()))?;
    let identity = match std::fs::read(dir.join(IDENTITY_FILE)) {
        Ok(b) => Some(serde_json::from_slice::<GatewayIdentity>(&b).map_err(|e| {
            format!(
                "{} is corrupt ({e}): delete it and enroll again with a new [central] enrollment_token",
                dir.join(IDENTITY_FILE).display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", dir.join(IDENTITY_FILE).display())),
    };
    let (synced, journal) = load_state_and_journal(dir, section.max_indicators)?;
    let synced = synced.unwrap_or_default();
    let (policy, compiled) = match synced.compiled_policy().map_err(|e| e.to_string())? {
        Some((p, c)) => (Some(p), c),
        None => (None, no_policy(section.before_first_sync)),
    };
    let indicators = synced.book.overlay().clone();
    let spool = LogSpool::open(dir, section.spool_max_events)?;
    Ok(CentralStart { synced, policy, compiled, indicators, identity, spool, journal })
}

/// Everything the client needs, handed over by the gateway at start.
pub struct CentralSetup {
    /// `[central]`.
    pub config: CentralSection,
    /// What was loaded at start.
    pub start: CentralStart,
    /// The heartbeat service's pinned certificates, when it runs.
    pub certs: Option<PinnedCertStore>,
    /// Shown in `hbgw stats`.
    pub status: Arc<Mutex<CentralStatus>>,
}

/// What goes into the health summary besides the client's own figures.
pub type HealthSource = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

struct Ctx {
    config: CentralSection,
    client: HttpsClient,
    identity: Mutex<Option<GatewayIdentity>>,
    synced: Mutex<SyncedState>,
    /// `synced`'s revision, read without its lock (the persist thread may
    /// hold that for a while, and the sync loop must not wait for it).
    revision: AtomicU64,
    state: Arc<GatewayState>,
    certs: Option<PinnedCertStore>,
    status: Arc<Mutex<CentralStatus>>,
    spool: Arc<Mutex<LogSpool>>,
    /// To the persist thread, in the order the changes were committed.
    persist: crossbeam_channel::Sender<Persist>,
    compacting: AtomicBool,
    /// The thread ID of the compaction under way while it runs lowered
    /// (0 once raised, or when none runs): see [`maybe_compact`].
    compaction_to_raise: AtomicI32,
    /// A [`settle_while_idle`] runs.
    settling: AtomicBool,
    /// An update waits for `synced`: the state writer and
    /// [`settle_while_idle`] let go of it.
    update_waiting: AtomicBool,
    /// The last refused update or feed, reported to Central in the health summary.
    rejections: Mutex<Rejections>,
    /// Wakes the health loop to report a refusal at once.
    health_now: tokio::sync::Notify,
    /// The heartbeat service Central's heartbeat settings go to, when it runs.
    heartbeat: Mutex<Option<Arc<HeartbeatService>>>,
}

/// Refusals, as reported to Central.
#[derive(Default)]
struct Rejections {
    update: Option<serde_json::Value>,
    feed: Option<serde_json::Value>,
}

/// What the persist thread is told, in commit order.
enum Persist {
    /// An answer of changes was applied: append it to the journal.
    Changes(JournalRecord),
    /// A snapshot answer was applied: write it as the state file.
    Snapshot(SnapshotRecord),
    /// The state changed other than by an answer of changes (a snapshot, a
    /// third-party feed): write it whole.
    Whole,
    /// Write what is pending, then end.
    Stop,
}

/// The running client (its tasks run on the control plane's runtime).
pub struct CentralClient {
    ctx: Arc<Ctx>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    persist: Option<std::thread::JoinHandle<()>>,
}

/// Exponential backoff: 0.5 s doubling to 30 s.
struct Backoff(Duration);
impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(500))
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
        d
    }
    fn reset(&mut self) {
        *self = Self::new();
    }
}

impl CentralClient {
    /// Starts the client's tasks on the current tokio runtime. Fails only
    /// on a configuration that cannot work (URL, CA file).
    pub fn start(setup: CentralSetup, state: Arc<GatewayState>, health: HealthSource) -> Result<Self, String> {
        let CentralSetup { config, start, certs, status } = setup;
        let (persist_tx, persist_rx) = crossbeam_channel::unbounded();
        let (journal, held) = (start.journal, start.synced.revision);
        let ca = std::fs::read(&config.ca)
            .map_err(|e| format!("cannot read [central] ca {}: {e}: copy ca.pem from Central's data directory", config.ca.display()))?;
        let client = HttpsClient::new(&config.url, &ca).map_err(|e| e.to_string())?;
        {
            let mut s = lock(&status);
            s.url = config.url.clone();
            s.state = "starting".into();
            s.revision = start.synced.revision;
            s.gateway_id = start.identity.as_ref().map(|i| i.gateway_id.clone());
            s.policy_from_central = start.synced.policy.is_some();
            s.before_first_sync = match config.before_first_sync {
                BeforeFirstSync::FailClosed => "fail_closed".into(),
                BeforeFirstSync::FailOpen => "fail_open".into(),
            };
            s.indicators = start.synced.indicator_count() as u64;
            s.endpoint_certs = start.synced.certs.len() as u64;
            s.events_spooled = start.spool.len() as u64;
        }
        if start.synced.policy.is_none() && config.before_first_sync == BeforeFirstSync::FailOpen {
            tracing::warn!("no policy from Central yet: forwarding traffic (before_first_sync = fail_open); each such frame is counted in `hbgw stats`");
        }
        let ctx = Arc::new(Ctx {
            client,
            identity: Mutex::new(start.identity),
            synced: Mutex::new(start.synced),
            revision: AtomicU64::new(held),
            state,
            certs,
            status,
            spool: Arc::new(Mutex::new(start.spool)),
            persist: persist_tx,
            compacting: AtomicBool::new(false),
            compaction_to_raise: AtomicI32::new(0),
            settling: AtomicBool::new(false),
            update_waiting: AtomicBool::new(false),
            rejections: Mutex::new(Rejections::default()),
            health_now: tokio::sync::Notify::new(),
            heartbeat: Mutex::new(None),
            config,
        });
        let persist = {
            let c = ctx.clone();
            std::thread::Builder::new()
                .name("hbgw-persist".into())
                .spawn(move || persist_thread(c, persist_rx, journal, held))
                .map_err(|e| format!("cannot start the state persist thread: {e}"))?
        };
        let mut tasks = vec![
            tokio::spawn(sync_loop(ctx.clone())),
            tokio::spawn(upload_loop(ctx.clone())),
            tokio::spawn(health_loop(ctx.clone(), health)),
        ];
        for f in ctx.config.feeds.clone() {
            tasks.push(tokio::spawn(feed_loop(ctx.clone(), f)));
        }
        Ok(Self { ctx, tasks, persist: Some(persist) })
    }

    /// The spool the event log writes into.
    pub fn spool(&self) -> Arc<Mutex<LogSpool>> {
        self.ctx.spool.clone()
    }

    /// Gives Central's heartbeat settings to the running heartbeat service:
    /// those of the last-known-good state now, each change as it comes.
    pub fn attach_heartbeat(&self, service: Arc<HeartbeatService>) {
        *lock(&self.ctx.heartbeat) = Some(service);
        let current = lock(&self.ctx.synced).heartbeat.clone();
        if let Some(h) = current {
            self.ctx.apply_heartbeat(&h);
        }
    }

    /// Called every stats interval: frees the indicator sets workers let
    /// go of since, and counts fail-open frames.
    pub fn on_tick(&self, report: &StatsReport) {
        crate::background::free_retired(&self.ctx.state);
        if self.ctx.config.before_first_sync != BeforeFirstSync::FailOpen {
            return;
        }
        let mut s = lock(&self.ctx.status);
        if s.policy_from_central {
            return;
        }
        let forwarded: u64 = report.ports.iter().map(|p| p.interval.tx).sum();
        if forwarded > 0 {
            s.fail_open_frames += forwarded;
            tracing::warn!(
                "fail-open: {forwarded} frame(s) forwarded without a policy from Central in the last interval ({} in all)",
                s.fail_open_frames
            );
        }
    }

    /// Stops the tasks, writes what the state journal is owed, flushes the spool.
    pub fn finish(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.ctx.persist.send(Persist::Stop);
        if let Some(t) = self.persist.take() {
            let _ = t.join();
        }
        lock(&self.ctx.spool).flush();
    }
}

impl Ctx {
    fn set_status(&self, f: impl FnOnce(&mut CentralStatus)) {
        f(&mut lock(&self.status));
    }

    fn disconnected(&self, e: &HttpError) {
        tracing::warn!("Central: {e}; enforcing the last-known-good state");
        self.set_status(|s| {
            s.state = "disconnected".into();
            s.last_error = Some(e.to_string());
        });
    }

    async fn identity(&self) -> Result<GatewayIdentity, String> {
        if let Some(id) = lock(&self.identity).clone() {
            return Ok(id);
        }
        let Some(token) = self.config.enrollment_token.clone() else {
            self.set_status(|s| s.state = "not enrolled".into());
            return Err(format!(
                "not enrolled with Central and no [central] enrollment_token: create one with `hbgw-central token` and put it in the config (state dir {})",
                self.config.state_dir.display()
            ));
        };
        let body = serde_json::to_vec(&EnrollRequest { token, name: self.config.name.clone() }).map_err(|e| e.to_string())?;
        let (_, answer) = self
            .client
            .call(Method::POST, "/v1/enroll", None, Some(("application/json", body)), Duration::from_secs(15), 64 << 10)
            .await
            .map_err(|e| format!("enrollment failed: {e}"))?;
        let id: GatewayIdentity =
            serde_json::from_slice(&answer).map_err(|e| format!("enrollment: Central's answer is not an identity ({e})"))?;
        let path = self.config.state_dir.join(IDENTITY_FILE);
        write_atomic(&path, &serde_json::to_vec(&id).map_err(|e| e.to_string())?, true)
            .map_err(|e| format!("cannot store the gateway identity in {}: {e}", path.display()))?;
        tracing::info!(gateway_id = %id.gateway_id, "enrolled with Central");
        self.set_status(|s| s.gateway_id = Some(id.gateway_id.clone()));
        *lock(&self.identity) = Some(id.clone());
        Ok(id)
    }

    /// Parses, validates, publishes and commits one sync answer (blocking).
    fn apply(&self, body: &bytes::Bytes, since: u64) -> Result<bool, UpdateError> {
        let t0 = std::time::Instant::now();
        let answer: SyncAnswer = serde_json::from_slice(body)
            .map_err(|e| UpdateError::Invalid(format!("Central's sync answer does not parse ({e}): check that [central] url is a Central")))?;
        if answer.snapshot.is_none() && answer.changes.as_ref().is_none_or(Vec::is_empty) {
            if answer.revision != since {
                return Err(UpdateError::Gap { have: since, next: answer.revision });
            }
            return Ok(false);
        }
        let t_parse = t0.elapsed();
        self.update_waiting.store(true, Ordering::Release);
        let mut synced = lock(&self.synced);
        self.update_waiting.store(false, Ordering::Release);
        let prepared = synced.prepare(&answer, self.config.max_indicators)?;
        let t_prepare = t0.elapsed();
        let snapshot = answer.snapshot.is_some();
        // Publish: certificates, then indicators, then policy (each whole).
        if let Some(certs) = &self.certs {
            for (_, c) in &prepared.certs_added {
                if let Err(e) = certs.add_der(&c.der) {
                    tracing::warn!("endpoint certificate {}: {e}", c.name);
                }
            }
            for fp in &prepared.certs_removed {
                certs.remove(fp);
            }
        }
        if let Some(set) = &prepared.indicators {
            self.state.set_overlay(set.clone());
        }
        if let Some(p) = &prepared.policy {
            self.state.set_policy(p.clone().unwrap_or_else(|| no_policy(self.config.before_first_sync)));
        }
        let (added, removed, new_set) = (prepared.certs_added.len(), prepared.certs_removed.len(), prepared.indicators.is_some());
        if let Some(h) = &prepared.heartbeat {
            self.apply_heartbeat(h);
        }
        let t_publish = t0.elapsed();
        synced.commit(prepared);
        self.revision.store(synced.revision, Ordering::Release);
        // Under the lock: the persist thread hears of changes in commit order.
        let _ = self.persist.send(if snapshot {
            Persist::Snapshot(SnapshotRecord {
                revision: synced.revision,
                answer: body.clone(),
                third_party: persisted_third_party(&synced.third_party),
            })
        } else {
            Persist::Changes(JournalRecord { since, to: synced.revision, body: body.clone() })
        });
        tracing::debug!(
            "sync answer of {} bytes: parsed at {t_parse:?}, validated and compiled at {t_prepare:?}, published at {t_publish:?}, committed at {:?}",
            body.len(),
            t0.elapsed()
        );
        let (rev, has_policy, ncerts) = (synced.revision, synced.policy.is_some(), synced.certs.len());
        let indicators = synced.indicator_count() as u64;
        drop(synced);
        // What the workers let go of before this update (not what this one
        // retired: they are moving off it now).
        crate::background::free_retired(&self.state);
        self.set_status(|s| {
            s.revision = rev;
            s.updates_applied += 1;
            s.snapshots += u64::from(snapshot);
            s.policy_from_central = has_policy;
            s.indicators = indicators;
            s.endpoint_certs = ncerts as u64;
            s.last_error = None;
        });
        tracing::info!(
            "Central revision {rev} applied{}: {indicators} indicators{}, {added} certificate(s) pinned, {removed} removed",
            if snapshot { " (full snapshot)" } else { "" },
            if new_set { " (new set)" } else { "" }
        );
        if body.len() >= 1 << 20 {
            // Freeing a large parsed answer (10M indicators: 30M strings)
            // takes seconds: not before the next long-poll goes out.
            // Not at a lowered priority: freeing takes the allocator's lock
            // of the arena the answer came from, the one the next answer's
            // parse allocates from (a preempted holder stalled it ~1 s).
            let _ = std::thread::Builder::new().name("hbgw-free".into()).spawn(move || drop(answer));
        }
        Ok(true)
    }

    fn apply_heartbeat(&self, h: &HeartbeatSettings) {
        let Some(svc) = lock(&self.heartbeat).clone() else {
            tracing::info!("heartbeat settings from Central kept (no heartbeat service runs here)");
            return;
        };
        let zones = (!h.missing_zones.is_empty()).then(|| h.missing_zones.iter().cloned().collect());
        if let Err(e) = svc.set_settings(Duration::from_millis(h.interval_ms), h.missed_limit, zones) {
            tracing::warn!("heartbeat settings from Central not applied: {e}");
            self.set_status(|s| s.last_error = Some(format!("heartbeat settings: {e}")));
        }
    }

    /// Replaces one third-party feed's indicators (blocking).
    fn apply_third_party(&self, feed: &str, list: Vec<(IndicatorKind, String)>) -> Result<bool, UpdateError> {
        let mut synced = lock(&self.synced);
        if synced.third_party.get(feed) == Some(&list) {
            return Ok(false);
        }
        let old = synced.third_party.insert(feed.to_owned(), list);
        match synced.rebuild() {
            Ok(set) => {
                self.state.set_overlay(set.clone());
                crate::background::free_retired(&self.state);
                let _ = self.persist.send(Persist::Whole);
                let n = synced.indicator_count() as u64;
                self.set_status(|s| s.indicators = n);
                Ok(true)
            }
            Err(e) => {
                match old {
                    Some(o) => synced.third_party.insert(feed.to_owned(), o),
                    None => synced.third_party.remove(feed),
                };
                Err(e)
            }
        }
    }
}

async fn sync_loop(ctx: Arc<Ctx>) {
    let mut backoff = Backoff::new();
    let mut force_snapshot = false;
    let mut synced_once = false;
    let wait = ctx.config.wait_s.clamp(1, super::protocol::MAX_WAIT_S);
    loop {
        let identity = match ctx.identity().await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("Central: {e}");
                ctx.set_status(|s| s.last_error = Some(e));
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        let since = if force_snapshot { 0 } else { ctx.revision.load(Ordering::Acquire) };
        // Once an answer is applied the gateway holds its revision, even 0:
        // Central is told so, and waits instead of sending an empty snapshot
        // at once (a tight loop while both are at revision 0).
        let held = if synced_once && !force_snapshot { "&synced=1" } else { "" };
        let path = format!("/v1/sync?since={since}&wait={wait}&v={}{held}", super::protocol::SYNC_VERSION);
        tracing::debug!("sync: asking Central for what follows revision {since}");
        let bearer = identity.bearer();
        let call = ctx.client.call(Method::GET, &path, Some(&bearer), None, Duration::from_secs(wait + 10), ctx.config.max_update_bytes);
        tokio::pin!(call);
        let answer = tokio::select! {
            r = &mut call => r,
            () = tokio::time::sleep(QUIET_FOR) => {
                // Central has been quiet for a moment: the layers are
                // folded into a new base now, not at the end of the poll.
                let w = ctx.clone();
                tokio::task::spawn_blocking(move || maybe_compact(&w, true));
                call.await
            }
        };
        let body = match answer {
            Ok((_, body)) => {
                tracing::debug!("sync answer of {} bytes received", body.len());
                body
            }
            Err(e) => {
                ctx.disconnected(&e);
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        ctx.set_status(|s| {
            s.state = "connected".into();
            s.last_contact_ms = Some(now_ms());
        });
        let worker = ctx.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let r = worker.apply(&body, since);
            if let Ok(changed) = r {
                // Here, not on the runtime: it takes the state's lock. A
                // long poll that brought nothing means a quiet Central: the
                // layers of small updates are folded too.
                maybe_compact(&worker, !changed);
                if !worker.settling.swap(true, Ordering::AcqRel) {
                    let w = worker.clone();
                    tokio::task::spawn_blocking(move || {
                        settle_while_idle(&w);
                        w.settling.store(false, Ordering::Release);
                    });
                }
            }
            r
        })
        .await;
        match applied {
            Ok(Ok(_)) => {
                backoff.reset();
                force_snapshot = false;
                synced_once = true;
            }
            Ok(Err(UpdateError::Gap { have, next })) => {
                tracing::warn!("Central: revision gap (have {have}, offered {next}): asking for a full snapshot");
                force_snapshot = true;
            }
            Ok(Err(e)) => {
                tracing::warn!("Central update refused, previous state stays in force: {e}");
                ctx.set_status(|s| {
                    s.updates_rejected += 1;
                    s.last_error = Some(format!("update refused: {e}"));
                });
                let in_force = ctx.revision.load(Ordering::Acquire);
                lock(&ctx.rejections).update =
                    Some(serde_json::json!({"at_ms": now_ms(), "revision_in_force": in_force, "error": e.to_string()}));
                ctx.health_now.notify_one();
                tokio::time::sleep(backoff.next()).await;
            }
            Err(e) => {
                tracing::warn!("Central update: {e}");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}

/// Old entries of the model's map moved per step of [`settle_while_idle`]
/// (~2-4 ms here): the longest an update waits for it.
const SETTLE_STEP: usize = 16 * 1024;

/// Moves the model map's old entries into its new table ahead of need
/// while no update waits (see `held_map`: then the updates that follow do
/// not), a step at a time under the state's lock.
fn settle_while_idle(ctx: &Ctx) {
    while !ctx.update_waiting.load(Ordering::Acquire) {
        if !lock(&ctx.synced).indicators.settle_ahead(SETTLE_STEP) {
            return;
        }
        std::thread::yield_now();
    }
}

/// Indicators changed since the base was built beyond which the layers are
/// folded (each update compiles only its own batch into a layer, but past
/// [`hbgw_shared::indicator_overlay::MAX_LAYERS`] two layers are merged on
/// an update's way, and each layer costs every lookup a little).
pub const COMPACT_AFTER: usize = 20_000;

/// How long Central must have sent nothing before the layers are folded
/// into a new base (each layer costs a lookup the flow cache does not
/// answer ~20-28 ns for IPv4, ~100 ns for a domain: `perf/overlay_layers.rs`).
/// Under it, a stream of batches is folded into one layer at a time.
pub const QUIET_FOR: Duration = Duration::from_secs(2);

/// While the layers touched (audit IDs added, replaced or removed) less than the
/// base divided by this, they are folded into one layer over the base,
/// not into a new base: a fold then
/// costs what the layers hold, not what the base does (at 4M held, a new
/// base after every 100k batch cost 1-3 s of CPU each, and a stream of
/// batches outran it).
pub const FOLD_LAYERS_UNDER: usize = 4;

/// Whether `o`'s layers are to be folded now (`touched`: changes since its
/// base was built; `idle`: Central is quiet), and if so whether into a new
/// base (`true`) or into one layer over it (see [`maybe_compact`]).
fn compaction_due(o: &IndicatorOverlay, touched: usize, idle: bool) -> Option<bool> {
    if o.layers().is_empty() {
        return None;
    }
    if idle {
        return Some(true);
    }
    // What the layers touched, not only what they hold: removals leave
    // the base's records in place, superseded, until a new base is built
    // (a layer's records are among the audit IDs it touched).
    let in_layers = o.touched_count();
    let whole = in_layers.saturating_mul(FOLD_LAYERS_UNDER) >= o.base().len();
    (touched >= COMPACT_AFTER && (whole || o.layers().len() > 1)).then_some(whole)
}

/// Starts folding the layers on a thread of its own when they have grown
/// past [`COMPACT_AFTER`], or, when `idle` (Central sent nothing for
/// [`QUIET_FOR`]), if there are any (one at a time): into one layer over the base while they are small next to it
/// (see [`FOLD_LAYERS_UNDER`]; not when there is only one), else, or when
/// `idle`, into a new base. The result is published under the layers of
/// the updates that came in while it was built (see
/// `SyncedState::install_compacted`, `SyncedState::install_folded_layers`).
///
/// The compaction runs at a lowered priority, so that updates do not wait
/// for a core behind it. Once updates have outrun it (the next one must
/// merge two layers on its way: see [`super::protocol::IndicatorBook::compaction_outrun`]),
/// they wait for it anyway, and more with every update while it starves:
/// it is raised to normal priority then.
fn maybe_compact(ctx: &Arc<Ctx>, idle: bool) {
    if ctx.compacting.swap(true, Ordering::AcqRel) {
        if lock(&ctx.synced).book.compaction_outrun() {
            let tid = ctx.compaction_to_raise.swap(0, Ordering::AcqRel);
            if tid != 0 && crate::background::restore_thread(tid) {
                tracing::info!("indicator updates outran the compaction under way: raised to normal priority");
            }
        }
        return;
    }
    let (overlay, generation, whole) = {
        let mut s = lock(&ctx.synced);
        let Some(whole) = compaction_due(s.book.overlay(), s.book.touched(), idle) else {
            ctx.compacting.store(false, Ordering::Release);
            return;
        };
        let g = s.book.mark();
        (s.book.overlay().clone(), g, whole)
    };
    let c = ctx.clone();
    // A thread of its own, at background priority: the update that comes
    // next must not wait for a core behind it.
    let spawned = std::thread::Builder::new().name("hbgw-compact".into()).spawn(move || {
        crate::background::lower_current_thread(crate::background::COMPACTION_NICE);
        c.compaction_to_raise.store(crate::background::current_thread_id(), Ordering::Release);
        let t = std::time::Instant::now();
        let built = if whole { overlay.compacted().map(Ok) } else { overlay.layers_compacted().map(Err) };
        match built {
            Ok(built) => {
                let mut s = lock(&c.synced);
                let installed = match built {
                    Ok(base) => s.install_compacted(generation, base),
                    Err(merged) => s.install_folded_layers(generation, merged),
                };
                match installed {
                    Some(o) => {
                        c.state.set_overlay(o.clone());
                        crate::background::free_retired(&c.state);
                        if whole {
                            tracing::info!("indicators compacted: {} in one base set, built in {:?}", o.base().len(), t.elapsed());
                        } else {
                            tracing::info!(
                                "indicator layers folded: {} in one layer over a base of {}, built in {:?}",
                                o.layers()[0].set().len(),
                                o.base().len(),
                                t.elapsed()
                            );
                        }
                    }
                    None => tracing::debug!("indicator compaction outrun by a snapshot or rebuild; dropped"),
                }
            }
            Err(e) => tracing::warn!("indicator compaction failed ({e}); the overlay stays in force"),
        }
        c.compaction_to_raise.store(0, Ordering::Release);
        c.compacting.store(false, Ordering::Release);
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the indicator compaction thread: {e}");
        ctx.compacting.store(false, Ordering::Release);
    }
}

/// The longest a state that must be written whole goes unwritten while
/// updates keep coming (see `write_whole`).
pub const PERSIST_WITHIN: Duration = Duration::from_secs(60);

/// The journal is folded into the state file once it is larger than the
/// state file and this.
pub const JOURNAL_FOLD_MIN_BYTES: u64 = 1 << 20;

/// Where a fold of the journal writes the state file (this, then a name
/// of its own: a fold cancelled at a stop may still be writing when the
/// client starts again in the same process); the persist thread renames it
/// into place.
const FOLD_FILE: &str = "central-state.json.fold";

/// A fold of the journal into the state file, under way on a thread of its own.
struct JournalFold {
    /// Its result, and the CPU time it took.
    thread: std::thread::JoinHandle<(Result<Option<(u64, u64)>, String>, Duration)>,
    /// Set when its result must not be installed: the state was written
    /// whole since it started, or the client stops.
    cancel: Arc<AtomicBool>,
    /// The file it writes.
    path: PathBuf,
    started: std::time::Instant,
}

impl JournalFold {
    fn start(dir: PathBuf, limit: usize) -> std::io::Result<JournalFold> {
        static FOLDS: AtomicU64 = AtomicU64::new(0);
        let cancel = Arc::new(AtomicBool::new(false));
        let path = dir.join(format!("{FOLD_FILE}-{}-{}", std::process::id(), FOLDS.fetch_add(1, Ordering::Relaxed)));
        let (c, p) = (cancel.clone(), path.clone());
        let thread = std::thread::Builder::new().name("hbgw-state-fold".into()).spawn(move || {
            crate::background::lower_current_thread(crate::background::CATCH_UP_NICE);
            let cpu = crate::background::thread_cpu_time();
            let folded = fold_journal(&dir, &p, limit, &c);
            (folded, crate::background::thread_cpu_time().saturating_sub(cpu))
        })?;
        Ok(JournalFold { thread, cancel, path, started: std::time::Instant::now() })
    }
}

/// Removes what folds left in `dir` (a process that did not outlive one).
fn remove_fold_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(FOLD_FILE)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Folds the journal into a new state file, from the files alone: the
/// state file is read, the journal replayed onto it (Central's indicators
/// merged as the strings they are, see [`super::indicator_fold`]; nothing
/// compiled), and the result written to `path` (synced). Returns its revision and
/// size; `None` when `cancel` was set meanwhile (then nothing is left at
/// `path`, unless the process ends first).
///
/// Why from the files and not from the state in memory: a copy of that
/// needs the state's lock for as long as it takes (3M indicators: ~1 s),
/// and with updates arriving every second or so it either holds up one of
/// them that long or gives way and starts again, for ever (measured: one
/// update in two waited 50-170 ms at 3M held, until the copy gave way).
/// This holds no lock anyone waits for, at catch-up priority; the price is
/// a second copy of the state in memory while it runs.
fn fold_journal(dir: &Path, path: &Path, limit: usize, cancel: &AtomicBool) -> Result<Option<(u64, u64)>, String> {
    let stop = || cancel.load(Ordering::Acquire);
    let corrupt = |why: String| corrupt_state(dir, why);
    // Central's indicators stay strings (see `indicator_fold`); the rest
    // goes through the model.
    let file = read_persisted(dir)?;
    let had_file = file.is_some();
    let (mut s, base, third_party) = match file {
        Some(mut p) => {
            let mut snapshot = p.take_snapshot().map_err(&corrupt)?;
            let base = std::mem::take(&mut snapshot.indicators);
            let s = SyncedState::from_snapshot(p.revision, &snapshot, limit).map_err(|e| corrupt(e.to_string()))?;
            (s, base, p.third_party)
        }
        None => (SyncedState::default(), Vec::new(), BTreeMap::new()),
    };
    let records = super::state_journal::read_records(dir)?;
    if records.is_empty() && !had_file {
        return Ok(None);
    }
    let mut fold = super::indicator_fold::IndicatorFold::default();
    if stop() || !replay_records(dir, &mut s, records, limit, &stop, |answer| {
        fold.take_from(answer);
        Ok(())
    })? {
        return Ok(None);
    }
    let Some(indicators) = fold.apply(base, &stop).map_err(|e| journal_does_not_apply(dir, e))? else { return Ok(None) };
    if indicators.len() > limit {
        return Err(over_limit(indicators.len(), limit));
    }
    let mut snapshot = s.to_snapshot();
    snapshot.indicators = indicators;
    let p = PersistedState { format: STATE_FORMAT, revision: s.revision, snapshot: Some(snapshot), answer: None, third_party };
    drop(s);
    let revision = p.revision;
    let bytes = state_bytes(p)?;
    if stop() {
        return Ok(None);
    }
    write_synced(path, &[&bytes], false).map_err(|e| {
        let _ = std::fs::remove_file(path);
        format!("cannot write {}: {e}", path.display())
    })?;
    if stop() {
        let _ = std::fs::remove_file(path);
        return Ok(None);
    }
    Ok(Some((revision, bytes.len() as u64)))
}

/// The persist thread: appends each applied answer
/// of changes to the journal (synced, in commit order), and writes the
/// state file whole when a snapshot or third-party feed replaced the state;
/// when the journal has outgrown the state file, folds it into a new one
/// on a thread of its own (see [`fold_journal`]) while the appends go on.
/// `head`: the revision the state file and journal hold together.
fn persist_thread(ctx: Arc<Ctx>, rx: crossbeam_channel::Receiver<Persist>, mut journal: StateJournal, mut head: u64) {
    let dir = ctx.config.state_dir.clone();
    remove_fold_files(&dir);
    let mut state_bytes = std::fs::metadata(dir.join(STATE_FILE)).map_or(0, |m| m.len());
    let mut pending: std::collections::VecDeque<JournalRecord> = Default::default();
    // Since when the state must be written whole (`None`: it need not).
    let mut whole_since: Option<std::time::Instant> = None;
    // The snapshot answer to write it from (`None`: from the state held).
    let mut from_snapshot: Option<SnapshotRecord> = None;
    let mut fold: Option<JournalFold> = None;
    // No new fold before this (the last one failed).
    let mut fold_after = std::time::Instant::now();
    let mut stopping = false;
    let mut failed = false;
    loop {
        let first = if stopping {
            None
        } else if pending.is_empty() && whole_since.is_none() && fold.is_none() {
            rx.recv().ok()
        } else {
            // Work is left (a write gave way to an update, or failed, or a
            // fold runs): again soon.
            rx.recv_timeout(if failed { Duration::from_secs(1) } else { Duration::from_millis(100) }).ok()
        };
        for m in first.into_iter().chain(rx.try_iter()) {
            match m {
                Persist::Changes(r) => pending.push_back(r),
                Persist::Whole => {
                    whole_since.get_or_insert_with(std::time::Instant::now);
                    pending.clear();
                    from_snapshot = None;
                }
                Persist::Snapshot(r) => {
                    whole_since.get_or_insert_with(std::time::Instant::now);
                    pending.clear();
                    from_snapshot = Some(r);
                }
                Persist::Stop => stopping = true,
            }
        }
        if let Some(f) = &fold {
            if whole_since.is_some() || stopping {
                // What it folds is superseded (or nobody will install it).
                f.cancel.store(true, Ordering::Release);
            }
        }
        if stopping && fold.as_ref().is_some_and(|f| !f.thread.is_finished()) {
            // Not waited for (reading a 10M-indicator state file alone
            // takes seconds): cancelled, it writes nothing more and
            // removes what it wrote; one cut short by the exit leaves its
            // file, removed at the next start.
            fold = None;
        }
        if let Some(f) = fold.take_if(|f| f.thread.is_finished()) {
            let (folded, cpu) =
                f.thread.join().unwrap_or_else(|_| (Err("the state fold thread panicked".into()), Duration::ZERO));
            let tmp = &f.path;
            match folded {
                Ok(Some((revision, bytes))) if !f.cancel.load(Ordering::Acquire) => {
                    match rename_synced(tmp, &dir.join(STATE_FILE)) {
                        Ok(()) => {
                            state_bytes = bytes;
                            tracing::info!(
                                "state journal folded into the state file at revision {revision} ({bytes} bytes) in {:?} ({cpu:?} of CPU)",
                                f.started.elapsed()
                            );
                            // Re-reading, checking and rewriting tens of MB
                            // of journal: at catch-up priority (a batch that
                            // arrived as a fold was installed took 153 ms).
                            if let Err(e) = at_catch_up_priority(|| journal.drop_through(revision).map_err(|e| e.to_string())) {
                                tracing::warn!("cannot trim the state journal in {}: {e}; will retry", dir.display());
                            }
                        }
                        Err(e) => {
                            tracing::warn!("cannot install the folded state {}: {e}; will retry", tmp.display());
                            let _ = std::fs::remove_file(tmp);
                            fold_after = std::time::Instant::now() + Duration::from_secs(10);
                        }
                    }
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(tmp);
                    if !f.cancel.load(Ordering::Acquire) {
                        // Nothing to fold (never expected): not again at once.
                        fold_after = std::time::Instant::now() + Duration::from_secs(10);
                    }
                }
                Err(e) => {
                    // The files do not fold (never expected): the state
                    // held is written whole instead.
                    tracing::warn!("the state journal does not fold ({e}): writing the state held instead");
                    let _ = std::fs::remove_file(tmp);
                    whole_since.get_or_insert_with(std::time::Instant::now);
                    fold_after = std::time::Instant::now() + Duration::from_secs(10);
                }
            }
        }
        failed = false;
        if whole_since.is_none()
            && fold.is_none()
            && !stopping
            && std::time::Instant::now() >= fold_after
            && journal.len() > state_bytes.max(JOURNAL_FOLD_MIN_BYTES)
        {
            match JournalFold::start(dir.clone(), ctx.config.max_indicators) {
                Ok(f) => {
                    tracing::debug!("state journal of {} bytes: folding it into the state file of {state_bytes}", journal.len());
                    fold = Some(f);
                }
                Err(e) => {
                    tracing::warn!("cannot start the state fold thread ({e}): writing the state held instead");
                    whole_since = Some(std::time::Instant::now());
                }
            }
        }
        if let Some(since) = whole_since {
            let yield_to_updates = !stopping && since.elapsed() < PERSIST_WITHIN;
            let written = match &from_snapshot {
                Some(r) => at_catch_up_priority(|| write_snapshot_state(&dir, r)).map(|bytes| Some((r.revision, bytes))),
                None => write_whole(&ctx, yield_to_updates),
            };
            match written {
                Ok(Some((revision, bytes))) => {
                    (head, state_bytes, whole_since, from_snapshot) = (revision, bytes, None, None);
                    pending.retain(|r| r.to > revision);
                    if let Err(e) = journal.drop_through(revision) {
                        tracing::warn!("cannot trim the state journal in {}: {e}; will retry", dir.display());
                        whole_since = Some(since);
                        failed = true;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("{e}: will retry");
                    failed = true;
                }
            }
        }
        if whole_since.is_none() {
            while let Some(r) = pending.front() {
                if r.to <= head {
                    pending.pop_front();
                } else if r.since != head {
                    // Cannot chain onto what is written (never expected):
                    // write the state whole instead.
                    whole_since = Some(std::time::Instant::now());
                    from_snapshot = None;
                    break;
                } else if let Err(e) = journal.append(r) {
                    tracing::warn!("cannot append to the state journal in {}: {e}; will retry", dir.display());
                    failed = true;
                    break;
                } else {
                    head = r.to;
                    pending.pop_front();
                }
            }
        }
        if stopping && (failed || (pending.is_empty() && whole_since.is_none())) {
            if failed {
                tracing::warn!("the last-known-good state in {} stays at revision {head}: the last writes failed", dir.display());
            }
            return;
        }
    }
}

/// Writes the state file whole: copied under the lock (giving way to any
/// update that comes in meanwhile, if `yield_to_updates`: copying 10M
/// indicators takes seconds), written outside it. Returns the revision and
/// size written, `None` when it gave way.
///
/// The copy runs on the persist thread at normal priority: a holder of the
/// state's lock preempted by everything else would stall the update waiting
/// for it (priority inversion; measured: ~1 s). Serialising and writing (a
/// million indicators: a second of CPU) run on a thread at catch-up
/// priority, holding nothing anyone waits for.
fn write_whole(ctx: &Ctx, yield_to_updates: bool) -> Result<Option<(u64, u64)>, String> {
    let p = {
        let s = lock(&ctx.synced);
        persisted(&s, || yield_to_updates && ctx.update_waiting.load(Ordering::Acquire))
    };
    // Given way: what was copied is freed here, not under the lock.
    let Ok(p) = p else { return Ok(None) };
    let revision = p.revision;
    let dir = &ctx.config.state_dir;
    Ok(Some((revision, at_catch_up_priority(move || write_state(dir, p))?)))
}

/// Runs `write` on a thread of its own at catch-up priority (it holds
/// nothing anyone waits for) and waits for it.
fn at_catch_up_priority<T: Send>(write: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("hbgw-state-write".into())
            .spawn_scoped(scope, move || {
                crate::background::lower_current_thread(crate::background::CATCH_UP_NICE);
                write()
            })
            .map_err(|e| format!("cannot start the state writer thread: {e}"))?;
        writer.join().map_err(|_| "the state writer thread panicked".to_string())?
    })
}

async fn upload_loop(ctx: Arc<Ctx>) {
    let mut backoff = Backoff::new();
    let every = Duration::from_millis(ctx.config.upload_interval_ms);
    loop {
        tokio::time::sleep(every).await;
        let Some(id) = lock(&ctx.identity).clone() else { continue };
        loop {
            let batch = {
                let mut sp = lock(&ctx.spool);
                sp.flush();
                let n = sp.len() as u64;
                let dropped = sp.dropped;
                let uploaded = sp.uploaded;
                ctx.set_status(|s| {
                    s.events_spooled = n;
                    s.events_dropped = dropped;
                    s.events_uploaded = uploaded;
                });
                sp.batch(super::protocol::MAX_LOG_BATCH)
            };
            let Some((last, body)) = batch else { break };
            let r = ctx
                .client
                .call(Method::POST, "/v1/logs", Some(&id.bearer()), Some(("application/json", body)), Duration::from_secs(30), 1 << 20)
                .await;
            match r.map(|(_, b)| serde_json::from_slice::<LogAck>(&b)) {
                Ok(Ok(_)) => {
                    if let Err(e) = lock(&ctx.spool).ack(last) {
                        tracing::warn!("{e}");
                    }
                    backoff.reset();
                }
                Ok(Err(e)) => {
                    tracing::warn!("Central's answer to a log upload does not parse ({e}): will resend");
                    tokio::time::sleep(backoff.next()).await;
                    break;
                }
                Err(e) => {
                    tracing::debug!("log upload: {e}");
                    tokio::time::sleep(backoff.next()).await;
                    break;
                }
            }
        }
    }
}

async fn health_loop(ctx: Arc<Ctx>, health: HealthSource) {
    let every = Duration::from_secs(ctx.config.health_interval_s);
    loop {
        // Every interval, and at once when an update or feed was refused.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = ctx.health_now.notified() => {}
        }
        let Some(id) = lock(&ctx.identity).clone() else { continue };
        let mut v = health();
        let status = lock(&ctx.status).clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("revision".into(), status.revision.into());
            // `total` from the model (exact); the per-kind figures are the
            // compiled sets' (a layer's superseded records counted until the
            // next compaction).
            let mut counts = ctx.state.indicators().counts();
            counts.total = usize::try_from(status.indicators).unwrap_or(usize::MAX);
            o.insert("indicators".into(), serde_json::to_value(counts).unwrap_or_default());
            o.insert("events_spooled".into(), status.events_spooled.into());
            o.insert("events_dropped".into(), status.events_dropped.into());
            o.insert("fail_open_frames".into(), status.fail_open_frames.into());
            o.insert("updates_applied".into(), status.updates_applied.into());
            o.insert("updates_rejected".into(), status.updates_rejected.into());
            let r = lock(&ctx.rejections);
            o.insert("last_rejected_update".into(), r.update.clone().unwrap_or_default());
            o.insert("last_rejected_feed".into(), r.feed.clone().unwrap_or_default());
        }
        let body = serde_json::to_vec(&v).unwrap_or_default();
        if let Err(e) = ctx
            .client
            .call(Method::POST, "/v1/health", Some(&id.bearer()), Some(("application/json", body)), Duration::from_secs(15), 64 << 10)
            .await
        {
            tracing::debug!("health summary: {e}");
        }
    }
}

async fn feed_loop(ctx: Arc<Ctx>, feed: ThirdPartyFeedSection) {
    let setup = (|| -> Result<(HttpsClient, String), String> {
        let ca_path = feed.ca.clone().unwrap_or_else(|| ctx.config.ca.clone());
        let ca = std::fs::read(&ca_path).map_err(|e| format!("feed {}: cannot read CA {}: {e}", feed.name, ca_path.display()))?;
        let rest = feed.url.strip_prefix("https://").unwrap_or(&feed.url);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let client = HttpsClient::new(&format!("https://{authority}"), &ca).map_err(|e| format!("feed {}: {e}", feed.name))?;
        Ok((client, path.to_owned()))
    })();
    let (client, path) = match setup {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{e}: this feed is not polled");
            ctx.set_status(|s| s.last_error = Some(e));
            return;
        }
    };
    let list_type = match feed.list_type.as_deref() {
        Some("ipv4") => ListType::Ipv4,
        Some("ipv6") => ListType::Ipv6,
        Some("domain") => ListType::Domain,
        Some("url") => ListType::Url,
        _ => ListType::Any,
    };
    loop {
        let r = client.call(Method::GET, &path, None, None, Duration::from_secs(60), feed.max_bytes).await;
        match r {
            Ok((_, body)) => {
                let c = ctx.clone();
                let f = feed.clone();
                let applied = tokio::task::spawn_blocking(move || {
                    let text = std::str::from_utf8(&body)
                        .map_err(|_| UpdateError::Invalid(format!("feed {}: not UTF-8 text", f.name)))?;
                    let list: Vec<WireIndicator> = match f.format {
                        ThirdPartyFormat::List => parse_plain_list(text, &f.name, list_type)?,
                        ThirdPartyFormat::Stix => parse_stix_bundle(text, &f.name, time::OffsetDateTime::now_utc())?.indicators,
                    };
                    let parsed = list
                        .into_iter()
                        .map(|w| w.value.parse::<IndicatorKind>().map(|k| (k, w.audit_id)))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| UpdateError::Invalid(e.to_string()))?;
                    let n = parsed.len();
                    c.apply_third_party(&f.name, parsed).map(|changed| (changed, n))
                })
                .await;
                match applied {
                    Ok(Ok((true, n))) => tracing::info!("feed {}: {n} indicator(s) in force", feed.name),
                    Ok(Ok((false, _))) => {}
                    Ok(Err(e)) => {
                        tracing::warn!("feed {} refused, its previous indicators stay in force: {e}", feed.name);
                        ctx.set_status(|s| s.last_error = Some(format!("feed {}: {e}", feed.name)));
                        lock(&ctx.rejections).feed =
                            Some(serde_json::json!({"at_ms": now_ms(), "feed": feed.name, "error": e.to_string()}));
                        ctx.health_now.notify_one();
                    }
                    Err(e) => tracing::warn!("feed {}: {e}", feed.name),
                }
            }
            Err(e) => {
                tracing::warn!("feed {}: {e}; its previous indicators stay in force", feed.name);
                ctx.set_status(|s| s.last_error = Some(format!("feed {}: {e}", feed.name)));
            }
        }
        tokio::time::sleep(Duration::from_secs(feed.interval_s)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_answer(revision: u64) -> (Snapshot, bytes::Bytes) {
        let snap = Snapshot {
            policy: None,
            indicators: vec![
                WireIndicator { value: "203.0.113.9".into(), audit_id: "A1".into(), feed: "mdr".into() },
                WireIndicator { value: "evil.example".into(), audit_id: "A2".into(), feed: "other".into() },
            ],
            exclusions: vec!["good.evil.example".into()],
            ..Default::default()
        };
        let answer = SyncAnswer { revision, changes: None, snapshot: Some(snap.clone()) };
        (snap, serde_json::to_vec(&answer).unwrap().into())
    }

    #[test]
    fn a_snapshot_answer_is_written_as_received_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, answer) = snapshot_answer(12);
        let third_party = BTreeMap::from([(
            "tp".to_string(),
            vec![PersistedThirdParty { value: "198.51.100.7".into(), audit_id: "tp:1".into() }],
        )]);
        let r = SnapshotRecord { revision: 12, answer: answer.clone(), third_party };
        let n = write_snapshot_state(dir.path(), &r).unwrap();
        let text = std::fs::read(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(n, text.len() as u64);
        assert!(text.windows(answer.len()).any(|w| w == &answer[..]), "the answer's bytes, as received");
        let s = load_state(dir.path(), 100).unwrap().unwrap();
        assert_eq!(s.revision, 12);
        assert_eq!(s.to_snapshot(), SyncedState::from_snapshot(12, &snap, 100).unwrap().to_snapshot());
        assert_eq!(s.third_party["tp"], vec![("198.51.100.7".parse().unwrap(), "tp:1".to_string())]);
        assert!(s.book.overlay().match_ip("198.51.100.7".parse().unwrap()).drops());
        assert!(s.book.overlay().match_domain(b"www.evil.example").drops());
    }

    /// The layers are folded into one while they are small next to the
    /// base (the audit IDs they touched counted), into a new base past
    /// that or when Central is quiet, and not at all while one small layer
    /// or few changes are all there is.
    #[test]
    fn layers_fold_into_one_while_small_and_into_a_base_past_that() {
        use hbgw_shared::indicator_overlay::TouchedIds;
        use hbgw_shared::indicators::{IndicatorSet, IndicatorSetBuilder, ThreatFeedSettings};
        let set = |from: u32, n: u32| {
            let mut b = IndicatorSetBuilder::new();
            for i in from..from + n {
                b.add_parts(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).parse().unwrap(), &format!("A{i}"), "mdr").unwrap();
            }
            b.build(&ThreatFeedSettings::default())
        };
        let touched = |from: u32, n: u32| {
            let mut t = TouchedIds::default();
            for i in from..from + n {
                t.insert(&format!("A{i}")).unwrap();
            }
            t
        };
        let base = IndicatorOverlay::from_set(set(0, 1000));
        assert_eq!(compaction_due(&base, 50_000, true), None, "no layers: nothing to fold");
        let one = base.push_layer(set(1000, 100), touched(1000, 100), 0).unwrap();
        assert_eq!(compaction_due(&one, 50_000, false), None, "one small layer stays");
        assert_eq!(compaction_due(&one, 50_000, true), Some(true), "Central quiet: a new base");
        let two = one.push_layer(set(1100, 100), touched(1100, 100), 0).unwrap();
        assert_eq!(compaction_due(&two, COMPACT_AFTER - 1, false), None, "few changes");
        assert_eq!(compaction_due(&two, COMPACT_AFTER, false), Some(false), "small: into one layer");
        let big = two.push_layer(set(1200, 100), touched(1200, 100), 0).unwrap();
        assert_eq!(compaction_due(&big, COMPACT_AFTER, false), Some(true), "300 of 1000: a new base");
        let removed = one.push_layer(IndicatorSet::empty(), touched(0, 200), 0).unwrap();
        assert_eq!(compaction_due(&removed, COMPACT_AFTER, false), Some(true), "100 + 200 removed of 1000: a new base");
    }

    /// The journal folded from the files: the fold's state file loads as
    /// the state file and journal did (a record being appended left out);
    /// a cancelled fold writes nothing.
    #[test]
    fn the_journal_folds_into_a_state_file_from_the_files_alone() {
        use super::super::protocol::{Change, JournalEntry};
        use super::super::state_journal::JOURNAL_FILE;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (_, answer) = snapshot_answer(12);
        write_snapshot_state(d, &SnapshotRecord { revision: 12, answer, third_party: BTreeMap::new() }).unwrap();
        let (mut journal, _) = StateJournal::open(d).unwrap();
        let change = |revision: u64, change: Change| {
            let a = SyncAnswer { revision, changes: Some(vec![JournalEntry { revision, change }]), snapshot: None };
            JournalRecord { since: revision - 1, to: revision, body: serde_json::to_vec(&a).unwrap().into() }
        };
        let add = |v: &str, a: &str| WireIndicator { value: v.into(), audit_id: a.into(), feed: "mdr".into() };
        journal.append(&change(13, Change::IndicatorsAdd { indicators: vec![add("198.51.100.1", "B1"), add("bad.example", "A2")] })).unwrap();
        journal.append(&change(14, Change::IndicatorsRemove { audit_ids: vec!["A1".into()] })).unwrap();
        // A record being appended while the fold reads: torn, left out.
        let torn = change(15, Change::IndicatorsRemove { audit_ids: vec!["B1".into()] });
        let mut bytes = std::fs::read(d.join(JOURNAL_FILE)).unwrap();
        let whole = bytes.len();
        journal.append(&torn).unwrap();
        bytes = std::fs::read(d.join(JOURNAL_FILE)).unwrap();
        std::fs::write(d.join(JOURNAL_FILE), &bytes[..bytes.len() - 3]).unwrap();
        assert!(bytes.len() - 3 > whole);
        let want = load_state(d, 100).unwrap().unwrap();
        assert_eq!(want.revision, 14);

        let out = d.join(format!("{FOLD_FILE}-test"));
        let cancelled = AtomicBool::new(true);
        assert_eq!(fold_journal(d, &out, 100, &cancelled).unwrap(), None);
        assert!(!out.exists(), "a cancelled fold writes nothing");

        let (revision, size) = fold_journal(d, &out, 100, &AtomicBool::new(false)).unwrap().unwrap();
        assert_eq!(revision, 14);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
        assert!(std::fs::read_to_string(d.join(STATE_FILE)).unwrap().contains("\"answer\""), "the state file is untouched");
        let folded = tempfile::tempdir().unwrap();
        std::fs::copy(&out, folded.path().join(STATE_FILE)).unwrap();
        let got = load_state(folded.path(), 100).unwrap().unwrap();
        assert_eq!(got.revision, 14);
        assert_eq!(got.to_snapshot(), want.to_snapshot());
        assert_eq!(got.indicators.len(), 2, "A1 removed, B1 added, A2 replaced");
        assert_eq!(got.indicators.get("A2").map(|h| h.kind.to_string()).as_deref(), Some("bad.example"));
        remove_fold_files(d);
        assert!(!out.exists(), "left by a fold the process did not outlive: removed at start");
    }

    #[test]
    fn a_state_file_whose_answer_does_not_fit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |text: String, why: &str| {
            std::fs::write(dir.path().join(STATE_FILE), text).unwrap();
            let e = load_state(dir.path(), 100).unwrap_err();
            assert!(e.contains("is corrupt") && e.contains(why) && e.contains("restore it from a backup"), "{e}");
        };
        let (_, answer) = snapshot_answer(12);
        let answer = String::from_utf8(answer.to_vec()).unwrap();
        refused(format!(r#"{{"format":1,"revision":13,"answer":{answer}}}"#), "not a snapshot at its revision");
        refused(r#"{"format":1,"revision":3,"answer":{"revision":3,"changes":[]}}"#.into(), "not a snapshot at its revision");
        refused(r#"{"format":1,"revision":3}"#.into(), "both or neither");
        let (snap, _) = snapshot_answer(3);
        let both = serde_json::json!({"format": 1, "revision": 3, "snapshot": snap, "answer": {"revision": 3, "snapshot": snap}});
        refused(both.to_string(), "both or neither");
    }
}

/// The fold against the model as oracle: whatever the state file (as
/// Central's snapshot answer, in any order, or as written from the model)
/// and the journal (adds in both forms, removals, other changes between
/// them), the folded file loads as the two did.
#[cfg(test)]
mod fold_oracle {
    use super::*;
    use crate::central::protocol::{Change, IndicatorLines, JournalEntry};
    use proptest::prelude::*;

    fn ind(id: u8, v: u8, feed: bool) -> WireIndicator {
        WireIndicator {
            value: if v % 3 == 0 { format!("v{v}.evil.example") } else { format!("198.51.100.{v}") },
            audit_id: format!("A{id}"),
            feed: if feed { "mdr".into() } else { "other".into() },
        }
    }

    fn change(kind: u8, ids: &[(u8, u8, bool)]) -> Change {
        let list = || ids.iter().map(|&(i, v, f)| ind(i, v, f)).collect::<Vec<_>>();
        match kind % 4 {
            0 => Change::IndicatorsAdd { indicators: list() },
            1 => Change::IndicatorsAddLines { lines: IndicatorLines::from_wire(&list()).0 },
            2 => Change::IndicatorsRemove { audit_ids: ids.iter().map(|&(i, _, _)| format!("A{i}")).collect() },
            _ => Change::ExclusionsSet { exclusions: ids.iter().map(|&(_, v, _)| format!("v{v}.evil.example")).collect() },
        }
    }

    type Ids = Vec<(u8, u8, bool)>;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn the_folded_file_loads_as_the_state_file_and_journal_did(
            base in proptest::collection::vec((0u8..40, 1u8..250, any::<bool>()), 0..30),
            as_answer in any::<bool>(),
            records in proptest::collection::vec(proptest::collection::vec((any::<u8>(), proptest::collection::vec((0u8..60, 1u8..250, any::<bool>()), 0..12)), 1..4), 0..6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let mut seen = std::collections::HashSet::new();
            let base: Vec<WireIndicator> = base.into_iter().filter(|(i, _, _)| seen.insert(*i)).map(|(i, v, f)| ind(i, v, f)).collect();
            let snap = Snapshot { indicators: base, exclusions: vec!["good.evil.example".into()], ..Default::default() };
            if as_answer {
                let answer = SyncAnswer { revision: 3, changes: None, snapshot: Some(snap) };
                let third_party = BTreeMap::from([(
                    "tp".to_string(),
                    vec![PersistedThirdParty { value: "192.0.2.7".into(), audit_id: "tp:1".into() }],
                )]);
                let r = SnapshotRecord { revision: 3, answer: serde_json::to_vec(&answer).unwrap().into(), third_party };
                write_snapshot_state(d, &r).unwrap();
            } else {
                save_state(d, &SyncedState::from_snapshot(3, &snap, 1000).unwrap()).unwrap();
            }
            let (mut journal, _) = StateJournal::open(d).unwrap();
            let mut revision = 3;
            for changes in &records {
                let since = revision;
                let entries: Vec<JournalEntry> = changes
                    .iter()
                    .map(|(kind, ids): &(u8, Ids)| {
                        revision += 1;
                        JournalEntry { revision, change: change(*kind, ids) }
                    })
                    .collect();
                let a = SyncAnswer { revision, changes: Some(entries), snapshot: None };
                journal.append(&JournalRecord { since, to: revision, body: serde_json::to_vec(&a).unwrap().into() }).unwrap();
            }
            let want = load_state(d, 1000).unwrap().unwrap();
            let out = d.join(format!("{FOLD_FILE}-oracle"));
            let (r, _) = fold_journal(d, &out, 1000, &AtomicBool::new(false)).unwrap().unwrap();
            prop_assert_eq!(r, revision);
            let folded = tempfile::tempdir().unwrap();
            std::fs::copy(&out, folded.path().join(STATE_FILE)).unwrap();
            let got = load_state(folded.path(), 1000).unwrap().unwrap();
            prop_assert_eq!(got.revision, want.revision);
            prop_assert_eq!(got.to_snapshot(), want.to_snapshot());
            prop_assert_eq!(&got.third_party, &want.third_party);
            // Written sorted by audit ID, as every state file from the model is.
            let p: PersistedState = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
            let ids: Vec<&str> = p.snapshot.as_ref().unwrap().indicators.iter().map(|i| i.audit_id.as_str()).collect();
            prop_assert!(ids.is_sorted());
        }
    }
}
