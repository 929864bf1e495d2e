// The reads of the session table into a node's session cache: every record at start, the buckets a table change
// moves (ahead of a coming switch, at it and after the writes in flight), and the records a sibling says it moved.
// Shell layer of apps/balancer; the session layer owns it and tells it of table changes.
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { deleteConntrack, getConntracks } from '@fwlb/conntrack';
import { bucketOfId, decodeValue, parseSessionId, SessionRecord, SessionTable } from '@fwlb/session-table';
import type { FlowKey } from '@fwlb/flowhash';
import type { SessionCache } from './pins';
import type { Reconciler } from './reconciler';
import { slots } from './membership';
import { changeLeadMs, LEAD_MIN_SESSIONS } from './change-lead';

/** Ids one `moved` message may carry: the writer sends one per Lua batch of at most 1,000 records. */
const MOVED_IDS_MAX = 1000;
/**
 * How long before a switch a read ahead of it may have been, and still stand for the read at the switch: an admin
 * change takes effect a couple of seconds after it is made, and the read at the switch is made only to catch what
 * changed since the last read, which the read after the writes in flight catches too.
 */
const PREREAD_LEAD_MS = 10_000;

/** The configured firewalls as records and conntrack marks name them. */
export interface FirewallIndex {
  ids: ReadonlySet<string>;
  firewallOf: (mark: number) => string | undefined;
}

/**
 * What this node's conntrack entry on a moved record's tuple is, against the record (a connection on another firewall
 * than an earlier one on the tuple): `earlier`, an earlier connection's on another firewall, which goes; `same`, none,
 * or one on the record's firewall; `later`, a still later connection's, started after the record's was first seen
 * (clients reuse a port within a second, and news of a record can take longer): this node's view is the newer one,
 * and neither the entry nor its start record is touched. Entries without a start time (the kernel keeps one with
 * net.netfilter.nf_conntrack_timestamp=1) count as earlier. The record's time is its writer's clock: the nodes'
 * clocks must agree to well within the time a client takes to reuse a port.
 */
export function staleness(
  e: { mark: number; start?: number } | null,
  rec: { firewall: string; firstSeen: number },
  firewallOf: (mark: number) => string | undefined,
): 'earlier' | 'same' | 'later' {
  const fw = e ? firewallOf(e.mark) : undefined;
  if (!e || !fw || fw === rec.firewall) return 'same';
  return e.start !== undefined && e.start > rec.firstSeen ? 'later' : 'earlier';
}

export function firewallIndex(config: ResolvedBalancerConfig): FirewallIndex {
  const byMark = new Map(slots(config).map((s) => [s.mark, s.id]));
  return { ids: new Set(config.firewalls.map((f) => f.id)), firewallOf: (mark) => byMark.get(mark) };
}

export interface SessionReadsDeps {
  table: SessionTable;
  cache: SessionCache;
  hash: { seed: number; buckets: number };
  /** A record's expiry is capped at this far ahead: a record cannot hold a pin longer than a node would refresh it. */
  ttlMax: number;
  /** How long the siblings' writes in flight take to land (two flush periods and a second). */
  settleMs: number;
  firewalls: () => FirewallIndex;
  reconciler: Pick<Reconciler, 'currentTable' | 'comingTable'>;
  trigger: () => void;
  /** Make this node's `conn` sets hold these TCP sessions under their firewall only (see connRecordOps). */
  recordStarts: (sessions: readonly (FlowKey & { firewall: string })[]) => Promise<void>;
  log: (m: string) => void;
}

