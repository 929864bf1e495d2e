#!/usr/bin/python3
# Lab tool: hostile and junk packets from a raw socket (standard library only), run in a lab namespace.
#   spoof.py ack DST DPORT COUNT SRC  ACK-only TCP from SRC's random ports: no session behind it
#   spoof.py syn DST DPORT COUNT NET [RATE]  SYNs from spoofed hosts NET.100-NET.249 that do not exist, RATE a second
#   spoof.py icmp-errors DST COUNT    ICMP "unreachable" errors whose quoted header claims IHL=15 but is 28 bytes
#                                     long, and truncated ones (a parser that trusts lengths crashes on them)
#   spoof.py echo-replies DST COUNT   echo replies with random ids and sequences (a probe must match its own)
#   spoof.py echo-responder SECONDS   answers every echo request it sees with the right id but the wrong sequence
#                                     and payload (an on-path spoofer); use with icmp_echo_ignore_all=1
#   spoof.py synack-responder SECONDS answers every SYN with a SYN/ACK whose ack is not the SYN's seq + 1
#   spoof.py icmp6-errors DST COUNT TARGET, echo6-replies DST COUNT, echo6-responder SECONDS, synack6-responder
#                                     SECONDS: the same over IPv6 (the errors quote truncated headers, or an echo
#                                     request from DST to TARGET with ids no probe holds)
import os
import random
import select
import socket
import struct
import sys
import time


