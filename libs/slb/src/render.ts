// Renders the SLB tier's nft objects from its VIPs and member health, one VIP at a time; pure layer of libs/slb.
import type { ResolvedVip, ResolvedMember } from '@fwlb/config';
import { memberKey, probeKey } from '@fwlb/config';
import { bucketOf, familyOf, PROTO_TCP, PROTO_UDP } from '@fwlb/flowhash';
import type { NftJson } from '@fwlb/nft';
import { ruleDigest } from '@fwlb/nft';
import { inPanic } from './haproxy-render';
import { roundRobinSlots, sourceHashSlots, Weighted } from './schedule';

/**
 * The nft family of a table: IPv4 VIPs live in `ip <table>`, IPv6 VIPs in `ip6 <table>`. Why two tables and not
 * one `inet` table: every SLB object reads an address (the dispatch key, the pools, the counter keys), so an inet
 * table would hold two of each anyway; and the IPv4 table stays exactly as it was, so an upgrade migrates nothing.
 */
export type SlbFamily = 'ip' | 'ip6';
export const SLB_FAMILIES: readonly SlbFamily[] = ['ip', 'ip6'];
export const slbFamilyOf = (address: string): SlbFamily => (familyOf(address) === 6 ? 'ip6' : 'ip');
const addrType = (f: SlbFamily) => (f === 'ip6' ? 'ipv6_addr' : 'ipv4_addr');

const healthKeys = new WeakMap<ResolvedVip, Map<string, string>>();

/**
 * Health key: a (RIP, port, check, timers) is probed once, however many VIPs share it. Remembered per VIP object
 * (VIPs are immutable; a change makes a new one), so that /health and a health event do not stringify 8,000 checks.
 */
export function healthKey(v: ResolvedVip, m: { address: string; port: number; pool?: string; proxyProtocol?: 'v1' | 'v2' }): string {
  let keys = healthKeys.get(v);
  if (!keys) healthKeys.set(v, (keys = new Map()));
  const mk = memberKey(m);
  let k = keys.get(mk);
  if (k === undefined) keys.set(mk, (k = probeKey(v, m)));
  return k;
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
  return { enabled, healthy, panic: inPanic(v.panicThreshold, enabled.length, healthy.length) };
}

/** The slots of one VIP's map: member keys in slot order; empty when no member may take new sessions. */
export function vipSlots(v: ResolvedVip, live: ReadonlySet<string>): string[] {
  const weighted: Weighted[] = v.members.map((m) => ({ key: memberKey(m), weight: m.weight }));
  if (v.scheduler === 'sh' || v.scheduler === 'flow') return sourceHashSlots(weighted, live);
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
  /** Every L4 member's address . protocol . port: the sources of the replies `guard` watches for. */
  endpoints: 'member_eps',
  /** One-arm VIPs (`snat`): those that leave with the node's own address, and those given an address. */
  snatNode: 'snat_node',
  snatTo: 'snat_to',
} as const;

/**
 * The pools: VIP address . port . slot → RIP . port, one map per protocol. Why named maps and not an anonymous map
 * in each VIP's rule: nft fetches every set of the table, one netlink dump each, before any change, so with an
 * anonymous map per VIP every change cost more the more VIPs there were; two named maps keep that fetch small. Why
 * one map per protocol: the map's data (`ip daddr . tcp dport`) fixes the protocol for nft.
 */
export const backendMap = (protocol: 'tcp' | 'udp') => `be_${protocol}`;
/**
 * A `flow` VIP's pool: its own map, slot → RIP . port (a Maglev table per VIP). Why not a slot in `be_<protocol>`:
 * that map's key is `ip daddr . th dport . <slot>`, and nft cannot put the hash of a concatenation (the flow) inside
 * another concatenation; a map keyed by the hash alone can.
 */
export const flowMap = (id: string) => `f_${id}`;
export const isFlowMap = (name: string) => name.startsWith('f_');

