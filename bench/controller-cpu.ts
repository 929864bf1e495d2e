// Benchmark (not CI): what a busy node's controller costs in CPU. Two nodes per side behind ECMP with the session
// table (one Redis), as a production pair runs (BENCH_CPU_NODES=1: one per side); each case measures every balancer node's controller, the nft and
// conntrack runs it spawned, and its probe helper, from /proc, over the same wall time:
//   idle (no client traffic);
//   steady new connections at each rate of BENCH_CPU_RATES (total over both clients, default 200 and 1000 a second);
//   the highest rate while fw2 leaves and rejoins new sessions by the API every 2.5 s (a graceful change that pins).
// Each figure is a share of one core, and the ratio to the idle case of the same run. BENCH_CPU_PROFILE=1 runs the
// controllers under node's --cpu-prof and prints, per node, the functions that took the most CPU during the loaded
// cases (self time), for the next optimisation. Prints figures only; nothing here is pass/fail.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { churn, processUsage, withRedisLab, Lab, ProcessUsage } from '@fwlb/lab';

const RATES = (process.env.BENCH_CPU_RATES ?? '200,1000').split(',').map(Number);
const SECONDS = Number(process.env.BENCH_CPU_SECONDS ?? 20);
const PROFILE = process.env.BENCH_CPU_PROFILE === '1';
const NODES = Number(process.env.BENCH_CPU_NODES ?? 2);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const f = (x: number) => (Number.isFinite(x) ? x.toFixed(x < 10 ? 1 : 0) : 'n/a');

interface Case {
  name: string;
  /** Per node: admin changes its kernel got after their second (the /status counter, over the case). */
  late: Record<string, number>;
  /** Per node: controller, nft/conntrack runs, probe helper, each % of a core. */
  nodes: Record<string, { controller: number; runs: number; helper: number }>;
  note: string;
}

/** Every balancer node's usage over what `load` does. */
async function measure(lab: Lab, name: string, load: () => Promise<string>): Promise<Case> {
  const pids = Object.fromEntries(lab.balancerNames().map((n) => [n, lab.nodes[n]!.proc.pid!]));
  const lateNow = async () =>
    Object.fromEntries(await Promise.all(lab.balancerNames().map(async (n) => [n, (await lab.api(n, 'GET', '/status')).body.counters.lateSwitches as number])));
  const late0 = await lateNow();
  const before: Record<string, ProcessUsage> = Object.fromEntries(Object.entries(pids).map(([n, p]) => [n, processUsage(p)]));
  const t0 = Date.now();
  const note = await load();
  const ms = Date.now() - t0;
  const nodes: Case['nodes'] = {};
  for (const [n, p] of Object.entries(pids)) {
    const a = before[n];
    const b = processUsage(p);
    nodes[n] = { controller: ((b.cpuMs - a.cpuMs) / ms) * 100, runs: ((b.childMs - a.childMs) / ms) * 100, helper: ((b.helperMs - a.helperMs) / ms) * 100 };
  }
  const late1 = await lateNow();
  return { name, nodes, note, late: Object.fromEntries(Object.keys(late1).map((n) => [n, late1[n] - late0[n]])) };
}

/** Self time per function of a .cpuprofile between two offsets from its start (ms), busiest first. */
function selfTimes(file: string, fromMs: number, toMs: number): { total: number; top: [string, number][] } {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map<number, any>(p.nodes.map((n: any) => [n.id, n]));
  const name = (n: any) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`;
  const self = new Map<string, number>();
  let t = p.startTime;
  let total = 0;
  p.samples.forEach((id: number, i: number) => {
    t += p.timeDeltas[i];
    const at = (t - p.startTime) / 1000;
    const w = (p.timeDeltas[i + 1] ?? 0) / 1000;
    const n = byId.get(id);
    if (at < fromMs || at > toMs || n.callFrame.functionName === '(idle)') return;
    total += w;
    self.set(name(n), (self.get(name(n)) ?? 0) + w);
  });
  return { total, top: [...self].sort((a, b) => b[1] - a[1]).slice(0, 12) };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-bench-cpu-'));
  try {
    await withRedisLab('bc', { nodesPerSide: NODES }, async (lab) => {
      const started: Record<string, number> = {};
      if (PROFILE) {
        for (const n of lab.balancerNames()) {
          await lab.stopNode(n);
          started[n] = Date.now();
          await lab.startNode(n, [], 15000, ['--cpu-prof', `--cpu-prof-dir=${join(dir, n)}`]);
        }
        await lab.waitFirewalls((fw) => fw.every((x) => x.live), 15000, 'all firewalls live on every node');
      }
      await sleep(3000);
      const cases: Case[] = [];
      cases.push(await measure(lab, 'idle', () => sleep(SECONDS * 1000).then(() => '')));
      const loadFrom = Date.now();
      const steady = async (rate: number, toggleMs: number) => {
        const perClient = rate / 2;
        const r = await churn(lab, { ports: 20000, count: Math.round(perClient * SECONDS), intervalMs: 1000 / perClient, firewall: 'fw2', toggleMs });
        return `${r.ok + r.failed} connections (${f((r.ok + r.failed) / SECONDS)}/s wanted ${rate}/s), ${r.failed} failed, drops ${r.drops.join('/')}${toggleMs ? `, ${r.toggles} toggles` : ''}, client stalled up to ${r.clientStallMs} ms`;
      };
      for (const rate of RATES) cases.push(await measure(lab, `${rate} new connections/s`, () => steady(rate, 0)));
      const top = Math.max(...RATES);
      cases.push(await measure(lab, `${top}/s, fw2 leaving and rejoining every 2.5 s`, () => steady(top, 2500)));
      const loadTo = Date.now();
      const idle = cases[0].nodes;
      for (const c of cases) {
        const late = Object.entries(c.late).filter(([, v]) => v > 0);
        console.log(
          `${c.name}${c.note ? `: ${c.note}` : ''}${late.length ? `; switches committed late: ${late.map(([n, v]) => `${n} ${v}`).join(', ')}` : ''}`,
        );
        for (const [n, u] of Object.entries(c.nodes)) {
          const ratio = c === cases[0] ? '' : ` (controller ${f(u.controller / Math.max(0.1, idle[n].controller))} x idle)`;
          console.log(`  ${n}: controller ${f(u.controller)} %, nft/conntrack runs ${f(u.runs)} %, probe helper ${f(u.helper)} % of a core${ratio}`);
        }
      }
      if (PROFILE) {
        for (const n of lab.balancerNames()) await lab.stopNode(n);
        for (const n of Object.keys(started)) {
          const file = readdirSync(join(dir, n)).find((x) => x.endsWith('.cpuprofile'));
          if (!file) continue;
          const p = selfTimes(join(dir, n, file), loadFrom - started[n], loadTo - started[n]);
          console.log(`${n}: ${f(p.total)} ms of CPU in the loaded cases; self time, busiest first:`);
          for (const [k, v] of p.top) console.log(`  ${f((v / p.total) * 100)} % ${k}`);
        }
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
