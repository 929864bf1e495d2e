// Traffic agent run inside a lab namespace: `serve` (TCP/UDP echo, HTTP) or `drive` (a workload, JSON report).
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import { canonicalAddress, splitHostPort } from '@fwlb/flowhash';
import { parseProxyHeader } from './proxy-protocol';

export interface DriveSpec {
  /**
   * `intervalMs`: a steady flow, one new connection every intervalMs (concurrency then unused). `localPorts`:
   * connection i binds local port localPorts[i] (a reused 5-tuple, on purpose). `spans`: report every connection's
   * local port, start and duration (to tell which ones were open at a given moment).
   */
  short?: {
    targets: string[];
    count: number;
    concurrency: number;
    timeoutMs?: number;
    intervalMs?: number;
    localPorts?: number[];
    spans?: boolean;
  };
  /**
   * Streams that send a message every intervalMs for durationMs and check each echo. `quietMs`: each stream sends its
   * first message that long after connecting (its handshake alone until then); durationMs counts from that message.
   */
  long?: { targets: string[]; count: number; durationMs: number; intervalMs: number; timeoutMs?: number; localPorts?: number[]; quietMs?: number };
  udp?: { targets: string[]; flows: number; basePort?: number; timeoutMs?: number; expectReply?: boolean };
  /**
   * Connections to a server's PROXY-protocol TCP port (`--proxy-tcp`), one at a time: each asks `who` and reports the
   * answer, the server's name and the client the header named (`s1 proxy 198.51.100.11:40001`), or its error.
   */
  whoami?: { targets: string[]; count: number; timeoutMs?: number };
  /** HTTP GET / requests, one connection each; answers are tallied by body, so servers that name themselves show the spread. */
  http?: {
    targets: string[];
    count: number;
    concurrency: number;
    timeoutMs?: number;
    /** Requests to send in turn (Host header, path, headers); answers are tallied per label as well. */
    requests?: HttpRequestSpec[];
    /** Each concurrent worker keeps the cookies it is given (a browser's session), and reports the body per worker. */
    cookies?: boolean;
  };
}

export interface HttpRequestSpec {
  label: string;
  host?: string;
  path?: string;
  headers?: Record<string, string>;
}

export interface DriveReport {
  /**
   * The longest this driver's event loop ran late (ms) while it drove: a loaded machine that starves the client
   * shows here, and connections that time out meanwhile may have been served on the wire.
   */
  stallMs: number;
  /**
   * `failedAt`: when each failed connection was started (epoch ms), to report an outage's window; `slowAt`: the same
   * for connections that succeeded but took longer than 500 ms (a lost SYN, retransmitted after 1 s); `failedPorts`:
   * each failed connection's local port (0 if it never had one), to find its flow in conntrack.
   */
  short: {
    ok: number;
    failed: number;
    errors: Record<string, number>;
    failedAt: number[];
    slowAt: number[];
    failedPorts: number[];
    /** With `spans`: [local port, start (epoch ms), duration ms] of every connection. */
    spans?: [number, number, number][];
  };
  /**
   * `maxGapMs`: the longest time between two consecutive echoes of a stream (an outage it lived through);
   * `stalledAt`: when a stream that got no echo sent the message that went unanswered (epoch ms), else null.
   */
  long: {
    ok: number;
    broken: number;
    errors: Record<string, number>;
    messages: number;
    streams: { target: string; port: number; err: string | null; maxGapMs: number; stalledAt: number | null }[];
  };
  udp: { ok: number; failed: number };
  /** With `whoami`: each connection's answer in order (`error: <code>` when it got none). */
  whoami?: string[];
  http: {
    ok: number;
    failed: number;
    errors: Record<string, number>;
    bodies: Record<string, number>;
    byLabel: Record<string, Record<string, number>>;
    byWorker: Record<string, number>[];
    cookies: Record<string, string>[];
  };
}

const hp = splitHostPort;

