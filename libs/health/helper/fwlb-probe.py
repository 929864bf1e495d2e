#!/usr/bin/python3
# fwlb-probe: the socket shim of libs/health. Node.js has neither raw sockets nor SO_MARK / SO_BINDTODEVICE, so
# the probes that need them run here, as JSON lines on stdin/stdout: one request per line, one answer per line.
# Python standard library only. Decisions (up/down, timers, HTTP parsing) stay in TypeScript.
#
# request:  {"id": 1, "op": "icmp"|"syn"|"connect", "target": "203.0.113.11" or "2001:db8::11", "port": 80, "timeoutMs": 50,
#            "mark": 65536, "device": "fw1", "source": "172.16.1.1",
#            "send": "GET / HTTP/1.0\r\n\r\n", "readMax": 65536, "close": "fin"|"rst", "sentAt": 1732000000000.5}
# answer:   {"id": 1, "ok": true, "reason": "...", "latencyMs": 0.41, "data": "..."}
#           {"id": 1, "ok": false, "unknown": true, "reason": "overloaded: ..."}   (the probe was never sent)
#
# One thread, one event loop (selectors). Why: a thread and a raw socket per probe cost a thread start each, and
# every raw ICMP socket receives every ICMP packet, so N probes in flight made N copies of each reply; 8,000 members
# overran it (about 1,450 checks/s at 79 % of a core). Here ICMP and SYN probes share one raw socket per (mark,
# device, source) and replies are matched by key in O(1). A probe's deadline starts when it is sent; a request that
# waited longer than its own timeout before it could be sent is answered `unknown` (the helper was overloaded: that
# says nothing about the target, and must never turn into a member marked down).
import errno, heapq, json, os, random, selectors, socket, struct, sys, time

SO_MARK = 36
SO_RCVBUFFORCE = 33
SO_RXQ_OVFL = 40
ICMP6_FILTER = 1
# A timeout is a failed check only if the helper was there to see the reply: when it handles a deadline later than
# this (its loop fell behind), or its socket dropped packets meanwhile, the answer is unknown instead.
LATE_S = 0.05
RAW_RCVBUF = 8 << 20

sel = selectors.DefaultSelector()
out = []  # answer lines, flushed once per loop turn
probes = {}  # id -> Probe
timers = []  # heap of (deadline, seq, probe)
timer_seq = 0


def answer(msg):
    out.append(json.dumps(msg) + "\n")


def flush():
    if out:
        try:
            sys.stdout.write("".join(out))
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            os._exit(0)  # the parent went away
        del out[:]


def big_buffer(s):
    """A raw socket sees every ICMP (or TCP) packet this host receives; under a flood of junk a small buffer fills
    and the answers we wait for are dropped. Root may force a larger buffer than rmem_max."""
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RAW_RCVBUF)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RAW_RCVBUF)


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def same_addr(a, b):
    """Two addresses in text form are the same address (IPv6 has many spellings of one)."""
    try:
        f = family(a)
        return f == family(b) and socket.inet_pton(f, a) == socket.inet_pton(f, b)
    except (OSError, ValueError):
        return False


def apply_opts(s, req):
    if req.get("mark"):
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, int(req["mark"]))
    if req.get("device"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, str(req["device"]).encode())


def source_for(req):
    """The address the kernel would use toward target, with the same mark and device (UDP connect sends nothing)."""
    if req.get("source"):
        return req["source"]
    u = socket.socket(family(req["target"]), socket.SOCK_DGRAM)
    try:
        apply_opts(u, req)
        u.connect((req["target"], int(req.get("port") or 9)))
        return u.getsockname()[0]
    finally:
        u.close()


