// Test helper: an SLB kernel in memory that applies fwlb's transactions all or nothing, refusing what nft refuses
// (a missing chain, a chain still jumped to, an element that exists or does not), and can fail on demand.
import type { NftJson } from '@fwlb/nft';
import { applySlbCommands, declarationsModel, poolTargets, SlbCounters, SlbKernel, SlbKernelState, VipKey } from '@fwlb/slb';

export interface FakeSlbKernel extends SlbKernel {
  /** Every applied transaction, in order. */
  batches: NftJson[][];
  /** Reads of the table and of the counters. */
  reads: number;
  readonly state: SlbKernelState | null;
  /** The rules' statements per chain, as the fake kernel holds them. */
  readonly rules: Map<string, any[][]>;
  counterValues: SlbCounters;
  failNext(): void;
  /** The DNAT targets of the VIP on this port, in slot order (the pool's elements while its rule DNATs). */
  targets(port: number): string[];
}

export function fakeSlbKernel(table = 'fwlb_slb'): FakeSlbKernel {
  let state: SlbKernelState | null = null;
  let rules = new Map<string, any[][]>();
  let fail = false;
  const k: FakeSlbKernel = {
    batches: [],
    reads: 0,
    get state() {
      return state;
    },
    get rules() {
      return rules;
    },
    counterValues: { vipNew: new Map(), memberNew: new Map(), memberPackets: new Map() },
    failNext: () => (fail = true),
    read: async () => {
      k.reads++;
      return applySlbCommands(state, []);
    },
    counters: async () => {
      k.reads++;
      return k.counterValues;
    },
    declare: async () => {
      state = applySlbCommands(state, declarationsModel(table), true);
    },
    apply: async (cmds) => {
      if (fail) {
        fail = false;
        throw new Error('nft transaction failed (nothing applied): injected');
      }
      const next = applySlbCommands(state, cmds, true);
      const r = new Map([...rules].map(([c, v]) => [c, [...v]]));
      for (const c of cmds as any[]) {
        const [verb, body] = Object.entries(c)[0] as [string, any];
        const [kind, o] = Object.entries(body)[0] as [string, any];
        if (kind === 'chain' && verb === 'add') r.set(o.name, r.get(o.name) ?? []);
        else if (kind === 'chain' && verb === 'flush') r.set(o.name, []);
        else if (kind === 'chain' && verb === 'delete') r.delete(o.name);
        else if (kind === 'rule') r.get(o.chain)!.push(o.expr);
      }
      state = next;
      rules = r;
      k.batches.push(cmds);
    },
    targets(port) {
      const key = [...(state?.dispatch ?? [])].find(([k]) => JSON.parse(k)[2] === port)?.[0];
      const rule = key ? rules.get(state!.dispatch.get(key)!)?.[0] : undefined;
      // What the DNAT reaches: the pool's slots, and only while the VIP's rule has a DNAT statement.
      return key && rule?.some((s: any) => s.dnat) ? poolTargets(state, JSON.parse(key) as VipKey) : [];
    },
  };
  return k;
}
