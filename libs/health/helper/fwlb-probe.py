#!/usr/bin/python3
# fwlb-probe: the socket shim of libs/health. Node.js has neither raw sockets nor SO_MARK / SO_BINDTODEVICE, so
# the probes that need them run here, as JSON lines on stdin/stdout: one request per line, one answer per line.
# Python standard library only. Decisions (up/down, timers, HTTP parsing) stay in TypeScript.
#
# request:  {"id": 1, "op": "icmp"|"syn"|"connect", "target": "203.0.113.11", "port": 80, "timeoutMs": 50,
#            "mark": 65536, "device": "fw1", "source": "172.16.1.1",
#            "send": "GET / HTTP/1.0\r\n\r\n", "readMax": 65536, "close": "fin"|"rst"}
# answer:   {"id": 1, "ok": true, "reason": "...", "latencyMs": 0.41, "data": "..."}
import json, os, random, select, socket, struct, sys, threading, time

SO_MARK = 36
SO_RCVBUFFORCE = 33
RAW_RCVBUF = 4 << 20


def big_buffer(s):
    """A raw socket sees every ICMP (or TCP) packet this host receives; under a flood of junk a small buffer fills
    and the one answer we wait for is dropped. Root may force a larger buffer than rmem_max."""
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RAW_RCVBUF)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RAW_RCVBUF)
out_lock = threading.Lock()


def answer(msg):
    line = json.dumps(msg) + "\n"
    with out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def apply_opts(s, req):
    if req.get("mark"):
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, int(req["mark"]))
    if req.get("device"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, req["device"].encode())


def source_for(req):
    """The address the kernel would use toward target, with the same mark and device (UDP connect sends nothing)."""
    if req.get("source"):
        return req["source"]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        apply_opts(u, req)
        u.connect((req["target"], int(req.get("port") or 9)))
        return u.getsockname()[0]
    finally:
        u.close()


def ip_payload(data):
    """The payload of an IPv4 packet read from a raw socket, or None when the header does not fit. Why so careful:
    anyone can send this host ICMP, and a length that is trusted is an IndexError that kills the probe."""
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


def icmp(req, deadline):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        big_buffer(s)
        apply_opts(s, req)
        if req.get("source"):
            s.bind((req["source"], 0))
        ident = random.randint(1, 0xFFFF)
        seq = random.randint(0, 0xFFFF)
        payload = b"fwlb" + os.urandom(12)
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, checksum(hdr + payload), ident, seq) + payload
        t0 = time.monotonic()
        s.sendto(pkt, (req["target"], 0))
        for data, addr in packets(s, deadline):
            body = ip_payload(data)
            if body is None or len(body) < 8:
                continue
            typ, code = body[0], body[1]
            # An echo reply is ours only if it comes from the target with our id, our sequence and our payload.
            if typ == 0 and addr[0] == req["target"] and body[4:8] == pkt[4:8] and body[8:] == payload:
                return {"ok": True, "reason": "echo reply", "latencyMs": (time.monotonic() - t0) * 1000}
            # An error counts only when it quotes our probe (id, sequence and destination).
            if typ in (3, 11) and quoted_echo(body[8:]) == (ident, seq, req["target"]):
                what = "unreachable (code %d)" % code if typ == 3 else "time exceeded"
                return {"ok": False, "reason": what, "latencyMs": (time.monotonic() - t0) * 1000}
        return {"ok": False, "reason": "timeout"}
    finally:
        s.close()