def ip_payload(data):
    """The payload of an IPv4 packet read from a raw socket, or None when the header does not fit. Why so careful:
    anyone can send this host ICMP, and a length that is trusted is an IndexError."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    if ihl < 20 or len(data) < ihl:
        return None
    return data[ihl:]


def quoted_echo(icmp_body):
    """(ident, seq, dst) of the echo request an ICMP error quotes, or None."""
    inner = ip_payload(icmp_body)
    if inner is None or len(inner) < 8 or icmp_body[9] != socket.IPPROTO_ICMP or inner[0] != 8:
        return None
    ident, seq = struct.unpack("!HH", inner[4:8])
    return ident, seq, socket.inet_ntoa(icmp_body[16:20])


def quoted_echo6(icmp_body):
    """(ident, seq, dst) of the ICMPv6 echo request an ICMPv6 error quotes (its IPv6 header, 40 bytes, then the
    echo; an extension header in between is not ours), or None."""
    if len(icmp_body) < 48 or icmp_body[0] >> 4 != 6 or icmp_body[6] != socket.IPPROTO_ICMPV6 or icmp_body[40] != 128:
        return None
    ident, seq = struct.unpack("!HH", icmp_body[44:48])
    return ident, seq, socket.inet_ntop(socket.AF_INET6, icmp_body[24:40])


class Probe:
    def __init__(self, req):
        self.req = req
        self.id = req.get("id")
        self.t0 = time.monotonic()
        self.deadline = self.t0 + float(req.get("timeoutMs", 1000)) / 1000
        self.done = False
        self.tainted = False
        self.cleanup = []

    def finish(self, res):
        if self.done:
            return
        self.done = True
        probes.pop(self.id, None)
        for f in self.cleanup:
            try:
                f()
            except Exception:
                pass
        res["id"] = self.id
        answer(res)

    def ms(self):
        return (time.monotonic() - self.t0) * 1000

    def timeout(self):
        self.finish({"ok": False, "reason": "timeout"})

    def unknown(self, why):
        self.finish({"ok": False, "unknown": True, "reason": "overloaded: %s" % why})


def arm(p):
    global timer_seq
    timer_seq += 1
    heapq.heappush(timers, (p.deadline, timer_seq, p))


class RawShared:
    """One raw socket per (family, protocol, mark, device, source): probes are registered by key, replies dispatched
    by key. An IPv6 raw socket reads no IP header: its data starts at the ICMPv6 or TCP header."""

    pools = {}

    @classmethod
    def get(cls, proto, req):
        fam = family(req["target"])
        k = (fam, proto, req.get("mark") or 0, req.get("device") or "", req.get("source") or "")
        s = cls.pools.get(k)
        if s is None:
            s = cls.pools[k] = RawShared(fam, proto, req)
        return s

    def __init__(self, fam, proto, req):
        self.fam = fam
        self.proto = proto
        self.sock = socket.socket(fam, socket.SOCK_RAW, proto)
        self.sock.setblocking(False)
        big_buffer(self.sock)
        self.drops = 0
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        except OSError:
            pass
        apply_opts(self.sock, req)
        if proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6) and req.get("source"):
            self.sock.bind((req["source"], 0))
        if proto == socket.IPPROTO_ICMPV6:
            # Only echo replies and the errors that may quote an echo: neighbour discovery never reaches us.
            allowed = (1, 3, 129)
            filt = [0xFFFFFFFF] * 8
            for t in allowed:
                filt[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
            self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *filt))
        self.waiting = {}
        self.ident = random.randint(1, 0xFFFF)
        self.seq = random.randint(0, 0xFFFF)
        sel.register(self.sock, selectors.EVENT_READ, self.readable)

    def canon(self, addr):
        """The text form replies are keyed by (the kernel's, for the target as the request spelled it)."""
        return socket.inet_ntop(self.fam, socket.inet_pton(self.fam, addr))

    def next_id(self):
        """A fresh (ident, seq) for an ICMP probe: the sequence counts up, the identifier changes when it wraps."""
        self.seq = (self.seq + 1) & 0xFFFF
        if self.seq == 0:
            self.ident = random.randint(1, 0xFFFF)
        return self.ident, self.seq

    def readable(self, limit=256):
        for _ in range(limit):  # bounded: stdin and the other sockets get their turn
            try:
                data, anc, _, addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for level, typ, val in anc:
                if level == socket.SOL_SOCKET and typ == SO_RXQ_OVFL and len(val) >= 4:
                    dropped = struct.unpack("I", val[:4])[0]
                    if dropped != self.drops:
                        # The socket overflowed: a reply of any probe waiting now may be lost; none of their
                        # timeouts can be trusted.
                        self.drops = dropped
                        for p in self.waiting.values():
                            p.tainted = True
            try:
                # An IPv4 raw socket reads the IP header too; an IPv6 one starts at the ICMPv6 or TCP header.
                payload = data if self.fam == socket.AF_INET6 else ip_payload(data)
                if self.proto == socket.IPPROTO_TCP:
                    self.tcp_reply(payload, addr)
                else:
                    self.icmp_reply(payload, addr)
            except Exception:
                pass  # a malformed packet is never a dead helper

    # The ICMP types per family: echo reply, destination unreachable, time exceeded; and the quoted-echo parser.
    ICMP_TYPES = {socket.AF_INET: (0, 3, 11, quoted_echo), socket.AF_INET6: (129, 1, 3, quoted_echo6)}

    def icmp_reply(self, body, addr):
        """An ICMP or ICMPv6 message, from its header on."""
        if body is None or len(body) < 8:
            return
        reply, unreach, exceeded, quoted = self.ICMP_TYPES[self.fam]
        typ, code = body[0], body[1]
        if typ == reply:
            ident, seq = struct.unpack("!HH", body[4:8])
            p = self.waiting.get((ident, seq))
            # An echo reply is ours only if it comes from the target with our id, our sequence and our payload.
            if p and same_addr(addr[0], p.req["target"]) and body[8:] == p.payload:
                p.finish({"ok": True, "reason": "echo reply", "latencyMs": p.ms()})
        elif typ in (unreach, exceeded):
            q = quoted(body[8:])
            if q is None:
                return
            p = self.waiting.get((q[0], q[1]))
            # An error counts only when it quotes our probe (id, sequence and destination).
            if p and same_addr(q[2], p.req["target"]):
                what = "unreachable (code %d)" % code if typ == unreach else "time exceeded"
                p.finish({"ok": False, "reason": what, "latencyMs": p.ms()})

    def tcp_reply(self, seg, addr):
        if seg is None or len(seg) < 20:
            return
        sp, dp, _, ack = struct.unpack("!HHII", seg[:12])
        p = self.waiting.get((self.canon(addr[0]), sp, dp))
        if p is None:
            return
        flags = seg[13]
        # Ours only if it answers our SYN: the ports, and an acknowledgement of exactly our sequence number.
        if not flags & 0x10 or ack != (p.isn + 1) & 0xFFFFFFFF:
            return
        if flags & 0x12 == 0x12:
            p.finish({"ok": True, "reason": "syn-ack", "latencyMs": p.ms()})
        elif flags & 0x04:
            p.finish({"ok": False, "reason": "refused", "latencyMs": p.ms()})


def start_icmp(p):
    req = p.req
    v6 = family(req["target"]) == socket.AF_INET6
    shared = RawShared.get(socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP, req)
    ident, seq = shared.next_id()
    p.payload = b"fwlb" + os.urandom(12)
    if v6:
        # The kernel computes an ICMPv6 checksum itself (it covers the IPv6 pseudo-header).
        pkt = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + p.payload
    else:
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, checksum(hdr + p.payload), ident, seq) + p.payload
    key = (ident, seq)
    shared.waiting[key] = p
    p.cleanup.append(lambda: shared.waiting.pop(key, None))
    shared.sock.sendto(pkt, (req["target"], 0))


