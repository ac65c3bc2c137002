//! The whole chain: one Ethernet frame in, one [`ParsedFrame`] out.
//!
//! # Contract
//!
//! [`parse_frame`] runs the protocol parsers in the order the headers appear
//! and stops at the first [`Malformed`] L2–L4 header. What it does not know
//! is not malformed: an unknown EtherType gives [`Network::Other`], an
//! unknown IP protocol [`Transport::Other`], and a non-first IP fragment
//! [`Transport::Fragment`] (its L4 header lives in another packet).
//!
//! One application hint is looked for, chosen by a byte or a port so that a
//! frame costs at most one application parser:
//!
//! * UDP to port 53, or TCP to port 53 (with its length prefix): the first
//!   question's name ([`AppHint::DnsQuery`]);
//! * other TCP data starting with 0x16: a ClientHello's SNI
//!   ([`AppHint::TlsSni`]), on any port;
//! * other TCP data starting with an ASCII letter: an HTTP/1.x request
//!   ([`AppHint::HttpRequest`]), on any port.
//!
//! Application data that is cut short or does not parse gives no hint.
//! Nothing here allocates: [`ParsedFrame`] borrows from the frame.

use super::arp::Arp;
use super::dns::{self, DnsQuery};
use super::ethernet::{self, Ethernet, VlanIds};
use super::http::{self, HttpRequest};
use super::icmp::Icmp;
use super::ipv4::Ipv4;
use super::ipv6::Ipv6;
use super::tcp::{Tcp, TcpFlags};
use super::tls;
use super::udp::Udp;
use super::Malformed;
use std::net::IpAddr;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// The L3 part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network<'a> {
    /// ARP.
    Arp(Arp),
    /// IPv4.
    Ipv4(Ipv4<'a>),
    /// IPv6, extension headers walked.
    Ipv6(Ipv6<'a>),
    /// An EtherType this parser does not read (LLDP, 802.3 length, ...).
    Other,
}

/// The L4 part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// Not IP, or IPv6 with no next header.
    None,
    /// A non-first fragment: IP addresses only.
    Fragment,
    /// TCP.
    Tcp(Tcp<'a>),
    /// UDP.
    Udp(Udp<'a>),
    /// ICMP (IPv4).
    Icmp(Icmp<'a>),
    /// ICMPv6.
    Icmpv6(Icmp<'a>),
    /// Another IP protocol (ESP, GRE, SCTP, ...), by number.
    Other(u8),
}

/// What the application data says about where the flow is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppHint<'a> {
    /// A DNS query; decode its name with [`DnsQuery::write_name`].
    DnsQuery(DnsQuery<'a>),
    /// The server name of a TLS ClientHello, as sent.
    TlsSni(&'a [u8]),
    /// The start of an HTTP/1.x request.
    HttpRequest(HttpRequest<'a>),
}

/// A frame's headers, parsed in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame<'a> {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN ids, outermost first.
    pub vlans: VlanIds,
    /// The EtherType after the VLAN tags.
    pub ethertype: u16,
    /// L3.
    pub network: Network<'a>,
    /// L4.
    pub transport: Transport<'a>,
    /// The application hint, if one was found.
    pub app: Option<AppHint<'a>>,
}

impl<'a> ParsedFrame<'a> {
    /// Source IP address.
    pub fn src_ip(&self) -> Option<IpAddr> {
        match &self.network {
            Network::Ipv4(p) => Some(p.src.into()),
            Network::Ipv6(p) => Some(p.src.into()),
            _ => None,
        }
    }

    /// Destination IP address.
    pub fn dst_ip(&self) -> Option<IpAddr> {
        match &self.network {
            Network::Ipv4(p) => Some(p.dst.into()),
            Network::Ipv6(p) => Some(p.dst.into()),
            _ => None,
        }
    }

    /// The upper-layer protocol number (after IPv6 extension headers).
    pub fn ip_protocol(&self) -> Option<u8> {
        match &self.network {
            Network::Ipv4(p) => Some(p.protocol),
            Network::Ipv6(p) => Some(p.protocol),
            _ => None,
        }
    }

    /// Source and destination ports, for TCP and UDP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match &self.transport {
            Transport::Tcp(t) => Some((t.src_port, t.dst_port)),
            Transport::Udp(u) => Some((u.src_port, u.dst_port)),
            _ => None,
        }
    }

    /// TCP flags, for TCP.
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        match &self.transport {
            Transport::Tcp(t) => Some(t.flags),
            _ => None,
        }
    }

    /// ICMP or ICMPv6 type and code.
    pub fn icmp_type_code(&self) -> Option<(u8, u8)> {
        match &self.transport {
            Transport::Icmp(i) | Transport::Icmpv6(i) => Some((i.icmp_type, i.code)),
            _ => None,
        }
    }
}

/// Parses `frame` from the Ethernet header up to the application hint.
pub fn parse_frame(frame: &[u8]) -> Result<ParsedFrame<'_>, Malformed> {
    let eth = Ethernet::parse(frame)?;
    let (network, l4) = match eth.ethertype {
        ethernet::ETHERTYPE_ARP => (Network::Arp(Arp::parse(eth.payload)?), None),
        ethernet::ETHERTYPE_IPV4 => {
            let ip = Ipv4::parse(eth.payload)?;
            let l4 = ip.is_first_fragment().then_some((ip.protocol, ip.payload));
            (Network::Ipv4(ip), l4)
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = Ipv6::parse(eth.payload)?;
            let l4 = ip.is_first_fragment().then_some((ip.protocol, ip.payload));
            (Network::Ipv6(ip), l4)
        }
        _ => (Network::Other, None),
    };
    let transport = match (l4, &network) {
        (None, Network::Ipv4(_) | Network::Ipv6(_)) => Transport::Fragment,
        (None, _) => Transport::None,
        (Some((PROTO_TCP, l4)), _) => Transport::Tcp(Tcp::parse(l4)?),
        (Some((PROTO_UDP, l4)), _) => Transport::Udp(Udp::parse(l4)?),
        (Some((PROTO_ICMP, l4)), Network::Ipv4(_)) => Transport::Icmp(Icmp::parse(l4)?),
        (Some((PROTO_ICMPV6, l4)), Network::Ipv6(_)) => Transport::Icmpv6(Icmp::parse(l4)?),
        (Some((super::ipv6::NH_NONE, _)), Network::Ipv6(_)) => Transport::None,
        (Some((proto, _)), _) => Transport::Other(proto),
    };
    Ok(ParsedFrame {
        dst_mac: eth.dst,
        src_mac: eth.src,
        vlans: eth.vlans,
        ethertype: eth.ethertype,
        network,
        transport,
        app: app_hint(&transport),
    })
}

/// At most one application parser per frame, chosen by port or first byte.
fn app_hint<'a>(transport: &Transport<'a>) -> Option<AppHint<'a>> {
    match transport {
        Transport::Udp(u) => app_hint_of(PROTO_UDP, u.dst_port, u.payload),
        Transport::Tcp(t) => app_hint_of(PROTO_TCP, t.dst_port, t.payload),
        _ => None,
    }
}

