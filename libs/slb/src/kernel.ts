// The SLB table as the controller knows it: parsed from a terse listing, the declarations' models, and the counters
// read from the counter sets. The transaction that brings it to the desired VIPs is kernel-diff.ts, what a transaction
// does to it kernel-model.ts. Pure layer of libs/slb.
import type { NftJson } from '@fwlb/nft';
import type { ResolvedVip } from '@fwlb/config';
import { memberKey } from '@fwlb/config';
import { canonicalOrNull, hostPort } from '@fwlb/flowhash';
import {
  backendMap,
  declared,
  flowMap,
  flowMapType,
  isFlowMap,
  SLB_FAMILIES,
  SlbFamily,
  slbFamilyOf,
  SLB_OBJECTS,
  vipChain,
  VipFragment,
  VipKey,
} from './render';

type Cmd = Record<string, any>;

export interface KernelChain {
  type?: string;
  hook?: string;
  prio?: number;
  policy?: string;
  /** The rules' digest comments, in order. */
  digests: (string | undefined)[];
}

/** What reconcile compares, and what a restart adopts (which members were in their VIP's DNAT map). */
export interface SlbKernelState {
  handle: number;
  /** Sets and maps by name: JSON of [key type, map value type or null]. */
  sets: Map<string, string>;
  chains: Map<string, KernelChain>;
  /** Dispatch map: JSON of the VIP key → the chain it jumps to. */
  dispatch: Map<string, string>;
  /** Pool maps: JSON of the VIP key → slot → member (address:port). */
  pools: Map<string, Map<number, string>>;
  /** `flow` VIPs' pool maps: map name → slot → member (address:port). */
  flowPools: Map<string, Map<number, string>>;
  /** The member endpoints set (`endpointKey`s). */
  endpoints: Set<string>;
  /** One-arm VIPs (VIP keys): leaving with the node's address, and with an address given (→ that address). */
  snatNode: Set<string>;
  snatTo: Map<string, string>;
  /** Named counter objects (left by earlier versions; reconcile removes them). */
  counters: string[];
}

export const vipKeyString = (k: readonly unknown[]) => JSON.stringify(k);
/**
 * An IPv6 address as nft printed it, in the form the config holds (RFC 5952); anything else as found. Only strings
 * with a colon are parsed: IPv4 addresses print in their one form, and a failed parse of every `tcp` element of a
 * large listing (an exception each) cost about 5 µs apiece.
 */
export const canon = (x: unknown) => (typeof x === 'string' && x.includes(':') ? (canonicalOrNull(x) ?? x) : x);
/** A key read from the kernel: its address fields (strings that parse as addresses) in canonical form. */
export const keyOf = (k: readonly unknown[]) => vipKeyString(k.map(canon));
export const typeSig = (type: unknown, map: unknown) => JSON.stringify([type, map ?? null]);

export const PROTOCOLS = ['tcp', 'udp'] as const;

/** The members in a VIP's pool (address:port, in slot order): a restart's last known health. `flow`: its map's name. */
export function poolTargets(st: SlbKernelState | null, key: VipKey, flow?: string): string[] {
  const pool = flow ? st?.flowPools.get(flow) : st?.pools.get(vipKeyString(key));
  return pool ? [...pool].sort((a, b) => a[0] - b[0]).map(([, m]) => m) : [];
}

export const emptyState = (handle: number): SlbKernelState => ({
  handle,
  sets: new Map(),
  chains: new Map(),
  dispatch: new Map(),
  pools: new Map(),
  flowPools: new Map(),
  endpoints: new Set(),
  snatNode: new Set(),
  snatTo: new Map(),
  counters: [],
});

/**
 * A restart's last known health of a VIP's members, as the kernel keeps it: a member in the VIP's DNAT map was up, an
 * enabled member missing from it was down (it gets no traffic until it passes `rise` checks). A VIP the kernel never
 * had (a fresh node) counts as up until its checks say otherwise, so a first start changes nothing either; a
 * draining member is never in the map and was up.
 */
