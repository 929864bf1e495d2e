// Starts layers 2-4 for a node: Redis client, session table, conntrack event stream and sync, the session cache the
// pins come from, and the shared health views and bucket epochs; shell layer of apps/balancer (the only place that
// wires libs/conntrack and libs/session-table together).
import type { Membership } from './membership';
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { ConntrackEvents, deleteConntrack, dumpConntrack, getConntrack } from '@fwlb/conntrack';
import { bucketOfId, connect, decodeValue, parseSessionId, ready, sessionId, SessionQuery, SessionRecord, SessionTable } from '@fwlb/session-table';
import { AgreementLoop, hashConfigDigest } from './agreement';
import { SessionCache } from './pins';
import type { Reconciler } from './reconciler';
import { slots } from './membership';
import { answered, recordTtl, SessionSync, tracked } from './session-sync';

/** Ids one `moved` message may carry: the writer sends one per Lua batch of at most 1,000 records. */
const MOVED_IDS_MAX = 1000;

/** What the API serves about sessions. */
export interface SessionsView {
  query(q: SessionQuery): Promise<SessionRecord[]>;
  count(): Promise<{ redis: number | null; grace: number | null; kernel: number; redisError?: string }>;
  metrics(): Record<string, unknown>;
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

/**
 * Loads the sessions Redis knows into the cache before the first reconcile (so the pins are in the kernel before
 * this node forwards anything new), then follows conntrack. Redis being away at start is not fatal: the node
 * starts with the pins the kernel already has and catches up when Redis answers.
 */
export async function startSessions(
  config: ResolvedBalancerConfig,
  r: Reconciler,
  membership: Membership,
  trigger: () => void,
  log: (m: string) => void,
  onAdmin?: (admin: Record<string, boolean>) => void,
): Promise<SessionsHandle | null> {
  const st = config.sessionTable;
  if (!st) return null;
  const redis = connect({ ...st, node: config.name });
  redis.on('error', () => undefined); // reconnects by itself; the sync logs what matters
  const table = new SessionTable(redis, config.name, st.keyPrefix, { seed: config.hash.seed, buckets: config.hash.buckets });
  const resyncMs = st.resyncSeconds * 1000;
  const heartbeatMs = st.heartbeatSeconds * 1000;
  const cache = new SessionCache(config.hash.seed, config.hash.buckets);
  let firewallIds = new Set(config.firewalls.map((f) => f.id));
  let rejectedHere = 0;
  let staleDeleted = 0;
  // A record from Redis becomes a pin only if it names a configured firewall; its expiry is capped, so a record
  // cannot hold a pin for longer than a node would refresh it.
  const ttl = recordTtl(resyncMs);
  /** A record from Redis into the cache; its bucket, or null when it was not taken. */
  const admit = (rec: SessionRecord): number | null => {
    if (!firewallIds.has(rec.firewall)) return (rejectedHere++, null);
    return cache.put(rec.expires > Date.now() + ttl.max ? { ...rec, expires: Date.now() + ttl.max } : rec);
  };
  r.usePins(cache);
  const ids = config.firewalls.map((f) => f.id);
  let byMark = new Map(slots(config).map((s) => [s.mark, s.id]));
  const firewallOf = (mark: number) => byMark.get(mark);
  /**
   * Records from Redis into the cache (a trigger when one is an exception now): those of `buckets`, or every one;
   * returns how many.
   */
  const load = async (buckets: readonly number[] = table.allBuckets): Promise<number> => {
    const t = r.currentTable();
    let exceptions = 0;
    let n = 0;
    // Records as Redis holds them, checked here without a record object each: the id must be a session of the
    // bucket it is stored in, the value well formed, the firewall one of ours.
    const now = Date.now();
    const cap = now + ttl.max;
    await table.bucketEntries(buckets, (b, id, v) => {
      const val = decodeValue(v);
      if (!val || !firewallIds.has(val.firewall) || bucketOfId(id, config.hash.seed, config.hash.buckets) !== b) return (rejectedHere++, false);
      if (val.expires < now) return false;
      n++;
      if (cache.putId(id, val.firewall, Math.min(val.expires, cap), b) !== null && t && t.owner[b] !== val.firewall) exceptions++;
      return true;
    });
    if (exceptions) trigger();
    return n;
  };
  try {
    await ready(redis, 3000);
    const moved = await table.migrate();
    if (moved) log(`moved the shared admin state of ${moved} firewalls to its current key`);
    const t0 = Date.now();
    const n = await load();
    log(`loaded ${n} sessions from the session table in ${Date.now() - t0} ms`);
  } catch (e) {
    log(`session table not reachable at start, continuing on the kernel's state: ${(e as Error).message}`);
  }
  // A node learns its own sessions from its conntrack; those that started on a sibling of the same side
  // it learns from Redis. They matter only as exceptions, and a session becomes one only when the bucket table
  // moves its bucket: then the moved buckets' records are read again (the table keeps them by bucket), at once and
  // once more after the siblings' writes in flight (two flush periods and a second) have landed. One reload at a
  // time; buckets that move during one are read by the next.
  let reloading: Promise<void> | null = null;
  const waiting = new Set<number>();
  const reload = (buckets: readonly number[], why: string): void => {
    for (const b of buckets) waiting.add(b);
    if (reloading) return;
    const bs = [...waiting].sort((a, b) => a - b);
    waiting.clear();
    const t0 = Date.now();
    reloading = load(bs)
      .then((n) => log(`reloaded ${n} sessions of ${bs.length} buckets from the session table (${why}) in ${Date.now() - t0} ms`))
      .catch((e) => log(`session reload (${why}) failed, pins stay as they are: ${(e as Error).message}`))
      .finally(() => {
        reloading = null;
        if (waiting.size) reload([], 'buckets that moved during the last reload');
      });
  };
  const settle = 2 * st.flushMs + 1000;
  const timers = new Set<NodeJS.Timeout>();
  const onTableChange = (moved: number[]) => {
    reload(moved, 'bucket table changed');
    const tm = setTimeout(() => {
      timers.delete(tm);
      reload(moved, 'bucket table changed, writes in flight landed');
    }, settle);
    timers.add(tm);
  };
  r.events.on('tableChange', onTableChange);
  const sync = new SessionSync({
    node: config.name,
    role: config.role,
    firewallOf,
    store: table,
    dump: dumpConntrack,
    flushMs: st.flushMs,
    resyncMs,
    log,
    onChange: (kind, rec) => {
      // A session in grace may still be alive (a flush): keep its pin until the grace expiry.
      if (kind === 'grace') return cache.put({ ...rec, expires: Date.now() + ttl.min });
      // A pin that goes (a new connection on an earlier one's tuple, an end) must leave the kernel as soon as one
      // that comes: reconcile when either the record it replaces or the new one is an exception.
      const t = r.currentTable();
      const wasPin = cache.isPinned(sessionId(rec), t);
      if (kind === 'delete') cache.delete(rec);
      else cache.put(rec);
      if (wasPin || (kind !== 'delete' && cache.isException(rec, t))) trigger();
    },
  });
  // NEW gives a flow's orientation (its labels), an update says it was answered (the nft rules limit a flow's
  // events to new, reply, assured and destroy, so updates are one or two per session), DESTROY its end.
  const events = ConntrackEvents.open({
    kinds: ['new', 'update', 'destroy'],
    recvBufferSize: st.eventBufferBytes,
    onEvents: (b) => sync.onEvents(b),
    onLoss: () => void sync.resync('conntrack events were lost'),
  });
  redis.on('ready', () => void sync.resync('Redis connected'));
  // Publish what the kernel already holds (a restart): the 'ready' above has fired already when Redis was up.
  if (redis.status === 'ready') void sync.resync('start');
  sync.start();

  // Shared health views and epochs: one leader turns the views into an epoch; every node applies the epoch.
  const agreement = new AgreementLoop({
    ids,
    store: table,
    periodMs: heartbeatMs,
    digest: hashConfigDigest(config),
    log,
    apply: (a) => {
      membership.setAgreement(a);
      trigger();
    },
  });
  // The admin state is shared: a change made on any node applies on every node (and outlives restarts in Redis).
  const applyAdmin = async () => {
    const admin = await table.admin();
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
  };
  if (redis.status === 'ready') await applyAdmin().catch(() => undefined);
  // A sibling rewrote some records' firewall, or deleted them (see TableEvent 'moved'): take them as Redis holds
  // them now, and reconcile if a pin appears or goes. The ids come from the network: only well-formed ones count.
  const refresh = async (ids: unknown) => {
    if (!Array.isArray(ids)) return;
    const valid = ids.filter((id): id is string => typeof id === 'string' && parseSessionId(id) !== null).slice(0, MOVED_IDS_MAX);
    const t = r.currentTable();
    const wasPin = valid.some((id) => cache.isPinned(id, t));
    const recs = await table.get(valid);
    for (const id of valid) cache.deleteId(id);
    for (const rec of recs) admit(rec);
    if (wasPin || recs.some((rec) => cache.isException(rec, t))) trigger();
    // A new connection on an earlier one's tuple: this node may still hold the earlier one's conntrack entry (in
    // TIME_WAIT, or one direction of it), whose mark would send the new connection's packets to the earlier
    // firewall if the routers move it here. Such an entry goes; the next packet finds its firewall as a flow
    // without state does (the conn sets, the pins, the hash).
    let deleted = 0;
    for (const rec of recs) {
      if (!firewallIds.has(rec.firewall)) continue;
      const e = await getConntrack({ src: rec.outerAddr, dst: rec.innerAddr, sport: rec.outerPort, dport: rec.innerPort, proto: rec.proto });
      const fw = e ? firewallOf(e.mark) : undefined;
      if (e && fw && fw !== rec.firewall && (await deleteConntrack(e))) deleted++;
    }
    if (deleted) {
      staleDeleted += deleted;
      log(`deleted ${deleted} conntrack entries of earlier connections whose tuple a new connection on another firewall took`);
    }
  };
  // Not awaited: with Redis away the subscription waits for it, and the node starts on the kernel's state meanwhile.
  const sub = table
    .subscribe((ev) => {
      if (ev.type === 'moved')
        void refresh(ev.ids).catch((e) => log(`session refresh failed, pins stay as they are until the next load: ${(e as Error).message}`));
      else if (ev.type === 'admin') void applyAdmin().catch(() => undefined);
      else if (ev.type === 'health') void agreement.step();
      else if (ev.type === 'epoch') void agreement.applyEpoch().catch(() => undefined);
    })
    .catch(() => null);
  void agreement.publish();
  // Views are refreshed every heartbeat; the leader's lock lives for three. The view is read afresh each time: it can
  // change without a health event (a node that settles after its links came back).
  const beat = setInterval(() => void agreement.publish(membership.ownView()), heartbeatMs);
  const reap = setInterval(() => {
    cache.reap(Date.now());
    void table.reap().catch(() => undefined);
  }, resyncMs);

  // Why cached: the count is a full conntrack dump; an unauthenticated client asking in a loop must not turn that
  // into a dump per request. At most one dump a second, shared by the requests that wait for it.
  let counted: { at: number; n: Promise<number> } | null = null;
  const kernelCount = () => {
    if (!counted || Date.now() - counted.at > 1000) {
      const n = dumpConntrack().then((es) => es.filter((e) => tracked(e, firewallOf) && answered(e)).length);
      counted = { at: Date.now(), n };
      n.catch(() => (counted = null));
    }
    return counted.n;
  };
  return {
    view: {
      query: (q) => table.query(q),
      count: async () => {
        const kernel = await kernelCount();
        try {
          const { records, grace } = await table.sizes();
          return { redis: records, grace, kernel };
        } catch (e) {
          return { redis: null, grace: null, kernel, redisError: (e as Error).message };
        }
      },
      metrics: () => ({
        ...sync.metrics,
        events: events.events,
        eventOverruns: events.overruns,
        readerRestarts: events.restarts,
        cacheDropped: cache.dropped,
        redis: redis.status,
        cached: cache.size,
        epoch: agreement.appliedEpoch,
        rejectedRecords: table.rejected + rejectedHere,
        bucketsRead: table.reads.buckets,
        recordsRead: table.reads.records,
        staleEntriesDeleted: staleDeleted,
        pending: sync.pendingCount(),
        hashConfigDiffers: agreement.configAlarm ? 1 : 0,
      }),
    },
    alarms: () => [agreement.alarm, agreement.configAlarm].filter((a): a is string => a !== null),
    shareAdmin: async (id, enabled, at) => (await table.setAdmin(id, enabled, at)).at,
    publishHealth(view) {
      void agreement.publish(view);
    },
    reconfigure(next) {
      firewallIds = new Set(next.firewalls.map((f) => f.id));
      byMark = new Map(slots(next).map((s) => [s.mark, s.id]));
      agreement.reconfigure(
        next.firewalls.map((f) => f.id),
        hashConfigDigest(next),
      );
      void agreement.publish(membership.ownView());
    },
    stop() {
      clearInterval(beat);
      clearInterval(reap);
      for (const tm of timers) clearTimeout(tm);
      r.events.off('tableChange', onTableChange);
      sync.stop();
      events.close();
      void sub.then((s) => s?.close());
      redis.disconnect();
    },
  };
}
