//! ICMP (RFC 792) and ICMPv6 (RFC 4443): type and code.
//!
//! # Contract
//!
//! [`Icmp::parse`] takes the IP payload and reads the type, code and the
//! 4-byte rest-of-header word every ICMP and ICMPv6 message has; fewer than 8
//! bytes is [`Malformed::IcmpTruncated`]. The body (for errors, the offending
//! packet's headers) is returned raw and not parsed. Which of ICMP or ICMPv6
//! it is follows from the IP version; the layout is the same.

use super::Malformed;

/// Bytes in an ICMP / ICMPv6 header.
pub const HEADER_LEN: usize = 8;

/// A parsed ICMP or ICMPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp<'a> {
    /// Message type (ICMP 8 echo request; ICMPv6 128 echo request, 135
    /// neighbour solicitation, ...).
    pub icmp_type: u8,
    /// Message code.
    pub code: u8,
    /// The type-specific 4 bytes after the checksum (echo: identifier and
    /// sequence number).
    pub rest_of_header: [u8; 4],
    /// The message body.
    pub body: &'a [u8],
}

impl<'a> Icmp<'a> {
    /// Parses the ICMP or ICMPv6 message at the start of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Malformed> {
        let (h, body) = buf.split_first_chunk::<HEADER_LEN>().ok_or(Malformed::IcmpTruncated)?;
        Ok(Self { icmp_type: h[0], code: h[1], rest_of_header: [h[4], h[5], h[6], h[7]], body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request, id 0x1234, seq 1, body "hi".
    static ECHO_BYTES: [u8; 10] = [8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'h', b'i'];

    #[test]
    fn deconstruct_and_truncated() {
        let i = Icmp::parse(&ECHO_BYTES).unwrap();
        assert_eq!((i.icmp_type, i.code, i.rest_of_header), (8, 0, [0x12, 0x34, 0, 1]));
        assert_eq!(i.body, b"hi");
        for n in 0..HEADER_LEN {
            assert_eq!(Icmp::parse(&ECHO_BYTES[..n]), Err(Malformed::IcmpTruncated));
        }
    }
}
