//! The frames a run sends: a cycle of templates built once at start-up, each
//! ending in room for the stamp. Sending frame `seq` copies template
//! `seq % templates.len()` and stamps it, so the receiver knows which template
//! any frame came from.
//!
//! * `udp`: UDP from a range of endpoint MACs/IPs to a range of servers, at
//!   one frame size (64..=1518, with the 4-byte FCS, as RFC 2544 counts) or
//!   IMIX (7:4:1 of 64, 570 and 1518 bytes);
//! * `app`: the enforcement mix — 20% DNS queries, 10% TLS ClientHellos, 5%
//!   HTTP requests, the rest plain UDP — where `--hit-percent` of the DNS
//!   names, SNIs and HTTP hosts are a listed domain;
//! * a pcap file's frames, as they are.

use hbgw_dataplane::synth;
use std::path::Path;

use crate::stamp::STAMP_LEN;

/// Bytes of Ethernet FCS that frame sizes include but mbufs do not carry.
pub const FCS: usize = 4;
/// The smallest and largest frame sizes (with FCS).
pub const MIN_SIZE: u16 = 64;
/// See [`MIN_SIZE`].
pub const MAX_SIZE: u16 = 1518;
/// Destination MAC of generated frames (the WAN router the demo uses).
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0xc6, 0x33, 0x64, 0x01];

/// Frame size: one size, or IMIX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// One size, with FCS.
    Fixed(u16),
    /// 7:4:1 of 64, 570, 1518.
    Imix,
}

impl std::str::FromStr for FrameSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(FrameSize::Imix);
        }
        let n: u16 = s.parse().map_err(|_| format!("frame size `{s}` is not a number: give {MIN_SIZE}..{MAX_SIZE} or imix"))?;
        if !(MIN_SIZE..=MAX_SIZE).contains(&n) {
            return Err(format!("frame size {n} is out of range: give {MIN_SIZE}..{MAX_SIZE} (bytes with FCS) or imix"));
        }
        Ok(FrameSize::Fixed(n))
    }
}

impl std::fmt::Display for FrameSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameSize::Fixed(n) => write!(f, "{n}"),
            FrameSize::Imix => f.write_str("imix"),
        }
    }
}

/// What the frames carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traffic {
    /// Plain UDP.
    Udp,
    /// DNS, TLS, HTTP and UDP, some hitting `hit_domain`.
    App {
        /// The listed domain hits ask for.
        hit_domain: String,
        /// Percent of DNS/TLS/HTTP frames that name it.
        hit_percent: u8,
    },
}

/// Where the frames come from and go to.
#[derive(Debug, Clone)]
pub struct MixSpec {
    /// Frame size (ignored for application payloads, which have their own).
    pub size: FrameSize,
    /// Payload kind.
    pub traffic: Traffic,
    /// Number of source endpoints.
    pub endpoints: u32,
    /// The first endpoint's MAC; the others count up in the low 3 bytes.
    pub first_mac: [u8; 6],
    /// The first endpoint's IPv4 address; the others count up.
    pub first_ip: [u8; 4],
    /// Number of destination servers, counting up from `first_server`.
    pub servers: u32,
    /// The first server's IPv4 address.
    pub first_server: [u8; 4],
}

impl Default for MixSpec {
    /// The demo's endpoints (MAC 02:5e:00:00:00:00.., IP 10.77.0.1..) talking
    /// to servers in 198.51.100.0/24 (documentation addresses).
    fn default() -> Self {
        MixSpec {
            size: FrameSize::Fixed(64),
            traffic: Traffic::Udp,
            endpoints: 8,
            first_mac: [0x02, 0x5e, 0, 0, 0, 0],
            first_ip: [10, 77, 0, 1],
            servers: 16,
            first_server: [198, 51, 100, 10],
        }
    }
}

fn add_mac(base: [u8; 6], k: u32) -> [u8; 6] {
    let low = u32::from_be_bytes([0, base[3], base[4], base[5]]).wrapping_add(k) & 0x00ff_ffff;
    let b = low.to_be_bytes();
    [base[0], base[1], base[2], b[1], b[2], b[3]]
}

fn add_ip(base: [u8; 4], k: u32) -> [u8; 4] {
    u32::from_be_bytes(base).wrapping_add(k).to_be_bytes()
}

