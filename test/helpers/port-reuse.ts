// Test helper: the port-reuse subtest every lab runs the same way (CGNAT clients while fw2 leaves and rejoins new
// sessions), so its figures compare across one node, VRRP and ECMP.
import type { Test } from 'tap';
import { churn, Lab } from '@fwlb/lab';
import { dropReport, failureReport } from './churn-report';

export const PORT_REUSE_TITLE = 'clients that reuse their source ports within seconds while a firewall leaves and rejoins new sessions: 0 failed, 0 drops';
/** The routes of a redundant lab cycling through these node groups ([] is every node), every 3 s. */
export const ROUTE_MOVES = [['ob1', 'ib1'], [], ['ob2', 'ib2'], ['ob1', 'ib2'], [], ['ob2', 'ib1']];
export async function portReuse(t: Test, lab: Lab, o: { moves?: boolean } = {}): Promise<void> {
  // 100 source ports per client and one connection every 15 ms: a port comes back after about 1.5 s.
  lab.traceUnreachables();
  const moves = o.moves ? { moves: ROUTE_MOVES, moveMs: 3000 } : {};
  const before = await staleDeleted(lab);
  const r = await churn(lab, { ports: 100, count: 2000, intervalMs: 15, firewall: 'fw2', toggleMs: 2500, ...moves });
  const after = await staleDeleted(lab);
  // Each change is answered once it is in force on every node (2-3 s), so the count says how long they took.
  t.ok(r.toggles >= 6, `fw2 left and rejoined new sessions ${r.toggles} times (each answered by every node in ${JSON.stringify(r.toggleMs)} ms)`);
  const stale = Object.fromEntries(Object.keys(after).map((n) => [n, `${after[n][0] - before[n][0]}/${after[n][1] - before[n][1]}`]));
  if (o.moves)
    t.ok(
      r.moves >= 8,
      `the routes moved flows between the nodes ${r.moves} times (entries of earlier connections deleted/of later ones kept: ${JSON.stringify(stale)})`,
    );
  t.equal(r.ok + r.failed, 4000);
  // A failure says who refused the connection (an ICMP unreachable) and where each node sent its flow.
  t.equal(r.failed, 0, `0 of 4,000 connections failed (${JSON.stringify(r.errors)})${r.failed ? `: ${failureReport(lab, r)}` : ''}`);
  t.same(r.drops, [0, 0, 0], `0 firewall drops${r.drops.some((d) => d) ? `: ${dropReport(lab, r)}` : ''}`);
}

/**
 * Each balancer node's count of conntrack entries it deleted because a later connection took their tuple elsewhere,
 * and of those it kept because they were a still later connection's: "deleted/kept".
 */
async function staleDeleted(lab: Lab): Promise<Record<string, [number, number]>> {
  const names = lab.balancerNames();
  const texts = await Promise.all(names.map((n) => lab.apiText(n, '/metrics')));
  const count = (text: string, name: string) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return Object.fromEntries(
    names.map((n, i) => [n, [count(texts[i], 'fwlb_conntrack_stale_deleted_total'), count(texts[i], 'fwlb_conntrack_later_kept_total')]]),
  );
}
