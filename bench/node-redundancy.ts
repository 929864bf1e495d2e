// Benchmark: node redundancy, two parts.
// 1. Scale-out: new connections/s (wrk, Connection: close) and throughput (iperf3, 4 streams) through 2 nodes per side
//    behind ECMP against 1 (every ECMP route pinned to node 1 of each side), in the same lab, BENCH_ROUNDS (default 9)
//    interleaved rounds, the order reversed every other round. All namespaces share this machine's 2 cores, so a
//    second node adds no CPU: the ratio says what spreading over two nodes costs or saves, not what a second box adds.
//    BENCH_PARTS picks parts (scale-out, bgp, vrrp; all by default).
// 2. Failover: BENCH_FAILOVERS (default 10) failures of outside node 1 under a steady flow of new connections
//    (BENCH_FAILOVER_CPS, default 1,000 a second over the clients): ECMP through BGP with BFD (BIRD everywhere, BFD
//    100 ms x 3; the node's controller kill -9 and its links down) and VRRP with keepalived (the active node's
//    controller kill -9; and its links down). For each: time from the failure to the withdrawal (the outside router's
//    kernel route without the node) or the takeover, and to the start of the last new connection that failed or was
//    slowed (a SYN lost in the dead node, retried after 1 s); medians [min-max].
import { drive, DriveReport, ECHO_PORT, Lab, spread, startBenchLab, startRedis, waitUntil, SERVER_NET } from '@fwlb/lab';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addIperfVips, connRate, fmtSpread, IperfServer, throughput } from './load';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
const FAILOVERS = Number(process.env.BENCH_FAILOVERS ?? 10);
const CPS = Number(process.env.BENCH_FAILOVER_CPS ?? 1000);
/** Seconds of new connections per failure: 1.5 s before it, the rest after. */
const LOAD_SECONDS = 6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = fmtSpread;

interface Failover {
  /** Failure -> route withdrawn (ECMP) or addresses taken over (VRRP), ms. */
  moveMs: number;
  /** Failure -> start of the last new connection that failed or took > 500 ms; 0 when none did. */
  lastHitMs: number;
  failed: number;
  slow: number;
}

/** A steady flow of new connections from every client while `fail` runs 1.5 s in; what it cost. */
async function underLoad(lab: Lab, fail: () => Promise<number>): Promise<Failover> {
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const target = `${lab.t.vip}:${ECHO_PORT}`;
  const intervalMs = (1000 * clients.length) / CPS;
  const count = Math.round((LOAD_SECONDS * 1000) / intervalMs);
  const shorts = Promise.all(clients.map((c) => drive(lab, c.name, { short: { targets: [target], count, concurrency: 0, intervalMs } })));
  await sleep(1500);
  const at = Date.now();
  const moveMs = await fail();
  const r: DriveReport[] = await shorts;
  const hits = r.flatMap((x) => [...x.short.failedAt, ...x.short.slowAt]).filter((t) => t >= at - 1000);
  return {
    moveMs,
    lastHitMs: hits.length ? Math.max(...hits) - at : 0,
    failed: r.reduce((a, x) => a + x.short.failed, 0),
    slow: r.reduce((a, x) => a + x.short.slowAt.length, 0),
  };
}

function report(name: string, fs: Failover[]): void {
  console.log(
    `${name}: moved ${fmt(fs.map((f) => f.moveMs))} ms after the failure; last new connection hit ${fmt(fs.map((f) => f.lastHitMs))} ms after it; ` +
      `failed ${fmt(fs.map((f) => f.failed))}, slowed ${fmt(fs.map((f) => f.slow))} of ${CPS * LOAD_SECONDS} per round`,
  );
}

const waitFor = (ok: () => boolean | Promise<boolean>, ms: number, what: string) => waitUntil(ok, ms, what, 10);

