// Renders the SLB tier's desired nft table from its VIPs and member health; pure layer of apps/slb.
import type { ResolvedVip, ResolvedMember } from '@fwlb/config';
import { memberKey } from '@fwlb/config';
import type { DesiredTable, NftJson } from '@fwlb/nft';
import { roundRobinSlots, sourceHashSlots, Weighted } from './schedule';

export const SLB_FAMILY = 'ip' as const;

/** Health key: a (RIP, port, check, timers) is probed once, however many VIPs share it. */
export function healthKey(v: ResolvedVip, m: { address: string; port: number }): string {
  const port = 'port' in v.check && v.check.port ? v.check.port : m.port;
  return JSON.stringify([m.address, port, v.check, v.timers]);
}

/** A member takes new sessions only when it is enabled (not drained) and its health is up. */
export function liveMembers(v: ResolvedVip, up: (healthKey: string) => boolean): ResolvedMember[] {
  const p = pool(v, up);
  // Panic (fail open): too few members look up to believe the checks; every enabled member takes new sessions.
  return p.panic ? p.enabled : p.healthy;
}

/** A pool's enabled members, those of them up, and whether that is below its panic threshold. */
export function pool(v: ResolvedVip, up: (healthKey: string) => boolean): { enabled: ResolvedMember[]; healthy: ResolvedMember[]; panic: boolean } {
  const enabled = v.members.filter((m) => m.state === 'enabled');
  const healthy = enabled.filter((m) => up(healthKey(v, m)));
  return { enabled, healthy, panic: v.panicThreshold > 0 && enabled.length > 0 && healthy.length < v.panicThreshold * enabled.length };
}

const ident = (s: string) => s.replace(/[^A-Za-z0-9]/g, '_');
export const vipCounter = (v: { id: string }) => `vip_${ident(v.id)}`;
export const memberCounter = (v: { id: string }, m: { address: string; port: number }) => `m_${ident(v.id)}_${ident(m.address)}_${m.port}`;
export const memberNewCounter = (v: { id: string }, m: { address: string; port: number }) => `n_${ident(v.id)}_${ident(m.address)}_${m.port}`;

const eq = (left: NftJson, right: NftJson) => ({ match: { op: '==', left, right } });

/** The slots of one VIP's map: member keys in slot order; empty when no member may take new sessions. */
export function vipSlots(v: ResolvedVip, live: ReadonlySet<string>): string[] {
  const weighted: Weighted[] = v.members.map((m) => ({ key: memberKey(m), weight: m.weight }));
  if (v.scheduler === 'sh') return sourceHashSlots(weighted, live);
  return roundRobinSlots(weighted.filter((m) => live.has(m.key)));
}

function dnatRule(v: ResolvedVip, slots: string[], seed: number): NftJson[] {
  const match = [eq({ payload: { protocol: 'ip', field: 'daddr' } }, v.address), eq({ payload: { protocol: v.protocol, field: 'dport' } }, v.port), { counter: vipCounter(v) }];
  // No live member: no DNAT, so the packet reaches the SLB node's own stack, which answers RST (TCP) or port unreachable (UDP).
  if (slots.length === 0) return match;
  const key =
    v.scheduler === 'sh'
      ? { jhash: { mod: slots.length, seed, expr: { payload: { protocol: 'ip', field: 'saddr' } } } }
      : { numgen: { mode: 'inc', mod: slots.length, offset: 0 } };
  const data = slots.map((k, i) => {
    const at = k.lastIndexOf(':');
    return [i, { concat: [k.slice(0, at), Number(k.slice(at + 1))] }];
  });
  return [...match, { dnat: { family: 'ip', addr: { map: { key, data: { set: data } } } } }];
}

function countRules(v: ResolvedVip, m: ResolvedMember): NftJson[][] {
  const flow = [
    eq({ ct: { key: 'protocol' } }, v.protocol),
    eq({ ct: { key: 'ip daddr', dir: 'original' } }, v.address),
    eq({ ct: { key: 'proto-dst', dir: 'original' } }, v.port),
    eq({ ct: { key: 'ip saddr', dir: 'reply' } }, m.address),
    eq({ ct: { key: 'proto-src', dir: 'reply' } }, m.port),
  ];
  return [
    [...flow, eq({ ct: { key: 'state' } }, 'new'), { counter: memberNewCounter(v, m) }],
    [...flow, { counter: memberCounter(v, m) }],
  ];
}

export interface SlbRenderInput {
  table: string;
  seed: number;
  vips: readonly ResolvedVip[];
  up: (healthKey: string) => boolean;
}

/**
 * One table: a `dnat` chain at prerouting (one rule per VIP, each with its whole pool in an anonymous map, so a
 * pool change rewrites one chain in one transaction) and a `count` chain at forward that counts each member's
 * packets and new sessions in named counters, which survive chain rewrites.
 */
export function renderSlb(i: SlbRenderInput): DesiredTable & { slots: Map<string, string[]> } {
  const vips = [...i.vips].sort((a, b) => a.id.localeCompare(b.id));
  const slots = new Map<string, string[]>();
  const counters: string[] = [];
  const dnat: NftJson[][] = [];
  const count: NftJson[][] = [];
  for (const v of vips) {
    const live = new Set(liveMembers(v, i.up).map(memberKey));
    const s = vipSlots(v, live);
    slots.set(v.id, s);
    dnat.push(dnatRule(v, s, i.seed));
    counters.push(vipCounter(v));
    for (const m of v.members) {
      counters.push(memberNewCounter(v, m), memberCounter(v, m));
      count.push(...countRules(v, m));
    }
  }
  return {
    family: SLB_FAMILY,
    name: i.table,
    maps: [],
    counters,
    chains: [
      { name: 'dnat', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept', rules: dnat },
      { name: 'count', type: 'filter', hook: 'forward', prio: 0, policy: 'accept', rules: count },
    ],
    slots,
  };
}
