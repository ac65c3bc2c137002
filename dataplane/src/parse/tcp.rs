//! TCP (RFC 9293) header and payload.
//!
//! # Contract
//!
//! [`Tcp::parse`] takes the IP payload (already cut at the IP length) and
//! checks: at least 20 bytes ([`Malformed::TcpTruncated`]), 5 <= data offset
//! and data offset * 4 <= bytes present ([`Malformed::TcpBadDataOffset`]).
//! Options are returned raw; the checksum is not verified. In a first IP
//! fragment too short to hold the whole TCP header (the RFC 1858 tiny
//! fragment attack) the header is truncated, and so malformed.

use super::{be16, Malformed};

/// Bytes in a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// The TCP flag bits (the 9 bits after the data offset, NS included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: u16 = 0x001;
    /// Synchronize sequence numbers.
    pub const SYN: u16 = 0x002;
    /// Reset the connection.
    pub const RST: u16 = 0x004;
    /// Push function.
    pub const PSH: u16 = 0x008;
    /// Acknowledgment field is significant.
    pub const ACK: u16 = 0x010;
    /// Urgent pointer field is significant.
    pub const URG: u16 = 0x020;
    /// ECN echo.
    pub const ECE: u16 = 0x040;
    /// Congestion window reduced.
    pub const CWR: u16 = 0x080;
    /// ECN nonce (historic).
    pub const NS: u16 = 0x100;

    /// Whether every bit of `mask` is set.
    pub const fn has(self, mask: u16) -> bool {
        self.0 & mask == mask
    }

    /// SYN without ACK: the first packet of a connection.
    pub const fn is_syn_only(self) -> bool {
        self.0 & (Self::SYN | Self::ACK) == Self::SYN
    }
}

/// A parsed TCP header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Receive window.
    pub window: u16,
    /// Options, raw.
    pub options: &'a [u8],
    /// The segment's data.
    pub payload: &'a [u8],
}

impl<'a> Tcp<'a> {
    /// Parses the TCP segment at the start of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Malformed> {
        let h = buf.first_chunk::<MIN_HEADER_LEN>().ok_or(Malformed::TcpTruncated)?;
        let header_len = usize::from(h[12] >> 4) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Malformed::TcpBadDataOffset);
        }
        let (header, payload) = buf.split_at_checked(header_len).ok_or(Malformed::TcpBadDataOffset)?;
        Ok(Self {
            src_port: be16([h[0], h[1]]),
            dst_port: be16([h[2], h[3]]),
            seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            flags: TcpFlags(be16([h[12], h[13]]) & 0x01ff),
            window: be16([h[14], h[15]]),
            options: header.get(MIN_HEADER_LEN..).unwrap_or(&[]),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 49152 -> 443, seq 1, ack 2, data offset 6 (MSS 1460), SYN|ACK|NS,
    // window 65535, 3 data bytes.
    static SEGMENT_BYTES: [u8; 27] = [
        0xc0, 0x00, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 2, 0x61, 0x12, 0xff, 0xff, 0, 0, 0, 0, 0x02, 0x04, 0x05, 0xb4,
        b'a', b'b', b'c',
    ];

    #[test]
    fn deconstruct() {
        let t = Tcp::parse(&SEGMENT_BYTES).unwrap();
        assert_eq!((t.src_port, t.dst_port, t.seq, t.ack, t.window), (49152, 443, 1, 2, 0xffff));
        assert!(t.flags.has(TcpFlags::SYN | TcpFlags::ACK | TcpFlags::NS));
        assert!(!t.flags.has(TcpFlags::FIN) && !t.flags.is_syn_only());
        assert_eq!(t.options, &[2, 4, 5, 0xb4]);
        assert_eq!(t.payload, b"abc");
    }

    #[test]
    fn truncated_and_bad_offset() {
        for n in 0..MIN_HEADER_LEN {
            assert_eq!(Tcp::parse(&SEGMENT_BYTES[..n]), Err(Malformed::TcpTruncated));
        }
        for n in MIN_HEADER_LEN..24 {
            assert_eq!(Tcp::parse(&SEGMENT_BYTES[..n]), Err(Malformed::TcpBadDataOffset));
        }
        assert_eq!(Tcp::parse(&SEGMENT_BYTES[..24]).unwrap().payload, &[]);
        let mut b = SEGMENT_BYTES;
        b[12] = 0x41;
        assert_eq!(Tcp::parse(&b), Err(Malformed::TcpBadDataOffset));
        b[12] = 0xf0;
        assert_eq!(Tcp::parse(&b), Err(Malformed::TcpBadDataOffset));
    }

    #[test]
    fn agrees_with_etherparse() {
        let e = etherparse::TcpHeaderSlice::from_slice(&SEGMENT_BYTES).unwrap();
        let t = Tcp::parse(&SEGMENT_BYTES).unwrap();
        assert_eq!(
            (t.src_port, t.dst_port, t.flags.has(TcpFlags::SYN)),
            (e.source_port(), e.destination_port(), e.syn())
        );
        assert_eq!(t.options, e.options());
    }
}
