// Integration: the faults of a real network at once, for minutes. Two nodes per side behind ECMP, the session table
// on Redis with Sentinel, CGNAT-like clients (100 source ports each, a new connection every 15 ms), while together:
// fw2 leaves and rejoins new sessions by the API, the Redis primary dies and its replica is promoted; then the same
// with a node's controller restarted as well (systemd's stop and start: the kernel keeps forwarding meanwhile).
// Every connection must work but those two limits of docs/limits.md explain, told apart by the churn's timeline: a
// handshake across a switch second on a reused tuple, and a controller down across a change's second.
// Routes that move flows between the nodes are left out: with reused ports they still cost a rare connection
// (docs/limits.md, "a connection moved before it was answered"); FWLB_FAULTS_MOVES=1 adds them.
import { t, Test } from 'tap';
import { ChurnResult, Lab, MGMT_NET, PeriodicFault, churn, portBase } from '@fwlb/lab';
import { agoFrom, dropReport, explainFailures, failureReport } from '../helpers/churn-report';
import { ROUTE_MOVES } from '../helpers/port-reuse';
import { startLab } from '../helpers/lab';
import { SentinelSet, startSentinels } from '../helpers/redis';

/** How long each part's traffic goes on (ms): FWLB_FAULTS_MS, 90 s by default. */
const DURATION_MS = Number(process.env.FWLB_FAULTS_MS ?? 90000);
const INTERVAL_MS = 15;
/** A controller restarted every RESTART_MS, the Redis primary killed every FAILOVER_MS (FWLB_FAULTS_RESTART_MS, FWLB_FAULTS_FAILOVER_MS). */
const RESTART_MS = Number(process.env.FWLB_FAULTS_RESTART_MS ?? 17000);
const FAILOVER_MS = Number(process.env.FWLB_FAULTS_FAILOVER_MS ?? 29000);
/**
 * At most this many failed connections a part within the stated limits: a soak run saw up to 3 handshakes across a
 * switch second, and 10 connections while a controller's start waited out a Redis failover across a change's second.
 */
const MAX_EXPLAINED = 12;

t.test('faults together for minutes', async (t) => {
  const base = portBase();
  const host = `${MGMT_NET}.1`;
  const sentinels = [2, 3, 4].map((i) => ({ host, port: base + i }));
  const lab = await startLab(t, { mgmt: true, nodesPerSide: 2, sessionTable: { sentinels, primaryName: 'fwlb', heartbeatSeconds: 2 } });
  const redis = await startSentinels(t, { netns: lab.ns('rd'), host, base });
  await lab.waitFirewalls((fw) => fw.every((f) => f.live), 30000, 'every firewall live on every node once Redis is there');
  lab.traceUnreachables();
  lab.traceFlowExits();

  // Firewall drops are counted, not asserted: at 12,000 connections a part, the rare handshake that meets two tables
  // at a switch second (docs/limits.md, "Changes across nodes") happens in some runs.
  await t.test(
    'fw2 leaving and rejoining new sessions while the Redis primary dies: no connection fails outside the stated limits; firewall drops counted',
    async (t) => {
      const r = await run(t, lab, [failovers(redis)]);
      t.comment(`firewall drops ${JSON.stringify(r.drops)}${r.drops.some((d) => d) ? `: ${dropReport(lab, r)}` : ''}`);
    },
  );

  await t.test(
    'the same with a controller restarted every few seconds as well: no connection fails outside the stated limits; firewall drops counted',
    async (t) => {
      const restarts: string[] = [];
      const nodes = lab.balancerNames();
      const restart: PeriodicFault = {
        name: 'controller restarted',
        everyMs: RESTART_MS,
        run: async (k, note) => {
          const n = nodes[(k - 1) % nodes.length];
          note(`${n} stopping`);
          await lab.stopNode(n);
          note(`${n} stopped`);
          await lab.startNode(n);
          note(`${n} answers`);
          restarts.push(n);
        },
      };
      const r = await run(t, lab, [restart, failovers(redis)]);
      t.ok(restarts.length >= Math.floor(DURATION_MS / RESTART_MS) - 1, `controllers restarted: ${restarts.join(' ')}`);
      // Counted, not asserted: beside the switch second above, a controller down across a change's second runs the old
      // table until it is back (docs/limits.md).
      t.comment(`firewall drops ${JSON.stringify(r.drops)}${r.drops.some((d) => d) ? `: ${dropReport(lab, r)}` : ''}`);
    },
  );
});

/** Kills the Redis primary every FAILOVER_MS; the sentinels promote its replica, and it comes back as the new one's. */
function failovers(redis: SentinelSet): PeriodicFault {
  return {
    name: 'Redis primary killed',
    everyMs: FAILOVER_MS,
    run: async (_k, note) => note(`replica promoted after ${await redis.failover()} ms`),
  };
}

/** The churn with `faults` for DURATION_MS; checks what every part must hold: the faults happened, 0 connections failed. */
async function run(t: Test, lab: Lab, faults: PeriodicFault[]): Promise<ChurnResult> {
  const count = Math.round(DURATION_MS / INTERVAL_MS);
  const r = await churn(lab, {
    ports: 100,
    count,
    intervalMs: INTERVAL_MS,
    firewall: 'fw2',
    toggleMs: 2500,
    ...(process.env.FWLB_FAULTS_MOVES === '1' ? { moves: ROUTE_MOVES, moveMs: 3000 } : {}),
    faults,
  });
  t.comment(
    `${r.ok + r.failed} connections; fw2 toggled ${r.toggles} times, routes moved ${r.moves} times, ${Object.entries(r.faults)
      .map(([k, v]) => `${k} ${v} times`)
      .join(', ')}; admin changes a node refused: ${r.adminRefusals.length}`,
  );
  t.ok(
    faults.every((f) => r.faults[f.name] >= Math.floor(DURATION_MS / f.everyMs) - 1),
    'the faults happened',
  );
  t.equal(r.ok + r.failed, count * 2);
  // The sorting below reads the switch seconds from the nodes' answers: they must be there.
  t.ok(r.switches.length >= r.toggles / 2, `the nodes named ${r.switches.length} switch seconds for ${r.toggles} toggles`);
  // A failed connection must be one of the two limits docs/limits.md states for these faults, each from the churn's
  // own timeline (a start just before a switch second in a bucket that moved; a controller down across one), and
  // those stay rare; any other failure fails the test.
  const failed = explainFailures(lab, r, 'fw2');
  const explained = failed.filter((f) => f.why);
  const ago = agoFrom(Date.now());
  if (explained.length) t.comment(`failed within the stated limits: ${explained.map((f) => `${ago(f.at)} ${f.flow}: ${f.why}`).join('; ')}`);
  t.equal(
    failed.length - explained.length,
    0,
    `0 of ${count * 2} connections failed outside the stated limits (${JSON.stringify(r.errors)})${failed.length > explained.length ? `: ${failureReport(lab, r)}` : ''}`,
  );
  t.ok(explained.length <= MAX_EXPLAINED, `${explained.length} failed within them (at most ${MAX_EXPLAINED})`);
  return r;
}
