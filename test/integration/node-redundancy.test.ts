// Integration: node redundancy. Two balancer nodes per side on shared transit segments, active-active
// behind ECMP routes (the outside router, the SLB node, the firewalls), one Redis for the four. Any node forwards
// any packet of any session to the same firewall as its sibling: a flow that moves from one node to the other
// keeps its firewall in both directions. The ECMP lab's routes are static and the tests force them (a rehash,
// one side's path through one node): what a dying node does to traffic behind BGP is bgp.test.ts's.
import { t, Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { bucketOf, buildJoinedTable, canonicalKey, PROTO_TCP } from '@fwlb/flowhash';
import { drive, ECHO_PORT, inNs, Lab, waitUntil } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { natFirewalls, natTitle } from '../helpers/nat-firewalls';
import { portReuse, PORT_REUSE_TITLE } from '../helpers/port-reuse';
import { startRedisOnSocket } from '../helpers/redis';
import { connect, ready, SessionTable } from '@fwlb/session-table';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ALL = ['fw1', 'fw2', 'fw3'];

t.test('node redundancy (ECMP, 2 nodes per side)', async (t) => {
  const { url } = await startRedisOnSocket(t);
  // The default 2 s heartbeat, written out: the agreement subtest times a dead node's view going stale after 3 (6 s).
  // Dual stack: IPv6 streams to the real servers ride along where a node dies.
  const lab = await startLab(t, { sessionTable: { url, heartbeatSeconds: 2 }, nodesPerSide: 2, natFirewalls: true, ipv6: true });
  // Rare faults here (a stream broken around a node's return, seen in 3 of 23 runs) print where each node sent the flow.
  lab.traceFlowExits();
  const cfg = lab.t.balancers.ob1;
  const buckets = cfg.hash.buckets!;
  const home = buildJoinedTable(ALL, buckets);
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const vip = lab.t.vip;
  const target = `${vip}:${ECHO_PORT}`;
  const markOf = (id: string) => 0x10000 + ALL.indexOf(id);
  const firewallOf = (saddr: string, sport: number) =>
    home.owner[bucketOf(canonicalKey('outside', { saddr, sport, daddr: vip, dport: ECHO_PORT, proto: PROTO_TCP }), cfg.hash.seed, buckets)]!;
  /** A node's transit address (its source on the firewalls' side). */
  const viaOf = (node: string) => lab.t.ecmp.find((e) => e.via[node] && e.ns.endsWith('-fw1'))!.via[node];
  /** Every ECMP route of the lab over node i of each side only (a router's rehash, forced), or over all. */
  const routeOnly = (i: number | null) => lab.setEcmp(lab.balancerNames().filter((n) => i === null || n.endsWith(String(i))));
  /** Every ECMP route of a side whose namespace matches `where` through `node` only. */
  const via = (side: 'outside' | 'inside', where: RegExp, node: string) => {
    for (const e of lab.t.ecmp.filter((x) => x.side === side && where.test(x.ns))) inNs(e.ns, ['ip', 'route', 'replace', e.dst, 'via', e.via[node]]);
  };
  /** Each handshake's SYN reaches ib1 (the firewalls route through it), its SYN-ACK ib2 (the SLB node routes through it). */
  const splitHandshakes = () => {
    via('outside', /-or$/, 'ob1');
    via('inside', /-fw\d$/, 'ib1');
    via('inside', /-slb$/, 'ib2');
  };
  /** fw2 in or out of new sessions on every node, as an operator who sends the change to each node does; answers once in force. */
  const adminFw2 = async (t: Test, enabled: boolean) => {
    const codes = (await lab.apiAll('PUT', '/firewalls/fw2/admin', { enabled })).map((r) => r.status);
    t.same(codes, [200, 200, 200, 200], `fw2 ${enabled ? 'back in' : 'out of'} new sessions on every node`);
  };
  /** What every node and firewall holds in conntrack (state, mark, timeout) for the echo flows of these client ports. */
  const flowTraces = (ports: number[]) => lab.flowTraces(ports, ECHO_PORT);
  /** The flows the firewalls dropped packets of, and where each node sent them. */
  const dropReport = () => {
    const flows = lab.firewallDropFlows();
    const ports = flows.flatMap((f) => [...f.matchAll(/:(\d+)/g)].map((m) => Number(m[1]))).filter((p) => p !== ECHO_PORT);
    return JSON.stringify({ flows, exits: ports.length ? lab.flowExits(ports) : [] });
  };

  await t.test('a flow started through node A and continued through node B keeps its firewall in both directions', async (t) => {
    routeOnly(1);
    lab.resetFirewallCounters();
    const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 30, durationMs: 7000, intervalMs: 100 } })));
    await sleep(2000);
    routeOnly(2);
    await sleep(2500);
    const ob2 = lab.kernelSessions('ob2');
    const ib2 = lab.kernelSessions('ib2');
    routeOnly(null);
    const reports = await longs;
    const streams = reports.flatMap((r, i) => r.long.streams.map((s) => ({ ...s, addr: clients[i].addr! })));
    t.equal(streams.length, 60);
    t.equal(streams.filter((s) => s.err).length, 0, '0 of 60 streams broke');
    const fw = lab.firewallCounters();
    t.same(
      fw.map((f) => f.drops),
      [0, 0, 0],
      `0 firewall drops ${dropReport()}`,
    );
    // Each stream is in exactly one firewall's conntrack table: the one its bucket gives.
    const onFw = new Map(ALL.map((id) => [id, lab.kernelSessions(id).filter((s) => s.dport === ECHO_PORT && s.dst === vip)]));
    const crossed = streams.filter(
      (s) => ALL.filter((id) => onFw.get(id)!.some((x) => x.src === s.addr && x.sport === s.port)).join() !== firewallOf(s.addr, s.port),
    );
    t.equal(crossed.length, 0, `every stream crossed exactly its own firewall: ${JSON.stringify(crossed.slice(0, 3))}`);
    // Each stream's entry on ob2 and ib2 (which never saw its SYN) carries the firewall the Maglev table gives it.
    // ob2 first saw a client's packet, ib2 a server's reply (the SLB node routed it there): either orientation.
    for (const [name, kernel] of [
      ['ob2', ob2],
      ['ib2', ib2],
    ] as const) {
      const wrong = streams.filter((s) => {
        const e = kernel.find((x) => (x.src === s.addr && x.sport === s.port) || (x.dst === s.addr && x.dport === s.port));
        return !e || e.mark !== markOf(firewallOf(s.addr, s.port));
      });
      t.equal(wrong.length, 0, `${name} picked up all 60 streams on their firewalls: ${JSON.stringify(wrong.slice(0, 3))}`);
    }
    t.comment(`longest echo gap while moving: ${Math.max(...streams.map((s) => s.maxGapMs))} ms`);
  });

  await t.test("a pinned session (off its bucket's firewall) keeps its firewall on a node that never saw it: the pin comes from Redis", async (t) => {
    routeOnly(1);
    lab.resetFirewallCounters();
    // The kernel gives a client's connections to one destination ports from the same offset, so these streams can
    // reuse an earlier subtest's ports: that connection's TIME_WAIT entry on its firewall would count as a crossing.
    for (const fw of ALL) spawnSync('ip', ['netns', 'exec', lab.ns(fw), 'conntrack', '-D', '-p', 'tcp', '--dport', String(ECHO_PORT)], { stdio: 'ignore' });
    const token = cfg.api!.token!;
    const setFw2 = async (enabled: boolean) => {
      t.equal((await lab.api('ob1', 'PUT', '/firewalls/fw2/admin', { enabled }, token)).status, 200);
      await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw2')!.live === enabled, 10000, `fw2 ${enabled ? 'live' : 'out'} on all four nodes`);
    };
    // Streams start while fw2 is out (the admin state is shared: out on all four nodes), so fw2's buckets go to fw1
    // and fw3; fw2 comes back and those streams sit off their bucket's firewall: exceptions, pinned. Node 2 never saw
    // them: it can only know their firewall from Redis (ob1 and ib1 recorded them).
    await setFw2(false);
    const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 40, durationMs: 9000, intervalMs: 100 } })));
    await sleep(1500);
    await setFw2(true);
    await sleep(3000);
    const pins = await Promise.all(['ob2', 'ib2'].map(async (n) => (await lab.api(n, 'GET', '/status')).body.pins as number));
    routeOnly(2);
    const reports = await longs;
    routeOnly(null);
    const without = buildJoinedTable(ALL, buckets, ['fw1', 'fw3']);
    const streams = reports.flatMap((r, i) => r.long.streams.map((x) => ({ ...x, addr: clients[i].addr! })));
    const key = (x: { addr: string; port: number }) =>
      bucketOf(canonicalKey('outside', { saddr: x.addr, sport: x.port, daddr: vip, dport: ECHO_PORT, proto: PROTO_TCP }), cfg.hash.seed, buckets);
    const pinned = streams.filter((x) => firewallOf(x.addr, x.port) === 'fw2');
    t.ok(pinned.length > 0, `${pinned.length} of 80 streams sat on fw2's buckets while fw2 was out`);
    t.ok(
      pins.every((p) => p >= pinned.length),
      `ob2 and ib2 held a pin for each before the move (${pins.join(', ')} pins)`,
    );
    t.equal(streams.filter((x) => x.err).length, 0, `0 of 80 streams broke (${JSON.stringify(reports.map((r) => r.long.errors))})`);
    t.same(
      lab.firewallCounters().map((f) => f.drops),
      [0, 0, 0],
      `0 firewall drops ${dropReport()}`,
    );
    const onFw = new Map(ALL.map((id) => [id, lab.kernelSessions(id).filter((x) => x.dport === ECHO_PORT && x.dst === vip)]));
    const wrong = pinned.filter((x) => ALL.filter((id) => onFw.get(id)!.some((e) => e.src === x.addr && e.sport === x.port)).join() !== without.owner[key(x)]);
    t.equal(
      wrong.length,
      0,
      `each pinned stream crossed only the firewall it started on: ${JSON.stringify(wrong.slice(0, 3).map((x) => ({ ...x, crossed: ALL.filter((id) => onFw.get(id)!.some((e) => e.src === x.addr && e.sport === x.port)), bucket: without.owner[key(x)] })))}${wrong.length ? ` ${flowTraces(wrong.map((x) => x.port))}` : ''}`,
    );
  });

  await t.test('a reused 5-tuple meets a stale conntrack entry of an earlier connection: the new connection follows its own bucket', async (t) => {
    // A client port used again within minutes finds, on a node that saw only part of the earlier connection (through
    // ECMP), that connection's conntrack entry and its firewall's mark. Each case plants such an entry (fw2's mark)
    // for a port whose bucket is fw1, pins the routes so that the packets that meet it go through that node, and
    // opens a connection from that port.
    const c1 = clients[0];
    const fresh = Array.from({ length: 4000 }, (_, i) => 61000 + i).filter((p) => firewallOf(c1.addr!, p) === 'fw1');
    const cases: { name: string; node: string; state: string; replies: string; reversed?: boolean }[] = [
      // The SYN-ACK's node (ib2) held the earlier connection's SYN only; the new SYN went through ib1.
      { name: 'SYN-ACK on a node that did not see the SYN', node: 'ib2', state: 'SYN_SENT', replies: 'ib2' },
      // The new SYN meets the earlier connection's established entry on the outside node.
      { name: 'SYN from the side on an established entry', node: 'ob1', state: 'ESTABLISHED', replies: 'ib2' },
      // The new SYN arrives from fw1 at a node whose entry says fw2, and its SYN-ACK comes back through that node.
      { name: 'SYN from a firewall on an established entry', node: 'ib1', state: 'ESTABLISHED', replies: 'ib1' },
      // The outside node holds an entry of the opposite orientation (it saw only the server's side of the earlier
      // connection): conntrack refuses the new SYN, then attaches the client's next packets to that entry.
      { name: 'SYN from the side against an entry of the opposite orientation', node: 'ob1', state: 'ESTABLISHED', replies: 'ib2', reversed: true },
    ];
    lab.resetFirewallCounters();
    for (const [i, k] of cases.entries()) {
      const port = fresh[i];
      via('outside', /-or$/, 'ob1');
      via('inside', /-fw\d$/, 'ib1');
      via('inside', /-slb$/, k.replies);
      const ends = k.reversed
        ? ['-s', vip, '-d', c1.addr!, '--sport', String(ECHO_PORT), '--dport', String(port)]
        : ['-s', c1.addr!, '-d', vip, '--sport', String(port), '--dport', String(ECHO_PORT)];
      inNs(lab.ns(k.node), ['conntrack', '-I', '-p', 'tcp', ...ends, '--state', k.state, '--timeout', '120', '--mark', String(markOf('fw2'))]);
      const r = await drive(lab, c1.name, { short: { targets: [target], count: 1, concurrency: 1, timeoutMs: 4000, localPorts: [port] } });
      t.equal(
        r.short.ok,
        1,
        `${k.name} (${k.node} held fw2's mark for port ${port}): the connection worked ${JSON.stringify(r.short.errors)} ${r.short.failed ? flowTraces([port]) : ''}`,
      );
      const on = ALL.filter((id) => lab.kernelSessions(id).some((e) => e.src === c1.addr && e.sport === port));
      t.same(on, ['fw1'], `${k.name}: it crossed fw1, its bucket's firewall, only`);
    }
    t.same(
      lab.firewallCounters().map((f) => f.drops),
      [0, 0, 0],
      `0 firewall drops ${dropReport()}`,
    );
  });

  await t.test(
    'a reused 5-tuple whose earlier connection was pinned, and whose TIME_WAIT entry node 2 still holds: the new connection follows the current table through node 2 too',
    async (t) => {
      const c1 = clients[0];
      const port = Array.from({ length: 2000 }, (_, i) => 63000 + i).find((p) => firewallOf(c1.addr!, p) === 'fw2')!;
      // The earlier connection on this tuple crossed fw1 while fw2 was out and is pinned there since fw2 came back: its
      // record as a node wrote it. Nodes read a sibling's records when the bucket table moves their bucket: fw2 out and
      // back moves this one.
      const redis = await ready(connect({ url, node: 'test' }));
      t.teardown(() => redis.disconnect());
      const now = Date.now();
      await new SessionTable(redis, 'ob1', 'fwlb:', { seed: cfg.hash.seed, buckets: cfg.hash.buckets ?? 251 }).put([
        {
          outerAddr: c1.addr!,
          outerPort: port,
          innerAddr: vip,
          innerPort: ECHO_PORT,
          proto: 6,
          firewall: 'fw1',
          node: 'ob1',
          firstSeen: now,
          expires: now + 120000,
        },
      ]);
      const token = cfg.api!.token!;
      for (const enabled of [false, true]) {
        t.equal((await lab.api('ob1', 'PUT', '/firewalls/fw2/admin', { enabled }, token)).status, 200);
        await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw2')!.live === enabled, 10000, `fw2 ${enabled ? 'live' : 'out'} on all four nodes`);
      }
      const pinning = () =>
        lab.balancerNames().filter((n) => inNs(lab.ns(n), ['nft', 'list', 'map', 'inet', 'fwlb', 'pins']).toString().includes(` . ${port} . `));
      await waitUntil(
        () => pinning().length === 4,
        10000,
        () => `every node to pin the earlier connection (${pinning().join(', ')})`,
      );
      // Node 2 of each side carried part of the earlier connection: it still holds its entry in TIME_WAIT, fw1's mark.
      for (const n of ['ob2', 'ib2'])
        inNs(lab.ns(n), [
          'conntrack',
          '-I',
          '-p',
          'tcp',
          '-s',
          c1.addr!,
          '-d',
          vip,
          '--sport',
          String(port),
          '--dport',
          String(ECHO_PORT),
          '--state',
          'TIME_WAIT',
          '--timeout',
          '120',
          '--mark',
          String(markOf('fw1')),
        ]);
      const staleOn = () => ['ob2', 'ib2'].filter((n) => lab.kernelSessions(n).some((e) => e.sport === port && e.mark === markOf('fw1')));
      lab.resetFirewallCounters();
      // The new connection starts through node 1 of each side; the routers move it to node 2 after 1.5 s.
      routeOnly(1);
      const started = Date.now();
      const stream = drive(lab, c1.name, { long: { targets: [target], count: 1, durationMs: 8000, intervalMs: 100, localPorts: [port] } });
      await sleep(1500);
      // The record is written once the connection is answered, and every node reads it on the announcement; a loaded
      // machine (CI, once) took longer than 1.5 s for all of that.
      await waitUntil(() => pinning().length === 0, 4000, 'the pins to go').catch(() => undefined);
      t.comment(`no node pinned the tuple to fw1 ${Date.now() - started} ms after the new connection started (checked from 1.5 s on)`);
      const stale = pinning();
      const staleEntries = staleOn();
      routeOnly(2);
      const r = await stream;
      routeOnly(null);
      t.same(stale, [], 'once the new connection was recorded, no node pinned its tuple to fw1 any more');
      t.same(staleEntries, [], "and node 2 no longer held the earlier connection's entry");
      t.equal(
        r.long.ok,
        1,
        `the new connection lived through the move to node 2 ${JSON.stringify(r.long.errors)}${r.long.broken ? ` ${flowTraces([port])}` : ''}`,
      );
      const on = ALL.filter((id) => lab.kernelSessions(id).some((e) => e.src === c1.addr && e.sport === port));
      t.same(on, ['fw2'], "it crossed fw2, its bucket's firewall, only");
      t.same(
        lab.firewallCounters().map((f) => f.drops),
        [0, 0, 0],
        `0 firewall drops ${dropReport()}`,
      );
    },
  );

  /** The tuples a node's `conn` set of a firewall records starts of, for this client port. */
  const connHolds = (node: string, fw: string, addr: string, port: number) =>
    inNs(lab.ns(node), ['nft', 'list', 'set', 'inet', 'fwlb', `conn${ALL.indexOf(fw)}`]).includes(`${addr} . ${port} . `);
  // The earlier connection goes to the server through ob1 and comes back through ob2: ob1 records its SYN's start
  // under fw2 and never sees the server's FIN; ob2 picks up its second half mid-stream (fw2's mark), sees the
  // server's FIN and records the SYN-ACK's start under fw2. fw2 then leaves new sessions; the new connection on the
  // same tuple starts through one node both ways and is moved to the other before its first data. What the other
  // kept of the earlier connection (its entry, its start record) must not send it to fw2.
  for (const holder of ['ob2', 'ob1'] as const) {
    const starter = holder === 'ob2' ? 'ob1' : 'ob2';
    const kept = holder === 'ob2' ? 'the second half of' : 'the start of';
    await t.test(
      `a reused 5-tuple whose earlier connection ${holder} saw ${kept}: the new connection, moved there after its handshake, follows the current table`,
      async (t) => {
        const c1 = clients[0];
        const ports = Array.from({ length: 3000 }, (_, i) => (holder === 'ob2' ? 52000 : 49000) + i)
          .filter((p) => firewallOf(c1.addr!, p) === 'fw2')
          .slice(0, 2);
        const entry = (n: string, port: number) =>
          inNs(lab.ns(n), ['conntrack', '-L', '-p', 'tcp', '--orig-port-src', String(ECHO_PORT), '--orig-port-dst', String(port)]).trim();
        for (const port of ports) {
          await adminFw2(t, true);
          await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw2')!.live, 10000, 'fw2 live on every node');
          lab.resetFirewallCounters();
          via('outside', /-or$/, 'ob1');
          via('outside', /-fw\d$/, 'ob2');
          via('inside', /./, 'ib1');
          const first = await drive(lab, c1.name, { long: { targets: [target], count: 1, durationMs: 300, intervalMs: 100, localPorts: [port] } });
          t.equal(first.long.ok, 1, `the earlier connection from port ${port} crossed fw2 ${JSON.stringify(first.long.errors)}`);
          if (holder === 'ob2') {
            const half = entry('ob2', port);
            t.match(half, new RegExp(`FIN_WAIT .* mark=${markOf('fw2')} `), `ob2 held its second half, closing, with fw2's mark: ${half}`);
          } else {
            t.ok(connHolds('ob1', 'fw2', c1.addr!, port), "ob1's record of its start under fw2 outlived it (the server's FIN crossed ob2)");
          }
          await adminFw2(t, false);
          await lab.waitFirewalls((fw) => fw.every((f) => f.id !== 'fw2' || !f.live), 10000, 'fw2 out on every node');
          await sleep(1500);
          via('outside', holder === 'ob2' ? /-fw\d$/ : /-or$/, starter);
          const next = drive(lab, c1.name, { long: { targets: [target], count: 1, durationMs: 1500, intervalMs: 100, localPorts: [port], quietMs: 800 } });
          // Moved once the handshake is through (the firewall has answered it): the holder gets the connection from its
          // first data on.
          await waitUntil(
            () => ['fw1', 'fw3'].some((fw) => lab.kernelSessions(fw).some((e) => e.sport === port && e.answered)),
            3000,
            `the handshake through ${starter}`,
          );
          via('outside', /-or$/, holder);
          const r = await next;
          lab.setEcmp([]);
          t.equal(
            r.long.ok,
            1,
            `the new connection lived through the move to ${holder} ${JSON.stringify(r.long.errors)}${r.long.broken ? ` ${flowTraces([port])}` : ''}`,
          );
          if (holder === 'ob1') t.notOk(connHolds('ob1', 'fw2', c1.addr!, port), "ob1's record of the earlier start under fw2 is gone");
          t.same(
            lab.firewallCounters().map((f) => f.drops),
            [0, 0, 0],
            `0 firewall drops ${dropReport()}`,
          );
        }
        await adminFw2(t, true);
      },
    );
  }

  await t.test(
    'a handshake whose SYN-ACK crossed the node that did not see its SYN, whose first data comes after a table switch: the connection keeps the firewall of its handshake',
    async (t) => {
      // ib2 knows each connection only from the SYN-ACK it steered (conntrack refuses a SYN-ACK without an entry). fw2
      // then leaves new sessions, and the streams say nothing until the switch has passed: the servers' first answers
      // reach ib2 with no entry, and must follow where ib2 sent the SYN-ACK, not the table in force since.
      splitHandshakes();
      lab.resetFirewallCounters();
      const longs = Promise.all(
        clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 20, durationMs: 2000, intervalMs: 200, quietMs: 5000, timeoutMs: 3000 } })),
      );
      await sleep(1000);
      const changed = Date.now();
      await adminFw2(t, false);
      t.ok(Date.now() - changed < 4000, `the switch came ${Date.now() - changed} ms after the change, before the streams' first data (5 s after connecting)`);
      const reports = await longs;
      await adminFw2(t, true);
      routeOnly(null);
      const streams = reports.flatMap((r, i) => r.long.streams.map((x) => ({ ...x, addr: clients[i].addr! })));
      const moved = streams.filter((x) => firewallOf(x.addr, x.port) === 'fw2');
      t.equal(streams.length, 40);
      t.ok(moved.length > 0, `${moved.length} of 40 streams started on fw2, whose buckets moved before their first data`);
      const broken = streams.filter((x) => x.err);
      t.equal(
        broken.length,
        0,
        `0 of 40 streams broke ${JSON.stringify(reports.map((r) => r.long.errors))}${broken.length ? ` ${flowTraces(broken.map((x) => x.port))}` : ''}`,
      );
      t.same(
        lab.firewallCounters().map((f) => f.drops),
        [0, 0, 0],
        `0 firewall drops ${dropReport()}`,
      );
    },
  );

  await t.test("a reused 5-tuple whose earlier connection's SYN-ACK crossed the other node: the SYN that node saw vouches for no later SYN-ACK", async (t) => {
    // The earlier connection: its SYN reached ib2 (which remembers it vouches for one SYN-ACK), its SYN-ACK went
    // through ib1, its ACK and data through ib2 again. The new connection on the same tuple: its SYN reaches ib1,
    // its SYN-ACK ib2, which holds the earlier connection's entry (given fw2's mark here, as if a switch had moved
    // the tuple since): that SYN-ACK must take its bucket's firewall, not the entry's.
    const c1 = clients[0];
    const ports = Array.from({ length: 3000 }, (_, i) => 57000 + i)
      .filter((p) => firewallOf(c1.addr!, p) === 'fw1')
      .slice(0, 5);
    lab.resetFirewallCounters();
    via('outside', /-or$/, 'ob1');
    via('inside', /-fw\d$/, 'ib2');
    via('inside', /-slb$/, 'ib1');
    const first = await drive(lab, c1.name, { short: { targets: [target], count: ports.length, concurrency: 1, timeoutMs: 4000, localPorts: ports } });
    t.equal(first.short.ok, ports.length, `the earlier connections worked ${JSON.stringify(first.short.errors)}`);
    for (const p of ports)
      inNs(lab.ns('ib2'), [
        'conntrack',
        '-U',
        '-p',
        'tcp',
        '-s',
        c1.addr!,
        '--sport',
        String(p),
        '-d',
        vip,
        '--dport',
        String(ECHO_PORT),
        '--mark',
        String(markOf('fw2')),
      ]);
    splitHandshakes();
    const again = await drive(lab, c1.name, {
      short: { targets: [target], count: ports.length, concurrency: 1, timeoutMs: 4000, localPorts: ports, spans: true },
    });
    routeOnly(null);
    t.equal(again.short.ok, ports.length, `the new connections worked ${JSON.stringify(again.short.errors)}`);
    const slow = (again.short.spans ?? []).filter(([, , ms]) => ms > 500);
    t.same(slow, [], 'none waited for a retransmitted SYN-ACK');
    t.same(
      lab.firewallCounters().map((f) => f.drops),
      [0, 0, 0],
      `0 firewall drops ${dropReport()}${slow.length ? ` ${flowTraces(ports)}` : ''}`,
    );
  });

  // Through ECMP the answer of a connection may reach a node that never saw its start: only an address of the
  // firewall's own pool tells that node the firewall, so the published service is translated on both ends.
  await t.test(natTitle('full', false), async (t) => {
    routeOnly(null);
    await natFirewalls(t, lab, { published: 'full', forgetConnSets: false });
  });

  // Opt-in (FWLB_PORT_REUSE_MOVES=1): it fails no connection, but now and then the firewalls drop packets of a flow
  // moved in the fraction of a second before its node learns of it (docs/limits.md, "a connection moved before it
  // was answered").
  await t.test(
    `${PORT_REUSE_TITLE}, while the routers move flows between the nodes every 3 s`,
    { skip: process.env.FWLB_PORT_REUSE_MOVES === '1' ? false : 'FWLB_PORT_REUSE_MOVES=1 runs it' },
    (t) => portReuse(t, lab, { moves: true }),
  );

  await t.test("a node started with another hash seed is named in every node's alarms; fixed, the alarms clear", async (t) => {
    const path = lab.configPath('ob2');
    const good = readFileSync(path, 'utf8');
    const restart = async () => {
      await lab.killNode('ob2');
      await lab.startNode('ob2');
    };
    const names = lab.balancerNames();
    const alarmsOf = async () => Promise.all(names.map(async (n) => ((await lab.api(n, 'GET', '/health')).body.alarms as string[]).join('; ')));
    const period = lab.t.balancers.ob2.sessionTable!.heartbeatSeconds! * 1000;
    const waitAlarms = (ok: (a: string[]) => boolean, what: string) => {
      let a: string[] = [];
      return waitUntil(
        async () => ok((a = await alarmsOf())),
        3 * period,
        () => `${what}: ${JSON.stringify(a)}`,
        100,
      );
    };
    writeFileSync(path, JSON.stringify({ ...lab.t.balancers.ob2, hash: { ...lab.t.balancers.ob2.hash, seed: 7 } }, null, 2));
    try {
      await restart();
      const ms = await waitAlarms(
        (a) => a.every((x, i) => /hash config differs/.test(x) && (names[i] === 'ob2' || x.includes('ob2 ('))),
        'the alarm on all four nodes',
      );
      t.pass(`every node raised the alarm (the others naming ob2) within ${ms} ms of ob2's start`);
    } finally {
      writeFileSync(path, good);
      await restart();
    }
    const ms = await waitAlarms((a) => a.every((x) => !/hash config differs/.test(x)), 'the alarms to clear');
    t.pass(`ob2 back on the shared seed: every alarm cleared within ${ms} ms`);
  });

  await t.test('agreement among 4 nodes: one node that sees fw2 down keeps it from new sessions on every node; dead, its view stops vetoing', async (t) => {
    // fw2 drops ib2's probes only (from ib2's transit address): ib2 sees fw2 down, the three others see it up.
    const fw2 = lab.ns('fw2');
    // Both families: this lab's nodes probe over IPv6.
    const via6 = lab.t.ecmp.find((e) => e.via.ib2?.includes(':') && e.ns.endsWith('-fw1'))!.via.ib2;
    inNs(fw2, ['nft', 'add', 'table', 'inet', 'cut']);
    inNs(fw2, ['nft', 'add', 'chain', 'inet', 'cut', 'probes', '{ type filter hook prerouting priority -400; }']);
    inNs(fw2, ['nft', 'add', 'rule', 'inet', 'cut', 'probes', 'ip', 'saddr', viaOf('ib2'), 'icmp', 'type', 'echo-request', 'drop']);
    inNs(fw2, ['nft', 'add', 'rule', 'inet', 'cut', 'probes', 'ip6', 'saddr', via6, 'icmpv6', 'type', 'echo-request', 'drop']);
    t.teardown(() => inNs(fw2, ['nft', 'delete', 'table', 'inet', 'cut']));
    const all = lab.balancerNames();
    const ms = await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw2')!.live === false, 15000, 'fw2 not live on all four nodes');
    t.comment(`fw2 out of new sessions on all four nodes ${ms} ms after ib2's probes through it were cut`);
    const views = await Promise.all(all.map((n) => lab.api(n, 'GET', '/firewalls')));
    t.same(
      views.map((v) => v.body.find((f: any) => f.id === 'fw2').healthy),
      all.map((n) => n !== 'ib2'),
      'only ib2 sees fw2 down',
    );
    // What every node sees, as the status page shows it: the views the leader reads, on any node.
    const seen = (await lab.api('ob1', 'GET', '/status')).body.views as Record<string, Record<string, boolean>>;
    t.same(
      Object.fromEntries(all.map((n) => [n, seen?.[lab.t.balancers[n].name!]?.fw2])),
      Object.fromEntries(all.map((n) => [n, n !== 'ib2'])),
      "ob1's /status shows every node's view of fw2: ib2's down, the others' up",
    );
    t.same(
      all.map((n) => lab.bucketMarks(n).has(markOf('fw2'))),
      [false, false, false, false],
      "no node's bucket map holds fw2",
    );
    const onFw2 = () => lab.kernelSessions('fw2').filter((s) => s.dport === ECHO_PORT && s.dst === vip).length;
    const before = onFw2();
    // 7 s: a connection whose SYN is lost twice (retried after 1 s and 3 s) still counts, a path that drops it does not
    // (CI once failed one of 300 at 3 s, cause not known: the errors and the drops are printed now).
    const fw0 = lab.firewallCounters();
    const r = await Promise.all(clients.map((c) => drive(lab, c.name, { short: { targets: [target], count: 150, concurrency: 10, timeoutMs: 7000 } })));
    const drops = lab.firewallCounters().map((f, i) => f.drops - fw0[i].drops);
    const failedPorts = r.flatMap((x) => x.short.failedPorts);
    // When a connection fails, what every node and firewall holds for its flow (conntrack: state, mark, timeout).
    const traces = failedPorts.length ? `; conntrack of the failed flows: ${flowTraces(failedPorts)}` : '';
    t.equal(
      r.reduce((a, x) => a + x.short.failed, 0),
      0,
      `300 new connections, 0 failed (${JSON.stringify(r.map((x) => x.short.errors))}; firewall drops meanwhile ${drops.join(', ')} ${dropReport()}; slowed ${r.reduce((a, x) => a + x.short.slowAt.length, 0)}${traces})`,
    );
    t.equal(onFw2() - before, 0, 'none of them crossed fw2');
    // ib2's controller dies; its links stay up. Its view is stale after 3 heartbeats; the leader's next heartbeat
    // publishes an epoch without its veto.
    const period = lab.t.balancers.ib2.sessionTable!.heartbeatSeconds! * 1000;
    const killed = Date.now();
    await lab.killNode('ib2');
    const back = await lab.waitFirewalls(
      (fw) => fw.find((f) => f.id === 'fw2')!.live,
      6 * period + 2000,
      'fw2 live again on the three nodes left',
      all.filter((n) => n !== 'ib2'),
    );
    t.comment(
      `ib2 killed: fw2 live again on the other three ${back} ms later (heartbeat ${period} ms: stale after ${3 * period} ms, documented bound ${4 * period} ms and the join's whole second)`,
    );
    // Stale 3 heartbeats after its last one (at most one before the kill), then the leader's next heartbeat; the join
    // takes effect at a whole second 2 to 3 s after the epoch (every node at once); 2 s for the reconcile and this
    // machine's timers under load.
    t.ok(Date.now() - killed <= 4 * period + 3000 + 2000, `within 4 heartbeats, the join's second and 2 s: ${Date.now() - killed} ms`);
    t.ok(Date.now() - killed >= 2 * period, 'and not before its view went stale');
  });
});

