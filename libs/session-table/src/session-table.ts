// The shared session table in Redis: sessions (batched Lua writes, index by expiry), the bucket-table epoch with
// its leader lock, each node's health view, and change notifications; I/O layer of libs/session-table.
import { Cluster } from 'ioredis';
import type { Redis } from 'ioredis';
import { bucketOf } from '@fwlb/flowhash';
import { Commands, SCRIPTS } from './scripts';
import { AdminState, decodeAdmin, decodeEpoch, EpochDoc } from './agreement';
import { decodeRecord, encodeRecord, ID, matches, parseSessionId, SessionKey, SessionQuery, SessionRecord, sessionId } from './session-key';

/** What the table needs of a client: ioredis' Redis and Cluster both are one. */
export type RedisLike = Redis | Cluster;

/**
 * Where a session's record lives: the bucket of the flow hash (seed and bucket count as the nodes hash), so that a
 * change of the bucket table reads the moved buckets only. Every node of a sandwich uses the same (the agreement
 * compares the hash config).
 */
export interface TableLayout {
  seed: number;
  buckets: number;
}

/** For a table no node reads (tests, benchmarks): the default bucket count and seed 0. */
export const DEFAULT_LAYOUT: TableLayout = { seed: 0, buckets: 251 };

/**
 * Sessions live by bucket: one hash per bucket of the flow hash (id → value, the value ends with the expiry), with
 * the sessions in grace beside it in a sorted set by grace expiry. Why by bucket: a change of the bucket table moves
 * some buckets, and a node reads only their sessions, not the whole table; and the bucket is the keys' hash tag
 * (`fwlb:{17}:s`), so each script touches one Redis Cluster slot, and the buckets spread over a cluster's masters.
 * Why no index by expiry: it cost as much memory as the records; the reaper reads each bucket's values instead.
 */
/**
 * The key names, each with its Redis Cluster hash tag: a bucket's keys share the bucket's tag, the control keys
 * (leader lock, epoch, admin state, health views) share `{ctl}`, so every script and MULTI touches one slot.
 */
export function tableKeys(prefix: string) {
  return {
    sessions: (b: number) => `${prefix}{${b}}:s`,
    grace: (b: number) => `${prefix}{${b}}:g`,
    leader: `${prefix}{ctl}:leader`,
    epochCounter: `${prefix}{ctl}:epoch:n`,
    epochGeneration: `${prefix}{ctl}:epoch:gen`,
    epoch: `${prefix}{ctl}:epoch`,
    admin: `${prefix}{ctl}:admin`,
    nodes: `${prefix}{ctl}:nodes`,
    health: (node: string) => `${prefix}{ctl}:health:${node}`,
    /** Where the admin state was kept before the keys had slots; read once and moved (see migrate). */
    legacyAdmin: `${prefix}admin`,
    /** The sessions' keys before they were kept by bucket: removed by migrate. */
    legacySessions: [`${prefix}s`, `${prefix}sessions`, `${prefix}grace`],
    channel: `${prefix}events`,
  };
}

/**
 * `moved`: sessions whose record changed its firewall or was deleted. Why it is published: a node keeps its
 * siblings' records (pins) from its last full load, and a client that reuses a port starts a new connection on an
 * old record's key; a sibling that kept the old record would send the new connection's packets to the old firewall.
 */
export type TableEvent =
  | { type: 'epoch'; epoch: number }
  | { type: 'health'; node: string }
  | { type: 'resync'; node: string }
  | { type: 'admin'; node: string }
  | { type: 'moved'; ids: string[] };

/** Records per Lua call; a write of more makes several calls of one bucket. */
const BATCH = 1000;
/** Buckets read at once by a full load or a walk (each one HGETALL or HSCAN step). */
const PARALLEL = 16;

/**
 * A Redis glob that every id matching `q` matches (ids are "outer:port>inner:port/proto"), or undefined. A prefilter
 * only: `matches` decides. The address is a checked IPv4 address and the port a number (the API's schema), so no glob
 * character reaches the pattern.
 */
