//! The reference Central's HTTPS service: the gateway API (enroll, sync
//! long-poll, log and health upload) and the admin API, as written in
//! `docs/central-protocol.md`.
//!
//! It owns request validation: every admin write is checked whole with the
//! same rules the gateway applies (`protocol::check_*`) before it reaches the
//! database, so Central never journals a change a gateway would refuse. It
//! wakes every waiting long poll when a change commits. It must never store
//! a secret in clear or hand out the CA key.
//!
//! A posted batch of indicators is on the critical path from "posted" to
//! "dropped at the gateway" (goal: 100 ms for 100,000): it is validated,
//! committed as one journal row (`store`), kept in memory ([`RecentJournal`])
//! and the long polls are answered from memory at once; its rows in the
//! `indicators` table are written afterwards by a background thread at
//! lowered priority, resting as long as it works (`materialize_loop`).

use super::ca::CentralCa;
use super::feeds::{parse_plain_list, parse_stix_bundle, ListType};
use super::http::{self, bearer, error, json, json_bytes, query, read_body, Handler, ResponseFuture};
use super::protocol::{
    check_exclusions, check_feed_name, check_feed_settings, check_heartbeat_settings, check_indicator_parts, check_policy,
    EnrollRequest, GatewayIdentity, HeartbeatSettings, IndicatorLines, LogAck, LogBatch, SyncAnswer, WireEndpointCert,
    MAX_LOG_BATCH, MAX_LOG_BATCH_BYTES, MAX_WAIT_S,
};
use super::store::{answer_around, sha256_hex, Store, StoreError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hbgw_shared::indicators::ThreatFeedSettings;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// Largest admin request body.
pub const MAX_ADMIN_BODY: usize = 256 << 20;
/// Largest enroll body.
const MAX_ENROLL_BODY: usize = 4096;

type Resp = Response<Full<Bytes>>;

/// A running Central's shared state.
pub struct Central {
    store: Mutex<Store>,
    ca: CentralCa,
    admin_hash: String,
    revision: tokio::sync::watch::Sender<u64>,
    /// The last snapshot served, by revision (a million indicators are
    /// serialized once per revision, not once per gateway).
    snapshot_cache: Mutex<Option<(u64, Bytes)>>,
    /// The latest journal entries, as stored: long polls are answered from
    /// here without waiting for the database.
    recent: Mutex<RecentJournal>,
    /// Gateways already authenticated: SHA-256 of the credential -> id.
    known_gateways: Mutex<HashMap<String, String>>,
    /// Wakes the materialiser (a batch was committed).
    materialize_kick: Arc<(Mutex<bool>, Condvar)>,
}

/// Most bytes of journal entries kept in memory.
const RECENT_MAX_BYTES: usize = 256 << 20;
/// Indicators materialised per transaction (each holds the database a few ms).
const MATERIALIZE_ROWS: usize = 1000;

/// A journal entry as stored: (revision, change JSON).
type JournalBody = (u64, Arc<str>);

/// The latest journal entries, contiguous, oldest first.
#[derive(Default)]
struct RecentJournal {
    entries: VecDeque<(u64, Arc<str>)>,
    bytes: usize,
    keep: usize,
}

impl RecentJournal {
    fn push(&mut self, revision: u64, body: String) {
        if self.entries.back().is_some_and(|(r, _)| r + 1 != revision) {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += body.len();
        self.entries.push_back((revision, Arc::from(body)));
        while self.entries.len() > 1 && (self.bytes > RECENT_MAX_BYTES || self.entries.len() > self.keep) {
            if let Some((_, b)) = self.entries.pop_front() {
                self.bytes -= b.len();
            }
        }
    }

    /// The entries after `since`, if all are here, and the revision they
    /// bring the gateway to.
    fn after(&self, since: u64) -> Option<(u64, Vec<JournalBody>)> {
        let (first, last) = (self.entries.front()?.0, self.entries.back()?.0);
        if since == 0 || since + 1 < first || since >= last {
            return None;
        }
        Some((last, self.entries.iter().filter(|(r, _)| *r > since).cloned().collect()))
    }
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Central")
    }
}

/// Files of a Central data directory.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    /// A file in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `hbgw-central init`: a CA, Central's server certificate for `name`, an
/// admin token and an empty database in `dir`.
pub fn init(dir: &Path, name: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if dir.join("ca.key").exists() {
        return Err(format!("{} already holds a Central (ca.key): use another directory, or serve this one", dir.display()));
    }
    let ca = CentralCa::create(dir)?;
    let server = ca.issue_server(name)?;
    CentralCa::write_issued(dir, "server", &server)?;
    write_private(&dir.join("admin.token"), &http::random_hex(32)?)?;
    Store::open(&dir.join("central.db")).map_err(|e| e.to_string())?;
    Ok(())
}

impl Central {
    /// Opens the Central in `dir`.
    pub fn open(dir: &Path, journal_keep: u64) -> Result<Arc<Self>, String> {
        let ca = CentralCa::load(dir)?;
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .map_err(|e| format!("cannot read {}/admin.token: {e}: run `hbgw-central init` first", dir.display()))?;
        let mut store = Store::open(&dir.join("central.db")).map_err(|e| e.to_string())?;
        store.journal_keep = journal_keep.max(1);
        let rev = store.revision().map_err(|e| e.to_string())?;
        let keep = usize::try_from(store.journal_keep).unwrap_or(usize::MAX);
        let me = Arc::new(Self {
            store: Mutex::new(store),
            ca,
            admin_hash: sha256_hex(token.trim()),
            revision: tokio::sync::watch::channel(rev).0,
            snapshot_cache: Mutex::new(None),
            recent: Mutex::new(RecentJournal { keep, ..Default::default() }),
            known_gateways: Mutex::new(HashMap::new()),
            materialize_kick: Arc::new((Mutex::new(true), Condvar::new())),
        });
        // Batches committed before a stop (or a crash) and not yet in the
        // indicators table are materialised from the journal now.
        let (weak, kick, db) = (Arc::downgrade(&me), me.materialize_kick.clone(), dir.join("central.db"));
        std::thread::Builder::new()
            .name("central-materialize".into())
            .spawn(move || materialize_loop(weak, kick, &db))
            .map_err(|e| format!("cannot start Central's materialiser thread: {e}"))?;
        Ok(me)
    }

    /// The request handler.
    pub fn handler(self: &Arc<Self>) -> Handler {
        let me = self.clone();
        Arc::new(move |req| -> ResponseFuture {
            let me = me.clone();
            Box::pin(async move { me.route(req).await })
        })
    }

    async fn db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Resp> {
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut s = me.store.lock().unwrap_or_else(|p| p.into_inner());
            let r = f(&mut s);
            // Under the store's lock, so that entries reach `recent` in order.
            if let Some((rev, body)) = s.take_committed() {
                me.recent.lock().unwrap_or_else(|p| p.into_inner()).push(rev, body);
                let (m, cv) = &*me.materialize_kick;
                *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
                cv.notify_one();
            }
            r
        })
        .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}"))),
        }
    }

    /// Tells waiting long polls about a new revision.
    fn published(&self, rev: u64) -> Resp {
        self.revision.send_if_modified(|r| {
            let changed = *r != rev;
            *r = rev;
            changed
        });
        json(StatusCode::OK, &serde_json::json!({"revision": rev}))
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_owned();
        let m = req.method().clone();
        let r = match (m, path.as_str()) {
            (Method::POST, "/v1/enroll") => self.enroll(req).await,
            (Method::GET, "/v1/sync") => self.sync(req).await,
            (Method::POST, "/v1/logs") => self.logs(req).await,
            (Method::POST, "/v1/health") => self.put_health(req).await,
            (_, p) if p.starts_with("/v1/admin/") => self.admin(req).await,
            _ => Err(error(StatusCode::NOT_FOUND, format!("no such API: {path}: see docs/central-protocol.md"))),
        };
        r.unwrap_or_else(|e| e)
    }

    async fn gateway(self: &Arc<Self>, req: &Request<Incoming>, revision: Option<u64>) -> Result<String, Resp> {
        let Some(b) = bearer(req).map(str::to_owned) else {
            return Err(error(StatusCode::UNAUTHORIZED, "no credential: enroll the gateway first ([central] enrollment_token)"));
        };
        let key = sha256_hex(&b);
        let known = self.known_gateways.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        if let Some(id) = known {
            // Last seen / last revision: bookkeeping, not worth a wait.
            let (me, gw) = (self.clone(), id.clone());
            tokio::spawn(async move {
                let _ = me.db(move |s| s.touch(&gw, revision)).await;
            });
            return Ok(id);
        }
        let id = self
            .db(move |s| {
                let id = s.authenticate(&b)?;
                if let Some(id) = &id {
                    s.touch(id, revision)?;
                }
                Ok(id)
            })
            .await?;
        let id = id.ok_or_else(|| {
            error(StatusCode::UNAUTHORIZED, "unknown gateway credential: delete identity.json in the gateway's state directory and enroll again with a new token")
        })?;
        self.known_gateways.lock().unwrap_or_else(|p| p.into_inner()).insert(key, id.clone());
        Ok(id)
    }

    async fn enroll(self: &Arc<Self>, req: Request<Incoming>) -> Result<Resp, Resp> {
        let body = read_body(req.into_body(), MAX_ENROLL_BODY).await.map_err(|e| error(StatusCode::PAYLOAD_TOO_LARGE, e))?;
        let r: EnrollRequest = serde_json::from_slice(&body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("enroll body: {e}: send {{\"token\": ..., \"name\": ...}}")))?;
        if r.name.is_empty() || r.name.len() > 128 || r.name.chars().any(char::is_control) {
            return Err(error(StatusCode::BAD_REQUEST, "gateway name: give 1 to 128 printable characters"));
        }
        let identity = GatewayIdentity {
            gateway_id: format!("gw-{}", http::random_hex(8).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?),
            secret: http::random_hex(32).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?,
        };
        let id = identity.clone();
        let ok = self.db(move |s| s.enroll(&r.token, &id.gateway_id, &r.name, &id.secret)).await?;
        if !ok {
            return Err(error(StatusCode::UNAUTHORIZED, "enrollment token unknown or already used: create a new one with `hbgw-central token`"));
        }
        tracing::info!(gateway = %identity.gateway_id, "gateway enrolled");
        Ok(json(StatusCode::OK, &identity))
    }

    async fn sync(self: &Arc<Self>, req: Request<Incoming>) -> Result<Resp, Resp> {
        let q = query(&req);
        let num = |k: &str, d: u64| -> Result<u64, Resp> {
            match q.iter().find(|(key, _)| key == k) {
                Some((_, v)) => v.parse().map_err(|_| error(StatusCode::BAD_REQUEST, format!("`{k}={v}` is not a number"))),
                None => Ok(d),
            }
        };
        let since = num("since", 0)?;
        let version = num("v", 1)?;
        // `synced=1`: the gateway already holds revision `since`, even 0
        // (Central's empty state); without it `since=0` asks for a snapshot.
        let synced = num("synced", 0)? != 0;
        let wait = Duration::from_secs(num("wait", 25)?.min(MAX_WAIT_S));
        self.gateway(&req, Some(since)).await?;
        let mut rx = self.revision.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let current = *rx.borrow_and_update();
            // `since=0` asks for everything: answered at once, unless the
            // gateway says it holds revision 0 already (then it waits for
            // the first change like at any other revision, not a snapshot
            // of nothing in a tight loop).
            if current != since || (since == 0 && !synced) {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Ok(json(StatusCode::OK, &SyncAnswer { revision: since, changes: Some(Vec::new()), snapshot: None }));
                }
            }
        }
        if version >= 2 {
            let held = self.recent.lock().unwrap_or_else(|p| p.into_inner()).after(since);
            if let Some((revision, entries)) = held {
                let body = answer_around(revision, entries.iter().map(|(r, b)| (*r, &**b)));
                tracing::debug!("sync: answering revision {since} -> {revision}, {} bytes", body.len());
                return Ok(json_bytes(StatusCode::OK, body));
            }
        }
        let v = u32::try_from(version).unwrap_or(u32::MAX);
        let delta = self.db(move |s| Ok((s.revision()?, s.sync_answer_json(since, v)?))).await?;
        match delta {
            (_, Some(body)) => Ok(json_bytes(StatusCode::OK, body)),
            (revision, None) => {
                if let Some((r, body)) = self.snapshot_cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    if *r == revision {
                        return Ok(json_bytes(StatusCode::OK, body.to_vec()));
                    }
                }
                let (revision, body) = self
                    .db(|s| {
                        let (revision, snapshot) = s.snapshot()?;
                        let body = serde_json::to_vec(&SyncAnswer { revision, changes: None, snapshot: Some(snapshot) })?;
                        Ok((revision, body))
                    })
                    .await?;
                let body = Bytes::from(body);
                *self.snapshot_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((revision, body.clone()));
                Ok(json_bytes(StatusCode::OK, body.to_vec()))
            }
        }
    }

    async fn logs(self: &Arc<Self>, req: Request<Incoming>) -> Result<Resp, Resp> {
        let gw = self.gateway(&req, None).await?;
        let body = read_body(req.into_body(), MAX_LOG_BATCH_BYTES).await.map_err(|e| error(StatusCode::PAYLOAD_TOO_LARGE, e))?;
        let batch: LogBatch = serde_json::from_slice(&body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("log batch: {e}: see docs/central-protocol.md")))?;
        if batch.events.len() > MAX_LOG_BATCH {
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("log batch of {} events: send at most {MAX_LOG_BATCH}", batch.events.len())));
        }
        let (accepted, duplicates) = self.db(move |s| s.add_events(&gw, &batch.events)).await?;
        Ok(json(StatusCode::OK, &LogAck { accepted, duplicates }))
    }

    async fn put_health(self: &Arc<Self>, req: Request<Incoming>) -> Result<Resp, Resp> {
        let gw = self.gateway(&req, None).await?;
        let body = read_body(req.into_body(), 1 << 20).await.map_err(|e| error(StatusCode::PAYLOAD_TOO_LARGE, e))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("health summary: {e}: send a JSON object")))?;
        if !v.is_object() {
            return Err(error(StatusCode::BAD_REQUEST, "health summary: send a JSON object"));
        }
        self.db(move |s| s.put_health(&gw, &v)).await?;
        Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Full::new(Bytes::new())).unwrap_or_default())
    }

    async fn admin(self: &Arc<Self>, req: Request<Incoming>) -> Result<Resp, Resp> {
        let authorized = bearer(&req).is_some_and(|b| sha256_hex(b) == self.admin_hash);
        if !authorized {
            return Err(error(StatusCode::UNAUTHORIZED, "admin token missing or wrong: use the admin.token from Central's data directory"));
        }
        let path = req.uri().path().trim_start_matches("/v1/admin/").to_owned();
        let q = query(&req);
        let param = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let m = req.method().clone();
        let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
        match (m, path.as_str()) {
            (Method::POST, "tokens") => {
                let token = http::random_hex(24).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
                let t = token.clone();
                self.db(move |s| s.add_token(&t)).await?;
                Ok(json(StatusCode::OK, &serde_json::json!({"token": token})))
            }
            (Method::GET, "gateways") => Ok(json(StatusCode::OK, &self.db(|s| s.gateways()).await?)),
            (Method::GET, "endpoints") => {
                let list = self.db(|s| s.endpoints()).await?;
                let v: Vec<_> = list.into_iter().map(|(n, f)| serde_json::json!({"name": n, "fingerprint": f})).collect();
                Ok(json(StatusCode::OK, &v))
            }
            (Method::POST, "endpoints") | (Method::POST, "gateway-cert") => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Named {
                    name: String,
                }
                let body = read_body(req.into_body(), 4096).await.map_err(bad)?;
                let n: Named = serde_json::from_slice(&body).map_err(|e| bad(format!("{e}: send {{\"name\": ...}}")))?;
                let ok = !n.name.is_empty()
                    && n.name.len() <= 64
                    && n.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !ok {
                    return Err(bad(format!("name {:?}: use 1 to 64 letters, digits, '.', '_' or '-'", n.name)));
                }
                if path == "gateway-cert" {
                    let issued = self.ca.issue_server(&n.name).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
                    return Ok(json(
                        StatusCode::OK,
                        &serde_json::json!({"name": n.name, "fingerprint": issued.fingerprint.to_string(), "cert_pem": issued.cert_pem, "key_pem": issued.key_pem, "ca_pem": self.ca.ca_pem}),
                    ));
                }
                let issued = self.ca.issue_endpoint(&n.name).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
                let wire = WireEndpointCert { name: n.name.clone(), fingerprint: issued.fingerprint.to_string(), pem: issued.cert_pem.clone() };
                let name = n.name.clone();
                let rev = self
                    .db(move |s| {
                        if s.endpoint_exists(&name)? {
                            return Ok(None);
                        }
                        s.add_endpoint(wire).map(Some)
                    })
                    .await?;
                let Some(rev) = rev else {
                    return Err(error(StatusCode::CONFLICT, format!("endpoint `{}` is already registered: delete it first or pick another name", n.name)));
                };
                self.published(rev);
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({"revision": rev, "name": n.name, "fingerprint": issued.fingerprint.to_string(), "cert_pem": issued.cert_pem, "key_pem": issued.key_pem, "ca_pem": self.ca.ca_pem}),
                ))
            }
            (Method::DELETE, p) if p.starts_with("endpoints/") => {
                let name = p.trim_start_matches("endpoints/").to_owned();
                let n = name.clone();
                match self.db(move |s| s.remove_endpoint(&n)).await? {
                    Some(rev) => Ok(self.published(rev)),
                    None => Err(error(StatusCode::NOT_FOUND, format!("no endpoint named `{name}`: list them with `hbgw-central endpoints`"))),
                }
            }
            (Method::PUT, "policy") => {
                let body = read_body(req.into_body(), 16 << 20).await.map_err(bad)?;
                let text = String::from_utf8(body.to_vec()).map_err(|_| bad("policy is not UTF-8 text: send the TOML file".into()))?;
                check_policy(&text).map_err(|e| bad(e.to_string()))?;
                let rev = self.db(move |s| s.set_policy(text)).await?;
                Ok(self.published(rev))
            }
            (Method::PUT, "feed-settings") => {
                let body = read_body(req.into_body(), 1 << 20).await.map_err(bad)?;
                let settings: ThreatFeedSettings = serde_json::from_slice(&body)
                    .map_err(|e| bad(format!("feed settings: {e}: send {{\"enabled\": true, \"action\": \"log_and_drop\"}}")))?;
                check_feed_settings(&settings).map_err(|e| bad(e.to_string()))?;
                let rev = self.db(move |s| s.set_feed_settings(settings)).await?;
                Ok(self.published(rev))
            }
            (Method::PUT, "heartbeat") => {
                let body = read_body(req.into_body(), 64 << 10).await.map_err(bad)?;
                let settings: HeartbeatSettings = serde_json::from_slice(&body).map_err(|e| {
                    bad(format!("heartbeat settings: {e}: send {{\"interval_ms\": 15000, \"missed_limit\": 3, \"missing_zones\": [\"LAN\"]}}"))
                })?;
                check_heartbeat_settings(&settings).map_err(|e| bad(e.to_string()))?;
                let rev = self.db(move |s| s.set_heartbeat(settings)).await?;
                Ok(self.published(rev))
            }
            (Method::PUT, "exclusions") => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Ex {
                    exclusions: Vec<String>,
                }
                let body = read_body(req.into_body(), 16 << 20).await.map_err(bad)?;
                let ex: Ex = serde_json::from_slice(&body).map_err(|e| bad(format!("{e}: send {{\"exclusions\": [...]}}")))?;
                check_exclusions(&ex.exclusions).map_err(|e| bad(e.to_string()))?;
                let rev = self.db(move |s| s.set_exclusions(ex.exclusions)).await?;
                Ok(self.published(rev))
            }
            (Method::POST, "indicators") => {
                let format = param("format").unwrap_or_else(|| "json".into());
                let feed = param("feed");
                let t0 = std::time::Instant::now();
                let body = read_body(req.into_body(), MAX_ADMIN_BODY).await.map_err(bad)?;
                let t_read = t0.elapsed();
                let text = std::str::from_utf8(&body).map_err(|_| bad("body is not UTF-8".into()))?;
                let posted = posted_indicators(&format, feed.as_deref(), text).map_err(bad)?;
                let PostedIndicators { mut lines, count, missing, skipped } = posted;
                let t_checked = t0.elapsed();
                let rev = self
                    .db(move |s| {
                        if missing > 0 {
                            lines = with_audit_ids(&lines, s.revision()? + 1);
                        }
                        s.add_indicator_lines(lines)
                    })
                    .await?;
                self.published(rev);
                tracing::debug!(
                    "{count} indicator(s) posted: body read at {t_read:?}, validated at {t_checked:?}, committed as revision {rev} at {:?}",
                    t0.elapsed()
                );
                let mut v = serde_json::json!({"revision": rev, "added": count});
                if let (Some(o), Some(s)) = (v.as_object_mut(), skipped.as_object()) {
                    o.extend(s.clone());
                }
                Ok(json(StatusCode::OK, &v))
            }
            (Method::DELETE, "indicators") => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Del {
                    #[serde(default)]
                    audit_ids: Vec<String>,
                    #[serde(default)]
                    values: Vec<String>,
                }
                let body = read_body(req.into_body(), MAX_ADMIN_BODY).await.map_err(bad)?;
                let d: Del = serde_json::from_slice(&body).map_err(|e| bad(format!("{e}: send {{\"audit_ids\": [...]}} or {{\"values\": [...]}}")))?;
                let (rev, removed) = self
                    .db(move |s| {
                        let mut ids = d.audit_ids;
                        ids.extend(s.audit_ids_of_values(&d.values)?);
                        s.remove_indicators(ids)
                    })
                    .await?;
                self.published(rev);
                Ok(json(StatusCode::OK, &serde_json::json!({"revision": rev, "removed": removed})))
            }
            (Method::GET, "logs") => {
                let after = param("after").and_then(|v| v.parse().ok()).unwrap_or(0);
                let limit = param("limit").and_then(|v| v.parse().ok()).unwrap_or(1000i64).clamp(1, 100_000);
                Ok(json(StatusCode::OK, &self.db(move |s| s.events(after, limit)).await?))
            }
            (Method::GET, "health") => Ok(json(StatusCode::OK, &self.db(|s| s.health()).await?)),
            (Method::GET, "status") => {
                let (rev, n) = self.db(|s| Ok((s.revision()?, s.indicator_count()?))).await?;
                Ok(json(StatusCode::OK, &serde_json::json!({"revision": rev, "indicators": n})))
            }
            _ => Err(error(StatusCode::NOT_FOUND, format!("no such admin API: {path}: see docs/central-protocol.md"))),
        }
    }
}