export function adoptedHealth(have: SlbTables, v: ResolvedVip): (m: { address: string; port: number }) => 'up' | 'down' {
  const table = have[slbFamilyOf(v.address)];
  if (!table?.chains.has(vipChain(v.id))) return () => 'up';
  const inPool = new Set(poolTargets(table, [v.address, v.protocol, v.port], v.scheduler === 'flow' ? flowMap(v.id) : undefined));
  return (m) => {
    const member = v.members.find((x) => x.address === m.address && x.port === m.port);
    return member?.state === 'drain' || inPool.has(memberKey(m)) ? 'up' : 'down';
  };
}

/** The JSON commands that stand for `declarationsText` in the model (the real kernel gets the text). */
export function declarationsModel(table: string, f: SlbFamily = 'ip'): NftJson[] {
  return [
    { add: { table: { family: f, name: table } } },
    ...declared(f).map((d) => ({ add: { [d.kind]: { family: f, table, name: d.name, type: d.type, ...(d.map ? { map: d.map } : {}) } } })),
  ];
}

/** The JSON commands that stand for `flowMapText` in the model. */
export function flowMapModel(table: string, f: SlbFamily, id: string): NftJson {
  return { add: { map: { family: f, table, name: flowMap(id), ...flowMapType(f) } } };
}

/** Every declared map and set exists with its type (else the service declares them before its JSON transaction). */
export function hasDeclarations(st: SlbKernelState | null, f: SlbFamily = 'ip'): boolean {
  return declared(f).every((d) => st?.sets.get(d.name) === typeSig(d.type, d.map ?? null));
}

/**
 * `nft -t -j list table` (terse: no set elements) plus `nft -j list map` of the dispatch and pool maps → the state;
 * null when there is no table. Anything the listing holds that fwlb did not write is kept as found, so that
 * reconcile removes or rewrites it.
 */
export function parseSlbListing(terse: unknown, mapListings: readonly unknown[]): SlbKernelState | null {
  const items = (terse as { nftables?: any[] } | null)?.nftables;
  const table = items?.find((it) => it?.table)?.table;
  if (!items || typeof table?.handle !== 'number') return null;
  const st = emptyState(table.handle);
  for (const it of items) {
    if (it.set) st.sets.set(it.set.name, typeSig(it.set.type, null));
    else if (it.map) st.sets.set(it.map.name, typeSig(it.map.type, it.map.map));
    else if (it.counter && typeof it.counter.name === 'string') st.counters.push(it.counter.name);
    else if (it.chain) st.chains.set(it.chain.name, { type: it.chain.type, hook: it.chain.hook, prio: it.chain.prio, policy: it.chain.policy, digests: [] });
    else if (it.rule) st.chains.get(it.rule.chain)?.digests.push(typeof it.rule.comment === 'string' ? it.rule.comment : undefined);
  }
  for (const listing of mapListings) {
    for (const it of (listing as { nftables?: any[] } | null)?.nftables ?? []) {
      if ((it?.set?.name === SLB_OBJECTS.endpoints || it?.set?.name === SLB_OBJECTS.snatNode) && Array.isArray(it.set.elem)) {
        const into = it.set.name === SLB_OBJECTS.endpoints ? st.endpoints : st.snatNode;
        for (const e of it.set.elem) if (Array.isArray(e?.concat)) into.add(keyOf(e.concat));
        continue;
      }
      if (it?.map?.name === SLB_OBJECTS.snatTo && Array.isArray(it.map.elem)) {
        for (const e of it.map.elem) if (Array.isArray(e?.[0]?.concat)) st.snatTo.set(keyOf(e[0].concat), String(canon(e[1])));
        continue;
      }
      const m = it?.map;
      if (!m || !Array.isArray(m.elem)) continue;
      if (isFlowMap(m.name)) {
        const pool = new Map<number, string>();
        for (const e of m.elem) if (typeof e?.[0] === 'number' && Array.isArray(e?.[1]?.concat)) pool.set(e[0], memberOfData(e[1]));
        st.flowPools.set(m.name, pool);
        continue;
      }
      const proto = PROTOCOLS.find((p) => backendMap(p) === m.name);
      for (const e of m.elem) {
        const key = e?.[0]?.concat;
        if (!Array.isArray(key)) continue;
        if (m.name === SLB_OBJECTS.dispatch) {
          const target = e?.[1]?.jump?.target ?? e?.[1]?.goto?.target;
          if (typeof target === 'string') st.dispatch.set(keyOf(key), target);
        } else if (proto && key.length === 3 && Array.isArray(e?.[1]?.concat)) {
          setSlot(st, keyOf([key[0], proto, key[1]]), Number(key[2]), memberOfData(e[1]));
        }
      }
    }
  }
  return st;
}

