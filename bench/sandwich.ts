// Benchmark: throughput (iperf3), new connections/s (wrk, Connection: close) and small UDP packets (iperf3 -u, 64
// and 512 bytes at one offered rate: delivered packets/s, loss, and CPU time per delivered packet) through the
// sandwich with fwlb, against plain static routing through one firewall and iptables HMARK with a shared seed,
// interleaved A B C ... with the order reversed every other round. A fourth path, plain routing with conntrack
// switched on in both nodes (`plain-ct`), shows how much of fwlb's cost is conntrack itself, which plain routing
// and HMARK do without; a fifth, HMARK with conntrack (`hmark-ct`), spreads over the same three firewalls through
// the same ip rules as fwlb, so fwlb / hmark-ct is the cost of fwlb's rules alone. Every figure is a median of
// BENCH_ROUNDS (default 9) rounds with its lowest and highest, and each ratio is also given paired: fwlb / path
// within each round (the machine's load drifts between rounds far more than within one), median and spread, and
// in how many rounds fwlb was the lower. BENCH_MODES=hmark-ct,... runs only those paths (and fwlb); `fwlb-one`
// (fwlb's table with every bucket on one firewall) runs only when named there.
// BENCH_FWLB_WITHOUT=<regex> adds a path `fwlb-without`: fwlb's table minus the rules (of any chain) whose nft JSON
// matches, and minus the chains whose `chain:<name>` matches, to measure what a rule costs or saves in the same run.
// BENCH_FWLB_STRIP=<regex> makes the same path with the statements whose nft JSON matches taken out of their rules.
// BENCH_FWLB_EDIT=<JSON list of [regex, replacement]> makes it with each statement's nft JSON text edited, in order
// (to replace a statement by a cheaper one that matches the same packets).
// BENCH_PERF=1 adds two profiled runs per path (`perf record -a` during a 64-byte UDP run and a wrk run, not in the
// medians): the share of CPU samples in netfilter, nft, conntrack and route lookups, and fwlb's per-rule counters.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, inNs, spread, startBenchLab } from '@fwlb/lab';
import { addIperfVips, connRate, IPERF_PIN, IperfServer, Paired, pairedRatio, runIn, SECONDS, stripHandles, throughput as throughputOf } from './load';

let iperfServer: IperfServer;
const throughput = (lab: Lab) => throughputOf(lab, iperfServer);

type Mode = 'fwlb' | 'plain' | 'hmark' | 'plain-ct' | 'hmark-ct' | 'fwlb-one' | 'fwlb-without';
const ALL: Mode[] = ['fwlb', 'plain', 'plain-ct', 'hmark', 'hmark-ct', 'fwlb-one'];
/** fwlb-one only when asked for: its first run (2026-11-30) told nothing the others did not, at 2 1/2 minutes a run. */
const DEFAULT = ALL.filter((m) => m !== 'fwlb-one');
/** The paths that load a variant of fwlb's own table (the rest delete it). */
const FWLB_TABLES: Mode[] = ['fwlb', 'fwlb-one', 'fwlb-without'];
const WITHOUT = process.env.BENCH_FWLB_WITHOUT ? new RegExp(process.env.BENCH_FWLB_WITHOUT) : null;
const STRIP = process.env.BENCH_FWLB_STRIP ? new RegExp(process.env.BENCH_FWLB_STRIP) : null;
const EDIT: [RegExp, string][] = process.env.BENCH_FWLB_EDIT
  ? (JSON.parse(process.env.BENCH_FWLB_EDIT) as [string, string][]).map(([re, to]) => [new RegExp(re, 'g'), to])
  : [];
const ASKED = process.env.BENCH_MODES ? process.env.BENCH_MODES.split(',').filter(Boolean) : null;
const unknown = (ASKED ?? []).filter((m) => !ALL.includes(m as Mode));
if (unknown.length) throw new RangeError(`BENCH_MODES: unknown path ${unknown.join(', ')} (known: ${ALL.join(', ')})`);
const MODES: Mode[] = [
  ...(ASKED ? ALL.filter((m) => m === 'fwlb' || ASKED.includes(m)) : DEFAULT),
  ...(WITHOUT || STRIP || EDIT.length ? (['fwlb-without'] as const) : []),
];
const BASES = MODES.filter((m) => m !== 'fwlb');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
/** Offered UDP rate (packets/s), the same for every path; above what this machine forwards, so the cost shows. */
const UDP_PPS = Number(process.env.BENCH_UDP_PPS ?? 200000);
const UDP_SIZES = [64, 512] as const;