/// Indicators posted at the admin API, validated whole.
#[derive(Debug)]
pub struct PostedIndicators {
    /// In the compact form the journal keeps; an indicator posted without
    /// an audit ID has an empty one here (it gets one at commit, holding
    /// the revision: see `with_audit_ids`).
    pub lines: IndicatorLines,
    /// How many.
    pub count: usize,
    /// How many came without an audit ID.
    pub missing: usize,
    /// What a STIX bundle held that is not added (expired, revoked, unsupported).
    pub skipped: serde_json::Value,
}

/// One indicator of a JSON `POST /v1/admin/indicators` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct In<'a> {
    #[serde(borrow)]
    value: Cow<'a, str>,
    #[serde(default, borrow)]
    audit_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    feed: Option<Cow<'a, str>>,
}

/// `{"indicators": [...]}`, each indicator handed to the closure as it is
/// parsed; the closure returns false to stop (its error is its own).
struct PostedBody<'f, F>(&'f mut F);

impl<'de, F: FnMut(In<'de>) -> bool> serde::de::DeserializeSeed<'de> for PostedBody<'_, F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(In<'de>) -> bool> serde::de::Visitor<'de> for PostedBody<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{\"indicators\": [...]}")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key != "indicators" {
                return Err(serde::de::Error::unknown_field(&key, &["indicators"]));
            }
            if seen {
                return Err(serde::de::Error::duplicate_field("indicators"));
            }
            seen = true;
            map.next_value_seed(Indicators(&mut *self.0))?;
        }
        if !seen {
            return Err(serde::de::Error::missing_field("indicators"));
        }
        Ok(())
    }
}

