// The session table's Lua scripts and their typed commands: each touches the keys of one Redis Cluster slot (its
// KEYS share a hash tag; the slot checker's unit test runs every one). I/O layer of libs/session-table.
/**
 * How far apart two nodes' first sights of one connection may be (ms): their clocks' disagreement plus the time a
 * packet takes from the first node to the last. A record first seen more than this before the one Redis holds on
 * its tuple is an earlier connection's (a client reused its port); it never replaces or ends the later one's.
 */
export const SAME_START_MS = 100;

/**
 * Lua keeps each batch atomic (ioredis defineCommand). KEYS: the bucket's hash, grace set and ended hash. ARGV: the
 * channel, the time (ms), then id and value pairs. A record that takes another firewall than the one before it on
 * its id is announced as moved: the record it replaces, or the mark an ended one left (see DEL) while it lasts. A
 * record of an earlier connection than the one Redis holds on its id (see SAME_START_MS) is refused when it names
 * another firewall: a node re-writing what its conntrack still holds of an ended connection (a re-sync after Redis
 * came back) would otherwise send the later one's packets to the earlier one's firewall. On the same firewall it is
 * taken, keeping the later first sight. Returns how many records were stored.
 */
const PUT = `
local moved = {}
local stored = 0
local graced = redis.call('EXISTS', KEYS[2]) == 1
local ended = redis.call('EXISTS', KEYS[3]) == 1
local now = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local v = ARGV[i + 1]
  local fw, node, first, exp = string.match(v, '^(%S+) (%S+) (%d+) (%d+)$')
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if old then
    local ofw, ofirst = string.match(old, '^(%S+) %S+ (%d+)')
    if ofw ~= fw then
      if first and ofirst and tonumber(ofirst) > tonumber(first) + ${SAME_START_MS} then v = nil else moved[#moved + 1] = ARGV[i] end
    elseif first and ofirst and tonumber(ofirst) > tonumber(first) then
      v = fw .. ' ' .. node .. ' ' .. ofirst .. ' ' .. exp
    end
  elseif ended then
    local e = redis.call('HGET', KEYS[3], ARGV[i])
    if e then
      local efw, upto = string.match(e, '^(%S+) (%d+)$')
      if efw ~= fw and tonumber(upto) >= now then moved[#moved + 1] = ARGV[i] end
      redis.call('HDEL', KEYS[3], ARGV[i])
    end
  end
  if v then
    redis.call('HSET', KEYS[1], ARGV[i], v)
    if graced then redis.call('ZREM', KEYS[2], ARGV[i]) end
    stored = stored + 1
  end
end
if #moved > 0 then redis.call('PUBLISH', ARGV[1], cjson.encode({ type = 'moved', ids = moved })) end
return stored`;
/**
 * Sessions that ended. KEYS: the bucket's hash, grace set and ended hash. ARGV: the channel, how long the end is
 * remembered (until, ms), then id, firewall and first-sight triples (an empty first sight: unknown). A record goes
 * only while it holds the firewall its end was seen on and was first seen no later than the ended connection (see
 * SAME_START_MS): a record with another firewall, or a later start, is a later connection's on the same tuple (a
 * client that reused its port, whose record landed before the earlier connection's end). Each one that goes leaves
 * its firewall in the ended hash until then: a later connection on the tuple that takes another firewall is
 * announced as moved (see PUT), so that a node still holding the earlier connection's entry or start record lets it
 * go.
 */
const DEL = `
local gone = {}
for i = 3, #ARGV, 3 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local ofw, ofirst
  if old then ofw, ofirst = string.match(old, '^(%S+) %S+ (%d+)') end
  local first = tonumber(ARGV[i + 2])
  if ofw == ARGV[i + 1] and not (first and ofirst and tonumber(ofirst) > first + ${SAME_START_MS}) then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1] .. ' ' .. ARGV[2])
    gone[#gone + 1] = ARGV[i]
  end
end
if #gone > 0 then redis.call('PUBLISH', ARGV[1], cjson.encode({ type = 'moved', ids = gone })) end
return #gone`;
/**
 * A node no longer holds these sessions, but they may not have ended (a conntrack flush, a reboot, an eviction):
 * give each the grace expiry ARGV[1], in its value and in the grace set. A node that still holds the session (or
 * picks it up again) writes it again, which ends its grace. Sessions already in grace keep their expiry.
 */
const GRACE = `
local n = 0
for i = 2, #ARGV do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    local v = redis.call('HGET', KEYS[1], ARGV[i])
    if v then
      redis.call('HSET', KEYS[1], ARGV[i], (string.gsub(v, '%d+$', ARGV[1])))
      redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
      n = n + 1
    end
  end
end
return n`;
/**
 * Remove the bucket's sessions whose expiry (the value's last field) has passed, and values without one; and the
 * ended marks whose time is up. KEYS: the bucket's hash, grace set and ended hash.
 */
