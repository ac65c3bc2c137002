//! Bad input gets one line naming the problem and the fix, a non-zero exit,
//! and never a panic.

mod common;
use common::*;
use std::time::Duration;

/// Runs hbgw and returns its last stderr line, asserting the contract.
fn refused(args: &[String]) -> String {
    let out = run(args, Duration::from_secs(60));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "should fail: {args:?}\n{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("hbgw: ")).collect();
    assert_eq!(ours.len(), 1, "exactly one hbgw error line:\n{stderr}");
    assert!(ours[0].contains(": "), "cause and fix: {}", ours[0]);
    ours[0].to_owned()
}

fn base_bed() -> PcapBed {
    PcapBed::new(&frames(3, 1), &frames(3, 2))
}

#[test]
fn wrong_eal_argument() {
    let bed = base_bed();
    let mut args = bed.eal(false);
    args.insert(0, "--definitely-not-an-eal-flag".into());
    args.push("--".into());
    let line = refused(&args);
    assert!(line.contains("EAL initialisation failed") && line.contains("EAL arguments"), "{line}");
}

#[test]
fn port_that_does_not_exist() {
    let bed = base_bed();
    let mut args = bed.eal(false);
    args.extend(["--", "--port-pair", "net_pcap0,net_pcap9", "--live", "off"].map(String::from));
    let line = refused(&args);
    assert!(line.contains("port `net_pcap9` does not exist") && line.contains("net_pcap0 (0)"), "{line}");
}

#[test]
fn unknown_config_key_names_line_column_and_key() {
    let bed = base_bed();
    let cfg = bed.path("bad.toml");
    std::fs::write(&cfg, "[dataplane]\nburst_size = 32\nbursts = 4\n").unwrap();
    let mut args = bed.eal(false);
    args.extend(["--".into(), "--config".into(), cfg.display().to_string()]);
    let line = refused(&args);
    assert!(line.contains("bad.toml:3:1") && line.contains("dataplane.bursts"), "{line}");
}

#[test]
fn missing_config_file() {
    let line = refused(&["--".into(), "--config".into(), "/nonexistent/hbgw.toml".into()]);
    assert!(line.contains("cannot read config file /nonexistent/hbgw.toml"), "{line}");
}

#[test]
fn worker_on_the_main_lcore() {
    let bed = base_bed();
    let line = refused(&bed.args(false, &["--workers", "0"]));
    assert!(line.contains("main lcore"), "{line}");
}

#[test]
fn worker_on_an_lcore_eal_was_not_given() {
    let bed = base_bed();
    let line = refused(&bed.args(false, &["--workers", "1,7"]));
    assert!(line.contains("lcore 7") && line.contains("-l"), "{line}");
}

#[test]
fn app_argument_before_the_separator() {
    let line = refused(&["-l".into(), "0,1".into(), "--config".into(), "x.toml".into()]);
    assert!(line.contains("came before `--`"), "{line}");
}

#[test]
fn invalid_burst_size() {
    let bed = base_bed();
    let line = refused(&bed.args(false, &["--burst", "0"]));
    assert!(line.contains("dataplane.burst_size"), "{line}");
}

#[test]
fn stats_socket_in_use_by_another_gateway() {
    let bed = base_bed();
    let _listener = std::os::unix::net::UnixListener::bind(bed.socket()).unwrap();
    let line = refused(&bed.args(false, &[]));
    assert!(line.contains("in use by another running hbgw") && line.contains("--stats-socket"), "{line}");
}

#[test]
fn hugepages_missing_or_used() {
    // Without --no-huge, hbgw either starts on hugepages or says how to get them.
    let bed = base_bed();
    let mut args: Vec<String> = bed.eal(true);
    args.extend(["--", "--port-pair", "net_pcap0,net_pcap1", "--live", "off", "--exit-on-idle", "500", "--stats-socket"].map(String::from));
    args.push(bed.socket().display().to_string());
    let out = run(&args, Duration::from_secs(60));
    let (_, stderr) = text(&out);
    if hbgw::dpdk::eal::hugepages_available() {
        assert!(out.status.success(), "{stderr}");
    } else {
        let line = refused(&args);
        assert!(line.contains("no hugepages mounted: run scripts/setup-hugepages.sh"), "{line}");
    }
}

#[test]
fn stats_without_a_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = std::process::Command::new(HBGW).args(["stats", "--socket"]).arg(&sock).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach the gateway") && stderr.contains("is hbgw running?"), "{stderr}");
}

/// `scripts/cpu-idle-poll.sh`: bad arguments get one line and exit 1, and
/// nothing is written; `--status` names every CPU. (Setting a CPU is not
/// tested here: it would change this machine's power settings.)
#[test]
fn cpu_idle_poll_script_refuses_bad_arguments() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cpu-idle-poll.sh");
    let knob = "/sys/devices/system/cpu/cpu0/power/pm_qos_resume_latency_us";
    let before = std::fs::read_to_string(knob).ok();
    for (args, says) in [
        (&["x"][..], "`x` is not a CPU number"),
        (&["0", "99999"][..], "CPU 99999 has no PM QoS setting"),
        (&[][..], "name the CPUs"),
        (&["--off"][..], "name the CPUs"),
        (&["--bogus"][..], "unknown option --bogus"),
    ] {
        let out = std::process::Command::new("bash").arg(script).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("cpu-idle-poll: ") && stderr.contains(says), "{args:?}: {stderr}");
    }
    // The refused `0 99999` left CPU 0 as it was.
    assert_eq!(std::fs::read_to_string(knob).ok(), before);
    let out = std::process::Command::new("bash").arg(script).arg("--status").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    if before.is_some() {
        assert!(stdout.lines().any(|l| l.starts_with("CPU 0: ")), "{stdout}");
    }
}