/// A UDP frame of exactly `size` bytes with FCS, its payload the stamp.
fn udp_frame(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], sport: u16, size: u16) -> Vec<u8> {
    let payload = vec![0u8; usize::from(size) - FCS - 42];
    let mut f = synth::udp(src_mac, ROUTER_MAC, src, dst, sport, 4500, &payload);
    // UDP checksum 0 ("none", allowed in IPv4): the stamp changes per frame.
    f[40] = 0;
    f[41] = 0;
    f
}

/// An application frame followed by a zeroed trailer for the stamp.
fn with_trailer(mut f: Vec<u8>) -> Vec<u8> {
    f.resize(f.len() + STAMP_LEN, 0);
    f
}

/// The frame sizes (with FCS) of the cycle, in sending order.
fn size_cycle(size: FrameSize) -> Vec<u16> {
    match size {
        FrameSize::Fixed(n) => vec![n],
        // Interleaved rather than 7 small then 4 medium: bursts stay mixed.
        FrameSize::Imix => vec![64, 570, 64, 570, 64, 1518, 64, 570, 64, 570, 64, 64],
    }
}

/// Builds the template cycle.
pub fn templates(spec: &MixSpec) -> Result<Vec<Vec<u8>>, String> {
    if spec.endpoints == 0 || spec.servers == 0 {
        return Err("--endpoints and --servers must be at least 1".into());
    }
    let sizes = size_cycle(spec.size);
    // Enough templates to cover every endpoint, every size and the mix's
    // proportions, bounded so the cycle stays in cache.
    let n = (spec.endpoints as usize).clamp(100, 4096).max(sizes.len()) / sizes.len() * sizes.len();
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let ep = k as u32 % spec.endpoints;
        let (mac, ip) = (add_mac(spec.first_mac, ep), add_ip(spec.first_ip, ep));
        let dst = add_ip(spec.first_server, k as u32 % spec.servers);
        let sport = 1024 + (k % 60_000) as u16;
        let size = sizes[k % sizes.len()];
        let frame = match &spec.traffic {
            Traffic::Udp => udp_frame(mac, ip, dst, sport, size),
            Traffic::App { hit_domain, hit_percent } => {
                // Per 100 frames: 20 DNS, 10 TLS, 5 HTTP, 65 UDP.
                let slot = k % 100;
                let hit = (k / 100 * 37 + slot) % 100 < usize::from(*hit_percent);
                let name = |plain: String| if hit { hit_domain.clone() } else { plain };
                match slot {
                    0..=19 => with_trailer(synth::udp(mac, ROUTER_MAC, ip, dst, sport, 53, &synth::dns_query(&name(format!("www.site{k}.example.net"))))),
                    20..=29 => with_trailer(synth::tcp(mac, ROUTER_MAC, ip, dst, sport, 443, &synth::client_hello(&name(format!("api{k}.example.net"))))),
                    30..=34 => with_trailer(synth::tcp(mac, ROUTER_MAC, ip, dst, sport, 80, &synth::http_get(&name(format!("www{k}.example.org")), "/index.html"))),
                    _ => udp_frame(mac, ip, dst, sport, size),
                }
            }
        };
        out.push(frame);
    }
    Ok(out)
}

/// Templates from a pcap file: each frame as it is, plus the stamp trailer.
pub fn templates_from_pcap(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}: check the --pcap path", path.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(file)
        .map_err(|e| format!("{} is not a pcap file ({e}): give a classic pcap (not pcapng)", path.display()))?;
    let mut out = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.map_err(|e| format!("{}: frame {} is unreadable ({e}): the file is truncated or corrupt", path.display(), out.len() + 1))?;
        if p.data.len() < 14 || p.data.len() > 1514 {
            return Err(format!(
                "{}: frame {} has {} bytes: frames must be 14..1514 bytes (no FCS; jumbo frames are not supported)",
                path.display(),
                out.len() + 1,
                p.data.len()
            ));
        }
        out.push(with_trailer(p.data.into_owned()));
    }
    if out.is_empty() {
        return Err(format!("{} holds no frames", path.display()));
    }
    Ok(out)
}

/// Mean frame size on the wire, with FCS.
pub fn mean_size(templates: &[Vec<u8>]) -> f64 {
    templates.iter().map(|t| (t.len().max(60) + FCS) as f64).sum::<f64>() / templates.len().max(1) as f64
}