async function ecmp(sessionTable: string): Promise<void> {
  const lab = await startBenchLab('br', { sessionTable, nodesPerSide: 2 });
  const server = new IperfServer(lab.ns('s1'));
  try {
    await addIperfVips(lab);
    server.start();
    const all = lab.balancerNames();
    const one = all.filter((n) => n.endsWith('1'));
    const res = { one: { cps: [] as number[], gbps: [] as number[] }, two: { cps: [] as number[], gbps: [] as number[] } };
    connRate(lab); // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of (round % 2 ? ['two', 'one'] : ['one', 'two']) as ('one' | 'two')[]) {
        lab.setEcmp(mode === 'one' ? one : all);
        res[mode].cps.push(connRate(lab));
        res[mode].gbps.push(throughput(lab, server));
      }
    }
    lab.setEcmp(all);
    const ratio = (k: 'cps' | 'gbps') => (spread(res.two[k]).median / spread(res.one[k]).median).toFixed(3);
    console.log(`scale-out, ${ROUNDS} rounds: conn/s 1 node per side ${fmt(res.one.cps)}, 2 nodes ${fmt(res.two.cps)}, ratio ${ratio('cps')}`);
    console.log(`  throughput Gbit/s 1 node ${fmt(res.one.gbps, 2)}, 2 nodes ${fmt(res.two.gbps, 2)}, ratio ${ratio('gbps')}`);
    server.stop();
  } finally {
    server.stop();
    lab.teardown();
  }
}

async function bgp(sessionTable: string): Promise<void> {
  const lab = await startBenchLab('bb', { sessionTable, nodesPerSide: 2, routing: 'bgp' });
  try {
    await lab.waitBgp();
    const dst = `${SERVER_NET}.0/24`;
    const ob1 = lab.t.ecmp.find((e) => e.ns === lab.ns('or'))!.via.ob1;
    const routed = () => lab.nextHops('or', dst).includes(ob1);
    const fs: Failover[] = [];
    const calm: Failover[] = [];
    for (let i = 0; i < FAILOVERS; i++) {
      // The same load without a failure, interleaved: what the load alone costs on this machine.
      calm.push(await underLoad(lab, async () => 0));
      fs.push(
        await underLoad(lab, async () => {
          const at = Date.now();
          await lab.killNode('ob1');
          lab.nodeLinks('ob1', false);
          await waitFor(() => !routed(), 10000, 'ob1 withdrawn');
          return Date.now() - at;
        }),
      );
      lab.nodeLinks('ob1', true);
      await lab.startNode('ob1');
      await waitFor(routed, 20000, 'ob1 back');
      await sleep(500);
    }
    report(`ECMP through BGP, no failure (the same load), ${FAILOVERS} rounds`, calm);
    report(`ECMP through BGP with BFD (100 ms x 3), outside node killed (controller kill -9, links down), ${FAILOVERS} rounds`, fs);
  } finally {
    lab.teardown();
  }
}

async function vrrp(sessionTable: string): Promise<void> {
  const lab = await startBenchLab('bv', { sessionTable, nodesPerSide: 2, mode: 'vrrp' });
  try {
    await lab.startKeepalived();
    const tm = Lab.VRRP_TIMERS;
    const holds = (n: string) => () => lab.vrrpHolder('outside') === n;
    for (const how of ['controller', 'links'] as const) {
      const fs: Failover[] = [];
      for (let i = 0; i < FAILOVERS; i++) {
        fs.push(
          await underLoad(lab, async () => {
            const at = Date.now();
            if (how === 'controller') await lab.killNode('ob1');
            else lab.nodeLinks('ob1', false);
            await waitFor(holds('ob2'), 10000, 'ob2 holding the addresses');
            return Date.now() - at;
          }),
        );
        if (how === 'controller') await lab.startNode('ob1');
        else lab.nodeLinks('ob1', true);
        await waitFor(holds('ob1'), 15000, 'ob1 holding the addresses again');
        await sleep(500);
      }
      report(
        `VRRP, active node's ${how === 'controller' ? 'controller killed (kill -9)' : 'links down'}, ${FAILOVERS} rounds (advert_int ${tm.advert} s, check every ${tm.checkInterval} s, fall ${tm.fall})`,
        fs,
      );
    }
  } finally {
    lab.teardown();
  }
}

/** Each lab gets a Redis of its own: the two labs' nodes have the same names. */
async function withRedis(run: (url: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-bench-redis-'));
  const sock = join(dir, 'redis.sock');
  const redis = await startRedis(sock, dir);
  try {
    await run(`unix:${sock}`);
  } finally {
    redis.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

/** BENCH_PARTS (comma-separated, default all): scale-out, bgp, vrrp. */
async function main(): Promise<void> {
  const parts = (process.env.BENCH_PARTS ?? 'scale-out,bgp,vrrp').split(',');
  if (parts.includes('scale-out')) await withRedis(ecmp);
  if (parts.includes('bgp')) await withRedis(bgp);
  if (parts.includes('vrrp')) await withRedis(vrrp);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
