// Test helper: an SLB kernel in memory that applies fwlb's transactions all or nothing, refusing what nft refuses
// (a missing chain, a chain still jumped to, an element that exists or does not), and can fail on demand.
import type { NftJson } from '@fwlb/nft';
import {
  applyTablesCommands,
  declarationsModel,
  flowMapModel,
  NO_TABLES,
  poolTargets,
  SlbCounters,
  SlbKernel,
  SlbKernelState,
  SlbTables,
  VipKey,
} from '@fwlb/slb';

export interface FakeSlbKernel extends SlbKernel {
  /** Every applied transaction, in order. */
  batches: NftJson[][];
  /** Reads of the table and of the counters. */
  reads: number;
  /** The IPv4 table (`ip`). */
  readonly state: SlbKernelState | null;
  /** Both tables. */
  readonly tables: SlbTables;
  /** The rules' statements per chain, as the fake kernel holds them (an `ip6` table's chains as "ip6 <name>"). */
  readonly rules: Map<string, any[][]>;
  counterValues: SlbCounters;
  failNext(): void;
  /** The DNAT targets of the VIP on this port, in slot order (the pool's elements while its rule DNATs). */
  targets(port: number): string[];
}

export function fakeSlbKernel(table = 'fwlb_slb'): FakeSlbKernel {
  let tables: SlbTables = NO_TABLES;
  let rules = new Map<string, any[][]>();
  let fail = false;
  const k: FakeSlbKernel = {
    batches: [],
    reads: 0,
    get state() {
      return tables.ip;
    },
    get tables() {
      return tables;
    },
    get rules() {
      return rules;
    },
    counterValues: { vipNew: new Map(), memberNew: new Map(), memberPackets: new Map() },
    failNext: () => (fail = true),
    read: async () => {
      k.reads++;
      return applyTablesCommands(tables, []);
    },
    counters: async () => {
      k.reads++;
      return k.counterValues;
    },
    declare: async (f) => {
      tables = applyTablesCommands(tables, declarationsModel(table, f), true);
    },
    declareFlowMaps: async (f, vips) => {
      tables = applyTablesCommands(
        tables,
        vips.map((v) => flowMapModel(table, f, v.id)),
        true,
      );
    },
    apply: async (cmds) => {
      if (fail) {
        fail = false;
        throw new Error('nft transaction failed (nothing applied): injected');
      }
      const next = applyTablesCommands(tables, cmds, true);
      const r = new Map([...rules].map(([c, v]) => [c, [...v]]));
      for (const c of cmds as any[]) {
        const [verb, body] = Object.entries(c)[0] as [string, any];
        const [kind, o] = Object.entries(body)[0] as [string, any];
        const name = (n: string) => (o.family === 'ip6' ? `ip6 ${n}` : n);
        if (kind === 'chain' && verb === 'add') r.set(name(o.name), r.get(name(o.name)) ?? []);
        else if (kind === 'chain' && verb === 'flush') r.set(name(o.name), []);
        else if (kind === 'chain' && verb === 'delete') r.delete(name(o.name));
        else if (kind === 'rule') r.get(name(o.chain))!.push(o.expr);
      }
      tables = next;
      rules = r;
      k.batches.push(cmds);
    },
    targets(port) {
      const state = tables.ip;
      const key = [...(state?.dispatch ?? [])].find(([k]) => JSON.parse(k)[2] === port)?.[0];
      const rule = key ? rules.get(state!.dispatch.get(key)!)?.[0] : undefined;
      // What the DNAT reaches: the pool's slots, and only while the VIP's rule has a DNAT statement.
      return key && rule?.some((s: any) => s.dnat) ? poolTargets(state, JSON.parse(key) as VipKey) : [];
    },
  };
  return k;
}
