// Integration: reloading both nodes of a sandwich (with a session table) without a restart, real packets throughout.
// fw4 is cabled from the start but in neither node's config; it is added by a reload under long-lived streams and
// new connections, then disabled, drained and removed by another. A bad config is refused with the kernel unchanged
// (POST /reload and SIGHUP), and changed timers are applied in place.
import { t } from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildJoinedTable, hostPort } from '@fwlb/flowhash';
import { drive, ECHO_PORT, inNs, Lab, runScenario, uniquePrefix } from '@fwlb/lab';
import { startRedisOnSocket } from '../helpers/redis';

const TOKEN = 'lab-token-0123456789';
const ROLES = ['outside', 'inside'] as const;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('reload: fw4 joins and leaves under load, a bad config changes nothing, timers change in place', async (t) => {
  const { url } = await startRedisOnSocket(t);
  const prefix = uniquePrefix('rl');
  const lab = new Lab({ prefix, runDir: join(tmpdir(), `fwlb-test-${prefix}`), firewalls: 4, sessionTable: url });
  t.teardown(() => lab.teardown());
  lab.build();
  await lab.startServers();
  const full = Object.fromEntries(ROLES.map((r) => [r, JSON.parse(readFileSync(lab.configPath(r), 'utf8'))]));
  const write = (role: (typeof ROLES)[number], doc: unknown) => writeFileSync(lab.configPath(role), JSON.stringify(doc, null, 2));
  const three = (role: (typeof ROLES)[number]) => ({ ...full[role], firewalls: full[role].firewalls.slice(0, 3) });
  for (const r of ROLES) write(r, three(r));
  await lab.startNodes();
  await lab.waitFirewalls((fw) => fw.length === 3 && fw.every((f) => f.live), 30000, 'three firewalls live on both nodes');

  const ns = (role: (typeof ROLES)[number]) => lab.ns(role === 'outside' ? 'ob' : 'ib');
  /** The kernel's bucket map: bucket -> mark. */
  const buckets = (role: (typeof ROLES)[number]) => {
    const m = JSON.parse(inNs(ns(role), ['nft', '-j', 'list', 'map', 'inet', 'fwlb', 'buckets'])).nftables.find((x: any) => x.map).map;
    return new Map<number, number>((m.elem ?? []).map(([b, mark]: [number, number]) => [b, mark]));
  };
  const markOf = (k: number) => 0x10000 + k - 1;
  const reload = (role: (typeof ROLES)[number]) => lab.api(role, 'POST', '/reload', undefined, TOKEN);
  const before = ROLES.map(buckets);
  const expected = buildJoinedTable(['fw1', 'fw2', 'fw3'], 251).owner.map((o) => markOf(Number(o!.slice(2))));
  t.same(
    [...before[0].entries()].sort((a, b) => a[0] - b[0]).map(([, m]) => m),
    expected,
    'the joined table of fw1..fw3 in the kernel',
  );
  const clients = lab.t.hosts.filter((h) => h.role === 'client').map((h) => h.name);
  const vip = hostPort(lab.t.vip, ECHO_PORT);

  await t.test('fw4 added by a reload under 200 long-lived streams and new connections: 0 failed, only its buckets move', async (t) => {
    let after: Map<number, number>[] = [];
    let joined = 0;
    let newOnFw4 = { ok: 0, failed: 0 };
    const report = await runScenario(lab, {
      families: ['ipv4'],
      longPerClient: 100,
      longDurationMs: 16000,
      shortPerClient: 300,
      during: async () => {
        for (const r of ROLES) write(r, full[r]);
        const t0 = Date.now();
        const res = await Promise.all(ROLES.map(reload));
        for (const [i, r] of res.entries()) {
          t.equal(r.status, 200, `${ROLES[i]}: ${JSON.stringify(r.body)}`);
          t.match(r.body, { changed: true, added: ['fw4'], removed: [] });
        }
        await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw4')?.live === true, 20000, 'fw4 live on both nodes');
        joined = Date.now() - t0;
        after = ROLES.map(buckets);
        // New connections once fw4 carries its share: some of them cross it.
        const d = await Promise.all(clients.map((c) => drive(lab, c, { short: { targets: [vip], count: 200, concurrency: 8 } })));
        newOnFw4 = { ok: d.reduce((a, r) => a + r.short.ok, 0), failed: d.reduce((a, r) => a + r.short.failed, 0) };
      },
    });
    t.comment(`fw4 live on both nodes ${joined} ms after the reloads; ${report.totals.connections} connections, errors ${JSON.stringify(report.errors)}`);
    t.same(report.failed, { short: 0, long: 0, udp: 0, icmp: 0, serverInitiated: 0, l7: 0, total: 0 }, '0 failed, 0 broken');
    t.equal(newOnFw4.failed, 0, `${newOnFw4.ok} new connections after the join, none failed`);
    t.ok(report.firewalls.find((f) => f.id === 'fw4')!.sessions > 0, `fw4 took new sessions (${report.firewalls.find((f) => f.id === 'fw4')!.sessions})`);
    t.equal(report.totals.drops, 0, 'no firewall dropped a packet');
    for (const [i, role] of ROLES.entries()) {
      const moved = [...before[i]].filter(([b, m]) => after[i].get(b) !== m);
      t.ok(
        moved.every(([b]) => after[i].get(b) === markOf(4)),
        `${role}: every bucket that moved went to fw4`,
      );
      t.equal(moved.length, Math.floor(251 / 4), `${role}: fw4 took exactly floor(251/4) buckets`);
    }
    t.same([...after[0]], [...after[1]], 'both nodes hold the same table');
  });

  await t.test('fw4 disabled, drained, and removed by a reload: 0 broken, its kernel objects gone, no bucket moves', async (t) => {
    const off = await lab.api('outside', 'PUT', '/firewalls/fw4/admin', { enabled: false }, TOKEN);
    t.equal(off.status, 200);
    await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw4')?.live === false, 15000, 'fw4 out of new sessions on both nodes (shared)');
    // The sessions fw4 carried ended with the last scenario; nothing new went to it since.
    const drained = ROLES.map(buckets);
    let removed: { status: number; body: any }[] = [];
    const report = await runScenario(lab, {
      families: ['ipv4'],
      longPerClient: 100,
      longDurationMs: 8000,
      shortPerClient: 200,
      during: async () => {
        for (const r of ROLES) write(r, three(r));
        removed = await Promise.all(ROLES.map(reload));
        await sleep(2000);
      },
    });
    for (const r of removed) t.match(r.body, { changed: true, added: [], removed: ['fw4'] });
    t.same(report.failed, { short: 0, long: 0, udp: 0, icmp: 0, serverInitiated: 0, l7: 0, total: 0 }, '0 failed, 0 broken');
    t.equal(report.firewalls.find((f) => f.id === 'fw4')!.sessions, 0, 'nothing crossed fw4');
    for (const [i, role] of ROLES.entries()) {
      t.same([...buckets(role)], [...drained[i]], `${role}: no bucket moved`);
      t.notMatch(inNs(ns(role), ['ip', 'rule', 'show']), /lookup 1003\b/, `${role}: fw4's ip rule is gone`);
      t.notMatch(inNs(ns(role), ['nft', 'list', 'table', 'inet', 'fwlb']), new RegExp(`0x0*${markOf(4).toString(16)}\\b`), `${role}: and its mark`);
    }
    t.same([...buckets('outside')].map(([, m]) => m).sort(), [...before[0]].map(([, m]) => m).sort(), 'the three firewalls share the buckets as before');
  });

  await t.test('a bad config is refused as a whole with the kernel unchanged (POST /reload and SIGHUP); timers change in place', async (t) => {
    const kernel = (role: (typeof ROLES)[number]) =>
      [
        inNs(ns(role), ['nft', '-s', '-t', 'list', 'table', 'inet', 'fwlb']),
        inNs(ns(role), ['nft', 'list', 'map', 'inet', 'fwlb', 'buckets']),
        inNs(ns(role), ['ip', 'rule', 'show']),
        inNs(ns(role), ['ip', 'route', 'show', 'table', 'all']),
      ].join('\n');
    const k0 = kernel('outside');
    write('outside', { ...three('outside'), hash: { ...full.outside.hash, seed: full.outside.hash.seed + 1 }, handshakeTimeoutSeconds: 4 });
    const no = await reload('outside');
    t.equal(no.status, 422);
    t.equal(no.body.code, 'FWLB_RELOAD_REFUSED');
    t.same(
      no.body.details.map((p: { field: string }) => p.field),
      ['/hash'],
      'the field is named',
    );
    writeFileSync(lab.configPath('outside'), '{"role": "outside", ');
    const node = lab.nodes.outside!;
    const lines = node.log.length;
    node.proc.kill('SIGHUP');
    await sleep(1000);
    t.ok(
      node.log.slice(lines).some((l) => /reload \(SIGHUP\) refused, the running config stays/.test(l)),
      'SIGHUP with a broken file: refused, said in the log',
    );
    t.equal(kernel('outside'), k0, 'the kernel as it was');
    t.equal((await lab.api('outside', 'GET', '/health')).status, 200, 'the node still answers');

    // Timers: the handshake timeout (a kernel object named by its seconds) and the firewall checks' interval.
    const checks = async () =>
      (await lab.apiText('outside', '/metrics'))
        .split('\n')
        .filter((l) => l.startsWith('fwlb_health_checks_total{') && l.includes('firewall="fw1"'))
        .reduce((a, l) => a + Number(l.split(' ').pop()), 0);
    const rate = async () => {
      const c0 = await checks();
      await sleep(3000);
      return (await checks()) - c0;
    };
    const fast = await rate();
    const h = full.outside.health;
    write('outside', { ...three('outside'), handshakeTimeoutSeconds: 4, health: { ...h, timers: { ...h.timers, interval: 1000, deadInterval: 1000 } } });
    const ok = await reload('outside');
    t.equal(ok.status, 200, JSON.stringify(ok.body));
    t.match(inNs(ns('outside'), ['nft', 'list', 'table', 'inet', 'fwlb']), /ct timeout handshake_4 /, 'the new handshake timeout is in the kernel');
    t.notMatch(inNs(ns('outside'), ['nft', 'list', 'table', 'inet', 'fwlb']), /ct timeout handshake_10 /, 'the old one is gone');
    const slow = await rate();
    t.comment(`fw1's checks in 3 s: ${fast} at ${h.timers.interval} ms, ${slow} at 1000 ms`);
    t.ok(slow * 2 < fast, 'the checks run at the new interval');
    await lab.waitFirewalls((fw) => fw.length === 3 && fw.every((f) => f.live), 10000, 'every firewall still live');
  });
});
