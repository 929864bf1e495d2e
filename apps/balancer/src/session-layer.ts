// The session layer of a node (layers 2-4): Redis client, session table, conntrack event stream and sync, the
// session cache the pins come from, and the shared health views and bucket epochs; shell layer of apps/balancer.
// With its reads (session-reads.ts) it is the only place that wires libs/conntrack and libs/session-table together.
// main.ts owns it; it reaches the reconciler and the membership only through the operations it is given (pins in,
// table changes out, agreement and admin in).
import type { Membership } from './membership';
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { ConntrackEvents, dumpConntrack } from '@fwlb/conntrack';
import { connect, ready, REPLICA_ACK_MS, sessionId, SessionQuery, SessionRecord, SessionTable } from '@fwlb/session-table';
import { AgreementLoop, hashConfigDigest } from './agreement';
import { SessionCache } from './pins';
import type { Reconciler } from './reconciler';
import type { NetlinkElements } from '@fwlb/nft';
import { connRecordOps, TABLE_FAMILY, TABLE_NAME } from './render';
import { firewallIndex, FirewallIndex, SessionReads, SessionReadsDeps } from './session-reads';
import { answered, isOver, recordTtl, SessionSync, tracked } from './session-sync';
import { throttledRead } from '@fwlb/service';

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
  /** The session layer's own element writes (the `conn` records of moved sessions), on a socket of its own. */
  elements: Pick<NetlinkElements, 'change'>;
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
  private fw: FirewallIndex;
  /** The reads of Redis into the cache: at start, on table changes, on a sibling's moved records. */
  private readonly reads: SessionReads;
  private readonly intervals: NodeJS.Timeout[] = [];
  private sync!: SessionSync;
  private events!: ConntrackEvents;
  private agreement!: AgreementLoop;
  private sub: Promise<Awaited<ReturnType<SessionTable['subscribe']>> | null> = Promise.resolve(null);
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
    this.fw = firewallIndex(config);
    this.reads = new SessionReads({
      table: this.table,
      cache: this.cache,
      hash: config.hash,
      ttlMax: this.ttl.max,
      settleMs: 2 * st.flushMs + 1000,
      firewalls: () => this.fw,
      reconciler: d.reconciler,
      trigger: d.trigger,
      recordStarts: (recs) => this.writeStarts(recs),
      log: d.log,
    });
    d.reconciler.usePins(this.cache);
    this.view = {
      query: (q) => this.table.query(q),
      count: () => this.count(),
      metrics: () => this.metrics(),
      healthViews: () => this.healthViews(),
    };
  }

  private writeStarts(sessions: Parameters<SessionReadsDeps['recordStarts']>[0]): Promise<void> {
    return this.d.elements.change({ family: TABLE_FAMILY, table: TABLE_NAME }, connRecordOps(this.d.reconciler.config, sessions));
  }

  /** Every node's fresh health view, as the leader reads them; one read a second at most, null while Redis is away. */
  private readonly healthViews = throttledRead(() => this.table.healthViews(3 * this.d.config.sessionTable!.heartbeatSeconds * 1000).catch(() => null));

  private readonly firewallOf = (mark: number) => this.fw.firewallOf(mark);

  /** Records from Redis into the cache: those of `buckets`, or every one; returns how many. */
  load(buckets?: readonly number[]): Promise<number> {
    return this.reads.load(buckets);
  }

  /** How much later than usual a change that moves `buckets` should take effect (see SessionReads.leadFor). */
  leadFor(buckets: readonly number[]): Promise<number> {
    return this.reads.leadFor(buckets);
  }

  /** A sibling rewrote or deleted these records (see SessionReads.refresh). */
  refresh(ids: unknown): Promise<void> {
    return this.reads.refresh(ids);
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
    reconciler.events.on('tableChange', this.reads.tableChanged);
    reconciler.events.on('tableComing', this.reads.tableComing);
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
    const readAdmin = () => void this.applyAdmin().catch(() => undefined);
    if (this.redis.status === 'ready') await this.applyAdmin().catch(() => undefined);
    // Not awaited: with Redis away the subscription waits for it, and the node starts on the kernel's state meanwhile.
    // Each time it is confirmed (at start, after a failover) the admin state is read again: a change shared between
    // the read above and the subscription, or while the subscriber was away, has no message for this node.
    this.sub = this.table
      .subscribe((ev) => {
        if (ev.type === 'moved')
          void this.refresh(ev.ids).catch((e) => log(`session refresh failed, pins stay as they are until the next load: ${(e as Error).message}`));
        else if (ev.type === 'admin') readAdmin();
        else if (ev.type === 'health') void this.agreement.step();
        else if (ev.type === 'epoch') void this.agreement.applyEpoch().catch(() => undefined);
      }, readAdmin)
      .catch(() => null);
    void this.agreement.publish();
    // Views are refreshed every heartbeat; the leader's lock lives for three. The view is read afresh each time: it
    // can change without a health event (a node that settles after its links came back).
    // The admin state is read again with each view as well: a message lost otherwise costs at most a heartbeat.
    this.intervals.push(
      setInterval(() => {
        void this.agreement.publish(membership.ownView());
        readAdmin();
      }, heartbeatMs),
    );
    this.intervals.push(
      setInterval(() => {
        this.cache.reap(Date.now());
        void this.table.reap().catch(() => undefined);
      }, config.sessionTable!.resyncSeconds * 1000),
    );
  }

  /** Each firewall's shared admin state as last read (`enabled@at`): a read applies only the changes since. */
  private readonly seenAdmin = new Map<string, string>();

  /**
   * The admin state is shared: a change made on any node applies on every node (and outlives restarts in Redis).
   * Only a shared change this node has not read yet is applied, so reading again (each heartbeat, after a failover)
   * leaves a change made here alone with `?local=true` until a shared change of that firewall replaces it.
   */
  async applyAdmin(): Promise<void> {
    const { membership, trigger, log, onAdmin } = this.d;
    const admin = await this.table.admin();
    let changed = false;
    for (const [id, { enabled, at }] of Object.entries(admin)) {
      if (!membership.has(id) || this.seenAdmin.get(id) === `${enabled}@${at}`) continue;
      this.seenAdmin.set(id, `${enabled}@${at}`);
      if (!membership.adoptShared(id, enabled, at)) continue;
      log(`admin state from the shared table: ${id} ${enabled ? 'enabled' : 'disabled'}${at > Date.now() ? ` from ${new Date(at).toISOString()}` : ''}`);
      changed = true;
    }
    if (changed) {
      onAdmin?.(membership.adminState());
      trigger();
    }
  }

  /**
   * Sessions this node's conntrack holds: answered, fwlb's, not over (a re-sync ends those records). Why throttled:
   * the count is a full conntrack dump; an unauthenticated client asking in a loop must not turn that into a dump per
   * request.
   */
  readonly kernelCount = throttledRead(() => dumpConntrack().then((es) => es.filter((e) => tracked(e, this.firewallOf) && answered(e) && !isOver(e)).length));

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
      rejectedRecords: this.table.rejected + this.reads.rejected,
      bucketsRead: this.table.reads.buckets,
      recordsRead: this.table.reads.records,
      staleEntriesDeleted: this.reads.staleDeleted,
      laterEntriesKept: this.reads.laterKept,
      pending: this.sync.pendingCount(),
      hashConfigDiffers: this.agreement.configAlarm ? 1 : 0,
    };
  }

  alarms(): string[] {
    return [this.agreement.alarm, this.agreement.configAlarm].filter((a): a is string => a !== null);
  }

  async shareAdmin(id: string, enabled: boolean, at: number): Promise<number> {
    const shared = await this.table.setAdmin(id, enabled, at);
    if (shared.replicated === false) {
      this.d.log(`admin change of ${id} shared, but no Redis replica confirmed it within ${REPLICA_ACK_MS} ms: a primary lost now would lose it`);
    }
    return shared.at;
  }

  publishHealth(view: Record<string, boolean>): void {
    void this.agreement.publish(view);
  }

  reconfigure(next: ResolvedBalancerConfig): void {
    this.fw = firewallIndex(next);
    this.agreement.reconfigure(
      next.firewalls.map((f) => f.id),
      hashConfigDigest(next),
    );
    void this.agreement.publish(this.d.membership.ownView());
  }

  stop(): void {
    for (const iv of this.intervals) clearInterval(iv);
    this.reads.stop();
    this.d.reconciler.events.off('tableChange', this.reads.tableChanged);
    this.d.reconciler.events.off('tableComing', this.reads.tableComing);
    this.sync.stop();
    this.events.close();
    void this.sub.then((s) => s?.close());
    this.redis.disconnect();
  }
}