/** A `flow` VIP's pool map declared in text (a `typeof` key and concatenated data, which nft 1.0.6's JSON cannot say). */
export function flowMapText(table: string, f: SlbFamily, id: string, protocol: 'tcp' | 'udp'): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(table)) throw new Error(`table name ${JSON.stringify(table)} is not an identifier`);
  if (!/^[a-z][a-z0-9_-]{0,62}$/.test(id)) throw new Error(`VIP id ${JSON.stringify(id)} is not an identifier`);
  return `add map ${f} ${table} ${flowMap(id)} { typeof numgen inc mod 2 : ${f} daddr . ${protocol} dport ; }\n`;
}

/** The type signature (as a listing shows it) of a `flow` VIP's pool map. */
export const flowMapType = (f: SlbFamily = 'ip') => ({ type: 'integer', map: `${addrType(f)} . inet_service` });
export const backendType = (f: SlbFamily = 'ip') => ({ type: [addrType(f), 'inet_service', 'integer'], map: `${addrType(f)} . inet_service` });

export const vipKeyType = (f: SlbFamily = 'ip') => [addrType(f), 'inet_proto', 'inet_service'];
export const memberKeyType = (f: SlbFamily = 'ip') => [...vipKeyType(f), addrType(f), 'inet_service'];
/** The most counter elements a set holds; beyond it, new members' packets pass uncounted. */
export const COUNTER_SET_SIZE = 262144;

/**
 * The objects declared in nft's text syntax, because nft 1.0.6's JSON cannot say them (the kernel notes): the pool
 * maps (a `typeof` key, concatenated data) and the counter sets (`flags dynamic`: a set that a rule `update`s must
 * be created dynamic; nft infers it only when the set and the rule come in the same batch, so a VIP added later
 * failed with "Operation not supported" on a set made without it).
 */
export type Declared = { name: string; kind: 'map' | 'set'; type: string[]; map?: string };
export const declared = (f: SlbFamily = 'ip'): Declared[] => [
  { name: backendMap('tcp'), kind: 'map', ...backendType(f) },
  { name: backendMap('udp'), kind: 'map', ...backendType(f) },
  { name: SLB_OBJECTS.vipNew, kind: 'set', type: vipKeyType(f) },
  { name: SLB_OBJECTS.memberNew, kind: 'set', type: memberKeyType(f) },
  { name: SLB_OBJECTS.memberPackets, kind: 'set', type: memberKeyType(f) },
];

/** The declarations as constant text: only the table name, a schema-checked identifier, is put in. */
export function declarationsText(table: string, f: SlbFamily = 'ip'): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(table)) throw new Error(`table name ${JSON.stringify(table)} is not an identifier`);
  const pool = (p: string) =>
    `add map ${f} ${table} ${backendMap(p as 'tcp')} { typeof ${f} daddr . ${p} dport . numgen inc mod 2 : ${f} daddr . ${p} dport ; }\n`;
  const counters = (name: string, type: string[]) =>
    `add set ${f} ${table} ${name} { type ${type.join(' . ')} ; size ${COUNTER_SET_SIZE} ; flags dynamic ; counter ; }\n`;
  return `add table ${f} ${table}\n${pool('tcp')}${pool('udp')}${declared(f)
    .filter((d) => d.kind === 'set')
    .map((d) => counters(d.name, d.type))
    .join('')}`;
}

export const vipChain = (id: string) => `v_${id}`;
export const isVipChain = (name: string) => name.startsWith('v_');

export type VipKey = [address: string, protocol: 'tcp' | 'udp', port: number];
/** A member endpoint's key in `member_eps` (the same JSON form as a VIP key). */
export const endpointKey = (address: string, protocol: 'tcp' | 'udp', port: number) => JSON.stringify([address, protocol, port]);

