// Test helper: an in-memory nft that applies fwlb's transactions to a table model (all or nothing) and can fail on demand.
import { ActualTable, NftJson, NftRunner } from '@fwlb/nft';

type Any = Record<string, any>;

export interface FakeNft extends NftRunner {
  /** Every applied batch, in order. */
  batches: NftJson[][];
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
        if (verb === 'add' && kind === 'table') t ??= { handle: 1, chains: new Map(), maps: new Map(), sets: new Map(), counters: new Map(), namedCounters: new Map() };
        else if (!t) throw new Error(`nft: no table for ${verb} ${kind}`);
        else if (verb === 'add' && kind === 'set') t.sets.set(o.name, { type: o.type, timeout: o.timeout });
        else if (verb === 'add' && kind === 'counter') t.namedCounters.set(o.name, { packets: 0, bytes: 0 });
        else if (verb === 'add' && kind === 'chain') {
          if (!t.chains.has(o.name)) t.chains.set(o.name, { type: o.type, hook: o.hook, prio: o.prio, policy: o.policy, handle: t.chains.size + 1, ruleComments: [] });
          r.set(o.name, r.get(o.name) ?? []);
        } else if (verb === 'add' && kind === 'rule') {
          const ch = t.chains.get(o.chain);
          if (!ch) throw new Error(`nft: no chain ${o.chain}`);
          for (const s of o.expr as Any[]) if (typeof s.counter === 'string' && !t.namedCounters.has(s.counter)) throw new Error(`nft: no counter ${s.counter}`);
          ch.ruleComments.push(o.comment);
          r.get(o.chain)!.push(o.expr);
        } else if (verb === 'flush' && kind === 'chain') {
          t.chains.get(o.name)!.ruleComments = [];
          r.set(o.name, []);
        } else if (verb === 'delete' && kind === 'chain') {
          t.chains.delete(o.name);
          r.delete(o.name);
        } else if (verb === 'delete' && kind === 'counter') {
          for (const rs of r.values()) for (const e of rs) if ((e as Any[]).some((s) => s.counter === o.name)) throw new Error(`nft: counter ${o.name} in use`);
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
    applyText: async () => undefined,
    read: async () => clone(table),
  };
  return fake;
}
