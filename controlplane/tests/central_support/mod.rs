//! What the Central client tests share: the gateway's `[central]` section
//! with test-sized limits, an in-process reference Central over HTTPS on
//! loopback with an admin caller, and small helpers.
#![allow(dead_code)]

use hbgw_controlplane::central::client::{CentralClient, CentralSetup, CentralStart};
use hbgw_controlplane::central::http;
use hbgw_controlplane::central::server::{self, Central};
use hbgw_shared::config::{BeforeFirstSync, CentralSection};
use hbgw_shared::state::GatewayState;
use hbgw_shared::stats::CentralStatus;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `[central]` section for a gateway whose state lives in `dir/gw`,
/// trusting `ca`.
pub fn section(url: String, dir: &Path, ca: &Path) -> CentralSection {
    CentralSection {
        url,
        ca: ca.to_owned(),
        state_dir: dir.join("gw"),
        enrollment_token: None,
        name: "t".into(),
        before_first_sync: BeforeFirstSync::FailClosed,
        wait_s: 1,
        max_indicators: 1000,
        max_update_bytes: 1 << 20,
        spool_max_events: 100,
        upload_interval_ms: 100,
        health_interval_s: 60,
        feeds: vec![],
    }
}

/// The gateway's Central client from `cfg` and what `load_start` read,
/// over a fresh gateway state; `health` is the summary it uploads.
pub fn start_client(
    cfg: CentralSection,
    start: CentralStart,
    health: serde_json::Value,
) -> (Arc<GatewayState>, Arc<Mutex<CentralStatus>>, CentralClient) {
    let (state, _w) = GatewayState::new(start.compiled.clone(), start.indicators.clone());
    let status = Arc::new(Mutex::new(CentralStatus::default()));
    let client = CentralClient::start(
        CentralSetup { config: cfg, start, certs: None, status: status.clone() },
        state.clone(),
        Box::new(move || health.clone()),
    )
    .unwrap();
    (state, status, client)
}

/// Waits (polling every 20 ms) until `f` holds; fails the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An in-process Central (data in `dir/central`) over HTTPS on loopback, and
/// an admin caller.
pub struct TestCentral {
    pub url: String,
    pub admin: http::HttpsClient,
    pub token: String,
}

impl TestCentral {
    /// Initialises and serves a Central keeping `journal` revisions.
    pub async fn start(d: &Path, journal: u64) -> Self {
        server::init(&d.join("central"), "localhost").unwrap();
        let central = Central::open(&d.join("central"), journal).unwrap();
        let cert = std::fs::read(d.join("central/server.pem")).unwrap();
        let key = std::fs::read(d.join("central/server.key")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(http::serve(listener, http::server_tls(&cert, &key).unwrap(), central.handler()));
        let admin = http::HttpsClient::new(&url, &std::fs::read(d.join("central/ca.pem")).unwrap()).unwrap();
        let token = std::fs::read_to_string(d.join("central/admin.token")).unwrap().trim().to_owned();
        TestCentral { url, admin, token }
    }

    /// A `[central]` section for a gateway whose state lives in `d/gw`,
    /// trusting this Central, with a fresh enrollment token.
    pub async fn gateway_section(&self, d: &Path) -> CentralSection {
        let token = self.call(hyper::Method::POST, "/v1/admin/tokens", "").await["token"].as_str().unwrap().to_owned();
        let mut cfg = section(self.url.clone(), d, &d.join("central/ca.pem"));
        cfg.enrollment_token = Some(token);
        cfg
    }

    /// An admin call; its JSON answer (Null when the body is not JSON).
    pub async fn call(&self, method: hyper::Method, path: &str, body: &str) -> serde_json::Value {
        let (_, b) = self.try_call(method, path, body).await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&b).unwrap_or(serde_json::Value::Null)
    }

    /// An admin call that may be refused.
    pub async fn try_call(&self, method: hyper::Method, path: &str, body: &str) -> Result<(hyper::StatusCode, bytes::Bytes), http::HttpError> {
        self.admin
            .call(method, path, Some(&self.token), Some(("application/json", body.as_bytes().to_vec())), Duration::from_secs(10), 1 << 20)
            .await
    }
}