export function queryPattern(q: SessionQuery): string | undefined {
  if (q.addr && /^[0-9.]+$/.test(q.addr)) return `*${q.addr}:*`;
  if (q.port !== undefined && Number.isInteger(q.port)) return `*:${q.port}[>/]*`;
  return undefined;
}

/** `items` grouped by bucket, each group in slices of at most BATCH. */
function byBucket<T>(items: T[], bucket: (x: T) => number | null): [number, T[]][] {
  const m = new Map<number, T[]>();
  for (const x of items) {
    const b = bucket(x);
    if (b === null) continue;
    const g = m.get(b);
    if (g) g.push(x);
    else m.set(b, [x]);
  }
  const out: [number, T[]][] = [];
  for (const [b, g] of m) for (let i = 0; i < g.length; i += BATCH) out.push([b, g.slice(i, i + BATCH)]);
  return out;
}

/** Run `f` over `items`, at most `n` at a time. */
async function pooled<T, R>(items: T[], n: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

export class SessionTable {
  private readonly r: RedisLike & Commands;
  readonly prefix: string;
  readonly keys: ReturnType<typeof tableKeys>;
  readonly layout: TableLayout;

  /** `layout` must be the nodes' hash (seed and bucket count): records are found by their bucket. */
  constructor(
    redis: RedisLike,
    readonly node: string,
    prefix: string,
    layout: TableLayout,
  ) {
    this.prefix = prefix;
    this.keys = tableKeys(prefix);
    this.layout = layout;
    for (const [name, def] of Object.entries(SCRIPTS)) redis.defineCommand(name, def);
    this.r = redis as RedisLike & Commands;
  }

  /** The bucket a session's record lives in. */
  bucketOf(k: SessionKey): number {
    return bucketOf(k, this.layout.seed, this.layout.buckets);
  }

  private bucketOfId = (id: string): number | null => {
    const k = parseSessionId(id);
    return k ? this.bucketOf(k) : null;
  };

  private get channel(): string {
    return this.keys.channel;
  }

  /**
   * One Lua call per bucket and batch, all sent at once (ioredis writes them without waiting for answers, and sends
   * each to the slot's master on a cluster): the first error fails the whole write (the caller's next re-sync
   * rewrites everything). Returns each call's reply.
   */
  private async perBucket<T>(items: T[], bucket: (x: T) => number | null, call: (b: number, batch: T[]) => Promise<unknown>): Promise<unknown[]> {
    if (!items.length) return [];
    return Promise.all(byBucket(items, bucket).map(([b, batch]) => call(b, batch)));
  }

  /** Write sessions: per bucket, in batches of 1,000 per Lua call. */
  async put(records: SessionRecord[], _now = Date.now()): Promise<number> {
    await this.perBucket(
      records,
      (r) => this.bucketOf(r),
      (b, batch) => {
        const args: string[] = [];
        for (const rec of batch) args.push(sessionId(rec), encodeRecord(rec));
        return this.r.fwlbPut(this.keys.sessions(b), this.keys.grace(b), this.channel, ...args);
      },
    );
    return records.length;
  }

  /** The records of these ids as Redis holds them now (absent ids, and values that fail the strict decode, are left out). */
  async get(ids: string[]): Promise<SessionRecord[]> {
    const out: SessionRecord[] = [];
    await this.perBucket(ids, this.bucketOfId, async (b, batch) => {
      const values = await this.r.hmget(this.keys.sessions(b), ...batch);
      values.forEach((v, i) => {
        const rec = v === null ? null : decodeRecord(batch[i], v);
        if (rec) out.push(rec);
      });
    });
    return out;
  }

  async delete(ids: string[]): Promise<number> {
    await this.perBucket(ids, this.bucketOfId, (b, batch) => this.r.fwlbDel(this.keys.sessions(b), this.keys.grace(b), this.channel, ...batch));
    return ids.length;
  }

  /** Sessions that no node holds any more get a grace expiry `until` (ms); returns how many moved. */
  async grace(ids: string[], until: number): Promise<number> {
    const replies = await this.perBucket(ids, this.bucketOfId, (b, batch) => this.r.fwlbGrace(this.keys.sessions(b), this.keys.grace(b), until, ...batch));
    return replies.reduce<number>((n, v) => n + Number(v), 0);
  }

  /** Every bucket of the layout, in order. */
  get allBuckets(): number[] {
    return Array.from({ length: this.layout.buckets }, (_, b) => b);
  }

  /**
   * Held sessions (records not in grace; an expired one counts until the reaper takes it) and sessions in grace
   * until after `now`, from one pass over the buckets.
   */
  async sizes(now = Date.now()): Promise<{ records: number; grace: number }> {
    const per = await pooled(this.allBuckets, PARALLEL * 4, (b) =>
      Promise.all([this.r.hlen(this.keys.sessions(b)), this.r.zcount(this.keys.grace(b), now, '+inf'), this.r.zcard(this.keys.grace(b))]),
    );
    let records = 0;
    let grace = 0;
    let graceAll = 0;
    for (const [h, g, ga] of per) {
      records += h;
      grace += g;
      graceAll += ga;
    }
    return { records: records - graceAll, grace };
  }

  /** Records stored in each of these buckets (held, in grace or expired but not yet reaped), added up. */
  async bucketSizes(bs: readonly number[]): Promise<number> {
    const n = await pooled([...bs], PARALLEL * 4, (b) => this.r.hlen(this.keys.sessions(b)));
    return n.reduce((a, x) => a + x, 0);
  }

  /** Sessions held by a node (records not in grace; an expired one counts until the reaper takes it). */
  async count(now = Date.now()): Promise<number> {
    return (await this.sizes(now)).records;
  }

  /** Sessions in grace: no node holds them now, and they are kept until their grace expiry. */
  async graceCount(now = Date.now()): Promise<number> {
    return (await this.sizes(now)).grace;
  }

  /** Remove expired sessions, bucket by bucket; returns how many. */
  async reap(now = Date.now()): Promise<number> {
    const n = await pooled(this.allBuckets, PARALLEL, (b) => this.r.fwlbReap(this.keys.sessions(b), this.keys.grace(b), now));
    return n.reduce((a, x) => a + x, 0);
  }

  /**
   * Live sessions matching `q`, walking the table bucket by bucket; at most `q.limit` (default 100). A query by
   * address or port lets Redis skip what cannot match (HSCAN MATCH on the id, which carries the tuple), so the node
   * decodes only candidates: one address among 100,000 sessions cost the node over 50 ms of its event loop when it
   * decoded all.
   */
  async query(q: SessionQuery = {}, now = Date.now()): Promise<SessionRecord[]> {
    const limit = q.limit ?? 100;
    const out: SessionRecord[] = [];
    const match = queryPattern(q);
    for (const b of this.allBuckets) {
      let cursor = '0';
      do {
        // With a pattern Redis returns few fields per step, so each step may walk more of the bucket.
        const [next, flat] = match
          ? await this.r.hscan(this.keys.sessions(b), cursor, 'MATCH', match, 'COUNT', BATCH * 10)
          : await this.r.hscan(this.keys.sessions(b), cursor, 'COUNT', BATCH);
        cursor = next;
        for (const r of this.decodeFlat(flat, now)) if (matches(r, q)) out.push(r);
        if (out.length >= limit) return out.slice(0, limit);
      } while (cursor !== '0');
    }
    return out;
  }

  /** Records read back from Redis that did not decode (bad tuple, port, protocol, id or time): skipped, counted. */
  rejected = 0;
  /** Buckets and records read whole (a load, or a table change's moved buckets): what a change costs. */
  readonly reads = { buckets: 0, records: 0 };

  private decodeFlat(flat: string[], now: number): SessionRecord[] {
    const out: SessionRecord[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      const r = decodeRecord(flat[i], flat[i + 1]);
      if (!r) this.rejected++;
      else if (r.expires >= now) out.push(r);
    }
    return out;
  }

  /** The live sessions of these buckets, one HGETALL each. */
  async buckets(bs: readonly number[], now = Date.now()): Promise<SessionRecord[]> {
    const out: SessionRecord[] = [];
    await this.bucketEntries(bs, (_b, id, v) => {
      const r = decodeRecord(id, v);
      if (!r) this.rejected++;
      else if (r.expires >= now) out.push(r);
      else return false;
      return true;
    });
    return out;
  }

  /**
   * Every stored (id, value) of these buckets, as Redis holds them, unchecked: `visit` checks each and says whether
   * it took it (for the read counters). Why not records: a change can read hundreds of thousands, and a reader that
   * needs only the id and the value should not pay for an object per session.
   */
  async bucketEntries(bs: readonly number[], visit: (bucket: number, id: string, value: string) => boolean): Promise<void> {
    await pooled([...bs], PARALLEL, async (b) => {
      // The flat reply: ioredis' hgetall builds an object of it, which costs more than the read at 4,000 fields.
      const flat = (await this.r.call('HGETALL', this.keys.sessions(b))) as string[];
      let n = 0;
      for (let i = 0; i + 1 < flat.length; i += 2) if (visit(b, flat[i], flat[i + 1])) n++;
      this.reads.buckets++;
      this.reads.records += n;
    });
  }

  /**
   * Every live session, for a node that lost its state: the buckets in `first` before the others (a node reads
   * those whose owner moved first: their sessions are the ones that need pins).
   */
  async all(now = Date.now(), first: readonly number[] = []): Promise<SessionRecord[]> {
    const early = new Set(first);
    return this.buckets([...first, ...this.allBuckets.filter((b) => !early.has(b))], now);
  }

  /** Take or renew the leader lock (true while this node holds it). */
  async lead(ttlMs: number): Promise<boolean> {
    return (await this.r.fwlbLock(this.keys.leader, this.node, ttlMs)) === 1;
  }

  /**
   * Publish a new bucket-table epoch, atomically and only while this node holds the leader lock (a leader whose
   * lock expired publishes nothing). Returns the document, or null when this node is not the leader.
   */
  async publishEpoch(members: string[], live: string[], down: string[] = [], now = Date.now(), joinAt?: number): Promise<EpochDoc | null> {
    const k = this.keys;
    const body = JSON.stringify({ members, live, down, by: this.node, at: now, ...(joinAt !== undefined ? { joinAt } : {}) });
    const candidate = `${this.node}-${now.toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const doc = await this.r.fwlbPublishEpoch(k.leader, k.epochCounter, k.epochGeneration, k.epoch, this.node, candidate, body, k.channel);
    return doc ? decodeEpoch(doc) : null;
  }

  /**
   * The current epoch, or null when there is none or what Redis holds is not a valid epoch document of the current
   * generation (a forged or stale document is not applied).
   */
  async epoch(): Promise<EpochDoc | null> {
    const [v, gen] = await Promise.all([this.r.get(this.keys.epoch), this.r.get(this.keys.epochGeneration)]);
    const doc = v ? decodeEpoch(v) : null;
    return doc && doc.generation === gen ? doc : null;
  }

  /**
   * This node's view of each firewall, stamped with the time (views that are not refreshed go stale). `digest`:
   * the node's hash config digest, published beside its view so that nodes can compare.
   */
  async setHealthView(view: Record<string, boolean>, now = Date.now(), digest?: string): Promise<void> {
    const key = this.keys.health(this.node);
    const fields = {
      ...Object.fromEntries(Object.entries(view).map(([k, v]) => [k, v ? 'up' : 'down'])),
      _at: String(now),
      ...(digest ? { _cfg: digest } : {}),
    };
    await this.r.multi().del(key).hset(key, fields).sadd(this.keys.nodes, this.node).exec();
    await this.notify({ type: 'health', node: this.node });
  }

  /** Every node's view not older than `maxAgeMs`: node → firewall → up. */
  async healthViews(maxAgeMs = Infinity, now = Date.now()): Promise<Record<string, Record<string, boolean>>> {
    const nodes = await this.r.smembers(this.keys.nodes);
    const out: Record<string, Record<string, boolean>> = {};
    for (const n of nodes) {
      const { _at, _cfg: _, ...h } = await this.r.hgetall(this.keys.health(n));
      // A view without a valid time stamp is stale, never a veto (it may be a half-written or forged hash).
      const at = Number(_at);
      if (!Number.isFinite(at) || now - at > maxAgeMs) continue;
      out[n] = Object.fromEntries(
        Object.entries(h)
          .filter(([k, v]) => ID.test(k) && (v === 'up' || v === 'down'))
          .map(([k, v]) => [k, v === 'up']),
      );
    }
    return out;
  }

  /** Every node's hash config digest, from views not older than `maxAgeMs`; malformed digests are left out. */
  async configDigests(maxAgeMs = Infinity, now = Date.now()): Promise<Record<string, string>> {
    const nodes = await this.r.smembers(this.keys.nodes);
    const out: Record<string, string> = {};
    for (const n of nodes) {
      const [at, cfg] = await this.r.hmget(this.keys.health(n), '_at', '_cfg');
      if (!Number.isFinite(Number(at)) || now - Number(at) > maxAgeMs || !cfg || !/^[0-9a-f]{8,64}$/.test(cfg)) continue;
      out[n] = cfg;
    }
    return out;
  }

  /**
   * Share an admin change: the firewall takes new sessions (or stops) from `at` (ms since the epoch) on, on every
   * node. Returns the state in force: when the same change is already shared (an operator who sends it to every
   * node), its first time stands, so every node switches at the same moment.
   */
  async setAdmin(id: string, enabled: boolean, at = 0): Promise<AdminState> {
    const v = await this.r.fwlbSetAdmin(
      this.keys.admin,
      id,
      enabled ? '1' : '0',
      String(Math.max(0, Math.floor(at))),
      this.channel,
      JSON.stringify({ type: 'admin', node: this.node }),
    );
    return decodeAdmin(v) ?? { enabled, at };
  }

  /** The shared admin state, decoded strictly: ids as the configs allow them, values "0" or "1" with a time; anything else skipped. */
  async admin(): Promise<Record<string, AdminState>> {
    const h = await this.r.hgetall(this.keys.admin);
    const out: Record<string, AdminState> = {};
    for (const [k, v] of Object.entries(h)) {
      const a = ID.test(k) ? decodeAdmin(v) : null;
      if (a) out[k] = a;
    }
    return out;
  }

  /**
   * The admin state of a table written before its keys had cluster slots moves to its new key (what is there
   * already stands); returns how many firewalls it brought. The old sessions' keys are removed: every node
   * rewrites what it holds within a re-sync period.
   */
  async migrate(): Promise<number> {
    const old = await this.r.hgetall(this.keys.legacyAdmin);
    let n = 0;
    for (const [id, v] of Object.entries(old)) if (ID.test(id) && decodeAdmin(v)) n += await this.r.hsetnx(this.keys.admin, id, v);
    if (Object.keys(old).length) await this.r.del(this.keys.legacyAdmin);
    // UNLINK frees a large hash in the background; one key per call (they are in different cluster slots).
    for (const k of this.keys.legacySessions) await this.r.unlink(k);
    return n;
  }

  notify(ev: TableEvent): Promise<number> {
    return this.r.publish(this.channel, JSON.stringify(ev));
  }

  /**
   * Subscribe on a second connection (a subscribed connection can do nothing else). Its commands queue until it
   * is connected, and ioredis subscribes again after every reconnect, so this works while Redis is away too. On a
   * cluster, a message published on any master reaches every node's subscribers.
   */
  async subscribe(onEvent: (ev: TableEvent) => void): Promise<{ close(): void }> {
    const sub: RedisLike = this.r instanceof Cluster ? this.r.duplicate([], { enableOfflineQueue: true }) : this.r.duplicate({ enableOfflineQueue: true });
    sub.on('error', () => undefined);
    sub.on('message', (_ch: string, msg: string) => {
      try {
        onEvent(JSON.parse(msg) as TableEvent);
      } catch {
        /* not ours */
      }
    });
    // Resolves once subscribed (a cluster client first learns the slot map), or after 2 s when Redis is away.
    await Promise.race([sub.subscribe(this.channel).catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    return { close: () => sub.disconnect() };
  }
}