def start_syn(p):
    """Half-open: send a SYN from a raw socket; a SYN/ACK means up. No local socket listens on our port, so the
    kernel itself answers the SYN/ACK with RST and the server's application never accepts a connection."""
    req = p.req
    target, port = req["target"], int(req["port"])
    src = source_for(req)
    fam = family(target)
    hold = socket.socket(fam, socket.SOCK_STREAM)  # reserves the source port; never connects
    p.cleanup.append(hold.close)
    hold.bind((src, 0))
    sport = hold.getsockname()[1]
    shared = RawShared.get(socket.IPPROTO_TCP, req)
    p.isn = random.randint(0, 0xFFFFFFFF)
    opts = struct.pack("!BBH", 2, 4, 1460)  # MSS

    def tcp(csum):
        return struct.pack("!HHIIBBHHH", sport, port, p.isn, 0, (5 + 1) << 4, 0x02, 64240, csum, 0) + opts

    if fam == socket.AF_INET6:
        pseudo = socket.inet_pton(fam, src) + socket.inet_pton(fam, target) + struct.pack("!IxxxB", 24, socket.IPPROTO_TCP)
    else:
        pseudo = socket.inet_aton(src) + socket.inet_aton(target) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 24)
    key = (shared.canon(target), port, sport)
    shared.waiting[key] = p
    p.cleanup.append(lambda: shared.waiting.pop(key, None))
    shared.sock.sendto(tcp(checksum(pseudo + tcp(0))), (target, 0))


def start_connect(p):
    req = p.req
    s = socket.socket(family(req["target"]), socket.SOCK_STREAM)
    p.sock = s
    p.data = b""
    p.connected_ms = None
    p.cleanup.append(lambda: close_connect(p))
    s.setblocking(False)
    apply_opts(s, req)
    if req.get("source"):
        s.bind((req["source"], 0))
    err = s.connect_ex((req["target"], int(req["port"])))
    if err not in (0, errno.EINPROGRESS):
        raise OSError(err, os.strerror(err))
    sel.register(s, selectors.EVENT_WRITE, lambda: guarded(p, connect_event))
    p.timeout = lambda: connect_timeout(p)


