//! Helpers for end-to-end tests that run the real `hbgw` binary on DPDK
//! virtual devices. Every EAL start here uses `--no-pci`, its own
//! `--file-prefix`, and `--no-huge --no-shconf` unless a test asks for
//! hugepages, so nothing is left behind and no real device is touched.
#![allow(dead_code)]

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const HBGW: &str = env!("CARGO_BIN_EXE_hbgw");

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique EAL file prefix for this test process.
pub fn file_prefix() -> String {
    format!("hbgw-test-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// `n` frames of varied sizes and protocols, each carrying its index, so that
/// reordering, loss or modification is visible.
pub fn frames(n: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let src = [0x02, seed, 0, 0, (i >> 8) as u8, i as u8];
            let dst = [0x02, 0xff, 0, 0, 0, seed];
            let len = [18usize, 100, 400, 1000, 1458][i % 5];
            let mut payload = vec![seed; len];
            payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
            let mut out = Vec::new();
            match i % 3 {
                0 => PacketBuilder::ethernet2(src, dst)
                    .ipv4([10, 0, seed, 1], [192, 0, 2, 1], 64)
                    .udp(1000 + i as u16, 53)
                    .write(&mut out, &payload)
                    .unwrap(),
                1 => PacketBuilder::ethernet2(src, dst)
                    .ipv6([0xfd; 16], [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 64)
                    .tcp(40000, 443, i as u32, 1000)
                    .write(&mut out, &payload)
                    .unwrap(),
                _ => PacketBuilder::ethernet2(src, dst)
                    .single_vlan(100.try_into().unwrap())
                    .ipv4([10, 0, seed, 2], [198, 51, 100, 7], 64)
                    .tcp(40001, 80, i as u32, 1000)
                    .write(&mut out, &payload)
                    .unwrap(),
            }
            out
        })
        .collect()
}

pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(Duration::from_micros(i as u64), f.len() as u32, f)).unwrap();
    }
}

pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

/// A bridge of two net_pcap ports reading `lan_in`/`wan_in` and writing
/// `lan_out`/`wan_out` in `dir`.
pub struct PcapBed {
    pub dir: tempfile::TempDir,
}

impl PcapBed {
    pub fn new(lan_in: &[Vec<u8>], wan_in: &[Vec<u8>]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_pcap(&dir.path().join("lan_in.pcap"), lan_in);
        write_pcap(&dir.path().join("wan_in.pcap"), wan_in);
        PcapBed { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("stats.sock")
    }

    /// EAL args for the two ports (no-huge unless `huge`).
    pub fn eal(&self, huge: bool) -> Vec<String> {
        let mut a: Vec<String> = vec!["-l".into(), "0,1".into(), "--no-pci".into(), format!("--file-prefix={}", file_prefix())];
        if huge {
            a.push("--huge-unlink".into());
            a.extend(["-m".into(), "256".into()]);
        } else {
            a.extend(["--no-huge".into(), "--no-shconf".into(), "-m".into(), "512".into()]);
        }
        let p = |n: &str| self.path(n).display().to_string();
        a.push(format!("--vdev=net_pcap0,rx_pcap={},tx_pcap={}", p("lan_in.pcap"), p("lan_out.pcap")));
        a.push(format!("--vdev=net_pcap1,rx_pcap={},tx_pcap={}", p("wan_in.pcap"), p("wan_out.pcap")));
        a
    }

    /// Full argument list: EAL args, `--`, the app args common to tests, `extra`.
    pub fn args(&self, huge: bool, extra: &[&str]) -> Vec<String> {
        let mut a = self.eal(huge);
        a.push("--".into());
        a.extend(
            ["--port-pair", "net_pcap0,net_pcap1", "--live", "off", "--stats-socket"]
                .iter()
                .map(|s| s.to_string()),
        );
        a.push(self.socket().display().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
}

/// Runs hbgw to completion with a timeout; kills it (by PID) if it hangs.
pub fn run(args: &[String], timeout: Duration) -> Output {
    let child = Command::new(HBGW).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_with_timeout(child, timeout)
}

pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hbgw did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Sends `sig` to the child (only ever to a process this test started).
pub fn signal(child: &Child, sig: i32) {
    // SAFETY-free: libc::kill on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Whether hugepage tests should run (the test script reserved pages).
pub fn hugepage_tests() -> bool {
    std::env::var("HBGW_TEST_HUGEPAGES").is_ok_and(|v| v == "1")
}
