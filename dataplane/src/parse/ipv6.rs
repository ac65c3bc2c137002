//! IPv6 (RFC 8200) and its extension header chain.
//!
//! # Contract
//!
//! [`Ipv6::parse`] takes the bytes after the Ethernet header and checks: at
//! least 40 bytes ([`Malformed::Ipv6Truncated`]), version 6
//! ([`Malformed::Ipv6BadVersion`]), payload length <= bytes present
//! ([`Malformed::Ipv6BadPayloadLength`]; the payload is cut at it, dropping
//! Ethernet padding). It then walks the extension headers it knows —
//! hop-by-hop options (0), routing (43), fragment (44), destination options
//! (60) and authentication (51) — each of which must fit in the payload
//! ([`Malformed::Ipv6ExtensionTruncated`]). The walk is bounded by
//! [`MAX_EXTENSION_HEADERS`] ([`Malformed::Ipv6TooManyExtensions`]) so a chain
//! of tiny headers cannot make a worker spin.
//!
//! The walk stops at the first header it does not know (the upper-layer
//! protocol, [`Ipv6::protocol`]) or at a fragment header whose offset is not
//! zero: such a fragment carries no L4 header, and [`Ipv6::protocol`] is then
//! the fragment header's next header. Header order rules (hop-by-hop first) are
//! not enforced; the gateway does not process options.
//! Jumbograms (payload length 0 with a jumbo option) are not supported: the
//! payload is then empty.

use super::{be16, Cursor, Malformed};
use std::net::Ipv6Addr;

/// Bytes in the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// The most extension headers walked before the packet is rejected.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Next header: hop-by-hop options.
pub const NH_HOP_BY_HOP: u8 = 0;
/// Next header: routing.
pub const NH_ROUTING: u8 = 43;
/// Next header: fragment.
pub const NH_FRAGMENT: u8 = 44;
/// Next header: authentication header.
pub const NH_AUTH: u8 = 51;
/// Next header: destination options.
pub const NH_DEST_OPTS: u8 = 60;
/// Next header: no next header.
pub const NH_NONE: u8 = 59;

/// What a fragment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Fragment offset, in units of 8 bytes.
    pub offset: u16,
    /// More Fragments flag.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// A parsed IPv6 header, its extension chain walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6<'a> {
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// The payload length field (extension headers + upper layer).
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// The protocol after the extension headers (6 TCP, 17 UDP, 58 ICMPv6,
    /// 59 none, ...); for a non-first fragment, what the fragment carries.
    pub protocol: u8,
    /// Number of extension headers walked.
    pub extension_count: u8,
    /// The fragment header, if there was one.
    pub fragment: Option<Ipv6Fragment>,
    /// The bytes after the extension headers, cut at the payload length.
    pub payload: &'a [u8],
}

