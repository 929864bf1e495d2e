// Test helper: an in-memory nft that applies fwlb's transactions to a table model (all or nothing) and can fail on demand.
import { ActualTable, NftJson, NftRunner } from '@fwlb/nft';

type Any = Record<string, any>;

export interface FakeNft extends NftRunner {
  /** Every applied batch, in order. */
  batches: NftJson[][];
  /** Every text batch, in order. */
  texts: string[];
  /** The rules' statements per chain, as the fake kernel holds them. */
  rules: Map<string, NftJson[][]>;
  failNext(): void;
}

export function fakeNft(): FakeNft {
  let table: ActualTable | null = null;
  let rules = new Map<string, NftJson[][]>();
  let failNext = false;
  const clone = (t: ActualTable | null): ActualTable | null =>
    t && {
      handle: t.handle,
      chains: new Map([...t.chains].map(([k, c]) => [k, { ...c, ruleComments: [...c.ruleComments] }])),
      maps: new Map(t.maps),
      sets: new Map(t.sets),
      counters: new Map(t.counters),
      namedCounters: new Map([...t.namedCounters].map(([k, v]) => [k, { ...v }])),
      ctTimeouts: new Set(t.ctTimeouts ?? []),
    };
  const fake: FakeNft = {
    batches: [],
    get rules() {
      return rules;
    },
    failNext: () => (failNext = true),
    apply: async (cmds) => {
      if (failNext) {
        failNext = false;
        throw new Error('nft transaction failed (nothing applied): injected');
      }
      if (!cmds.length) return;
      // Work on copies: a transaction that throws half way leaves nothing behind.
      let t = clone(table);
      const r = new Map([...rules].map(([k, v]) => [k, [...v]]));
      for (const c of cmds as Any[]) {
        const [verb, body] = Object.entries(c)[0] as [string, Any];
        const [kind, o] = Object.entries(body)[0] as [string, Any];
        if (verb === 'add' && kind === 'table')
          t ??= { handle: 1, chains: new Map(), maps: new Map(), sets: new Map(), counters: new Map(), namedCounters: new Map(), ctTimeouts: new Set() };
        else if (!t) throw new Error(`nft: no table for ${verb} ${kind}`);
        else if (verb === 'add' && kind === 'set') t.sets.set(o.name, { type: o.type, timeout: o.timeout });
        else if (verb === 'add' && kind === 'counter') t.namedCounters.set(o.name, { packets: 0, bytes: 0 });
        else if (verb === 'add' && kind === 'map') t.maps.set(o.name, { type: o.type, map: o.map, elements: new Map() });
        else if ((verb === 'add' || verb === 'delete') && kind === 'element') {
          const m = t.maps.get(o.name);
          if (!m) throw new Error(`nft: no map ${o.name}`);
          const elements = new Map(m.elements);
          for (const e of o.elem as Any[]) {
            if (verb === 'add') {
              // As nft: adding a key that is there with another value fails (EEXIST).
              // A map of counters names one for each key.
              const value = typeof e[1] === 'string' ? e[1] : Number(e[1]);
              if (typeof value === 'string' && !t.namedCounters.has(value)) throw new Error(`nft: no counter ${value}`);
              const had = elements.get(JSON.stringify(e[0]));
              if (had !== undefined && had !== value) throw new Error(`nft: element ${JSON.stringify(e[0])} exists`);
              elements.set(JSON.stringify(e[0]), value);
            } else if (!elements.delete(JSON.stringify(e))) throw new Error(`nft: no element ${JSON.stringify(e)} in ${o.name}`);
          }
          t.maps.set(o.name, { ...m, elements });
        } else if (verb === 'delete' && kind === 'map') t.maps.delete(o.name);
        else if (verb === 'delete' && kind === 'set') t.sets.delete(o.name);
        else if (verb === 'add' && kind === 'chain') {
          if (!t.chains.has(o.name))
            t.chains.set(o.name, { type: o.type, hook: o.hook, prio: o.prio, policy: o.policy, handle: t.chains.size + 1, ruleComments: [] });
          r.set(o.name, r.get(o.name) ?? []);
        } else if (verb === 'add' && kind === 'rule') {
          const ch = t.chains.get(o.chain);
          if (!ch) throw new Error(`nft: no chain ${o.chain}`);
          for (const s of o.expr as Any[])
            if (typeof s.counter === 'string' && !t.namedCounters.has(s.counter)) throw new Error(`nft: no counter ${s.counter}`);
          for (const s of o.expr as Any[])
            if (typeof s['ct timeout'] === 'string' && !t.ctTimeouts?.has(s['ct timeout'])) throw new Error(`nft: no ct timeout ${s['ct timeout']}`);
          ch.ruleComments.push(o.comment);
          r.get(o.chain)!.push(o.expr);
        } else if (verb === 'flush' && kind === 'map') {
          const m = t.maps.get(o.name);
          if (!m) throw new Error(`nft: no map ${o.name}`);
          t.maps.set(o.name, { ...m, elements: new Map() });
        } else if (verb === 'flush' && kind === 'chain') {
          t.chains.get(o.name)!.ruleComments = [];
          r.set(o.name, []);
        } else if (verb === 'delete' && kind === 'chain') {
          t.chains.delete(o.name);
          r.delete(o.name);
        } else if (verb === 'delete' && kind === 'counter') {
          for (const rs of r.values()) for (const e of rs) if ((e as Any[]).some((s) => s.counter === o.name)) throw new Error(`nft: counter ${o.name} in use`);
          for (const m of t.maps.values()) if ([...m.elements.values()].includes(o.name)) throw new Error(`nft: counter ${o.name} in use by a map`);
          t.namedCounters.delete(o.name);
        } else throw new Error(`fake nft: ${verb} ${kind} not modelled`);
      }
      table = t;
      rules = r;
      fake.batches.push(cmds);
    },
    check: async () => undefined,
    list: async () => null,
    json: async () => null,
    // The text the balancer sends: its table and its ct timeout objects (nft 1.0.6 cannot declare those in JSON).
    applyText: async (text) => {
      fake.texts.push(text);
      for (const line of text.split('\n').filter(Boolean)) {
        let m: RegExpMatchArray | null;
        if (/^add table /.test(line))
          table ??= { handle: 1, chains: new Map(), maps: new Map(), sets: new Map(), counters: new Map(), namedCounters: new Map(), ctTimeouts: new Set() };
        else if (/^delete table /.test(line)) table = null;
        else if ((m = /^add ct timeout \S+ \S+ (\S+) /.exec(line))) {
          if (!table) throw new Error('nft: no table');
          (table.ctTimeouts ??= new Set()).add(m[1]);
        } else if ((m = /^delete ct timeout \S+ \S+ (\S+)$/.exec(line))) {
          for (const rs of rules.values())
            for (const e of rs) if ((e as Any[]).some((x) => x['ct timeout'] === m![1])) throw new Error(`nft: ct timeout ${m[1]} in use`);
          table?.ctTimeouts?.delete(m[1]);
        } else throw new Error(`fake nft: text not modelled: ${line}`);
      }
    },
    texts: [],
    read: async () => clone(table),
  };
  return fake;
}
