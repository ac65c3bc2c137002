//! The built-in default: when no port is named, hbgw bridges two `net_pcap`
//! virtual devices that replay frames it writes itself — the simulated
//! endpoints of `hbgw-endpoint-sim` on the LAN talking to servers on the WAN
//! (DNS queries, TLS ClientHellos, HTTP requests, a mix of frame sizes), and
//! the servers' answers. `infinite_rx` replays them as fast as the
//! worker takes them; transmitted frames are discarded by the device.
//!
//! The addresses are documentation ranges and the frames never leave the
//! process: net_pcap reads them from a file and drops what it transmits.

use hbgw_dataplane::synth;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Simulated endpoints on the LAN (as many as the demo's `hbgw-endpoint-sim`).
pub const ENDPOINTS: u8 = 8;
/// Frames in each direction's file (net_pcap holds them all in mbufs).
pub const FRAMES_PER_FILE: usize = 1024;

/// The files and the EAL arguments that use them.
#[derive(Debug)]
pub struct DemoTraffic {
    /// The directory holding the files (removed with the value).
    pub dir: tempdir::Dir,
    /// EAL `--vdev` arguments for the LAN and WAN ports.
    pub vdev_args: Vec<String>,
    /// The bridge: (lan, wan) device names.
    pub bridge: (String, String),
}

/// A directory removed when dropped.
pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// See the module.
    #[derive(Debug)]
    pub struct Dir(PathBuf);

    impl Dir {
        /// Creates a fresh directory under the system temp dir.
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path)?;
            Ok(Dir(path))
        }

        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The simulated endpoints' addresses, as `hbgw-endpoint-sim` assigns them
/// (endpoint i: MAC 02:5e:00:00:00:i, IP 10.77.0.(i+1)), so that the
/// built-in traffic is the simulated endpoints' traffic.
pub fn endpoint_mac(i: u8) -> [u8; 6] {
    [0x02, 0x5e, 0, 0, 0, i]
}

/// See [`endpoint_mac`].
pub fn endpoint_ip(i: u8) -> [u8; 4] {
    [10, 77, 0, i + 1]
}

const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0xc6, 0x33, 0x64, 0x01];

/// One LAN -> WAN frame and its WAN -> LAN answer, for flow `n`: DNS
/// queries (one name in eight is `malware.example`, which the demo feed
/// lists), TLS ClientHellos, HTTP requests and plain TCP with IMIX-like sizes.
pub fn frame_pair(n: usize) -> (Vec<u8>, Vec<u8>) {
    let ep = (n % ENDPOINTS as usize) as u8;
    let (mac, ip) = (endpoint_mac(ep), endpoint_ip(ep));
    let sport = 40_000 + (n % 20_000) as u16;
    let server = [198, 51, 100, 10 + (n % 20) as u8];
    let reply = |dport: u16, udp: bool, len: usize| {
        let payload = vec![(n % 251) as u8; len];
        if udp {
            synth::udp(ROUTER_MAC, mac, server, ip, dport, sport, &payload)
        } else {
            synth::tcp(ROUTER_MAC, mac, server, ip, dport, sport, &payload)
        }
    };
    match n % 8 {
        0 => {
            let name = if n % 64 == 0 { "malware.example".to_owned() } else { format!("www.site{}.example.net", n % 97) };
            (synth::udp(mac, ROUTER_MAC, ip, server, sport, 53, &synth::dns_query(&name)), reply(53, true, 60))
        }
        1 => (synth::tcp(mac, ROUTER_MAC, ip, server, sport, 443, &synth::client_hello(&format!("api{}.example.net", n % 31))), reply(443, false, 1200)),
        2 => (synth::tcp(mac, ROUTER_MAC, ip, server, sport, 80, &synth::http_get("www.example.org", "/index.html")), reply(80, false, 1400)),
        k => {
            let len = [18, 18, 530, 18, 1430][(k - 3) as usize];
            (synth::tcp(mac, ROUTER_MAC, ip, server, sport, 443, &vec![0u8; len]), reply(443, false, 18))
        }
    }
}

/// Writes `frames` as a pcap file.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let file = File::create(path)?;
    let mut w = PcapWriter::new(file).map_err(std::io::Error::other)?;
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_micros(i as u64 * 10);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f)).map_err(std::io::Error::other)?;
    }
    Ok(())
}

impl DemoTraffic {
    /// Writes the traffic files and returns the EAL arguments to replay them.
    pub fn create() -> std::io::Result<Self> {
        let dir = tempdir::Dir::new("hbgw-demo")?;
        let (lan, wan): (Vec<_>, Vec<_>) = (0..FRAMES_PER_FILE).map(frame_pair).unzip();
        let lan_file: PathBuf = dir.path().join("lan.pcap");
        let wan_file: PathBuf = dir.path().join("wan.pcap");
        write_pcap(&lan_file, &lan)?;
        write_pcap(&wan_file, &wan)?;
        let vdev = |name: &str, file: &Path| format!("--vdev={name},rx_pcap={},infinite_rx=1", file.display());
        Ok(DemoTraffic {
            vdev_args: vec![vdev("net_pcap_lan0", &lan_file), vdev("net_pcap_wan0", &wan_file)],
            bridge: ("net_pcap_lan0".into(), "net_pcap_wan0".into()),
            dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_as_ethernet_ipv4() {
        for n in 0..48 {
            let (a, b) = frame_pair(n);
            for f in [&a, &b] {
                let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
                assert!(p.net.is_some() && p.transport.is_some());
                assert!(f.len() >= 42 && f.len() <= 1514, "{}", f.len());
            }
        }
    }

    #[test]
    fn files_are_written() {
        let d = DemoTraffic::create().unwrap();
        let path = d.dir.path().join("lan.pcap");
        let mut r = pcap_file::pcap::PcapReader::new(File::open(&path).unwrap()).unwrap();
        let mut n = 0;
        while let Some(p) = r.next_packet() {
            p.unwrap();
            n += 1;
        }
        assert_eq!(n, FRAMES_PER_FILE);
        let dir = d.dir.path().to_owned();
        drop(d);
        assert!(!dir.exists());
    }
}
