//! The answer to a frame a `reject` rule stopped: the frame is rewritten in
//! place into the answer and sent back out of the port it came in on.
//!
//! * TCP (IPv4 or IPv6): a RST, as the destination's stack would send for a
//!   closed port (RFC 9293 3.10.7.1): if the segment had ACK, `seq = its ack`
//!   and flags RST; otherwise `seq = 0`, `ack = its seq + segment length` and
//!   flags RST+ACK.
//! * Anything else over IPv4: ICMP destination unreachable, code 13
//!   (communication administratively prohibited, RFC 1812), quoting the
//!   original IP header and the first 8 bytes of its payload.
//! * Anything else over IPv6: ICMPv6 destination unreachable, code 1
//!   (administratively prohibited, RFC 4443), quoting as much of the original
//!   packet as fits in the minimum MTU.
//!
//! The answer comes from the original destination's address (the gateway is
//! a transparent bridge and has none on that path). VLAN tags are kept.
//! Works in the frame's own buffer (`room` is the frame followed by the
//! buffer's free tailroom): no allocation. Returns the answer's length, or
//! `None` when the frame cannot be answered (not IP, an ICMP error itself,
//! a fragment, or no room), in which case it is simply dropped.

use crate::parse::{parse_frame, Network, Transport};

const IPV6_MIN_MTU: usize = 1280;

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    sum16(dst, sum16(src, 0)) + u32::from(proto) + len as u32
}

fn pseudo_v6(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    sum16(dst, sum16(src, 0)) + (len as u32 >> 16) + (len as u32 & 0xffff) + u32::from(proto)
}

/// Rewrites the frame in `room[..len]` into its reject answer; see the module.
pub fn answer(room: &mut [u8], len: usize) -> Option<usize> {
    if len > room.len() {
        return None;
    }
    let (l3, ip_kind, tcp) = {
        let pf = parse_frame(&room[..len]).ok()?;
        let l3 = 14 + 4 * pf.vlans.len();
        let tcp = match pf.transport {
            Transport::Tcp(t) => Some((t.src_port, t.dst_port, t.seq, t.ack, t.flags.0, t.payload.len())),
            // Never answer an error with an error, nor a fragment (no header to quote reliably).
            Transport::Icmp(i) | Transport::Icmpv6(i) if i.icmp_type < 128 && i.icmp_type != 0 && i.icmp_type != 8 => return None,
            Transport::Fragment | Transport::None => return None,
            _ => None,
        };
        let ip_kind = match pf.network {
            Network::Ipv4(_) => 4,
            Network::Ipv6(_) => 6,
            _ => return None,
        };
        (l3, ip_kind, tcp)
    };
    // Swap the MAC addresses: the answer goes back where the frame came from.
    let (dst, src) = room.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);

    match (ip_kind, tcp) {
        (4, Some(t)) => Some(tcp_rst_v4(room, l3, t)),
        (6, Some(t)) => Some(tcp_rst_v6(room, l3, t)),
        (4, None) => icmp4_unreachable(room, l3, len),
        (6, None) => icmp6_unreachable(room, l3, len),
        _ => None,
    }
}

type TcpFacts = (u16, u16, u32, u32, u16, usize);

fn rst_fields((sport, dport, seq, ack, flags, payload): TcpFacts) -> [u8; 20] {
    const SYN: u16 = 0x002;
    const FIN: u16 = 0x001;
    const RST: u16 = 0x004;
    const ACK: u16 = 0x010;
    let (rseq, rack, rflags) = if flags & ACK != 0 {
        (ack, 0, RST)
    } else {
        let seg = payload as u32 + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
        (0, seq.wrapping_add(seg), RST | ACK)
    };
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&dport.to_be_bytes());
    h[2..4].copy_from_slice(&sport.to_be_bytes());
    h[4..8].copy_from_slice(&rseq.to_be_bytes());
    h[8..12].copy_from_slice(&rack.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = rflags as u8;
    h
}