function tryNs(ns: string, cmd: string[]): void {
  spawnSync('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'ignore' });
}

function setMode(lab: Lab, mode: Mode, saved: Record<string, string>): void {
  for (const [node, side, peer, net] of [
    ['ob', 'cli0', '172.16.1.2', '203.0.113.0/24'],
    ['ib', 'srv0', '172.17.1.2', '198.51.100.0/24'],
  ]) {
    const ns = lab.ns(node);
    tryNs(ns, ['nft', 'delete', 'table', 'inet', 'fwlb']);
    tryNs(ns, ['iptables', '-t', 'mangle', '-F', 'PREROUTING']);
    tryNs(ns, ['ip', 'route', 'del', net]);
    tryNs(ns, ['nft', 'delete', 'table', 'ip', 'benchct']);
    if (FWLB_TABLES.includes(mode)) inNs(ns, ['nft', '-j', '-f', saved[`${node}/${mode}`]]);
    if (mode === 'plain' || mode === 'plain-ct') inNs(ns, ['ip', 'route', 'add', net, 'via', peer]);
    if (mode === 'plain-ct' || mode === 'hmark-ct') {
      inNs(ns, ['nft', 'add', 'table', 'ip', 'benchct']);
      inNs(ns, ['nft', 'add', 'chain', 'ip', 'benchct', 'pre', '{ type filter hook prerouting priority -150; }']);
      inNs(ns, ['nft', 'add', 'rule', 'ip', 'benchct', 'pre', 'ct', 'state', 'new', 'counter']);
    }
    if (mode === 'hmark' || mode === 'hmark-ct') {
      // The classic recipe: a stateless symmetric HMARK with the same seed on both nodes, marks onto fwlb's ip rules.
      inNs(ns, [
        'iptables',
        '-t',
        'mangle',
        '-A',
        'PREROUTING',
        '-i',
        side,
        '-j',
        'HMARK',
        '--hmark-tuple',
        'src,dst,sport,dport,proto',
        '--hmark-mod',
        '3',
        '--hmark-offset',
        String(0x10000),
        '--hmark-rnd',
        '0x5eed1234',
      ]);
    }
  }
  // Hygiene: no leftover sockets or conntrack entries from the previous run.
  for (const h of lab.t.hosts) {
    tryNs(h.ns, ['conntrack', '-F']);
    tryNs(h.ns, ['ss', '-K', 'state', 'time-wait']);
  }
}

/** Busy and total jiffies of the whole machine (every namespace shares the kernel), from /proc/stat. */
function cpuJiffies(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - (f[4] ?? 0), total };
}

interface UdpResult {
  pps: number;
  loss: number;
  /** CPU time of the whole machine per delivered packet, microseconds. */
  cpuUs: number;
}

/**
 * One UDP run of `size`-byte datagrams at UDP_PPS through the VIP: delivered packets/s, loss and CPU per packet.
 * Like `throughput`, a run that gives no result is retried twice and then reported as NaN (left out).
 */
function udpRate(lab: Lab, size: number): UdpResult {
  const hz = 100; // USER_HZ: /proc/stat counts in 1/100 s
  for (let attempt = 1; attempt <= 3; attempt++) {
    let j: any = null;
    const c0 = cpuJiffies();
    try {
      j = JSON.parse(
        runIn(lab.ns('c1'), [
          'iperf3',
          '-c',
          lab.t.vip,
          '--connect-timeout',
          '3000',
          '-u',
          '-l',
          String(size),
          '-b',
          String(UDP_PPS * size * 8),
          '-t',
          String(SECONDS),
          ...IPERF_PIN,
          '-J',
        ]),
      );
    } catch (e) {
      j = { error: (e as Error).message.slice(0, 200) };
    }
    const c1 = cpuJiffies();
    const r = j?.end?.sum_received;
    if (r && typeof r.packets === 'number' && r.packets > 0 && r.seconds > 0) {
      const delivered = r.packets - (r.lost_packets ?? 0);
      return { pps: delivered / r.seconds, loss: (r.lost_packets ?? 0) / r.packets, cpuUs: ((c1.busy - c0.busy) / hz / delivered) * 1e6 };
    }
    console.error(`iperf3 -u -l ${size} attempt ${attempt} gave no result: ${j?.error ?? 'no sum_received'}; restarting the server`);
    iperfServer.restart();
  }
  return { pps: NaN, loss: NaN, cpuUs: NaN };
}

