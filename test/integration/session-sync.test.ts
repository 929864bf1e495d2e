// Integration: both balancer nodes record the sessions they steer in a real redis-server (layer 3), serve them at
// GET /sessions, keep forwarding while Redis is down, and catch up after it restarts.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bucketOfId, connect, ready, tableKeys } from '@fwlb/session-table';
import { drive, ECHO_PORT, REPO } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { startRedisOnSocket } from '../helpers/redis';
import { convergeSessions, sessionCount } from '../helpers/sessions';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('session table in the sandwich', async (t) => {
  const { redis, url } = await startRedisOnSocket(t);
  const lab = await startLab(t, { sessionTable: url });
  const vip = `${lab.t.vip}:${ECHO_PORT}`;
  const count = (role: 'outside' | 'inside') => sessionCount(lab, role);
  const converge = (ms: number) => convergeSessions(lab, ms);

  await t.test('live streams are in Redis with the firewall they cross, written by both nodes under one key', async (t) => {
    const longs = Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 10, durationMs: 4000, intervalMs: 100 } })));
    await sleep(1500);
    const c = await converge(3000);
    t.ok(c.o.kernel >= 20, `outside kernel ${c.o.kernel}, Redis ${c.o.redis} (agreed after ${c.ms} ms)`);
    const c1 = lab.host('c1').addr!;
    const res = await lab.api('outside', 'GET', `/sessions?addr=${c1}&port=${ECHO_PORT}&limit=1000`);
    t.equal(res.status, 200);
    const mine = res.body.filter((s: any) => s.outerAddr === c1 || s.innerAddr === c1);
    t.ok(mine.length >= 10, `${mine.length} of c1's sessions listed`);
    t.ok(
      mine.every((s: any) => /^fw[123]$/.test(s.firewall)),
      'each with the firewall it crosses',
    );
    const fw = mine[0].firewall;
    const byFw = await lab.api('inside', 'GET', `/sessions?firewall=${fw}&limit=1000`);
    t.ok(byFw.body.length > 0 && byFw.body.every((s: any) => s.firewall === fw), `the inside node lists ${byFw.body.length} sessions on ${fw}`);
    // Each firewall's session count (/firewalls, the metric, the status page) is what the shared table lists for it.
    let counted: Record<string, number> = {};
    let listed: Record<string, number> = {};
    for (let i = 0; i < 5; i++) {
      counted = Object.fromEntries((await lab.api('outside', 'GET', '/firewalls')).body.map((f: any) => [f.id, f.sessions]));
      listed = { fw1: 0, fw2: 0, fw3: 0 };
      for (const s of (await lab.api('outside', 'GET', '/sessions?limit=10000')).body) listed[s.firewall]++;
      if (JSON.stringify(counted) === JSON.stringify(listed)) break;
      await sleep(200);
    }
    t.same(counted, listed, `each firewall's sessions on the outside node are the table's: ${JSON.stringify(listed)}`);
    const metrics = await lab.apiText('outside', '/metrics');
    t.match(metrics, new RegExp(`^fwlb_firewall_sessions\\{firewall="fw1"\\} ${counted.fw1}$`, 'm'), 'and fwlb_firewall_sessions says so');
    const bad = await lab.api('outside', 'GET', '/sessions?addr=not-an-address');
    t.equal(bad.status, 400, 'a bad query is refused');
    const l = await longs;
    t.equal(
      l.reduce((a, r) => a + r.long.broken, 0),
      0,
    );
  });

  await t.test('Redis is killed during traffic: streams keep flowing; after the restart Redis matches the kernel', async (t) => {
    const longs = Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 10, durationMs: 6000, intervalMs: 100 } })));
    await sleep(1000);
    await redis.kill();
    const shorts = await drive(lab, 'c1', { short: { targets: [vip], count: 100, concurrency: 8 } });
    t.equal(shorts.short.failed, 0, 'new connections succeed while Redis is down');
    const down = await count('outside');
    t.equal(down.redis, null, `the node reports Redis unreachable (${down.redisError})`);
    await sleep(1000);
    const t0 = Date.now();
    await redis.restart();
    const c = await converge(10000);
    const period = lab.t.nodes.outside.sessionTable!.resyncSeconds! * 1000;
    t.ok(Date.now() - t0 <= period, `Redis matched both kernels ${Date.now() - t0} ms after the restart (sync period ${period} ms): ${c.o.redis} sessions`);
    const l = await longs;
    t.equal(
      l.reduce((a, r) => a + r.long.broken, 0),
      0,
      'no long-lived stream broke',
    );
    t.equal(
      lab.firewallCounters().reduce((a, f) => a + f.drops, 0),
      0,
      'no firewall drop',
    );
  });

  await t.test('fwlbctl drives the lab: sessions by client, disable and enable a firewall, drain a member', async (t) => {
    const ctl = (role: 'outside' | 'inside' | 'slb', ...args: string[]) => {
      const r = spawnSync(process.execPath, [join(REPO, 'apps/fwlbctl/dist/main.js'), '--api', `unix:${lab.socketPath(role)}`, '--json', ...args], {
        encoding: 'utf8',
        env: { ...process.env, FWLB_TOKEN: lab.t.nodes.outside.api!.token! },
      });
      if (r.status !== 0) throw new Error(`fwlbctl ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
      return JSON.parse(r.stdout);
    };
    const longs = drive(lab, 'c1', { long: { targets: [vip], count: 4, durationMs: 5000, intervalMs: 100 } });
    await sleep(1500);
    const c1 = lab.host('c1').addr!;
    const mine = ctl('outside', 'sessions', '--addr', c1, '--port', String(ECHO_PORT), '--limit', '1000') as any[];
    t.ok(mine.length >= 4, `fwlbctl sessions finds c1's streams (${mine.length})`);
    const one = mine[0];
    const exact = ctl('inside', 'sessions', '--addr', c1, '--port', String(one.outerPort)) as any[];
    t.ok(
      exact.some((s) => s.outerPort === one.outerPort && s.firewall === one.firewall),
      `and one session by the client's address and port, on ${one.firewall}`,
    );
    for (const role of ['outside', 'inside'] as const) t.match(ctl(role, 'firewall', 'disable', 'fw2'), { id: 'fw2', enabled: false, live: false });
    lab.resetFirewallCounters();
    const shorts = await drive(lab, 'c2', { short: { targets: [vip], count: 120, concurrency: 8 } });
    t.equal(shorts.short.failed, 0);
    t.equal(lab.firewallCounters().find((f) => f.id === 'fw2')!.newSessions, 0, 'new sessions avoid fw2');
    t.ok((ctl('outside', 'metrics') as string[]).includes('fwlb_firewall_live{firewall="fw2"} 0'), 'and the metrics say so');
    for (const role of ['outside', 'inside'] as const) t.match(ctl(role, 'firewall', 'enable', 'fw2'), { id: 'fw2', enabled: true });
    const rip = lab.t.hosts.find((h) => h.role === 'server')!.addr!;
    t.match(ctl('slb', 'member', 'drain', 'echo', `${rip}:${ECHO_PORT}`), { state: 'drain', slots: 0 }, 'a member drained through fwlbctl');
    t.match(ctl('slb', 'member', 'enable', 'echo', `${rip}:${ECHO_PORT}`), { state: 'enabled' });
    t.equal((await longs).long.broken, 0);
    // A VIP created, edited and deleted from a YAML file through fwlbctl; clients reach it in between.
    const file = join(lab.t.opts.runDir, 'extra-vip.yaml');
    const rips = lab.t.hosts.filter((h) => h.role === 'server').map((h) => h.addr!);
    const yaml = (members: string[]) =>
      [
        'id: extra',
        'address: 203.0.113.150',
        `port: ${ECHO_PORT}`,
        'protocol: tcp',
        'timers: { interval: 200, response: 100, retries: 2, rise: 1 }',
        'members:',
        ...members.map((a) => `  - { address: ${a}, port: ${ECHO_PORT} }`),
        '',
      ].join('\n');
    writeFileSync(file, yaml([rips[0]]));
    t.match(ctl('slb', 'vip', 'create', file), { id: 'extra', address: '203.0.113.150' }, 'created from YAML');
    writeFileSync(file, yaml(rips));
    t.equal(ctl('slb', 'vip', 'edit', 'extra', file).members.length, rips.length, 'edited: every server a member');
    let up = 0;
    for (let i = 0; i < 30 && up < rips.length; i++) {
      await sleep(200);
      up = ctl('slb', 'vip', 'show', 'extra').members.filter((m: any) => m.health.up).length;
    }
    t.equal(up, rips.length, 'its members came up');
    const through = await drive(lab, 'c1', { short: { targets: [`203.0.113.150:${ECHO_PORT}`], count: 30, concurrency: 3 } });
    t.equal(through.short.failed, 0, '30 connections through the new VIP');
    t.same(ctl('slb', 'vip', 'delete', 'extra'), { deleted: 'extra' });
    t.notOk(
      (await lab.api('slb', 'GET', '/vips')).body.some((v: any) => v.id === 'extra'),
      'deleted',
    );
  });

  await t.test('the admin state is shared: a firewall disabled on one node is out on both, across restarts', async (t) => {
    const tok = lab.t.nodes.outside.api!.token!;
    const fw3 = async (role: 'outside' | 'inside') => (await lab.api(role, 'GET', '/firewalls')).body.find((f: any) => f.id === 'fw3');
    t.equal((await lab.api('outside', 'PUT', '/firewalls/fw3/admin', { enabled: false }, tok)).status, 200, 'fw3 disabled on the outside node only');
    const t0 = Date.now();
    while (Date.now() - t0 < 5000 && ((await fw3('inside')).enabled || (await fw3('inside')).live)) await sleep(50);
    t.same([(await fw3('inside')).enabled, (await fw3('inside')).live], [false, false], `the inside node took it out too, ${Date.now() - t0} ms later`);
    for (const role of ['outside', 'inside'] as const) await lab.killNode(role);
    await lab.startNode('inside');
    await lab.startNode('outside');
    for (const role of ['outside', 'inside'] as const) t.equal((await fw3(role)).enabled, false, `after both restarted, still out on the ${role} node`);
    t.equal((await lab.api('inside', 'PUT', '/firewalls/fw3/admin', { enabled: true }, tok)).status, 200, 'enabled again on the inside node');
    const t1 = Date.now();
    while (Date.now() - t1 < 5000 && !(await fw3('outside')).live) await sleep(50);
    t.ok((await fw3('outside')).live, `and back on the outside node ${Date.now() - t1} ms later`);
  });

  await t.test('poisoned records, a forged epoch and FLUSHALL during traffic: traffic unaffected, the nodes agree again', async (t) => {
    const raw = await ready(connect({ url, node: 'tester' }), 5000);
    t.teardown(() => raw.disconnect());
    const longs = Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 10, durationMs: 8000, intervalMs: 100 } })));
    await sleep(1000);
    lab.resetFirewallCounters();
    const before = (await lab.api('outside', 'GET', '/status')).body;
    // Each kind of bad record: a port out of range, a bad address, a protocol fwlb never records, an unknown
    // firewall, a garbled value, a well-formed record in a bucket it does not hash to; a forged epoch (a huge number,
    // no firewall live); a view without a time stamp. Each
    // ends with a far expiry: the reaper removes expired values, and these must still be there when the nodes load.
    const keys = tableKeys('fwlb:');
    const hash = lab.t.nodes.outside.hash;
    const misplaced = [4, 5, 6, 7].map((p) => `198.51.100.11:${p}>203.0.113.100:7007/6`).find((id) => bucketOfId(id, hash.seed, hash.buckets ?? 251) !== 0)!;
    await raw.hset(
      keys.sessions(0),
      '198.51.100.11:99999>203.0.113.100:7007/6',
      'fw1 ob 1 9999999999999',
      '999.1.1.1:1>203.0.113.100:7007/6',
      'fw1 ob 1 9999999999999',
      '198.51.100.11:1>203.0.113.100:7007/99',
      'fw1 ob 1 9999999999999',
      '198.51.100.11:2>203.0.113.100:7007/6',
      'fw9 ob 1 9999999999999',
      '198.51.100.11:3>203.0.113.100:7007/6',
      'fw1 two words 1 9999999999999',
      misplaced,
      'fw1 ob 1 9999999999999',
    );
    await raw.set(
      keys.epoch,
      JSON.stringify({ epoch: 1e15, generation: 'forged', members: ['fw1', 'fw2', 'fw3'], live: [], down: ['fw1', 'fw2', 'fw3'], by: 'mallory', at: 1 }),
    );
    await raw.publish('fwlb:events', JSON.stringify({ type: 'epoch', epoch: 1e15 }));
    await raw.sadd(keys.nodes, 'ghost');
    await raw.hset(keys.health('ghost'), 'fw1', 'down', 'fw2', 'down', 'fw3', 'down');
    await sleep(500);
    // Both nodes lose their state and restart: they load the poisoned table.
    for (const role of ['outside', 'inside'] as const) await lab.killNode(role);
    await lab.startNode('outside');
    await lab.startNode('inside');
    // Sampled for at least 2 s, and until both nodes have an agreement again (10 s at most: CI once sampled the
    // outside node before its first epoch, 2 s after its restart).
    const seen = new Set<string>();
    const sampled = Date.now();
    for (let k = 0; ; k++) {
      const agreed = await Promise.all((['outside', 'inside'] as const).map(async (role) => (await lab.api(role, 'GET', '/status')).body.agreed));
      for (const a of agreed) seen.add(JSON.stringify(a));
      if ((k >= 20 && agreed.every((a) => a !== null && a !== undefined)) || Date.now() - sampled > 10000) break;
      await sleep(100);
    }
    const after = await lab.api('outside', 'GET', '/status');
    t.equal(after.body.lastError, null, 'the node reconciles');
    t.notOk(seen.has('[]'), `the forged epoch (no firewall live) was never applied (agreements seen: ${[...seen].join(' ')})`);
    t.same(after.body.agreed, before.agreed, 'the nodes agree on all firewalls again');
    const m = (await sessionCount(lab, 'outside')).sync;
    t.ok(m.rejectedRecords >= 6, `the rejected records are counted (${m.rejectedRecords})`);
    // FLUSHALL during traffic.
    await raw.flushall();
    const marks = () => (['ob', 'ib'] as const).map((n) => [...lab.bucketMarks(n)].sort().join(','));
    await sleep(1500);
    const [o, i] = marks();
    t.equal(o, i, 'after FLUSHALL both nodes keep the same bucket table');
    const t0 = Date.now();
    let agreed = false;
    while (Date.now() - t0 < 15000 && !agreed) {
      const st = await Promise.all((['outside', 'inside'] as const).map((r) => lab.api(r, 'GET', '/status')));
      const doc = await raw.get(keys.epoch);
      agreed = !!doc && st.every((s) => s.body.agreement?.epoch === JSON.parse(doc).epoch);
      if (!agreed) await sleep(200);
    }
    t.ok(agreed, `both nodes applied the new generation's epoch ${Date.now() - t0} ms after FLUSHALL`);
    const l = await longs;
    t.equal(
      l.reduce((a, r) => a + r.long.broken, 0),
      0,
      'no stream broke',
    );
    t.equal(
      lab.firewallCounters().reduce((a, f) => a + f.drops, 0),
      0,
      'no firewall drop',
    );
  });
});