/// The application hint of a TCP or UDP `payload` to `dst_port`, as
/// [`parse_frame`] finds it (also used by the flow cache, which reads these
/// three from a frame's bytes without parsing the rest).
#[inline]
pub fn app_hint_of(protocol: u8, dst_port: u16, payload: &[u8]) -> Option<AppHint<'_>> {
    match protocol {
        PROTO_UDP if dst_port == dns::PORT => dns::parse_query(payload).ok().map(AppHint::DnsQuery),
        PROTO_TCP if dst_port == dns::PORT => dns::parse_tcp_query(payload).ok().map(AppHint::DnsQuery),
        PROTO_TCP => match payload.first()? {
            &tls::CONTENT_HANDSHAKE => tls::parse_client_hello_sni(payload).ok().map(AppHint::TlsSni),
            b if b.is_ascii_alphabetic() => http::parse_request(payload).ok().map(AppHint::HttpRequest),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::dns::DnsName;
    use etherparse::PacketBuilder;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn build(b: etherparse::PacketBuilderStep<etherparse::UdpHeader>, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn tcp_frame(v6: bool, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(MAC_A, MAC_B).single_vlan(10u16.try_into().unwrap());
        let ip = if v6 { eth.ipv6([1; 16], [2; 16], 64) } else { eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64) };
        let mut out = Vec::new();
        ip.tcp(40000, dst_port, 1, 1024).ack(9).psh().write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn udp_dns_query_over_qinq() {
        let dns = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'W', b'w', b'w', 4, b't', b'e', b's', b't', 0, 0, 1, 0,
            1,
        ];
        let f = build(
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .double_vlan(100u16.try_into().unwrap(), 200u16.try_into().unwrap())
                .ipv4([10, 0, 0, 1], [8, 8, 8, 8], 64)
                .udp(5000, 53),
            &dns,
        );
        let p = parse_frame(&f).unwrap();
        assert_eq!((p.src_mac, p.dst_mac), (MAC_A, MAC_B));
        assert_eq!(p.vlans.as_slice(), &[100, 200]);
        assert_eq!(p.ethertype, ethernet::ETHERTYPE_IPV4);
        assert_eq!(p.src_ip(), Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(p.dst_ip(), Some(IpAddr::from([8, 8, 8, 8])));
        assert_eq!((p.ip_protocol(), p.ports(), p.tcp_flags()), (Some(PROTO_UDP), Some((5000, 53)), None));
        let Some(AppHint::DnsQuery(q)) = p.app else { panic!("{:?}", p.app) };
        assert_eq!(q.write_name(&mut DnsName::new()), "www.test");
    }

    #[test]
    fn tls_and_http_hints_over_both_ip_versions() {
        let hello = crate::parse::tls::tests::client_hello(Some(b"sni.example"), &[1; 32]);
        for v6 in [false, true] {
            let f = tcp_frame(v6, 8443, &hello);
            let p = parse_frame(&f).unwrap();
            assert_eq!(p.app, Some(AppHint::TlsSni(b"sni.example")));
            let flags = p.tcp_flags().unwrap();
            assert!(flags.has(TcpFlags::ACK | TcpFlags::PSH) && !flags.has(TcpFlags::SYN));
            assert_eq!(p.ports(), Some((40000, 8443)));
            assert_eq!(p.vlans.as_slice(), &[10]);

            let f = tcp_frame(v6, 80, b"GET /x HTTP/1.1\r\nHost: h.example:80\r\n\r\n");
            let p = parse_frame(&f).unwrap();
            let Some(AppHint::HttpRequest(r)) = p.app else { panic!() };
            assert_eq!((r.method, r.path, r.host()), (&b"GET"[..], &b"/x"[..], Some(&b"h.example"[..])));

            let mut dns = vec![0, 29];
            dns.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e']);
            dns.extend_from_slice(&[0, 0, 28, 0, 1]);
            let f = tcp_frame(v6, 53, &dns);
            let Some(AppHint::DnsQuery(q)) = parse_frame(&f).unwrap().app else { panic!() };
            assert_eq!((q.write_name(&mut DnsName::new()), q.qtype), ("example", 28));

            // A ClientHello cut by the segment is no hint, and no error.
            let f = tcp_frame(v6, 443, &hello[..hello.len() - 1]);
            let p = parse_frame(&f).unwrap();
            assert_eq!(p.app, None);
        }
    }

    #[test]
    fn arp_icmp_and_unknown() {
        // etherparse 0.16 has no ARP builder: Ethernet header + the arp.rs layout.
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&ethernet::ETHERTYPE_ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        f.resize(60, 0);
        let p = parse_frame(&f).unwrap();
        let Network::Arp(a) = p.network else { panic!() };
        assert_eq!((a.operation, a.target_ip), (1, [10, 0, 0, 2].into()));
        assert_eq!((p.transport, p.src_ip()), (Transport::None, None));

        let mut f = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6([1; 16], [2; 16], 1)
            .icmpv6_echo_request(7, 1)
            .write(&mut f, b"ping")
            .unwrap();
        assert_eq!(parse_frame(&f).unwrap().icmp_type_code(), Some((128, 0)));

        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
        let p = parse_frame(&f).unwrap();
        assert_eq!((p.network, p.transport, p.app), (Network::Other, Transport::None, None));
    }

    #[test]
    fn fragments_carry_no_l4() {
        let mut f =
            build(PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1, 53), &[0; 16]);
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x02; // offset 16 bytes: a later fragment
        let p = parse_frame(&f).unwrap();
        assert_eq!((p.transport, p.ip_protocol()), (Transport::Fragment, Some(PROTO_UDP)));
        // A first fragment too short for its TCP header is malformed.
        let mut f = tcp_frame(false, 80, b"");
        let ip_len = 20 + 8;
        f[14 + 4 + 2..14 + 4 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        f[14 + 4 + 6] = 0x20; // MF
        assert_eq!(parse_frame(&f), Err(Malformed::TcpTruncated));
    }

    #[test]
    fn malformed_layers() {
        assert_eq!(parse_frame(&[0; 13]), Err(Malformed::EthernetTruncated));
        let f = tcp_frame(false, 80, b"");
        // Ethernet 14 + VLAN 4 + IPv4 20 + TCP 20.
        assert_eq!(parse_frame(&f[..16]), Err(Malformed::VlanTruncated));
        assert_eq!(parse_frame(&f[..30]), Err(Malformed::Ipv4Truncated));
        assert_eq!(parse_frame(&f[..50]), Err(Malformed::Ipv4BadTotalLength));
        let mut g = f.clone();
        g[18 + 20 + 12] = 0x40;
        assert_eq!(parse_frame(&g), Err(Malformed::TcpBadDataOffset));
        let f6 = tcp_frame(true, 80, b"");
        assert_eq!(parse_frame(&f6[..50]), Err(Malformed::Ipv6Truncated));
        assert_eq!(parse_frame(&f6[..70]), Err(Malformed::Ipv6BadPayloadLength));
    }
}