export class SessionReads {
  /** Records refused here (not a configured firewall, malformed, in the wrong bucket). */
  rejected = 0;
  /** Conntrack entries of earlier connections deleted because a new connection on their tuple took another firewall. */
  staleDeleted = 0;
  /** Moved records left alone because this node's entry on the tuple is a still later connection's (see staleness). */
  laterKept = 0;
  /** Records this node read per ms on its last read of many (null before one). */
  private readPerMs: number | null = null;
  private reloading: Promise<void> | null = null;
  private readonly waiting = new Set<number>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly d: SessionReadsDeps) {}

  /** A record from Redis into the cache; its bucket, or null when it was not taken. */
  private admit(rec: SessionRecord): number | null {
    if (!this.d.firewalls().ids.has(rec.firewall)) return (this.rejected++, null);
    const cap = Date.now() + this.d.ttlMax;
    return this.d.cache.put(rec.expires > cap ? { ...rec, expires: cap } : rec);
  }

  /**
   * Records from Redis into the cache (a trigger when one is an exception now): those of `buckets`, or every one;
   * returns how many.
   */
  async load(buckets: readonly number[] = this.d.table.allBuckets): Promise<number> {
    const { hash, reconciler, trigger } = this.d;
    const t = reconciler.currentTable();
    const coming = reconciler.comingTable();
    let exceptions = 0;
    let n = 0;
    // Records as Redis holds them, checked here without a record object each: the id must be a session of the
    // bucket it is stored in, the value well formed, the firewall one of ours.
    const now = Date.now();
    const cap = now + this.d.ttlMax;
    await this.d.table.bucketEntries(buckets, (b, id, v) => {
      const val = decodeValue(v);
      if (!val || !this.d.firewalls().ids.has(val.firewall) || bucketOfId(id, hash.seed, hash.buckets) !== b) return (this.rejected++, false);
      if (val.expires < now) return false;
      n++;
      if (this.d.cache.putId(id, val.firewall, Math.min(val.expires, cap), b) === null) return true;
      if ((t && t.owner[b] !== val.firewall) || (coming && coming.owner[b] !== val.firewall)) exceptions++;
      return true;
    });
    if (exceptions) trigger();
    if (n >= LEAD_MIN_SESSIONS) this.readPerMs = n / Math.max(1, Date.now() - now);
    return n;
  }

  /**
   * How much later than usual a change that moves `buckets` should take effect, so that every node has read their
   * sessions and pinned those that need it before it does: an estimate from the sessions stored there and this
   * node's read rate. 0 for a change that moves few sessions. Why: a node that loses its state, or gets flows
   * from another node, in the seconds after a change would otherwise hash sessions whose pins are still on the way;
   * a planned change can wait for them.
   */
  async leadFor(buckets: readonly number[]): Promise<number> {
    const n = await this.d.table.bucketSizes(buckets);
    const ms = changeLeadMs(n, this.readPerMs);
    if (!ms) return 0;
    this.d.log(`a change that moves ${buckets.length} buckets (${n} sessions) takes effect ${ms} ms later than usual: their pins first`);
    return ms;
  }

  /**
   * A node learns its own sessions from its conntrack; those that started on a sibling of the same side it learns
   * from Redis. They matter only as exceptions, and a session becomes one only when the bucket table moves its
   * bucket: then the moved buckets' records are read again (the table keeps them by bucket). One reload at a time;
   * buckets that move during one are read by the next.
   */
  reload(buckets: readonly number[], why: string): void {
    const { log } = this.d;
    for (const b of buckets) this.waiting.add(b);
    if (this.reloading) return;
    const bs = [...this.waiting].sort((a, b) => a - b);
    this.waiting.clear();
    const t0 = Date.now();
    this.reloading = this.load(bs)
      .then((n) => log(`reloaded ${n} sessions of ${bs.length} buckets from the session table (${why}) in ${Date.now() - t0} ms`))
      .catch((e) => log(`session reload (${why}) failed, pins stay as they are: ${(e as Error).message}`))
      .finally(() => {
        this.reloading = null;
        if (this.waiting.size) this.reload([], 'buckets that moved during the last reload');
      });
  }

  /**
   * A switch to another table is coming: the buckets it moves are read now, so that their pins are in the kernel by
   * the switch (they agree with the current table until then). When the switch comes, those buckets are read only
   * once the writes in flight have landed.
   */
  readonly tableComing = (moved: number[]): void => {
    const now = Date.now();
    for (const b of moved) this.preread.set(b, now);
    this.reload(moved, 'bucket table changes soon');
  };

  /** When each bucket was read ahead of a coming switch. */
  private readonly preread = new Map<number, number>();

  /**
   * The moved buckets are read at once (unless they were read ahead of this switch) and once more after the
   * siblings' writes in flight (two flush periods and a second) have landed.
   */
  readonly tableChanged = (moved: number[]): void => {
    const now = Date.now();
    const fresh = (b: number) => now - (this.preread.get(b) ?? -Infinity) < this.d.settleMs + PREREAD_LEAD_MS;
    const unread = moved.filter((b) => !fresh(b));
    for (const b of moved) this.preread.delete(b);
    if (unread.length) this.reload(unread, 'bucket table changed');
    const tm = setTimeout(() => {
      this.timers.delete(tm);
      this.reload(moved, 'bucket table changed, writes in flight landed');
    }, this.d.settleMs);
    this.timers.add(tm);
  };

  /**
   * A sibling rewrote some records' firewall, or deleted them (see TableEvent 'moved'): take them as Redis holds them
   * now, and reconcile if a pin appears or goes. The ids come from the network: only well-formed ones count.
   */
  async refresh(ids: unknown): Promise<void> {
    if (!Array.isArray(ids)) return;
    const { reconciler, trigger, log } = this.d;
    const valid = ids.filter((id): id is string => typeof id === 'string' && parseSessionId(id) !== null).slice(0, MOVED_IDS_MAX);
    const t = reconciler.currentTable();
    const wasPin = valid.some((id) => this.d.cache.isPinned(id, t));
    const recs = await this.d.table.get(valid);
    for (const id of valid) this.d.cache.deleteId(id);
    for (const rec of recs) this.admit(rec);
    if (wasPin || recs.some((rec) => this.d.cache.isException(rec, t))) trigger();
    // A new connection on an earlier one's tuple: this node may still hold the earlier one's start record and
    // conntrack entry (in TIME_WAIT, or one direction of it), either of which would send the new connection's
    // packets to the earlier firewall if the routers move it here. The start record takes the new firewall first,
    // then such an entry goes: the next packet finds its firewall as a flow without state does (the conn sets).
    // Neither when this node's entry is a still later connection's (see staleness). Not on a record that is gone:
    // its connection's end reaches Redis seconds after it happens, when a later connection on the tuple may have
    // started and need this node's record of that start.
    const ours = recs.filter((rec) => this.d.firewalls().ids.has(rec.firewall));
    const found = await getConntracks(
      ours.map((rec) => ({ src: rec.outerAddr, dst: rec.innerAddr, sport: rec.outerPort, dport: rec.innerPort, proto: rec.proto })),
    ).catch((e) => {
      log(`conntrack lookups of ${ours.length} moved sessions failed: ${(e as Error).message}`);
      return ours.map(() => null);
    });
    const plan = ours.map((rec, i) => staleness(found[i], rec, this.d.firewalls().firewallOf));
    const correct = ours.filter((_, i) => plan[i] !== 'later');
    if (correct.length)
      await this.d.recordStarts(correct).catch((e) => log(`conn records of ${correct.length} moved sessions not written: ${(e as Error).message}`));
    let deleted = 0;
    for (let i = 0; i < ours.length; i++) if (plan[i] === 'earlier' && (await deleteConntrack(found[i]!).catch(() => false))) deleted++;
    this.laterKept += plan.filter((p) => p === 'later').length;
    if (deleted) {
      this.staleDeleted += deleted;
      log(`deleted ${deleted} conntrack entries of earlier connections whose tuple a new connection on another firewall took`);
    }
  }

  stop(): void {
    for (const tm of this.timers) clearTimeout(tm);
  }
}
