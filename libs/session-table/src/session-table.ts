// The shared session table in Redis: sessions (batched Lua writes, index by expiry), the bucket-table epoch with
// its leader lock, each node's health view, and change notifications; I/O layer of libs/session-table.
import type Redis from 'ioredis';
import { decodeRecord, encodeRecord, ID, matches, SessionQuery, SessionRecord, sessionId } from './session-key';

/**
 * Sessions live in one hash (id → value) with a sorted set of expiries beside it. Why not a key per session with
 * its own TTL: a node that lost its state must load everything fast, and one HGETALL is a single round trip.
 * Lua keeps value and expiry in one atomic step per batch (ioredis defineCommand).
 */
const PUT = `
local moved = {}
for i = 2, #ARGV, 3 do
  local old = redis.call('HGET', KEYS[2], ARGV[i])
  if old and string.match(old, '^%S+') ~= string.match(ARGV[i + 1], '^%S+') then moved[#moved + 1] = ARGV[i] end
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
if #moved > 0 then redis.call('PUBLISH', ARGV[1], cjson.encode({ type = 'moved', ids = moved })) end
return (#ARGV - 1) / 3`;
const DEL = `
local gone = {}
for i = 2, #ARGV do
  if redis.call('HDEL', KEYS[2], ARGV[i]) == 1 then gone[#gone + 1] = ARGV[i] end
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
if #gone > 0 then redis.call('PUBLISH', ARGV[1], cjson.encode({ type = 'moved', ids = gone })) end
return #ARGV - 1`;
/**
 * A node no longer holds these sessions, but they may not have ended (a conntrack flush, a reboot, an eviction):
 * move each from the held index to the grace index with expiry ARGV[1], and stamp that expiry in its value. A
 * node that still holds the session (or picks it up again) puts it back. Already-graced sessions keep their expiry.
 */
const GRACE = `
local n = 0
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    local v = redis.call('HGET', KEYS[2], ARGV[i])
    if v then
      redis.call('HSET', KEYS[2], ARGV[i], (string.gsub(v, '%d+$', ARGV[1])))
      redis.call('ZADD', KEYS[3], ARGV[1], ARGV[i])
      n = n + 1
    end
  end
end
return n`;
/** Remove sessions whose expiry has passed (held or in grace), at most 10,000 per index per call. */
const REAP = `
local total = 0
for k = 1, 3, 2 do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 10000)
  for i = 1, #ids do redis.call('HDEL', KEYS[2], ids[i]) end
  for i = 1, #ids, 1000 do redis.call('ZREM', KEYS[k], unpack(ids, i, math.min(i + 999, #ids))) end
  total = total + #ids
end
return total`;
/**
 * Publish an epoch only while holding the leader lock, in one atomic step: the counter, the document and the
 * notification. The generation names the counter's history: when Redis lost its data (no persistence, a failover
 * with lag, FLUSHALL) the counter restarts under a new generation, and nodes apply the new history instead of
 * ignoring its small numbers. KEYS: lock, counter, generation, doc. ARGV: owner, candidate generation, doc JSON
 * with the fields "epoch" and "generation" left out (filled here), channel, members/live/down are in the JSON.
 */
const PUBLISH_EPOCH = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return nil end
local gen = redis.call('GET', KEYS[3])
if not gen then
  gen = ARGV[2]
  redis.call('SET', KEYS[3], gen)
  redis.call('SET', KEYS[2], 0)