t.test('node redundancy (VRRP: keepalived active/standby, 2 nodes per side)', async (t) => {
  const { url } = await startRedisOnSocket(t);
  // Dual stack: keepalived moves the IPv6 gateway addresses with the IPv4 ones, and IPv6 streams ride the failovers.
  const lab = await startLab(t, { sessionTable: url, nodesPerSide: 2, mode: 'vrrp', natFirewalls: true, ipv6: true });
  await lab.startKeepalived();
  // The NAT subtest's rare drops print where each node sent the flow.
  lab.traceFlowExits();
  t.equal(lab.vrrpHolder('outside'), 'ob1', 'ob1 (priority 250) holds the outside addresses');
  t.equal(lab.vrrpHolder('inside'), 'ib1', 'ib1 holds the inside addresses');
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const target = `${lab.t.vip}:${ECHO_PORT}`;
  const tm = Lab.VRRP_TIMERS;
  const advertMs = tm.advert * 1000;
  /** RFC 5798: a backup of priority 249 declares the master down after 3 advertisements plus its skew. */
  const masterDownMs = 3 * advertMs + ((256 - 249) / 256) * advertMs;
  const waitHolder = (side: 'outside' | 'inside', node: string, ms: number) =>
    waitUntil(
      () => lab.vrrpHolder(side) === node,
      ms,
      () => `${node} to take the ${side} addresses (holder ${lab.vrrpHolder(side)}): ${lab.keepalivedLogs.slice(-10).join('')}`,
      10,
    );

  const servers6 = lab.targets6('server', ECHO_PORT);
  /** 200 long-lived streams (and 60 IPv6 ones) while ob1 fails (`fail`), and 3 s later comes back (`revive`): 0 broken. */
  const failover = async (t: Test, fail: () => Promise<void> | void, revive: () => Promise<void> | void) => {
    lab.resetFirewallCounters();
    const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 100, durationMs: 11000, intervalMs: 100 } })));
    const longs6 = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: servers6, count: 30, durationMs: 11000, intervalMs: 100 } })));
    await sleep(2500);
    const t0 = Date.now();
    await fail();
    const failAt = Date.now() - t0;
    let takeover: number;
    try {
      takeover = await waitHolder('outside', 'ob2', 10000);
      await sleep(3000);
    } finally {
      // Whatever happened, ob1 comes back, so that the next subtest starts from the same place.
      await revive();
    }
    const back = await waitHolder('outside', 'ob1', 10000);
    const reports = await longs;
    const streams = reports.flatMap((r) => r.long.streams);
    t.equal(streams.length, 200);
    t.equal(streams.filter((s) => s.err).length, 0, `0 of 200 streams broke (${JSON.stringify(reports.map((r) => r.long.errors))})`);
    const reports6 = await longs6;
    const streams6 = reports6.flatMap((r) => r.long.streams);
    t.equal(streams6.length, 60);
    t.equal(streams6.filter((s) => s.err).length, 0, `0 of 60 IPv6 streams broke (${JSON.stringify(reports6.map((r) => r.long.errors))})`);
    t.same(
      lab.firewallCounters().map((f) => f.drops),
      [0, 0, 0],
      `0 firewall drops ${JSON.stringify(lab.firewallDropFlows())}`,
    );
    t.comment(
      `ob2 held the addresses ${takeover} ms after the failure began (${(takeover / advertMs).toFixed(1)} advert intervals of ${advertMs} ms; failing took ${failAt} ms), ` +
        `ob1 took them back ${back} ms after it was revived; streams' longest echo gap ${Math.max(...streams.map((s) => s.maxGapMs))} ms`,
    );
    return takeover;
  };

  await t.test(
    "the active node's controller dies: its health check fails, the standby takes the addresses, 0 of 200 streams break, nor 60 IPv6 ones",
    async (t) => {
      const takeover = await failover(
        t,
        () => lab.killNode('ob1'),
        async () => void (await lab.startNode('ob1')),
      );
      // keepalived checks fwlb once a second (its coarsest timer): one check, then the next advertisement.
      t.ok(
        takeover <= tm.checkInterval * 1000 * tm.fall + tm.checkTimeout * 1000 + 2 * advertMs,
        `taken over within a check interval, the check's timeout and an advertisement (${takeover} ms)`,
      );
    },
  );

  await t.test(
    'the active node loses its links: the standby takes over within the master-down interval, 0 of 200 streams break, nor 60 IPv6 ones',
    async (t) => {
      const takeover = await failover(
        t,
        () => lab.nodeLinks('ob1', false),
        () => lab.nodeLinks('ob1', true),
      );
      // 3 advertisements plus the skew (RFC 5798), plus one advertisement for this machine's scheduling.
      t.ok(takeover <= masterDownMs + advertMs, `${takeover} ms <= ${masterDownMs.toFixed(0)} ms (3 x ${advertMs} ms + skew) + ${advertMs} ms`);
    },
  );

  await t.test(PORT_REUSE_TITLE, (t) => portReuse(t, lab));

  await t.test(natTitle('dnat', true), (t) => natFirewalls(t, lab, { published: 'dnat', forgetConnSets: true }));
});
