// The transaction that brings the SLB tables to the desired VIPs (all of them, or only the ones a change touched),
// [] when the kernel already matches; pure layer of libs/slb.
import type { NftJson } from '@fwlb/nft';
import { ruleDigest } from '@fwlb/nft';
import { splitHostPort } from '@fwlb/flowhash';
import { backendMap, baseChains, baseSets, declared, isFlowMap, isVipChain, SlbFamily, SLB_OBJECTS, VipFragment, VipKey } from './render';
import { familiesInUse, hasDeclarations, SlbKernelState, SlbTables, typeSig, vipKeyString } from './kernel';

type Cmd = Record<string, any>;

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
 * A transaction in the making, in the order nft needs: objects before what refers to them (sets, then chains and
 * rules, then the elements that jump to chains or name members), and removals after what referred to them is gone
 * (elements first, then chains, then sets and counters).
 */
class Transaction {
  readonly head: Cmd[] = [];
  readonly chains: Cmd[] = [];
  readonly elemDel: Cmd[] = [];
  readonly elemAdd: Cmd[] = [];
  readonly tail: Cmd[] = [];
  readonly fam: SlbFamily;
  readonly t: string;
  /** A VIP chain this pass owns: every one on a full pass, the scope's on a change. */
  readonly inScope: (chain: string) => boolean;

  constructor(readonly i: SlbDiffInput) {
    this.fam = i.family ?? 'ip';
    this.t = i.table;
    this.inScope = (chain) => isVipChain(chain) && (!i.scope || i.scope.has(chain.slice(2)));
  }

  rule(chain: string, expr: NftJson[]): Cmd {
    return { add: { rule: { family: this.fam, table: this.t, chain, expr, comment: ruleDigest(expr) } } };
  }

  /** An object of this table by name, as every command but `add table` names it. */
  obj(name: string): Cmd {
    return { family: this.fam, table: this.t, name };
  }

  /** Flush then delete: a chain with rules cannot be deleted. `to`: `head` when it must go before its replacement. */
  dropChain(name: string, to: Cmd[] = this.tail): void {
    to.push({ flush: { chain: this.obj(name) } }, { delete: { chain: this.obj(name) } });
  }

  /** One command per set and verb: one netlink message for a thousand elements instead of a thousand commands. */
  elements(verb: 'add' | 'delete', name: string, elem: unknown[]): void {
    if (elem.length) (verb === 'add' ? this.elemAdd : this.elemDel).push({ [verb]: { element: { ...this.obj(name), elem } } });
  }

  commands(): NftJson[] {
    return [...this.head, ...this.chains, ...this.elemDel, ...this.elemAdd, ...this.tail];
  }
}

/** The fixed objects: on a full pass, and on a change to a table that has none yet (the first VIP of a family). */
function baseCommands(x: Transaction): void {
  const { fam, t } = x;
  const have = x.i.have;
  if (!have) x.head.push({ add: { table: { family: fam, name: t } } });
  for (const [name, [type, map]] of baseSets(fam)) {
    const cur = have?.sets.get(name);
    if (cur === typeSig(type, map)) continue;
    if (cur !== undefined) throw new Error(`${map ? 'map' : 'set'} ${name} has another type (${cur}); delete table ${fam} ${t} to migrate`);
    x.head.push({ add: map ? { map: { ...x.obj(name), type, map } } : { set: { ...x.obj(name), type } } });
  }
  for (const c of baseChains(fam)) {
    const cur = have?.chains.get(c.name);
    const def = { ...x.obj(c.name), type: c.type, hook: c.hook, prio: c.prio, policy: 'accept' };
    const digests = c.rules.map(ruleDigest);
    if (cur && (cur.type !== c.type || cur.hook !== c.hook || cur.prio !== c.prio)) x.dropChain(c.name, x.head);
    else if (cur && cur.policy === 'accept' && cur.digests.length === digests.length && cur.digests.every((d, k) => d === digests[k])) continue;
    else if (cur) {
      // Rewritten in place (flush + add in one transaction): the hook is never without its chain.
      x.chains.push({ add: { chain: def } }, { flush: { chain: x.obj(c.name) } }, ...c.rules.map((r) => x.rule(c.name, r)));
      continue;
    }
    x.chains.push({ add: { chain: def } }, ...c.rules.map((r) => x.rule(c.name, r)));
  }
}