function serve(args: string[]): void {
  const opt = (n: string) => {
    const i = args.indexOf(n);
    return i >= 0 ? Number(args[i + 1]) : 0;
  };
  const str = (n: string, d: string) => {
    const i = args.indexOf(n);
    return i >= 0 ? args[i + 1] : d;
  };
  const httpStatus = opt('--http-status') || 200;
  const httpBody = str('--http-body', 'fwlb lab server\n');
  let accepted = 0;
  const tcp = net.createServer((s) => {
    accepted++;
    s.on('error', () => undefined);
    s.pipe(s);
  });
  // Dual stack: one socket serves IPv4 (as mapped addresses) and IPv6.
  const udp = dgram.createSocket('udp6');
  udp.on('message', (m, r) => udp.send(m, r.port, r.address));
  // SIGUSR2 turns fwlb's health checks away (503) while every other request is served: a broken health endpoint in
  // front of a working service. Each signal flips it and says so on stdout.
  let refuseChecks = false;
  process.on('SIGUSR2', () => {
    refuseChecks = !refuseChecks;
    console.log(refuseChecks ? 'refusing checks' : 'answering checks');
  });
  const web = http.createServer((req, res) => {
    if (req.url === '/stats') return res.end(JSON.stringify({ accepted }));
    if (refuseChecks && req.headers['user-agent'] === 'fwlb-health') {
      res.statusCode = 503;
      return res.end('health check refused\n');
    }
    // What a proxy in front added, so a test can see it (the body stays the server's name).
    const xff = req.headers['x-forwarded-for'];
    if (typeof xff === 'string') res.setHeader('x-seen-forwarded-for', xff);
    res.statusCode = httpStatus;
    res.end(httpBody);
  });
  web.keepAliveTimeout = 1000;
  // An HTTP server that requires the PROXY protocol (as a server with `proxy_protocol` on): it answers with the client
  // the header names, and closes a connection that comes without one.
  const proxied = http.createServer((req, res) => {
    const src = (req.socket as net.Socket & { proxySource?: string }).proxySource;
    if (src) res.setHeader('x-proxy-source', src);
    res.end(src ? `${httpBody.trim()} proxy ${src}\n` : 'health\n');
  });
  const proxyHttp = net.createServer((sock) =>
    afterProxyHeader(sock, (source) => {
      if (source) (sock as net.Socket & { proxySource?: string }).proxySource = source;
      proxied.emit('connection', sock);
    }),
  );
  // A TCP service that requires the PROXY protocol (any protocol behind it): it echoes every byte after the header,
  // and answers a line `who` with its name and the client the header named.
  const proxyTcp = net.createServer((sock) =>
    afterProxyHeader(sock, (source) => {
      let got = Buffer.alloc(0);
      sock.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d]);
        for (let nl = got.indexOf('\n'); nl >= 0; nl = got.indexOf('\n')) {
          const line = got.subarray(0, nl + 1);
          got = got.subarray(nl + 1);
          sock.write(line.toString('latin1') === 'who\n' ? `${httpBody.trim().split(' ').pop()} proxy ${source ?? 'none'}\n` : line);
        }
      });
    }),
  );
  let pending = 0;
  const ready = () => {
    if (--pending === 0) console.log('ready');
  };
  if (opt('--tcp')) {
    pending++;
    tcp.listen(opt('--tcp'), '::', ready);
  }
  if (opt('--udp')) {
    pending++;
    udp.bind(opt('--udp'), '::', ready);
  }
  if (opt('--http')) {
    pending++;
    web.listen(opt('--http'), '::', ready);
  }
  if (opt('--proxy-http')) {
    pending++;
    proxyHttp.listen(opt('--proxy-http'), '::', ready);
  }
  if (opt('--proxy-tcp')) {
    pending++;
    proxyTcp.listen(opt('--proxy-tcp'), '::', ready);
  }
}

/**
 * Reads a PROXY protocol header at the start of `sock` (as a server that requires one): a connection without one is
 * closed; after it, `then` gets the client it named (null for a health check's header) with the rest of the bytes
 * still to be read from the socket.
 */
function afterProxyHeader(sock: net.Socket, then: (source: string | null) => void): void {
  let got = Buffer.alloc(0);
  sock.on('error', () => undefined);
  const onData = (d: Buffer) => {
    got = Buffer.concat([got, d]);
    const h = parseProxyHeader(got);
    if ('more' in h) return;
    sock.off('data', onData);
    if ('bad' in h) return sock.destroy();
    sock.pause();
    sock.unshift(got.subarray(h.length));
    then(h.source ? `${canonicalAddress(h.source.address)}:${h.source.port}` : null);
    sock.resume();
  };
  sock.on('data', onData);
}

