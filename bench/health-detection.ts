// Benchmark: time from a member's failure to DOWN, per checker kind, for fwlb's checkers and HAProxy's on the same
// target with the same timers (inter 100, fall 3, timeout check 50), in the same run. Failure = the server stops
// answering anything (nft drop), the silent case where only timers decide.
import { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChecker, HealthMonitor, ProbeHelper, CheckSpec } from '@fwlb/health';
import { AGENT, deleteNs, inNs, linkedPair, median, spawnInNs, uniquePrefix, waitForLine } from '@fwlb/lab';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 10);
const SRV = '192.0.2.2';
const timers = { interval: 100, response: 50, retries: 3, rise: 2, jitter: 0 };
const kinds: [string, CheckSpec][] = [
  ['icmp', { kind: 'icmp' }],
  ['tcp', { kind: 'tcp', port: 9000 }],
  ['tcp-half-open', { kind: 'tcp-half-open', port: 9000 }],
  ['http', { kind: 'http', port: 8080 }],
  ['http-content', { kind: 'http-content', port: 8080, contains: 'healthy-marker' }],
];
const haproxyKinds: Record<string, string> = { tcp: 'b_tcp', http: 'b_http', 'http-content': 'b_content' };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function haproxyConfig(sock: string): string {
  const srv = (port: number) => `  server s1 ${SRV}:${port} check inter 100 fall 3 rise 2\n`;
  return (
    `global\n  stats socket ${sock} level admin\ndefaults\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n  timeout check 50ms\n` +
    `backend b_tcp\n  mode tcp\n${srv(9000)}` +
    `backend b_http\n  mode http\n  option httpchk GET /\n${srv(8080)}` +
    `backend b_content\n  mode http\n  option httpchk GET /\n  http-check expect string healthy-marker\n${srv(8080)}`
  );
}

/** `show servers state`: backend name → operational state (2 = running). */
function haproxyStates(sock: string): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const c = net.connect(sock);
    let s = '';
    c.on('data', (d) => (s += d));
    c.on('end', () => {
      const out: Record<string, number> = {};
      for (const line of s.split('\n')) {
        const f = line.split(' ');
        if (f.length > 6 && /^\d+$/.test(f[0])) out[f[1]] = Number(f[5]);
      }
      resolve(out);
    });
    c.on('error', reject);
    c.end('show servers state\n');
  });
}

async function main(): Promise<void> {
  const p = uniquePrefix('bh');
  const cli = `${p}-cli`;
  const srv = `${p}-srv`;
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-bh-'));
  const procs: ChildProcess[] = [];
  const cleanup = () => {
    for (const x of procs) x.kill('SIGKILL');
    deleteNs(cli);
    deleteNs(srv);
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    linkedPair(p, { ns: cli, addrs: ['192.0.2.1/24'] }, { ns: srv, addrs: [`${SRV}/24`] });
    inNs(srv, ['nft', 'add', 'table', 'inet', 'cut']);
    inNs(srv, ['nft', 'add', 'chain', 'inet', 'cut', 'in', '{ type filter hook input priority 0; }']);
    const server = spawnInNs(srv, [process.execPath, AGENT, 'serve', '--tcp', '9000', '--http', '8080', '--http-body', 'ok healthy-marker\n']);
    procs.push(server);
    await waitForLine(server, /^ready/, 10000, 'server');
    const sock = join(dir, 'haproxy.sock');
    writeFileSync(join(dir, 'haproxy.cfg'), haproxyConfig(sock));
    const hap = spawnInNs(cli, ['haproxy', '-db', '-f', join(dir, 'haproxy.cfg')]);
    procs.push(hap);
    const helper = ProbeHelper.start(undefined, cli);
    const downAt: Record<string, number> = {};
    const monitors = kinds.map(([name, spec]) => {
      const m = new HealthMonitor({
        name,
        checker: createChecker(spec, helper),
        target: { address: SRV },
        timers,
        onEvent: (n, ev) => ev.to === 'down' && (downAt[n] = Date.now()),
      });
      m.start();
      return m;
    });
    const res: Record<string, number[]> = {};
    const allUp = async () => {
      for (let i = 0; i < 500; i++) {
        const h = await haproxyStates(sock).catch(() => ({}) as Record<string, number>);
        if (monitors.every((m) => m.state === 'up') && Object.values(haproxyKinds).every((b) => h[b] === 2)) return;
        await sleep(20);
      }
      throw new Error('members did not come back up');
    };
    for (let round = 0; round < ROUNDS; round++) {
      await allUp();
      await sleep(300 + Math.random() * 100); // decorrelate the failure from the check phase
      for (const k of Object.keys(downAt)) delete downAt[k];
      const hapDown: Record<string, number> = {};
      const t0 = Date.now();
      inNs(srv, ['nft', 'add', 'rule', 'inet', 'cut', 'in', 'ip', 'saddr', '192.0.2.1', 'drop']);
      while (Date.now() - t0 < 3000 && (Object.keys(downAt).length < kinds.length || Object.keys(hapDown).length < 3)) {
        const h = await haproxyStates(sock);
        for (const [k, b] of Object.entries(haproxyKinds)) if (h[b] !== 2 && !hapDown[k]) hapDown[k] = Date.now();
        await sleep(5);
      }
      for (const [k] of kinds) (res[`fwlb ${k}`] ??= []).push((downAt[k] ?? NaN) - t0);
      for (const k of Object.keys(haproxyKinds)) (res[`haproxy ${k}`] ??= []).push((hapDown[k] ?? NaN) - t0);
      inNs(srv, ['nft', 'flush', 'chain', 'inet', 'cut', 'in']);
      console.error(
        `round ${round + 1}: ${Object.entries(res)
          .map(([k, v]) => `${k} ${v[v.length - 1]}`)
          .join(', ')}`,
      );
    }
    for (const m of monitors) m.stop();
    helper.close();
    const med = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, median(v)]));
    console.log(JSON.stringify({ rounds: ROUNDS, timers, medianMs: med, raw: res }, null, 2));
    console.log('\nkind            fwlb ms   haproxy ms   fwlb/haproxy');
    for (const [k] of kinds) {
      const h = med[`haproxy ${k}`];
      console.log(
        `${k.padEnd(15)} ${String(med[`fwlb ${k}`]).padStart(7)}   ${h === undefined ? '        -' : String(h).padStart(10)}   ${h === undefined ? '-' : (med[`fwlb ${k}`] / h).toFixed(2)}`,
      );
    }
  } finally {
    cleanup();
  }
}

void main();
