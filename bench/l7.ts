// Benchmark: an L7 VIP (host, path and header rules to two pools) served by HAProxy as fwlb-slb drives it, against
// the same rules in a hand-written HAProxy config, on the same node, same servers, same client, interleaved rounds.
// 1. Data path: requests/s and p50/p99 with wrk (keep-alive, Host www.example.com: no rule matches, so every rule is
//    tried: the worst case for the rule map). Ratio fwlb / hand.
// 2. Change propagation: from the change (fwlb: the API call; hand: the config written and HAProxy reloaded) to the
//    first request routed by the new rule, seen by a prober in the client sending requests back to back.
import { ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inNs, l7Vip, median, spawnInNs, spread, waitForLine, REPO } from '@fwlb/lab';
import { haproxyCli } from '@fwlb/slb';
import { pinProcesses, SERVERS, slbRig, wrk, WrkResult } from './slb-rig';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNS = Number(process.env.BENCH_CONNS ?? 32);
const CHANGES = Number(process.env.BENCH_CHANGES ?? 20);
/**
 * CPU placement (`BENCH_PIN`, default 1): wrk and the servers on CPU 0, every load balancer's HAProxy (one thread)
 * on CPU 1, so that the HAProxy under test is what limits the rate and no round depends on where the scheduler put
 * whom (unpinned, rounds here fall into modes some 25 % apart, whichever path they measure). 0: left to the scheduler.
 */
const PIN = process.env.BENCH_PIN !== '0';
const LB_CPUS = PIN ? ['1'] : ['0', '1'];
const onLbCpus = PIN ? ['taskset', '-c', LB_CPUS.join(',')] : [];
const VIP_FWLB = '192.0.2.100';
const VIP_HAND = '192.0.2.101';
const VIP_VARIANT = '192.0.2.102';
/**
 * `BENCH_L7_EDIT`: a JSON list of [regex, replacement] applied to fwlb's rendered config (multiline, global), run as
 * a third path by a HAProxy of its own on another address: what one line of fwlb's config costs, in the same rounds.
 * `[]`: fwlb's config as it is, run apart from fwlb-slb (what the rounds resolve between two equal configs).
 */
const EDITS: [string, string][] | null = process.env.BENCH_L7_EDIT ? JSON.parse(process.env.BENCH_L7_EDIT) : null;
const TOKEN = 'bench-token-0123456789';

/** The lab's rules (deploy/lab/src/topology.ts), written by hand below as ACLs for the comparison. */
const RULES = l7Vip(SERVERS).rules!;

/** The same rules as an operator writes them by hand: ACLs and use_backend lines, first match wins. */
function handConfig(extraHosts: string[]): string {
  const extra = extraHosts.flatMap((h, i) => [`  acl x${i} hdr(host),field(1,:) -i ${h}`, `  use_backend api if x${i}`]);
  return [
    'global',
    // fwlb's config leaves nbthread to HAProxy (a thread per CPU it may run on): the same here.
    `  nbthread ${LB_CPUS.length}`,
    'defaults',
    '  mode http',
    '  timeout client 30s',
    '  timeout connect 2s',
    '  timeout server 30s',
    '  option redispatch',
    'frontend f',
    `  bind ${VIP_HAND}:80`,
    '  option forwardfor',
    ...extra,
    '  acl r0 hdr(host),field(1,:) -i api.example.com',
    '  use_backend api if r0',
    '  acl r1h hdr(host),field(1,:) -i -m end .example.com',
    '  acl r1p path_beg /api/',
    '  use_backend api if r1h r1p',
    '  acl r2 req.fhdr(x-pool) -m str api',
    '  use_backend api if r2',
    '  acl r3h hdr(host),field(1,:) -i www.example.com',
    '  acl r3p path_reg ^/v[0-9]+/api/.*$',
    '  use_backend api if r3h r3p',
    '  default_backend www',
    'backend www',
    '  balance roundrobin',
    `  server s1 ${SERVERS[0]}:8080`,
    `  server s2 ${SERVERS[1]}:8080`,
    'backend api',
    '  balance leastconn',
    `  server s3 ${SERVERS[2]}:8080`,
    '',
  ].join('\n');
}

function api(sock: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { socketPath: sock, method, path, headers: { authorization: `Bearer ${TOKEN}`, ...(data ? { 'content-type': 'application/json' } : {}) } },
      (r) => {
        let b = '';
        r.on('data', (d) => (b += d));
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body: b }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** A prober in the client: for each line "url host want" it sends requests back to back until the body is `want`. */
const PROBER = `
const http = require('http');
const rl = require('readline').createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [url, host, want] = line.split(' ');
  const t0 = Date.now();
  const once = () => http.get(url, { headers: { host }, agent: false }, (r) => {
    let b = '';
    r.on('data', (d) => (b += d));
    r.on('end', () => (b.trim() === want ? console.log(JSON.stringify({ at: Date.now() })) : Date.now() - t0 > 10000 ? console.log(JSON.stringify({ at: null })) : once()));
  }).on('error', () => setTimeout(once, 1));
  once();
});`;

function prober(ns: string): { ask(url: string, host: string, want: string): Promise<number | null>; proc: ChildProcess } {
  const proc = spawnInNs(ns, [process.execPath, '-e', PROBER], { stdio: ['pipe', 'pipe', 'pipe'] });
  const waiting: ((at: number | null) => void)[] = [];
  let buf = '';
  proc.stdout!.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      waiting.shift()?.(JSON.parse(line).at);
    }
  });
  return {
    proc,
    ask: (url, host, want) =>
      new Promise((resolve) => {
        waiting.push(resolve);
        proc.stdin!.write(`${url} ${host} ${want}\n`);
      }),
  };
}

