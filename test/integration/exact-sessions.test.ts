// Integration: the session table never loses, reverses or invents a session, and a learned
// firewall is always honoured. Real packets through the lab's strict firewalls, a real redis-server.
import { t } from 'tap';
import Redis from 'ioredis';
import { parseSessionId } from '@fwlb/session-table';
import { drive, ECHO_PORT, inNs, Lab } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { startRedisOnSocket } from '../helpers/redis';
import { convergeSessions, sessionCount } from '../helpers/sessions';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const token = (lab: Lab) => lab.t.nodes.outside.api!.token!;
const both = async (lab: Lab, method: string, path: string, body?: unknown) =>
  Promise.all((['outside', 'inside'] as const).map((r) => lab.api(r, method, path, body, token(lab))));
const CLIENT_NET = /^198\.51\.100\./;

/** Drop one node's ICMP probes inside firewall `fw` (the firewall still forwards everything else). */
function cutProbes(lab: Lab, fw: string, towards: string): () => void {
  const ns = lab.ns(fw);
  inNs(ns, ['nft', 'add', 'table', 'ip', 'cut']);
  inNs(ns, ['nft', 'add', 'chain', 'ip', 'cut', 'probecut', '{ type filter hook forward priority -10; }']);
  inNs(ns, ['nft', 'add', 'rule', 'ip', 'cut', 'probecut', 'ip', 'daddr', towards, 'icmp', 'type', 'echo-request', 'drop']);
  return () => inNs(ns, ['nft', 'delete', 'table', 'ip', 'cut']);
}

t.test('without a session table, a flow learned from a firewall goes back through it whatever the probes say', async (t) => {
  const lab = await startLab(t);
  // fw2 drops only the inside node's probes (echo requests to the outside node): ib sees fw2 down, ob sees it up,
  // and ob keeps hashing new client connections to fw2.
  const restore = cutProbes(lab, 'fw2', lab.t.nodes.inside.health!.target!);
  const views = async () =>
    (await Promise.all((['outside', 'inside'] as const).map((r) => lab.api(r, 'GET', '/firewalls')))).map((v) => v.body.find((f: any) => f.id === 'fw2'));
  const t0 = Date.now();
  for (;;) {
    const [o, i] = await views();
    if (o.live && !i.live) break;
    if (Date.now() - t0 > 10000) throw new Error(`fw2 not seen down by the inside node only: ${JSON.stringify([o, i])}`);
    await sleep(50);
  }
  lab.resetFirewallCounters();
  const clients = lab.t.hosts.filter((h) => h.role === 'client').map((c) => `${c.addr}:${ECHO_PORT}`);
  const [out, inb] = await Promise.all([
    Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { short: { targets: [`${lab.t.vip}:${ECHO_PORT}`], count: 150, concurrency: 8, timeoutMs: 5000 } }))),
    Promise.all(['s1', 's2', 's3'].map((s) => drive(lab, s, { short: { targets: clients, count: 100, concurrency: 8, timeoutMs: 5000 } }))),
  ]);
  const fw = lab.firewallCounters();
  const failed = [...out, ...inb].reduce((n, r) => n + r.short.failed, 0);
  // The kernel's own counter of the rule that sends a flow back to a suspect firewall it was heard from.
  const chain = JSON.parse(inNs(lab.ns('ib'), ['nft', '-j', 'list', 'chain', 'inet', 'fwlb', 'prerouting'])).nftables;
  const heard = chain.find((x: any) => x.rule && JSON.stringify(x.rule.expr).includes('"right":"@heard"'));
  const heardPackets = heard?.rule.expr.find((e: any) => e.counter)?.counter.packets ?? 0;
  t.comment(
    `fw2 carried ${fw.find((f) => f.id === 'fw2')!.newSessions} new sessions; the inside node sent ${heardPackets} packets back to fw2 because their flows were heard from it`,
  );
  t.ok(fw.find((f) => f.id === 'fw2')!.newSessions > 30, 'the outside node still sent new sessions through fw2');
  t.equal(failed, 0, '0 of 600 client- and server-initiated connections failed');
  t.equal(
    fw.reduce((n, f) => n + f.drops, 0),
    0,
    '0 firewall drops',
  );
  t.ok(heardPackets > 0, 'the replies went back through fw2, the firewall they came from');
  restore();
});

