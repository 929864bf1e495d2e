// Computes the one nft transaction that turns the actual table into the desired one; pure layer of libs/nft.
import { ActualTable, DesiredChain, DesiredCtTimeout, DesiredMap, DesiredTable, elementKey, MapValue, NftJson, ruleDigest } from './model';

type Cmd = Record<string, unknown>;

function chainObj(t: DesiredTable, c: DesiredChain) {
  const base = c.hook ? { type: c.type, hook: c.hook, prio: c.prio, policy: c.policy } : {};
  return { family: t.family, table: t.name, name: c.name, ...base };
}

function ruleObjs(t: DesiredTable, c: DesiredChain): Cmd[] {
  return c.rules.map((expr) => ({ add: { rule: { family: t.family, table: t.name, chain: c.name, expr, comment: ruleDigest(expr) } } }));
}

function elems(t: DesiredTable, m: DesiredMap, pairs: [NftJson, MapValue][]): Cmd {
  return { element: { family: t.family, table: t.name, name: m.name, elem: pairs } };
}

/** Counter objects and sets first: rules refer to them. A set of another type is not migrated in place. */
function objectCommands(want: DesiredTable, have: ActualTable | null, cmds: Cmd[]): void {
  for (const name of want.counters ?? []) {
    if (!have?.namedCounters.has(name)) cmds.push({ add: { counter: { family: want.family, table: want.name, name } } });
  }
  for (const st of want.sets ?? []) {
    const cur = have?.sets.get(st.name);
    if (cur && (JSON.stringify(cur.type) !== JSON.stringify(st.type) || cur.timeout !== st.timeout)) {
      throw new Error(
        `set ${st.name} has type ${cur.type} timeout ${cur.timeout}, want ${st.type} timeout ${st.timeout}; delete table ${want.family} ${want.name} to migrate`,
      );
    }
    if (!cur) {
      cmds.push({
        add: { set: { family: want.family, table: want.name, name: st.name, type: st.type, flags: ['timeout'], timeout: st.timeout, size: st.size } },
      });
    }
  }
}

/**
 * Maps, before the rules that read them; their elements one by one: delete then add, since adding an existing key
 * fails with EEXIST. A map whose elements someone else writes (`owned`) is only declared.
 */
function mapCommands(want: DesiredTable, have: ActualTable | null, cmds: Cmd[]): void {
  for (const m of want.maps) {
    const cur = have?.maps.get(m.name);
    if (cur && (JSON.stringify(cur.type) !== JSON.stringify(m.type) || cur.map !== m.map)) {
      throw new Error(`map ${m.name} has type ${cur.type}:${cur.map}, want ${m.type}:${m.map}; delete table ${want.family} ${want.name} to migrate`);
    }
    if (!cur) {
      cmds.push({ add: { map: { family: want.family, table: want.name, name: m.name, type: m.type, map: m.map } } });
      if (m.elements.length) cmds.push({ add: elems(want, m, m.elements) });
      continue;
    }
    if (m.owned) continue;
    const wantMap = new Map(m.elements.map(([k, v]) => [elementKey(k), v]));
    const del: string[] = [];
    const add: [NftJson, MapValue][] = [];
    for (const [k, v] of cur.elements) {
      const w = wantMap.get(k);
      if (w === undefined || w !== v) del.push(k);
    }
    for (const [k, v] of m.elements) if (cur.elements.get(elementKey(k)) !== v) add.push([k, v]);
    if (del.length) cmds.push({ delete: { element: { family: want.family, table: want.name, name: m.name, elem: del.map((k) => JSON.parse(k)) } } });
    if (add.length) cmds.push({ add: elems(want, m, add) });
  }
}

/**
 * A chain is rewritten (flush + add, atomically) only when its rule digests differ; a new hook needs a new chain.
 * Returns whether any chain was added or rewritten.
 */
