// Layer 3 exceptions: the sessions known to this node (from Redis at start, then from its own conntrack), and from
// them the pins: the sessions whose firewall is not what the current bucket table gives; pure layer of apps/balancer.
import { bucketOf, BucketTable } from '@fwlb/flowhash';
import type { SessionRecord } from '@fwlb/session-table';
import { bucketOfId, sessionId } from '@fwlb/session-table';

/** For a firewall that is gone: the live member of its sync group that takes bucket b, or null (syncGroupRescue). */
export type Rescue = (firewall: string, bucket: number) => string | null;

/** Packing of a cached session: its expiry (seconds after the cache's base), bucket (16 bits) and firewall (8 bits). */
const FW_BITS = 2 ** 8;
const LOW = 2 ** 16 * FW_BITS;

/**
 * The sessions this node knows, by id and by bucket and firewall: the pins of a table are the groups whose firewall
 * is not their bucket's owner, so computing them costs the buckets times the firewalls plus the pins, not a walk
 * over every session. Each session is its id and one number (expiry, bucket and firewall packed): the tuple is
 * parsed from the id again only when its pin is written. Why: a record object per session made a million sessions several times
 * the heap (`session-scale.test.ts` reports the controller's RSS).
 */
export class SessionCache {
  /** id → packed expiry, bucket and firewall (see LOW). */
  private readonly known = new Map<string, number>();
  /** bucket → firewall index → ids. */
  private readonly groups: Map<number, Set<string>>[];
  private readonly fwIndex = new Map<string, number>();
  private readonly fwNames: string[] = [];
  /** Expiries are kept in seconds after this (ms since the epoch), so a packed session fits a double's 53 bits. */
  private readonly base = Date.now() - 1000;
  /** Sessions not cached because the cache was full (they are still in Redis and in the kernels). */
  dropped = 0;

  /** `maxEntries` bounds memory under a flood: about 150 bytes a session, 2M sessions ≈ 300 MB at most. */
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

  private indexOf(firewall: string): number | null {
    let i = this.fwIndex.get(firewall);
    if (i === undefined) {
      if (this.fwNames.length >= FW_BITS) return null;
      i = this.fwNames.push(firewall) - 1;
      this.fwIndex.set(firewall, i);
    }
    return i;
  }

  private unpack(v: number): { expires: number; bucket: number; fw: number } {
    const low = v % LOW;
    return { expires: this.base + Math.floor(v / LOW) * 1000, bucket: Math.floor(low / FW_BITS), fw: low % FW_BITS };
  }

  /** `id`: the record's session id, when the caller has it. Returns the session's bucket, or null when not cached. */
  put(rec: SessionRecord, id = sessionId(rec)): number | null {
    return this.putId(
      id,
      rec.firewall,
      rec.expires,
      this.known.has(id) ? undefined : (bucketOfId(id, this.seed, this.buckets) ?? bucketOf(rec, this.seed, this.buckets)),
    );
  }

  /**
   * A session by its id: its firewall and expiry, and its bucket when the caller knows it (else it is computed from
   * the id). Returns the bucket, or null when it was not cached (the cache is full, or the id does not parse).
   */
  putId(id: string, firewall: string, expires: number, bucketIfKnown?: number): number | null {
    const old = this.known.get(id);
    if (old === undefined && this.known.size >= this.maxEntries) {
      this.dropped++;
      return null;
    }
    const fw = this.indexOf(firewall);
    if (fw === null) return (this.dropped++, null);
    const bucket = old !== undefined ? this.unpack(old).bucket : (bucketIfKnown ?? bucketOfId(id, this.seed, this.buckets));
    if (bucket === null) return null;
    if (old !== undefined) this.ungroup(id, old);
    const secs = Math.max(0, Math.ceil((expires - this.base) / 1000));
    this.known.set(id, secs * LOW + bucket * FW_BITS + fw);
    const g = this.groups[bucket];
    const set = g.get(fw);
    if (set) set.add(id);
    else g.set(fw, new Set([id]));
    return bucket;
  }

  private ungroup(id: string, v: number): void {
    const { bucket, fw } = this.unpack(v);
    const g = this.groups[bucket];
    const set = g.get(fw);
    if (!set) return;
    set.delete(id);
    if (!set.size) g.delete(fw);
  }

  /**
   * An ended session: its record goes while it holds the firewall the end was seen on, as in Redis (see the session
   * table's DEL script); one on another firewall is a later connection's on the same tuple.
   */
  delete(rec: SessionRecord): void {
    const id = sessionId(rec);
    if (this.firewallOf(id) === rec.firewall) this.deleteId(id);
  }

  /** Sessions cached on each firewall: the groups' sizes, so the cost is the buckets times the firewalls. */
  sessionsByFirewall(): Map<string, number> {
    const n = new Map<string, number>();
    for (const g of this.groups) for (const [fw, ids] of g) n.set(this.fwNames[fw], (n.get(this.fwNames[fw]) ?? 0) + ids.size);
    return n;
  }

  /** The firewall a cached session is on, if it is cached. */
  firewallOf(id: string): string | undefined {
    const v = this.known.get(id);
    return v === undefined ? undefined : this.fwNames[this.unpack(v).fw];
  }

  /** Is this session cached and a pin under `table`? */
  isPinned(id: string, table: BucketTable | null): boolean {
    const v = this.known.get(id);
    if (v === undefined || !table) return false;
    const { bucket, fw } = this.unpack(v);
    return table.owner[bucket] !== this.fwNames[fw];
  }

  deleteId(id: string): void {
    const v = this.known.get(id);
    if (v === undefined) return;
    this.known.delete(id);
    this.ungroup(id, v);
  }

  /** Drop what has expired. */
  reap(now: number): void {
    for (const [id, v] of this.known)
      if (this.unpack(v).expires < now) {
        this.known.delete(id);
        this.ungroup(id, v);
      }
  }

  /**
   * Pins (session id → mark): sessions on a reachable firewall other than their bucket's owner. Sessions on an unreachable firewall
   * get no pin (they are re-hashed, not black-holed), and sessions where the table agrees need none: the map
   * holds only the exceptions, and the fast path stays one lookup.
   */
  pins(table: BucketTable, markOf: ReadonlyMap<string, number>, reachable: ReadonlySet<string>, rescue?: Rescue): Map<string, number> {
    const out = new Map<string, number>();
    this.groups.forEach((g, bucket) => {
      for (const [fwi, ids] of g) {
        const firewall = this.fwNames[fwi];
        // A session on a firewall that is gone goes to the live member of its sync group that holds its state;
        // without a group it is re-hashed.
        const fw = reachable.has(firewall) ? firewall : (rescue?.(firewall, bucket) ?? null);
        if (fw === null || table.owner[bucket] === fw) continue;
        const mark = markOf.get(fw);
        if (mark === undefined) continue;
        for (const id of ids) out.set(id, mark);
      }
    });
    return out;
  }

  /** Would this session be a pin under `table`? (Then the kernel needs a reconcile soon.) `bucket`: when known. */
  isException(rec: SessionRecord, table: BucketTable | null, bucket?: number): boolean {
    return !!table && table.owner[bucket ?? bucketOf(rec, this.seed, this.buckets)] !== rec.firewall;
  }
}
