// Test helper: what a churn test prints when a connection failed or a firewall dropped, the same in every lab test
// that drives one: when, what changed around then (the churn's timeline), who refused, and where each node sent the flow.
import { writeFileSync } from 'node:fs';
import { ChurnResult, ECHO_PORT, Lab } from '@fwlb/lab';

/** A time relative to `now`, as "-3.2 s". */
const agoFrom = (now: number) => (at: number) => `-${((now - at) / 1000).toFixed(1)} s`;

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
