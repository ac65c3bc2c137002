//! Frame builders shared by the pipeline tests: Ethernet/IP/TCP/UDP from
//! etherparse, and the application payloads (DNS query, TLS ClientHello with
//! SNI, HTTP request) written out byte by byte.
#![allow(dead_code)]

use etherparse::PacketBuilder;

pub type Mac = [u8; 6];

pub fn udp(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src, dst, 64).udp(sport, dport).write(&mut out, payload).unwrap();
    out
}

pub fn tcp(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64240)
        .ack(1)
        .psh()
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn tcp6(src_mac: Mac, dst_mac: Mac, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac).ipv6(src, dst, 64).tcp(sport, dport, 1, 64240).syn().write(&mut out, &[]).unwrap();
    out
}

pub fn vlan_udp(src_mac: Mac, dst_mac: Mac, vlan: u16, src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .single_vlan(vlan.try_into().unwrap())
        .ipv4(src, dst, 64)
        .udp(40000, dport)
        .write(&mut out, b"hello")
        .unwrap();
    out
}

/// A DNS query for `name` (type A), as sent over UDP.
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
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

/// A TLS 1.2/1.3 ClientHello record carrying `sni`.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    let list_len = 3 + name.len();
    sni_ext.extend_from_slice(&(list_len as u16).to_be_bytes());
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
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression
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

pub fn http_get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n\r\n").into_bytes()
}