/** What one VIP puts in the kernel: its chain's one rule, its dispatch element and its pool's slots. */
export interface VipFragment {
  id: string;
  /** The table it lives in: the VIP address's family. */
  family: SlbFamily;
  chain: string;
  key: VipKey;
  rule: NftJson[];
  digest: string;
  /** Member keys (address:port) in slot order; empty when no member may take new sessions. */
  slots: string[];
  /** The map the slots live in: `be_<protocol>` (keyed by VIP and slot) or, for a `flow` VIP, its own (by slot). */
  pool: string;
  /** One-arm: absent, the node's own address (`{}`), or the address given. */
  snat: { address?: string } | null;
  /** Its members' endpoints as `endpointKey`s (every configured member, whatever its health). */
  endpoints: string[];
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
  const family = slbFamilyOf(v.address);
  const dport = payload(v.protocol, 'dport');
  const rule: NftJson[] = [
    eq(dport, v.port),
    { set: { op: 'update', elem: { concat: [payload(family, 'daddr'), { meta: { key: 'l4proto' } }, dport] }, set: `@${SLB_OBJECTS.vipNew}` } },
  ];
  if (slots.length) {
    if (v.scheduler === 'flow') {
      rule.push({ dnat: { family, addr: { map: { key: { jhash: { mod: slots.length, seed, expr: flowHashKey(family) } }, data: `@${flowMap(v.id)}` } } } });
    } else {
      const pick =
        v.scheduler === 'sh'
          ? { jhash: { mod: slots.length, seed, expr: payload(family, 'saddr') } }
          : { numgen: { mode: 'inc', mod: slots.length, offset: 0 } };
      rule.push({ dnat: { family, addr: { map: { key: { concat: [payload(family, 'daddr'), dport, pick] }, data: `@${backendMap(v.protocol)}` } } } });
    }
  }
  const poolMap = v.scheduler === 'flow' ? flowMap(v.id) : backendMap(v.protocol);
  const panic = p.panic ? { healthy: p.healthy.length, enabled: p.enabled.length } : null;
  const endpoints = v.members.map((m) => endpointKey(m.address, v.protocol, m.port));
  return {
    id: v.id,
    family,
    chain: vipChain(v.id),
    key: [v.address, v.protocol, v.port],
    rule,
    digest: ruleDigest(rule),
    slots,
    pool: poolMap,
    snat: v.snat ?? null,
    endpoints,
    panic,
  };
}

/**
 * What the `flow` scheduler hashes: the expressions the balancer's outside node hashes (`flowSlot` is their model).
 * The packet's own order is the connection's: only the client's packets reach the DNAT.
 */
const flowHashKey = (f: SlbFamily) => ({
  concat: [payload(f, 'saddr'), payload('th', 'sport'), payload(f, 'daddr'), payload('th', 'dport'), { meta: { key: 'l4proto' } }],
});

/**
 * The slot the kernel's `flow` rule picks for a connection: the model of `flowHashKey` (libs/flowhash's image of the
 * same concatenation). With `vipSlots`, the member any SLB node of the tier sends the connection to.
 */
export function flowSlot(c: { saddr: string; sport: number; daddr: string; dport: number; protocol: 'tcp' | 'udp' }, seed: number, slots: number): number {
  const proto = c.protocol === 'tcp' ? PROTO_TCP : PROTO_UDP;
  return bucketOf({ outerAddr: c.saddr, outerPort: c.sport, innerAddr: c.daddr, innerPort: c.dport, proto }, seed, slots);
}

/** The member counter key, ct-based so that both directions of a DNATed session count. */
const memberCounterKey = (f: SlbFamily) => ({
  concat: [
    { ct: { key: `${f} daddr`, dir: 'original' } },
    { meta: { key: 'l4proto' } },
    { ct: { key: 'proto-dst', dir: 'original' } },
    { ct: { key: `${f} saddr`, dir: 'reply' } },
    { ct: { key: 'proto-src', dir: 'reply' } },
  ],
});

export interface BaseChain {
  name: string;
  type: 'nat' | 'filter';
  hook: 'prerouting' | 'forward' | 'postrouting';
  prio: number;
  rules: NftJson[][];
}

/**
 * The fixed chains: `dnat` at prerouting (one vmap lookup into the dispatch map) and `count` at forward, which
 * counts each member's sessions in the counter sets with one set update per packet (nft needs the protocol matched
 * before `ct proto-dst` has a type, hence one rule per protocol).
 */
