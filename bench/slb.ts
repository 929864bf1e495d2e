// Benchmark: new connections per second and p50/p99 latency through a VIP: fwlb's SLB (nft DNAT maps) against HAProxy
// in TCP mode, with the same client (wrk, one connection per request), the same three servers and the same
// namespaces, interleaved in the same run. Medians of the rounds and the ratios fwlb/HAProxy are printed. A third
// path, plain routing from the client to one server (no load balancer at all), shows what the rig itself allows.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inNs, median, spawnInNs, waitForLine, REPO } from '@fwlb/lab';
import { SERVERS, slbRig, wrk as wrkRun, WrkResult } from './slb-rig';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNS = Number(process.env.BENCH_CONNS ?? 32);
const VIP_FWLB = '192.0.2.100';
const VIP_HAPROXY = '192.0.2.101';
const TOKEN = 'bench-token-0123456789';
const wrk = (ns: string, url: string) => wrkRun(ns, url, { conns: CONNS, seconds: SECONDS });

async function main(): Promise<void> {
  // HAProxy's VIP is a plain address; fwlb adds its own VIP address itself.
  const { ns, dir, procs, cleanup } = slbRig('bs', [VIP_HAPROXY]);
  try {
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
    writeFileSync(
      slbCfg,
      JSON.stringify({
        interface: 'eth0',
        api: { listen: `unix:${dir}/slb.sock`, token: TOKEN },
        vips: [
          {
            id: 'web',
            address: VIP_FWLB,
            port: 80,
            protocol: 'tcp',
            scheduler: 'rr',
            check: { kind: 'tcp' },
            members: SERVERS.map((a) => ({ address: a, port: 8080 })),
          },
        ],
      }),
    );
    const slb = spawnInNs(ns.lb, [process.execPath, join(REPO, 'apps/slb/dist/main.js'), 'run', '--config', slbCfg]);
    procs.push(slb);
    await waitForLine(slb, /listening on/, 15000, 'fwlb-slb');
    await new Promise((r) => setTimeout(r, 1500));
    inNs(ns.cli, ['ip', 'route', 'add', '10.30.0.0/24', 'via', '192.0.2.2']);
    type Path = 'fwlb' | 'haproxy' | 'routed';
    const rounds: Record<Path, WrkResult[]> = { fwlb: [], haproxy: [], routed: [] };
    const paths: [Path, string][] = [
      ['fwlb', `${VIP_FWLB}:80`],
      ['haproxy', `${VIP_HAPROXY}:80`],
      ['routed', `${SERVERS[0]}:8080`],
    ];
    for (let i = 0; i < ROUNDS; i++) {
      for (const [name, vip] of i % 2 ? [...paths].reverse() : paths) {
        // Hygiene: no leftover conntrack entries or sockets from the previous run.
        inNs(ns.lb, ['conntrack', '-F']);
        inNs(ns.cli, ['ss', '-K', 'dst', '192.0.2.0/24']);
        const r = wrk(ns.cli, `http://${vip}/`);
        rounds[name].push(r);
        console.log(
          `round ${i + 1} ${name.padEnd(7)} ${r.rps.toFixed(0).padStart(7)} conn/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  errors ${r.errors}`,
        );
      }
    }
    const med = (n: Path, k: keyof WrkResult) => median(rounds[n].map((r) => r[k]));
    console.log(`\nmedians over ${ROUNDS} rounds of ${SECONDS} s, ${CONNS} connections, one connection per request:`);
    for (const n of ['fwlb', 'haproxy', 'routed'] as const)
      console.log(
        `${n.padEnd(8)} ${med(n, 'rps').toFixed(0)} conn/s, p50 ${med(n, 'p50').toFixed(2)} ms, p99 ${med(n, 'p99').toFixed(2)} ms, errors ${rounds[n].reduce((a, r) => a + r.errors, 0)}`,
      );
    console.log(`ratio fwlb/routed (one server, no load balancer): conn/s ${(med('fwlb', 'rps') / med('routed', 'rps')).toFixed(2)}`);
    console.log(
      `ratio fwlb/haproxy: conn/s ${(med('fwlb', 'rps') / med('haproxy', 'rps')).toFixed(2)} (goal >= 2), p99 ${(med('fwlb', 'p99') / med('haproxy', 'p99')).toFixed(2)} (goal <= 0.5), p50 ${(med('fwlb', 'p50') / med('haproxy', 'p50')).toFixed(2)}`,
    );
  } finally {
    cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