impl<'a> Ipv6<'a> {
    /// Parses the IPv6 packet at the start of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Malformed> {
        let (h, rest) = buf.split_first_chunk::<HEADER_LEN>().ok_or(Malformed::Ipv6Truncated)?;
        if h[0] >> 4 != 6 {
            return Err(Malformed::Ipv6BadVersion);
        }
        let payload_len = be16([h[4], h[5]]);
        let payload = rest.get(..usize::from(payload_len)).ok_or(Malformed::Ipv6BadPayloadLength)?;
        let mut src = [0; 16];
        let mut dst = [0; 16];
        src.copy_from_slice(&h[8..24]);
        dst.copy_from_slice(&h[24..40]);
        let mut p = Self {
            traffic_class: (h[0] << 4) | (h[1] >> 4),
            flow_label: u32::from_be_bytes([0, h[1] & 0x0f, h[2], h[3]]),
            payload_len,
            hop_limit: h[7],
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
            protocol: h[6],
            extension_count: 0,
            fragment: None,
            payload,
        };
        p.walk_extensions()?;
        Ok(p)
    }

    fn walk_extensions(&mut self) -> Result<(), Malformed> {
        let mut c = Cursor::new(self.payload);
        while matches!(self.protocol, NH_HOP_BY_HOP | NH_ROUTING | NH_FRAGMENT | NH_AUTH | NH_DEST_OPTS) {
            if usize::from(self.extension_count) >= MAX_EXTENSION_HEADERS {
                return Err(Malformed::Ipv6TooManyExtensions);
            }
            let this = self.protocol;
            let &[next, len_field, ..] = c.rest() else {
                return Err(Malformed::Ipv6ExtensionTruncated);
            };
            let len = match this {
                NH_FRAGMENT => 8,
                NH_AUTH => (usize::from(len_field) + 2) * 4,
                _ => (usize::from(len_field) + 1) * 8,
            };
            let ext = c.take(len).ok_or(Malformed::Ipv6ExtensionTruncated)?;
            self.extension_count += 1;
            self.protocol = next;
            self.payload = c.rest();
            if this == NH_FRAGMENT {
                let Some(&[_, _, o1, o2, i1, i2, i3, i4]) = ext.first_chunk::<8>() else {
                    return Err(Malformed::Ipv6ExtensionTruncated);
                };
                let fo = be16([o1, o2]);
                let frag =
                    Ipv6Fragment { offset: fo >> 3, more: fo & 1 != 0, ident: u32::from_be_bytes([i1, i2, i3, i4]) };
                self.fragment = Some(frag);
                if frag.offset != 0 {
                    // The headers after this one are in the first fragment.
                    break;
                }
            }
        }
        Ok(())
    }

    /// Whether this packet holds the start of its datagram, and so the L4
    /// header (true for unfragmented packets too).
    pub fn is_first_fragment(&self) -> bool {
        self.fragment.map_or(true, |f| f.offset == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2001:db8::1 -> 2001:db8::2, hop limit 64, flow label 0x12345, then a
    // hop-by-hop header (PadN), a fragment header (offset 0, M, ident 7) and
    // an 8-byte UDP header; then 2 bytes of Ethernet padding.
    static PACKET_BYTES: [u8; 66] = [
        0x60,
        0x01,
        0x23,
        0x45,
        0x00,
        0x18,
        NH_HOP_BY_HOP,
        64, // fixed header
        0x20,
        0x01,
        0x0d,
        0xb8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1, // src
        0x20,
        0x01,
        0x0d,
        0xb8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        2, // dst
        NH_FRAGMENT,
        0,
        1,
        4,
        0,
        0,
        0,
        0, // hop-by-hop, PadN
        17,
        0,
        0x00,
        0x01,
        0,
        0,
        0,
        7, // fragment: offset 0, M
        0x04,
        0xd2,
        0x00,
        0x35,
        0x00,
        0x08,
        0x00,
        0x00, // UDP 1234 -> 53
        0xee,
        0xee,
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv6::parse(&PACKET_BYTES).unwrap();
        assert_eq!((p.traffic_class, p.flow_label, p.payload_len, p.hop_limit), (0, 0x12345, 24, 64));
        assert_eq!(p.src, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst, "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!((p.protocol, p.extension_count), (17, 2));
        assert_eq!(p.fragment, Some(Ipv6Fragment { offset: 0, more: true, ident: 7 }));
        assert!(p.is_first_fragment());
        assert_eq!(p.payload, &PACKET_BYTES[56..64], "upper layer only, padding cut");
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        let mut b = PACKET_BYTES;
        b[50] = 0x00;
        b[51] = 0x08; // offset 1
        let p = Ipv6::parse(&b).unwrap();
        assert!(!p.is_first_fragment());
        assert_eq!((p.protocol, p.payload.len()), (17, 8));
    }

    #[test]
    fn truncated_and_bad_lengths() {
        for n in 0..HEADER_LEN {
            assert_eq!(Ipv6::parse(&PACKET_BYTES[..n]), Err(Malformed::Ipv6Truncated));
        }
        for n in HEADER_LEN..64 {
            assert_eq!(Ipv6::parse(&PACKET_BYTES[..n]), Err(Malformed::Ipv6BadPayloadLength), "{n}");
        }
        let mut b = PACKET_BYTES;
        b[0] = 0x40;
        assert_eq!(Ipv6::parse(&b), Err(Malformed::Ipv6BadVersion));
        for (len, want) in [(7u8, Err(Malformed::Ipv6ExtensionTruncated)), (1, Err(Malformed::Ipv6ExtensionTruncated))]
        {
            let mut b = PACKET_BYTES;
            b[5] = len;
            assert_eq!(Ipv6::parse(&b).map(|p| p.protocol), want, "payload length {len}");
        }
        let mut b = PACKET_BYTES;
        b[41] = 3; // hop-by-hop claims 32 bytes
        assert_eq!(Ipv6::parse(&b), Err(Malformed::Ipv6ExtensionTruncated));
    }

    #[test]
    fn extension_chain_is_bounded() {
        let mut b = PACKET_BYTES[..40].to_vec();
        let n = MAX_EXTENSION_HEADERS + 1;
        for _ in 0..n {
            b.extend_from_slice(&[NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        b[4..6].copy_from_slice(&((n * 8) as u16).to_be_bytes());
        b[6] = NH_DEST_OPTS;
        assert_eq!(Ipv6::parse(&b), Err(Malformed::Ipv6TooManyExtensions));
        // One fewer, ending in "no next header", is fine.
        let last = 40 + (n - 2) * 8;
        b[last] = NH_NONE;
        b.truncate(last + 8);
        b[4..6].copy_from_slice(&(((n - 1) * 8) as u16).to_be_bytes());
        let p = Ipv6::parse(&b).unwrap();
        assert_eq!((p.protocol, usize::from(p.extension_count)), (NH_NONE, MAX_EXTENSION_HEADERS));
    }

    #[test]
    fn auth_header_length_is_in_words() {
        let mut b = PACKET_BYTES[..40].to_vec();
        b[6] = NH_AUTH;
        b.extend_from_slice(&[6, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0; 20]);
        b[4..6].copy_from_slice(&44u16.to_be_bytes());
        let p = Ipv6::parse(&b).unwrap();
        assert_eq!((p.protocol, p.payload.len()), (6, 20));
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut buf = Vec::new();
        etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 9).tcp(1, 443, 5, 100).write(&mut buf, b"xyz").unwrap();
        let p = Ipv6::parse(&buf).unwrap();
        let e = etherparse::Ipv6HeaderSlice::from_slice(&buf).unwrap();
        assert_eq!((p.src, p.dst, p.hop_limit), (e.source_addr(), e.destination_addr(), 9));
        assert_eq!((p.protocol, p.payload.len()), (6, 20 + 3));
    }
}
