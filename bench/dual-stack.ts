// Benchmark: IPv6 against IPv4 through the same dual-stack sandwich, in the same run, interleaved. TCP throughput
// (iperf3, 4 streams), new connections/s (wrk, Connection: close) and 64-byte UDP packets/s (iperf3 -u at one
// offered rate) from c1 to s1's own address in each family: both skip the SLB's DNAT (IPv4 is routed to s1 for the
// run, as IPv6 always is), so the families differ by their headers and fwlb's rules only. Two paths per family:
// fwlb, and iptables/ip6tables HMARK with conntrack over the same ip rules (`hmark-ct`, as in bench/sandwich). Every
// figure is a median of BENCH_ROUNDS (default 5) rounds with its lowest and highest; the ratios are paired within
// each round: fwlb / hmark-ct per family, and IPv6 / IPv4 per path.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostPort } from '@fwlb/flowhash';
import { HTTP_PORT, inNs, INSIDE_TRANSIT, Lab, RIP_NET, SLB_UPLINK, spread, startBenchLab } from '@fwlb/lab';
import { connRate, IPERF_PIN, IperfServer, pairedRatio, runIn, SECONDS, stripHandles, throughput } from './load';

type Mode = 'fwlb' | 'hmark-ct';
type Family = 'ipv4' | 'ipv6';
const MODES: Mode[] = ['fwlb', 'hmark-ct'];
const FAMILIES: Family[] = ['ipv4', 'ipv6'];
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const UDP_PPS = Number(process.env.BENCH_UDP_PPS ?? 200000);
const SEED = '0x5eed1234';