const REAP = `
local now = tonumber(ARGV[1])
local h = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #h, 2 do
  local e = tonumber(string.match(h[i + 1], '(%d+)$'))
  if not e or e < now then
    redis.call('HDEL', KEYS[1], h[i])
    n = n + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
local e = redis.call('HGETALL', KEYS[3])
for i = 1, #e, 2 do
  local upto = tonumber(string.match(e[i + 1], '(%d+)$'))
  if not upto or upto < now then redis.call('HDEL', KEYS[3], e[i]) end
end
return n`;
/**
 * Publish an epoch only while holding the leader lock, in one atomic step: the counter and the document (the caller
 * announces it, ANNOUNCE_EPOCH, once a replica holds it). The generation names the counter's history: when Redis lost its data (no persistence, a failover
 * with lag, FLUSHALL) the counter restarts under a new generation, and nodes apply the new history instead of
 * ignoring its small numbers. KEYS: lock, counter, generation, doc. ARGV: owner, candidate generation, doc JSON
 * with the fields "epoch" and "generation" left out (filled here); members/live/down are in the JSON.
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
return doc`;
/**
 * After the caller's WAIT: whether the server still holds the epoch document the caller wrote, and if so announce
 * it. A server that lacks it is a promoted replica the write never reached: nothing is announced, and the leader
 * publishes again at its next step. KEYS: the epoch document. ARGV: the document, channel, message.
 */
const ANNOUNCE_EPOCH = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`;
/**
 * Set a firewall's admin state unless it already is that state (then its first time stands), and return the state
 * in force. The value is written even when it stands, so that the caller's WAIT covers it: a node that shares a
 * change another node wrote a moment ago waits for the same replication. The caller announces it (ANNOUNCE_ADMIN).
 * KEYS: the admin hash. ARGV: id, "0" or "1", time.
 */
const SET_ADMIN = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not (v and string.sub(v, 1, 1) == ARGV[2]) then v = ARGV[2] .. ' ' .. ARGV[3] end
redis.call('HSET', KEYS[1], ARGV[1], v)
return v`;
/**
 * After the caller's WAIT: whether the server still holds the admin value the caller wrote, and if so announce it.
 * A server that lacks it is a promoted replica the write never reached (the client resent this after a failover):
 * nothing is announced, and the caller shares the change again. Every share is announced, not only the first: a
 * share retried after a failover finds its value already there (the replica got it) but no announcement made.
 * KEYS: the admin hash. ARGV: id, value, channel, message.
 */
const ANNOUNCE_ADMIN = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1`;
/** Renew the lock only while we hold it; take it when free. */
const LOCK = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`;

/** The scripts as ioredis commands (defineCommand adds them to the client). */
export type Commands = {
  fwlbPut(hash: string, grace: string, ended: string, channel: string, now: number, ...args: string[]): Promise<number>;
  fwlbDel(hash: string, grace: string, ended: string, channel: string, until: number, ...idFirewallFirsts: (string | number)[]): Promise<number>;
  fwlbGrace(hash: string, grace: string, until: number, ...ids: string[]): Promise<number>;
  fwlbReap(hash: string, grace: string, ended: string, now: number): Promise<number>;
  fwlbLock(key: string, owner: string, ttlMs: number): Promise<number>;
  fwlbSetAdmin(admin: string, id: string, enabled: string, at: string): Promise<string>;
  fwlbAnnounceAdmin(admin: string, id: string, value: string, channel: string, message: string): Promise<number>;
  fwlbPublishEpoch(lock: string, counter: string, gen: string, doc: string, owner: string, candidate: string, body: string): Promise<string | null>;
  fwlbAnnounceEpoch(doc: string, value: string, channel: string, message: string): Promise<number>;
};

/** The scripts and how many of their arguments are keys (the slot checker's test reads this too). */
export const SCRIPTS = {
  fwlbPut: { numberOfKeys: 3, lua: PUT },
  fwlbDel: { numberOfKeys: 3, lua: DEL },
  fwlbGrace: { numberOfKeys: 2, lua: GRACE },
  fwlbReap: { numberOfKeys: 3, lua: REAP },
  fwlbLock: { numberOfKeys: 1, lua: LOCK },
  fwlbSetAdmin: { numberOfKeys: 1, lua: SET_ADMIN },
  fwlbAnnounceAdmin: { numberOfKeys: 1, lua: ANNOUNCE_ADMIN },
  fwlbPublishEpoch: { numberOfKeys: 4, lua: PUBLISH_EPOCH },
  fwlbAnnounceEpoch: { numberOfKeys: 1, lua: ANNOUNCE_EPOCH },
} as const;
