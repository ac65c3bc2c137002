#!/usr/bin/env python3
"""Write a pcap of N Ethernet/IPv4/UDP frames of one size (no FCS), varying
source MAC/IP/port across 256 simulated endpoints, for replay through
net_pcap (infinite_rx=1) in benchmarks. Standard library only.

usage: make-pcap.py OUT.pcap [--size 60] [--count 1024]
"""
import argparse
import struct


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(i: int, size: int) -> bytes:
    ep = i % 256
    src_mac = bytes([0x02, 0x00, 0x0A, 0x0A, 0x00, ep])
    dst_mac = bytes([0x02, 0x00, 0xC6, 0x33, 0x64, 0x01])
    payload_len = max(size - 14 - 20 - 8, 0)
    ip_len = 20 + 8 + payload_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, i & 0xFFFF, 0, 64, 17, 0,
                     bytes([10, 10, ep >> 8, ep & 0xFF]), bytes([198, 51, 100, 1 + i % 200]))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", 1024 + i % 50000, 9, 8 + payload_len, 0)
    return dst_mac + src_mac + b"\x08\x00" + ip + udp + bytes(payload_len)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=60, help="frame size without FCS (60 = 64-byte wire frame)")
    ap.add_argument("--count", type=int, default=1024)
    a = ap.parse_args()
    if not 60 <= a.size <= 1514:
        raise SystemExit(f"make-pcap: size {a.size} is out of range: use 60..1514 (bytes without FCS)")
    with open(a.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(a.count):
            fr = frame(i, a.size)
            f.write(struct.pack("<IIII", 0, i, len(fr), len(fr)) + fr)


if __name__ == "__main__":
    main()
