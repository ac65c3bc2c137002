//! Ethernet II with up to two stacked VLAN tags (802.1Q, 802.1ad QinQ).
//!
//! # Contract
//!
//! [`Ethernet::parse`] reads the 14-byte header, then follows every VLAN TPID
//! (0x8100, 0x88a8, and the pre-standard 0x9100) for at most
//! [`MAX_VLAN_TAGS`] tags, outermost first. The returned
//! [`Ethernet::ethertype`] is the inner one, and [`Ethernet::payload`] starts
//! right after the last tag. A third tag is [`Malformed::TooManyVlanTags`]: no
//! link this gateway bridges carries one, and a parser that skipped it would
//! hand the classify stage a VLAN id it never saw. EtherTypes below 0x0600
//! (802.3 length fields) are returned as they are, for the caller to ignore.

use super::{be16, Malformed};

/// Bytes in an Ethernet II header without tags.
pub const HEADER_LEN: usize = 14;
/// Bytes in one VLAN tag (TPID is the previous EtherType; TCI + EtherType).
pub const VLAN_TAG_LEN: usize = 4;
/// The most VLAN tags a frame may carry.
pub const MAX_VLAN_TAGS: usize = 2;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// TPID of an 802.1Q customer tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad service tag (QinQ outer tag).
pub const TPID_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ TPID still sent by some switches.
pub const TPID_QINQ_LEGACY: u16 = 0x9100;

/// Whether `ethertype` announces a VLAN tag.
pub const fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, TPID_8021Q | TPID_8021AD | TPID_QINQ_LEGACY)
}

/// The VLAN ids of a frame, outermost first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VlanIds {
    ids: [u16; MAX_VLAN_TAGS],
    // As wide as the copy that moves it: a `u8` here was written with a
    // one-byte store and copied out with a two-byte load (padding included),
    // which the store buffer cannot forward: a stall on every frame
    // (measured, perf annotate of `parse_frame`).
    len: u16,
}

impl VlanIds {
    /// The ids present, outermost first (12-bit VID, priority bits removed).
    pub fn as_slice(&self) -> &[u16] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The outermost id, if the frame is tagged.
    pub fn outer(&self) -> Option<u16> {
        self.as_slice().first().copied()
    }

    /// The innermost id, if the frame is tagged.
    pub fn inner(&self) -> Option<u16> {
        self.as_slice().last().copied()
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the frame is untagged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, vid: u16) -> Result<(), Malformed> {
        let slot = self.ids.get_mut(usize::from(self.len)).ok_or(Malformed::TooManyVlanTags)?;
        *slot = vid;
        self.len += 1;
        Ok(())
    }
}

/// A parsed Ethernet header and the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ethernet<'a> {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// VLAN ids, outermost first.
    pub vlans: VlanIds,
    /// The EtherType after the last VLAN tag.
    pub ethertype: u16,
    /// Everything after the header and tags (may include trailing padding).
    pub payload: &'a [u8],
}

impl<'a> Ethernet<'a> {
    /// Parses the header and VLAN tags of `frame`.
    pub fn parse(frame: &'a [u8]) -> Result<Self, Malformed> {
        let (hdr, mut rest) = frame.split_first_chunk::<HEADER_LEN>().ok_or(Malformed::EthernetTruncated)?;
        let mut dst = [0; 6];
        let mut src = [0; 6];
        dst.copy_from_slice(&hdr[0..6]);
        src.copy_from_slice(&hdr[6..12]);
        let mut ethertype = be16([hdr[12], hdr[13]]);
        let mut vlans = VlanIds::default();
        while is_vlan_tpid(ethertype) {
            let (tag, tail) = rest.split_first_chunk::<VLAN_TAG_LEN>().ok_or(Malformed::VlanTruncated)?;
            vlans.push(be16([tag[0], tag[1]]) & 0x0fff)?;
            ethertype = be16([tag[2], tag[3]]);
            rest = tail;
        }
        Ok(Self { dst, src, vlans, ethertype, payload: rest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // dst ff:..:ff, src 02:00:00:00:00:01, 802.1ad vid 100 (pcp 5), 802.1Q
    // vid 4095, EtherType IPv4, 2 payload bytes.
    static QINQ_BYTES: [u8; 24] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xa8, 0xa0, 0x64, 0x81, 0x00,
        0x0f, 0xff, 0x08, 0x00, 0xde, 0xad,
    ];

    #[test]
    fn deconstruct_qinq() {
        let e = Ethernet::parse(&QINQ_BYTES).unwrap();
        assert_eq!(e.dst, [0xff; 6]);
        assert_eq!(e.src, [2, 0, 0, 0, 0, 1]);
        assert_eq!(e.vlans.as_slice(), &[100, 4095]);
        assert_eq!((e.vlans.outer(), e.vlans.inner()), (Some(100), Some(4095)));
        assert_eq!(e.ethertype, ETHERTYPE_IPV4);
        assert_eq!(e.payload, &[0xde, 0xad]);
    }

    #[test]
    fn untagged_and_legacy_tpid() {
        let mut f = [0u8; 14];
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        let e = Ethernet::parse(&f).unwrap();
        assert!(e.vlans.is_empty());
        assert_eq!((e.ethertype, e.payload.len()), (ETHERTYPE_ARP, 0));

        let mut f = [0u8; 18];
        f[12..14].copy_from_slice(&TPID_QINQ_LEGACY.to_be_bytes());
        f[14..16].copy_from_slice(&7u16.to_be_bytes());
        f[16..18].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let e = Ethernet::parse(&f).unwrap();
        assert_eq!((e.vlans.as_slice(), e.ethertype), (&[7u16][..], ETHERTYPE_IPV6));
    }

    #[test]
    fn truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(Ethernet::parse(&QINQ_BYTES[..n]), Err(Malformed::EthernetTruncated));
        }
        for n in HEADER_LEN..22 {
            assert_eq!(Ethernet::parse(&QINQ_BYTES[..n]), Err(Malformed::VlanTruncated), "{n}");
        }
    }

    #[test]
    fn three_tags_are_too_many() {
        let mut f = QINQ_BYTES.to_vec();
        f.splice(20..22, [0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        assert_eq!(Ethernet::parse(&f), Err(Malformed::TooManyVlanTags));
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .double_vlan(5u16.try_into().unwrap(), 6u16.try_into().unwrap())
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 1)
            .udp(1, 2)
            .write(&mut f, &[])
            .unwrap();
        let e = Ethernet::parse(&f).unwrap();
        let s = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(l)) = s.link else { panic!() };
        let Some(etherparse::VlanSlice::DoubleVlan(v)) = s.vlan else { panic!() };
        assert_eq!((e.src, e.dst), (l.source(), l.destination()));
        assert_eq!(e.vlans.as_slice(), &[v.outer().vlan_identifier().value(), v.inner().vlan_identifier().value()]);
        assert_eq!(e.ethertype, v.inner().ether_type().0);
        assert_eq!(e.payload.len(), 28);
    }
}
