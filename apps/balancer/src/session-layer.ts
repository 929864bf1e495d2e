// The session layer of a node (layers 2-4): Redis client, session table, conntrack event stream and sync, the
// session cache the pins come from, and the shared health views and bucket epochs; shell layer of apps/balancer (the
// only place that wires libs/conntrack and libs/session-table together). main.ts owns it; it reaches the reconciler
// and the membership only through the operations it is given (pins in, table changes out, agreement and admin in).
import type { Membership } from './membership';
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { ConntrackEvents, deleteConntrack, dumpConntrack, getConntrack } from '@fwlb/conntrack';
import { bucketOfId, connect, decodeValue, parseSessionId, ready, sessionId, SessionQuery, SessionRecord, SessionTable } from '@fwlb/session-table';
import { AgreementLoop, hashConfigDigest } from './agreement';
import { SessionCache } from './pins';
import type { Reconciler } from './reconciler';
import { slots } from './membership';
import { answered, recordTtl, SessionSync, tracked } from './session-sync';
import { changeLeadMs, LEAD_MIN_SESSIONS } from './change-lead';
import { throttledRead } from '@fwlb/service';

/** Ids one `moved` message may carry: the writer sends one per Lua batch of at most 1,000 records. */
const MOVED_IDS_MAX = 1000;
/**
 * How long before a switch a read ahead of it may have been, and still stand for the read at the switch: an admin
 * change takes effect a couple of seconds after it is made, and the read at the switch is made only to catch what
 * changed since the last read, which the read after the writes in flight catches too.
 */
const PREREAD_LEAD_MS = 10_000;

/** What the API serves about sessions. */
export interface SessionsView {
  query(q: SessionQuery): Promise<SessionRecord[]>;
  count(): Promise<{ redis: number | null; grace: number | null; kernel: number; redisError?: string }>;
  metrics(): Record<string, unknown>;
  /** Every node's fresh health view (firewall → up), by node name; null when Redis does not answer. */
  healthViews(): Promise<Record<string, Record<string, boolean>> | null>;
}

export interface SessionsHandle {
  view: SessionsView;
  /**
   * Share an admin change with every node (they apply it on the event), to take effect at `at`; returns the time
   * in force (an earlier one when the same change was shared already).
   */
  shareAdmin(id: string, enabled: boolean, at: number): Promise<number>;
  /** Conditions an operator must see (an epoch that was not applied). */
  alarms(): string[];
  /** This node's own health view changed: publish it (the leader then computes a new epoch). */
  publishHealth(view: Record<string, boolean>): void;
  /** A reloaded config (the membership has it already): its firewalls and digest, published at once. */
  reconfigure(next: ResolvedBalancerConfig): void;
  stop(): void;
}

/** What the layer needs from the node: the reconciler it feeds pins to, the membership it tells the agreement. */
export interface SessionLayerDeps {
  config: ResolvedBalancerConfig;
  reconciler: Reconciler;
  membership: Membership;
  /** Ask for a reconcile soon (a pin appeared or went, an epoch or admin change arrived). */
  trigger: () => void;
  log: (m: string) => void;
  /** The shared admin state changed this node's: save it (the state file). */
  onAdmin?: (admin: Record<string, boolean>) => void;
}

/**
 * Loads the sessions Redis knows into the cache before the first reconcile (so the pins are in the kernel before
 * this node forwards anything new), then follows conntrack. Redis being away at start is not fatal: the node
 * starts with the pins the kernel already has and catches up when Redis answers.
 */
export class SessionLayer implements SessionsHandle {
  private readonly redis: ReturnType<typeof connect>;
  private readonly table: SessionTable;
  private readonly cache: SessionCache;
  private readonly ttl: { min: number; max: number };
  private readonly settleMs: number;
  private firewallIds: Set<string>;
  private byMark: Map<number, string>;
  private rejectedHere = 0;
  private staleDeleted = 0;
  private reloading: Promise<void> | null = null;
  private readonly waiting = new Set<number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly intervals: NodeJS.Timeout[] = [];
  private sync!: SessionSync;
  private events!: ConntrackEvents;
  private agreement!: AgreementLoop;
  private sub: Promise<Awaited<ReturnType<SessionTable['subscribe']>> | null> = Promise.resolve(null);
  /** Records this node read per ms on its last read of many (null before one). */
  private readPerMs: number | null = null;
  readonly view: SessionsView;

  /** The layer, started: null when the config has no session table. */
  static async start(deps: SessionLayerDeps): Promise<SessionLayer | null> {
    if (!deps.config.sessionTable) return null;
    const layer = new SessionLayer(deps);
    await layer.loadAtStart();
    layer.follow();
    await layer.share();
    return layer;
  }

