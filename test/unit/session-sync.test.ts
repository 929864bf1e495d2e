// Unit: the session sync's logic with a fake store in front of Redis: keys, batching, destroy, loss of Redis and catch-up.
import { t } from 'tap';
import { CtEntry } from '@fwlb/conntrack';
import { SessionRecord, sessionId } from '@fwlb/session-table';
import { answered, destroyAction, SessionStore, SessionSync, sessionOf } from '@fwlb/balancer';

const IPS_SEEN_REPLY = 2;
const IPS_ASSURED = 4;
/** A client→VIP flow as the outside node sees it (first packet from its side: labelled), or reversed (learned). */
const entry = (sport: number, mark = 0x10001, proto = 6, reverse = false, status = IPS_SEEN_REPLY | IPS_ASSURED): CtEntry => {
  const a = { src: '198.51.100.11', dst: '203.0.113.100', proto, sport, dport: 7007 };
  const orig = reverse ? { src: a.dst, dst: a.src, proto, sport: a.dport, dport: a.sport } : a;
  return {
    orig,
    reply: { src: orig.dst, dst: orig.src, proto, sport: orig.dport, dport: orig.sport },
    status,
    mark,
    timeout: 120,
    id: 1000 + sport,
    ...(reverse ? {} : { labels: [1] }),
  };
};
/** The events of an answered flow as the kernel sends them: NEW (with the labels, unanswered), then an update (no labels). */
const opened = (e: CtEntry) => {
  const { labels: _l, ...bare } = e;
  return [
    { kind: 'new' as const, entry: { ...e, status: 8 } },
    { kind: 'update' as const, entry: bare },
  ];
};
/** The DESTROY event of `e`: no labels (the kernel sends none), the TCP state it ended in. */
const destroyOf = (e: CtEntry, tcpState?: CtEntry['tcpState']): CtEntry => {
  const { labels: _l, timeout: _t, ...rest } = e;
  return { ...rest, ...(tcpState ? { tcpState } : {}) };
};