/** Kernel symbols whose samples count as "the forwarding rules": netfilter hooks, nft, conntrack, xt (HMARK), routing. */
const RULE_SYMBOLS = /^(nft_|__nft_|nf_|__nf_|nfnl|ipt_|xt_|hmark|fib|__fib|ip_route|ip_mkroute|__inet_dev_addr_type|jhash)/;

/** One profiled run of `load` (perf record -a): the share of samples in RULE_SYMBOLS and the top symbols. */
async function profile(lab: Lab, load: () => unknown): Promise<{ share: number; top: [string, number][] } | null> {
  const file = join(lab.t.opts.runDir, 'perf.data');
  const rec = spawn('perf', ['record', '-a', '-q', '-o', file, '--', 'sleep', String(SECONDS)], { stdio: 'ignore' });
  const exited = new Promise((r) => rec.on('exit', r));
  load();
  await exited;
  if (!existsSync(file)) return null;
  const r = spawnSync('perf', ['report', '-i', file, '--no-children', '--sort', 'sym', '-g', 'none', '--stdio', '--percent-limit', '0.05'], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  rmSync(file, { force: true });
  const rows: [string, number][] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s+([\d.]+)%\s+\[k\]\s+(\S+)/.exec(line);
    if (m && RULE_SYMBOLS.test(m[2])) rows.push([m[2], Number(m[1])]);
  }
  return { share: rows.reduce((a, [, p]) => a + p, 0), top: rows.slice(0, 8) };
}

