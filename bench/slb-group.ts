// Benchmark: an SLB group (two SLB nodes, keepalived active/standby, `flow` VIPs) failing over under load.
// BENCH_FAILOVERS (default 10) failures of the node that holds the group's addresses (its fwlb-slb kill -9 and its links
// down), each under 100 long-lived streams and a steady flow of new connections (BENCH_FAILOVER_CPS, default 400 a
// second over the clients); the dead node comes back as backup (nopreempt), and the next round fails the other one.
// For each: the takeover (the other node holds the addresses), streams broken, new connections failed or slowed
// (a SYN lost in the window, retried after 1 s) and when the last of them started; medians [min-max].
// Scale: none to measure. The standby forwards nothing, so two nodes carry what one does; the 2-core machine would not
// show a second box's CPU anyway (every namespace shares the same two cores).
import { drive, DriveReport, ECHO_PORT, Lab, startBenchLab, waitUntil } from '@fwlb/lab';
import { fmtSpread } from './load';

const FAILOVERS = Number(process.env.BENCH_FAILOVERS ?? 10);
const CPS = Number(process.env.BENCH_FAILOVER_CPS ?? 400);
/** Seconds of load per failure: 2 s before it, the rest after. */
const LOAD_SECONDS = 7;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = fmtSpread;

interface Round {
  takeoverMs: number;
  broken: number;
  failed: number;
  slow: number;
  /** Failure -> start of the last new connection that failed or was slowed; 0 when none was. */
  lastHitMs: number;
}

async function round(lab: Lab, active: string, standby: string): Promise<Round> {
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const target = `${lab.t.vip}:${ECHO_PORT}`;
  const intervalMs = (1000 * clients.length) / CPS;
  const count = Math.round((LOAD_SECONDS * 1000) / intervalMs);
  const longs = Promise.all(
    clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 50, durationMs: LOAD_SECONDS * 1000, intervalMs: 100 } })),
  );
  const shorts = Promise.all(clients.map((c) => drive(lab, c.name, { short: { targets: [target], count, concurrency: 0, intervalMs, timeoutMs: 3000 } })));
  await sleep(2000);
  const at = Date.now();
  await lab.killNode(active);
  lab.nodeLinks(active, false);
  await waitUntil(() => lab.vrrpHolder('slb') === standby, 10000, `${standby} to take over`, 10);
  const takeoverMs = Date.now() - at;
  const [l, s]: DriveReport[][] = [await longs, await shorts];
  lab.nodeLinks(active, true);
  await lab.startNode(active);
  // Back as backup: its health check passes before the next round fails the other node.
  await sleep(3000);
  const hits = s.flatMap((x) => [...x.short.failedAt, ...x.short.slowAt]).filter((t) => t >= at - 1000);
  return {
    takeoverMs,
    broken: l.reduce((a, x) => a + x.long.broken, 0),
    failed: s.reduce((a, x) => a + x.short.failed, 0),
    slow: s.reduce((a, x) => a + x.short.slowAt.length, 0),
    lastHitMs: hits.length ? Math.max(...hits) - at : 0,
  };
}

async function main(): Promise<void> {
  const lab = await startBenchLab('sg', { slbNodes: 2 });
  try {
    await lab.startKeepalived();
    const rounds: Round[] = [];
    for (let i = 0; i < FAILOVERS; i++) {
      const active = lab.vrrpHolder('slb')!;
      const standby = active === 'slb' ? 'slb2' : 'slb';
      rounds.push(await round(lab, active, standby));
    }
    console.log(
      `SLB group failover, ${FAILOVERS} rounds: takeover ${fmt(rounds.map((r) => r.takeoverMs))} ms; streams broken ${rounds.reduce((a, r) => a + r.broken, 0)} of ${100 * FAILOVERS}; ` +
        `new connections failed ${fmt(rounds.map((r) => r.failed))}, slowed ${fmt(rounds.map((r) => r.slow))} of ${CPS * LOAD_SECONDS} per round; ` +
        `last hit ${fmt(rounds.map((r) => r.lastHitMs))} ms after the failure`,
    );
  } finally {
    lab.teardown();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
