// What a transaction does to the SLB tables: the same bookkeeping the kernel does for what fwlb writes, so the
// controller follows its own transactions without reading the kernel again; pure layer of libs/slb.
import type { NftJson } from '@fwlb/nft';
import { backendMap, isFlowMap, SLB_FAMILIES, SlbFamily, SLB_OBJECTS } from './render';
import { canon, emptyState, keyOf, memberOfData, PROTOCOLS, setSlot, SlbKernelState, SlbTables, typeSig } from './kernel';

type Cmd = Record<string, any>;

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

/** Add or delete set elements (concatenations) in a model set; deleting one that is not there is `missing`'s. */
function setElements(set: Set<string>, elems: any[], add: boolean, missing: (key: string) => void): void {
  for (const e of elems) {
    const key = keyOf(e.concat);
    if (add) set.add(key);
    else if (!set.delete(key)) missing(key);
  }
}

type Fail = (m: string) => void;

/** A copy to change: the state before a transaction stays as it was (a failed one is simply not taken). */
function cloneState(before: SlbKernelState): SlbKernelState {
  return {
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
}

/** Sets, maps, counters, chains and rules. False: not one of those. */
function applyObject(st: SlbKernelState, verb: string, kind: string, o: Cmd, fail: Fail): boolean {
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
  } else return false;
  return true;
}

function dispatchElements(st: SlbKernelState, add: boolean, elems: any[], fail: Fail): void {
  for (const e of elems) {
    const key = keyOf(add ? e[0].concat : e.concat);
    if (add) {
      const target = e[1].jump.target;
      if (!st.chains.has(target)) fail(`no chain ${target} to jump to`);
      if (st.dispatch.has(key) && st.dispatch.get(key) !== target) fail(`dispatch element ${key} exists`);
      st.dispatch.set(key, target);
    } else {
      if (!st.dispatch.has(key)) fail(`no dispatch element ${key}`);
      st.dispatch.delete(key);
    }
  }
}

function flowPoolElements(st: SlbKernelState, name: string, add: boolean, elems: any[], fail: Fail): void {
  const pool = st.flowPools.get(name);
  if (!pool) fail(`no map ${name}`);
  for (const e of elems) {
    const slot = add ? e[0] : e;
    if (add) {
      const member = memberOfData(e[1]);
      if (pool?.has(slot) && pool.get(slot) !== member) fail(`${name} slot ${slot} exists`);
      pool?.set(slot, member);
    } else if (!pool?.delete(slot)) fail(`no ${name} slot ${slot}`);
  }
}

function snatToElements(st: SlbKernelState, add: boolean, elems: any[], fail: Fail): void {
  for (const e of elems) {
    const key = keyOf(add ? e[0].concat : e.concat);
    if (add) {
      if (st.snatTo.has(key) && st.snatTo.get(key) !== e[1]) fail(`snat_to element ${key} exists`);
      st.snatTo.set(key, String(canon(e[1])));
    } else if (!st.snatTo.delete(key)) fail(`no snat_to element ${key}`);
  }
}

function backendElements(st: SlbKernelState, proto: (typeof PROTOCOLS)[number], add: boolean, elems: any[], fail: Fail): void {
  for (const e of elems) {
    const [addr, port, slot] = add ? e[0].concat : e.concat;
    const vk = keyOf([addr, proto, port]);
    const cur = st.pools.get(vk)?.get(slot);
    if (add) {
      const member = memberOfData(e[1]);
      if (cur !== undefined && cur !== member) fail(`pool element ${vk} slot ${slot} exists`);
      setSlot(st, vk, slot, member);
    } else {
      if (cur === undefined) fail(`no pool element ${vk} slot ${slot}`);
      setSlot(st, vk, slot, null);
    }
  }
}

/** Elements of the sets and maps fwlb writes; others (the counter sets' elements, made by traffic) are not modelled. */
function applyElements(st: SlbKernelState, add: boolean, o: Cmd, fail: Fail): void {
  const elems = o.elem as any[];
  const proto = PROTOCOLS.find((p) => backendMap(p) === o.name);
  if (o.name === SLB_OBJECTS.dispatch) dispatchElements(st, add, elems, fail);
  else if (isFlowMap(o.name)) flowPoolElements(st, o.name, add, elems, fail);
  else if (o.name === SLB_OBJECTS.snatNode) setElements(st.snatNode, elems, add, (key) => fail(`no snat_node element ${key}`));
  else if (o.name === SLB_OBJECTS.snatTo) snatToElements(st, add, elems, fail);
  else if (o.name === SLB_OBJECTS.endpoints) setElements(st.endpoints, elems, add, (key) => fail(`no endpoint element ${key}`));
  else if (proto) backendElements(st, proto, add, elems, fail);
}

/**
 * The state after `cmds` committed: the same bookkeeping the kernel does for what fwlb writes. `strict` makes it
 * refuse what nft would refuse (the unit tests' kernel); the service uses it to follow its own transactions.
 */
export function applySlbCommands(before: SlbKernelState | null, cmds: readonly NftJson[], strict = false): SlbKernelState | null {
  let st: SlbKernelState | null = before && cloneState(before);
  const fail: Fail = (m) => {
    if (strict) throw new Error(`nft: ${m}`);
  };
  for (const c of cmds as Cmd[]) {
    const [verb, body] = Object.entries(c)[0] as [string, Cmd];
    const [kind, o] = Object.entries(body)[0] as [string, Cmd];
    if (verb === 'add' && kind === 'table') st ??= emptyState(1);
    else if (verb === 'delete' && kind === 'table') {
      if (!st) fail('no table to delete');
      st = null;
    } else if (!st) fail(`no table for ${verb} ${kind}`);
    else if (kind === 'element') applyElements(st, verb === 'add', o, fail);
    else if (!applyObject(st, verb, kind, o, fail)) fail(`${verb} ${kind} not modelled`);
  }
  return st;
}
