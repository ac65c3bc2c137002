//! Building frames: the traffic of tests, the built-in traffic source, and
//! `hbgw explain` (which decides a synthetic frame exactly as a worker would
//! decide the real one). L2–L4 come from etherparse; the application payloads
//! (DNS query, TLS ClientHello with SNI, HTTP request) are written out here.
//! Never used on the per-packet path: these allocate.

use etherparse::PacketBuilder;

/// A MAC address.
pub type Mac = [u8; 6];

/// An Ethernet/IPv4/UDP frame.
pub fn udp(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .expect("writing to a Vec cannot fail");
    out
}

/// An Ethernet/IPv4/TCP frame (ACK+PSH, carrying `payload`).
pub fn tcp(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64240)
        .ack(1)
        .psh()
        .write(&mut out, payload)
        .expect("writing to a Vec cannot fail");
    out
}

/// An Ethernet/IPv6/TCP SYN.
pub fn tcp6(src_mac: Mac, dst_mac: Mac, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv6(src, dst, 64)
        .tcp(sport, dport, 1, 64240)
        .syn()
        .write(&mut out, &[])
        .expect("writing to a Vec cannot fail");
    out
}

/// An 802.1Q-tagged Ethernet/IPv4/UDP frame.
pub fn vlan_udp(src_mac: Mac, dst_mac: Mac, vlan: u16, src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .single_vlan(vlan.min(4095).try_into().expect("clamped to 12 bits"))
        .ipv4(src, dst, 64)
        .udp(40000, dport)
        .write(&mut out, b"hello")
        .expect("writing to a Vec cannot fail");
    out
}

/// An 802.1Q-tagged Ethernet/IPv4/TCP frame.
pub fn vlan_tcp(src_mac: Mac, dst_mac: Mac, vlan: u16, src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .single_vlan(vlan.min(4095).try_into().expect("clamped to 12 bits"))
        .ipv4(src, dst, 64)
        .tcp(40000, dport, 1, 64240)
        .syn()
        .write(&mut out, &[])
        .expect("writing to a Vec cannot fail");
    out
}

/// A DNS query for `name` (type A, class IN), as sent over UDP.
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The same query with TCP's two-byte length prefix.
pub fn dns_query_tcp(name: &str) -> Vec<u8> {
    let q = dns_query(name);
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend(q);
    out
}

/// A TLS ClientHello record carrying `sni` in its server_name extension.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((3 + name.len()) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut exts = Vec::new();
    exts.extend_from_slice(&0u16.to_be_bytes());
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend(sni_ext);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// An HTTP/1.1 GET request.
pub fn http_get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hbgw\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_frame, AppHint};

    #[test]
    fn builders_give_the_hints_they_promise() {
        let dns = udp([2; 6], [4; 6], [10, 0, 0, 1], [10, 0, 0, 2], 5353, 53, &dns_query("a.example"));
        assert!(matches!(parse_frame(&dns).unwrap().app, Some(AppHint::DnsQuery(_))));
        let tls = tcp([2; 6], [4; 6], [10, 0, 0, 1], [10, 0, 0, 2], 5, 443, &client_hello("x.example"));
        assert_eq!(parse_frame(&tls).unwrap().app, Some(AppHint::TlsSni(b"x.example")));
        let http = tcp([2; 6], [4; 6], [10, 0, 0, 1], [10, 0, 0, 2], 5, 80, &http_get("h.example", "/p"));
        assert!(matches!(parse_frame(&http).unwrap().app, Some(AppHint::HttpRequest(r)) if r.path == b"/p"));
        let tcpdns = tcp([2; 6], [4; 6], [10, 0, 0, 1], [10, 0, 0, 2], 5, 53, &dns_query_tcp("a.example"));
        assert!(matches!(parse_frame(&tcpdns).unwrap().app, Some(AppHint::DnsQuery(_))));
    }
}
