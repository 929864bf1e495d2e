// What a reconcile pass reports and what the reconciler needs and tells: the types at the reconciler's edges, and
// the pass's stopwatch. Shell layer of apps/balancer (see reconciler.ts).
import type { ActualRoute, ActualRule, NetlinkError, RoutingPlan } from '@fwlb/routing';

/** The part of libs/routing the reconciler uses, so tests can put a fake in front of the kernel. */
export interface RoutingPort {
  rules(): Promise<ActualRule[]>;
  routes(): Promise<ActualRoute[]>;
  apply(plan: RoutingPlan): Promise<NetlinkError[]>;
}

export interface ReconcileResult {
  nftCommands: number;
  /** Pins written: added, given another firewall or removed (all of them when the maps were replaced). */
  pinChanges: number;
  routingChanges: number;
  routingErrors: string[];
  tableHandle: number | null;
  at: number;
  /** Where the pass spent its time (ms): the pins, reading the kernel, the diff, the transaction, the read back. */
  ms: { pins: number; read: number; diff: number; apply: number; readBack: number };
  /** Whether the pass listed the nft table (see LISTING_TRUST_MS). */
  listed: boolean;
}

/** Milliseconds since the last call (the first: since `t0`). */
export function stopwatch(t0: number): () => number {
  let mark = t0;
  return () => {
    const now = performance.now();
    const ms = Math.round(now - mark);
    mark = now;
    return ms;
  };
}

/** What a reconciler tells its listeners (see Reconciler.events). */
export interface ReconcilerEvents {
  tableChange: [moved: number[]];
  tableComing: [moved: number[], at: number];
  reconciled: [seconds: number, ok: boolean];
}
