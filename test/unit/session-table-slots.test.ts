// Unit: every Redis call of libs/session-table, each script and each MULTI, touches keys of one Redis Cluster slot
// only: the table runs against a client that computes each key's slot (CRC16 and hash tags, as Redis does) and
// refuses a call whose keys span two slots, as a cluster would (CROSSSLOT).
import { t } from 'tap';
import { SCRIPTS, SessionRecord, SessionTable, sessionId, tableKeys } from '@fwlb/session-table';

/** CRC16/XMODEM, the cluster's key hash. */
function crc16(s: string): number {
  let crc = 0;
  for (const byte of Buffer.from(s)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** A key's slot: of its hash tag (the first `{...}` with something inside) when it has one. */
function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(key) % 16384;
}

class CrossSlot extends Error {}

/** The commands the table may send, and which of their arguments are keys. */
const SINGLE_KEY = new Set(['hmget', 'hgetall', 'hlen', 'zcount', 'zcard', 'hscan', 'get', 'smembers', 'hsetnx', 'del', 'unlink', 'hset', 'sadd']);

/** What the checker answers: a plausible empty reply of each command. */
function reply(cmd: string, args: unknown[]): unknown {
  switch (cmd) {
    case 'hmget':
      return args.slice(1).map(() => null);
    case 'hgetall':
      return {};
    case 'hscan':
      return ['0', []];
    case 'get':
      return null;
    case 'smembers':
      return ['ob', 'ib'];
    case 'fwlbLock':
      return 1;
    case 'fwlbSetAdmin':
      return '0 0';
    case 'fwlbAnnounceAdmin':
      return 1;
    case 'role':
      return ['master', 0, [['127.0.0.1', '6380', '0']]];
    case 'wait':
      return 1;
    case 'fwlbPublishEpoch':
      return JSON.stringify({ epoch: 1, generation: 'g', members: ['fw0'], live: ['fw0'], down: [], by: 'ob', at: 1 });
    case 'fwlbAnnounceEpoch':
      return 1;
    default:
      return 0;
  }
}

function slotChecker() {
  const calls: { cmd: string; keys: string[] }[] = [];
  const scripts = new Map<string, number>();
  const check = (cmd: string, keys: string[]) => {
    const slots = new Set(keys.map(keySlot));
    if (slots.size > 1) throw new CrossSlot(`${cmd}: keys in ${slots.size} slots: ${keys.join(' ')}`);
    calls.push({ cmd, keys });
  };
  const client: Record<string, unknown> = {
    defineCommand: (name: string, def: { numberOfKeys: number }) => scripts.set(name, def.numberOfKeys),
    publish: async () => 0, // a channel, not a key
    // A command by name (the flat HGETALL): its first argument is its key.
    call: async (cmd: string, ...args: unknown[]) => {
      if (!SINGLE_KEY.has(cmd.toLowerCase())) throw new Error(`the checker does not know ${cmd}`);
      check(cmd.toLowerCase(), [String(args[0])]);
      return cmd.toLowerCase() === 'hgetall' ? [] : reply(cmd.toLowerCase(), args);
    },
    multi: () => {
      const keys: string[] = [];
      const chain: Record<string, unknown> = {
        exec: async () => {
          check('multi', keys);
          return [];
        },
      };
      for (const c of ['del', 'hset', 'sadd']) {
        chain[c] = (key: string) => {
          keys.push(key);
          return chain;
        };
      }
      return chain;
    },
    // A pipeline goes to the node of its keys' slot: its keyed commands must share one, and a command bound to the
    // node it reaches (ROLE, WAIT) must ride with a key, or a cluster would send it to any node.
    pipeline: () => {
      const cmds: { cmd: string; keys: string[] }[] = [];
      const chain: Record<string, unknown> = {
        exec: async () => {
          const keyed = cmds.flatMap((c) => c.keys);
          check('pipeline', keyed);
          if (!keyed.length && cmds.some((c) => c.cmd === 'role' || c.cmd === 'wait')) throw new CrossSlot('pipeline: ROLE or WAIT without a key');
          calls.push(...cmds);
          return cmds.map((c) => [null, reply(c.cmd, [])]);
        },
      };
      const add =
        (cmd: string, nkeys: number) =>
        (...args: unknown[]) => {
          cmds.push({ cmd, keys: args.slice(0, nkeys).map(String) });
          return chain;
        };
      for (const c of ['hexists', 'hget']) chain[c] = add(c, 1);
      for (const c of ['role', 'wait', 'publish']) chain[c] = add(c, 0);
      for (const [name, n] of scripts) chain[name] = add(name, n);
      return chain;
    },
    duplicate: () => ({ on: () => undefined, subscribe: async () => 1, disconnect: () => undefined }),
  };
  const proxy = new Proxy(client, {
    get(target, prop: string) {
      if (prop in target) return target[prop];
      if (scripts.has(prop))
        return async (...args: unknown[]) => {
          check(prop, args.slice(0, scripts.get(prop)).map(String));
          return reply(prop, args);
        };
      if (SINGLE_KEY.has(prop))
        return async (...args: unknown[]) => {
          check(prop, [String(args[0])]);
          return reply(prop, args);
        };
      return undefined;
    },
  });
  return { proxy, calls, check };
}

t.test('the slot checker computes slots as Redis does and refuses a call across slots', async (t) => {
  t.equal(crc16('123456789'), 0x31c3, 'the CRC16/XMODEM check value');
  t.equal(keySlot('foo'), 12182, "Redis's CLUSTER KEYSLOT foo");
  t.equal(keySlot('{user1000}.following'), keySlot('{user1000}.followers'), 'a hash tag decides the slot');
  t.equal(keySlot('foo{}{bar}'), crc16('foo{}{bar}') % 16384, 'an empty tag is no tag');
  const { check } = slotChecker();
  t.throws(() => check('x', ['fwlb:{1}:s', 'fwlb:{2}:s']), { message: /keys in 2 slots/ }, 'two buckets are two slots');
  t.throws(() => check('x', ['fwlb:{ctl}:leader', 'fwlb:epoch']), { message: /keys in 2 slots/ }, 'an untagged key is its own slot');
});

t.test('every call of the session table touches one slot', async (t) => {
  const { proxy, calls } = slotChecker();
  const table = new SessionTable(proxy as never, 'ob', 'fwlb:', { seed: 7, buckets: 251 });
  const now = Date.now();
  const recs: SessionRecord[] = Array.from({ length: 5000 }, (_, i) => ({
    outerAddr: `198.51.100.${i % 250}`,
    outerPort: 1024 + i,
    innerAddr: i % 2 ? '203.0.113.100' : '2001:db8::100',
    innerPort: 443,
    proto: i % 3 ? 6 : 17,
    firewall: `fw${i % 3}`,
    node: 'ob',
    firstSeen: now,
    expires: now + 60000,
  })).map((r) => (r.innerAddr.includes(':') ? { ...r, outerAddr: `2001:db8::${(r.outerPort % 4000).toString(16)}` } : r));
  const ids = recs.map(sessionId);
  await table.put(recs);
  await table.get(ids);
  await table.delete(recs.slice(0, 100).map((r) => ({ id: sessionId(r), firewall: r.firewall })));
  await table.grace(ids.slice(100, 200), now + 1000);
  await table.count();
  await table.graceCount();
  await table.reap();
  await table.query({ addr: '198.51.100.7' });
  await table.query({});
  await table.all();
  await table.buckets([0, 1, 250]);
  await table.lead(1000);
  await table.publishEpoch(['fw0'], ['fw0']);
  await table.epoch();
  await table.setHealthView({ fw0: true }, now, 'abcdef0123');
  await table.healthViews();
  await table.configDigests();
  await table.setAdmin('fw0', false, now);
  await table.admin();
  await table.migrate();
  (await table.subscribe(() => undefined)).close();
  const used = new Set(calls.map((c) => c.cmd));
  t.same(
    Object.keys(SCRIPTS).filter((s) => !used.has(s)),
    [],
    'every script ran under the checker',
  );
  t.ok(used.has('multi'), 'and the MULTI of a health view');
  t.equal(calls.filter((c) => c.cmd === 'pipeline').length, 4, 'and the two pipelines (the write, the WAIT) of an epoch and of an admin change');
  t.ok(used.has('hgetall'), "and a bucket's read (a command by name)");
  const writeSlots = new Set(calls.filter((c) => c.cmd === 'fwlbPut').map((c) => keySlot(c.keys[0])));
  t.ok(writeSlots.size > 100, `a write of 5,000 sessions spreads over ${writeSlots.size} slots (its buckets), one per call`);
  const keys = tableKeys('fwlb:');
  const control = [keys.leader, keys.epoch, keys.epochCounter, keys.epochGeneration, keys.admin, keys.nodes, keys.health('ob')];
  t.equal(new Set(control.map(keySlot)).size, 1, 'the control keys share one slot');
  t.ok(
    [keys.sessions(0), keys.grace(0), keys.channel].every((k) => k.startsWith('fwlb:')),
    'every key still starts with the prefix (so ACLs by prefix keep working)',
  );
});
