// Benchmark: throughput (iperf3) and new connections/s (wrk, Connection: close) through the sandwich with fwlb,
// against plain static routing through one firewall and iptables HMARK with a shared seed, interleaved A B C ...
// A fourth path, plain routing with conntrack switched on in both nodes (`plain-ct`), shows how much of fwlb's
// cost is conntrack itself, which plain routing and HMARK do without.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, uniquePrefix, inNs, spawnInNs, WEB_PORT } from '@fwlb/lab';

type Mode = 'fwlb' | 'plain' | 'hmark' | 'plain-ct';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);

/** Median of the rounds that gave a result (NaN rounds are left out and shown in `raw`). */
const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function tryNs(ns: string, cmd: string[]): void {
  spawnSync('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'ignore' });
}

function setMode(lab: Lab, mode: Mode, saved: Record<string, string>): void {
  for (const [node, side, peer, net] of [['ob', 'cli0', '172.16.1.2', '203.0.113.0/24'], ['ib', 'srv0', '172.17.1.2', '198.51.100.0/24']]) {
    const ns = lab.ns(node);
    tryNs(ns, ['nft', 'delete', 'table', 'inet', 'fwlb']);
    tryNs(ns, ['iptables', '-t', 'mangle', '-F', 'PREROUTING']);
    tryNs(ns, ['ip', 'route', 'del', net]);
    tryNs(ns, ['nft', 'delete', 'table', 'ip', 'benchct']);
    if (mode === 'fwlb') inNs(ns, ['nft', '-j', '-f', saved[node]]);
    if (mode === 'plain' || mode === 'plain-ct') inNs(ns, ['ip', 'route', 'add', net, 'via', peer]);
    if (mode === 'plain-ct') {
      inNs(ns, ['nft', 'add', 'table', 'ip', 'benchct']);
      inNs(ns, ['nft', 'add', 'chain', 'ip', 'benchct', 'pre', '{ type filter hook prerouting priority -150; }']);
      inNs(ns, ['nft', 'add', 'rule', 'ip', 'benchct', 'pre', 'ct', 'state', 'new', 'counter']);
    }
    if (mode === 'hmark') {
      // The classic recipe: a stateless symmetric HMARK with the same seed on both nodes, marks onto fwlb's ip rules.
      inNs(ns, ['iptables', '-t', 'mangle', '-A', 'PREROUTING', '-i', side, '-j', 'HMARK', '--hmark-tuple', 'src,dst,sport,dport,proto', '--hmark-mod', '3', '--hmark-offset', String(0x10000), '--hmark-rnd', '0x5eed1234']);
    }
  }
  // Hygiene: no leftover sockets or conntrack entries from the previous run.
  for (const h of lab.t.hosts) {
    tryNs(h.ns, ['conntrack', '-F']);
    tryNs(h.ns, ['ss', '-K', 'state', 'time-wait']);
  }
}

function runIn(ns: string, cmd: string[]): string {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', timeout: (SECONDS + 20) * 1000 });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/**
 * Gbit/s of one iperf3 run, or NaN when three attempts gave no result. Why: iperf3 sometimes answers with an error
 * object ("the server is busy running a test"), and a TypeError there used to lose every round already measured
 * (issue 16); a missing round is reported and left out of the median instead.
 */
function throughput(lab: Lab): number {
  for (let attempt = 1; attempt <= 3; attempt++) {
    let j: any = null;
    try {
      j = JSON.parse(runIn(lab.ns('c1'), ['iperf3', '-c', lab.t.vip, '-t', String(SECONDS), '-P', '4', '-J']));
    } catch (e) {
      j = { error: (e as Error).message.slice(0, 200) };
    }
    const bps = j?.end?.sum_received?.bits_per_second;
    if (typeof bps === 'number' && bps > 0) return bps / 1e9;
    console.error(`iperf3 attempt ${attempt} gave no result: ${j?.error ?? 'no sum_received'}`);
    spawnSync('sleep', ['1']);
  }
  return NaN;
}

/** New connections/s of one wrk run, or NaN (reported) when it gave no result, like `throughput`. */
function connRate(lab: Lab): number {
  try {
    const out = runIn(lab.ns('c1'), ['wrk', '-t', '2', '-c', '32', '-d', `${SECONDS}s`, '-H', 'Connection: close', `http://${lab.t.vip}:${WEB_PORT}/`]);
    const m = /Requests\/sec:\s+([\d.]+)/.exec(out);
    if (m) return Number(m[1]);
    console.error(`wrk gave no result: ${out.slice(0, 200)}`);
  } catch (e) {
    console.error(`wrk failed: ${(e as Error).message.slice(0, 200)}`);
  }
  return NaN;
}

async function main(): Promise<void> {
  const prefix = uniquePrefix('bn');
  const lab = new Lab({ prefix, runDir: join(tmpdir(), `fwlb-bench-${prefix}`) });
  process.on('SIGINT', () => {
    lab.teardown();
    process.exit(130);
  });
  try {
    lab.build();
    await lab.startServers();
    await lab.startNodes();
    // The servers sit behind the SLB: iperf3 reaches s1 through a VIP of its own (the same DNAT cost in every mode).
    const s1 = lab.host('s1').addr!;
    const v = await lab.api('slb', 'POST', '/vips', { id: 'iperf', address: lab.t.vip, port: 5201, protocol: 'tcp', members: [{ address: s1, port: 5201 }] }, lab.t.slb.api!.token);
    if (v.status !== 201) throw new Error(`cannot add the iperf VIP: ${JSON.stringify(v.body)}`);
    // Program the kernel once through fwlb, then stop the controllers so they don't undo the other modes.
    const saved: Record<string, string> = {};
    for (const node of ['ob', 'ib']) {
      const file = join(lab.t.opts.runDir, `${node}-fwlb.json`);
      const json = inNs(lab.ns(node), ['nft', '-j', 'list', 'table', 'inet', 'fwlb']);
      writeFileSync(file, JSON.stringify({ nftables: JSON.parse(json).nftables.filter((x: any) => !x.metainfo).map((x: any) => ({ add: stripHandles(x) })) }));
      saved[node] = file;
    }
    await lab.killNode('outside');
    await lab.killNode('inside');
    const iperf = spawnInNs(lab.ns('s1'), ['iperf3', '-s']);
    await lab.waitMembers((vs) => vs.every((x) => x.members.every((m: any) => m.health.up)), 15000, 'the iperf VIP member up');
    const modes: Mode[] = ['fwlb', 'plain', 'hmark', 'plain-ct'];
    const res: Record<Mode, { gbps: number[]; cps: number[] }> = { fwlb: { gbps: [], cps: [] }, plain: { gbps: [], cps: [] }, hmark: { gbps: [], cps: [] }, 'plain-ct': { gbps: [], cps: [] } };
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of round % 2 ? [...modes].reverse() : modes) {
        setMode(lab, mode, saved);
        res[mode].gbps.push(throughput(lab));
        setMode(lab, mode, saved);
        res[mode].cps.push(connRate(lab));
        console.error(`round ${round + 1} ${mode}: ${res[mode].gbps.at(-1)!.toFixed(2)} Gbit/s, ${res[mode].cps.at(-1)!.toFixed(0)} conn/s`);
      }
    }
    iperf.kill();
    const med = (m: Mode) => ({ gbps: median(res[m].gbps), cps: median(res[m].cps) });
    const f = med('fwlb');
    const p = med('plain');
    const h = med('hmark');
    const pc = med('plain-ct');
    const report = {
      rounds: ROUNDS,
      seconds: SECONDS,
      median: { fwlb: f, plain: p, hmark: h, plainCt: pc },
      ratio: { throughputVsPlain: f.gbps / p.gbps, connVsPlain: f.cps / p.cps, throughputVsHmark: f.gbps / h.gbps, connVsHmark: f.cps / h.cps, connVsPlainCt: f.cps / pc.cps },
      raw: res,
    };
    console.log(JSON.stringify(report, null, 2));
    console.log(`\npath        Gbit/s (iperf3 -P4)   conn/s (wrk, Connection: close)`);
    for (const [n, v] of [['fwlb', f], ['plain', p], ['hmark', h], ['plain-ct', pc]] as const) console.log(`${n.padEnd(10)}  ${v.gbps.toFixed(2).padStart(8)}              ${v.cps.toFixed(0).padStart(8)}`);
    console.log(`fwlb/plain  throughput ${report.ratio.throughputVsPlain.toFixed(3)}   conn/s ${report.ratio.connVsPlain.toFixed(3)}`);
    console.log(`fwlb/hmark  throughput ${report.ratio.throughputVsHmark.toFixed(3)}   conn/s ${report.ratio.connVsHmark.toFixed(3)}`);
    console.log(`fwlb/plain-ct conn/s ${report.ratio.connVsPlainCt.toFixed(3)} (the part of fwlb's cost that is not conntrack)`);
  } finally {
    lab.teardown();
  }
}

function stripHandles(x: any): any {
  const [k] = Object.keys(x);
  const o = { ...x[k] };
  delete o.handle;
  if (k === 'rule') o.expr = o.expr.map((s: any) => (s.counter ? { counter: null } : s));
  return { [k]: o };
}


void main();