function chainCommands(want: DesiredTable, have: ActualTable | null, cmds: Cmd[]): boolean {
  const ref = (name: string) => ({ family: want.family, table: want.name, name });
  const before = cmds.length;
  for (const c of want.chains) {
    const cur = have?.chains.get(c.name);
    const digests = c.rules.map(ruleDigest);
    if (!cur) {
      cmds.push({ add: { chain: chainObj(want, c) } }, ...ruleObjs(want, c));
      continue;
    }
    const sameHook = cur.type === c.type && cur.hook === c.hook && cur.prio === c.prio;
    if (!sameHook) {
      cmds.push({ flush: { chain: ref(c.name) } }, { delete: { chain: ref(c.name) } });
      cmds.push({ add: { chain: chainObj(want, c) } }, ...ruleObjs(want, c));
      continue;
    }
    if (cur.policy !== c.policy) cmds.push({ add: { chain: chainObj(want, c) } });
    const same = cur.ruleComments.length === digests.length && digests.every((d, i) => cur.ruleComments[i] === d);
    if (!same) cmds.push({ flush: { chain: ref(c.name) } }, ...ruleObjs(want, c));
  }
  return cmds.length > before;
}

/**
 * What the table holds and nothing wants, after what referred to it was rewritten; counters last of all. Chains go at
 * once; sets, maps and counters only in a change that rewrites no chain (`later` names them until then). Why: a
 * packet that began its traversal with the old rules may look an element up just after the commit, and a map deleted
 * in that commit has its elements inactive by then, so the lookup misses (measured on 6.18 under a ping flood: about
 * 3 packets in 100 deletions). A later change, once no running rule can refer to them, deletes them.
 */
function removalCommands(want: DesiredTable, have: ActualTable, cmds: Cmd[], later: string[], chainsChanged: boolean): void {
  const ref = (name: string) => ({ family: want.family, table: want.name, name });
  const wantChains = new Set(want.chains.map((c) => c.name));
  let rewrites = chainsChanged;
  for (const name of have.chains.keys()) {
    if (wantChains.has(name)) continue;
    cmds.push({ flush: { chain: ref(name) } }, { delete: { chain: ref(name) } });
    rewrites = true;
  }
  const objects: [string, string][] = [];
  const wantSets = new Set((want.sets ?? []).map((x) => x.name));
  for (const name of have.sets.keys()) if (!wantSets.has(name)) objects.push(['set', name]);
  const wantMaps = new Set(want.maps.map((m) => m.name));
  for (const name of have.maps.keys()) if (!wantMaps.has(name)) objects.push(['map', name]);
  // A counter can go only once no rule or map refers to it, and the chains above were rewritten without it.
  const wantCounters = new Set(want.counters ?? []);
  for (const name of have.namedCounters.keys()) if (!wantCounters.has(name)) objects.push(['counter', name]);
  if (rewrites) later.push(...objects.map(([kind, name]) => `${kind} ${name}`));
  else for (const [kind, name] of objects) cmds.push({ delete: { [kind]: ref(name) } });
}

/** One change of a table: its commands, and the objects no rule wants that wait for a change that rewrites no chain. */
export interface TableChange {
  cmds: NftJson[];
  /** "map buckets_next", "counter sent-fw4", ...: what the next change deletes. */
  later: string[];
}

/**
 * The commands of one transaction, or [] when the kernel already matches. Nothing is flushed when nothing
 * changed, and the table itself is never deleted.
 */
export function planTableChange(want: DesiredTable, have: ActualTable | null): TableChange {
  const cmds: Cmd[] = [];
  const later: string[] = [];
  if (!have) cmds.push({ add: { table: { family: want.family, name: want.name } } });
  objectCommands(want, have, cmds);
  mapCommands(want, have, cmds);
  const chainsChanged = chainCommands(want, have, cmds);
  if (have) removalCommands(want, have, cmds, later, chainsChanged);
  return { cmds, later };
}

/** The commands of planTableChange alone. */
export function diffTable(want: DesiredTable, have: ActualTable | null): NftJson[] {
  return planTableChange(want, have).cmds;
}

/** A listed map's elements by `elementKey` of their key. */
export function mapElements(m: { elem?: unknown[] }): Map<string, MapValue> {
  const elements = new Map<string, MapValue>();
  for (const e of m.elem ?? []) if (Array.isArray(e)) elements.set(elementKey(e[0]), typeof e[1] === 'string' ? e[1] : Number(e[1]));
  return elements;
}