async function main(): Promise<void> {
  const lab = await startBenchLab('bn');
  try {
    await addIperfVips(lab);
    // Program the kernel once through fwlb, then stop the controllers so they don't undo the other modes.
    const saved: Record<string, string> = {};
    for (const node of ['ob', 'ib']) {
      const json = inNs(lab.ns(node), ['nft', '-j', 'list', 'table', 'inet', 'fwlb']);
      const items = JSON.parse(json)
        .nftables.filter((x: any) => !x.metainfo)
        .map((x: any) => ({ add: stripHandles(x) }));
      const keep = (mode: Mode, list: any[]) => {
        saved[`${node}/${mode}`] = join(lab.t.opts.runDir, `${node}-${mode}.json`);
        writeFileSync(saved[`${node}/${mode}`], JSON.stringify({ nftables: list }));
      };
      keep('fwlb', items);
      // fwlb-one: every bucket on the first firewall: fwlb's rules and ip rules through plain with conntrack's single
      // firewall. Why: the firewalls here share one kernel, so spreading over three may cost the lab CPU (three
      // firewalls' rules and state in use at once) that a node in front of three real boxes would not pay.
      const one = (m: any) => {
        const first = Math.min(...m.elem.map((e: [number, number]) => e[1]));
        return { ...m, elem: m.elem.map(([b]: [number, number]) => [b, first]) };
      };
      keep(
        'fwlb-one',
        items.map((x: any) => (x.add.map?.name === 'buckets' ? { add: { map: one(x.add.map) } } : x)),
      );
      if (WITHOUT || STRIP || EDIT.length) {
        // A rule (of any chain) whose JSON matches, or a whole chain (its rules too) whose `chain:<name>` matches.
        const dropChain = (name?: string) => WITHOUT !== null && name !== undefined && WITHOUT.test(`chain:${name}`);
        const drop = (x: any) =>
          (WITHOUT !== null && x.add.rule !== undefined && WITHOUT.test(JSON.stringify(x.add.rule.expr))) ||
          dropChain(x.add.rule?.chain) ||
          dropChain(x.add.chain?.name);
        // A statement whose JSON matches STRIP leaves its rule; the rest of the rule stays.
        let stripped = 0;
        let edited = 0;
        const edit = (st: unknown) => {
          const text = JSON.stringify(st);
          const out = EDIT.reduce((a, [re, to]) => a.replace(re, to), text);
          if (out !== text) edited++;
          return JSON.parse(out);
        };
        const strip = (x: any) => {
          if ((!STRIP && !EDIT.length) || x.add.rule === undefined) return x;
          const expr = x.add.rule.expr.filter((st: unknown) => !STRIP?.test(JSON.stringify(st))).map(edit);
          stripped += x.add.rule.expr.length - expr.length;
          return { add: { rule: { ...x.add.rule, expr } } };
        };
        const without = items.filter((x: any) => !drop(x)).map(strip);
        console.error(
          `fwlb-without, ${node}: ${items.filter(drop).length} rule(s) and chain(s) left out, ${stripped} statement(s) taken out of rules, ${edited} edited`,
        );
        keep('fwlb-without', without);
      }
    }
    await lab.killNode('outside');
    await lab.killNode('inside');
    iperfServer = new IperfServer(lab.ns('s1'));
    iperfServer.start();
    await lab.waitMembers((vs) => vs.every((x) => x.members.every((m: any) => m.health.up)), 15000, 'the iperf VIP member up');
    type Metric = 'gbps' | 'cps' | 'pps64' | 'pps512' | 'loss64' | 'loss512' | 'cpuUs64' | 'cpuUs512';
    const metrics: Metric[] = ['gbps', 'cps', 'pps64', 'pps512', 'loss64', 'loss512', 'cpuUs64', 'cpuUs512'];
    const res = Object.fromEntries(MODES.map((m) => [m, Object.fromEntries(metrics.map((k) => [k, [] as number[]]))])) as Record<
      Mode,
      Record<Metric, number[]>
    >;
    // One warm-up pass, not counted: the first wrk run after start measured half the rate of every later one.
    for (const mode of MODES) {
      setMode(lab, mode, saved);
      throughput(lab);
      connRate(lab);
      udpRate(lab, 64);
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of round % 2 ? [...MODES].reverse() : MODES) {
        const r = res[mode];
        setMode(lab, mode, saved);
        r.gbps.push(throughput(lab));
        setMode(lab, mode, saved);
        r.cps.push(connRate(lab));
        for (const size of UDP_SIZES) {
          setMode(lab, mode, saved);
          const u = udpRate(lab, size);
          r[`pps${size}`].push(u.pps);
          r[`loss${size}`].push(u.loss);
          r[`cpuUs${size}`].push(u.cpuUs);
        }
        const last = (k: Metric) => r[k].at(-1)!;
        console.error(
          `round ${round + 1} ${mode}: ${last('gbps').toFixed(2)} Gbit/s, ${last('cps').toFixed(0)} conn/s, ${last('pps64').toFixed(0)} pkt/s (64 B), ${last('pps512').toFixed(0)} pkt/s (512 B)`,
        );
      }
    }
    const profiles: Record<string, Awaited<ReturnType<typeof profile>>> = {};
    let ruleCounters = '';
    if (process.env.BENCH_PERF === '1') {
      for (const mode of MODES) {
        setMode(lab, mode, saved);
        profiles[`${mode} 64 B`] = await profile(lab, () => udpRate(lab, 64));
        setMode(lab, mode, saved);
        profiles[`${mode} conn/s`] = await profile(lab, () => connRate(lab));
        if (mode === 'fwlb') ruleCounters = inNs(lab.ns('ob'), ['nft', 'list', 'chain', 'inet', 'fwlb', 'prerouting']);
      }
    }
    iperfServer.stop();
    const sum = (m: Mode) => Object.fromEntries(metrics.map((k) => [k, spread(res[m][k])])) as Record<Metric, ReturnType<typeof spread>>;
    const s = Object.fromEntries(MODES.map((m) => [m, sum(m)])) as Record<Mode, Record<Metric, ReturnType<typeof spread>>>;
    const ratio = (k: Metric, base: Mode) => s.fwlb[k].median / s[base][k].median;
    const RATIO_METRICS = ['gbps', 'cps', 'pps64', 'pps512', 'cpuUs64', 'cpuUs512'] as const;
    const ratios = Object.fromEntries(BASES.map((b) => [b, Object.fromEntries(RATIO_METRICS.map((k) => [k, ratio(k, b)]))])) as Record<
      Mode,
      Record<(typeof RATIO_METRICS)[number], number>
    >;
    // fwlb against each path; and, where both ran, HMARK with conntrack against plain with conntrack (what spreading
    // over three firewalls through ip rules costs without fwlb) and against HMARK (what conntrack itself costs).
    const extra: [Mode, Mode][] = [
      ['hmark-ct', 'plain-ct'],
      ['hmark-ct', 'hmark'],
    ];
    const pairs: [Mode, Mode][] = [...BASES.map((b): [Mode, Mode] => ['fwlb', b]), ...extra.filter(([a, b]) => MODES.includes(a) && MODES.includes(b))];
    const paired = Object.fromEntries(
      pairs.map(([a, b]) => [`${a}/${b}`, Object.fromEntries(RATIO_METRICS.map((k) => [k, pairedRatio(res[a][k], res[b][k])]))]),
    ) as Record<string, Record<(typeof RATIO_METRICS)[number], Paired>>;
    console.log(
      JSON.stringify({ rounds: ROUNDS, seconds: SECONDS, udpOfferedPps: UDP_PPS, summary: s, ratioFwlbTo: ratios, paired, profiles, raw: res }, null, 2),
    );
    const cell = (x: ReturnType<typeof spread>, d: number) => `${x.median.toFixed(d)} [${x.min.toFixed(d)}-${x.max.toFixed(d)}]`;
    console.log(`\nmedian [lowest-highest] of ${ROUNDS} interleaved rounds, ${SECONDS} s each; UDP offered at ${UDP_PPS} packets/s`);
    console.log(`path          Gbit/s (iperf3 -P4)   conn/s (wrk close)    pkt/s 64 B              pkt/s 512 B             loss 64 B  CPU us/pkt 64 B`);
    for (const m of MODES) {
      const x = s[m];
      console.log(
        `${m.padEnd(12)}  ${cell(x.gbps, 2).padEnd(20)}  ${cell(x.cps, 0).padEnd(20)}  ${cell(x.pps64, 0).padEnd(22)}  ${cell(x.pps512, 0).padEnd(22)}  ${(x.loss64.median * 100).toFixed(2).padStart(6)}%    ${cell(x.cpuUs64, 1)}`,
      );
    }
    console.log('\nratio of the medians');
    for (const b of BASES) {
      const r = ratios[b];
      console.log(
        `fwlb/${b.padEnd(12)}  throughput ${r.gbps.toFixed(3)}  conn/s ${r.cps.toFixed(3)}  pkt/s 64 B ${r.pps64.toFixed(3)}  512 B ${r.pps512.toFixed(3)}  CPU/pkt 64 B ${r.cpuUs64.toFixed(3)}`,
      );
    }
    const pc = (p: Paired) => `${p.median.toFixed(3)} [${p.min.toFixed(3)}-${p.max.toFixed(3)}] lower ${p.lower}/${p.n}`;
    console.log(`\npaired: a / b within each round, median [lowest-highest], rounds in which a's figure was the lower`);
    for (const [k, r] of Object.entries(paired)) {
      console.log(`${k.padEnd(17)}  throughput ${pc(r.gbps)}  conn/s ${pc(r.cps)}  64 B ${pc(r.pps64)}  512 B ${pc(r.pps512)}  CPU/pkt 64 B ${pc(r.cpuUs64)}`);
    }
    for (const [m, p] of Object.entries(profiles)) {
      if (p)
        console.log(
          `perf ${m.padEnd(16)} ${p.share.toFixed(1)}% of samples in netfilter/nft/conntrack/routing: ${p.top.map(([n, v]) => `${n} ${v.toFixed(2)}%`).join(', ')}`,
        );
    }
    if (ruleCounters) console.log(`fwlb outside node, prerouting counters after the profiled run:\n${ruleCounters}`);
  } finally {
    lab.teardown();
  }
}

void main();
