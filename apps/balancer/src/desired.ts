// What a balancer's kernel should hold for a membership snapshot: the bucket table, the table of a switch still to
// come, and the pins of both; pure functions the reconciler composes (it owns the timer and the kernel).
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { syncGroupRescue, BucketTable } from '@fwlb/flowhash';
import type { MembershipSnapshot } from './membership';
import { bucketTable, RenderInput } from './render';
import type { Rescue } from './pins';
import type { PinSet } from './pin-maps';

/** Where pins come from (the session cache); absent without a session table. */
export interface PinSource {
  pins(table: BucketTable, markOf: ReadonlyMap<string, number>, restorable: ReadonlySet<string>, rescue?: Rescue): PinSet;
  /** The sessions known on each firewall (every node's, from the shared table). */
  sessionsByFirewall?(): ReadonlyMap<string, number>;
}

/** The render input of a snapshot. */
export function renderInput(config: ResolvedBalancerConfig, snap: MembershipSnapshot): RenderInput {
  return { config, live: snap.live, restorable: snap.restorable, suspect: snap.suspect };
}

/** The buckets whose owner would differ from the snapshot's with `live` taking new sessions. */
export function movedBuckets(config: ResolvedBalancerConfig, snap: MembershipSnapshot, live: string[]): number[] {
  const input = renderInput(config, snap);
  const now = bucketTable(input);
  const then = bucketTable({ ...input, live });
  return now.owner.flatMap((o, b) => (o !== then.owner[b] ? [b] : []));
}

/**
 * The table a switch to `live` leads to, or null when there is nothing to switch: the same owners, or no firewall
 * live on either side of it (the node then drops new flows, no-firewall-drop).
 */
export function switchTable(input: RenderInput, table: BucketTable, live: string[]): BucketTable | null {
  const later = bucketTable({ ...input, live });
  const any = (t: BucketTable) => t.owner.some((o) => o !== null);
  if (!any(table) || !any(later) || later.owner.every((o, b) => o === table.owner[b])) return null;
  return later;
}

/** Pins of two tables, one per session (the first wins a session both have). */
function mergePins(a: PinSet, b: PinSet): PinSet {
  const m = new Map(b);
  for (const [id, mark] of a) m.set(id, mark);
  return m;
}

/**
 * The pins of the current table and, until a pending switch, of the next one too: each is right under its own, and
 * a pin that agrees with the bucket's firewall changes nothing.
 */
export function desiredPins(
  source: PinSource,
  input: RenderInput,
  markOf: ReadonlyMap<string, number>,
  groups: string[][],
  table: BucketTable,
  next: { table: BucketTable; live: string[] } | null,
): PinSet {
  const restorable = new Set(input.restorable);
  const pinsFor = (t: BucketTable, live: readonly string[]) => source.pins(t, markOf, restorable, syncGroupRescue(input.config.hash.buckets, live, groups));
  const pins = pinsFor(table, input.live);
  return next ? mergePins(pins, pinsFor(next.table, next.live)) : pins;
}
