// Renders the SLB tier's nft objects from its VIPs and member health, one VIP at a time; pure layer of libs/slb.
import type { ResolvedVip, ResolvedMember } from '@fwlb/config';
import { memberKey } from '@fwlb/config';
import type { NftJson } from '@fwlb/nft';
import { ruleDigest } from '@fwlb/nft';
import { roundRobinSlots, sourceHashSlots, Weighted } from './schedule';

export const SLB_FAMILY = 'ip' as const;

const healthKeys = new WeakMap<ResolvedVip, Map<string, string>>();

/**
 * Health key: a (RIP, port, check, timers) is probed once, however many VIPs share it. Remembered per VIP object
 * (VIPs are immutable; a change makes a new one), so that /health and a health event do not stringify 8,000 checks.
 */
export function healthKey(v: ResolvedVip, m: { address: string; port: number; pool?: string }): string {
  let keys = healthKeys.get(v);
  if (!keys) healthKeys.set(v, (keys = new Map()));
  const mk = memberKey(m);
  let k = keys.get(mk);
  if (k === undefined) {
    const { check, timers } = probeSpec(v, m);
    const port = 'port' in check && check.port ? check.port : m.port;
    keys.set(mk, (k = JSON.stringify([m.address, port, check, timers])));
  }
  return k;
}

/** The check and timers a member is probed with: its L7 pool's where the pool sets them, else its VIP's. */
export function probeSpec(v: ResolvedVip, m: { pool?: string }): Pick<ResolvedVip, 'check' | 'timers'> {
  const p = m.pool !== undefined ? v.pools?.find((x) => x.name === m.pool) : undefined;
  return { check: p?.check ?? v.check, timers: p?.timers ?? v.timers };
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

/** The slots of one VIP's map: member keys in slot order; empty when no member may take new sessions. */
export function vipSlots(v: ResolvedVip, live: ReadonlySet<string>): string[] {
  const weighted: Weighted[] = v.members.map((m) => ({ key: memberKey(m), weight: m.weight }));
  if (v.scheduler === 'sh') return sourceHashSlots(weighted, live);
  return roundRobinSlots(weighted.filter((m) => live.has(m.key)));
}

/**
 * The table's fixed objects. Why sets with per-element counters instead of named counter objects: 1,000 VIPs × 8
 * members made 17,000 counter objects, and every read of the table listed them all; the kernel creates a set element
 * (with its counter) on a flow's first packet, and a terse listing (`nft -t`) leaves the elements out.
 */
export const SLB_OBJECTS = {
  /** VIP address . protocol . port → `jump v_<id>`: the dispatch; one lookup per new connection. */
  dispatch: 'vips',
  /** New sessions per VIP (updated in the VIP's chain, which the nat hook runs for a connection's first packet). */
  vipNew: 'vip_new',
  /** New sessions and packets per member, keyed VIP address . protocol . port . RIP . port (both directions). */
  memberNew: 'member_new',
  memberPackets: 'member_pkt',
} as const;

/**
 * The pools: VIP address . port . slot → RIP . port, one map per protocol. Why named maps and not an anonymous map
 * in each VIP's rule: nft fetches every set of the table, one netlink dump each, before any change, so with an
 * anonymous map per VIP every change cost more the more VIPs there were; two named maps keep that fetch small. Why one map per protocol: the map's data (`ip daddr . tcp dport`) fixes the protocol for nft.
 */
export const backendMap = (protocol: 'tcp' | 'udp') => `be_${protocol}`;
export const BACKEND_TYPE = { type: ['ipv4_addr', 'inet_service', 'integer'], map: 'ipv4_addr . inet_service' };

export const VIP_KEY_TYPE = ['ipv4_addr', 'inet_proto', 'inet_service'];
export const MEMBER_KEY_TYPE = [...VIP_KEY_TYPE, 'ipv4_addr', 'inet_service'];
/** The most counter elements a set holds; beyond it, new members' packets pass uncounted. */
export const COUNTER_SET_SIZE = 262144;

/**
 * The objects declared in nft's text syntax, because nft 1.0.6's JSON cannot say them (the kernel notes): the pool
 * maps (a `typeof` key, concatenated data) and the counter sets (`flags dynamic`: a set that a rule `update`s must
 * be created dynamic; nft infers it only when the set and the rule come in the same batch, so a VIP added later
 * failed with "Operation not supported" on a set made without it).
 */
export const DECLARED: readonly { name: string; kind: 'map' | 'set'; type: string[]; map?: string }[] = [
  { name: backendMap('tcp'), kind: 'map', ...BACKEND_TYPE },
  { name: backendMap('udp'), kind: 'map', ...BACKEND_TYPE },
  { name: SLB_OBJECTS.vipNew, kind: 'set', type: VIP_KEY_TYPE },
  { name: SLB_OBJECTS.memberNew, kind: 'set', type: MEMBER_KEY_TYPE },
  { name: SLB_OBJECTS.memberPackets, kind: 'set', type: MEMBER_KEY_TYPE },
];

/** The declarations as constant text: only the table name, a schema-checked identifier, is put in. */
export function declarationsText(table: string): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(table)) throw new Error(`table name ${JSON.stringify(table)} is not an identifier`);
  const pool = (p: string) => `add map ip ${table} ${backendMap(p as 'tcp')} { typeof ip daddr . ${p} dport . numgen inc mod 2 : ip daddr . ${p} dport ; }\n`;
  const counters = (name: string, type: string[]) => `add set ip ${table} ${name} { type ${type.join(' . ')} ; size ${COUNTER_SET_SIZE} ; flags dynamic ; counter ; }\n`;
  return `add table ip ${table}\n${pool('tcp')}${pool('udp')}${DECLARED.filter((d) => d.kind === 'set').map((d) => counters(d.name, d.type)).join('')}`;
}

