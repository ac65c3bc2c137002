//! The reference Central's HTTPS service: the gateway API (enroll, sync
//! long-poll, log and health upload) and the admin API, as written in
//! `docs/central-protocol.md`.
//!
//! It owns request validation: every admin write is checked whole with the
//! same rules the gateway applies (`protocol::check_*`) before it reaches the
//! database, so Central never journals a change a gateway would refuse. It
//! wakes every waiting long poll when a change commits. It must never store
//! a secret in clear or hand out the CA key.

use super::ca::CentralCa;
use super::feeds::{parse_plain_list, parse_stix_bundle, ListType};
use super::http::{self, bearer, error, json, json_bytes, query, read_body, Handler, ResponseFuture};
use super::protocol::{
    check_exclusions, check_feed_name, check_feed_settings, check_heartbeat_settings, check_indicator, check_policy,
    EnrollRequest, HeartbeatSettings,
    GatewayIdentity, LogAck, LogBatch, SyncAnswer, WireEndpointCert, WireIndicator, MAX_LOG_BATCH,
    MAX_LOG_BATCH_BYTES, MAX_WAIT_S,
};
use super::store::{sha256_hex, Store, StoreError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hbgw_shared::indicators::ThreatFeedSettings;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
        Ok(Arc::new(Self {
            store: Mutex::new(store),
            ca,
            admin_hash: sha256_hex(token.trim()),
            revision: tokio::sync::watch::channel(rev).0,
            snapshot_cache: Mutex::new(None),
        }))
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
            f(&mut s)
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
        let id = self
            .db(move |s| {
                let id = s.authenticate(&b)?;
                if let Some(id) = &id {
                    s.touch(id, revision)?;
                }
                Ok(id)
            })
            .await?;
        id.ok_or_else(|| {
            error(StatusCode::UNAUTHORIZED, "unknown gateway credential: delete identity.json in the gateway's state directory and enroll again with a new token")
        })
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
        let wait = Duration::from_secs(num("wait", 25)?.min(MAX_WAIT_S));
        self.gateway(&req, Some(since)).await?;
        let mut rx = self.revision.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let current = *rx.borrow_and_update();
            // `since=0` asks for everything: answered at once.
            if current != since || since == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Ok(json(StatusCode::OK, &SyncAnswer { revision: since, changes: Some(Vec::new()), snapshot: None }));
                }
            }
        }
        let delta = self.db(move |s| Ok((s.revision()?, s.sync_answer_json(since)?))).await?;
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
                let body = read_body(req.into_body(), MAX_ADMIN_BODY).await.map_err(bad)?;
                let text = std::str::from_utf8(&body).map_err(|_| bad("body is not UTF-8".into()))?;
                let (mut list, skipped) = match format.as_str() {
                    "json" => {
                        #[derive(Deserialize)]
                        #[serde(deny_unknown_fields)]
                        struct In {
                            value: String,
                            #[serde(default)]
                            audit_id: Option<String>,
                            #[serde(default)]
                            feed: Option<String>,
                        }
                        #[derive(Deserialize)]
                        #[serde(deny_unknown_fields)]
                        struct Body {
                            indicators: Vec<In>,
                        }
                        let b: Body = serde_json::from_str(text).map_err(|e| bad(format!("{e}: send {{\"indicators\": [{{\"value\": ...}}]}}")))?;
                        let list = b
                            .indicators
                            .into_iter()
                            .map(|i| WireIndicator {
                                value: i.value,
                                audit_id: i.audit_id.unwrap_or_default(),
                                feed: i.feed.or_else(|| feed.clone()).unwrap_or_else(|| "mdr".into()),
                            })
                            .collect::<Vec<_>>();
                        (list, serde_json::json!({}))
                    }
                    "list" => {
                        let feed = feed.unwrap_or_else(|| "mdr".into());
                        (parse_plain_list(text, &feed, ListType::Any).map_err(|e| bad(e.to_string()))?, serde_json::json!({}))
                    }
                    "stix" => {
                        let feed = feed.unwrap_or_else(|| "stix".into());
                        let r = parse_stix_bundle(text, &feed, time::OffsetDateTime::now_utc()).map_err(|e| bad(e.to_string()))?;
                        (r.indicators, serde_json::json!({"expired": r.expired, "revoked": r.revoked, "unsupported": r.unsupported}))
                    }
                    other => return Err(bad(format!("format `{other}`: use json, list or stix"))),
                };
                if list.is_empty() {
                    return Err(bad("no indicator in the request: nothing to add".into()));
                }
                for (n, i) in list.iter().enumerate() {
                    // Audit ids are assigned below; check the rest now.
                    let probe = WireIndicator {
                        audit_id: if i.audit_id.is_empty() { "x".into() } else { i.audit_id.clone() },
                        ..i.clone()
                    };
                    check_indicator(&probe).map_err(|e| bad(format!("indicator {}: {e}", n + 1)))?;
                }
                let count = list.len();
                let rev = self
                    .db(move |s| {
                        let next = s.revision()? + 1;
                        for (n, i) in list.iter_mut().enumerate() {
                            if i.audit_id.is_empty() {
                                i.audit_id = format!("C-{next}-{}", n + 1);
                            }
                        }
                        s.add_indicators(list)
                    })
                    .await?;
                self.published(rev);
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

/// Checks a feed name given on the command line.
pub fn valid_feed(feed: &str) -> Result<(), String> {
    check_feed_name(feed).map_err(|e| e.to_string())
}