fn ipv4_header(room: &mut [u8], l3: usize, proto: u8, payload_len: usize) {
    let (mut src, mut dst) = ([0u8; 4], [0u8; 4]);
    src.copy_from_slice(&room[l3 + 12..l3 + 16]);
    dst.copy_from_slice(&room[l3 + 16..l3 + 20]);
    let h = &mut room[l3..l3 + 20];
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h[4..8].copy_from_slice(&[0, 0, 0x40, 0]); // id 0, DF
    h[8] = 64;
    h[9] = proto;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&dst);
    h[16..20].copy_from_slice(&src);
    let c = fold(sum16(h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

fn tcp_rst_v4(room: &mut [u8], l3: usize, t: TcpFacts) -> usize {
    // Options are dropped: the answer's header is 20 bytes.
    ipv4_header(room, l3, 6, 20);
    let l4 = l3 + 20;
    room[l4..l4 + 20].copy_from_slice(&rst_fields(t));
    let c = fold(sum16(&room[l4..l4 + 20], pseudo_v4(&room[l3 + 12..l3 + 16], &room[l3 + 16..l3 + 20], 6, 20)));
    room[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    l4 + 20
}

fn ipv6_swap(room: &mut [u8], l3: usize, next: u8, payload_len: usize) {
    let mut src = [0u8; 16];
    src.copy_from_slice(&room[l3 + 8..l3 + 24]);
    room.copy_within(l3 + 24..l3 + 40, l3 + 8);
    room[l3 + 24..l3 + 40].copy_from_slice(&src);
    room[l3..l3 + 4].copy_from_slice(&[0x60, 0, 0, 0]);
    room[l3 + 4..l3 + 6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    room[l3 + 6] = next;
    room[l3 + 7] = 64;
}

fn tcp_rst_v6(room: &mut [u8], l3: usize, t: TcpFacts) -> usize {
    // Extension headers are dropped: the RST follows the fixed header.
    ipv6_swap(room, l3, 6, 20);
    let l4 = l3 + 40;
    room[l4..l4 + 20].copy_from_slice(&rst_fields(t));
    let c = fold(sum16(&room[l4..l4 + 20], pseudo_v6(&room[l3 + 8..l3 + 24], &room[l3 + 24..l3 + 40], 6, 20)));
    room[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    l4 + 20
}

fn icmp4_unreachable(room: &mut [u8], l3: usize, len: usize) -> Option<usize> {
    let ihl = usize::from(room[l3] & 0x0f) * 4;
    let quote = (ihl + 8).min(len - l3);
    let end = l3 + 28 + quote;
    if end > room.len() {
        return None;
    }
    // The quoted original moves 28 bytes up, behind the new IP + ICMP headers.
    room.copy_within(l3..l3 + quote, l3 + 28);
    let (mut src, mut dst) = ([0u8; 4], [0u8; 4]);
    src.copy_from_slice(&room[l3 + 28 + 12..l3 + 28 + 16]);
    dst.copy_from_slice(&room[l3 + 28 + 16..l3 + 28 + 20]);
    room[l3 + 12..l3 + 16].copy_from_slice(&src);
    room[l3 + 16..l3 + 20].copy_from_slice(&dst);
    ipv4_header(room, l3, 1, 8 + quote);
    let icmp = l3 + 20;
    room[icmp..icmp + 8].copy_from_slice(&[3, 13, 0, 0, 0, 0, 0, 0]);
    let c = fold(sum16(&room[icmp..end], 0));
    room[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    Some(end)
}

fn icmp6_unreachable(room: &mut [u8], l3: usize, len: usize) -> Option<usize> {
    let quote = (len - l3).min(IPV6_MIN_MTU - 48);
    let end = l3 + 48 + quote;
    if end > room.len() {
        return None;
    }
    room.copy_within(l3..l3 + quote, l3 + 48);
    room.copy_within(l3 + 48 + 8..l3 + 48 + 40, l3 + 8);
    ipv6_swap(room, l3, 58, 8 + quote);
    let icmp = l3 + 40;
    room[icmp..icmp + 8].copy_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    let c = fold(sum16(&room[icmp..end], pseudo_v6(&room[l3 + 8..l3 + 24], &room[l3 + 24..l3 + 40], 58, 8 + quote)));
    room[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const C: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const S: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn room_of(frame: &[u8]) -> Vec<u8> {
        let mut v = frame.to_vec();
        v.resize(2048, 0);
        v
    }

    #[test]
    fn tcp_syn_gets_rst_ack_with_valid_checksums() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(C, S).ipv4([10, 0, 0, 1], [203, 0, 113, 9], 64).tcp(40000, 445, 1000, 64240).syn().write(&mut f, &[]).unwrap();
        let mut room = room_of(&f);
        let n = answer(&mut room, f.len()).unwrap();
        let p = SlicedPacket::from_ethernet(&room[..n]).unwrap();
        let eth = p.link.unwrap().to_header().unwrap().ethernet2().unwrap();
        assert_eq!((eth.source, eth.destination), (S, C));
        let Some(NetSlice::Ipv4(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().source(), [203, 0, 113, 9]);
        assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let Some(TransportSlice::Tcp(tcp)) = p.transport else { panic!() };
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (445, 40000));
        assert_eq!(tcp.acknowledgment_number(), 1001);
        let h = tcp.to_header();
        assert_eq!(h.calc_checksum_ipv4(&ip.header().to_header(), &[]).unwrap(), h.checksum);
    }

    #[test]
    fn tcp_with_ack_gets_plain_rst_at_its_ack() {
        let f = synth::tcp(C, S, [10, 0, 0, 1], [203, 0, 113, 9], 40000, 80, b"GET / HTTP/1.1\r\n\r\n");
        let mut room = room_of(&f);
        let n = answer(&mut room, f.len()).unwrap();
        let p = SlicedPacket::from_ethernet(&room[..n]).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = p.transport else { panic!() };
        assert!(tcp.rst() && !tcp.ack());
        assert_eq!(tcp.sequence_number(), 1, "synth::tcp acks 1");
    }

    #[test]
    fn udp_v4_gets_icmp_admin_prohibited_quoting_the_original() {
        let f = synth::udp(C, S, [10, 0, 0, 1], [203, 0, 113, 9], 5353, 53, &synth::dns_query("a.example"));
        let mut room = room_of(&f);
        let n = answer(&mut room, f.len()).unwrap();
        let p = SlicedPacket::from_ethernet(&room[..n]).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let icmp = &room[34..n];
        assert_eq!((icmp[0], icmp[1]), (3, 13));
        assert_eq!(fold(sum16(icmp, 0)), 0, "ICMP checksum verifies");
        assert_eq!(&icmp[8..8 + 28], &f[14..14 + 28], "original IP header + 8 bytes quoted");
    }

    #[test]
    fn ipv6_tcp_and_udp_are_answered() {
        let f = synth::tcp6(C, S, [0xfd; 16], [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 40000, 443);
        let mut room = room_of(&f);
        let n = answer(&mut room, f.len()).unwrap();
        let p = SlicedPacket::from_ethernet(&room[..n]).unwrap();
        let Some(NetSlice::Ipv6(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().destination(), [0xfd; 16]);
        let Some(TransportSlice::Tcp(tcp)) = p.transport else { panic!() };
        assert!(tcp.rst());
        let h = tcp.to_header();
        assert_eq!(h.calc_checksum_ipv6(&ip.header().to_header(), &[]).unwrap(), h.checksum);

        let mut u = Vec::new();
        etherparse::PacketBuilder::ethernet2(C, S).ipv6([0xfd; 16], [0x20; 16], 64).udp(1, 2).write(&mut u, b"x").unwrap();
        let mut room = room_of(&u);
        let n = answer(&mut room, u.len()).unwrap();
        let icmp = &room[54..n];
        assert_eq!((icmp[0], icmp[1]), (1, 1));
        let c = fold(sum16(icmp, pseudo_v6(&room[22..38], &room[38..54], 58, icmp.len())));
        assert_eq!(c, 0, "ICMPv6 checksum verifies");
        assert_eq!(&room[22..38], &[0x20; 16], "from the original destination");
    }

    #[test]
    fn errors_non_ip_and_short_rooms_are_not_answered() {
        let arp = [0u8; 60];
        let mut room = room_of(&arp);
        assert_eq!(answer(&mut room, 60), None);
        let f = synth::udp(C, S, [10, 0, 0, 1], [203, 0, 113, 9], 5353, 53, b"x");
        let mut tight = f.clone();
        assert_eq!(answer(&mut tight, f.len()), None, "no tailroom for the quote");
        let mut icmp_err = Vec::new();
        etherparse::PacketBuilder::ethernet2(C, S).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).icmpv4_raw(3, 1, [0; 4]).write(&mut icmp_err, &[0; 28]).unwrap();
        let mut room = room_of(&icmp_err);
        assert_eq!(answer(&mut room, icmp_err.len()), None, "never answer an ICMP error");
    }
}