function bump(m: Record<string, number>, k: string) {
  m[k] = (m[k] ?? 0) + 1;
}

function shortConn(target: string, id: number, timeoutMs: number, localPort?: number): Promise<{ err: string | null; port: number }> {
  return new Promise((res) => {
    const [host, port] = hp(target);
    const s = net.connect({ host, port, ...(localPort ? { localPort } : {}) });
    // The local port once the SYN is on its way (the connect runs in a tick net.connect queued first), so that a
    // connection that fails to connect is reported with it.
    let bound = 0;
    process.nextTick(() => (bound = s.localPort ?? 0));
    const msg = `short ${id}\n`;
    let got = '';
    const t = setTimeout(() => finish('timeout'), timeoutMs);
    function finish(err: string | null) {
      clearTimeout(t);
      s.removeAllListeners('data');
      const local = s.localPort ?? bound;
      if (err) s.destroy();
      res({ err, port: local });
    }
    s.on('connect', () => s.write(msg));
    s.on('data', (d) => {
      got += d;
      if (got === msg) {
        s.end();
        s.on('close', () => finish(null));
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? 'error'));
  });
}

function longConn(
  target: string,
  id: number,
  durationMs: number,
  intervalMs: number,
  timeoutMs: number,
  localPort?: number,
  quietMs = 0,
): Promise<{ err: string | null; messages: number; port: number; maxGapMs: number; stalledAt: number | null }> {
  return new Promise((res) => {
    const [host, dport] = hp(target);
    const s = net.connect({ host, port: dport, ...(localPort ? { localPort } : {}) });
    process.nextTick(() => (port ||= s.localPort ?? 0));
    let seq = 0;
    let expect = '';
    let got = '';
    let waitTimer: NodeJS.Timeout | null = null;
    let tick: NodeJS.Timeout | null = null;
    let quiet: NodeJS.Timeout | null = null;
    let start = Date.now();
    let done = false;
    let port = 0;
    let lastEcho = 0;
    let maxGapMs = 0;
    let sentAt = 0;
    let stalledAt: number | null = null;
    function finish(err: string | null) {
      if (done) return;
      done = true;
      port ||= s.localPort ?? 0;
      if (tick) clearInterval(tick);
      if (quiet) clearTimeout(quiet);
      if (waitTimer) clearTimeout(waitTimer);
      if (err) s.destroy();
      else s.end();
      res({ err, messages: seq, port, maxGapMs, stalledAt });
    }
    const send = () => {
      if (Date.now() - start >= durationMs) {
        if (expect === got) return finish(null);
      }
      if (expect !== got) return; // still waiting for the previous echo
      const m = `long ${id} ${seq++} ${'x'.repeat(64)}\n`;
      expect += m;
      s.write(m);
      sentAt = Date.now();
      waitTimer = setTimeout(() => {
        stalledAt = sentAt;
        finish(`no echo within ${timeoutMs} ms`);
      }, timeoutMs);
    };
    const begin = () => {
      start = Date.now();
      send();
      tick = setInterval(send, intervalMs);
    };
    s.on('connect', () => {
      port = s.localPort ?? 0;
      if (quietMs) quiet = setTimeout(begin, quietMs);
      else begin();
    });
    s.on('data', (d) => {
      got += d;
      if (got === expect && waitTimer) {
        clearTimeout(waitTimer);
        waitTimer = null;
        const now = Date.now();
        if (lastEcho) maxGapMs = Math.max(maxGapMs, now - lastEcho);
        lastEcho = now;
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? 'error'));
    s.on('close', () => finish(done ? null : 'closed by peer'));
  });
}

/** Runs f for 0..n-1 with `conc` workers; f gets the item and the worker's index. */
async function pool<T>(n: number, conc: number, f: (i: number, worker: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(conc, n) }, async (_, w) => {
      while (next < n) {
        const i = next++;
        out[i] = await f(i, w);
      }
    }),
  );
  return out;
}

