// The SLB's ports to the kernel: its nft tables (one transaction, terse reads, counters) and the VIP addresses, so
// tests can put fakes in front of them; shell layer of libs/slb.
import type { NftJson, NftRunner } from '@fwlb/nft';
import { parseCounterSets, parseSlbListing, SlbCounters, SlbTables } from './kernel';
import { backendMap, declarationsText, flowMapText, isFlowMap, SLB_FAMILIES, SlbFamily, SLB_OBJECTS } from './render';

/** The part of libs/routing that manages VIP addresses, so tests can put a fake in front of the kernel. */
export interface AddressPort {
  labelledAddresses(ifname: string, label: string): Promise<string[]>;
  /** False when the address was there already: a failed change then leaves it where it was. */
  addAddress(ifname: string, addr: string, label: string): Promise<boolean | void>;
  delAddress(ifname: string, addr: string): Promise<void>;
}

/** The SLB tables in the kernel (`ip` and `ip6`): read (terse, no counter elements), one transaction, the counters. */
export interface SlbKernel {
  read(): Promise<SlbTables>;
  apply(cmds: NftJson[]): Promise<void>;
  /** Declares a family's table, its pool maps and counter sets (`declarationsText`; idempotent). */
  declare(family: SlbFamily): Promise<void>;
  /** Declares `flow` VIPs' pool maps in a family's table (`flowMapText`; idempotent). */
  declareFlowMaps(family: SlbFamily, vips: readonly { id: string; protocol: 'tcp' | 'udp' }[]): Promise<void>;
  /** The counter sets of the families given (those with a table). */
  counters(families?: readonly SlbFamily[]): Promise<SlbCounters>;
}

export function nftSlbKernel(nft: NftRunner, table: string): SlbKernel {
  const readFamily = async (f: SlbFamily) => {
    // The seven listings at once (about 0.2 s each at 1,000 VIPs); a map that is missing reads as null, and any
    // other failure fails the read (an unread pool must never pass for an empty one: its members would be down).
    const maps = [
      ...[SLB_OBJECTS.dispatch, backendMap('tcp'), backendMap('udp')].map((m) => nft.json(['list', 'map', f, table, m])),
      nft.json(['list', 'set', f, table, SLB_OBJECTS.endpoints]),
      nft.json(['list', 'set', f, table, SLB_OBJECTS.snatNode]),
      nft.json(['list', 'map', f, table, SLB_OBJECTS.snatTo]),
    ];
    const [terse, ...listings] = await Promise.all([nft.json(['-t', 'list', 'table', f, table]), ...maps]);
    if (!terse) return null;
    // `flow` VIPs' maps, named by the terse listing.
    const flows = ((terse as { nftables?: any[] }).nftables ?? []).flatMap((it) =>
      typeof it?.map?.name === 'string' && isFlowMap(it.map.name) ? [it.map.name] : [],
    );
    const flowListings = await Promise.all(flows.map((m: string) => nft.json(['list', 'map', f, table, m])));
    return parseSlbListing(terse, [...listings, ...flowListings]);
  };
  return {
    read: async () => {
      const [ip, ip6] = await Promise.all(SLB_FAMILIES.map(readFamily));
      return { ip, ip6 };
    },
    apply: (cmds) => nft.apply(cmds),
    declare: (f) => nft.applyText(declarationsText(table, f)),
    declareFlowMaps: (f, vips) => nft.applyText(vips.map((v) => flowMapText(table, f, v.id, v.protocol)).join('')),
    // The three counter sets by name, of the families that have a table. Why not `list sets`: it lists every set with
    // its elements (the 8,000 endpoints of 1,000 VIPs among them), and of a missing table nft answers it only after
    // reading the whole ruleset for its "did you mean" (0.08 s of CPU at 1,000 VIPs). Both tables' sets in one
    // parse: their keys carry the address, so they never collide.
    counters: async (families = SLB_FAMILIES) => {
      const names = [SLB_OBJECTS.vipNew, SLB_OBJECTS.memberNew, SLB_OBJECTS.memberPackets];
      const all = await Promise.all(families.flatMap((f) => names.map((n) => nft.json(['list', 'set', f, table, n]))));
      return parseCounterSets({ nftables: all.flatMap((l) => (l as { nftables?: unknown[] } | null)?.nftables ?? []) });
    },
  };
}
