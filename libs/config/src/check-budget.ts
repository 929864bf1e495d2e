// What a set of VIPs asks of the node's health checks, against the node's check budget; pure layer of libs/config.
import type { ResolvedVip } from './slb-resolved';
import type { FieldProblem } from './errors';

/**
 * Health checks per second a node runs unless configured. Why here: on this 2-core VM the probe helper's median
 * check latency doubled (0.09 to 0.18 ms) at 8,000 ICMP checks/s, tripled at 12,000, and the helper fell behind what
 * was asked between 16,000 and 24,000 (`node bench/dist/slb-control.js capacity`). The default stays below the
 * doubling, with room for checks that cost more than ICMP (a TCP connect, an HTTP exchange).
 */
export const DEFAULT_CHECKS_PER_SECOND = 6_000;

/**
 * The check and timers a member is probed with: its L7 pool's where the pool sets them, else its VIP's. An HTTP check
 * of a member that expects the PROXY protocol on the port the check goes to starts with a health check's header.
 */
export function probeSpec(v: ResolvedVip, m: { pool?: string; port?: number; proxyProtocol?: 'v1' | 'v2' }): Pick<ResolvedVip, 'check' | 'timers'> {
  const p = m.pool !== undefined ? v.pools?.find((x) => x.name === m.pool) : undefined;
  const check = p?.check ?? v.check;
  const http = check.kind === 'http' || check.kind === 'http-content';
  const onItsPort = !('port' in check) || !check.port || check.port === m.port;
  return { check: m.proxyProtocol && http && onItsPort ? { ...check, proxy: m.proxyProtocol } : check, timers: p?.timers ?? v.timers };
}

/** The probe a member costs: a (RIP, port, check, timers) is probed once, however many VIPs share it. */
export function probeKey(v: ResolvedVip, m: { address: string; port: number; pool?: string; proxyProtocol?: 'v1' | 'v2' }): string {
  const { check, timers } = probeSpec(v, m);
  const port = 'port' in check && check.port ? check.port : m.port;
  return JSON.stringify([m.address, port, check, timers]);
}

/**
 * Each VIP's probes (key and shortest period), kept per frozen VIP: a change replaces the VIPs it touches, so the
 * demand of a table of 1,000 VIPs × 8 costs a change its own VIPs' keys, not 8,000 of them (a member `PATCH` spent
 * more on these keys than on its nft transaction).
 */
const probesOf = new WeakMap<ResolvedVip, readonly (readonly [string, number])[]>();

function vipProbes(v: ResolvedVip): readonly (readonly [string, number])[] {
  const known = probesOf.get(v);
  if (known) return known;
  const probes = v.members.map((m) => {
    const { timers } = probeSpec(v, m);
    return [probeKey(v, m), Math.min(timers.interval, timers.deadInterval ?? timers.interval)] as const;
  });
  if (Object.isFrozen(v)) probesOf.set(v, probes);
  return probes;
}

/**
 * Checks per second the VIPs ask for at most: each probe at its shortest period (`interval` while up or failing,
 * `deadInterval` while down).
 */
export function checkDemand(vips: readonly ResolvedVip[]): number {
  const periods = new Map<string, number>();
  for (const v of vips) for (const [key, period] of vipProbes(v)) periods.set(key, period);
  let sum = 0;
  for (const p of periods.values()) sum += 1000 / p;
  return sum;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

/**
 * A change from `before` to `after` that asks for more checks than `budget` and more than before: the problem,
 * naming the field of the first VIP that asks for more (its timers if they got shorter, else its members). A change
 * that does not add to the demand passes even over the budget, so an operator can always take load away.
 */
export function checkBudgetProblem(before: readonly ResolvedVip[], after: readonly ResolvedVip[], budget: number): FieldProblem | null {
  const want = checkDemand(after);
  if (want <= budget) return null;
  const had = checkDemand(before);
  if (want <= had) return null;
  const old = new Map(before.map((v) => [v.id, v]));
  const i = Math.max(
    0,
    after.findIndex((v) => old.get(v.id) !== v && checkDemand([v]) > (old.has(v.id) ? checkDemand([old.get(v.id)!]) : 0)),
  );
  const v = after[i];
  const prev = v && old.get(v.id);
  const field = v && prev && v.timers.interval < prev.timers.interval ? '/timers/interval' : '/members';
  return { field, message: overBudget(want, budget, had) };
}

/** The refusal's words: what is asked, the budget and where it is set, and what runs now. */
export function overBudget(want: number, budget: number, had?: number): string {
  return `${fmt(want)} health checks/s would exceed this node's budget of ${fmt(budget)} (checkBudget.checksPerSecond)${had !== undefined ? `; ${fmt(had)} now` : ''}`;
}