struct Indicators<'f, F>(&'f mut F);

impl<'de, F: FnMut(In<'de>) -> bool> serde::de::DeserializeSeed<'de> for Indicators<'_, F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(In<'de>) -> bool> serde::de::Visitor<'de> for Indicators<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of indicators")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(i) = seq.next_element::<In<'de>>()? {
            if !(self.0)(i) {
                // Stopped on a bad indicator: the caller reports it.
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// Validates a `POST /v1/admin/indicators` body (`format`: json, list or
/// stix; `feed`: the feed of indicators that name none). The error is the
/// one line the admin gets back.
pub fn posted_indicators(format: &str, feed: Option<&str>, text: &str) -> Result<PostedIndicators, String> {
    // Validated whole into the compact lines the journal keeps; an
    // indicator without an audit ID gets one at commit (its
    // revision is in it): its audit field is left empty here.
    let mut lines = IndicatorLines(String::with_capacity(text.len()));
    let mut count = 0usize;
    let mut missing = 0usize;
    let mut push = |n: usize, value: &str, audit: Option<&str>, feed: &str| -> Result<(), String> {
        check_indicator_parts(value, audit.unwrap_or("x"), feed).map_err(|e| format!("indicator {}: {e}", n + 1))?;
        lines.push(value, audit.unwrap_or(""), feed);
        count += 1;
        missing += usize::from(audit.is_none());
        Ok(())
    };
    let skipped = match format {
        "json" => {
            // Each indicator is checked as it is parsed, not gathered first
            // (a 100k batch would make a 7 MB vector of them).
            let mut err = None;
            let mut n = 0usize;
            let default_feed = feed.unwrap_or("mdr");
            let mut each = |i: In<'_>| {
                let audit = i.audit_id.as_deref().filter(|a| !a.is_empty());
                let r = push(n, &i.value, audit, i.feed.as_deref().unwrap_or(default_feed));
                n += 1;
                if let Err(e) = r {
                    err = Some(e);
                    return false;
                }
                true
            };
            let mut de = serde_json::Deserializer::from_str(text);
            let parsed = serde::de::DeserializeSeed::deserialize(PostedBody(&mut each), &mut de).and_then(|()| de.end());
            if let Some(e) = err {
                return Err(e);
            }
            parsed.map_err(|e| format!("{e}: send {{\"indicators\": [{{\"value\": ...}}]}}"))?;
            serde_json::json!({})
        }
        "list" | "stix" => {
            let (list, skipped) = if format == "list" {
                let feed = feed.unwrap_or("mdr");
                (parse_plain_list(text, feed, ListType::Any).map_err(|e| e.to_string())?, serde_json::json!({}))
            } else {
                let feed = feed.unwrap_or("stix");
                let r = parse_stix_bundle(text, feed, time::OffsetDateTime::now_utc()).map_err(|e| e.to_string())?;
                (r.indicators, serde_json::json!({"expired": r.expired, "revoked": r.revoked, "unsupported": r.unsupported}))
            };
            for (n, i) in list.iter().enumerate() {
                push(n, &i.value, Some(&i.audit_id).filter(|a| !a.is_empty()).map(String::as_str), &i.feed)?;
            }
            skipped
        }
        other => return Err(format!("format `{other}`: use json, list or stix")),
    };
    if count == 0 {
        return Err("no indicator in the request: nothing to add".into());
    }
    Ok(PostedIndicators { lines, count, missing, skipped })
}

/// `lines` with an empty audit ID replaced by `C-<revision>-<n>` (`n`: the
/// indicator's place in the batch, from 1).
fn with_audit_ids(lines: &IndicatorLines, revision: u64) -> IndicatorLines {
    let mut out = IndicatorLines::with_capacity(lines.0.len() / 24);
    for (n, line) in IndicatorLines::split(&lines.0).enumerate() {
        if let Ok((v, a, f)) = line {
            if a.is_empty() {
                out.push(v, &format!("C-{revision}-{}", n + 1), f);
            } else {
                out.push(v, a, f);
            }
        }
    }
    out
}

/// Writes the batches committed as journal rows into the `indicators`
/// table, a thousand rows per transaction (so that no request waits long
/// for the database), resting as long as it worked after each (at most
/// half a core); at start, it finishes what a stop or crash left undone.
/// Ends when Central is dropped. It runs at compaction priority (nice 10,
/// ~10% of a contended core), so that posted batches and their gateways'
/// answers come first on a shared core; not lower, because it holds the
/// database's lock while it works and a posted batch may wait behind a
/// preempted holder (for one transaction of [`MATERIALIZE_ROWS`] at most). After each pass (at least
/// every second) it checkpoints the database's write-ahead log over a
/// connection of its own (commits never do: see [`Store::open`]).
fn materialize_loop(central: Weak<Central>, kick: Arc<(Mutex<bool>, Condvar)>, db: &Path) {
    crate::background::lower_current_thread(crate::background::COMPACTION_NICE);
    loop {
        {
            let (m, cv) = &*kick;
            let mut pending = m.lock().unwrap_or_else(|p| p.into_inner());
            if !*pending {
                pending = cv.wait_timeout(pending, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner()).0;
            }
            *pending = false;
        }
        loop {
            let Some(c) = central.upgrade() else { return };
            let t = std::time::Instant::now();
            let r = c.store.lock().unwrap_or_else(|p| p.into_inner()).materialize_step(MATERIALIZE_ROWS);
            drop(c);
            match r {
                Ok(true) => std::thread::sleep(t.elapsed()),
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!("materialising indicator batches: {e}; retrying in a second");
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
            }
        }
        if central.strong_count() == 0 {
            return;
        }
        if let Err(e) = super::store::checkpoint_aside(db) {
            tracing::warn!("checkpointing Central's database: {e}; retrying in a second");
        }
    }
}

/// Checks a feed name given on the command line.
pub fn valid_feed(feed: &str) -> Result<(), String> {
    check_feed_name(feed).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &PostedIndicators) -> Vec<(String, String, String)> {
        IndicatorLines::split(&p.lines.0).map(|l| l.map(|(v, a, f)| (v.into(), a.into(), f.into())).unwrap()).collect()
    }

    #[test]
    fn posted_json_is_checked_as_it_is_parsed() {
        let body = r#"{"indicators": [
            {"value": "203.0.113.9", "audit_id": "A1"},
            {"value": "evil\u002eexample", "audit_id": "A\"2", "feed": "other"},
            {"value": "https://bad.example/x"}
        ]}"#;
        let p = posted_indicators("json", Some("mine"), body).unwrap();
        assert_eq!((p.count, p.missing), (3, 1));
        assert_eq!(
            lines(&p),
            vec![
                ("203.0.113.9".into(), "A1".into(), "mine".into()),
                ("evil.example".into(), "A\"2".into(), "other".into()),
                ("https://bad.example/x".into(), "".into(), "mine".into()),
            ]
        );
        // Without `feed=`, indicators that name none are the MDR feed's.
        let p = posted_indicators("json", None, r#"{"indicators":[{"value":"198.51.100.1","audit_id":""}]}"#).unwrap();
        assert_eq!(lines(&p), vec![("198.51.100.1".into(), "".into(), "mdr".into())]);
        assert_eq!(p.missing, 1, "an empty audit ID is a missing one");
    }

    #[test]
    fn bad_posted_json_is_refused_whole_with_the_cause() {
        let refused = |body: &str, want: &str| {
            let e = posted_indicators("json", None, body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        };
        refused(r#"{"indicators":[{"value":"1.2.3.4"},{"value":"not a name!"}]}"#, "indicator 2:");
        refused(r#"{"indicators":[{"value":"1.2.3.4","audit_id":"a\tb"}]}"#, "indicator 1:");
        refused(r#"{"indicators":[{"value":"1.2.3.4","feed":"no spaces"}]}"#, "feed name");
        refused(r#"{"indicators":[{"value":"1.2.3.4","colour":"red"}]}"#, "unknown field `colour`");
        refused(r#"{"indicators":[{"audit_id":"A1"}]}"#, "missing field `value`");
        refused(r#"{"other":[]}"#, "unknown field `other`");
        refused(r#"{}"#, "missing field `indicators`");
        refused(r#"{"indicators":[],"indicators":[]}"#, "duplicate field `indicators`");
        refused(r#"{"indicators":[{"value":"1.2.3.4"}]} and more"#, "trailing characters");
        refused(r#"{"indicators":[{"value":"1.2.3.4"},]}"#, "send {\"indicators\"");
        refused(r#"{"indicators":{"value":"1.2.3.4"}}"#, "a list of indicators");
        refused(r#"[{"value":"1.2.3.4"}]"#, "send {\"indicators\"");
        refused(r#"{"indicators":[]}"#, "no indicator in the request");
        assert!(posted_indicators("xml", None, "<x/>").unwrap_err().contains("use json, list or stix"));
    }

    #[test]
    fn posted_lists_keep_their_audit_ids() {
        let p = posted_indicators("list", Some("f1"), "203.0.113.9 A1\nevil.example\n").unwrap();
        assert_eq!(p.count, 2);
        assert_eq!(lines(&p)[0], ("203.0.113.9".into(), "A1".into(), "f1".into()));
        assert_eq!(lines(&p)[1].2, "f1");
    }
}
