//! Zero-allocation, in-place parsers for the frames a worker sees.
//!
//! One file per protocol, read in the order a frame is: [`ethernet`] (with
//! 802.1Q / QinQ tags) -> [`arp`] | [`ipv4`] | [`ipv6`] -> [`tcp`] | [`udp`] |
//! [`icmp`] -> the application hints [`dns`], [`tls`] and [`http`].
//! [`frame::parse_frame`] runs the whole chain and returns a
//! [`frame::ParsedFrame`] for the classify stage.
//!
//! # Contract
//!
//! * Every parser takes a `&[u8]` and returns values that borrow from it; none
//!   allocates, locks or logs, so all of them may run on the per-packet path.
//! * No input, however short, long or hostile, makes a parser panic. Fixed
//!   headers are read through `first_chunk::<N>()` (array indexing checked at
//!   compile time) and variable parts through a private `Cursor`, which only ever
//!   returns `None`. Outside tests, clippy's `indexing_slicing`, `unwrap_used`,
//!   `expect_used` and `panic` lints are errors in this module.
//! * An L2–L4 header that is shorter than it says, or says something
//!   impossible, is [`Malformed`], with a reason the worker counts. Trailing
//!   bytes after what a header's own length field covers (Ethernet padding)
//!   are ignored.
//! * Application data is only ever a *hint*: a DNS query, TLS ClientHello or
//!   HTTP request that is cut short (split across segments) or does not parse
//!   yields no hint, never a [`Malformed`] frame. Each application parser says
//!   why in its own error type, for tests and debugging.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod arp;
pub mod dns;
pub mod ethernet;
pub mod frame;
pub mod http;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod tls;
pub mod udp;

pub use frame::{app_hint_of, parse_frame, AppHint, Network, ParsedFrame, Transport};

/// Why a frame's L2–L4 headers could not be parsed. Counted per reason by the
/// worker, like [`crate::verdict::DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Malformed {
    /// Shorter than an Ethernet II header (14 bytes).
    EthernetTruncated = 0,
    /// A VLAN tag (TPID 0x8100, 0x88a8 or 0x9100) cut short.
    VlanTruncated = 1,
    /// More than two stacked VLAN tags.
    TooManyVlanTags = 2,
    /// ARP shorter than its 28 bytes for Ethernet/IPv4.
    ArpTruncated = 3,
    /// ARP for a hardware or protocol other than Ethernet/IPv4.
    ArpBadFormat = 4,
    /// Shorter than the 20-byte fixed IPv4 header.
    Ipv4Truncated = 5,
    /// EtherType 0x0800 but the version nibble is not 4.
    Ipv4BadVersion = 6,
    /// IHL below 5, or beyond the bytes present.
    Ipv4BadHeaderLength = 7,
    /// Total length shorter than the header, or beyond the bytes present.
    Ipv4BadTotalLength = 8,
    /// Shorter than the 40-byte IPv6 header.
    Ipv6Truncated = 9,
    /// EtherType 0x86dd but the version nibble is not 6.
    Ipv6BadVersion = 10,
    /// Payload length beyond the bytes present.
    Ipv6BadPayloadLength = 11,
    /// An extension header cut short.
    Ipv6ExtensionTruncated = 12,
    /// More extension headers than [`ipv6::MAX_EXTENSION_HEADERS`].
    Ipv6TooManyExtensions = 13,
    /// Shorter than the 20-byte fixed TCP header.
    TcpTruncated = 14,
    /// Data offset below 5, or beyond the bytes present.
    TcpBadDataOffset = 15,
    /// Shorter than the 8-byte UDP header.
    UdpTruncated = 16,
    /// UDP length below 8, or beyond the bytes present.
    UdpBadLength = 17,
    /// ICMP or ICMPv6 shorter than its 8-byte header.
    IcmpTruncated = 18,
}

impl Malformed {
    /// Number of reasons (the size of per-reason counter arrays).
    pub const COUNT: usize = 19;
    /// Every reason, in counter-index order.
    pub const ALL: [Malformed; Self::COUNT] = [
        Malformed::EthernetTruncated,
        Malformed::VlanTruncated,
        Malformed::TooManyVlanTags,
        Malformed::ArpTruncated,
        Malformed::ArpBadFormat,
        Malformed::Ipv4Truncated,
        Malformed::Ipv4BadVersion,
        Malformed::Ipv4BadHeaderLength,
        Malformed::Ipv4BadTotalLength,
        Malformed::Ipv6Truncated,
        Malformed::Ipv6BadVersion,
        Malformed::Ipv6BadPayloadLength,
        Malformed::Ipv6ExtensionTruncated,
        Malformed::Ipv6TooManyExtensions,
        Malformed::TcpTruncated,
        Malformed::TcpBadDataOffset,
        Malformed::UdpTruncated,
        Malformed::UdpBadLength,
        Malformed::IcmpTruncated,
    ];

