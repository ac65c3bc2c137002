#!/usr/bin/env python3
"""Write the pcap files that the Pktgen recipes replay (Pktgen's `-s PORT:FILE`).
Pktgen has no IMIX mode and builds no DNS or TLS payloads, so these two
mixes come from files:

  imix.pcap         simple IMIX: 64, 594 and 1518-byte frames (on the wire,
                    with FCS) in the ratio 7:4:1, interleaved; UDP from the
                    simulated endpoints to unlisted servers
  threat-mix.pcap   the demo's traffic mix from the simulated endpoints:
                    DNS queries, TLS ClientHellos (SNI), HTTP requests and
                    IMIX-sized TCP, some of which hit the demo feed
                    (scripts/demo/feed.toml): DNS queries and SNIs for
                    malware.example, and HTTP to 198.51.100.29

Endpoint i (0-based) is hbgw-endpoint-sim's ep<i>: MAC 02:5e:00:00:00:<i>,
IP 10.77.0.<i+1>, as in src/demo.rs. Frames go from the LAN (Pktgen port 0
into hbgw's LAN port) to servers 198.51.100.10..28 through the router MAC
02:00:c6:33:64:01. The summary printed at the end says how many frames each
file holds and how many of them hbgw's enforcement should drop as
threat_indicator.

usage: make-pcaps.py OUTDIR [--endpoints 8] [--imix-frames 1200] [--mix-frames 1024]
Standard library only.
"""
import argparse
import os
import struct

ROUTER_MAC = bytes([0x02, 0x00, 0xC6, 0x33, 0x64, 0x01])
LISTED_DOMAIN = "malware.example"
LISTED_SERVER = bytes([198, 51, 100, 29])
# Sizes on the wire include the 4-byte FCS, which a pcap does not hold.
IMIX_CYCLE = [64, 594, 64, 64, 594, 64, 1518, 64, 594, 64, 64, 594]  # 7 x 64, 4 x 594, 1 x 1518


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ep_mac(i: int) -> bytes:
    return bytes([0x02, 0x5E, 0, 0, (i >> 8) & 0xFF, i & 0xFF])


def ep_ip(i: int) -> bytes:
    n = i + 1
    return bytes([10, 77, (n >> 8) & 0xFF, n & 0xFF])


def server(n: int) -> bytes:
    return bytes([198, 51, 100, 10 + n % 19])  # .10 .. .28: never the listed .29


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, 64, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def eth(src: bytes, dst: bytes, ip: bytes) -> bytes:
    f = dst + src + b"\x08\x00" + ip
    return f + bytes(max(0, 60 - len(f)))


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 64240, 0, 0) + payload


def dns_query(name: str) -> bytes:
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0\x00\x01\x00\x01"


def client_hello(sni: str) -> bytes:
    name = sni.encode()
    sni_ext = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    exts = struct.pack("!HH", 0, len(sni_ext)) + sni_ext
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def http_get(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pktgen-recipe\r\n\r\n".encode()


def imix_frame(n: int, endpoints: int) -> bytes:
    ep = n % endpoints
    wire = IMIX_CYCLE[n % len(IMIX_CYCLE)]
    payload = bytes(wire - 4 - 14 - 20 - 8)
    ip = ipv4(ep_ip(ep), server(n), 17, udp(40000 + n % 20000, 9, payload), n)
    return eth(ep_mac(ep), ROUTER_MAC, ip)


def mix_frame(n: int, endpoints: int):
    """One LAN -> WAN frame of the demo's mix and whether it hits the feed."""
    ep = (n + n // 8) % endpoints  # every endpoint sends every kind
    mac, src = ep_mac(ep), ep_ip(ep)
    sport = 40000 + n % 20000
    dst = server(n)
    kind = n % 8
    hit = False
    if kind == 0:  # DNS query; one in four asks for the listed domain
        hit = (n // 8) % 4 == 0
        name = LISTED_DOMAIN if hit else f"www.site{n % 97}.example.net"
        ip = ipv4(src, dst, 17, udp(sport, 53, dns_query(name)), n)
    elif kind == 1:  # TLS ClientHello; one in four names the listed domain
        hit = (n // 8) % 4 == 1
        sni = LISTED_DOMAIN if hit else f"api{n % 31}.example.net"
        ip = ipv4(src, dst, 6, tcp(sport, 443, client_hello(sni)), n)
    elif kind == 2:  # HTTP request; one in four goes to the listed server
        hit = (n // 8) % 4 == 2
        ip = ipv4(src, LISTED_SERVER if hit else dst, 6, tcp(sport, 80, http_get("www.example.org", "/index.html")), n)
    else:  # plain TCP with IMIX-like sizes
        length = [18, 18, 530, 18, 1430][kind - 3]
        ip = ipv4(src, dst, 6, tcp(sport, 443, bytes(length)), n)
    return eth(mac, ROUTER_MAC, ip), hit


def write_pcap(path: str, frames) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 0, i * 10, len(fr), len(fr)) + fr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--endpoints", type=int, default=8, help="simulated endpoints ep0..ep<N-1> (default 8, as the demo)")
    ap.add_argument("--imix-frames", type=int, default=1200, help="frames in imix.pcap (a multiple of 12 keeps 7:4:1 exact)")
    ap.add_argument("--mix-frames", type=int, default=1024, help="frames in threat-mix.pcap (a multiple of 32 keeps the ratios exact)")
    a = ap.parse_args()
    if not 1 <= a.endpoints <= 65535:
        raise SystemExit(f"make-pcaps: --endpoints {a.endpoints} is out of range: use 1..65535")
    if a.imix_frames < 1 or a.mix_frames < 1:
        raise SystemExit("make-pcaps: frame counts must be at least 1")
    os.makedirs(a.outdir, exist_ok=True)

    imix = [imix_frame(n, a.endpoints) for n in range(a.imix_frames)]
    write_pcap(os.path.join(a.outdir, "imix.pcap"), imix)
    wire = [len(f) + 4 for f in imix]
    print(f"{a.outdir}/imix.pcap: {len(imix)} frames, "
          f"{wire.count(64)} x 64 B, {wire.count(594)} x 594 B, {wire.count(1518)} x 1518 B on the wire "
          f"(mean {sum(wire) / len(wire):.1f} B with FCS)")

    mix = [mix_frame(n, a.endpoints) for n in range(a.mix_frames)]
    write_pcap(os.path.join(a.outdir, "threat-mix.pcap"), [f for f, _ in mix])
    hits = sum(1 for _, h in mix if h)
    mean = sum(len(f) + 4 for f, _ in mix) / len(mix)
    print(f"{a.outdir}/threat-mix.pcap: {len(mix)} frames (mean {mean:.1f} B with FCS), "
          f"{hits} hit the demo feed ({100 * hits / len(mix):.2f}%): DNS and SNI {LISTED_DOMAIN}, "
          f"HTTP to {'.'.join(map(str, LISTED_SERVER))}")
    print(f"endpoints: ep0..ep{a.endpoints - 1}, MAC 02:5e:00:00:00:00.., IP 10.77.0.1..")


if __name__ == "__main__":
    main()