  private constructor(private readonly d: SessionLayerDeps) {
    const { config } = d;
    const st = config.sessionTable!;
    this.redis = connect({ ...st, node: config.name });
    this.redis.on('error', () => undefined); // reconnects by itself; the sync logs what matters
    this.table = new SessionTable(this.redis, config.name, st.keyPrefix, { seed: config.hash.seed, buckets: config.hash.buckets });
    this.cache = new SessionCache(config.hash.seed, config.hash.buckets);
    // A record from Redis becomes a pin only if it names a configured firewall; its expiry is capped, so a record
    // cannot hold a pin for longer than a node would refresh it.
    this.ttl = recordTtl(st.resyncSeconds * 1000);
    this.settleMs = 2 * st.flushMs + 1000;
    this.firewallIds = new Set(config.firewalls.map((f) => f.id));
    this.byMark = new Map(slots(config).map((s) => [s.mark, s.id]));
    d.reconciler.usePins(this.cache);
    this.view = {
      query: (q) => this.table.query(q),
      count: () => this.count(),
      metrics: () => this.metrics(),
      healthViews: () => this.healthViews(),
    };
  }

  /** Every node's fresh health view, as the leader reads them; one read a second at most, null while Redis is away. */
  private readonly healthViews = throttledRead(() => this.table.healthViews(3 * this.d.config.sessionTable!.heartbeatSeconds * 1000).catch(() => null));

  private readonly firewallOf = (mark: number) => this.byMark.get(mark);

  /** A record from Redis into the cache; its bucket, or null when it was not taken. */
  private admit(rec: SessionRecord): number | null {
    if (!this.firewallIds.has(rec.firewall)) return (this.rejectedHere++, null);
    const cap = Date.now() + this.ttl.max;
    return this.cache.put(rec.expires > cap ? { ...rec, expires: cap } : rec);
  }