/** Each VIP's chain holds its one rule; the dispatch map jumps from the VIP key to it. */
function vipCommands(x: Transaction): void {
  const have = x.i.have;
  for (const f of x.i.want) {
    const cur = have?.chains.get(f.chain);
    if (!cur) x.chains.push({ add: { chain: x.obj(f.chain) } }, x.rule(f.chain, f.rule));
    else if (cur.digests.length !== 1 || cur.digests[0] !== f.digest) x.chains.push({ flush: { chain: x.obj(f.chain) } }, x.rule(f.chain, f.rule));
  }
  const wantKeys = new Map(x.i.want.map((f) => [vipKeyString(f.key), f.chain]));
  const elem = (key: string, target?: string) => (target ? [{ concat: JSON.parse(key) }, { jump: { target } }] : { concat: JSON.parse(key) });
  const del: unknown[] = [];
  for (const [key, target] of have?.dispatch ?? []) {
    const w = wantKeys.get(key);
    // A key is ours to change when its VIP is in scope, or when a VIP in scope wants it.
    if (w === target || (!x.inScope(target) && w === undefined)) continue;
    del.push(elem(key));
  }
  x.elements('delete', SLB_OBJECTS.dispatch, del);
  x.elements(
    'add',
    SLB_OBJECTS.dispatch,
    [...wantKeys].filter(([key, target]) => have?.dispatch.get(key) !== target).map(([key, target]) => elem(key, target)),
  );
}

/**
 * Pools: a slot whose member changed is deleted and added again (adding an existing key fails), in the same
 * transaction. Returns the `flow` maps the wanted VIPs use.
 */
