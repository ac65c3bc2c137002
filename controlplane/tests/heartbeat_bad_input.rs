//! Bad input is refused, and a healthy session beside it never notices:
//! plain TCP, no client certificate, garbage after TLS, an oversize frame,
//! unknown version or type, no hello, a handshake that never finishes, a
//! connection flood.

#[path = "heartbeat_support/mod.rs"]
mod support;

use hbgw_controlplane::heartbeat::client::EndpointConnection;
use hbgw_controlplane::heartbeat::protocol::{EndpointMessage, ReportedHealth};
use hbgw_shared::endpoint::EndpointHealth;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Writes raw bytes inside the TLS session, then expects an error frame
/// with `code` and the close.
async fn raw_then_error(gw: &Gw, i: usize, bytes: &[u8], code: &str) {
    let mut c = gw.connect(i).await;
    c.get_mut().write_all(bytes).await.unwrap();
    c.get_mut().flush().await.unwrap();
    assert_eq!(expect_closed(&mut c).await.as_deref(), Some(code), "for {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(40)]));
}

fn frame(body: &str) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body.as_bytes());
    f
}

/// The healthy endpoint 0 still works: a health change reaches the table.
async fn healthy_still_works(gw: &Gw, c: &mut EndpointConnection, health: ReportedHealth) {
    c.send(EndpointMessage::HealthChange { health, reason: None }).await.unwrap();
    let want = EndpointHealth::from(health);
    wait_until(Duration::from_secs(2), "healthy session works", || gw.table.load().health_by_mac(&mac(0)) == want).await;
}

/// The server closes `s` (EOF or reset) within `limit`.
async fn closed_by_server(s: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await.expect("server closed the connection in time") {
            Ok(0) | Err(_) => return,
            Ok(_) => continue, // a TLS alert, then the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_get_an_error_frame_and_the_close() {
    let gw = start(2, |c| c.max_frame_len = 4096).await;
    let mut healthy = gw.join(0, ReportedHealth::Green).await;

    // Garbage after the handshake: a length prefix, then not JSON.
    raw_then_error(&gw, 1, &frame("\u{1}\u{2}\u{3} definitely not json"), "malformed").await;
    // A frame over the limit: refused from its length prefix alone.
    raw_then_error(&gw, 1, &[0x00, 0x10, 0x00, 0x00, b'{'], "frame_too_large").await;
    // Unknown version, unknown type, and a first message that is not hello.
    raw_then_error(&gw, 1, &frame(r#"{"version":2,"type":"hello"}"#), "unsupported_version").await;
    raw_then_error(&gw, 1, &frame(r#"{"version":1,"type":"format_disk"}"#), "unknown_message").await;
    raw_then_error(&gw, 1, &frame(r#"{"version":1,"type":"heartbeat","health":"green"}"#), "hello_expected").await;
    healthy_still_works(&gw, &mut healthy, ReportedHealth::Yellow).await;

    // After the hello too: a bad frame ends that session only.
    let mut c = gw.join(1, ReportedHealth::Green).await;
    c.get_mut().write_all(&frame(r#"{"version":1,"type":"heartbeat","health":"ultraviolet"}"#)).await.unwrap();
    assert_eq!(expect_closed(&mut c).await.as_deref(), Some("malformed"));
    healthy_still_works(&gw, &mut healthy, ReportedHealth::Red).await;
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_and_no_client_certificate_are_refused() {
    let gw = start(1, |_| {}).await;
    let mut healthy = gw.join(0, ReportedHealth::Green).await;
    let addr = gw.service.local_addr();
    // Plain TCP speaking the protocol without TLS.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&frame(r#"{"version":1,"type":"hello","endpoint_id":"x","name":"x","health":"green"}"#)).await.unwrap();
    closed_by_server(&mut s, Duration::from_secs(3)).await;
    // Random bytes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(64)).await.unwrap();
    closed_by_server(&mut s, Duration::from_secs(3)).await;
    // TLS without a client certificate.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(gw.pki.ca_pem.as_bytes()).unwrap()).unwrap();
    let anon = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    match EndpointConnection::connect(addr, "localhost", std::sync::Arc::new(anon)).await {
        Err(_) => {}
        Ok(mut c) => {
            let _ = c.send(hello(0, ReportedHealth::Red, vec![])).await;
            assert!(!matches!(tokio::time::timeout(Duration::from_secs(5), c.recv()).await.unwrap(), Some(Ok(_))));
        }
    }
    assert_eq!(gw.service.connected(), 1);
    healthy_still_works(&gw, &mut healthy, ReportedHealth::Yellow).await;
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_and_handshake_timeouts() {
    let gw = start(1, |c| {
        c.hello_timeout = Duration::from_millis(300);
        c.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    // TLS done, no hello.
    let mut c = gw.connect(0).await;
    let t = Instant::now();
    assert_eq!(expect_closed(&mut c).await.as_deref(), Some("hello_timeout"));
    assert!(t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // TCP open, handshake never started.
    let mut s = TcpStream::connect(gw.service.local_addr()).await.unwrap();
    let t = Instant::now();
    closed_by_server(&mut s, Duration::from_secs(3)).await;
    assert!(t.elapsed() >= Duration::from_millis(250), "{:?}", t.elapsed());
    assert_eq!(gw.table.load().endpoint_count(), 0);
    gw.service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_capped() {
    let gw = start(1, |c| {
        c.max_handshakes = 4;
        c.max_connections = 6;
        c.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = gw.service.local_addr();
    // Four connections that never handshake hold every handshake slot.
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The next ones are closed at once, long before the handshake timeout.
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        closed_by_server(&mut s, Duration::from_millis(1500)).await;
        assert!(t.elapsed() < Duration::from_millis(1000));
    }
    // When the idle handshakes time out, a real endpoint gets in.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let _healthy = gw.join(0, ReportedHealth::Green).await;
    assert_eq!(gw.table.load().health_by_mac(&mac(0)), EndpointHealth::Green);
    drop(holders);
    gw.service.shutdown().await;
}
