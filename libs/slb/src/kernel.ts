// The SLB table as the controller knows it: parsed from a terse listing, changed by its own transactions, and the
// transaction that brings it to the desired VIPs (all of them, or only the ones a change touched); pure layer of libs/slb.
import type { NftJson } from '@fwlb/nft';
import { ruleDigest } from '@fwlb/nft';
import { canonicalOrNull, hostPort, splitHostPort } from '@fwlb/flowhash';
import {
  backendMap,
  baseChains,
  baseSets,
  declared,
  flowMap,
  flowMapType,
  isFlowMap,
  isVipChain,
  SLB_FAMILIES,
  SlbFamily,
  slbFamilyOf,
  SLB_OBJECTS,
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
const canon = (x: unknown) => (typeof x === 'string' && x.includes(':') ? (canonicalOrNull(x) ?? x) : x);
/** A key read from the kernel: its address fields (strings that parse as addresses) in canonical form. */
const keyOf = (k: readonly unknown[]) => vipKeyString(k.map(canon));
const typeSig = (type: unknown, map: unknown) => JSON.stringify([type, map ?? null]);

const PROTOCOLS = ['tcp', 'udp'] as const;

/** The members in a VIP's pool (address:port, in slot order): a restart's last known health. `flow`: its map's name. */
export function poolTargets(st: SlbKernelState | null, key: VipKey, flow?: string): string[] {
  const pool = flow ? st?.flowPools.get(flow) : st?.pools.get(vipKeyString(key));
  return pool ? [...pool].sort((a, b) => a[0] - b[0]).map(([, m]) => m) : [];
}

const emptyState = (handle: number): SlbKernelState => ({
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

function setSlot(st: SlbKernelState, vk: string, slot: number, member: string | null): void {
  let pool = st.pools.get(vk);
  if (member === null) {
    pool?.delete(slot);
    if (pool && pool.size === 0) st.pools.delete(vk);
    return;
  }
  if (!pool) st.pools.set(vk, (pool = new Map()));
  pool.set(slot, member);
}

export interface SlbDiffInput {
  table: string;
  /** The table's family (default `ip`); `want` holds this family's VIPs only. */
  family?: SlbFamily;
  /** Desired fragments: every VIP (full reconcile), or the VIPs of `scope`. */
  want: readonly VipFragment[];
  have: SlbKernelState | null;
  /** Only these VIP ids (a change): base objects and other VIPs' chains are left alone. */
  scope?: ReadonlySet<string>;
}

/**
 * The commands of one transaction, [] when the kernel already matches. Order matters to nft: objects before what
 * refers to them (sets, then chains and rules, then dispatch elements that jump to chains), and removals after what
 * referred to them is gone (dispatch elements, then chains, then sets and counters).
 */
export function slbCommands(i: SlbDiffInput): NftJson[] {
  const fam = i.family ?? 'ip';
  const t = i.table;
  const have = i.have;
  const head: Cmd[] = [];
  const chains: Cmd[] = [];
  const elemDel: Cmd[] = [];
  const elemAdd: Cmd[] = [];
  const tail: Cmd[] = [];
  const rule = (chain: string, expr: NftJson[]) => ({ add: { rule: { family: fam, table: t, chain, expr, comment: ruleDigest(expr) } } });
  const dropChain = (name: string) => tail.push({ flush: { chain: { family: fam, table: t, name } } }, { delete: { chain: { family: fam, table: t, name } } });
  // The fixed objects: on a full pass, and on a change to a table that has none yet (the first VIP of a family).
  if (!i.scope || !hasBase(have, fam)) {
    if (!have) head.push({ add: { table: { family: fam, name: t } } });
    const wantSets = baseSets(fam);
    for (const [name, [type, map]] of wantSets) {
      const cur = have?.sets.get(name);
      if (cur === typeSig(type, map)) continue;
      if (cur !== undefined) throw new Error(`${map ? 'map' : 'set'} ${name} has another type (${cur}); delete table ${fam} ${t} to migrate`);
      head.push({ add: map ? { map: { family: fam, table: t, name, type, map } } : { set: { family: fam, table: t, name, type } } });
    }
    for (const c of baseChains(fam)) {
      const cur = have?.chains.get(c.name);
      const def = { family: fam, table: t, name: c.name, type: c.type, hook: c.hook, prio: c.prio, policy: 'accept' };
      const digests = c.rules.map(ruleDigest);
      if (cur && (cur.type !== c.type || cur.hook !== c.hook || cur.prio !== c.prio)) {
        head.push({ flush: { chain: { family: fam, table: t, name: c.name } } }, { delete: { chain: { family: fam, table: t, name: c.name } } });
      } else if (cur && cur.policy === 'accept' && cur.digests.length === digests.length && cur.digests.every((d, k) => d === digests[k])) continue;
      else if (cur) {
        // Rewritten in place (flush + add in one transaction): the hook is never without its chain.
        chains.push({ add: { chain: def } }, { flush: { chain: { family: fam, table: t, name: c.name } } }, ...c.rules.map((r) => rule(c.name, r)));
        continue;
      }
      chains.push({ add: { chain: def } }, ...c.rules.map((r) => rule(c.name, r)));
    }
  }
  if (!hasDeclarations(have, fam) && (!i.scope || i.want.length))
    throw new Error(
      `the maps and sets ${declared(fam)
        .map((d) => d.name)
        .join(', ')} are missing or of another type; they are declared before the transaction (delete table ${fam} ${t} to migrate)`,
    );
  const inScope = (chain: string) => isVipChain(chain) && (!i.scope || i.scope.has(chain.slice(2)));
  const wantChains = new Map(i.want.map((f) => [f.chain, f]));
  const wantKeys = new Map(i.want.map((f) => [vipKeyString(f.key), f.chain]));
  for (const f of i.want) {
    const cur = have?.chains.get(f.chain);
    if (!cur) chains.push({ add: { chain: { family: fam, table: t, name: f.chain } } }, rule(f.chain, f.rule));
    else if (cur.digests.length !== 1 || cur.digests[0] !== f.digest)
      chains.push({ flush: { chain: { family: fam, table: t, name: f.chain } } }, rule(f.chain, f.rule));
  }
  const elem = (key: string, target?: string) => (target ? [{ concat: JSON.parse(key) }, { jump: { target } }] : { concat: JSON.parse(key) });
  const del: unknown[] = [];
  const add: unknown[] = [];
  for (const [key, target] of have?.dispatch ?? []) {
    const w = wantKeys.get(key);
    // A key is ours to change when its VIP is in scope, or when a VIP in scope wants it.
    if (w === target || (!inScope(target) && w === undefined)) continue;
    del.push(elem(key));
  }
  for (const [key, target] of wantKeys) if (have?.dispatch.get(key) !== target) add.push(elem(key, target));
  // One command per kind: one netlink message for a thousand elements instead of a thousand commands.
  if (del.length) elemDel.push({ delete: { element: { family: fam, table: t, name: SLB_OBJECTS.dispatch, elem: del } } });
  if (add.length) elemAdd.push({ add: { element: { family: fam, table: t, name: SLB_OBJECTS.dispatch, elem: add } } });
  // Pools: a slot whose member changed is deleted and added again (adding an existing key fails), in the same transaction.
  const wantPools = new Map(i.want.map((f) => [vipKeyString(f.key), f]));
  const poolDel = new Map<string, unknown[]>();
  const poolAdd = new Map<string, unknown[]>();
  const push = (m: Map<string, unknown[]>, name: string, e: unknown) => (m.get(name) ?? m.set(name, []).get(name)!).push(e);
  for (const [vk, pool] of have?.pools ?? []) {
    const f = wantPools.get(vk);
    const [addr, proto, port] = JSON.parse(vk) as VipKey;
    // Ours to change: a key a VIP in scope wants, or one whose dispatch went to a VIP in scope, or (full) any not wanted.
    if (!f && i.scope && !inScope(have!.dispatch.get(vk) ?? '')) continue;
    const mine = f?.pool === backendMap(proto);
    for (const [slot, member] of pool) if (!mine || f!.slots[slot] !== member) push(poolDel, backendMap(proto), { concat: [addr, port, slot] });
  }
  const flowMaps: string[] = [];
  for (const f of i.want) {
    const flow = isFlowMap(f.pool);
    if (flow && !have?.sets.has(f.pool)) throw new Error(`map ${f.pool} is missing; it is declared before the transaction`);
    const pool = flow ? have?.flowPools.get(f.pool) : have?.pools.get(vipKeyString(f.key));
    if (flow) {
      flowMaps.push(f.pool);
      for (const [slot, member] of pool ?? []) if (f.slots[slot] !== member) push(poolDel, f.pool, slot);
    }
    f.slots.forEach((member, slot) => {
      if (pool?.get(slot) === member) return;
      const data = { concat: splitHostPort(member) };
      push(poolAdd, f.pool, flow ? [slot, data] : [{ concat: [f.key[0], f.key[2], slot] }, data]);
    });
  }
  // Member endpoints: added for the VIPs written; removed on a full pass only (another VIP out of a change's scope
  // may share one). One left a while after its member went guards an address nobody answers from.
  const wantEps = new Set(i.want.flatMap((f) => f.endpoints));
  const epsAdd = [...wantEps].filter((k) => !have?.endpoints.has(k));
  const epsDel = !i.scope && have ? [...have.endpoints].filter((k) => !wantEps.has(k)) : [];
  const epElem = (keys: string[]) => keys.map((k) => ({ concat: JSON.parse(k) }));
  if (epsDel.length) elemDel.push({ delete: { element: { family: fam, table: t, name: SLB_OBJECTS.endpoints, elem: epElem(epsDel) } } });
  if (epsAdd.length) elemAdd.push({ add: { element: { family: fam, table: t, name: SLB_OBJECTS.endpoints, elem: epElem(epsAdd) } } });
  snatCommands(i, inScope, elemDel, elemAdd);
  for (const [name, elem] of poolDel) elemDel.push({ delete: { element: { family: fam, table: t, name, elem } } });
  for (const [name, elem] of poolAdd) elemAdd.push({ add: { element: { family: fam, table: t, name, elem } } });
  for (const name of have?.chains.keys() ?? []) if (inScope(name) && !wantChains.has(name)) dropChain(name);
  // A `flow` map no VIP uses any more goes after the chains that used it (a full pass: below, with the other sets).
  if (i.scope)
    for (const name of have?.sets.keys() ?? [])
      if (isFlowMap(name) && i.scope.has(name.slice(2)) && !flowMaps.includes(name)) tail.push({ delete: { map: { family: fam, table: t, name } } });
  if (!i.scope && have) {
    for (const name of have.chains.keys()) if (!isVipChain(name) && !baseChains(fam).some((c) => c.name === name)) dropChain(name);
    const base = baseSets(fam);
    for (const name of have.sets.keys())
      if (!base.has(name) && !declared(fam).some((d) => d.name === name) && !flowMaps.includes(name))
        tail.push({ delete: { [have.sets.get(name)!.endsWith('null]') ? 'set' : 'map']: { family: fam, table: t, name } } });
    for (const name of have.counters) tail.push({ delete: { counter: { family: fam, table: t, name } } });
  }
  return [...head, ...chains, ...elemDel, ...elemAdd, ...tail];
}

/**
 * One-arm VIPs' elements: each VIP key in `snat_node` or `snat_to` as its fragment says. Ours to change, as for the
 * pools: a key a VIP in scope wants, one whose dispatch went to a VIP in scope, or (full pass) any not wanted.
 */
function snatCommands(i: SlbDiffInput, inScope: (chain: string) => boolean, elemDel: Cmd[], elemAdd: Cmd[]): void {
  const fam = i.family ?? 'ip';
  const have = i.have;
  const want = new Map(i.want.map((f) => [vipKeyString(f.key), f.snat]));
  const ours = (k: string) => want.has(k) || !i.scope || inScope(have?.dispatch.get(k) ?? '');
  const elem = (k: string) => ({ concat: JSON.parse(k) });
  const nodeDel = [...(have?.snatNode ?? [])].filter((k) => ours(k) && !(want.get(k) && !want.get(k)!.address)).map(elem);
  const toDel = [...(have?.snatTo ?? [])].filter(([k, a]) => ours(k) && want.get(k)?.address !== a).map(([k]) => elem(k));
  const nodeAdd = [...want].filter(([k, s]) => s && !s.address && !have?.snatNode.has(k)).map(([k]) => elem(k));
  const toAdd = [...want].filter(([k, s]) => s?.address && have?.snatTo.get(k) !== s.address).map(([k, s]) => [elem(k), s!.address]);
  const cmd = (verb: 'add' | 'delete', name: string, e: unknown[]) => ({ [verb]: { element: { family: fam, table: i.table, name, elem: e } } });
  if (nodeDel.length) elemDel.push(cmd('delete', SLB_OBJECTS.snatNode, nodeDel));
  if (toDel.length) elemDel.push(cmd('delete', SLB_OBJECTS.snatTo, toDel));
  if (nodeAdd.length) elemAdd.push(cmd('add', SLB_OBJECTS.snatNode, nodeAdd));
  if (toAdd.length) elemAdd.push(cmd('add', SLB_OBJECTS.snatTo, toAdd));
}

/** Whether the table has its fixed chains and dispatch map (a table only declared has not). */
function hasBase(have: SlbKernelState | null, f: SlbFamily): boolean {
  return (
    !!have && [...baseSets(f)].every(([name, [type, map]]) => have.sets.get(name) === typeSig(type, map)) && baseChains(f).every((c) => have.chains.has(c.name))
  );
}

/** Both tables: the IPv4 VIPs' (`ip`) and the IPv6 VIPs' (`ip6`); null where there is none. */
export type SlbTables = Readonly<Record<SlbFamily, SlbKernelState | null>>;
export const NO_TABLES: SlbTables = { ip: null, ip6: null };

/** The families a pass writes: those with VIPs to hold, and those whose table exists (a full pass empties it). */
export function familiesInUse(want: readonly VipFragment[], have: SlbTables): SlbFamily[] {
  return SLB_FAMILIES.filter((f) => have[f] !== null || want.some((x) => x.family === f));
}

/** `slbCommands` for both tables, in one list (one transaction): a family with no VIP and no table costs nothing. */
export function tablesCommands(i: Omit<SlbDiffInput, 'family' | 'have'> & { have: SlbTables }): NftJson[] {
  return familiesInUse(i.want, i.have).flatMap((f) => slbCommands({ ...i, family: f, want: i.want.filter((x) => x.family === f), have: i.have[f] }));
}

/** `applySlbCommands` for both tables: each command goes to the table of its family. */
export function applyTablesCommands(before: SlbTables, cmds: readonly NftJson[], strict = false): SlbTables {
  const familyOfCmd = (c: Cmd) => (Object.values(Object.values(c)[0] as Cmd)[0] as Cmd).family as SlbFamily;
  return Object.fromEntries(
    SLB_FAMILIES.map((f) => [
      f,
      applySlbCommands(
        before[f],
        cmds.filter((c) => familyOfCmd(c as Cmd) === f),
        strict,
      ),
    ]),
  ) as SlbTables;
}

/** A pool member as map data (`addr . port`) in the model's form. */
function memberOfData(d: any): string {
  return hostPort(String(canon(d.concat[0])), d.concat[1]);
}

/** Add or delete set elements (concatenations) in a model set; deleting one that is not there is `missing`'s. */
function setElements(set: Set<string>, elems: any[], add: boolean, missing: (key: string) => void): void {
  for (const e of elems) {
    const key = keyOf(e.concat);
    if (add) set.add(key);
    else if (!set.delete(key)) missing(key);
  }
}

/**
 * The state after `cmds` committed: the same bookkeeping the kernel does for what fwlb writes. `strict` makes it
 * refuse what nft would refuse (the unit tests' kernel); the service uses it to follow its own transactions.
 */
export function applySlbCommands(before: SlbKernelState | null, cmds: readonly NftJson[], strict = false): SlbKernelState | null {
  let st: SlbKernelState | null = before && {
    handle: before.handle,
    sets: new Map(before.sets),
    chains: new Map([...before.chains].map(([k, c]) => [k, { ...c, digests: [...c.digests] }])),
    dispatch: new Map(before.dispatch),
    pools: new Map([...before.pools].map(([k, p]) => [k, new Map(p)])),
    flowPools: new Map([...before.flowPools].map(([k, p]) => [k, new Map(p)])),
    endpoints: new Set(before.endpoints),
    snatNode: new Set(before.snatNode),
    snatTo: new Map(before.snatTo),
    counters: [...before.counters],
  };
  const fail = (m: string) => {
    if (strict) throw new Error(`nft: ${m}`);
  };
  for (const c of cmds as Cmd[]) {
    const [verb, body] = Object.entries(c)[0] as [string, Cmd];
    const [kind, o] = Object.entries(body)[0] as [string, Cmd];
    if (verb === 'add' && kind === 'table') {
      st ??= emptyState(1);
      continue;
    }
    if (verb === 'delete' && kind === 'table') {
      if (!st) fail('no table to delete');
      st = null;
      continue;
    }
    if (!st) {
      fail(`no table for ${verb} ${kind}`);
      continue;
    }
    if (verb === 'add' && (kind === 'set' || kind === 'map')) {
      st.sets.set(o.name, typeSig(o.type, kind === 'map' ? o.map : null));
      if (isFlowMap(o.name) && !st.flowPools.has(o.name)) st.flowPools.set(o.name, new Map());
    } else if (verb === 'delete' && (kind === 'set' || kind === 'map')) {
      if (!st.sets.has(o.name)) fail(`no ${kind} ${o.name} to delete`);
      st.sets.delete(o.name);
      st.flowPools.delete(o.name);
    } else if (verb === 'delete' && kind === 'counter') st.counters = st.counters.filter((n) => n !== o.name);
    else if (verb === 'add' && kind === 'chain') {
      const cur = st.chains.get(o.name);
      st.chains.set(o.name, { ...(cur ?? { digests: [] }), type: o.type, hook: o.hook, prio: o.prio, policy: o.policy });
    } else if (verb === 'flush' && kind === 'chain') {
      const cur = st.chains.get(o.name);
      if (!cur) fail(`no chain ${o.name} to flush`);
      else cur.digests = [];
    } else if (verb === 'delete' && kind === 'chain') {
      if (!st.chains.has(o.name)) fail(`no chain ${o.name} to delete`);
      if ([...st.dispatch.values()].includes(o.name)) fail(`chain ${o.name} is in use by the dispatch map`);
      st.chains.delete(o.name);
    } else if (verb === 'add' && kind === 'rule') {
      const cur = st.chains.get(o.chain);
      if (!cur) fail(`no chain ${o.chain} for a rule`);
      else cur.digests.push(o.comment);
    } else if (kind === 'element' && o.name === SLB_OBJECTS.dispatch) {
      for (const e of o.elem as any[]) {
        const key = keyOf(verb === 'add' ? e[0].concat : e.concat);
        if (verb === 'add') {
          const target = e[1].jump.target;
          if (!st.chains.has(target)) fail(`no chain ${target} to jump to`);
          if (st.dispatch.has(key) && st.dispatch.get(key) !== target) fail(`dispatch element ${key} exists`);
          st.dispatch.set(key, target);
        } else {
          if (!st.dispatch.has(key)) fail(`no dispatch element ${key}`);
          st.dispatch.delete(key);
        }
      }
    } else if (kind === 'element' && isFlowMap(o.name)) {
      const pool = st.flowPools.get(o.name);
      if (!pool) fail(`no map ${o.name}`);
      for (const e of o.elem as any[]) {
        const slot = verb === 'add' ? e[0] : e;
        if (verb === 'add') {
          const member = memberOfData(e[1]);
          if (pool?.has(slot) && pool.get(slot) !== member) fail(`${o.name} slot ${slot} exists`);
          pool?.set(slot, member);
        } else if (!pool?.delete(slot)) fail(`no ${o.name} slot ${slot}`);
      }
    } else if (kind === 'element' && o.name === SLB_OBJECTS.snatNode) {
      setElements(st.snatNode, o.elem as any[], verb === 'add', (key) => fail(`no snat_node element ${key}`));
    } else if (kind === 'element' && o.name === SLB_OBJECTS.snatTo) {
      for (const e of o.elem as any[]) {
        const key = keyOf(verb === 'add' ? e[0].concat : e.concat);
        if (verb === 'add') {
          if (st.snatTo.has(key) && st.snatTo.get(key) !== e[1]) fail(`snat_to element ${key} exists`);
          st.snatTo.set(key, String(canon(e[1])));
        } else if (!st.snatTo.delete(key)) fail(`no snat_to element ${key}`);
      }
    } else if (kind === 'element' && o.name === SLB_OBJECTS.endpoints) {
      setElements(st.endpoints, o.elem as any[], verb === 'add', (key) => fail(`no endpoint element ${key}`));
    } else if (kind === 'element' && PROTOCOLS.some((p) => backendMap(p) === o.name)) {
      const proto = PROTOCOLS.find((p) => backendMap(p) === o.name)!;
      for (const e of o.elem as any[]) {
        const [addr, port, slot] = verb === 'add' ? e[0].concat : e.concat;
        const vk = keyOf([addr, proto, port]);
        const cur = st.pools.get(vk)?.get(slot);
        if (verb === 'add') {
          const member = memberOfData(e[1]);
          if (cur !== undefined && cur !== member) fail(`pool element ${vk} slot ${slot} exists`);
          setSlot(st, vk, slot, member);
        } else {
          if (cur === undefined) fail(`no pool element ${vk} slot ${slot}`);
          setSlot(st, vk, slot, null);
        }
      }
    } else if (kind === 'element') continue;
    else fail(`${verb} ${kind} not modelled`);
  }
  return st;
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