function poolCommands(x: Transaction): string[] {
  const { i } = x;
  const have = i.have;
  const wantPools = new Map(i.want.map((f) => [vipKeyString(f.key), f]));
  const poolDel = new Map<string, unknown[]>();
  const poolAdd = new Map<string, unknown[]>();
  const push = (m: Map<string, unknown[]>, name: string, e: unknown) => (m.get(name) ?? m.set(name, []).get(name)!).push(e);
  for (const [vk, pool] of have?.pools ?? []) {
    const f = wantPools.get(vk);
    const [addr, proto, port] = JSON.parse(vk) as VipKey;
    // Ours to change: a key a VIP in scope wants, or one whose dispatch went to a VIP in scope, or (full) any not wanted.
    if (!f && i.scope && !x.inScope(have!.dispatch.get(vk) ?? '')) continue;
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
  for (const [name, elem] of poolDel) x.elements('delete', name, elem);
  for (const [name, elem] of poolAdd) x.elements('add', name, elem);
  return flowMaps;
}

/**
 * Member endpoints: added for the VIPs written; removed on a full pass only (another VIP out of a change's scope
 * may share one). One left a while after its member went guards an address nobody answers from.
 */
function endpointCommands(x: Transaction): void {
  const have = x.i.have;
  const wantEps = new Set(x.i.want.flatMap((f) => f.endpoints));
  const epElem = (keys: string[]) => keys.map((k) => ({ concat: JSON.parse(k) }));
  if (!x.i.scope && have) x.elements('delete', SLB_OBJECTS.endpoints, epElem([...have.endpoints].filter((k) => !wantEps.has(k))));
  x.elements('add', SLB_OBJECTS.endpoints, epElem([...wantEps].filter((k) => !have?.endpoints.has(k))));
}

/**
 * One-arm VIPs' elements: each VIP key in `snat_node` or `snat_to` as its fragment says. Ours to change, as for the
 * pools: a key a VIP in scope wants, one whose dispatch went to a VIP in scope, or (full pass) any not wanted.
 */
function snatCommands(x: Transaction): void {
  const { i } = x;
  const have = i.have;
  const want = new Map(i.want.map((f) => [vipKeyString(f.key), f.snat]));
  const ours = (k: string) => want.has(k) || !i.scope || x.inScope(have?.dispatch.get(k) ?? '');
  const elem = (k: string) => ({ concat: JSON.parse(k) });
  x.elements('delete', SLB_OBJECTS.snatNode, [...(have?.snatNode ?? [])].filter((k) => ours(k) && !(want.get(k) && !want.get(k)!.address)).map(elem));
  x.elements(
    'delete',
    SLB_OBJECTS.snatTo,
    [...(have?.snatTo ?? [])].filter(([k, a]) => ours(k) && want.get(k)?.address !== a).map(([k]) => elem(k)),
  );
  x.elements(
    'add',
    SLB_OBJECTS.snatNode,
    [...want].filter(([k, s]) => s && !s.address && !have?.snatNode.has(k)).map(([k]) => elem(k)),
  );
  x.elements(
    'add',
    SLB_OBJECTS.snatTo,
    [...want].filter(([k, s]) => s?.address && have?.snatTo.get(k) !== s.address).map(([k, s]) => [elem(k), s!.address]),
  );
}

/** What no wanted VIP uses: its chain, a `flow` map, and on a full pass anything else fwlb did not write. */
function removalCommands(x: Transaction, flowMaps: readonly string[]): void {
  const { i, fam } = x;
  const have = i.have;
  const wantChains = new Set(i.want.map((f) => f.chain));
  for (const name of have?.chains.keys() ?? []) if (x.inScope(name) && !wantChains.has(name)) x.dropChain(name);
  // A `flow` map no VIP uses any more goes after the chains that used it (a full pass: below, with the other sets).
  if (i.scope)
    for (const name of have?.sets.keys() ?? [])
      if (isFlowMap(name) && i.scope.has(name.slice(2)) && !flowMaps.includes(name)) x.tail.push({ delete: { map: x.obj(name) } });
  if (i.scope || !have) return;
  for (const name of have.chains.keys()) if (!isVipChain(name) && !baseChains(fam).some((c) => c.name === name)) x.dropChain(name);
  const base = baseSets(fam);
  for (const name of have.sets.keys())
    if (!base.has(name) && !declared(fam).some((d) => d.name === name) && !flowMaps.includes(name))
      x.tail.push({ delete: { [have.sets.get(name)!.endsWith('null]') ? 'set' : 'map']: x.obj(name) } });
  for (const name of have.counters) x.tail.push({ delete: { counter: x.obj(name) } });
}

/** Whether the table has its fixed chains and dispatch map (a table only declared has not). */
function hasBase(have: SlbKernelState | null, f: SlbFamily): boolean {
  return (
    !!have && [...baseSets(f)].every(([name, [type, map]]) => have.sets.get(name) === typeSig(type, map)) && baseChains(f).every((c) => have.chains.has(c.name))
  );
}

/** The commands of one transaction for one family's table, [] when the kernel already matches. */
export function slbCommands(i: SlbDiffInput): NftJson[] {
  const x = new Transaction(i);
  if (!i.scope || !hasBase(i.have, x.fam)) baseCommands(x);
  if (!hasDeclarations(i.have, x.fam) && (!i.scope || i.want.length))
    throw new Error(
      `the maps and sets ${declared(x.fam)
        .map((d) => d.name)
        .join(', ')} are missing or of another type; they are declared before the transaction (delete table ${x.fam} ${x.t} to migrate)`,
    );
  vipCommands(x);
  endpointCommands(x);
  snatCommands(x);
  const flowMaps = poolCommands(x);
  removalCommands(x, flowMaps);
  return x.commands();
}

/** `slbCommands` for both tables, in one list (one transaction): a family with no VIP and no table costs nothing. */
export function tablesCommands(i: Omit<SlbDiffInput, 'family' | 'have'> & { have: SlbTables }): NftJson[] {
  return familiesInUse(i.want, i.have).flatMap((f) => slbCommands({ ...i, family: f, want: i.want.filter((x) => x.family === f), have: i.have[f] }));
}
