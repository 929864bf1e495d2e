// The shared session table in Redis: sessions (batched Lua writes, index by expiry), the bucket-table epoch with
// its leader lock, each node's health view, and change notifications; I/O layer of libs/session-table.
import type Redis from 'ioredis';
import { decodeRecord, encodeRecord, matches, SessionQuery, SessionRecord, sessionId } from './session-key';

/** Lua keeps a session's value and its index entry in one atomic step per batch (ioredis defineCommand). */
const PUT = `
local idx = KEYS[1]
local p = ARGV[1]
for i = 2, #ARGV, 4 do
  redis.call('SET', p .. ARGV[i], ARGV[i + 1], 'PX', ARGV[i + 3])
  redis.call('ZADD', idx, ARGV[i + 2], ARGV[i])
end
return (#ARGV - 1) / 4`;
const DEL = `
local idx = KEYS[1]
local p = ARGV[1]
for i = 2, #ARGV do
  redis.call('DEL', p .. ARGV[i])
  redis.call('ZREM', idx, ARGV[i])
end
return #ARGV - 1`;
/** Renew the lock only while we hold it; take it when free. */
const LOCK = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`;

type Commands = {
  fwlbPut(idx: string, prefix: string, ...args: (string | number)[]): Promise<number>;
  fwlbDel(idx: string, prefix: string, ...ids: string[]): Promise<number>;
  fwlbLock(key: string, owner: string, ttlMs: number): Promise<number>;
};

export interface EpochDoc {
  epoch: number;
  /** Firewall ids in the agreed membership, and those that carry new sessions. */
  members: string[];
  live: string[];
  /** Who computed it and when. */
  by: string;
  at: number;
}

export type TableEvent = { type: 'epoch'; epoch: number } | { type: 'health'; node: string } | { type: 'resync'; node: string };

const BATCH = 1000;

export class SessionTable {
  private readonly r: Redis & Commands;
  readonly prefix: string;

  constructor(redis: Redis, readonly node: string, prefix = 'fwlb:') {
    this.prefix = prefix;
    redis.defineCommand('fwlbPut', { numberOfKeys: 1, lua: PUT });
    redis.defineCommand('fwlbDel', { numberOfKeys: 1, lua: DEL });
    redis.defineCommand('fwlbLock', { numberOfKeys: 1, lua: LOCK });
    this.r = redis as Redis & Commands;
  }

  private get idx(): string {
    return `${this.prefix}sessions`;
  }

  private get sessionPrefix(): string {
    return `${this.prefix}s:`;
  }

  /** Write sessions in batches of 1,000 per Lua call, all batches in one pipeline. */
  async put(records: SessionRecord[], now = Date.now()): Promise<number> {
    if (!records.length) return 0;
    const p = this.r.pipeline() as unknown as Commands & { exec(): Promise<[Error | null, unknown][] | null> };
    for (let i = 0; i < records.length; i += BATCH) {
      const args: (string | number)[] = [];
      for (const rec of records.slice(i, i + BATCH)) args.push(sessionId(rec), encodeRecord(rec), rec.expires, Math.max(1, rec.expires - now));
      void p.fwlbPut(this.idx, this.sessionPrefix, ...args);
    }
    const res = (await p.exec()) ?? [];
    const err = res.find(([e]) => e)?.[0];
    if (err) throw err;
    return records.length;
  }

  async delete(ids: string[]): Promise<number> {
    if (!ids.length) return 0;
    const p = this.r.pipeline() as unknown as Commands & { exec(): Promise<[Error | null, unknown][] | null> };
    for (let i = 0; i < ids.length; i += BATCH) void p.fwlbDel(this.idx, this.sessionPrefix, ...ids.slice(i, i + BATCH));
    const res = (await p.exec()) ?? [];
    const err = res.find(([e]) => e)?.[0];
    if (err) throw err;
    return ids.length;
  }

  /** Sessions not yet expired. */
  count(now = Date.now()): Promise<number> {
    return this.r.zcount(this.idx, now, '+inf');
  }

  /** Drop index entries of expired sessions (their values expire by themselves). */
  reap(now = Date.now()): Promise<number> {
    return this.r.zremrangebyscore(this.idx, '-inf', `(${now}`);
  }

  /** Live sessions matching `q`, walking the index in chunks; at most `q.limit` (default 100). */
  async query(q: SessionQuery = {}, now = Date.now()): Promise<SessionRecord[]> {
    const limit = q.limit ?? 100;
    const out: SessionRecord[] = [];
    for await (const chunk of this.chunks(now)) {
      for (const r of chunk) if (matches(r, q)) out.push(r);
      if (out.length >= limit) break;
    }
    return out.slice(0, limit);
  }

  /** Every live session, for a node that lost its state. */
  async all(now = Date.now()): Promise<SessionRecord[]> {
    const out: SessionRecord[] = [];
    for await (const chunk of this.chunks(now)) out.push(...chunk);
    return out;
  }

  private async *chunks(now: number): AsyncGenerator<SessionRecord[]> {
    for (let off = 0; ; off += BATCH) {
      const ids = await this.r.zrangebyscore(this.idx, now, '+inf', 'LIMIT', off, BATCH);
      if (!ids.length) return;
      const vals = await this.r.mget(ids.map((id) => this.sessionPrefix + id));
      const recs: SessionRecord[] = [];
      ids.forEach((id, i) => {
        const v = vals[i];
        const r = v ? decodeRecord(id, v) : null;
        if (r) recs.push(r);
      });
      yield recs;
      if (ids.length < BATCH) return;
    }
  }

  /** Take or renew the leader lock (true while this node holds it). */
  async lead(ttlMs: number): Promise<boolean> {
    return (await this.r.fwlbLock(`${this.prefix}leader`, this.node, ttlMs)) === 1;
  }

  /** Publish a new bucket-table epoch (the leader does this); returns the epoch number. */
  async publishEpoch(members: string[], live: string[], now = Date.now()): Promise<EpochDoc> {
    const epoch = await this.r.incr(`${this.prefix}epoch:n`);
    const doc: EpochDoc = { epoch, members, live, by: this.node, at: now };
    await this.r.set(`${this.prefix}epoch`, JSON.stringify(doc));
    await this.notify({ type: 'epoch', epoch });
    return doc;
  }

  async epoch(): Promise<EpochDoc | null> {
    const v = await this.r.get(`${this.prefix}epoch`);
    return v ? (JSON.parse(v) as EpochDoc) : null;
  }

  /** This node's view of each firewall, stamped with the time (views that are not refreshed go stale). */
  async setHealthView(view: Record<string, boolean>, now = Date.now()): Promise<void> {
    const key = `${this.prefix}health:${this.node}`;
    const fields = { ...Object.fromEntries(Object.entries(view).map(([k, v]) => [k, v ? 'up' : 'down'])), _at: String(now) };
    await this.r.multi().del(key).hset(key, fields).sadd(`${this.prefix}nodes`, this.node).exec();
    await this.notify({ type: 'health', node: this.node });
  }

  /** Every node's view not older than `maxAgeMs`: node → firewall → up. */
  async healthViews(maxAgeMs = Infinity, now = Date.now()): Promise<Record<string, Record<string, boolean>>> {
    const nodes = await this.r.smembers(`${this.prefix}nodes`);
    const out: Record<string, Record<string, boolean>> = {};
    for (const n of nodes) {
      const { _at, ...h } = await this.r.hgetall(`${this.prefix}health:${n}`);
      if (_at !== undefined && now - Number(_at) > maxAgeMs) continue;
      out[n] = Object.fromEntries(Object.entries(h).map(([k, v]) => [k, v === 'up']));
    }
    return out;
  }

  notify(ev: TableEvent): Promise<number> {
    return this.r.publish(`${this.prefix}events`, JSON.stringify(ev));
  }

  /**
   * Subscribe on a second connection (a subscribed connection can do nothing else). Its commands queue until it
   * is connected, and ioredis subscribes again after every reconnect, so this works while Redis is away too.
   */
  async subscribe(onEvent: (ev: TableEvent) => void): Promise<{ close(): void }> {
    const sub = this.r.duplicate({ enableOfflineQueue: true });
    sub.on('error', () => undefined);
    void sub.subscribe(`${this.prefix}events`).catch(() => undefined);
    sub.on('message', (_ch, msg) => {
      try {
        onEvent(JSON.parse(msg) as TableEvent);
      } catch {
        /* not ours */
      }
    });
    return { close: () => sub.disconnect() };
  }
}

/**
 * Firewalls every node sees up: a firewall carries new sessions only when both sides agree. `nodes` defaults to
 * the nodes that published a (fresh) view, so a twin that has not started yet does not veto everything.
 */
export function agreedUp(views: Record<string, Record<string, boolean>>, firewalls: string[], nodes: string[] = Object.keys(views)): string[] {
  return firewalls.filter((fw) => nodes.every((n) => views[n]?.[fw] === true));
}
