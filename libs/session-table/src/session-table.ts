// The shared session table in Redis: sessions by bucket (batched Lua writes, reads of the moved buckets, the reaper),
// on top of the shared control state (control.ts); I/O layer of libs/session-table.
import { bucketOf } from '@fwlb/flowhash';
import { decodeAdmin } from './agreement';
import { RedisLike, SharedControl } from './control';
import { decodeRecord, encodeRecord, ID, matches, parseSessionId, SessionKey, SessionQuery, SessionRecord, sessionId } from './session-key';

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
 * How long an ended session's firewall is remembered (see the DEL script): a client that reuses the tuple within this
 * long on another firewall is announced as moved. Clients behind a CGNAT or a proxy reuse a port within seconds; a
 * longer memory costs Redis an entry per session ended in that time.
 */
export const ENDED_MS = 10_000;

/** A session that ended, with the firewall its end was seen on. */
export interface SessionEnd {
  id: string;
  firewall: string;
  /**
   * When the ended connection was first seen (ms): a record first seen later than this (see SAME_START_MS) is a
   * later connection's and stays. Without it, the firewall alone decides.
   */
  firstSeen?: number;
}

/** The sum of the Lua calls' counts. */
const total = (replies: unknown[]): number => replies.reduce<number>((n, v) => n + Number(v), 0);

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

/**
 * Sessions live by bucket: one hash per bucket of the flow hash (id → value, the value ends with the expiry), with
 * the sessions in grace beside it in a sorted set by grace expiry. Why by bucket: a change of the bucket table moves
 * some buckets, and a node reads only their sessions, not the whole table; and the bucket is the keys' hash tag
 * (`fwlb:{17}:s`), so each script touches one Redis Cluster slot, and the buckets spread over a cluster's masters.
 * Why no index by expiry: it cost as much memory as the records; the reaper reads each bucket's values instead.
 *
 * On top of the shared control state (SharedControl) in the same Redis.
 */
export class SessionTable extends SharedControl {
  readonly layout: TableLayout;

  /** `layout` must be the nodes' hash (seed and bucket count): records are found by their bucket. */
  constructor(redis: RedisLike, node: string, prefix: string, layout: TableLayout) {
    super(redis, node, prefix);
    this.layout = layout;
  }

  /** The bucket a session's record lives in. */
  bucketOf(k: SessionKey): number {
    return bucketOf(k, this.layout.seed, this.layout.buckets);
  }

  private bucketOfId = (id: string): number | null => {
    const k = parseSessionId(id);
    return k ? this.bucketOf(k) : null;
  };

  /**
   * One Lua call per bucket and batch, all sent at once (ioredis writes them without waiting for answers, and sends
   * each to the slot's master on a cluster): the first error fails the whole write (the caller's next re-sync
   * rewrites everything). Returns each call's reply.
   */
  private async perBucket<T>(items: T[], bucket: (x: T) => number | null, call: (b: number, batch: T[]) => Promise<unknown>): Promise<unknown[]> {
    if (!items.length) return [];
    return Promise.all(byBucket(items, bucket).map(([b, batch]) => call(b, batch)));
  }

  /**
   * Write sessions: per bucket, in batches of 1,000 per Lua call. Returns how many were stored: a record of an earlier
   * connection than the one Redis holds on its tuple is not (see the PUT script).
   */
  async put(records: SessionRecord[], now = Date.now()): Promise<number> {
    const replies = await this.perBucket(
      records,
      (r) => this.bucketOf(r),
      (b, batch) => {
        const args: string[] = [];
        for (const rec of batch) args.push(sessionId(rec), encodeRecord(rec));
        return this.r.fwlbPut(this.keys.sessions(b), this.keys.grace(b), this.keys.ended(b), this.channel, now, ...args);
      },
    );
    return total(replies);
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

  /**
   * Records of sessions that ended, each only while it holds the firewall given and no later connection's start (see
   * the DEL script); returns how many went.
   */
  async delete(ends: readonly SessionEnd[], now = Date.now()): Promise<number> {
    const replies = await this.perBucket(
      [...ends],
      (e) => this.bucketOfId(e.id),
      (b, batch) =>
        this.r.fwlbDel(
          this.keys.sessions(b),
          this.keys.grace(b),
          this.keys.ended(b),
          this.channel,
          now + ENDED_MS,
          ...batch.flatMap((e) => [e.id, e.firewall, e.firstSeen ?? '']),
        ),
    );
    return total(replies);
  }

  /** Sessions that no node holds any more get a grace expiry `until` (ms); returns how many moved. */
  async grace(ids: string[], until: number): Promise<number> {
    const replies = await this.perBucket(ids, this.bucketOfId, (b, batch) => this.r.fwlbGrace(this.keys.sessions(b), this.keys.grace(b), until, ...batch));
    return total(replies);
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
    const n = await pooled(this.allBuckets, PARALLEL, (b) => this.r.fwlbReap(this.keys.sessions(b), this.keys.grace(b), this.keys.ended(b), now));
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
}
