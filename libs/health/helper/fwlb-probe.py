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


def icmp(req, deadline):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        apply_opts(s, req)
        if req.get("source"):
            s.bind((req["source"], 0))
        ident = random.randint(1, 0xFFFF)
        payload = b"fwlb" + os.urandom(12)
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        pkt = struct.pack("!BBHHH", 8, 0, checksum(hdr + payload), ident, 1) + payload
        t0 = time.monotonic()
        s.sendto(pkt, (req["target"], 0))
        for data, addr in packets(s, deadline):
            ihl = (data[0] & 0x0F) * 4
            typ, code = data[ihl], data[ihl + 1]
            if typ == 0 and addr[0] == req["target"] and struct.unpack("!H", data[ihl + 4:ihl + 6])[0] == ident:
                return {"ok": True, "reason": "echo reply", "latencyMs": (time.monotonic() - t0) * 1000}
            if typ == 3 and len(data) >= ihl + 8 + 28:
                inner = data[ihl + 8:]
                iihl = (inner[0] & 0x0F) * 4
                if inner[iihl] == 8 and struct.unpack("!H", inner[iihl + 4:iihl + 6])[0] == ident:
                    return {"ok": False, "reason": "unreachable (code %d)" % code, "latencyMs": (time.monotonic() - t0) * 1000}
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
            ihl = (data[0] & 0x0F) * 4
            sp, dp = struct.unpack("!HH", data[ihl:ihl + 4])
            flags = data[ihl + 13]
            if sp != port or dp != sport:
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
    res["id"] = rid
    answer(res)


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
