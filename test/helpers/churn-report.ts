// Test helper: what a churn test prints when a connection failed or a firewall dropped, the same in every lab test
// that drives one: when, what changed around then (the churn's timeline), who refused, and where each node sent the flow.
import { writeFileSync } from 'node:fs';
import { ChurnResult, ECHO_PORT, Lab } from '@fwlb/lab';
import { bucketOf, buildGroupedTable, canonicalKey, PROTO_TCP, splitHostPort } from '@fwlb/flowhash';

/** A time relative to `now`, as "-3.2 s". */
export const agoFrom = (now: number) => (at: number) => `-${((now - at) / 1000).toFixed(1)} s`;

/** The churn's events from `before` ms ahead of the first of `times` to `after` ms past the last. */
function eventsAround(r: ChurnResult, times: number[], before: number, after: number, ago: (at: number) => string): string[] {
  return r.events.filter((e) => e.at >= Math.min(...times) - before && e.at <= Math.max(...times) + after).map((e) => `${ago(e.at)} ${e.what}`);
}

/** Why connections failed: when, the changes around then, the ICMP unreachables, and the first failed flows' paths. */
export function failureReport(lab: Lab, r: ChurnResult): string {
  const ago = agoFrom(Date.now());
  // With FWLB_FAULTS_REPORT, every failure and event with its clock time goes to FILE.failed, beside the node logs.
  if (process.env.FWLB_FAULTS_REPORT) {
    const iso = (at: number) => new Date(at).toISOString();
    const failed = r.failedAt.map((at, i) => `${iso(at)} ${r.failedFlows[i]}`);
    writeFileSync(`${process.env.FWLB_FAULTS_REPORT}.failed`, JSON.stringify({ failed, events: r.events.map((e) => `${iso(e.at)} ${e.what}`) }, null, 1));
  }
  return JSON.stringify({
    failed: r.failedAt.slice(0, 5).map((at, i) => `${ago(at)} ${r.failedFlows[i]}`),
    events: eventsAround(r, r.failedAt, 5000, 1000, ago),
    unreachables: lab.unreachables().slice(0, 10),
    flows: lab.flowTraces(r.failedPorts.slice(0, 5), ECHO_PORT),
    refusals: r.adminRefusals.slice(0, 10),
  });
}

/**
 * Where the drops were: each flow, when (the drop set remembers its first), where each node sent it (with
 * `traceFlowExits`), and what happened around then. With FWLB_FAULTS_REPORT, the whole of it goes to that file too.
 */
export function dropReport(lab: Lab, r: ChurnResult): string {
  const drops = lab.firewallDropFlows();
  const now = Date.now();
  const dropAt = drops.map((d) => now - 1000 * Number(/\((\d+) s ago\)/.exec(d)?.[1] ?? 0));
  const ports = [...new Set(drops.flatMap((d) => [...d.matchAll(/:(\d+)/g)].map((m) => Number(m[1]))).filter((p) => p !== ECHO_PORT))].slice(0, 6);
  const report = {
    drops,
    events: eventsAround(r, dropAt, 6000, 2000, agoFrom(now)),
    exits: lab.flowExits(ports),
    refusals: r.adminRefusals.slice(0, 10),
  };
  if (process.env.FWLB_FAULTS_REPORT) writeFileSync(process.env.FWLB_FAULTS_REPORT, JSON.stringify(report, null, 1));
  return JSON.stringify({ ...report, drops: drops.slice(0, 12) });
}

/** A failed connection, and the documented limit that explains it (or none). */
export interface FailedConnection {
  flow: string;
  /** When it started (ms since the epoch). */
  at: number;
  why: string | null;
}

/**
 * How far before a switch second a connection may start and still have its SYN hashed by the table before it (the
 * client's connect call and the path to the node take that long at most on a busy lab machine), and how far after.
 */
const STRADDLE_BEFORE_MS = 250;
const STRADDLE_AFTER_MS = 20;

/**
 * Sorts the churn's failed connections by the limits docs/limits.md states, from the churn's own timeline:
 * - "a handshake across the switch second": it started just before a second the nodes switched tables at (its SYN
 *   hashed by the table before, its SYN-ACK on a node that did not see it by the table after), and its bucket is one
 *   that `firewall`'s toggling moves;
 * - "a controller down across a change's second": a node's controller was stopping or stopped at a switch second
 *   (the fault's "X stopping", "X stopped" and "X answers" notes: a stop closes the API first, so from its start the
 *   node refuses a change, and one it cannot read from the shared table meanwhile waits for its next start), and the
 *   connection started between just before that second and a second after the controller answered again.
 * Anything else has no explanation: the caller fails on it.
 */
export function explainFailures(lab: Lab, r: ChurnResult, firewall: string): FailedConnection[] {
  const cfg = Object.values(lab.t.balancers).find((b) => b.role === 'outside')!;
  const ids = cfg.firewalls.map((f) => f.id);
  const { seed, buckets } = cfg.hash as { seed: number; buckets: number };
  const withIt = buildGroupedTable(ids, buckets, ids, []);
  const without = buildGroupedTable(
    ids,
    buckets,
    ids.filter((id) => id !== firewall),
    [],
  );
  const moved = (flow: string) => {
    const [saddr, port] = splitHostPort(flow);
    const b = bucketOf(canonicalKey('outside', { saddr, sport: port, daddr: lab.t.vip, dport: ECHO_PORT, proto: PROTO_TCP }), seed, buckets);
    return withIt.owner[b] !== without.owner[b];
  };
  // Each controller's time away: from the start of its stop to its answering again.
  const away: { node: string; from: number; to: number }[] = [];
  for (const e of r.events) {
    const stopped = /^(\S+) (stopping|stopped)$/.exec(e.what);
    if (stopped && !away.some((a) => a.node === stopped[1] && a.to === Infinity)) away.push({ node: stopped[1], from: e.at, to: Infinity });
    const back = /^(\S+) answers$/.exec(e.what);
    const open = back && away.find((a) => a.node === back[1] && a.to === Infinity);
    if (open) open.to = e.at;
  }
  return r.failedAt.map((at, i) => {
    const flow = r.failedFlows[i];
    const straddled = r.switches.find((s) => at >= s - STRADDLE_BEFORE_MS && at <= s + STRADDLE_AFTER_MS);
    if (straddled !== undefined && moved(flow))
      return { flow, at, why: `a handshake across the switch second, started ${Math.abs(straddled - at)} ms ${at <= straddled ? 'before' : 'after'} it` };
    for (const sw of r.switches) {
      const a = away.find((x) => x.from < sw && x.to > sw && at >= sw - STRADDLE_BEFORE_MS && at <= x.to + 1000);
      if (a) return { flow, at, why: `${a.node}'s controller down across the switch second (${a.to - a.from} ms away)` };
    }
    return { flow, at, why: null };
  });
}
