// The SLB benchmarks' rig: a client, a load-balancer node and three servers (HAProxy answering 200 itself, so the
// server side is not what limits the rate), in namespaces of their own; and wrk's parsed results. Used by slb.ts
// (L4: fwlb's nft DNAT vs HAProxy in TCP mode) and l7.ts (L7: HAProxy driven by fwlb vs a hand-written HAProxy).
import { ChildProcess, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteNs, inNs, run, spawnInNs, uniquePrefix } from '@fwlb/lab';

export const SERVERS = [1, 2, 3].map((i) => `10.30.0.1${i}`);

export interface WrkResult {
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

/**
 * wrk from `ns` (on CPUs `cpus` when given, as `taskset -c` takes them); a run that fails is reported as NaN figures
 * (the medians leave it out), never a crash.
 */
export function wrk(ns: string, url: string, o: { conns: number; seconds: number; headers?: string[]; cpus?: string }): WrkResult {
  const hdr = (o.headers ?? ['Connection: close']).flatMap((h) => ['-H', h]);
  const pin = o.cpus ? ['taskset', '-c', o.cpus] : [];
  const r = spawnSync('ip', ['netns', 'exec', ns, ...pin, 'wrk', '-t2', `-c${o.conns}`, `-d${o.seconds}s`, '--latency', ...hdr, url], { encoding: 'utf8' });
  if (r.status !== 0) {
    console.log(`wrk failed (round left out): ${(r.stderr || r.stdout).trim().slice(0, 200)}`);
    return { rps: NaN, p50: NaN, p99: NaN, errors: NaN };
  }
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p50 = ms(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const p99 = ms(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + non2xx;
  return { rps, p50, p99, errors };
}

/**
 * Pins every process named `comm` in namespace `ns`, every thread of it, to CPUs `cpus` (`taskset -a -p -c`); returns
 * how many. A process started later (a reload's new worker) inherits its parent's pinning.
 */
export function pinProcesses(ns: string, comm: string, cpus: string): number {
  const pids = run(['ip', 'netns', 'pids', ns])
    .split('\n')
    .filter(Boolean)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
      } catch {
        return false;
      }
    });
  for (const pid of pids) run(['taskset', '-a', '-p', '-c', cpus, pid]);
  return pids.length;
}

export interface SlbRig {
  ns: { cli: string; lb: string; srv: string[] };
  dir: string;
  procs: ChildProcess[];
  cleanup(): void;
}

/**
 * Builds the rig: client 192.0.2.1 ─ eth0 192.0.2.2 [lb] rip0 10.30.0.1 ─ servers 10.30.0.11-13 (port 8080, body
 * "sN"). `vips` are plain addresses added to the lb's eth0 (for a hand-written HAProxy; fwlb adds its own).
 */
export function slbRig(prefix: string, vips: string[] = []): SlbRig {
  const p = uniquePrefix(prefix);
  const ns = { cli: `${p}-cli`, lb: `${p}-lb`, srv: SERVERS.map((_, i) => `${p}-s${i + 1}`) };
  const dir = mkdtempSync(join(tmpdir(), `fwlb-${prefix}-`));
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
  for (const v of vips) inNs(ns.lb, ['ip', 'addr', 'add', `${v}/32`, 'dev', 'eth0']);
  SERVERS.forEach((addr, i) => {
    veth(ns.srv[i], 'eth0', ns.lb, `s${i + 1}`);
    inNs(ns.lb, ['ip', 'link', 'set', `s${i + 1}`, 'master', 'rip0']);
    inNs(ns.srv[i], ['ip', 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
    inNs(ns.srv[i], ['ip', 'route', 'add', 'default', 'via', '10.30.0.1']);
  });
  SERVERS.forEach((addr, i) => {
    const cfg = join(dir, `srv${i}.cfg`);
    writeFileSync(
      cfg,
      `global\n  nbthread 1\ndefaults\n  mode http\n  timeout client 5s\n  timeout connect 1s\n  timeout server 5s\nfrontend f\n  bind ${addr}:8080\n  http-request return status 200 content-type text/plain string "s${i + 1}"\n`,
    );
    procs.push(spawnInNs(ns.srv[i], ['haproxy', '-db', '-f', cfg]));
  });
  return { ns, dir, procs, cleanup };
}