def packets(sock, deadline):
    """Packets arriving on a raw socket until the deadline; the caller returns "timeout" when this runs out."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        r, _, _ = select.select([sock], [], [], left)
        if r:
            yield sock.recvfrom(4096)


def syn(req, deadline):
    """Half-open: send a SYN from a raw socket; a SYN/ACK means up. No local socket listens on our port, so the
    kernel itself answers the SYN/ACK with RST and the server's application never accepts a connection."""
    target, port = req["target"], int(req["port"])
    src = source_for(req)
    hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # reserves the source port; never connects
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        hold.bind((src, 0))
        sport = hold.getsockname()[1]
        big_buffer(raw)
        apply_opts(raw, req)
        seq = random.randint(0, 0xFFFFFFFF)
        opts = struct.pack("!BBH", 2, 4, 1460)  # MSS
        def tcp(csum):
            return struct.pack("!HHIIBBHHH", sport, port, seq, 0, (5 + 1) << 4, 0x02, 64240, csum, 0) + opts
        pseudo = socket.inet_aton(src) + socket.inet_aton(target) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 24)
        seg = tcp(checksum(pseudo + tcp(0)))
        t0 = time.monotonic()
        raw.sendto(seg, (target, 0))
        for data, addr in packets(raw, deadline):
            if addr[0] != target:
                continue
            seg = ip_payload(data)
            if seg is None or len(seg) < 20:
                continue
            sp, dp, _, ack = struct.unpack("!HHII", seg[:12])
            flags = seg[13]
            # Ours only if it answers our SYN: the ports, and an acknowledgement of exactly our sequence number.
            if sp != port or dp != sport or not flags & 0x10 or ack != (seq + 1) & 0xFFFFFFFF:
                continue
            ms = (time.monotonic() - t0) * 1000
            if flags & 0x12 == 0x12:
                return {"ok": True, "reason": "syn-ack", "latencyMs": ms}
            if flags & 0x04:
                return {"ok": False, "reason": "refused", "latencyMs": ms}
        return {"ok": False, "reason": "timeout"}
    finally:
        raw.close()
        hold.close()


def connect(req, deadline):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        apply_opts(s, req)
        if req.get("source"):
            s.bind((req["source"], 0))
        t0 = time.monotonic()
        s.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            s.connect((req["target"], int(req["port"])))
        except ConnectionRefusedError:
            return {"ok": False, "reason": "refused", "latencyMs": (time.monotonic() - t0) * 1000}
        except socket.timeout:
            return {"ok": False, "reason": "timeout"}
        connected = (time.monotonic() - t0) * 1000
        data = b""
        if req.get("send"):
            s.sendall(req["send"].encode("latin-1"))
            limit = int(req.get("readMax", 65536))
            try:
                while len(data) < limit:
                    s.settimeout(max(0.001, deadline - time.monotonic()))
                    chunk = s.recv(min(65536, limit - len(data)))
                    if not chunk:
                        break
                    data += chunk
            except socket.timeout:
                if not data:
                    return {"ok": False, "reason": "timeout (no response)"}
        if req.get("close") == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return {"ok": True, "reason": "connected", "latencyMs": (time.monotonic() - t0) * 1000 if req.get("send") else connected,
                "data": data.decode("latin-1")}
    except OSError as e:
        return {"ok": False, "reason": e.strerror or str(e)}
    finally:
        s.close()


OPS = {"icmp": icmp, "syn": syn, "connect": connect}


def handle(req):
    rid = req.get("id")
    try:
        deadline = time.monotonic() + float(req.get("timeoutMs", 1000)) / 1000
        res = OPS[req["op"]](req, deadline)
    except KeyError as e:
        res = {"ok": False, "reason": "bad request: missing %s" % e}
    except OSError as e:
        res = {"ok": False, "reason": e.strerror or str(e)}
    except Exception as e:  # a per-request failure is a failed check, never a dead worker
        res = {"ok": False, "reason": "probe error: %s" % type(e).__name__}
    res["id"] = rid
    try:
        answer(res)
    except (BrokenPipeError, ValueError):
        pass  # the parent went away


def main():
    answer({"id": 0, "ready": True})
    threads = []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError:
            answer({"id": None, "ok": False, "reason": "bad json"})
            continue
        th = threading.Thread(target=handle, args=(req,), daemon=True)
        th.start()
        threads = [t for t in threads if t.is_alive()] + [th]
    for th in threads:  # stdin closed: finish what was asked
        th.join()


if __name__ == "__main__":
    main()