end
local n = redis.call('INCR', KEYS[2])
local doc = '{"epoch":' .. n .. ',"generation":"' .. gen .. '",' .. string.sub(ARGV[3], 2)
redis.call('SET', KEYS[4], doc)
redis.call('PUBLISH', ARGV[4], '{"type":"epoch","epoch":' .. n .. '}')
return doc`;
/**
 * Set a firewall's admin state unless it already is that state (then its first time stands), and announce a change.
 * KEYS: the admin hash. ARGV: id, "0" or "1", time, channel, message.
 */
const SET_ADMIN = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, 1) == ARGV[2] then return v end
v = ARGV[2] .. ' ' .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], v)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return v`;
/** Renew the lock only while we hold it; take it when free. */
const LOCK = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`;

type Commands = {
  fwlbPut(idx: string, hash: string, grace: string, channel: string, ...args: (string | number)[]): Promise<number>;
  fwlbDel(idx: string, hash: string, grace: string, channel: string, ...ids: string[]): Promise<number>;
  fwlbGrace(idx: string, hash: string, grace: string, until: number, ...ids: string[]): Promise<number>;
  fwlbReap(idx: string, hash: string, grace: string, now: number): Promise<number>;
  fwlbLock(key: string, owner: string, ttlMs: number): Promise<number>;
  fwlbSetAdmin(admin: string, id: string, enabled: string, at: string, channel: string, message: string): Promise<string>;
  fwlbPublishEpoch(
    lock: string,
    counter: string,
    gen: string,
    doc: string,
    owner: string,
    candidate: string,
    body: string,
    channel: string,
  ): Promise<string | null>;
};

export interface EpochDoc {
  epoch: number;
  /** The counter's history (see PUBLISH_EPOCH); a new generation restarts the numbering. */
  generation: string;
  /** Firewall ids in the agreed membership, those that carry new sessions, and those every node sees down. */
  members: string[];
  live: string[];
  down: string[];
  /** Who computed it and when. */
  by: string;
  at: number;
  /** Firewalls `live` that the previous epoch did not have take new sessions from this time on (ms since the epoch). */
  joinAt?: number;
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

const BATCH = 1000;

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

export class SessionTable {
  private readonly r: Redis & Commands;
  readonly prefix: string;

  constructor(
    redis: Redis,
    readonly node: string,
    prefix = 'fwlb:',
  ) {
    this.prefix = prefix;
    redis.defineCommand('fwlbPut', { numberOfKeys: 3, lua: PUT });
    redis.defineCommand('fwlbDel', { numberOfKeys: 3, lua: DEL });
    redis.defineCommand('fwlbGrace', { numberOfKeys: 3, lua: GRACE });
    redis.defineCommand('fwlbReap', { numberOfKeys: 3, lua: REAP });
    redis.defineCommand('fwlbLock', { numberOfKeys: 1, lua: LOCK });
    redis.defineCommand('fwlbSetAdmin', { numberOfKeys: 1, lua: SET_ADMIN });
    redis.defineCommand('fwlbPublishEpoch', { numberOfKeys: 4, lua: PUBLISH_EPOCH });
    this.r = redis as Redis & Commands;
  }

  private get idx(): string {
    return `${this.prefix}sessions`;
  }

  private get hash(): string {
    return `${this.prefix}s`;
  }

  private get channel(): string {
    return `${this.prefix}events`;
  }

  /** Sessions no node holds any more (see GRACE), by expiry. */
  private get graceIdx(): string {
    return `${this.prefix}grace`;
  }

  /**
   * One pipeline of Lua calls, `items` in batches of 1,000 per call: the first error fails the whole write (the
   * caller's next re-sync rewrites everything). Returns each call's reply.
   */
  private async batched<T>(items: T[], call: (p: Commands, batch: T[]) => unknown): Promise<unknown[]> {
    if (!items.length) return [];
    const p = this.r.pipeline() as unknown as Commands & { exec(): Promise<[Error | null, unknown][] | null> };
    for (let i = 0; i < items.length; i += BATCH) void call(p, items.slice(i, i + BATCH));
    const res = (await p.exec()) ?? [];
    const err = res.find(([e]) => e)?.[0];
    if (err) throw err;
    return res.map(([, v]) => v);
  }

  /** Write sessions in batches of 1,000 per Lua call, all batches in one pipeline. */
  async put(records: SessionRecord[], _now = Date.now()): Promise<number> {
    await this.batched(records, (p, batch) => {
      const args: (string | number)[] = [];
      for (const rec of batch) args.push(sessionId(rec), encodeRecord(rec), rec.expires);
      return p.fwlbPut(this.idx, this.hash, this.graceIdx, this.channel, ...args);
    });
    return records.length;
  }

  /** The records of these ids as Redis holds them now (absent ids, and values that fail the strict decode, are left out). */
  async get(ids: string[]): Promise<SessionRecord[]> {
    if (!ids.length) return [];
    const values = await this.r.hmget(this.hash, ...ids);
    const out: SessionRecord[] = [];
    values.forEach((v, i) => {
      const rec = v === null ? null : decodeRecord(ids[i], v);
      if (rec) out.push(rec);
    });
    return out;
  }

  async delete(ids: string[]): Promise<number> {
    await this.batched(ids, (p, batch) => p.fwlbDel(this.idx, this.hash, this.graceIdx, this.channel, ...batch));
    return ids.length;
  }

  /** Sessions that no node holds any more get a grace expiry `until` (ms); returns how many moved. */
  async grace(ids: string[], until: number): Promise<number> {
    const replies = await this.batched(ids, (p, batch) => p.fwlbGrace(this.idx, this.hash, this.graceIdx, until, ...batch));
    return replies.reduce<number>((n, v) => n + Number(v), 0);
  }

  /** Sessions held by a node and not yet expired. */
  count(now = Date.now()): Promise<number> {
    return this.r.zcount(this.idx, now, '+inf');
  }

  /** Sessions in grace: no node holds them now, and they are kept until their grace expiry. */
  graceCount(now = Date.now()): Promise<number> {
    return this.r.zcount(this.graceIdx, now, '+inf');
  }

  /** Remove expired sessions; returns how many. */
  async reap(now = Date.now()): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.r.fwlbReap(this.idx, this.hash, this.graceIdx, now);
      total += n;
      if (n < 10000) return total;
    }
  }

  /**
   * Live sessions matching `q`, walking the table in chunks; at most `q.limit` (default 100). A query by address or
   * port lets Redis skip what cannot match (HSCAN MATCH on the id, which carries the tuple), so the node decodes only
   * candidates: one address among 100,000 sessions cost the node over 50 ms of its event loop when it decoded all.
   */
  async query(q: SessionQuery = {}, now = Date.now()): Promise<SessionRecord[]> {
    const limit = q.limit ?? 100;
    const out: SessionRecord[] = [];
    for await (const chunk of this.chunks(now, queryPattern(q))) {
      for (const r of chunk) if (matches(r, q)) out.push(r);
      if (out.length >= limit) break;
    }
    return out.slice(0, limit);
  }

  /** Records read back from Redis that did not decode (bad tuple, port, protocol, id or time): skipped, counted. */
  rejected = 0;

  /** Every live session, for a node that lost its state: one HGETALL. */
  async all(now = Date.now()): Promise<SessionRecord[]> {
    const h = await this.r.hgetall(this.hash);
    const out: SessionRecord[] = [];
    for (const id in h) {
      const r = decodeRecord(id, h[id]);
      if (!r) this.rejected++;
      else if (r.expires >= now) out.push(r);
    }
    return out;
  }

  private async *chunks(now: number, match?: string): AsyncGenerator<SessionRecord[]> {
    let cursor = '0';
    do {
      // With a pattern Redis returns few fields per step, so each step may walk more of the table.
      const [next, flat] = match
        ? await this.r.hscan(this.hash, cursor, 'MATCH', match, 'COUNT', BATCH * 10)
        : await this.r.hscan(this.hash, cursor, 'COUNT', BATCH);
      cursor = next;
      const recs: SessionRecord[] = [];
      for (let i = 0; i < flat.length; i += 2) {
        const r = decodeRecord(flat[i], flat[i + 1]);
        if (!r) this.rejected++;
        else if (r.expires >= now) recs.push(r);
      }
      yield recs;
    } while (cursor !== '0');
  }

  /** Take or renew the leader lock (true while this node holds it). */
  async lead(ttlMs: number): Promise<boolean> {
    return (await this.r.fwlbLock(`${this.prefix}leader`, this.node, ttlMs)) === 1;
  }

  /**
   * Publish a new bucket-table epoch, atomically and only while this node holds the leader lock (a leader whose
   * lock expired publishes nothing). Returns the document, or null when this node is not the leader.
   */
  async publishEpoch(members: string[], live: string[], down: string[] = [], now = Date.now(), joinAt?: number): Promise<EpochDoc | null> {
    const p = this.prefix;
    const body = JSON.stringify({ members, live, down, by: this.node, at: now, ...(joinAt !== undefined ? { joinAt } : {}) });
    const candidate = `${this.node}-${now.toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const doc = await this.r.fwlbPublishEpoch(`${p}leader`, `${p}epoch:n`, `${p}epoch:gen`, `${p}epoch`, this.node, candidate, body, `${p}events`);
    return doc ? decodeEpoch(doc) : null;
  }

  /**
   * The current epoch, or null when there is none or what Redis holds is not a valid epoch document of the current
   * generation (a forged or stale document is not applied).
   */
  async epoch(): Promise<EpochDoc | null> {
    const [v, gen] = await Promise.all([this.r.get(`${this.prefix}epoch`), this.r.get(`${this.prefix}epoch:gen`)]);
    const doc = v ? decodeEpoch(v) : null;
    return doc && doc.generation === gen ? doc : null;
  }

  /** This node's view of each firewall, stamped with the time (views that are not refreshed go stale). */
  /** `digest`: the node's hash config digest, published beside its view so that nodes can compare. */
  async setHealthView(view: Record<string, boolean>, now = Date.now(), digest?: string): Promise<void> {
    const key = `${this.prefix}health:${this.node}`;
    const fields = {
      ...Object.fromEntries(Object.entries(view).map(([k, v]) => [k, v ? 'up' : 'down'])),
      _at: String(now),
      ...(digest ? { _cfg: digest } : {}),
    };
    await this.r.multi().del(key).hset(key, fields).sadd(`${this.prefix}nodes`, this.node).exec();
    await this.notify({ type: 'health', node: this.node });
  }

  /** Every node's view not older than `maxAgeMs`: node → firewall → up. */
  async healthViews(maxAgeMs = Infinity, now = Date.now()): Promise<Record<string, Record<string, boolean>>> {
    const nodes = await this.r.smembers(`${this.prefix}nodes`);
    const out: Record<string, Record<string, boolean>> = {};
    for (const n of nodes) {
      const { _at, _cfg: _, ...h } = await this.r.hgetall(`${this.prefix}health:${n}`);
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
    const nodes = await this.r.smembers(`${this.prefix}nodes`);
    const out: Record<string, string> = {};
    for (const n of nodes) {
      const [at, cfg] = await this.r.hmget(`${this.prefix}health:${n}`, '_at', '_cfg');
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
      `${this.prefix}admin`,
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
    const h = await this.r.hgetall(`${this.prefix}admin`);
    const out: Record<string, AdminState> = {};
    for (const [k, v] of Object.entries(h)) {
      const a = ID.test(k) ? decodeAdmin(v) : null;
      if (a) out[k] = a;
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

/** A firewall's shared admin state: `enabled` from `at` (ms since the epoch) on. */
export interface AdminState {
  enabled: boolean;
  at: number;
}

/** "1 1764670000000" (or "1" as written before times were shared: in force since ever). */
export function decodeAdmin(v: unknown): AdminState | null {
  const m = typeof v === 'string' ? /^([01])(?: (\d{1,15}))?$/.exec(v) : null;
  return m ? { enabled: m[1] === '1', at: m[2] ? Number(m[2]) : 0 } : null;
}

const IDS = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 4096 && v.every((x) => typeof x === 'string' && /^[A-Za-z0-9_-]{1,32}$/.test(x));

/** Strict decode of an epoch document read back from Redis (untrusted): null unless every field is sound. */
export function decodeEpoch(text: string): EpochDoc | null {
  let d: Record<string, unknown>;
  try {
    d = JSON.parse(text);
  } catch {
    return null;
  }
  if (!d || typeof d !== 'object') return null;
  const { epoch, generation, members, live, by, at, joinAt } = d;
  const down = d.down ?? [];
  if (
    !Number.isSafeInteger(epoch) ||
    (epoch as number) < 1 ||
    typeof generation !== 'string' ||
    !IDS(members) ||
    !IDS(live) ||
    !IDS(down) ||
    typeof by !== 'string' ||
    typeof at !== 'number'
  )
    return null;
  if (joinAt !== undefined && !(Number.isSafeInteger(joinAt) && (joinAt as number) >= 0)) return null;
  return { epoch: epoch as number, generation, members, live, down, by, at, ...(joinAt !== undefined ? { joinAt: joinAt as number } : {}) };
}

/**
 * The nodes whose views count: those that published a (fresh) view with at least one firewall in it. An empty view
 * is an abstention: a node cut off from every firewall (all its links down) forwards nothing, and its view would
 * otherwise veto every firewall for the nodes that still forward.
 */
export function voters(views: Record<string, Record<string, boolean>>): string[] {
  return Object.keys(views).filter((n) => Object.keys(views[n]).length > 0);
}

/** Firewalls every node sees down (the ones whose flows may be re-hashed): none when no node has a view. */
export function agreedDown(views: Record<string, Record<string, boolean>>, firewalls: string[], nodes: string[] = voters(views)): string[] {
  if (!nodes.length) return [];
  return firewalls.filter((fw) => nodes.every((n) => views[n]?.[fw] === false));
}

/**
 * Firewalls every node sees up: a firewall carries new sessions only when every node agrees. `nodes` defaults to
 * the voters (nodes with a fresh, non-empty view), so a twin that has not started yet does not veto everything.
 */
export function agreedUp(views: Record<string, Record<string, boolean>>, firewalls: string[], nodes: string[] = voters(views)): string[] {
  return firewalls.filter((fw) => nodes.every((n) => views[n]?.[fw] === true));
}