/** The median of per-round ratios a/b, and in how many rounds a was lower. */
function paired(a: WrkResult[], b: WrkResult[], k: 'rps' | 'p99'): string {
  const r = a.map((x, i) => x[k] / b[i][k]);
  return `${median(r).toFixed(3)} (lower in ${r.filter((x) => x < 1).length}/${r.length})`;
}

/** fwlb's rendered config with EDITS applied, on VIP_VARIANT, in a HAProxy of its own (no runtime API, no master). */
function variant(lbNs: string, dir: string): ChildProcess {
  let cfg = readFileSync(join(dir, 'fwlb-haproxy', 'haproxy.cfg'), 'utf8')
    .replaceAll(`${VIP_FWLB}:80`, `${VIP_VARIANT}:80`)
    .replace(/^ {2}stats socket .*$/m, `  stats socket ${dir}/edit.sock mode 600 level admin`);
  for (const [re, to] of EDITS ?? []) cfg = cfg.replace(new RegExp(re, 'gm'), to);
  const file = join(dir, 'edit.cfg');
  writeFileSync(file, cfg);
  return spawnInNs(lbNs, [...onLbCpus, 'haproxy', '-db', '-f', file]);
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
};

async function main(): Promise<void> {
  const { ns, dir, procs, cleanup } = slbRig('bl', [VIP_HAND, VIP_VARIANT]);
  try {
    // The hand-written HAProxy, master-worker so that a change can be a reload.
    const handCfg = join(dir, 'hand.cfg');
    writeFileSync(handCfg, handConfig([]));
    const hand = spawnInNs(ns.lb, [...onLbCpus, 'haproxy', '-W', '-S', `${dir}/hand-master.sock`, '-f', handCfg]);
    procs.push(hand);
    const handLog: string[] = [];
    hand.stdout!.on('data', (d) => handLog.push(String(d)));
    hand.stderr!.on('data', (d) => handLog.push(String(d)));
    hand.on('exit', (code, sig) => handLog.push(`hand-written HAProxy exited: ${code ?? sig}`));
    const slbCfg = join(dir, 'slb.json');
    const vip = {
      id: 'shop',
      address: VIP_FWLB,
      port: 80,
      protocol: 'tcp',
      mode: 'http',
      check: { kind: 'tcp' },
      pools: [{ name: 'www' }, { name: 'api', scheduler: 'leastconn' }],
      rules: RULES,
      defaultPool: 'www',
      members: [
        { address: SERVERS[0], port: 8080, pool: 'www' },
        { address: SERVERS[1], port: 8080, pool: 'www' },
        { address: SERVERS[2], port: 8080, pool: 'api' },
      ],
    };
    writeFileSync(
      slbCfg,
      JSON.stringify({ interface: 'eth0', api: { listen: `unix:${dir}/slb.sock`, token: TOKEN }, haproxy: { dir: join(dir, 'fwlb-haproxy') }, vips: [vip] }),
    );
    // fwlb-slb starts its HAProxy, which inherits the CPUs.
    const slb = spawnInNs(ns.lb, [...onLbCpus, process.execPath, join(REPO, 'apps/slb/dist/main.js'), 'run', '--config', slbCfg]);
    procs.push(slb);
    await waitForLine(slb, /listening on/, 15000, 'fwlb-slb');
    await new Promise((r) => setTimeout(r, 2000));
    inNs(ns.cli, ['ip', 'route', 'add', '10.30.0.0/24', 'via', '192.0.2.2']);

    type Path = 'fwlb' | 'hand' | 'edit';
    const rounds: Record<Path, WrkResult[]> = { fwlb: [], hand: [], edit: [] };
    const paths: [Path, string][] = [
      ['fwlb', VIP_FWLB],
      ['hand', VIP_HAND],
    ];
    if (EDITS) {
      paths.push(['edit', VIP_VARIANT]);
      procs.push(variant(ns.lb, dir));
      await new Promise((r) => setTimeout(r, 500));
    }
    const headers = ['Host: www.example.com'];
    if (PIN) {
      const n = ns.srv.reduce((a, x) => a + pinProcesses(x, 'haproxy', '0'), 0);
      console.log(`pinned: wrk and ${n} servers on CPU 0, ${pinProcesses(ns.lb, 'haproxy', '1')} load balancer HAProxy processes on CPU 1`);
    }
    for (let i = 0; i < ROUNDS; i++) {
      // Each path in turn, the order rotated every round.
      for (const [name, addr] of paths.map((_, j) => paths[(i + j) % paths.length])) {
        inNs(ns.cli, ['ss', '-K', 'dst', '192.0.2.0/24']);
        const r = wrk(ns.cli, `http://${addr}/`, { conns: CONNS, seconds: SECONDS, headers, ...(PIN ? { cpus: '0' } : {}) });
        rounds[name].push(r);
        console.log(
          `round ${i + 1} ${name.padEnd(5)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  errors ${r.errors}`,
        );
      }
    }
    const sp = (n: Path, k: keyof WrkResult) => spread(rounds[n].map((r) => r[k]));
    const fmt = (s: { median: number; min: number; max: number }, d = 0) => `${s.median.toFixed(d)} [${s.min.toFixed(d)}-${s.max.toFixed(d)}]`;
    console.log(
      `\ndata path, medians [min-max] over ${ROUNDS} interleaved rounds of ${SECONDS} s, ${CONNS} keep-alive connections, Host www.example.com (no rule matches):`,
    );
    for (const [n] of paths)
      console.log(
        `${n.padEnd(5)} ${fmt(sp(n, 'rps'))} req/s, p50 ${fmt(sp(n, 'p50'), 2)} ms, p99 ${fmt(sp(n, 'p99'), 2)} ms, errors ${rounds[n].reduce((a, r) => a + (r.errors || 0), 0)}`,
      );
    const med = (n: Path, k: keyof WrkResult) => median(rounds[n].map((r) => r[k]));
    console.log(
      `ratio fwlb/hand: req/s ${(med('fwlb', 'rps') / med('hand', 'rps')).toFixed(3)} (goal >= 0.95), p99 ${(med('fwlb', 'p99') / med('hand', 'p99')).toFixed(3)} (goal <= 1.1)`,
    );
    console.log(`paired within rounds, fwlb/hand: req/s ${paired(rounds.fwlb, rounds.hand, 'rps')}, p99 ${paired(rounds.fwlb, rounds.hand, 'p99')}`);
    if (EDITS) {
      console.log(`edit: fwlb's config with ${JSON.stringify(EDITS)}`);
      for (const b of ['fwlb', 'hand'] as const)
        console.log(`ratio edit/${b}: req/s ${paired(rounds.edit, rounds[b], 'rps')}, p99 ${paired(rounds.edit, rounds[b], 'p99')}`);
    }

    // Change propagation: a new host rule to pool api, CHANGES times on each path, interleaved (BENCH_CHANGES=0: none).
    if (!CHANGES) return;
    const probe = prober(ns.cli);
    procs.push(probe.proc);
    const lag: Record<'fwlb' | 'hand', number[]> = { fwlb: [], hand: [] };
    const added: string[] = [];
    let rules = [...RULES];
    // One change on each path before the measured ones: the first one after a start pays for compiling code (JIT).
    for (let i = -1; i < CHANGES; i++) {
      const host = `b${i + 1}.example.com`;
      // fwlb: the API call (the rule goes first; a runtime map swap, no reload).
      rules = [{ host, pool: 'api' }, ...rules];
      let t0 = Date.now();
      const seen = probe.ask(`http://${VIP_FWLB}/`, host, 's3');
      const r = await api(`${dir}/slb.sock`, 'PUT', '/vips/shop', { ...vip, rules });
      if (r.status !== 200) throw new Error(`PUT /vips/shop: ${r.status} ${r.body}`);
      const at = await seen;
      if (at !== null && i >= 0) lag.fwlb.push(at - t0);
      // hand: write the config and reload the master (what an operator's tooling does without a runtime API).
      added.push(host);
      t0 = Date.now();
      const seenHand = probe.ask(`http://${VIP_HAND}/`, host, 's3');
      writeFileSync(handCfg, handConfig([...added].reverse()));
      // The master's CLI can refuse a connection for a moment while it re-executes after the previous reload.
      await haproxyCli(`${dir}/hand-master.sock`, 'reload', 3000, 1000).catch((e) => {
        throw new Error(`reload of the hand-written HAProxy: ${(e as Error).message}: ${handLog.join('').slice(-800)}`);
      });
      const atHand = await seenHand;
      if (atHand !== null && i >= 0) lag.hand.push(atHand - t0);
    }
    console.log(`\nchange propagation, ${CHANGES} new host rules each after one not counted (ms from the change to the first request it routes):`);
    for (const n of ['fwlb', 'hand'] as const)
      console.log(`${n.padEnd(5)} p50 ${pct(lag[n], 50)} ms, p99 ${pct(lag[n], 99)} ms, max ${Math.max(...lag[n])} ms (${lag[n].length} of ${CHANGES} seen)`);
    console.log(`fwlb p99 goal <= 100 ms; the hand path is a reload (config written, master reloaded)`);
    console.log(`each change, in order (ms): fwlb ${lag.fwlb.join(' ')}; hand ${lag.hand.join(' ')}`);
    const st = JSON.parse((await api(`${dir}/slb.sock`, 'GET', '/status')).body);
    console.log(`fwlb's HAProxy reloads during the run: ${st.haproxy.reloads} (runtime commands ${st.haproxy.runtimeCommands})`);
  } finally {
    cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