/** A pool member as map data (`addr . port`) in the model's form. */
export function memberOfData(d: any): string {
  return hostPort(String(canon(d.concat[0])), d.concat[1]);
}

export function setSlot(st: SlbKernelState, vk: string, slot: number, member: string | null): void {
  let pool = st.pools.get(vk);
  if (member === null) {
    pool?.delete(slot);
    if (pool && pool.size === 0) st.pools.delete(vk);
    return;
  }
  if (!pool) st.pools.set(vk, (pool = new Map()));
  pool.set(slot, member);
}

/** Both tables: the IPv4 VIPs' (`ip`) and the IPv6 VIPs' (`ip6`); null where there is none. */
export type SlbTables = Readonly<Record<SlbFamily, SlbKernelState | null>>;
export const NO_TABLES: SlbTables = { ip: null, ip6: null };

/** The families a pass writes: those with VIPs to hold, and those whose table exists (a full pass empties it). */
export function familiesInUse(want: readonly VipFragment[], have: SlbTables): SlbFamily[] {
  return SLB_FAMILIES.filter((f) => have[f] !== null || want.some((x) => x.family === f));
}

/** Counter values read from the counter sets, by VIP key and by member key (JSON of the key's fields). */
export interface SlbCounters {
  vipNew: Map<string, number>;
  memberNew: Map<string, number>;
  memberPackets: Map<string, { packets: number; bytes: number }>;
}

/** `nft -j list sets table ip …` → counters per element. */
export function parseCounterSets(listing: unknown): SlbCounters {
  const out: SlbCounters = { vipNew: new Map(), memberNew: new Map(), memberPackets: new Map() };
  for (const it of (listing as { nftables?: any[] } | null)?.nftables ?? []) {
    const s = it?.set;
    if (!s || !Array.isArray(s.elem)) continue;
    for (const e of s.elem) {
      const key = e?.elem?.val?.concat;
      const c = e?.elem?.counter;
      if (!Array.isArray(key) || !c) continue;
      const k = keyOf(key);
      if (s.name === SLB_OBJECTS.vipNew) out.vipNew.set(k, c.packets ?? 0);
      else if (s.name === SLB_OBJECTS.memberNew) out.memberNew.set(k, c.packets ?? 0);
      else if (s.name === SLB_OBJECTS.memberPackets) out.memberPackets.set(k, { packets: c.packets ?? 0, bytes: c.bytes ?? 0 });
    }
  }
  return out;
}

export const memberCounterKey = (k: VipKey, m: { address: string; port: number }) => vipKeyString([...k, m.address, m.port]);

/**
 * Commands that drop counter elements of members and VIPs no longer configured (the kernel made them on traffic; a
 * removed member's sessions may still run and make them again). Add then delete in one transaction: the delete never
 * fails on an element that is not there.
 */
export function staleCounterCommands(table: string, counters: SlbCounters, vipKeys: ReadonlySet<string>, memberKeys: ReadonlySet<string>): NftJson[] {
  const cmds: Cmd[] = [];
  const drop = (name: string, keys: string[]) => {
    if (!keys.length) return;
    const parsed = keys.map((k) => JSON.parse(k) as unknown[]);
    for (const f of SLB_FAMILIES) {
      const elem = parsed.filter((k) => slbFamilyOf(String(k[0])) === f).map((k) => ({ concat: k }));
      if (elem.length) cmds.push({ add: { element: { family: f, table, name, elem } } }, { delete: { element: { family: f, table, name, elem } } });
    }
  };
  drop(
    SLB_OBJECTS.vipNew,
    [...counters.vipNew.keys()].filter((k) => !vipKeys.has(k)),
  );
  drop(
    SLB_OBJECTS.memberNew,
    [...counters.memberNew.keys()].filter((k) => !memberKeys.has(k)),
  );
  drop(
    SLB_OBJECTS.memberPackets,
    [...counters.memberPackets.keys()].filter((k) => !memberKeys.has(k)),
  );
  return cmds;
}
