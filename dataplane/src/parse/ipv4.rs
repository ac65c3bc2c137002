//! IPv4 (RFC 791), options included.
//!
//! # Contract
//!
//! [`Ipv4::parse`] takes the bytes after the Ethernet header and checks, in
//! order: at least 20 bytes ([`Malformed::Ipv4Truncated`]), version 4
//! ([`Malformed::Ipv4BadVersion`]), 5 <= IHL and IHL * 4 <= bytes present
//! ([`Malformed::Ipv4BadHeaderLength`]), IHL * 4 <= total length <= bytes
//! present ([`Malformed::Ipv4BadTotalLength`]). The payload is cut at the
//! total length, so Ethernet padding never reaches L4.
//!
//! Options are returned raw and not interpreted. The header checksum is not
//! verified: the NIC does that, and a bridge forwards what it cannot fix.
//! A fragment with a non-zero offset carries no L4 header
//! ([`Ipv4::is_first_fragment`] is false); the caller must not parse one.

use super::{be16, Malformed};
use std::net::Ipv4Addr;

/// Bytes in an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// A parsed IPv4 header and the bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4<'a> {
    /// DSCP (6 bits) and ECN (2 bits).
    pub dscp_ecn: u8,
    /// The total length field (header + payload).
    pub total_len: u16,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment flag.
    pub dont_fragment: bool,
    /// More Fragments flag.
    pub more_fragments: bool,
    /// Fragment offset, in units of 8 bytes.
    pub fragment_offset: u16,
    /// Time to live.
    pub ttl: u8,
    /// Protocol of the payload (6 TCP, 17 UDP, 1 ICMP, ...).
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Options, raw (empty when IHL is 5).
    pub options: &'a [u8],
    /// The payload, cut at the total length.
    pub payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// Parses the IPv4 packet at the start of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Malformed> {
        let h = buf.first_chunk::<MIN_HEADER_LEN>().ok_or(Malformed::Ipv4Truncated)?;
        if h[0] >> 4 != 4 {
            return Err(Malformed::Ipv4BadVersion);
        }
        let header_len = usize::from(h[0] & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN || header_len > buf.len() {
            return Err(Malformed::Ipv4BadHeaderLength);
        }
        let total_len = be16([h[2], h[3]]);
        let packet = buf.get(..usize::from(total_len)).ok_or(Malformed::Ipv4BadTotalLength)?;
        let (header, payload) = packet.split_at_checked(header_len).ok_or(Malformed::Ipv4BadTotalLength)?;
        let flags_frag = be16([h[6], h[7]]);
        Ok(Self {
            dscp_ecn: h[1],
            total_len,
            ident: be16([h[4], h[5]]),
            dont_fragment: flags_frag & 0x4000 != 0,
            more_fragments: flags_frag & 0x2000 != 0,
            fragment_offset: flags_frag & 0x1fff,
            ttl: h[8],
            protocol: h[9],
            src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
            options: header.get(MIN_HEADER_LEN..).unwrap_or(&[]),
            payload,
        })
    }

    /// Whether this packet is one fragment of a larger datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.fragment_offset != 0
    }

    /// Whether this packet holds the start of its datagram, and so the L4
    /// header (true for unfragmented packets too).
    pub fn is_first_fragment(&self) -> bool {
        self.fragment_offset == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.0.0.1 -> 10.0.0.2, UDP, TTL 64, IHL 6 (one NOP-padded option word),
    // DF, total length 28, 4 payload bytes, then 2 bytes of padding.
    static PACKET_BYTES: [u8; 30] = [
        0x46, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0, 2, 0x01, 0x01,
        0x01, 0x00, 0xca, 0xfe, 0xba, 0xbe, 0xee, 0xee,
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv4::parse(&PACKET_BYTES).unwrap();
        assert_eq!((p.total_len, p.ident, p.ttl, p.protocol), (28, 0x1234, 64, 17));
        assert!(p.dont_fragment && !p.more_fragments && !p.is_fragment() && p.is_first_fragment());
        assert_eq!((p.src, p.dst), (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(p.options, &[1, 1, 1, 0]);
        assert_eq!(p.payload, &[0xca, 0xfe, 0xba, 0xbe], "padding is cut");
    }

    #[test]
    fn truncated_and_bad_lengths() {
        for n in 0..MIN_HEADER_LEN {
            assert_eq!(Ipv4::parse(&PACKET_BYTES[..n]), Err(Malformed::Ipv4Truncated));
        }
        // IHL 6 needs 24 bytes.
        for n in 20..24 {
            assert_eq!(Ipv4::parse(&PACKET_BYTES[..n]), Err(Malformed::Ipv4BadHeaderLength));
        }
        // Total length 28 needs 28 bytes.
        for n in 24..28 {
            assert_eq!(Ipv4::parse(&PACKET_BYTES[..n]), Err(Malformed::Ipv4BadTotalLength));
        }
        let mut b = PACKET_BYTES;
        b[0] = 0x44;
        assert_eq!(Ipv4::parse(&b), Err(Malformed::Ipv4BadHeaderLength));
        b[0] = 0x4f;
        assert_eq!(Ipv4::parse(&b), Err(Malformed::Ipv4BadHeaderLength));
        b[0] = 0x65;
        assert_eq!(Ipv4::parse(&b), Err(Malformed::Ipv4BadVersion));
        let mut b = PACKET_BYTES;
        b[3] = 23; // shorter than the 24-byte header
        assert_eq!(Ipv4::parse(&b), Err(Malformed::Ipv4BadTotalLength));
        b[3] = 24;
        assert_eq!(Ipv4::parse(&b).unwrap().payload, &[]);
    }

    #[test]
    fn fragments() {
        let mut b = PACKET_BYTES;
        b[6] = 0x20; // MF, offset 0: the first fragment
        let p = Ipv4::parse(&b).unwrap();
        assert!(p.is_fragment() && p.is_first_fragment());
        b[6] = 0x00;
        b[7] = 0xb9; // offset 185 * 8, last fragment
        let p = Ipv4::parse(&b).unwrap();
        assert!(p.is_fragment() && !p.is_first_fragment());
        assert_eq!(p.fragment_offset, 185);
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut buf = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 168, 1, 1], [8, 8, 8, 8], 17)
            .udp(1000, 53)
            .write(&mut buf, &[1, 2, 3])
            .unwrap();
        let p = Ipv4::parse(&buf).unwrap();
        let e = etherparse::Ipv4HeaderSlice::from_slice(&buf).unwrap();
        assert_eq!((p.src, p.dst, p.ttl, p.protocol), (e.source_addr(), e.destination_addr(), e.ttl(), 17));
        assert_eq!(p.payload.len(), 8 + 3);
    }
}