def csum(b: bytes) -> int:
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def packet(src: str, dst: str, sport: int, dport: int, flags: int) -> bytes:
    seq, ack = random.getrandbits(32), (random.getrandbits(32) if flags & 0x10 else 0)
    tcp = struct.pack('!HHIIBBHHH', sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return ip + tcp


def junk(kind: str, dst: str, dport: int, count: int, src: str, rate: float = 0) -> None:
    """`rate` packets a second (0: as fast as possible), paced every 10 ms."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    t0 = time.monotonic()
    for i in range(count):
        a = src if kind == 'ack' else '%s.%d' % (src, 100 + i % 150)
        s.sendto(packet(a, dst, 20000 + (i * 7919) % 40000, dport, 0x10 if kind == 'ack' else 0x02), (dst, 0))
        if rate and i % 100 == 99:
            ahead = t0 + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def icmp(typ: int, code: int, rest: bytes, body: bytes) -> bytes:
    h = struct.pack('!BBH', typ, code, 0) + rest
    return struct.pack('!BBH', typ, code, csum(h + body)) + rest + body


def icmp_errors(dst: str, count: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    for i in range(count):
        if i % 2:
            # The quoted IP header says IHL=15 (60 bytes), but only 28 bytes are quoted.
            quoted = struct.pack('!BBHHHBBH4s4s', 0x4F, 0, 84, 1, 0, 64, 1, 0, socket.inet_aton(dst), socket.inet_aton('192.0.2.1')) + os.urandom(8)
        else:
            quoted = os.urandom(random.randint(0, 6))  # truncated: not even a header
        s.sendto(icmp(3, random.choice([1, 3, 13]), b'\0\0\0\0', quoted), (dst, 0))


def echo_replies(dst: str, count: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    for _ in range(count):
        s.sendto(icmp(0, 0, struct.pack('!HH', random.getrandbits(16), random.getrandbits(16)), b'fwlb' + os.urandom(12)), (dst, 0))


def respond(proto: int, seconds: float, answer, fam=socket.AF_INET) -> None:
    """Read a raw socket for `seconds`; `answer(data, addr)` returns (packet, destination) to send back, or None.
    An IPv6 raw socket reads no IP header; for TCP over IPv6 the kernel fills in the checksum (offset 16)."""
    s = socket.socket(fam, socket.SOCK_RAW, proto)
    if fam == socket.AF_INET6 and proto == socket.IPPROTO_TCP:
        s.setsockopt(socket.IPPROTO_IPV6, 7, 16)  # IPV6_CHECKSUM
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], 0.1)
        if r:
            data, addr = s.recvfrom(4096)
            out = answer(data, addr)
            if out:
                s.sendto(out[0], (out[1], 0))


def echo_answer(data: bytes, addr):
    ihl = (data[0] & 0x0F) * 4
    if len(data) < ihl + 8 or data[ihl] != 8:
        return None
    ident, seq = struct.unpack('!HH', data[ihl + 4:ihl + 8])
    return icmp(0, 0, struct.pack('!HH', ident, (seq + 1) & 0xFFFF), os.urandom(16)), addr[0]


def synack_answer(data: bytes, addr):
    ihl = (data[0] & 0x0F) * 4
    if len(data) < ihl + 20 or data[ihl + 13] != 0x02:
        return None
    sport, dport, seq = struct.unpack('!HHI', data[ihl:ihl + 8])
    src, dst = socket.inet_ntoa(data[16:20]), socket.inet_ntoa(data[12:16])
    seg = struct.pack('!HHIIBBHHH', dport, sport, random.getrandbits(32), (seq + 7) & 0xFFFFFFFF, 5 << 4, 0x12, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(seg))
    return seg[:16] + struct.pack('!H', csum(pseudo + seg)) + seg[18:], dst


def icmp6(typ: int, code: int, rest: bytes, body: bytes) -> bytes:
    # The kernel computes an ICMPv6 checksum itself.
    return struct.pack('!BBH', typ, code, 0) + rest + body


def icmp6_errors(dst: str, count: int, target: str) -> None:
    """Errors to DST (the prober) quoting packets from DST to TARGET (the probed address)."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    me = socket.inet_pton(socket.AF_INET6, dst)
    tgt = socket.inet_pton(socket.AF_INET6, target)
    for i in range(count):
        if i % 3 == 0:
            quoted = os.urandom(random.randint(0, 47))  # truncated: not even a header and an echo
        elif i % 3 == 1:
            # A well-formed IPv6 header and echo request to the target, with ids no probe holds.
            echo = struct.pack('!BBHHH', 128, 0, 0, random.getrandbits(16), random.getrandbits(16)) + os.urandom(16)
            quoted = struct.pack('!IHBB', 6 << 28, len(echo), 58, 64) + me + tgt + echo
        else:
            # Claims to quote a packet with a next header the parser must not follow.
            quoted = struct.pack('!IHBB', 6 << 28, 8, 0, 64) + me + tgt + os.urandom(8)
        s.sendto(icmp6(random.choice([1, 3]), random.choice([0, 3, 4]), b'\0\0\0\0', quoted), (dst, 0))


def echo6_replies(dst: str, count: int) -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    for _ in range(count):
        s.sendto(icmp6(129, 0, struct.pack('!HH', random.getrandbits(16), random.getrandbits(16)), b'fwlb' + os.urandom(12)), (dst, 0))


def echo6_answer(data: bytes, addr):
    if len(data) < 8 or data[0] != 128:
        return None
    ident, seq = struct.unpack('!HH', data[4:8])
    return icmp6(129, 0, struct.pack('!HH', ident, (seq + 1) & 0xFFFF), os.urandom(16)), addr[0]


def synack6_answer(data: bytes, addr):
    if len(data) < 20 or data[13] != 0x02:
        return None
    sport, dport, seq = struct.unpack('!HHI', data[:8])
    return struct.pack('!HHIIBBHHH', dport, sport, random.getrandbits(32), (seq + 7) & 0xFFFFFFFF, 5 << 4, 0x12, 64240, 0, 0), addr[0]


def main() -> None:
    mode = sys.argv[1]
    if mode == 'icmp-errors':
        icmp_errors(sys.argv[2], int(sys.argv[3]))
    elif mode == 'echo-replies':
        echo_replies(sys.argv[2], int(sys.argv[3]))
    elif mode == 'echo-responder':
        respond(socket.IPPROTO_ICMP, float(sys.argv[2]), echo_answer)
    elif mode == 'synack-responder':
        respond(socket.IPPROTO_TCP, float(sys.argv[2]), synack_answer)
    elif mode == 'icmp6-errors':
        icmp6_errors(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif mode == 'echo6-replies':
        echo6_replies(sys.argv[2], int(sys.argv[3]))
    elif mode == 'echo6-responder':
        respond(socket.IPPROTO_ICMPV6, float(sys.argv[2]), echo6_answer, socket.AF_INET6)
    elif mode == 'synack6-responder':
        respond(socket.IPPROTO_TCP, float(sys.argv[2]), synack6_answer, socket.AF_INET6)
    elif mode in ('ack', 'syn'):
        junk(mode, sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6]) if len(sys.argv) > 6 else 0)
    else:
        sys.exit('usage: spoof.py icmp-errors DST N | echo-replies DST N | echo-responder S | synack-responder S | ack|syn DST DPORT N SRC')


if __name__ == '__main__':
    main()