t.test(
  "a flow this node has on the wrong firewall follows the firewall its packets come from: the inside node's marks moved mid-stream, 0 streams broken",
  async (t) => {
    // With the session table: the record of a flow that moved must follow it. The re-sync (which rewrites every
    // record a node holds) is set beyond the test's end, so that it cannot be what puts the records right.
    const { redis, url } = await startRedisOnSocket(t);
    const lab = await startLab(t, { sessionTable: { url, resyncSeconds: 300 } });
    lab.resetFirewallCounters();
    const vip = `${lab.t.vip}:${ECHO_PORT}`;
    const run = Promise.all(
      ['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 10, durationMs: 7000, intervalMs: 100, timeoutMs: 2500 } })),
    );
    await sleep(2000);
    // What a node that lost its state guesses when the server speaks first: the hash's firewall, not the flow's. Here
    // every stream's entry on the inside node is given another firewall's mark.
    const marks = Array.from({ length: lab.t.opts.firewalls }, (_, i) => 0x10000 + i);
    const streams = lab.kernelSessions('ib').filter((e) => e.proto === 6 && e.dport === ECHO_PORT && CLIENT_NET.test(e.src) && marks.includes(e.mark));
    const before = new Map(streams.map((e) => [`${e.src}:${e.sport}`, e.mark]));
    const fwOf = (mark: number) => `fw${marks.indexOf(mark) + 1}`;
    const wrongOf = (mark: number) => marks[(marks.indexOf(mark) + 1) % marks.length];
    // The records first, straight in Redis (no notification, so no node reacts): each names the firewall the inside
    // node's entry is about to get. Then the node's own update of the entry agrees with its record, and only the
    // flow's move back can put the record right.
    const r = new Redis(redis.url);
    t.teardown(() => r.disconnect());
    let planted = 0;
    for (const key of await r.keys('*:s'))
      for (const [id, value] of Object.entries(await r.hgetall(key))) {
        const k = parseSessionId(id);
        const mark = k ? before.get(`${k.outerAddr}:${k.outerPort}`) : undefined;
        if (mark === undefined) continue;
        await r.hset(key, id, value.replace(/^\S+/, fwOf(wrongOf(mark))));
        planted++;
      }
    for (const e of streams) {
      const wrong = wrongOf(e.mark);
      const args = ['-U', '-p', 'tcp', '-s', e.src, '-d', e.dst, '--sport', String(e.sport), '--dport', String(e.dport), '--mark', String(wrong)];
      inNs(lab.ns('ib'), ['conntrack', ...args]);
    }
    const reports = await run;
    const all = reports.flatMap((r) => r.long.streams);
    t.equal(streams.length, 20, 'the 20 streams were found on the inside node, each marked with its firewall');
    t.equal(all.filter((s) => s.err).length, 0, `0 of ${all.length} streams broke (${JSON.stringify(reports.map((r) => r.long.errors))})`);
    const after = new Map(
      lab
        .kernelSessions('ib')
        .filter((e) => before.has(`${e.src}:${e.sport}`))
        .map((e) => [`${e.src}:${e.sport}`, e.mark]),
    );
    t.same(
      [...before.keys()].filter((k) => after.get(k) !== before.get(k)),
      [],
      "every stream's entry carries its own firewall's mark again",
    );
    const fws = (await lab.api('inside', 'GET', '/firewalls')).body as { id: string; relearned: { packets: number } | null }[];
    const relearned = fws.reduce((n, f) => n + (f.relearned?.packets ?? 0), 0);
    t.ok(relearned >= streams.length, `the inside node counted the flows that moved back (${relearned} packets, ${streams.length} flows)`);
    // A drop is possible only for an answer that left between a stream's packet and the mark's change; it is
    // retransmitted after the next packet from the client put the flow back.
    t.comment(`firewall drops meanwhile: ${JSON.stringify(lab.firewallCounters().map((f) => f.drops))}`);
    // The move back changed the ct mark, a conntrack event, so the node rewrote each record. Without that, Redis
    // would keep the wrong firewall until the next re-sync, and a node that lost its state would pin the flow there.
    t.equal(planted, streams.length, 'each stream had its record in Redis, given the wrong firewall before the move');
    const wrongRecords = async () => {
      const listed = (await lab.api('inside', 'GET', `/sessions?port=${ECHO_PORT}&limit=10000`)).body as {
        outerAddr: string;
        outerPort: number;
        firewall: string;
      }[];
      const byFlow = new Map(listed.map((x) => [`${x.outerAddr}:${x.outerPort}`, x.firewall]));
      return [...before].filter(([k, mark]) => byFlow.get(k) !== fwOf(mark)).map(([k, mark]) => `${k} ${byFlow.get(k)} (not ${fwOf(mark)})`);
    };
    let wrong = await wrongRecords();
    for (const t0 = Date.now(); wrong.length && Date.now() - t0 < 3000; wrong = await wrongRecords()) await sleep(200);
    t.same(wrong, [], "each stream's record in Redis names its own firewall again");
  },
);

t.test('with the session table: junk stays out, a flush loses nothing, a failure and rejoin leave exact records', async (t) => {
  const { url } = await startRedisOnSocket(t);
  const lab = await startLab(t, { sessionTable: url });
  const vip = `${lab.t.vip}:${ECHO_PORT}`;
  const count = (role: 'outside' | 'inside') => sessionCount(lab, role);
  const converge = (ms: number) => convergeSessions(lab, ms);

  await t.test('1,000 ACK-only packets and 1,000 spoofed SYNs add nothing to Redis', async (t) => {
    const before = await count('outside');
    const entriesBefore = lab.kernelSessions('ob').filter((e) => e.mark !== 0).length;
    lab.junk('c1', 'ack', lab.t.vip, ECHO_PORT, 1000);
    lab.junk('c1', 'syn', lab.t.vip, ECHO_PORT, 1000);
    await sleep(2000);
    const after = await count('outside');
    const entries = lab.kernelSessions('ob').filter((e) => e.mark !== 0);
    t.ok(entries.length - entriesBefore >= 1800, `the junk reached the outside node's conntrack (${entries.length - entriesBefore} new marked entries)`);
    t.equal(after.redis + (after.grace ?? 0), before.redis + (before.grace ?? 0), `Redis count unchanged (${before.redis} → ${after.redis})`);
    t.equal(after.kernel, before.kernel, 'and the node counts none of it as a session');
  });

  await t.test('conntrack -F on both nodes while the controllers run, then both restarted: idle streams off their bucket survive', async (t) => {
    // Idle streams (one message every 6 s): 40 with all firewalls in, 40 while fw2 is out; after fw2 rejoins,
    // the second set's fw2-bucket streams sit on fw1/fw3, off their bucket: only the pins keep them there.
    const idle = () =>
      Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 20, durationMs: 26000, intervalMs: 6000, timeoutMs: 4000 } })));
    lab.resetFirewallCounters();
    const a = idle();
    await sleep(1000);
    for (const r of await both(lab, 'PUT', '/firewalls/fw2/admin', { enabled: false })) t.equal(r.status, 200, 'fw2 leaves');
    const b = idle();
    await sleep(1000);
    for (const r of await both(lab, 'PUT', '/firewalls/fw2/admin', { enabled: true })) t.equal(r.status, 200, 'fw2 rejoins');
    const c = await converge(5000);
    const held = c.o.redis;
    const pins = (await Promise.all((['outside', 'inside'] as const).map((r) => lab.api(r, 'GET', '/status')))).map((s) => s.body.pins);
    t.ok(
      pins.every((p) => p > 0),
      `streams off their bucket are pinned on both nodes: ${pins}`,
    );
    for (const n of ['ob', 'ib']) inNs(lab.ns(n), ['conntrack', '-F']);
    await sleep(500);
    for (const role of ['outside', 'inside'] as const) await lab.killNode(role);
    await lab.startNode('outside');
    await lab.startNode('inside');
    const afterRestart = await count('outside');
    t.equal(
      afterRestart.redis + (afterRestart.grace ?? 0),
      held,
      `Redis still holds all ${held} sessions after the flush and the restart (${afterRestart.redis} held, ${afterRestart.grace} in grace)`,
    );
    const [ra, rb] = await Promise.all([a, b]);
    const streams = [...ra, ...rb];
    const broken = streams.reduce((n, r) => n + r.long.broken, 0);
    t.equal(
      streams.reduce((n, r) => n + r.long.ok + r.long.broken, 0),
      80,
      '80 idle streams ran',
    );
    t.equal(broken, 0, `0 streams broke (${JSON.stringify(streams.map((r) => r.long.errors))})`);
    // The spoofed SYNs of the first subtest are still answered (the servers retry their SYN-ACKs for a minute), and
    // those answers follow the table as it changes: they are not sessions. The streams' own packets: none dropped.
    const clientAddrs = lab.t.hosts.filter((h) => h.role === 'client').map((h) => h.addr!);
    const ours = lab.firewallDropFlows().filter((f) => clientAddrs.some((a) => f.includes(`${a}:`)));
    t.same(ours, [], `0 firewall drops of the streams' packets (${lab.firewallCounters().reduce((n, f) => n + f.drops, 0)} drops in all, of spoofed flows)`);
  });

  await t.test("a firewall fails and rejoins: Redis holds exactly the kernels' sessions, each under its real orientation", async (t) => {
    // The streams outlive the comparison below: a connection that is over has no record once a re-sync saw it so.
    const longs = Promise.all(
      ['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 30, durationMs: 40000, intervalMs: 200, timeoutMs: 3000 } })),
    );
    await sleep(1500);
    inNs(lab.ns('ob'), ['ip', 'link', 'set', 'fw2', 'down']);
    await lab.waitFirewalls((fw) => !fw.find((f) => f.id === 'fw2')!.live, 10000, 'fw2 down on both nodes');
    await sleep(1500);
    inNs(lab.ns('ob'), ['ip', 'link', 'set', 'fw2', 'up']);
    await lab.waitFirewalls((fw) => fw.every((f) => f.live), 15000, 'fw2 back on both nodes');
    // Records in grace from the flush above expire after two sync periods; wait them out. Then Redis must hold
    // exactly the union of both kernels' live sessions (a stream broken on fw2 may live on in one kernel only).
    await sleep(2 * lab.t.nodes.outside.sessionTable!.resyncSeconds! * 1000 + 500);
    const key = (o: string, op: number, i: string, ip: number, p: number) => `${o}:${op}>${i}:${ip}/${p}`;
    const kernelKeys = () =>
      new Set(
        (['ob', 'ib'] as const).flatMap((n) =>
          lab
            .kernelSessions(n)
            .filter((e) => e.mark !== 0 && e.answered && !e.over)
            .map((e) => (CLIENT_NET.test(e.src) ? key(e.src, e.sport, e.dst, e.dport, e.proto) : key(e.dst, e.dport, e.src, e.sport, e.proto))),
        ),
      );
    let diff = { missing: [] as string[], extra: [] as string[] };
    let listed: { outerAddr: string; outerPort: number; innerAddr: string; innerPort: number; proto: number }[] = [];
    const t0 = Date.now();
    do {
      listed = (await lab.api('outside', 'GET', '/sessions?limit=10000')).body;
      const redisKeys = new Set(listed.map((s) => key(s.outerAddr, s.outerPort, s.innerAddr, s.innerPort, s.proto)));
      const kernel = kernelKeys();
      diff = { missing: [...kernel].filter((k) => !redisKeys.has(k)), extra: [...redisKeys].filter((k) => !kernel.has(k)) };
      if (!diff.missing.length && !diff.extra.length) break;
      await sleep(250);
    } while (Date.now() - t0 < 15000);
    t.comment(`Redis lists ${listed.length} sessions; the kernels hold ${kernelKeys().size} (matched after ${Date.now() - t0} ms)`);
    t.same(
      listed.filter((s) => !CLIENT_NET.test(s.outerAddr)),
      [],
      'no record has the server end as its outer end',
    );
    t.same(diff, { missing: [], extra: [] }, 'Redis holds exactly the sessions of the two kernels');
    const reports = await longs;
    const broken = reports.reduce((n, r) => n + r.long.broken, 0);
    t.comment(`${broken} of 60 streams broke (those on fw2 when its link went down)`);
    // A stream that broke may be over by the comparison, and its record gone with it; every other one is listed.
    t.ok(listed.length >= 60 - broken, `the streams are there: ${listed.length} listed, ${60 - broken} never broke`);
  });
});
