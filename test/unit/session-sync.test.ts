// Unit: the session sync's logic with a fake store in front of Redis: keys, batching, destroy, loss of Redis and catch-up.
import { t } from 'tap';
import { CtEntry } from '@fwlb/conntrack';
import { SessionRecord, sessionId } from '@fwlb/session-table';
import { SessionStore, SessionSync, sessionOf } from '@fwlb/balancer';

/** A client→VIP flow as the outside node sees it (first packet from its side: labelled), or reversed (learned). */
const entry = (sport: number, mark = 0x10001, proto = 6, reverse = false): CtEntry => {
  const a = { src: '198.51.100.11', dst: '203.0.113.100', proto, sport, dport: 7007 };
  const orig = reverse ? { src: a.dst, dst: a.src, proto, sport: a.dport, dport: a.sport } : a;
  return { orig, reply: { src: orig.dst, dst: orig.src, proto, sport: orig.dport, dport: orig.sport }, status: 8, mark, timeout: 120, ...(reverse ? {} : { labels: [1] }) };
};

function fakeStore() {
  const rows = new Map<string, SessionRecord>();
  let down = false;
  const s: SessionStore & { rows: Map<string, SessionRecord>; calls: number; setDown(d: boolean): void } = {
    rows,
    calls: 0,
    setDown: (d) => (down = d),
    put: async (rs) => {
      s.calls++;
      if (down) throw new Error('Redis down');
      for (const r of rs) rows.set(sessionId(r), r);
      return rs.length;
    },
    delete: async (ids) => {
      s.calls++;
      if (down) throw new Error('Redis down');
      for (const id of ids) rows.delete(id);
      return ids.length;
    },
  };
  return s;
}

t.test('the outer end follows the side label and the role, so both nodes write one key', async (t) => {
  // Client-initiated: hashed on the outside node (labelled, orig from the client), learned on the inside node.
  const ob = sessionOf(entry(40000), 'fw1', 'ob', 0, 0, 'outside');
  const ibLearned = sessionOf({ ...entry(40000), labels: undefined }, 'fw1', 'ib', 0, 0, 'inside');
  t.equal(ob.outerAddr, '198.51.100.11');
  t.equal(sessionId(ob), sessionId(ibLearned));
  // Server-initiated: learned on the outside node (orig from the server), hashed on the inside node (labelled).
  const srv = entry(40000, 0x10001, 6, true);
  const obLearned = sessionOf(srv, 'fw1', 'ob', 0, 0, 'outside');
  const ibHashed = sessionOf({ ...srv, labels: [1] }, 'fw1', 'ib', 0, 0, 'inside');
  t.equal(obLearned.outerAddr, '198.51.100.11', 'the client end is outer whoever opened the flow');
  t.equal(sessionId(obLearned), sessionId(ibHashed));
  t.equal(ob.expires, 120000, 'expiry follows the conntrack timeout');
  t.equal(sessionOf(entry(1), 'fw1', 'ob', 0, 600000, 'outside').expires, 600000, 'but at least the minimum');
});

t.test('events are batched; destroy cancels; unmarked and ICMP entries are ignored', async (t) => {
  const store = fakeStore();
  let dumped: CtEntry[] = [];
  const sync = new SessionSync({ node: 'ob', role: 'outside', firewallOf: (m) => (m === 0x10001 ? 'fw1' : undefined), store, dump: async () => dumped, flushMs: 10, resyncMs: 1000 });
  sync.onEvents([
    { kind: 'new', entry: entry(1) },
    { kind: 'new', entry: entry(2) },
    { kind: 'new', entry: entry(3, 0) },
    { kind: 'new', entry: entry(4, 0x10001, 1) },
    { kind: 'destroy', entry: entry(2) },
  ]);
  await sync.flush();
  t.same([...store.rows.values()].map((r) => r.outerPort), [1], 'only the live, marked TCP session');
  t.equal(store.calls, 2, 'one write and one delete call for the whole batch');

  store.setDown(true);
  sync.onEvents([{ kind: 'new', entry: entry(5) }]);
  await sync.flush();
  t.equal(sync.metrics.writeErrors, 1, 'the failed write is counted');
  t.notOk([...store.rows.values()].some((r) => r.outerPort === 5));
  store.setDown(false);
  dumped = [entry(1), entry(5), entry(6)];
  sync.onEvents([{ kind: 'new', entry: entry(7) }]);
  await sync.flush();
  t.equal(store.rows.size, 4, 'back up: the next write catches up from a dump (1, 5, 6) plus the new one (7)');
  t.equal(sync.metrics.resyncs, 1);
});