const tryNs = (ns: string, cmd: string[]) => spawnSync('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'ignore' });

function setMode(lab: Lab, mode: Mode, saved: Record<string, string>): void {
  for (const [node, side] of [
    ['ob', 'cli0'],
    ['ib', 'srv0'],
  ]) {
    const ns = lab.ns(node);
    tryNs(ns, ['nft', 'delete', 'table', 'inet', 'fwlb']);
    tryNs(ns, ['nft', 'delete', 'table', 'inet', 'benchct']);
    for (const ipt of ['iptables', 'ip6tables']) tryNs(ns, [ipt, '-t', 'mangle', '-F', 'PREROUTING']);
    if (mode === 'fwlb') inNs(ns, ['nft', '-j', '-f', saved[node]]);
    else {
      // Conntrack on, as fwlb has it, and the classic symmetric HMARK with one seed on both nodes onto fwlb's ip rules.
      inNs(ns, ['nft', 'add', 'table', 'inet', 'benchct']);
      inNs(ns, ['nft', 'add', 'chain', 'inet', 'benchct', 'pre', '{ type filter hook prerouting priority -150; }']);
      inNs(ns, ['nft', 'add', 'rule', 'inet', 'benchct', 'pre', 'ct', 'state', 'new', 'counter']);
      for (const ipt of ['iptables', 'ip6tables'])
        inNs(ns, [
          ipt,
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
          SEED,
        ]);
    }
  }
  for (const h of lab.t.hosts) {
    tryNs(h.ns, ['conntrack', '-F']);
    tryNs(h.ns, ['ss', '-K', 'state', 'time-wait']);
  }
}

/** Delivered 64-byte datagrams a second of one run at UDP_PPS, or NaN (reported) when it gave no result. */
function pps64(lab: Lab, server: IperfServer, target: string): number {
  for (let attempt = 1; attempt <= 3; attempt++) {
    let j: any = null;
    try {
      j = JSON.parse(
        runIn(lab.ns('c1'), [
          'iperf3',
          '-c',
          target,
          '--connect-timeout',
          '3000',
          '-u',
          '-l',
          '64',
          '-b',
          String(UDP_PPS * 64 * 8),
          '-t',
          String(SECONDS),
          ...IPERF_PIN,
          '-J',
        ]),
      );
    } catch (e) {
      j = { error: (e as Error).message.slice(0, 200) };
    }
    const r = j?.end?.sum_received;
    if (r && r.packets > 0 && r.seconds > 0) return (r.packets - (r.lost_packets ?? 0)) / r.seconds;
    console.error(`iperf3 -u attempt ${attempt} gave no result: ${j?.error ?? 'no sum_received'}; restarting the server`);
    server.restart();
  }
  return NaN;
}

async function main(): Promise<void> {
  const lab = await startBenchLab('bd', { ipv6: true });
  try {
    const s1 = lab.host('s1');
    // IPv4 to s1's own address, through the sandwich like IPv6: the inside node and the firewalls route it.
    inNs(lab.ns('ib'), ['ip', 'route', 'add', `${RIP_NET}.0/24`, 'via', SLB_UPLINK]);
    lab.t.hosts
      .filter((h) => h.role === 'firewall')
      .forEach((h, i) => inNs(h.ns, ['ip', 'route', 'add', `${RIP_NET}.0/24`, 'via', `${INSIDE_TRANSIT(i + 1)}.1`]));
    const target: Record<Family, string> = { ipv4: s1.addr!, ipv6: s1.addr6! };
    const url: Record<Family, string> = { ipv4: `http://${hostPort(s1.addr!, HTTP_PORT)}/`, ipv6: `http://${hostPort(s1.addr6!, HTTP_PORT)}/` };
    // Program the kernel once through fwlb, then stop the controllers so they don't undo the other path.
    const saved: Record<string, string> = {};
    for (const node of ['ob', 'ib']) {
      const items = JSON.parse(inNs(lab.ns(node), ['nft', '-j', 'list', 'table', 'inet', 'fwlb']))
        .nftables.filter((x: any) => !x.metainfo)
        .map((x: any) => ({ add: stripHandles(x) }));
      saved[node] = join(lab.t.opts.runDir, `${node}-fwlb.json`);
      writeFileSync(saved[node], JSON.stringify({ nftables: items }));
    }
    await lab.killNode('outside');
    await lab.killNode('inside');
    const server = new IperfServer(lab.ns('s1'));
    server.start();
    type Metric = 'gbps' | 'cps' | 'pps64';
    const metrics: Metric[] = ['gbps', 'cps', 'pps64'];
    const runs = MODES.flatMap((m) => FAMILIES.map((f) => [m, f] as const));
    const key = (m: Mode, f: Family) => `${m} ${f}`;
    const res: Record<string, Record<Metric, number[]>> = Object.fromEntries(runs.map(([m, f]) => [key(m, f), { gbps: [], cps: [], pps64: [] }]));
    const measure = (m: Mode, f: Family, k: Metric) => {
      setMode(lab, m, saved);
      return k === 'gbps' ? throughput(lab, server, 'c1', target[f]) : k === 'cps' ? connRate(lab, 'c1', url[f]) : pps64(lab, server, target[f]);
    };
    // One warm-up pass, not counted (the first wrk run after start measured half of every later one in bench/sandwich).
    for (const [m, f] of runs) for (const k of metrics) measure(m, f, k);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [m, f] of round % 2 ? [...runs].reverse() : runs) {
        for (const k of metrics) res[key(m, f)][k].push(measure(m, f, k));
        const r = res[key(m, f)];
        console.error(
          `round ${round + 1} ${key(m, f)}: ${r.gbps.at(-1)!.toFixed(2)} Gbit/s, ${r.cps.at(-1)!.toFixed(0)} conn/s, ${r.pps64.at(-1)!.toFixed(0)} pkt/s (64 B)`,
        );
      }
    }
    server.stop();
    const summary = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, Object.fromEntries(metrics.map((x) => [x, spread(v[x])]))]));
    const pairs: [string, string][] = [
      ...FAMILIES.map((f): [string, string] => [key('fwlb', f), key('hmark-ct', f)]),
      ...MODES.map((m): [string, string] => [key(m, 'ipv6'), key(m, 'ipv4')]),
    ];
    const paired = Object.fromEntries(pairs.map(([a, b]) => [`${a} / ${b}`, Object.fromEntries(metrics.map((k) => [k, pairedRatio(res[a][k], res[b][k])]))]));
    console.log(JSON.stringify({ rounds: ROUNDS, seconds: SECONDS, udpOfferedPps: UDP_PPS, summary, paired, raw: res }, null, 2));
    const cell = (x: ReturnType<typeof spread>, d: number) => `${x.median.toFixed(d)} [${x.min.toFixed(d)}-${x.max.toFixed(d)}]`;
    console.log(`\nmedian [lowest-highest] of ${ROUNDS} interleaved rounds, ${SECONDS} s each, c1 to s1's own address; UDP offered at ${UDP_PPS} packets/s`);
    console.log('path            Gbit/s (iperf3 -P4)   conn/s (wrk close)    pkt/s 64 B');
    for (const [k, v] of Object.entries(summary))
      console.log(`${k.padEnd(14)}  ${cell(v.gbps, 2).padEnd(20)}  ${cell(v.cps, 0).padEnd(20)}  ${cell(v.pps64, 0)}`);
    console.log('\npaired: a / b within each round, median [lowest-highest]');
    const pc = (p: ReturnType<typeof pairedRatio>) => `${p.median.toFixed(3)} [${p.min.toFixed(3)}-${p.max.toFixed(3)}]`;
    for (const [k, r] of Object.entries(paired)) console.log(`${k.padEnd(32)}  throughput ${pc(r.gbps)}  conn/s ${pc(r.cps)}  64 B ${pc(r.pps64)}`);
  } finally {
    lab.teardown();
  }
}

void main();