function udpFlow(target: string, port: number, id: number, timeoutMs: number, expectReply: boolean): Promise<boolean> {
  return new Promise((res) => {
    const [host, dport] = hp(target);
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const t = setTimeout(() => finish(!expectReply), expectReply ? timeoutMs : 20);
    function finish(ok: boolean) {
      clearTimeout(t);
      s.close();
      res(ok);
    }
    s.on('error', () => finish(false));
    s.on('message', () => finish(true));
    s.bind(port, () => s.send(`udp ${id}`, dport, host));
  });
}

function httpGet(target: string, timeoutMs: number, spec?: HttpRequestSpec, jar?: Map<string, string>): Promise<{ err: string | null; body: string }> {
  return new Promise((res) => {
    const [host, port] = hp(target);
    const headers: Record<string, string> = { ...(spec?.headers ?? {}) };
    if (spec?.host) headers.host = spec.host;
    if (jar?.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const req = http.get({ host, port, path: spec?.path ?? '/', agent: false, timeout: timeoutMs, headers }, (r) => {
      if (jar)
        for (const c of r.headers['set-cookie'] ?? []) {
          const [kv] = c.split(';');
          const i = kv.indexOf('=');
          if (i > 0) jar.set(kv.slice(0, i).trim(), kv.slice(i + 1).trim());
        }
      let body = '';
      r.on('data', (d) => (body += d));
      r.on('end', () => res(r.statusCode === 200 ? { err: null, body: body.trim() } : { err: `status ${r.statusCode}`, body: body.trim() }));
      r.on('error', (e: NodeJS.ErrnoException) => res({ err: e.code ?? 'error', body: '' }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
    req.on('error', (e: NodeJS.ErrnoException) => res({ err: e.code ?? 'error', body: '' }));
  });
}

/** Asks a `--proxy-tcp` server `who` (see DriveSpec.whoami). */
function whoami(target: string, timeoutMs: number): Promise<string> {
  return new Promise((res) => {
    const [host, port] = hp(target);
    const s = net.connect({ host, port });
    let got = '';
    const t = setTimeout(() => finish('error: timeout'), timeoutMs);
    function finish(answer: string) {
      clearTimeout(t);
      s.destroy();
      res(answer);
    }
    s.on('connect', () => s.write('who\n'));
    s.on('data', (d) => {
      got += d;
      if (got.endsWith('\n')) finish(got.trim());
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish(`error: ${e.code ?? 'error'}`));
    s.on('close', () => finish(`error: closed ${JSON.stringify(got)}`));
  });
}

export async function drive(spec: DriveSpec): Promise<DriveReport> {
  const report: DriveReport = {
    stallMs: 0,
    short: { ok: 0, failed: 0, errors: {}, failedAt: [], slowAt: [], failedPorts: [] },
    long: { ok: 0, broken: 0, errors: {}, messages: 0, streams: [] },
    udp: { ok: 0, failed: 0 },
    http: { ok: 0, failed: 0, errors: {}, bodies: {}, byLabel: {}, byWorker: [], cookies: [] },
  };
  const jobs: Promise<unknown>[] = [];
  if (spec.long) {
    const l = spec.long;
    jobs.push(
      Promise.all(
        Array.from({ length: l.count }, (_, i) =>
          longConn(l.targets[i % l.targets.length], i, l.durationMs, l.intervalMs, l.timeoutMs ?? 3000, l.localPorts?.[i], l.quietMs),
        ),
      ).then((rs) => {
        rs.forEach((r, i) =>
          report.long.streams.push({ target: l.targets[i % l.targets.length], port: r.port, err: r.err, maxGapMs: r.maxGapMs, stalledAt: r.stalledAt }),
        );
        for (const r of rs) {
          report.long.messages += r.messages;
          if (r.err) {
            report.long.broken++;
            bump(report.long.errors, r.err);
          } else report.long.ok++;
        }
      }),
    );
  }
  if (spec.short) {
    const s = spec.short;
    jobs.push(
      (async () => {
        // A client whose few source ports are all in use (a CGNAT's pool, a narrow ip_local_port_range) waits for one,
        // as such a client does: the connection never left it, so it is not a failure of the path.
        const connect = async (i: number): Promise<{ err: string | null; port: number }> => {
          for (let tries = 0; ; tries++) {
            const r = await shortConn(s.targets[i % s.targets.length], i, s.timeoutMs ?? 3000, s.localPorts?.[i]);
            if (r.err !== 'EADDRNOTAVAIL' || tries >= 100) return r;
            await new Promise((w) => setTimeout(w, 20));
          }
        };
        const one = (i: number) => {
          const at = Date.now();
          return connect(i).then(({ err: e, port }) => ({ e, port, at, ms: Date.now() - at }));
        };
        if (!s.intervalMs) return pool(s.count, s.concurrency, one);
        const t0 = Date.now();
        const iv = s.intervalMs;
        return Promise.all(
          Array.from({ length: s.count }, (_, i) => new Promise((r) => setTimeout(r, Math.max(0, t0 + i * iv - Date.now()))).then(() => one(i))),
        );
      })().then((rs) => {
        if (s.spans) report.short.spans = rs.map(({ port, at, ms }) => [port, at, ms]);
        for (const { e, port, at, ms } of rs) {
          if (e) {
            report.short.failed++;
            report.short.failedAt.push(at);
            report.short.failedPorts.push(port);
            bump(report.short.errors, e);
          } else {
            report.short.ok++;
            if (ms > 500) report.short.slowAt.push(at);
          }
        }
      }),
    );
  }
  if (spec.whoami) {
    const w = spec.whoami;
    jobs.push(
      (async () => {
        report.whoami = [];
        for (let i = 0; i < w.count; i++) report.whoami.push(await whoami(w.targets[i % w.targets.length], w.timeoutMs ?? 3000));
      })(),
    );
  }
  if (spec.udp) {
    const u = spec.udp;
    jobs.push(
      pool(u.flows, 200, (i) => udpFlow(u.targets[i % u.targets.length], u.basePort ? u.basePort + i : 0, i, u.timeoutMs ?? 2000, u.expectReply ?? true)).then(
        (rs) => {
          for (const ok of rs) ok ? report.udp.ok++ : report.udp.failed++;
        },
      ),
    );
  }
  if (spec.http) {
    const h = spec.http;
    const jars = h.cookies ? Array.from({ length: h.concurrency }, () => new Map<string, string>()) : [];
    report.http.byWorker = jars.map(() => ({}));
    jobs.push(
      pool(h.count, h.concurrency, (i, w) => {
        const spec = h.requests?.length ? h.requests[i % h.requests.length] : undefined;
        return httpGet(h.targets[i % h.targets.length], h.timeoutMs ?? 3000, spec, jars[w]).then((r) => ({ ...r, label: spec?.label, w }));
      }).then((rs) => {
        report.http.cookies = jars.map((j) => Object.fromEntries(j));
        for (const r of rs) {
          if (r.err) {
            report.http.failed++;
            bump(report.http.errors, r.label ? `${r.label}: ${r.err}` : r.err);
          } else {
            report.http.ok++;
            bump(report.http.bodies, r.body);
            if (r.label) bump((report.http.byLabel[r.label] ??= {}), r.body);
            if (h.cookies) bump(report.http.byWorker[r.w], r.body);
          }
        }
      }),
    );
  }
  const TICK_MS = 50;
  let due = Date.now() + TICK_MS;
  const ticker = setInterval(() => {
    report.stallMs = Math.max(report.stallMs, Date.now() - due);
    due = Date.now() + TICK_MS;
  }, TICK_MS);
  try {
    await Promise.all(jobs);
  } finally {
    clearInterval(ticker);
  }
  return report;
}

if (require.main === module) {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'serve') serve(rest);
  else if (mode === 'drive') {
    drive(JSON.parse(rest[0]) as DriveSpec).then(
      (r) => {
        console.log(JSON.stringify(r));
        process.exit(0);
      },
      (e) => {
        console.error(e);
        process.exit(1);
      },
    );
  } else {
    console.error('usage: agent serve [--tcp P] [--udp P] [--http P [--http-status N] [--http-body S]] | agent drive JSON');
    process.exit(2);
  }
}