export const vipChain = (id: string) => `v_${id}`;
export const isVipChain = (name: string) => name.startsWith('v_');

export type VipKey = [address: string, protocol: 'tcp' | 'udp', port: number];

/** What one VIP puts in the kernel: its chain's one rule, its dispatch element and its pool's slots. */
export interface VipFragment {
  id: string;
  chain: string;
  key: VipKey;
  rule: NftJson[];
  digest: string;
  /** Member keys (address:port) in slot order; empty when no member may take new sessions. */
  slots: string[];
  /** Set while the pool is in panic: members up and enabled. */
  panic: { healthy: number; enabled: number } | null;
}

const eq = (left: NftJson, right: NftJson) => ({ match: { op: '==', left, right } });
const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });

/**
 * One VIP: a rule that counts the VIP's new session and DNATs to the slot its scheduler picks in the pool map; the
 * rule changes only with the number of slots, a member change is pool elements. No live member: no DNAT, so the
 * packet reaches the SLB node's own stack, which answers RST (TCP) or port unreachable (UDP).
 */
export function renderVip(v: ResolvedVip, up: (healthKey: string) => boolean, seed: number): VipFragment {
  const p = pool(v, up);
  const live = new Set((p.panic ? p.enabled : p.healthy).map(memberKey));
  const slots = vipSlots(v, live);
  const dport = payload(v.protocol, 'dport');
  const rule: NftJson[] = [eq(dport, v.port), { set: { op: 'update', elem: { concat: [payload('ip', 'daddr'), { meta: { key: 'l4proto' } }, dport] }, set: `@${SLB_OBJECTS.vipNew}` } }];
  if (slots.length) {
    const pick =
      v.scheduler === 'sh'
        ? { jhash: { mod: slots.length, seed, expr: payload('ip', 'saddr') } }
        : { numgen: { mode: 'inc', mod: slots.length, offset: 0 } };
    rule.push({ dnat: { family: 'ip', addr: { map: { key: { concat: [payload('ip', 'daddr'), dport, pick] }, data: `@${backendMap(v.protocol)}` } } } });
  }
  const panic = p.panic ? { healthy: p.healthy.length, enabled: p.enabled.length } : null;
  return { id: v.id, chain: vipChain(v.id), key: [v.address, v.protocol, v.port], rule, digest: ruleDigest(rule), slots, panic };
}

/** The member counter key, ct-based so that both directions of a DNATed session count. */
const memberCounterKey = () => ({
  concat: [{ ct: { key: 'ip daddr', dir: 'original' } }, { meta: { key: 'l4proto' } }, { ct: { key: 'proto-dst', dir: 'original' } }, { ct: { key: 'ip saddr', dir: 'reply' } }, { ct: { key: 'proto-src', dir: 'reply' } }],
});

export interface BaseChain {
  name: string;
  type: 'nat' | 'filter';
  hook: 'prerouting' | 'forward';
  prio: number;
  rules: NftJson[][];
}

/**
 * The fixed chains: `dnat` at prerouting (one vmap lookup into the dispatch map) and `count` at forward, which
 * counts each member's sessions in the counter sets with one set update per packet (nft needs the protocol matched
 * before `ct proto-dst` has a type, hence one rule per protocol).
 */
export function baseChains(): BaseChain[] {
  const dispatch = { vmap: { key: { concat: [payload('ip', 'daddr'), { meta: { key: 'l4proto' } }, payload('th', 'dport')] }, data: `@${SLB_OBJECTS.dispatch}` } };
  const count = (['tcp', 'udp'] as const).flatMap((p) => [
    [eq({ meta: { key: 'l4proto' } }, p), { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'new' } }, { set: { op: 'update', elem: memberCounterKey(), set: `@${SLB_OBJECTS.memberNew}` } }],
    [eq({ meta: { key: 'l4proto' } }, p), { set: { op: 'update', elem: memberCounterKey(), set: `@${SLB_OBJECTS.memberPackets}` } }],
  ]);
  return [
    { name: 'dnat', type: 'nat', hook: 'prerouting', prio: -100, rules: [[dispatch]] },
    { name: 'count', type: 'filter', hook: 'forward', prio: 0, rules: count },
  ];
}

/** The fixed maps declared in JSON: name → [key type, map value type]. */
export function baseSets(): Map<string, [string[], string | null]> {
  return new Map<string, [string[], string | null]>([[SLB_OBJECTS.dispatch, [VIP_KEY_TYPE, 'verdict']]]);
}