export function baseChains(f: SlbFamily = 'ip'): BaseChain[] {
  const dispatch = { vmap: { key: { concat: [payload(f, 'daddr'), { meta: { key: 'l4proto' } }, payload('th', 'dport')] }, data: `@${SLB_OBJECTS.dispatch}` } };
  const count = (['tcp', 'udp'] as const).flatMap((p) => [
    [
      eq({ meta: { key: 'l4proto' } }, p),
      { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'new' } },
      { set: { op: 'update', elem: memberCounterKey(f), set: `@${SLB_OBJECTS.memberNew}` } },
    ],
    [eq({ meta: { key: 'l4proto' } }, p), { set: { op: 'update', elem: memberCounterKey(f), set: `@${SLB_OBJECTS.memberPackets}` } }],
  ]);
  const fromMember = {
    match: { op: '==', left: { concat: [payload(f, 'saddr'), { meta: { key: 'l4proto' } }, payload('th', 'sport')] }, right: `@${SLB_OBJECTS.endpoints}` },
  };
  const isNew = { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'new' } };
  // One-arm VIPs, by the connection's original destination (the VIP; nft needs the protocol matched before
  // `ct original proto-dst` has a type, hence a pair of rules per protocol).
  const vipOfConn = { concat: [{ ct: { key: `${f} daddr`, dir: 'original' } }, { meta: { key: 'l4proto' } }, { ct: { key: 'proto-dst', dir: 'original' } }] };
  const snat = (['tcp', 'udp'] as const).flatMap((p) => [
    [eq({ meta: { key: 'l4proto' } }, p), { match: { op: '==', left: vipOfConn, right: `@${SLB_OBJECTS.snatNode}` } }, { masquerade: null }],
    [eq({ meta: { key: 'l4proto' } }, p), { snat: { family: f, addr: { map: { key: vipOfConn, data: `@${SLB_OBJECTS.snatTo}` } } } }],
  ]);
  const guard = [
    [
      eq({ meta: { key: 'l4proto' } }, 'tcp'),
      isNew,
      { match: { op: '!=', left: { '&': [payload('tcp', 'flags'), ['syn', 'ack']] }, right: 'syn' } },
      fromMember,
      { counter: null },
      { drop: null },
    ],
    [eq({ meta: { key: 'l4proto' } }, 'udp'), isNew, fromMember, { counter: null }, { drop: null }],
  ];
  return [
    // An answer (from a member's endpoint, anything but a bare SYN: a SYN-ACK too) that meets no connection here belongs to a connection another SLB
    // node translated, or whose entry this node lost. Dropped before conntrack confirms it: let through, it would
    // leave untranslated (the client would see the member's address) and its entry, in the reply's orientation,
    // would keep the client's next packet from being translated here (the two tuples clash). The client's next
    // packet makes the connection's entry (the DNAT picks the same member under `flow` or `sh`), and the member's
    // retransmission then finds it. After conntrack (-200), before the DNAT (-100).
    { name: 'guard', type: 'filter', hook: 'prerouting', prio: -150, rules: guard },
    { name: 'dnat', type: 'nat', hook: 'prerouting', prio: -100, rules: [[dispatch]] },
    { name: 'count', type: 'filter', hook: 'forward', prio: 0, rules: count },
    { name: 'onearm', type: 'nat', hook: 'postrouting', prio: 100, rules: snat },
  ];
}

/** The fixed maps and sets declared in JSON: name → [key type, map value type, or null for a set]. */
export function baseSets(f: SlbFamily = 'ip'): Map<string, [string[], string | null]> {
  return new Map<string, [string[], string | null]>([
    [SLB_OBJECTS.dispatch, [vipKeyType(f), 'verdict']],
    [SLB_OBJECTS.endpoints, [vipKeyType(f), null]],
    [SLB_OBJECTS.snatNode, [vipKeyType(f), null]],
    [SLB_OBJECTS.snatTo, [vipKeyType(f), addrType(f)]],
  ]);
}