  /**
   * Records from Redis into the cache (a trigger when one is an exception now): those of `buckets`, or every one;
   * returns how many.
   */
  async load(buckets: readonly number[] = this.table.allBuckets): Promise<number> {
    const { config, reconciler, trigger } = this.d;
    const t = reconciler.currentTable();
    const coming = reconciler.comingTable();
    let exceptions = 0;
    let n = 0;
    // Records as Redis holds them, checked here without a record object each: the id must be a session of the
    // bucket it is stored in, the value well formed, the firewall one of ours.
    const now = Date.now();
    const cap = now + this.ttl.max;
    await this.table.bucketEntries(buckets, (b, id, v) => {
      const val = decodeValue(v);
      if (!val || !this.firewallIds.has(val.firewall) || bucketOfId(id, config.hash.seed, config.hash.buckets) !== b) return (this.rejectedHere++, false);
      if (val.expires < now) return false;
      n++;
      if (this.cache.putId(id, val.firewall, Math.min(val.expires, cap), b) === null) return true;
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
    const n = await this.table.bucketSizes(buckets);
    const ms = changeLeadMs(n, this.readPerMs);
    if (!ms) return 0;
    this.d.log(`a change that moves ${buckets.length} buckets (${n} sessions) takes effect ${ms} ms later than usual: their pins first`);
    return ms;
  }

  private async loadAtStart(): Promise<void> {
    const { log } = this.d;
    try {
      await ready(this.redis, 3000);
      const moved = await this.table.migrate();
      if (moved) log(`moved the shared admin state of ${moved} firewalls to its current key`);
      const t0 = Date.now();
      const n = await this.load();
      log(`loaded ${n} sessions from the session table in ${Date.now() - t0} ms`);
    } catch (e) {
      log(`session table not reachable at start, continuing on the kernel's state: ${(e as Error).message}`);
    }
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
  private readonly onTableComing = (moved: number[]): void => {
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
  private readonly onTableChange = (moved: number[]): void => {
    const now = Date.now();
    const fresh = (b: number) => now - (this.preread.get(b) ?? -Infinity) < this.settleMs + PREREAD_LEAD_MS;
    const unread = moved.filter((b) => !fresh(b));
    for (const b of moved) this.preread.delete(b);
    if (unread.length) this.reload(unread, 'bucket table changed');
    const tm = setTimeout(() => {
      this.timers.delete(tm);
      this.reload(moved, 'bucket table changed, writes in flight landed');
    }, this.settleMs);
    this.timers.add(tm);
  };

  /** A record of this node's conntrack, as the sync wrote it (or a grace, or a delete): into the cache. */
  private onRecord(kind: 'put' | 'delete' | 'grace', rec: SessionRecord): void {
    const { reconciler, trigger } = this.d;
    // A session in grace may still be alive (a flush): keep its pin until the grace expiry.
    if (kind === 'grace') {
      this.cache.put({ ...rec, expires: Date.now() + this.ttl.min });
      return;
    }
    // A pin that goes (a new connection on an earlier one's tuple, an end) must leave the kernel as soon as one
    // that comes: reconcile when either the record it replaces or the new one is an exception.
    const t = reconciler.currentTable();
    const wasPin = this.cache.isPinned(sessionId(rec), t);
    if (kind === 'delete') this.cache.delete(rec);
    else this.cache.put(rec);
    if (wasPin || (kind !== 'delete' && this.cache.isException(rec, t))) trigger();
  }

  /** Follow the bucket table, this node's conntrack, and Redis' connection. */
  private follow(): void {
    const { config, reconciler, log } = this.d;
    const st = config.sessionTable!;
    reconciler.events.on('tableChange', this.onTableChange);
    reconciler.events.on('tableComing', this.onTableComing);
    this.sync = new SessionSync({
      node: config.name,
      role: config.role,
      firewallOf: this.firewallOf,
      store: this.table,
      dump: dumpConntrack,
      flushMs: st.flushMs,
      resyncMs: st.resyncSeconds * 1000,
      log,
      onChange: (kind, rec) => this.onRecord(kind, rec),
    });
    // NEW gives a flow's orientation (its labels), an update says it was answered (the nft rules limit a flow's
    // events to new, reply, assured and destroy, so updates are one or two per session), DESTROY its end.
    this.events = ConntrackEvents.open({
      kinds: ['new', 'update', 'destroy'],
      recvBufferSize: st.eventBufferBytes,
      onEvents: (b) => this.sync.onEvents(b),
      onLoss: () => void this.sync.resync('conntrack events were lost'),
    });
    this.redis.on('ready', () => void this.sync.resync('Redis connected'));
    // Publish what the kernel already holds (a restart): the 'ready' above has fired already when Redis was up.
    if (this.redis.status === 'ready') void this.sync.resync('start');
    this.sync.start();
  }

  /** The shared health views and epochs, the shared admin state, and what siblings tell of moved records. */
  private async share(): Promise<void> {
    const { config, membership, trigger, log } = this.d;
    const heartbeatMs = config.sessionTable!.heartbeatSeconds * 1000;
    // One leader turns the views into an epoch; every node applies the epoch.
    this.agreement = new AgreementLoop({
      ids: config.firewalls.map((f) => f.id),
      store: this.table,
      periodMs: heartbeatMs,
      digest: hashConfigDigest(config),
      log,
      joinLead: (joining) => this.leadFor(this.d.reconciler.movedByJoin(joining)),
      apply: (a) => {
        membership.setAgreement(a);
        trigger();
      },
    });
    if (this.redis.status === 'ready') await this.applyAdmin().catch(() => undefined);
    // Not awaited: with Redis away the subscription waits for it, and the node starts on the kernel's state meanwhile.
    this.sub = this.table
      .subscribe((ev) => {
        if (ev.type === 'moved')
          void this.refresh(ev.ids).catch((e) => log(`session refresh failed, pins stay as they are until the next load: ${(e as Error).message}`));
        else if (ev.type === 'admin') void this.applyAdmin().catch(() => undefined);
        else if (ev.type === 'health') void this.agreement.step();
        else if (ev.type === 'epoch') void this.agreement.applyEpoch().catch(() => undefined);
      })
      .catch(() => null);
    void this.agreement.publish();
    // Views are refreshed every heartbeat; the leader's lock lives for three. The view is read afresh each time: it
    // can change without a health event (a node that settles after its links came back).
    this.intervals.push(setInterval(() => void this.agreement.publish(membership.ownView()), heartbeatMs));
    this.intervals.push(
      setInterval(() => {
        this.cache.reap(Date.now());
        void this.table.reap().catch(() => undefined);
      }, config.sessionTable!.resyncSeconds * 1000),
    );
  }

  /** The admin state is shared: a change made on any node applies on every node (and outlives restarts in Redis). */
  async applyAdmin(): Promise<void> {
    const { membership, trigger, log, onAdmin } = this.d;
    const admin = await this.table.admin();
    let changed = false;
    for (const [id, { enabled, at }] of Object.entries(admin)) {
      if (!membership.has(id) || membership.isEnabled(id) === enabled) continue;
      membership.setAdmin(id, enabled, at);
      log(`admin state from the shared table: ${id} ${enabled ? 'enabled' : 'disabled'}${at > Date.now() ? ` from ${new Date(at).toISOString()}` : ''}`);
      changed = true;
    }
    if (changed) {
      onAdmin?.(membership.adminState());
      trigger();
    }
  }

  /**
   * A sibling rewrote some records' firewall, or deleted them (see TableEvent 'moved'): take them as Redis holds them
   * now, and reconcile if a pin appears or goes. The ids come from the network: only well-formed ones count.
   */
  async refresh(ids: unknown): Promise<void> {
    if (!Array.isArray(ids)) return;
    const { reconciler, trigger, log } = this.d;
    const valid = ids.filter((id): id is string => typeof id === 'string' && parseSessionId(id) !== null).slice(0, MOVED_IDS_MAX);
    const t = reconciler.currentTable();
    const wasPin = valid.some((id) => this.cache.isPinned(id, t));
    const recs = await this.table.get(valid);
    for (const id of valid) this.cache.deleteId(id);
    for (const rec of recs) this.admit(rec);
    if (wasPin || recs.some((rec) => this.cache.isException(rec, t))) trigger();
    // A new connection on an earlier one's tuple: this node may still hold the earlier one's conntrack entry (in
    // TIME_WAIT, or one direction of it), whose mark would send the new connection's packets to the earlier
    // firewall if the routers move it here. Such an entry goes; the next packet finds its firewall as a flow
    // without state does (the conn sets, the pins, the hash).
    let deleted = 0;
    for (const rec of recs) {
      if (!this.firewallIds.has(rec.firewall)) continue;
      const e = await getConntrack({ src: rec.outerAddr, dst: rec.innerAddr, sport: rec.outerPort, dport: rec.innerPort, proto: rec.proto });
      const fw = e ? this.firewallOf(e.mark) : undefined;
      if (e && fw && fw !== rec.firewall && (await deleteConntrack(e))) deleted++;
    }
    if (deleted) {
      this.staleDeleted += deleted;
      log(`deleted ${deleted} conntrack entries of earlier connections whose tuple a new connection on another firewall took`);
    }
  }

  /**
   * Sessions this node's conntrack holds. Why throttled: the count is a full conntrack dump; an unauthenticated client
   * asking in a loop must not turn that into a dump per request.
   */
  readonly kernelCount = throttledRead(() => dumpConntrack().then((es) => es.filter((e) => tracked(e, this.firewallOf) && answered(e)).length));

  private async count(): Promise<{ redis: number | null; grace: number | null; kernel: number; redisError?: string }> {
    const kernel = await this.kernelCount();
    try {
      const { records, grace } = await this.table.sizes();
      return { redis: records, grace, kernel };
    } catch (e) {
      return { redis: null, grace: null, kernel, redisError: (e as Error).message };
    }
  }

  private metrics(): Record<string, unknown> {
    return {
      ...this.sync.metrics,
      events: this.events.events,
      eventOverruns: this.events.overruns,
      readerRestarts: this.events.restarts,
      cacheDropped: this.cache.dropped,
      redis: this.redis.status,
      cached: this.cache.size,
      epoch: this.agreement.appliedEpoch,
      rejectedRecords: this.table.rejected + this.rejectedHere,
      bucketsRead: this.table.reads.buckets,
      recordsRead: this.table.reads.records,
      staleEntriesDeleted: this.staleDeleted,
      pending: this.sync.pendingCount(),
      hashConfigDiffers: this.agreement.configAlarm ? 1 : 0,
    };
  }

  alarms(): string[] {
    return [this.agreement.alarm, this.agreement.configAlarm].filter((a): a is string => a !== null);
  }

  async shareAdmin(id: string, enabled: boolean, at: number): Promise<number> {
    return (await this.table.setAdmin(id, enabled, at)).at;
  }

  publishHealth(view: Record<string, boolean>): void {
    void this.agreement.publish(view);
  }

  reconfigure(next: ResolvedBalancerConfig): void {
    this.firewallIds = new Set(next.firewalls.map((f) => f.id));
    this.byMark = new Map(slots(next).map((s) => [s.mark, s.id]));
    this.agreement.reconfigure(
      next.firewalls.map((f) => f.id),
      hashConfigDigest(next),
    );
    void this.agreement.publish(this.d.membership.ownView());
  }

  stop(): void {
    for (const iv of this.intervals) clearInterval(iv);
    for (const tm of this.timers) clearTimeout(tm);
    this.d.reconciler.events.off('tableChange', this.onTableChange);
    this.d.reconciler.events.off('tableComing', this.onTableComing);
    this.sync.stop();
    this.events.close();
    void this.sub.then((s) => s?.close());
    this.redis.disconnect();
  }
}