function fakeStore() {
  const rows = new Map<string, SessionRecord>();
  const graced = new Map<string, number>();
  let down = false;
  const s: SessionStore & { rows: Map<string, SessionRecord>; graced: Map<string, number>; calls: number; setDown(d: boolean): void } = {
    rows,
    graced,
    calls: 0,
    setDown: (d) => (down = d),
    put: async (rs) => {
      s.calls++;
      if (down) throw new Error('Redis down');
      for (const r of rs) {
        rows.set(sessionId(r), r);
        graced.delete(sessionId(r));
      }
      return rs.length;
    },
    delete: async (ends) => {
      s.calls++;
      if (down) throw new Error('Redis down');
      for (const { id } of ends) rows.delete(id);
      return ends.length;
    },
    grace: async (ids, until) => {
      s.calls++;
      if (down) throw new Error('Redis down');
      for (const id of ids) if (rows.has(id)) graced.set(id, until);
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
  t.equal(sessionOf({ ...entry(1), timeout: 432000 }, 'fw1', 'ob', 0, 60000, 'outside', 120000).expires, 120000, 'and at most the maximum (no 5-day records)');
});

t.test("a record's first sight is its connection's start where conntrack keeps one, so a re-sync does not make it newer", async (t) => {
  const now = 1_800_000_000_000;
  t.equal(sessionOf({ ...entry(1), start: now - 30_000 }, 'fw1', 'ob', now, 0, 'outside').firstSeen, now - 30_000, 'the start');
  t.equal(sessionOf(entry(1), 'fw1', 'ob', now, 0, 'outside').firstSeen, now, 'no start (timestamps off): the time of the write');
  t.equal(sessionOf({ ...entry(1), start: now + 5_000 }, 'fw1', 'ob', now, 0, 'outside').firstSeen, now, 'never later than now');
});

t.test('only answered sessions are recorded: TCP once ASSURED, UDP once replied', async (t) => {
  t.notOk(answered(entry(1, 0x10001, 6, false, 0)), 'a stray ACK (no reply) is not a session');
  t.notOk(answered(entry(1, 0x10001, 6, false, IPS_SEEN_REPLY)), 'a spoofed SYN answered by SYN/ACK is not yet a session');
  t.ok(answered(entry(1, 0x10001, 6, false, IPS_SEEN_REPLY | IPS_ASSURED)));
  t.ok(answered(entry(1, 0x10001, 17, false, IPS_SEEN_REPLY)));
  const store = fakeStore();
  const sync = new SessionSync({
    node: 'ob',
    role: 'outside',
    firewallOf: (m) => (m === 0x10001 ? 'fw1' : undefined),
    store,
    dump: async () => [],
    flushMs: 10,
    resyncMs: 1000,
  });
  sync.onEvents([
    { kind: 'update', entry: entry(1, 0x10001, 6, false, IPS_SEEN_REPLY) },
    { kind: 'update', entry: entry(2, 0x10001, 6, false, 0) },
    { kind: 'destroy', entry: destroyOf(entry(2, 0x10001, 6, false, 0), 'ESTABLISHED') },
  ]);
  await sync.flush();
  t.equal(store.rows.size, 0, 'nothing written for unanswered entries, and their DESTROY is ignored');
  sync.onEvents([...opened(entry(1)), { kind: 'update', entry: opened(entry(1))[1].entry }]);
  await sync.flush();
  t.same([...store.rows.keys()], ['198.51.100.11:1>203.0.113.100:7007/6'], 'recorded once the handshake completed');
  t.equal(sync.metrics.written, 1, 'one write for the ASSURED and a repeated update');
});

t.test('orientation comes from the NEW event: an update of a flow whose NEW was not seen is left to the next dump', async (t) => {
  const store = fakeStore();
  const sync = new SessionSync({
    node: 'ob',
    role: 'outside',
    firewallOf: (m) => (m === 0x10001 ? 'fw1' : undefined),
    store,
    dump: async () => [],
    flushMs: 10,
    resyncMs: 1000,
  });
  // A client-initiated flow on the outside node: labelled at NEW; its update carries no label.
  const [, update] = opened(entry(41000));
  sync.onEvents([update]);
  await sync.flush();
  t.equal(store.rows.size, 0, 'not recorded under a guessed (reversed) key');
  t.equal(sync.metrics.deferred, 1);
  sync.onEvents(opened(entry(41001)));
  await sync.flush();
  t.same(
    [...store.rows.values()].map((r) => r.outerAddr),
    ['198.51.100.11'],
    'with its NEW seen, the client end is outer',
  );
});

t.test('a DESTROY deletes only a session that ended; a flushed one gets a grace expiry, under its recorded key', async (t) => {
  const store = fakeStore();
  // The inside node: flows learned from a firewall carry no label, so the orig source is the outer end.
  const learned = (sport: number, proto = 6) => ({ ...entry(sport, 0x10001, proto), labels: undefined });
  const sync = new SessionSync({
    node: 'ib',
    role: 'inside',
    firewallOf: (m) => (m === 0x10001 ? 'fw1' : undefined),
    store,
    dump: async () => [],
    flushMs: 10,
    resyncMs: 1000,
    now: () => 5000,
  });
  sync.onEvents([...[1, 2, 3].flatMap((p) => opened(learned(p))), ...opened(learned(4, 17))]);
  await sync.flush();
  t.equal(store.rows.size, 4);
  sync.onEvents([
    { kind: 'destroy', entry: destroyOf(learned(1), 'TIME_WAIT') },
    { kind: 'destroy', entry: destroyOf(learned(2), 'CLOSE') },
    { kind: 'destroy', entry: destroyOf(learned(3), 'ESTABLISHED') },
    { kind: 'destroy', entry: destroyOf(learned(4, 17)) },
  ]);
  await sync.flush();
  t.same(
    [...store.rows.keys()].sort(),
    ['198.51.100.11:3>203.0.113.100:7007/6', '198.51.100.11:4>203.0.113.100:7007/17'],
    'FIN and RST ends deleted; the flushed TCP and the UDP entries kept',
  );
  t.same([...store.graced.values()], [7000, 7000], 'kept with a grace expiry of two re-sync periods');
  t.equal(destroyAction(destroyOf(learned(9), 'ESTABLISHED')), 'grace');
  t.equal(destroyAction(destroyOf(learned(9), 'FIN_WAIT')), 'delete');
  sync.onEvents(opened(learned(3)));
  await sync.flush();
  t.notOk(store.graced.has('198.51.100.11:3>203.0.113.100:7007/6'), 'a node that picks the session up again puts it back');
});

t.test('events are batched; unmarked and ICMP entries are ignored; Redis loss is caught up from a dump', async (t) => {
  const store = fakeStore();
  let dumped: CtEntry[] = [];
  const sync = new SessionSync({
    node: 'ob',
    role: 'outside',
    firewallOf: (m) => (m === 0x10001 ? 'fw1' : undefined),
    store,
    dump: async () => dumped,
    flushMs: 10,
    resyncMs: 1000,
  });
  sync.onEvents([
    ...opened(entry(1)),
    ...opened(entry(2)),
    ...opened(entry(3, 0)),
    ...opened(entry(4, 0x10001, 1)),
    { kind: 'destroy', entry: destroyOf(entry(2), 'CLOSE') },
  ]);
  await sync.flush();
  t.same(
    [...store.rows.values()].map((r) => r.outerPort),
    [1],
    'only the live, marked TCP session',
  );
  t.equal(store.calls, 2, 'one write and one delete call for the whole batch');

  store.setDown(true);
  sync.onEvents(opened(entry(5)));
  await sync.flush();
  t.equal(sync.metrics.writeErrors, 1, 'the failed write is counted');
  t.notOk([...store.rows.values()].some((r) => r.outerPort === 5));
  store.setDown(false);
  dumped = [entry(1), entry(5), entry(6), entry(8, 0x10001, 6, false, IPS_SEEN_REPLY)];
  sync.onEvents(opened(entry(7)));
  await sync.flush();
  t.equal(store.rows.size, 4, 'back up: the next write catches up from a dump (1, 5, 6; not the unanswered 8) plus the new one (7)');
  t.equal(sync.metrics.resyncs, 1);
  t.equal(sync.held, 3, 'the dump rebuilt what the node holds');
});

t.test('a re-sync ends the records of connections that are over (TIME_WAIT, CLOSE) instead of writing them back', async (t) => {
  const store = fakeStore();
  const ended: { id: string; firewall: string; firstSeen?: number }[] = [];
  const del = store.delete;
  store.delete = (ends) => (ended.push(...ends), del(ends));
  const start = Date.now() - 30_000;
  const over = { ...entry(1), start, tcpState: 'TIME_WAIT' as const };
  const reset = { ...entry(2), start, tcpState: 'CLOSE' as const };
  const halfClosed = { ...entry(3), start, tcpState: 'CLOSE_WAIT' as const };
  const sync = new SessionSync({
    node: 'ob',
    role: 'outside',
    firewallOf: (m) => (m === 0x10001 ? 'fw1' : undefined),
    store,
    dump: async () => [over, reset, halfClosed, entry(4)],
    flushMs: 10,
    resyncMs: 1000,
  });
  await sync.resync('test');
  t.same([...store.rows.values()].map((r) => r.outerPort).sort(), [3, 4], 'the half-closed and the live one are written');
  t.equal(sync.held, 2, 'and only they are sessions this node holds');
  t.same(
    ended.map((e) => [e.id.split('>')[0], e.firewall, e.firstSeen]),
    [
      ['198.51.100.11:1', 'fw1', start],
      ['198.51.100.11:2', 'fw1', start],
    ],
    'the two that are over are ended, with their start, so a later connection on the tuple keeps its record',
  );
  ended.length = 0;
  sync.onEvents([{ kind: 'destroy', entry: destroyOf(over, 'TIME_WAIT') }]);
  await sync.flush();
  t.same(ended, [], 'their DESTROY writes nothing more');
});

t.test('re-syncs are coalesced: at most one waits while one runs', async (t) => {
  const store = fakeStore();
  let dumps = 0;
  let release: () => void = () => undefined;
  const slow = () =>
    new Promise<CtEntry[]>((r) => {
      dumps++;
      release = () => r([]);
    });
  const sync = new SessionSync({ node: 'ob', role: 'outside', firewallOf: () => 'fw1', store, dump: slow, flushMs: 10, resyncMs: 1000 });
  const first = sync.resync('overrun 1');
  await new Promise((r) => setImmediate(r));
  const more = Array.from({ length: 20 }, (_, i) => sync.resync(`overrun ${i + 2}`));
  release();
  await first;
  await new Promise((r) => setImmediate(r));
  release();
  await Promise.all(more);
  t.equal(dumps, 2, '21 requests while a dump was running: 2 dumps');
  t.equal(sync.metrics.resyncsCoalesced, 19);
});

t.test('the session cache is bounded', async (t) => {
  const { SessionCache } = await import('@fwlb/balancer');
  const c = new SessionCache(1, 251, 3);
  for (let p = 1; p <= 5; p++)
    c.put({
      outerAddr: '198.51.100.11',
      outerPort: p,
      innerAddr: '203.0.113.100',
      innerPort: 80,
      proto: 6,
      firewall: 'fw1',
      node: 'ob',
      firstSeen: 0,
      expires: 1,
    });
  t.equal(c.size, 3);
  t.equal(c.dropped, 2);
});

t.test('pins with sync groups: a session on a firewall that is gone is pinned to the group peer that holds its state', async (t) => {
  const { SessionCache } = await import('@fwlb/balancer');
  const { buildJoinedTable, buildGroupedTable, syncGroupRescue, bucketOf } = await import('@fwlb/flowhash');
  const all = ['fw1', 'fw2', 'fw3'];
  const groups = [['fw1', 'fw2']];
  const markOf = new Map(all.map((id, i) => [id, 0x10000 + i]));
  const home = buildJoinedTable(all, 251).owner;
  const c = new SessionCache(1, 251);
  // Sessions on fw2 whose buckets are fw3's (they were pinned there, e.g. after a rejoin): the case pins must cover.
  const recs = [];
  for (let p = 1000; recs.length < 20; p++) {
    const rec = {
      outerAddr: '198.51.100.11',
      outerPort: p,
      innerAddr: '203.0.113.100',
      innerPort: 80,
      proto: 6,
      firewall: 'fw2',
      node: 'ob',
      firstSeen: 0,
      expires: 1,
    };
    if (home[bucketOf(rec, 1, 251)] === 'fw3') {
      recs.push(rec);
      c.put(rec);
    }
  }
  const live = ['fw1', 'fw3'];
  const table = buildGroupedTable(all, 251, live, groups);
  const rescued = c.pins(table, markOf, new Set(live), syncGroupRescue(251, live, groups));
  t.equal(rescued.size, 20, 'every fw2 session on a fw3 bucket is pinned');
  t.ok(
    [...rescued.values()].every((m) => m === markOf.get('fw1')),
    'to fw1, its group peer',
  );
  t.equal(c.pins(buildJoinedTable(all, 251, live), markOf, new Set(live)).size, 0, 'without a group: no pin, the sessions are re-hashed (today)');
  // fw2 back: its sessions are on fw3's buckets and fw2 is reachable: pinned to fw2 as before.
  const back = c.pins(buildJoinedTable(all, 251), markOf, new Set(all));
  t.ok(back.size > 0 && [...back.values()].every((m) => m === markOf.get('fw2')));
});

t.test('the session cache: pins as a walk over every session gives them, for random tables; moves, deletes and expiry', async (t) => {
  const { SessionCache } = await import('@fwlb/balancer');
  const { buildJoinedTable, bucketOf } = await import('@fwlb/flowhash');
  const { sessionId } = await import('@fwlb/session-table');
  const fws = ['fw1', 'fw2', 'fw3', 'fw4'];
  const markOf = new Map(fws.map((id, i) => [id, 0x10000 + i]));
  const c = new SessionCache(99, 251);
  const now = Date.now();
  let x = 12345;
  const rnd = (n: number) => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % n);
  const recs = Array.from({ length: 3000 }, (_, i) => ({
    outerAddr: i % 2 ? `198.51.100.${rnd(250)}` : `2001:db8::${rnd(65535).toString(16)}`,
    outerPort: 1024 + rnd(60000),
    innerAddr: i % 2 ? '203.0.113.100' : '2001:db8:5::10',
    innerPort: 443,
    proto: i % 3 ? 6 : 17,
    firewall: fws[rnd(4)],
    node: 'ob',
    firstSeen: now,
    expires: now + 60000 + rnd(60000),
  }));
  const live = new Map<string, (typeof recs)[number]>();
  for (const r of recs) {
    c.put(r);
    live.set(sessionId(r), r);
  }
  // Some move to another firewall, some go.
  for (const r of recs.slice(0, 300)) {
    const moved = { ...r, firewall: r.firewall === 'fw1' ? 'fw2' : 'fw1' };
    c.put(moved);
    live.set(sessionId(r), moved);
  }
  for (const r of recs.slice(300, 500)) {
    c.delete(r);
    live.delete(sessionId(r));
  }
  // The end of an earlier connection, seen on the firewall its tuple has left since, leaves the later record.
  for (const r of recs.slice(0, 50)) c.delete(r);
  t.equal(c.size, live.size, 'deletes take only records on the firewall their end was seen on');
  const byFw = new Map<string, number>();
  for (const r of live.values()) byFw.set(r.firewall, (byFw.get(r.firewall) ?? 0) + 1);
  t.same(
    Object.fromEntries(c.sessionsByFirewall()),
    Object.fromEntries(byFw),
    'sessions by firewall: what a walk over every session counts, after moves and deletes',
  );
  const key = ([id, mark]: [string, number]) => `${id}|${mark}`;
  for (const liveFws of [fws, ['fw1', 'fw3', 'fw4'], ['fw2', 'fw4']]) {
    const table = buildJoinedTable(fws, 251, liveFws);
    const reachable = new Set(liveFws);
    const want = [...live.values()]
      .filter((r) => reachable.has(r.firewall) && table.owner[bucketOf(r, 99, 251)] !== r.firewall)
      .map((r) => key([sessionId(r), markOf.get(r.firewall)!]))
      .sort();
    t.same([...c.pins(table, markOf, reachable)].map(key).sort(), want, `pins with ${liveFws.join(',')} live: ${want.length}`);
    const r = [...live.values()][7];
    t.equal(c.isPinned(sessionId(r), table), table.owner[bucketOf(r, 99, 251)] !== r.firewall, 'isPinned agrees');
  }
  t.equal(c.firewallOf(sessionId(recs[0])), live.get(sessionId(recs[0]))!.firewall, 'a moved session is on its new firewall');
  t.equal(c.firewallOf(sessionId(recs[400])), undefined, 'a deleted one is gone');
  c.reap(now + 90000);
  const left = [...live.values()].filter((r) => r.expires >= now + 90000 + 1000).length;
  t.ok(c.size >= left && c.size <= [...live.values()].filter((r) => r.expires >= now + 90000 - 1000).length, `expiry to the second: ${c.size} left`);
});
