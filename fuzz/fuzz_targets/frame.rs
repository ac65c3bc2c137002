//! `parse_frame` on arbitrary bytes: never panics; where etherparse also
//! accepts the frame, the IP addresses and ports agree; hints are consistent.
#![no_main]

use hbgw_dataplane::parse::dns::DnsName;
use hbgw_dataplane::parse::{parse_frame, AppHint, Transport};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = parse_frame(data) else { return };
    assert!(p.vlans.len() <= 2);
    if let Some(AppHint::DnsQuery(q)) = p.app {
        let mut name = DnsName::new();
        let text = q.write_name(&mut name);
        assert!(text.len() <= 253 && text.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()));
    }
    let Ok(e) = etherparse::SlicedPacket::from_ethernet(data) else { return };
    let ips: Option<(IpAddr, IpAddr)> = match &e.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            Some((ip.header().source_addr().into(), ip.header().destination_addr().into()))
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            Some((ip.header().source_addr().into(), ip.header().destination_addr().into()))
        }
        _ => None,
    };
    if let Some((src, dst)) = ips {
        assert_eq!((p.src_ip(), p.dst_ip()), (Some(src), Some(dst)));
    }
    match (&e.transport, &p.transport) {
        (Some(etherparse::TransportSlice::Tcp(t)), Transport::Tcp(o)) => {
            assert_eq!((o.src_port, o.dst_port), (t.source_port(), t.destination_port()));
            assert_eq!(o.payload, t.payload());
        }
        (Some(etherparse::TransportSlice::Udp(u)), Transport::Udp(o)) => {
            assert_eq!((o.src_port, o.dst_port), (u.source_port(), u.destination_port()));
        }
        _ => {}
    }
});
