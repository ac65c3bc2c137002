//! Real TLS with a test CA: health reaches the endpoint table; only pinned,
//! valid certificates get in; removing a certificate closes its session;
//! `openssl s_client` interoperates; the server certificate reloads.

#[path = "heartbeat_support/mod.rs"]
mod support;

use hbgw_controlplane::heartbeat::client::{client_config, EndpointConnection};
use hbgw_controlplane::heartbeat::pki::TestPki;
use hbgw_controlplane::heartbeat::protocol::{EndpointMessage, GatewayMessage, ReportedHealth};
use hbgw_shared::endpoint::EndpointHealth;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_health_reaches_the_table() {
    let gw = start(2, |_| {}).await;
    let mut c = gw.connect(0).await;
    c.send(hello(0, ReportedHealth::Green, vec![])).await.unwrap();
    let GatewayMessage::Welcome { endpoint_id, heartbeat_interval_ms, .. } = recv(&mut c).await else { panic!("welcome expected") };
    assert_eq!(heartbeat_interval_ms, 15_000);
    let expected_id = gw.pki.endpoints[0].fingerprint.endpoint_id();
    assert_eq!(endpoint_id, expected_id.0, "the id comes from the certificate");
    let mut reader = gw.table.reader();
    assert_eq!(reader.snapshot().health_by_mac(&mac(0)), EndpointHealth::Green);
    assert_eq!(reader.snapshot().endpoint_by_ip(ip(0)).unwrap().endpoint, expected_id);

    c.send(EndpointMessage::HealthChange { health: ReportedHealth::Red, reason: Some("Troj/Agent".into()) }).await.unwrap();
    wait_until(Duration::from_secs(2), "red in the table", || gw.table.load().health_by_mac(&mac(0)) == EndpointHealth::Red).await;
    c.send(EndpointMessage::Heartbeat { health: ReportedHealth::Yellow }).await.unwrap();
    wait_until(Duration::from_secs(2), "yellow in the table", || gw.table.load().health_by_ip(ip(0)) == EndpointHealth::Yellow).await;

    let report = gw.service.report();
    assert_eq!(report.summary.connected, 1);
    assert_eq!(report.summary.warning, 1);
    let row = &report.endpoints[0];
    assert_eq!(row.name, "PC0");
    assert_eq!(row.id, expected_id);
    assert_eq!(row.last_heartbeat_secs_ago, Some(0));
    assert!(row.peer.as_deref().unwrap().starts_with("127.0.0.1:"));
    serde_json::to_string(&report).unwrap();
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_cannot_impersonate_another() {
    let gw = start(2, |_| {}).await;
    let _a = gw.join(0, ReportedHealth::Green).await;
    // Endpoint 1 says it is agent-0 with endpoint 0's MAC: it still gets its own id.
    let mut b = gw.connect(1).await;
    b.send(hello(0, ReportedHealth::Red, vec![])).await.unwrap();
    let GatewayMessage::Welcome { endpoint_id, .. } = recv(&mut b).await else { panic!() };
    assert_eq!(endpoint_id, gw.pki.endpoints[1].fingerprint.endpoint_id().0);
    assert_ne!(endpoint_id, gw.pki.endpoints[0].fingerprint.endpoint_id().0);
    gw.service.shutdown().await;
}

async fn refused(gw: &Gw, cfg: std::sync::Arc<rustls::ClientConfig>) {
    // With TLS 1.3 the client may finish before the server checks its
    // certificate: the refusal shows as the session failing, never a Welcome.
    match EndpointConnection::connect(gw.service.local_addr(), "localhost", cfg).await {
        Err(_) => {}
        Ok(mut c) => {
            let _ = c.send(hello(0, ReportedHealth::Green, vec![])).await;
            match tokio::time::timeout(Duration::from_secs(5), c.recv()).await.expect("an answer within 5 s") {
                None | Some(Err(_)) => {}
                Some(Ok(m)) => panic!("refused certificate got {m:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_and_expired_certificates_are_refused() {
    let gw = start(1, |_| {}).await;
    let now = time::OffsetDateTime::now_utc();
    // Same CA, not pinned: trusting the CA is not enough.
    let rogue = gw.pki.issue_endpoint("rogue", now - time::Duration::days(1), now + time::Duration::days(30)).unwrap();
    refused(&gw, gw.client_config_for(&rogue.cert_pem, &rogue.key_pem)).await;
    // Pinned but expired.
    let old = gw.pki.issue_endpoint("old", now - time::Duration::days(30), now - time::Duration::days(1)).unwrap();
    gw.service.certs().add_pem(old.cert_pem.as_bytes(), "old").unwrap();
    refused(&gw, gw.client_config_for(&old.cert_pem, &old.key_pem)).await;
    // A pinned certificate presented with another key fails the signature check.
    let other_key = gw.pki.issue_endpoint("x", now, now + time::Duration::days(1)).unwrap().key_pem;
    let forged = client_config(gw.pki.ca_pem.as_bytes(), gw.pki.endpoints[0].cert_pem.as_bytes(), other_key.as_bytes(), false);
    if let Ok(cfg) = forged {
        refused(&gw, cfg).await;
    }
    assert_eq!(gw.table.load().endpoint_count(), 0);
    assert_eq!(gw.service.connected(), 0);
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_certificate_closes_its_session_and_refuses_it() {
    let gw = start(2, |_| {}).await;
    let mut a = gw.join(0, ReportedHealth::Green).await;
    let mut b = gw.join(1, ReportedHealth::Green).await;
    assert!(gw.service.certs().remove(&gw.pki.endpoints[0].fingerprint));
    assert_eq!(expect_closed(&mut a).await.as_deref(), Some("certificate_revoked"));
    wait_until(Duration::from_secs(2), "session gone", || gw.service.connected() == 1).await;
    // The other session is untouched.
    b.send(EndpointMessage::HealthChange { health: ReportedHealth::Red, reason: None }).await.unwrap();
    wait_until(Duration::from_secs(2), "b red", || gw.table.load().health_by_mac(&mac(1)) == EndpointHealth::Red).await;
    // And the removed certificate cannot come back.
    let ep = &gw.pki.endpoints[0];
    refused(&gw, gw.client_config_for(&ep.cert_pem, &ep.key_pem)).await;
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_server_certificate_for_new_connections() {
    let gw = start(1, |_| {}).await;
    let mut live = gw.join(0, ReportedHealth::Green).await;
    let other = TestPki::generate("localhost", &[]).unwrap();
    std::fs::write(gw.dir.path().join("gateway.pem"), &other.gateway.cert_pem).unwrap();
    std::fs::write(gw.dir.path().join("gateway.key"), &other.gateway.key_pem).unwrap();
    gw.service.reload().unwrap();
    let ep = &gw.pki.endpoints[0];
    // A client trusting only the old CA no longer accepts the gateway...
    let old_trust = gw.client_config_for(&ep.cert_pem, &ep.key_pem);
    assert!(EndpointConnection::connect(gw.service.local_addr(), "localhost", old_trust).await.is_err());
    // ...one trusting the new CA does (and replaces the live session).
    let new_trust = client_config(other.ca_pem.as_bytes(), ep.cert_pem.as_bytes(), ep.key_pem.as_bytes(), false).unwrap();
    let mut c = EndpointConnection::connect(gw.service.local_addr(), "localhost", new_trust).await.unwrap();
    c.send(hello(0, ReportedHealth::Yellow, vec![])).await.unwrap();
    assert!(matches!(recv(&mut c).await, GatewayMessage::Welcome { .. }));
    assert_eq!(expect_closed(&mut live).await.as_deref(), Some("replaced"));
    // A bad key file is reported, and the running config stays.
    std::fs::write(gw.dir.path().join("gateway.key"), "not a key").unwrap();
    let err = gw.service.reload().unwrap_err().to_string();
    assert!(err.contains("gateway.key") && err.contains("PEM"), "{err}");
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_when_allowed() {
    let gw = start(1, |_| {}).await;
    let ep = &gw.pki.endpoints[0];
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(gw.pki.ca_pem.as_bytes()).unwrap()).unwrap();
    let tls12_only = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![rustls::pki_types::CertificateDer::from_pem_slice(ep.cert_pem.as_bytes()).unwrap()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(ep.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let cfg = std::sync::Arc::new(tls12_only);
    assert!(EndpointConnection::connect(gw.service.local_addr(), "localhost", cfg.clone()).await.is_err());
    gw.service.shutdown().await;
    let gw = start(1, |c| c.allow_tls12 = true).await;
    let ep = &gw.pki.endpoints[0];
    let cfg = client_config(gw.pki.ca_pem.as_bytes(), ep.cert_pem.as_bytes(), ep.key_pem.as_bytes(), true).unwrap();
    let mut c = EndpointConnection::connect(gw.service.local_addr(), "localhost", cfg).await.unwrap();
    c.send(hello(0, ReportedHealth::Green, vec![])).await.unwrap();
    assert!(matches!(recv(&mut c).await, GatewayMessage::Welcome { .. }));
    gw.service.shutdown().await;
}

fn openssl_available() -> bool {
    Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// Runs `openssl s_client` with the given certificate, sends a Hello frame
/// through it, and returns (whether the endpoint reached the table, output).
async fn s_client(gw: &Gw, cert: &std::path::Path, key: &std::path::Path) -> (bool, String) {
    let port = gw.service.local_addr().port();
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-tls1_3", "-servername", "localhost", "-ign_eof"])
        .arg("-CAfile")
        .arg(gw.dir.path().join("ca.pem"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let body = serde_json::json!({
        "version": 1, "type": "hello", "endpoint_id": "openssl", "name": "OSSL", "health": "green",
        "interfaces": [{"mac": "02:00:00:00:00:01", "ips": ["10.0.0.1"]}], "users": []
    })
    .to_string();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body.as_bytes());
    let mut stdin = child.stdin.take().unwrap();
    // Give s_client time to finish the handshake before it reads stdin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stdin.write_all(&frame);
    let _ = stdin.flush();
    let mut reached = false;
    for _ in 0..200 {
        if gw.table.load().health_by_mac(&support::mac(0)) == EndpointHealth::Green {
            reached = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stdin);
    // Stop it if still running (it has -ign_eof), then collect its output.
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).ok();
    child.stderr.take().unwrap().read_to_string(&mut out).ok();
    (reached, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_interoperates() {
    assert!(openssl_available(), "openssl is needed for this test: apt-get install openssl");
    let gw = start(1, |_| {}).await;
    let eps = gw.dir.path().join("endpoints");
    let (reached, out) = s_client(&gw, &eps.join("ep0.pem"), &eps.join("ep0.key")).await;
    assert!(out.contains("Verify return code: 0"), "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(reached, "a Hello sent through s_client reaches the table\n{out}");

    // An unknown certificate from the same CA: the gateway refuses it.
    let now = time::OffsetDateTime::now_utc();
    let rogue = gw.pki.issue_endpoint("rogue", now - time::Duration::days(1), now + time::Duration::days(1)).unwrap();
    let (cert, key) = (gw.dir.path().join("rogue.pem"), gw.dir.path().join("rogue.key"));
    std::fs::write(&cert, &rogue.cert_pem).unwrap();
    std::fs::write(&key, &rogue.key_pem).unwrap();
    gw.writer.lock().unwrap().replace_all(Vec::new());
    let (reached, out) = s_client(&gw, &cert, &key).await;
    assert!(!reached, "{out}");
    assert!(out.to_lowercase().contains("alert"), "s_client reports the server's alert\n{out}");
    assert_eq!(gw.table.load().endpoint_count(), 0);
    gw.service.shutdown().await;
}
