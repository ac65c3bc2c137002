//! The endpoint simulator binary against a real gateway: its certificates
//! are accepted, its scripted red reaches the table and the other
//! simulated endpoints' lists.

use hbgw_controlplane::heartbeat::{FileDirectory, HeartbeatConfig, HeartbeatDeps, HeartbeatService, PinnedCertStore};
use hbgw_shared::endpoint::{EndpointHealth, EndpointTableWriter, MacAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SIM: &str = env!("CARGO_BIN_EXE_hbgw-endpoint-sim");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_endpoints_heartbeat_and_receive_the_red_list() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = Command::new(SIM).args(["certs", "--endpoints", "3", "--dir"]).arg(&pki).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fingerprints = std::fs::read_to_string(pki.join("pinned.txt")).unwrap();
    assert_eq!(fingerprints.lines().count(), 3);

    let certs = PinnedCertStore::new();
    certs.add_pem_file(&pki.join("pinned.pem")).unwrap();
    let writer = Arc::new(Mutex::new(EndpointTableWriter::new()));
    let table = writer.lock().unwrap().table();
    let config = HeartbeatConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        server_cert: pki.join("gateway.pem"),
        server_key: pki.join("gateway.key"),
        interval: Duration::from_millis(300),
        ..HeartbeatConfig::default()
    };
    let deps = HeartbeatDeps {
        table: writer,
        certs,
        directory: Arc::new(FileDirectory::default()),
        zone_of: Arc::new(|_| None),
        seen_macs: None,
    };
    let service = HeartbeatService::start(config, deps).await.unwrap();
    let addr = service.local_addr().to_string();

    let pki_arg = pki.clone();
    let sim = tokio::task::spawn_blocking(move || {
        Command::new(SIM)
            .args(["run", "--endpoints", "3", "--gateway", &addr, "--duration", "2.5", "--script", "800ms:ep2=red"])
            .arg("--dir")
            .arg(&pki_arg)
            .output()
            .unwrap()
    });
    // While it runs, all three endpoints are in the table, ep2 turns red.
    let ep2 = MacAddr([0x02, 0x5e, 0, 0, 0, 2]);
    let mut saw = (false, false);
    for _ in 0..200 {
        let snap = table.load();
        saw.0 |= snap.endpoint_count() == 3;
        saw.1 |= snap.health_by_mac(&ep2) == EndpointHealth::Red;
        if saw.0 && saw.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = sim.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(saw.0 && saw.1, "endpoints in the table: {saw:?}\n{stdout}");
    assert_eq!(stdout.matches("welcome from hbgw").count(), 3, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.contains("ep0: endpoint list") && l.contains("red [02:5e:00:00:00:02 10.77.0.3]")),
        "ep0 was told ep2 is red\n{stdout}"
    );
    assert!(service.report().summary.at_risk == 1);
    service.shutdown().await;
}

#[test]
fn bad_script_is_a_one_line_error() {
    let out = Command::new(SIM).args(["run", "--dir", "/nonexistent", "--script", "5s:ep9=red"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ep9 does not exist"), "{err}");
}