def guarded(p, f):
    """A socket error on a connected probe (reset, broken pipe) is that probe's failed check."""
    try:
        f(p)
    except OSError as e:
        p.finish({"ok": False, "reason": e.strerror or str(e)})


def close_connect(p):
    try:
        sel.unregister(p.sock)
    except (KeyError, ValueError):
        pass
    if p.req.get("close") == "rst":
        try:
            p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    p.sock.close()


def connect_event(p):
    s, req = p.sock, p.req
    if p.connected_ms is None:
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == errno.ECONNREFUSED:
            return p.finish({"ok": False, "reason": "refused", "latencyMs": p.ms()})
        if err:
            return p.finish({"ok": False, "reason": os.strerror(err)})
        p.connected_ms = p.ms()
        if not req.get("send"):
            return p.finish({"ok": True, "reason": "connected", "latencyMs": p.connected_ms, "data": ""})
        s.sendall(req["send"].encode("latin-1"))  # a short request: it fits in a fresh socket's send buffer
        sel.modify(s, selectors.EVENT_READ, lambda: guarded(p, connect_event))
        return
    limit = int(req.get("readMax", 65536))
    try:
        chunk = s.recv(min(65536, limit - len(p.data)))
    except (BlockingIOError, InterruptedError):
        return
    if chunk:
        p.data += chunk
    if not chunk or len(p.data) >= limit:
        p.finish({"ok": True, "reason": "connected", "latencyMs": p.ms(), "data": p.data.decode("latin-1")})


def connect_timeout(p):
    if p.connected_ms is None:
        p.finish({"ok": False, "reason": "timeout"})
    elif not p.data:
        p.finish({"ok": False, "reason": "timeout (no response)"})
    else:
        p.finish({"ok": True, "reason": "connected", "latencyMs": p.ms(), "data": p.data.decode("latin-1")})


OPS = {"icmp": start_icmp, "syn": start_syn, "connect": start_connect}


def handle(req):
    if not isinstance(req, dict):
        return answer({"id": None, "ok": False, "reason": "bad request: not an object"})
    rid = req.get("id")
    try:
        timeout_ms = float(req.get("timeoutMs", 1000))
        sent_at = req.get("sentAt")
        if isinstance(sent_at, (int, float)):
            waited = time.time() * 1000 - sent_at
            if waited > timeout_ms:
                return answer({"id": rid, "ok": False, "unknown": True, "reason": "overloaded: the request waited %d ms before it could be sent (timeout %d ms)" % (waited, timeout_ms)})
        op = OPS[req["op"]]
        p = Probe(req)
        if rid in probes:
            return answer({"id": rid, "ok": False, "reason": "bad request: duplicate id"})
        probes[rid] = p
        try:
            op(p)
        except KeyError as e:
            return p.finish({"ok": False, "reason": "bad request: missing %s" % e})
        except OSError as e:
            return p.finish({"ok": False, "reason": e.strerror or str(e)})
        if not p.done:
            arm(p)
    except KeyError as e:
        answer({"id": rid, "ok": False, "reason": "bad request: missing %s" % e})
    except Exception as e:  # a per-request failure is a failed check, never a dead helper
        answer({"id": rid, "ok": False, "reason": "probe error: %s" % type(e).__name__})


class Stdin:
    def __init__(self):
        self.fd = sys.stdin.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.eof = False
        sel.register(self.fd, selectors.EVENT_READ, self.readable)

    def readable(self):
        try:
            chunk = os.read(self.fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:
            self.eof = True
            sel.unregister(self.fd)
            return
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
            except ValueError:
                answer({"id": None, "ok": False, "reason": "bad json"})
                continue
            handle(req)


def main():
    answer({"id": 0, "ready": True})
    flush()
    stdin = Stdin()
    while not stdin.eof or probes:
        wait = None
        if timers:
            wait = max(0.0, timers[0][0] - time.monotonic())
        for key, _ in sel.select(wait):
            try:
                key.data()
            except Exception:
                pass
        now = time.monotonic()
        if timers and timers[0][0] <= now:
            # Replies already queued count before any deadline is judged.
            for shared in RawShared.pools.values():
                shared.readable(limit=100000)
            now = time.monotonic()
        while timers and timers[0][0] <= now:
            deadline, _, p = heapq.heappop(timers)
            if p.done:
                continue
            try:
                if p.tainted:
                    p.unknown("the probe socket dropped packets while this probe waited")
                elif now - deadline > LATE_S:
                    p.unknown("the helper looked %d ms after the deadline" % ((now - deadline) * 1000))
                else:
                    p.timeout()
            except Exception:
                p.finish({"ok": False, "reason": "timeout"})
        flush()


if __name__ == "__main__":
    main()