/**
 * Parse `nft -j list table` output into the reduced actual state; with `table`, a listing of several tables (`list
 * ruleset`) is read for that table's objects only.
 */
export function parseListing(json: unknown, table?: { family: string; name: string }): ActualTable | null {
  const all = (json as { nftables?: Record<string, any>[] })?.nftables ?? [];
  const ours = (o: Record<string, any> | undefined) => !table || !o || (o.family === table.family && (o.table ?? o.name) === table.name);
  const items = all.filter((it) => ours(Object.values(it)[0]));
  let handle: number | undefined;
  const chains: ActualTable['chains'] = new Map();
  const maps: ActualTable['maps'] = new Map();
  const counters: ActualTable['counters'] = new Map();
  const namedCounters: ActualTable['namedCounters'] = new Map();
  const sets: ActualTable['sets'] = new Map();
  const ctTimeouts = new Set<string>();
  for (const it of items) {
    if (it.table) handle = it.table.handle;
    else if (it['ct timeout']) ctTimeouts.add(it['ct timeout'].name);
    else if (it.counter) namedCounters.set(it.counter.name, { packets: it.counter.packets ?? 0, bytes: it.counter.bytes ?? 0 });
    else if (it.set) sets.set(it.set.name, { type: it.set.type, ...(it.set.timeout !== undefined ? { timeout: it.set.timeout } : {}) });
    else if (it.chain) {
      const c = it.chain;
      chains.set(c.name, { type: c.type, hook: c.hook, prio: c.prio, policy: c.policy, handle: c.handle, ruleComments: [] });
    } else if (it.map) {
      const m = it.map;
      const elements = mapElements(m);
      maps.set(m.name, { type: m.type, map: m.map, elements, ...(m.handle !== undefined ? { handle: m.handle } : {}) });
    } else if (it.rule) {
      const r = it.rule;
      chains.get(r.chain)?.ruleComments.push(r.comment);
      const counter = (r.expr ?? []).find((s: any) => s && s.counter)?.counter;
      if (r.comment && counter) counters.set(r.comment, { packets: counter.packets ?? 0, bytes: counter.bytes ?? 0 });
    }
  }
  if (handle === undefined) return null;
  return { handle, chains, maps, sets, counters, namedCounters, ctTimeouts };
}

const NAME = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
const STATE = /^[a-z_0-9]{1,16}$/;
const ident = (name: string) => {
  if (!NAME.test(name)) throw new Error(`not an nft identifier: ${JSON.stringify(name)}`);
  return name;
};

/** The `ct timeout` objects `want` has and the kernel lacks; and the names of the ones it has and `want` does not. */
export function ctTimeoutChanges(want: DesiredTable, have: ActualTable | null): { add: DesiredCtTimeout[]; stale: string[] } {
  const wanted = new Set((want.ctTimeouts ?? []).map((o) => o.name));
  const present = have?.ctTimeouts ?? new Set<string>();
  return { add: (want.ctTimeouts ?? []).filter((o) => !present.has(o.name)), stale: [...present].filter((n) => !wanted.has(n)) };
}

/**
 * Text commands that add (`objects`) or delete (`names`) ct timeout objects of `t`. Text because nft 1.0.6 loses a
 * policy given in JSON and aborts on a JSON delete of one. Names and states are checked here, so the text is built
 * from identifiers and integers only.
 */
export function ctTimeoutText(t: Pick<DesiredTable, 'family' | 'name'>, objects: readonly DesiredCtTimeout[], names: readonly string[] = []): string {
  const lines = objects.map((o) => {
    const policy = Object.entries(o.policy).map(([k, v]) => {
      if (!STATE.test(k) || !Number.isInteger(v) || v < 1) throw new Error(`bad ct timeout policy ${k}: ${v}`);
      return `${k}: ${v}`;
    });
    return `add ct timeout ${t.family} ${ident(t.name)} ${ident(o.name)} { protocol ${o.protocol}; l3proto ${o.l3proto}; policy = { ${policy.join(', ')} }; }`;
  });
  for (const n of names) lines.push(`delete ct timeout ${t.family} ${ident(t.name)} ${ident(n)}`);
  return lines.length ? lines.join('\n') + '\n' : '';
}
