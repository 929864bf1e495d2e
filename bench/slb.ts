// Benchmark: new connections per second and p50/p99 latency through a VIP: fwlb's SLB (nft DNAT maps) against HAProxy
// in TCP mode, with the same client (wrk, one connection per request), the same three servers and the same
// namespaces, interleaved in the same run. Medians of the rounds and the ratios fwlb/HAProxy are printed. A third
// path, plain routing from the client to one server (no load balancer at all), shows what the rig itself allows.
import { ChildProcess, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteNs, inNs, median, run, spawnInNs, uniquePrefix, waitForLine, REPO } from '@fwlb/lab';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNS = Number(process.env.BENCH_CONNS ?? 32);
const VIP_FWLB = '192.0.2.100';
const VIP_HAPROXY = '192.0.2.101';
const SERVERS = [1, 2, 3].map((i) => `10.30.0.1${i}`);
const TOKEN = 'bench-token-0123456789';


interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

/** "1.23ms" / "456.00us" / "1.01s" → ms */
function ms(v: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
}

function wrk(ns: string, url: string): WrkResult {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'wrk', '-t2', `-c${CONNS}`, `-d${SECONDS}s`, '--latency', '-H', 'Connection: close', url], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p50 = ms(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const p99 = ms(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + non2xx;
  return { rps, p50, p99, errors };
}

async function main(): Promise<void> {
  const p = uniquePrefix('bs');
  const ns = { cli: `${p}-cli`, lb: `${p}-lb`, srv: SERVERS.map((_, i) => `${p}-s${i + 1}`) };
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-bs-'));
  const procs: ChildProcess[] = [];
  const cleanup = () => {
    for (const x of procs) x.kill('SIGKILL');
    for (const n of [ns.cli, ns.lb, ...ns.srv]) deleteNs(n);
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    for (const n of [ns.cli, ns.lb, ...ns.srv]) {
      run(['ip', 'netns', 'add', n]);
      inNs(n, ['ip', 'link', 'set', 'lo', 'up']);
      inNs(n, ['sysctl', '-qw', 'net.ipv4.ip_local_port_range=10000 65000', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_forward=1']);
    }
    const veth = (a: string, an: string, b: string, bn: string) => {
      const tmp = `${p}${Math.floor(Math.random() * 1e6).toString(36)}`.slice(0, 12);
      run(['ip', 'link', 'add', `${tmp}a`, 'netns', a, 'type', 'veth', 'peer', 'name', `${tmp}b`, 'netns', b]);
      inNs(a, ['ip', 'link', 'set', `${tmp}a`, 'name', an]);
      inNs(b, ['ip', 'link', 'set', `${tmp}b`, 'name', bn]);
      inNs(a, ['ip', 'link', 'set', an, 'up']);
      inNs(b, ['ip', 'link', 'set', bn, 'up']);
    };
    veth(ns.cli, 'eth0', ns.lb, 'eth0');
    inNs(ns.cli, ['ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0']);
    inNs(ns.lb, ['ip', 'addr', 'add', '192.0.2.2/24', 'dev', 'eth0']);
    inNs(ns.lb, ['ip', 'link', 'add', 'rip0', 'type', 'bridge']);
    inNs(ns.lb, ['ip', 'addr', 'add', '10.30.0.1/24', 'dev', 'rip0']);
    inNs(ns.lb, ['ip', 'link', 'set', 'rip0', 'up']);
    // HAProxy's VIP is a plain address; fwlb adds its own VIP address itself.
    inNs(ns.lb, ['ip', 'addr', 'add', `${VIP_HAPROXY}/32`, 'dev', 'eth0']);
    SERVERS.forEach((addr, i) => {
      veth(ns.srv[i], 'eth0', ns.lb, `s${i + 1}`);
      inNs(ns.lb, ['ip', 'link', 'set', `s${i + 1}`, 'master', 'rip0']);
      inNs(ns.srv[i], ['ip', 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
      inNs(ns.srv[i], ['ip', 'route', 'add', 'default', 'via', '10.30.0.1']);
    });
    // The servers: HAProxy answering 200 itself, so that the server side is not what limits the rate.
    SERVERS.forEach((addr, i) => {
      const cfg = join(dir, `srv${i}.cfg`);
      writeFileSync(cfg, `global\n  nbthread 1\ndefaults\n  mode http\n  timeout client 5s\n  timeout connect 1s\n  timeout server 5s\nfrontend f\n  bind ${addr}:8080\n  http-request return status 200 content-type text/plain string "s${i + 1}"\n`);
      const h = spawnInNs(ns.srv[i], ['haproxy', '-db', '-f', cfg]);
      procs.push(h);
    });
    // The HAProxy load balancer: TCP mode, round robin over the same servers.
    const lbCfg = join(dir, 'lb.cfg');
    writeFileSync(
      lbCfg,
      `global\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout client 5s\n  timeout connect 1s\n  timeout server 5s\nfrontend f\n  bind ${VIP_HAPROXY}:80\n  default_backend b\n` +
        `backend b\n  balance roundrobin\n${SERVERS.map((a, i) => `  server s${i + 1} ${a}:8080 check inter 1000\n`).join('')}`,
    );
    procs.push(spawnInNs(ns.lb, ['haproxy', '-db', '-f', lbCfg]));
    // fwlb's SLB: the real process with a VIP over the same servers.
    const slbCfg = join(dir, 'slb.json');
    writeFileSync(slbCfg, JSON.stringify({
      interface: 'eth0',
      api: { listen: `unix:${dir}/slb.sock`, token: TOKEN },
      vips: [{ id: 'web', address: VIP_FWLB, port: 80, protocol: 'tcp', scheduler: 'rr', check: { kind: 'tcp' }, members: SERVERS.map((a) => ({ address: a, port: 8080 })) }],
    }));
    const slb = spawnInNs(ns.lb, [process.execPath, join(REPO, 'apps/slb/dist/main.js'), 'run', '--config', slbCfg]);
    procs.push(slb);
    await waitForLine(slb, /listening on/, 15000, 'fwlb-slb');
    await new Promise((r) => setTimeout(r, 1500));
    inNs(ns.cli, ['ip', 'route', 'add', '10.30.0.0/24', 'via', '192.0.2.2']);
    type Path = 'fwlb' | 'haproxy' | 'routed';
    const rounds: Record<Path, WrkResult[]> = { fwlb: [], haproxy: [], routed: [] };
    const paths: [Path, string][] = [['fwlb', `${VIP_FWLB}:80`], ['haproxy', `${VIP_HAPROXY}:80`], ['routed', `${SERVERS[0]}:8080`]];
    for (let i = 0; i < ROUNDS; i++) {
      for (const [name, vip] of i % 2 ? [...paths].reverse() : paths) {
        // Hygiene: no leftover conntrack entries or sockets from the previous run.
        inNs(ns.lb, ['conntrack', '-F']);
        inNs(ns.cli, ['ss', '-K', 'dst', '192.0.2.0/24']);
        const r = wrk(ns.cli, `http://${vip}/`);
        rounds[name].push(r);
        console.log(`round ${i + 1} ${name.padEnd(7)} ${r.rps.toFixed(0).padStart(7)} conn/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  errors ${r.errors}`);
      }
    }
    const med = (n: Path, k: keyof WrkResult) => median(rounds[n].map((r) => r[k]));
    console.log(`\nmedians over ${ROUNDS} rounds of ${SECONDS} s, ${CONNS} connections, one connection per request:`);
    for (const n of ['fwlb', 'haproxy', 'routed'] as const) console.log(`${n.padEnd(8)} ${med(n, 'rps').toFixed(0)} conn/s, p50 ${med(n, 'p50').toFixed(2)} ms, p99 ${med(n, 'p99').toFixed(2)} ms, errors ${rounds[n].reduce((a, r) => a + r.errors, 0)}`);
    console.log(`ratio fwlb/routed (one server, no load balancer): conn/s ${(med('fwlb', 'rps') / med('routed', 'rps')).toFixed(2)}`);
    console.log(`ratio fwlb/haproxy: conn/s ${(med('fwlb', 'rps') / med('haproxy', 'rps')).toFixed(2)} (goal >= 2), p99 ${(med('fwlb', 'p99') / med('haproxy', 'p99')).toFixed(2)} (goal <= 0.5), p50 ${(med('fwlb', 'p50') / med('haproxy', 'p50')).toFixed(2)}`);
  } finally {
    cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