    /// The counter index.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name shown by `hbgw stats` and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Malformed::EthernetTruncated => "ethernet_truncated",
            Malformed::VlanTruncated => "vlan_truncated",
            Malformed::TooManyVlanTags => "too_many_vlan_tags",
            Malformed::ArpTruncated => "arp_truncated",
            Malformed::ArpBadFormat => "arp_bad_format",
            Malformed::Ipv4Truncated => "ipv4_truncated",
            Malformed::Ipv4BadVersion => "ipv4_bad_version",
            Malformed::Ipv4BadHeaderLength => "ipv4_bad_header_length",
            Malformed::Ipv4BadTotalLength => "ipv4_bad_total_length",
            Malformed::Ipv6Truncated => "ipv6_truncated",
            Malformed::Ipv6BadVersion => "ipv6_bad_version",
            Malformed::Ipv6BadPayloadLength => "ipv6_bad_payload_length",
            Malformed::Ipv6ExtensionTruncated => "ipv6_extension_truncated",
            Malformed::Ipv6TooManyExtensions => "ipv6_too_many_extensions",
            Malformed::TcpTruncated => "tcp_truncated",
            Malformed::TcpBadDataOffset => "tcp_bad_data_offset",
            Malformed::UdpTruncated => "udp_truncated",
            Malformed::UdpBadLength => "udp_bad_length",
            Malformed::IcmpTruncated => "icmp_truncated",
        }
    }
}

impl core::fmt::Display for Malformed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A read position in a byte slice for the variable-length parts of a
/// message. Every read returns `None` instead of reading past the end, and a
/// failed read leaves the position where it was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// The bytes not yet read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    /// The next byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(b)
    }

    /// The next two bytes, big-endian.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let (b, tail) = self.rest.split_first_chunk::<2>()?;
        self.rest = tail;
        Some(u16::from_be_bytes(*b))
    }

    /// The next three bytes, big-endian.
    pub(crate) fn u24(&mut self) -> Option<u32> {
        let (&[a, b, c], tail) = self.rest.split_first_chunk::<3>()?;
        self.rest = tail;
        Some(u32::from_be_bytes([0, a, b, c]))
    }

    /// The next `n` bytes, where `n` is a one-byte length prefix.
    pub(crate) fn vec8(&mut self) -> Option<&'a [u8]> {
        let save = *self;
        let n = self.u8()?;
        self.take(usize::from(n)).or_else(|| {
            *self = save;
            None
        })
    }

    /// The next `n` bytes, where `n` is a two-byte big-endian length prefix.
    pub(crate) fn vec16(&mut self) -> Option<&'a [u8]> {
        let save = *self;
        let n = self.u16()?;
        self.take(usize::from(n)).or_else(|| {
            *self = save;
            None
        })
    }
}

/// Reads a big-endian `u16` from a two-byte array.
#[inline]
pub(crate) const fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_match_all_order_and_names_are_unique() {
        for (i, r) in Malformed::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::BTreeSet<_> = Malformed::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Malformed::COUNT);
    }

    #[test]
    fn cursor_never_reads_past_the_end() {
        let mut c = Cursor::new(&[1, 2, 3]);
        assert_eq!(c.u16(), Some(0x0102));
        assert_eq!(c.u16(), None);
        assert_eq!(c.rest(), &[3]);
        assert_eq!(c.u24(), None);
        assert_eq!(c.take(usize::MAX), None);
        assert_eq!(c.u8(), Some(3));
        assert_eq!(c.u8(), None);

        let mut c = Cursor::new(&[3, 0xaa, 0xbb]);
        assert_eq!(c.vec8(), None);
        assert_eq!(c.rest(), &[3, 0xaa, 0xbb], "a failed read does not move");
        let mut c = Cursor::new(&[0, 1, 0xaa, 0xbb]);
        assert_eq!(c.vec16(), Some(&[0xaa][..]));
        assert_eq!(c.rest(), &[0xbb]);
    }
}
