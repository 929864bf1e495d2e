// Layer 3 exceptions: the sessions known to this node (from Redis at start, then from its own conntrack), and from
// them the pins: the sessions whose firewall is not what the current bucket table gives; pure layer of apps/balancer.
import { bucketOf, BucketTable } from '@fwlb/flowhash';
import type { SessionRecord } from '@fwlb/session-table';
import { sessionId } from '@fwlb/session-table';
import type { Pin } from './render';

/** For a firewall that is gone: the live member of its sync group that takes bucket b, or null (syncGroupRescue). */
export type Rescue = (firewall: string, bucket: number) => string | null;

interface Known {
  rec: SessionRecord;
  /** The flow's bucket; it depends only on the key and the seed, so it is computed once. */
  bucket: number;
}

/**
 * The sessions this node knows, by id and by bucket and firewall: the pins of a table are the groups whose firewall
 * is not their bucket's owner, so computing them costs the buckets times the firewalls plus the pins, not a walk
 * over every session (a million of them took the reconciler's loop for a quarter of a second).
 */
export class SessionCache {
  private readonly known = new Map<string, Known>();
  /** bucket → firewall → the sessions of that bucket on that firewall. */
  private readonly groups: Map<string, Set<Known>>[];
  /** Sessions not cached because the cache was full (they are still in Redis and in the kernels). */
  dropped = 0;

  /** `maxEntries` bounds memory under a flood: about 250 bytes a session, 2M sessions ≈ 500 MB at most. */
  constructor(
    private readonly seed: number,
    private readonly buckets: number,
    readonly maxEntries = 2_000_000,
  ) {
    this.groups = Array.from({ length: buckets }, () => new Map());
  }

  get size(): number {
    return this.known.size;
  }

  put(rec: SessionRecord): void {
    const id = sessionId(rec);
    const old = this.known.get(id);
    if (!old && this.known.size >= this.maxEntries) {
      this.dropped++;
      return;
    }
    if (old) this.ungroup(old);
    const k = { rec, bucket: old?.bucket ?? bucketOf(rec, this.seed, this.buckets) };
    this.known.set(id, k);
    const g = this.groups[k.bucket];
    const set = g.get(rec.firewall);
    if (set) set.add(k);
    else g.set(rec.firewall, new Set([k]));
  }

  private ungroup(k: Known): void {
    const g = this.groups[k.bucket];
    const set = g.get(k.rec.firewall);
    if (!set) return;
    set.delete(k);
    if (!set.size) g.delete(k.rec.firewall);
  }

  delete(rec: SessionRecord): void {
    this.deleteId(sessionId(rec));
  }

  /** The cached record of a session id, if any. */
  get(id: string): SessionRecord | undefined {
    return this.known.get(id)?.rec;
  }

  deleteId(id: string): void {
    const k = this.known.get(id);
    if (!k) return;
    this.known.delete(id);
    this.ungroup(k);
  }

  /** Drop what has expired. */
  reap(now: number): void {
    for (const [id, k] of this.known)
      if (k.rec.expires < now) {
        this.known.delete(id);
        this.ungroup(k);
      }
  }

  /**
   * Pins: sessions on a reachable firewall other than their bucket's owner. Sessions on an unreachable firewall
   * get no pin (they are re-hashed, not black-holed), and sessions where the table agrees need none: the map
   * holds only the exceptions, and the fast path stays one lookup.
   */
  pins(table: BucketTable, markOf: ReadonlyMap<string, number>, reachable: ReadonlySet<string>, rescue?: Rescue): Pin[] {
    const out: Pin[] = [];
    this.groups.forEach((g, bucket) => {
      for (const [firewall, set] of g) {
        // A session on a firewall that is gone goes to the live member of its sync group that holds its state;
        // without a group it is re-hashed.
        const fw = reachable.has(firewall) ? firewall : (rescue?.(firewall, bucket) ?? null);
        if (fw === null || table.owner[bucket] === fw) continue;
        const mark = markOf.get(fw);
        if (mark === undefined) continue;
        for (const { rec } of set)
          out.push({ outerAddr: rec.outerAddr, outerPort: rec.outerPort, innerAddr: rec.innerAddr, innerPort: rec.innerPort, proto: rec.proto, mark });
      }
    });
    return out;
  }

  /** Would this session be a pin under `table`? (Then the kernel needs a reconcile soon.) */
  isException(rec: SessionRecord, table: BucketTable | null): boolean {
    return !!table && table.owner[bucketOf(rec, this.seed, this.buckets)] !== rec.firewall;
  }
}
