//! Shared set-up for the heartbeat tests (a directory, so cargo does not build it as a test of its own; included with `#[path]`): a
//! gateway on an ephemeral loopback port with a fresh test PKI, and
//! simulated endpoints that connect with their own certificates.
#![allow(dead_code)]

use hbgw_controlplane::heartbeat::client::{client_config, EndpointConnection};
use hbgw_controlplane::heartbeat::directory::DirectoryUser;
use hbgw_controlplane::heartbeat::pki::TestPki;
use hbgw_controlplane::heartbeat::protocol::{EndpointMessage, GatewayMessage, Hello, ReportedHealth, UserAccount};
use hbgw_controlplane::heartbeat::{
    FileDirectory, HeartbeatConfig, HeartbeatDeps, HeartbeatService, PinnedCertStore, ZoneOf,
};
use hbgw_dataplane::seen_macs::SeenMacsExchange;
use hbgw_shared::endpoint::{EndpointInterface, EndpointTable, EndpointTableWriter, MacAddr};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

pub struct Gw {
    pub service: HeartbeatService,
    pub pki: TestPki,
    pub dir: TempDir,
    pub table: EndpointTable,
    pub writer: Arc<Mutex<EndpointTableWriter>>,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("hbgw_controlplane=debug").try_init();
}

/// Port slot 0 is in zone LAN (a missing-heartbeat zone), slot 1 in WAN.
pub fn zone_of() -> ZoneOf {
    Arc::new(|slot| match slot {
        0 => Some("LAN".to_owned()),
        1 => Some("WAN".to_owned()),
        _ => None,
    })
}

pub fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ep{i}")).collect()
}

pub async fn start(n: usize, tweak: impl FnOnce(&mut HeartbeatConfig)) -> Gw {
    start_with(n, tweak, None).await
}

pub async fn start_with(n: usize, tweak: impl FnOnce(&mut HeartbeatConfig), seen: Option<SeenMacsExchange>) -> Gw {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate("localhost", &names(n)).unwrap();
    pki.write_to(dir.path()).unwrap();
    let certs = PinnedCertStore::new();
    certs.add_pem_file(&dir.path().join("pinned.pem")).unwrap();
    let mut config = HeartbeatConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        server_cert: dir.path().join("gateway.pem"),
        server_key: dir.path().join("gateway.key"),
        ..HeartbeatConfig::default()
    };
    config.missing_heartbeat_zones = ["LAN".to_owned()].into();
    tweak(&mut config);
    let writer = Arc::new(Mutex::new(EndpointTableWriter::new()));
    let table = writer.lock().unwrap().table();
    let directory = FileDirectory::from_users([
        DirectoryUser { domain: "CORP".into(), user: "alice".into(), display_name: Some("Alice".into()), enabled: true },
        DirectoryUser { domain: "CORP".into(), user: "bob".into(), display_name: None, enabled: true },
        DirectoryUser { domain: "CORP".into(), user: "disabled".into(), display_name: None, enabled: false },
    ]);
    let deps = HeartbeatDeps {
        table: writer.clone(),
        certs,
        directory: Arc::new(directory),
        zone_of: zone_of(),
        seen_macs: seen,
    };
    let service = HeartbeatService::start(config, deps).await.unwrap();
    Gw { service, pki, dir, table, writer }
}

pub fn mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, i as u8 + 1])
}

pub fn ip(i: usize) -> IpAddr {
    format!("10.0.0.{}", i + 1).parse().unwrap()
}

pub fn hello(i: usize, health: ReportedHealth, users: Vec<UserAccount>) -> EndpointMessage {
    EndpointMessage::Hello(Hello {
        endpoint_id: format!("agent-{i}"),
        name: format!("PC{i}"),
        health,
        interfaces: vec![EndpointInterface { mac: mac(i), ips: vec![ip(i)] }],
        users,
    })
}

impl Gw {
    pub fn client_config_for(&self, cert_pem: &str, key_pem: &str) -> Arc<rustls::ClientConfig> {
        client_config(self.pki.ca_pem.as_bytes(), cert_pem.as_bytes(), key_pem.as_bytes(), false).unwrap()
    }

    pub async fn connect(&self, i: usize) -> EndpointConnection {
        let ep = &self.pki.endpoints[i];
        let cfg = self.client_config_for(&ep.cert_pem, &ep.key_pem);
        EndpointConnection::connect(self.service.local_addr(), "localhost", cfg).await.unwrap()
    }

    /// Connects endpoint `i`, sends its Hello, reads Welcome and the first list.
    pub async fn join(&self, i: usize, health: ReportedHealth) -> EndpointConnection {
        let mut c = self.connect(i).await;
        c.send(hello(i, health, vec![])).await.unwrap();
        let welcome = recv(&mut c).await;
        assert!(matches!(welcome, GatewayMessage::Welcome { .. }), "{welcome:?}");
        let list = recv(&mut c).await;
        assert!(matches!(list, GatewayMessage::EndpointList { .. }), "{list:?}");
        c
    }
}

/// The next message, failing the test after 5 s.
pub async fn recv(c: &mut EndpointConnection) -> GatewayMessage {
    tokio::time::timeout(Duration::from_secs(5), c.recv())
        .await
        .expect("a message within 5 s")
        .expect("session open")
        .expect("a valid message")
}

/// Waits until `cond` holds, polling every 10 ms, failing after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the session ends (error frame and/or close) within 5 s; returns
/// the error code sent, if any.
pub async fn expect_closed(c: &mut EndpointConnection) -> Option<String> {
    let mut code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), c.recv()).await.expect("closed within 5 s") {
            Some(Ok(GatewayMessage::Error { code: c, .. })) => code = Some(c.as_str().to_owned()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return code,
        }
    }
}
