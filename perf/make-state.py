#!/usr/bin/env python3
"""Write a realistic enforcement state and a traffic mix for benchmarks:

  policy.toml     100 rules (the one that accepts most traffic is rule 98,
                  so every frame walks ~all of them), lan/wan zones
  endpoints.toml  N endpoints (default 100,000): 95% green, 3% yellow, 2% red
  feed.toml       + lists: M indicators (default 1,000,000): 60% IPv4, 10% IPv4
                  CIDR, 5% IPv6, 20% domains, 5% URLs; one exclusion network
  traffic.pcap    F frames (default 4096) from random endpoints: 20% DNS queries,
                  10% TLS ClientHellos, 5% HTTP requests, the rest 64-byte
                  TCP/UDP; ~2% of destinations or names are listed indicators

usage: make-state.py DIR [--endpoints N] [--indicators M] [--frames F] [--seed S]
Standard library only.
"""
import argparse
import os
import random
import struct


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ep_mac(i):
    return bytes([0x02, 0x10, (i >> 24) & 0xFF, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])


def ep_ip(i):
    return bytes([10, 100 + (i >> 16), (i >> 8) & 0xFF, i & 0xFF])


def ipv4(src, dst, proto, payload):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def eth(src, dst, ip):
    f = dst + src + b"\x08\x00" + ip
    return f + bytes(max(0, 60 - len(f)))


def udp(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport, dport, payload):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 64240, 0, 0) + payload


def dns_query(name):
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0\x00\x01\x00\x01"


def client_hello(sni):
    name = sni.encode()
    sni_ext = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    exts = struct.pack("!HH", 0, len(sni_ext)) + sni_ext
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--endpoints", type=int, default=100_000)
    ap.add_argument("--indicators", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    os.makedirs(a.dir, exist_ok=True)
    p = lambda name: os.path.join(a.dir, name)

    # Policy: 97 rules that match nothing in the traffic, then the real ones.
    with open(p("policy.toml"), "w") as f:
        f.write('default_action = "drop"\nmissing_heartbeat_zones = ["lan"]\n\n')
        f.write('[[zone]]\nname = "lan"\nrole = "lan"\n\n[[zone]]\nname = "wan"\nrole = "wan"\n\n')
        for r in range(97):
            f.write(f'[[rule]]\nname = "filler {r}"\nsource_zones = ["lan"]\ndestination_zones = ["wan"]\n'
                    f'destination_networks = ["172.{16 + r % 16}.{r}.0/24"]\n'
                    f'services = [{{ protocol = "tcp", ports = [{1000 + r}, "{20000 + r * 10}-{20000 + r * 10 + 5}"] }}]\n'
                    f'action = "{"drop" if r % 2 else "accept"}"\nmin_source_heartbeat = "yellow"\n\n')
        f.write('[[rule]]\nname = "internet for green clients"\nsource_zones = ["lan"]\ndestination_zones = ["wan"]\n'
                'action = "accept"\nmin_source_heartbeat = "green"\nblock_clients_without_heartbeat = true\n\n')
        f.write('[[rule]]\nname = "replies"\nsource_zones = ["wan"]\ndestination_zones = ["lan"]\naction = "accept"\n\n')
        f.write('[[rule]]\nname = "servers"\nsource_zones = ["lan"]\ndestination_zones = ["wan"]\n'
                'destination_networks = ["10.20.0.0/16"]\naction = "accept"\nmin_destination_heartbeat = "green"\n')

    healths = ["green"] * 95 + ["yellow"] * 3 + ["red"] * 2
    with open(p("endpoints.toml"), "w") as f:
        for i in range(a.endpoints):
            mac = ":".join(f"{b:02x}" for b in ep_mac(i))
            ip = ".".join(str(b) for b in ep_ip(i))
            f.write(f'[[endpoint]]\nid = {i + 1}\nhealth = "{healths[i % 100]}"\n'
                    f'interfaces = [{{ mac = "{mac}", ips = ["{ip}"] }}]\n')

    listed_ips, listed_names = [], []
    with open(p("mdr.txt"), "w") as f:
        for i in range(a.indicators):
            k = i % 20
            if k < 12:
                v = f"198.{18 + (i >> 16) % 2}.{(i >> 8) & 255}.{i & 255}" if i < 131072 else \
                    f"{11 + (i >> 24) % 100}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
                if len(listed_ips) < 512:
                    listed_ips.append(v)
            elif k < 14:
                v = f"{120 + (i >> 20) % 60}.{(i >> 12) & 255}.{(i >> 4) & 255}.0/24"
            elif k == 14:
                v = f"2001:db8:{(i >> 16) & 0xffff:x}:{i & 0xffff:x}::1"
            elif k < 19:
                v = f"bad{i}.example{i % 97}.com"
                if len(listed_names) < 512:
                    listed_names.append(v)
            else:
                v = f"http://dl{i}.example.org/payload/{i}"
            f.write(f"{v} MDR-{i}\n")
    with open(p("feed.toml"), "w") as f:
        f.write('exclusions = ["198.18.255.0/24"]\n\n[settings]\naction = "log_and_drop"\n\n'
                '[[list]]\nfile = "mdr.txt"\nfeed = "mdr"\n')

    gw = bytes([0x02, 0xEE, 0, 0, 0, 1])
    frames = []
    for n in range(a.frames):
        i = rnd.randrange(a.endpoints)
        i = i - i % 100 + rnd.randrange(95)  # mostly green senders, so most traffic crosses
        src_mac, src = ep_mac(i), ep_ip(i)
        hit = rnd.random() < 0.02
        dst = bytes(int(x) for x in rnd.choice(listed_ips).split(".")) if hit and listed_ips else \
            bytes([203, 0, 113, rnd.randrange(1, 255)])
        sport = 1024 + rnd.randrange(60000)
        r = rnd.random()
        if r < 0.20:
            name = rnd.choice(listed_names) if hit and listed_names else f"www.site{rnd.randrange(100000)}.example.net"
            frames.append(eth(src_mac, gw, ipv4(src, dst, 17, udp(sport, 53, dns_query(name)))))
        elif r < 0.30:
            name = rnd.choice(listed_names) if hit and listed_names else f"api.service{rnd.randrange(100000)}.example.net"
            frames.append(eth(src_mac, gw, ipv4(src, dst, 6, tcp(sport, 443, client_hello(name)))))
        elif r < 0.35:
            req = f"GET /index{rnd.randrange(1000)}.html HTTP/1.1\r\nHost: www.site{rnd.randrange(1000)}.example.net\r\n\r\n".encode()
            frames.append(eth(src_mac, gw, ipv4(src, dst, 6, tcp(sport, 80, req))))
        elif r < 0.70:
            frames.append(eth(src_mac, gw, ipv4(src, dst, 6, tcp(sport, 443, b""))))
        else:
            frames.append(eth(src_mac, gw, ipv4(src, dst, 17, udp(sport, 4500, bytes(18)))))
    with open(p("traffic.pcap"), "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for k, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 0, k, len(fr), len(fr)) + fr)
    sizes = sorted(len(x) for x in frames)
    print(f"wrote {a.dir}: {a.endpoints} endpoints, {a.indicators} indicators, {len(frames)} frames "
          f"(median {sizes[len(sizes)//2]} B, mean {sum(sizes)/len(sizes):.0f} B)")


if __name__ == "__main__":
    main()
