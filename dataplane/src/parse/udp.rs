//! UDP (RFC 768) header and payload.
//!
//! # Contract
//!
//! [`Udp::parse`] takes the IP payload (already cut at the IP length) and
//! checks: at least 8 bytes ([`Malformed::UdpTruncated`]), 8 <= length <=
//! bytes present ([`Malformed::UdpBadLength`]). The payload is cut at the UDP
//! length. The checksum is not verified. A length of 0 (IPv6 jumbograms) is
//! rejected like any length below 8: jumbograms do not fit an Ethernet frame.

use super::{be16, Malformed};

/// Bytes in a UDP header.
pub const HEADER_LEN: usize = 8;

/// A parsed UDP header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The length field (header + payload).
    pub length: u16,
    /// The datagram's data, cut at the length.
    pub payload: &'a [u8],
}

impl<'a> Udp<'a> {
    /// Parses the UDP datagram at the start of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Malformed> {
        let h = buf.first_chunk::<HEADER_LEN>().ok_or(Malformed::UdpTruncated)?;
        let length = be16([h[4], h[5]]);
        let datagram = buf.get(..usize::from(length)).ok_or(Malformed::UdpBadLength)?;
        let payload = datagram.get(HEADER_LEN..).ok_or(Malformed::UdpBadLength)?;
        Ok(Self { src_port: be16([h[0], h[1]]), dst_port: be16([h[2], h[3]]), length, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 5353 -> 53, length 11, 3 data bytes, 1 byte of padding.
    static DATAGRAM_BYTES: [u8; 12] = [0x14, 0xe9, 0x00, 0x35, 0x00, 0x0b, 0x00, 0x00, 1, 2, 3, 0xee];

    #[test]
    fn deconstruct() {
        let u = Udp::parse(&DATAGRAM_BYTES).unwrap();
        assert_eq!((u.src_port, u.dst_port, u.length), (5353, 53, 11));
        assert_eq!(u.payload, &[1, 2, 3]);
    }

    #[test]
    fn truncated_and_bad_length() {
        for n in 0..HEADER_LEN {
            assert_eq!(Udp::parse(&DATAGRAM_BYTES[..n]), Err(Malformed::UdpTruncated));
        }
        for n in HEADER_LEN..11 {
            assert_eq!(Udp::parse(&DATAGRAM_BYTES[..n]), Err(Malformed::UdpBadLength));
        }
        for len in [0u8, 7] {
            let mut b = DATAGRAM_BYTES;
            b[5] = len;
            assert_eq!(Udp::parse(&b), Err(Malformed::UdpBadLength));
        }
        let mut b = DATAGRAM_BYTES;
        b[5] = 8;
        assert_eq!(Udp::parse(&b).unwrap().payload, &[]);
    }
}