/// The largest rate a link of `mbps` carries at `mean_size`-byte frames
/// (each also takes 20 bytes of preamble and inter-frame gap).
pub fn line_rate_pps(mbps: u32, mean_size: f64) -> f64 {
    f64::from(mbps) * 1e6 / ((mean_size + 20.0) * 8.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp;

    fn parse(f: &[u8]) -> etherparse::SlicedPacket<'_> {
        etherparse::SlicedPacket::from_ethernet(f).expect("frame parses")
    }

    #[test]
    fn sizes_are_validated() {
        assert_eq!("64".parse::<FrameSize>(), Ok(FrameSize::Fixed(64)));
        assert_eq!("IMIX".parse::<FrameSize>(), Ok(FrameSize::Imix));
        for bad in ["63", "1519", "0", "big"] {
            let e = bad.parse::<FrameSize>().unwrap_err();
            assert!(e.contains("64..1518") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn udp_frames_have_the_asked_size_and_take_a_stamp() {
        for size in [64u16, 128, 512, 1518] {
            let spec = MixSpec { size: FrameSize::Fixed(size), ..MixSpec::default() };
            let t = templates(&spec).unwrap();
            for f in &t {
                assert_eq!(f.len() + FCS, usize::from(size));
                let mut f = f.clone();
                stamp::write(&mut f, 7, 9);
                assert_eq!(stamp::read(&f), Some((7, 9)));
                // Still a valid UDP frame whose payload is the stamp.
                let p = parse(&f);
                let Some(etherparse::TransportSlice::Udp(u)) = p.transport else { panic!("udp") };
                assert_eq!(u.checksum(), 0);
            }
        }
    }

    #[test]
    fn imix_is_seven_four_one() {
        let t = templates(&MixSpec { size: FrameSize::Imix, ..MixSpec::default() }).unwrap();
        let count = |s: usize| t.iter().filter(|f| f.len() + FCS == s).count();
        assert_eq!((count(64) * 4, count(570) * 7), (count(570) * 7, count(64) * 4));
        assert_eq!(count(64), 7 * count(1518));
        assert!((mean_size(&t) - (7.0 * 64.0 + 4.0 * 570.0 + 1518.0) / 12.0).abs() < 0.01);
    }

    #[test]
    fn endpoints_count_up_from_the_first() {
        let spec = MixSpec { endpoints: 300, ..MixSpec::default() };
        let t = templates(&spec).unwrap();
        let srcs: std::collections::HashSet<_> = t.iter().map(|f| (f[6..12].to_vec(), f[26..30].to_vec())).collect();
        assert_eq!(srcs.len(), 300);
        assert!(srcs.contains(&(vec![0x02, 0x5e, 0, 0, 1, 0x2b], vec![10, 77, 1, 44])), "endpoint 299");
    }

    #[test]
    fn app_mix_has_its_proportions_and_hits() {
        let spec = MixSpec {
            traffic: Traffic::App { hit_domain: "malware.example".into(), hit_percent: 10 },
            endpoints: 1000,
            ..MixSpec::default()
        };
        let t = templates(&spec).unwrap();
        let (mut dns, mut tls, mut http, mut hits) = (0, 0, 0, 0);
        for f in &t {
            let p = parse(f);
            let payload = match p.transport {
                Some(etherparse::TransportSlice::Udp(u)) if u.destination_port() == 53 => { dns += 1; u.payload().to_vec() }
                Some(etherparse::TransportSlice::Tcp(t)) if t.destination_port() == 443 => { tls += 1; t.payload().to_vec() }
                Some(etherparse::TransportSlice::Tcp(t)) if t.destination_port() == 80 => { http += 1; t.payload().to_vec() }
                _ => continue,
            };
            let needle = b"malware";
            if payload.windows(needle.len()).any(|w| w == needle) {
                hits += 1;
            }
            // The trailer is blank until the frame is sent and stamped.
            assert_eq!(stamp::read(f), None);
        }
        let n = t.len();
        assert_eq!((dns * 100 / n, tls * 100 / n, http * 100 / n), (20, 10, 5));
        let app = dns + tls + http;
        assert!(hits * 100 / app >= 8 && hits * 100 / app <= 12, "{hits} of {app}");
    }

    #[test]
    fn line_rate_of_ten_gigabit_at_64_bytes() {
        assert!((line_rate_pps(10_000, 64.0) - 14_880_952.0).abs() < 1.0);
    }
}
