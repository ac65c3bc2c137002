//! ARP for Ethernet and IPv4 (RFC 826).
//!
//! # Contract
//!
//! [`Arp::parse`] takes the bytes after the Ethernet header and reads the 28
//! bytes of an Ethernet/IPv4 ARP packet; anything after them is padding. Any
//! other hardware type, protocol type or address length is
//! [`Malformed::ArpBadFormat`]: the gateway only ever bridges Ethernet/IPv4
//! ARP, and a packet claiming otherwise is not something to classify. The
//! opcode is returned as it is (1 request, 2 reply; others are not rejected).

use super::{be16, Malformed};
use std::net::Ipv4Addr;

/// Bytes in an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// ARP opcode of a request.
pub const OP_REQUEST: u16 = 1;
/// ARP opcode of a reply.
pub const OP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// Opcode ([`OP_REQUEST`], [`OP_REPLY`], ...).
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: [u8; 6],
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Parses the ARP packet at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, Malformed> {
        let b = buf.first_chunk::<PACKET_LEN>().ok_or(Malformed::ArpTruncated)?;
        let htype = be16([b[0], b[1]]);
        let ptype = be16([b[2], b[3]]);
        if htype != 1 || ptype != super::ethernet::ETHERTYPE_IPV4 || b[4] != 6 || b[5] != 4 {
            return Err(Malformed::ArpBadFormat);
        }
        Ok(Self {
            operation: be16([b[6], b[7]]),
            sender_mac: [b[8], b[9], b[10], b[11], b[12], b[13]],
            sender_ip: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
            target_mac: [b[18], b[19], b[20], b[21], b[22], b[23]],
            target_ip: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 10.0.0.2? Tell 10.0.0.1 (02:00:00:00:00:01).
    static REQUEST_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, 0, 0, 0, 0, 0,
        0, 10, 0, 0, 2,
    ];

    #[test]
    fn deconstruct() {
        let a = Arp::parse(&REQUEST_BYTES).unwrap();
        assert_eq!(a.operation, OP_REQUEST);
        assert_eq!(a.sender_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(a.sender_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(a.target_mac, [0; 6]);
        assert_eq!(a.target_ip, Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn truncated_overlong_and_foreign() {
        for n in 0..PACKET_LEN {
            assert_eq!(Arp::parse(&REQUEST_BYTES[..n]), Err(Malformed::ArpTruncated));
        }
        let mut padded = REQUEST_BYTES.to_vec();
        padded.extend_from_slice(&[0; 18]);
        assert_eq!(Arp::parse(&padded), Arp::parse(&REQUEST_BYTES));
        for (at, v) in [(1, 6), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = REQUEST_BYTES;
            b[at] = v;
            assert_eq!(Arp::parse(&b), Err(Malformed::ArpBadFormat), "byte {at}");
        }
    }
}
