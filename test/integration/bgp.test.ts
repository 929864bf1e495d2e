// Integration: node redundancy through a real routing daemon. Two nodes per side announce over BGP with BFD (BIRD,
// fwlb's configuration) to the outside router, the SLB node and the firewalls, which install one ECMP next hop per
// node that announces the best path. A dead node is withdrawn by BFD; a node whose controller alone died keeps
// announcing (fail static); a drained node is less preferred; a configuration BIRD refuses is never loaded.
import { t, Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { drive, DriveReport, ECHO_PORT, inNs, Lab, LAB_BFD, SERVER_NET } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { startRedisOnSocket } from '../helpers/redis';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BALANCER_MAIN = require.resolve('@fwlb/balancer/dist/main.js');

/** The next hops of the route to `dst` in a namespace (one per node for an ECMP route). */
function nextHops(lab: Lab, host: string, dst: string): string[] {
  const text = inNs(lab.ns(host), ['ip', '-o', 'route', 'show', dst]);
  return [...text.matchAll(/via (\S+)/g)].map((m) => m[1]).sort();
}

/** Poll `f` every 10 ms until it holds; the time it first held (ms since the epoch), or null by `ms`. */
async function whenTrue(f: () => boolean, ms: number): Promise<number | null> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (f()) return Date.now();
    await sleep(10);
  }
  return null;
}

t.test('BGP with BFD through BIRD (ECMP, 2 nodes per side)', async (t) => {
  const { url } = await startRedisOnSocket(t);
  const lab = await startLab(t, { sessionTable: { url, heartbeatSeconds: 2 }, nodesPerSide: 2, routing: 'bgp' });
  const bgpUp = await lab.waitBgp();
  t.comment(`every BGP session of the routers and firewalls established ${bgpUp} ms after the nodes started`);
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const target = `${lab.t.vip}:${ECHO_PORT}`;
  const serverNet = `${SERVER_NET}.0/24`;
  const clientNet = lab.t.clientNet;
  const addrOf = (node: string) => lab.t.ecmp.find((e) => e.ns === lab.ns('or') && e.via[node])!.via[node];
  const both = [addrOf('ob1'), addrOf('ob2')].sort();

  await t.test('the router and the firewalls route over every node, as announced by fwlb through BIRD', async (t) => {
    await whenTrue(() => nextHops(lab, 'or', serverNet).length === 2, 5000);
    t.same(nextHops(lab, 'or', serverNet), both, 'the outside router: one next hop per outside node');
    t.equal(nextHops(lab, 'slb', 'default').length, 2, 'the SLB node: one next hop per inside node');
    t.equal(nextHops(lab, 'fw1', clientNet).length, 2, 'fw1 back to the clients: one per outside node');
    t.equal(nextHops(lab, 'fw1', serverNet).length, 2, 'fw1 to the servers: one per inside node');
    const node = (await lab.api('ob1', 'GET', '/node')).body;
    t.equal(node.state, 'fit');
    t.equal(node.daemon.config, 'loaded', 'fwlb loaded its BIRD configuration');
    t.ok(
      node.peers.every((p: any) => p.established),
      `every session of ob1 established: ${JSON.stringify(node.peers)}`,
    );
    t.same(
      node.announced.map((r: any) => [r.prefix, r.metric]),
      [
        [serverNet, 100],
        [clientNet, 100],
      ].sort(),
      'the announce table: each prefix once, at the metric of a fit node',
    );
    const metrics = await lab.apiText('ob1', '/metrics');
    t.match(metrics, /fwlb_bgp_announce_state\{state="fit"\} 1/);
    t.match(metrics, /fwlb_bgp_session_established\{peer="router"\} 1/);
  });

  /**
   * 200 long-lived streams (100 per client, one echo every 100 ms) and new connections (one every 25 ms per client)
   * around `act`; returns what broke, what failed and when.
   */
  const underTraffic = async (act: () => Promise<void>, durationMs = 9000) => {
    const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 100, durationMs, intervalMs: 100 } })));
    await sleep(1000);
    const shorts = Promise.all(
      clients.map((c) => drive(lab, c.name, { short: { targets: [target], count: Math.floor((durationMs - 2000) / 25), concurrency: 0, intervalMs: 25 } })),
    );
    await sleep(1000);
    const t0 = Date.now();
    await act();
    const [longR, shortR]: DriveReport[][] = [await longs, await shorts];
    const streams = longR.flatMap((r) => r.long.streams);
    return {
      t0,
      streams: streams.length,
      broken: streams.filter((s) => s.err).length,
      longErrors: longR.map((r) => r.long.errors),
      started: shortR.reduce((a, r) => a + r.short.ok + r.short.failed, 0),
      failedAt: shortR.flatMap((r) => r.short.failedAt),
      shortErrors: shortR.map((r) => r.short.errors),
    };
  };

  const dies = async (t: Test, node: string, router: string, dst: string) => {
    lab.resetFirewallCounters();
    const addr = lab.t.ecmp.find((e) => e.ns === lab.ns(router) && e.via[node])!.via[node];
    let bfdDown: number | null = null;
    let withdrawn: number | null = null;
    const r = await underTraffic(async () => {
      const killedAt = Date.now();
      await lab.killNode(node);
      lab.nodeLinks(node, false);
      // BFD's verdict (the router's session down) and the router's kernel route without the node.
      const peer = `${node}`;
      const watchBfd = whenTrue(() => !lab.bgpSessions(router).find((s) => s.name === peer)!.established, 5000);
      const watchRoute = whenTrue(() => !nextHops(lab, router, dst).includes(addr), 5000);
      [bfdDown, withdrawn] = await Promise.all([watchBfd, watchRoute]);
      t.ok(bfdDown && withdrawn, `the router dropped ${node}`);
      t.comment(
        `${node}: the router's session down ${bfdDown! - killedAt} ms after the kill (BFD ${LAB_BFD.intervalMs} ms x ${LAB_BFD.multiplier}), its next hop gone from the kernel ${withdrawn! - killedAt} ms after`,
      );
      await sleep(3000);
      lab.nodeLinks(node, true);
      await lab.startNode(node);
      const back = await whenTrue(() => nextHops(lab, router, dst).includes(addr), 20000);
      t.ok(back, `${node} back in the router's routes`);
      t.comment(`${node}: back in the routes ${back! - killedAt - 3000} ms after its links came up`);
    }, 13000);
    t.equal(r.streams, 200);
    t.equal(r.broken, 0, `0 of 200 streams broke ${JSON.stringify(r.longErrors)}`);
    const late = r.failedAt.filter((at) => withdrawn !== null && at > withdrawn + 200);
    t.same(
      late,
      [],
      `no new connection failed that started after the withdrawal (failed: ${r.failedAt.length} of ${r.started}, ${JSON.stringify(r.shortErrors)})`,
    );
    t.same(
      lab.firewallCounters().map((f) => f.drops),
      [0, 0, 0],
      '0 firewall drops',
    );
  };

  await t.test('an outside node dies (controller kill -9, links down): BFD withdraws it, 0 of 200 streams break, and it comes back', (t) =>
    dies(t, 'ob1', 'or', serverNet),
  );
  await t.test('an inside node dies: BFD withdraws it from the SLB node, 0 of 200 streams break, and it comes back', (t) => dies(t, 'ib1', 'slb', 'default'));

  await t.test('the controller alone is killed: the node keeps announcing (fail static), 0 streams break; restarted, it adopts', async (t) => {
    lab.resetFirewallCounters();
    const r = await underTraffic(async () => {
      await lab.killNode('ob1');
      const stayed = await whenTrue(() => nextHops(lab, 'or', serverNet).length !== 2, 4000);
      t.equal(stayed, null, 'for 4 s without its controller, the router kept both outside nodes');
      await lab.startNode('ob1');
    });
    t.equal(r.broken, 0, `0 of ${r.streams} streams broke`);
    t.equal(r.failedAt.length, 0, `0 of ${r.started} new connections failed`);
    const node = (await lab.api('ob1', 'GET', '/node')).body;
    t.equal(node.state, 'fit', 'the restarted controller found the node fit');
    t.same(nextHops(lab, 'or', serverNet), both, 'and the router still has both');
  });

  await t.test('drain: the node becomes less preferred, takes no new connection, and 0 connections fail; undrain brings it back', async (t) => {
    lab.resetFirewallCounters();
    let quietAfter = -1;
    const r = await underTraffic(async () => {
      const at = Date.now();
      const d = await lab.api('ob1', 'PUT', '/node/drain', { drained: true }, 'lab-token-0123456789');
      t.equal(d.status, 200);
      t.equal(d.body.state, 'drained');
      const left = await whenTrue(() => nextHops(lab, 'or', serverNet).length === 1, 5000);
      t.ok(left, 'the router left ob1');
      t.same(nextHops(lab, 'or', serverNet), [addrOf('ob2')]);
      t.comment(`drain: the router left ob1 ${left! - at} ms after the request`);
      // New connections on ob1: its SYN counter stops.
      let last = (await lab.api('ob1', 'GET', '/node')).body.newConnections;
      let lastAt = Date.now();
      while (Date.now() - lastAt < 1500 && Date.now() - at < 5000) {
        await sleep(250);
        const n = (await lab.api('ob1', 'GET', '/node')).body.newConnections;
        if (n !== last) [last, lastAt] = [n, Date.now()];
      }
      quietAfter = lastAt - at;
      t.ok(Date.now() - lastAt >= 1500, `ob1 took no new connection for 1.5 s, from ${quietAfter} ms after the drain`);
    });
    t.equal(r.broken, 0, `0 of ${r.streams} streams broke`);
    t.equal(r.failedAt.length, 0, `0 of ${r.started} new connections failed`);
    t.same(
      lab.firewallCounters().map((f) => f.drops),
      [0, 0, 0],
      '0 firewall drops',
    );
    const u = await lab.api('ob1', 'PUT', '/node/drain', { drained: false }, 'lab-token-0123456789');
    t.equal(u.body.state, 'fit');
    t.ok(await whenTrue(() => nextHops(lab, 'or', serverNet).length === 2, 5000), 'undrained: the router has both again');
  });

  await t.test('a configuration BIRD refuses is never loaded (the running one stays, an alarm says why); a dead BIRD is named by fwlb doctor', async (t) => {
    const path = lab.configPath('ob2');
    const good = readFileSync(path, 'utf8');
    const cfg = JSON.parse(good);
    // A link-local neighbor without an interface: the schema takes the address, BIRD refuses the configuration.
    cfg.bgp.peers.push({ name: 'linklocal', address: 'fe80::1', asn: 65000, announce: ['2001:db8:5::/64'] });
    writeFileSync(path, JSON.stringify(cfg));
    t.teardown(() => writeFileSync(path, good));
    await lab.killNode('ob2');
    await lab.startNode('ob2');
    const h = (await lab.api('ob2', 'GET', '/health')).body;
    t.equal(h.status, 'degraded');
    t.match(h.alarms.join('\n'), /refused by bird -p.*Link-local/s, 'the alarm quotes BIRD');
    const running = readFileSync(cfg.bgp.configFile, 'utf8');
    t.notMatch(running, /fe80::1/, 'the file BIRD runs from is the last good one');
    t.ok(
      lab.bgpSessions('ob2').every((s) => s.established),
      'and the running BIRD keeps its sessions',
    );
    t.same(nextHops(lab, 'or', serverNet), both, 'the router still routes over ob2');
    writeFileSync(path, good);
    await lab.killNode('ob2');
    await lab.startNode('ob2');
    t.equal((await lab.api('ob2', 'GET', '/node')).body.daemon.config, 'loaded');

    await lab.killBird('ob2');
    const doctor = (() => {
      try {
        return execFileSync('ip', ['netns', 'exec', lab.ns('ob2'), process.execPath, BALANCER_MAIN, 'doctor', '--config', path], { encoding: 'utf8' });
      } catch (e: any) {
        return `${e.stdout}${e.stderr}`;
      }
    })();
    t.match(doctor, /BIRD is not running or does not answer/, 'fwlb doctor names the dead daemon');
    const gone = await whenTrue(() => nextHops(lab, 'or', serverNet).length === 1, 5000);
    t.ok(gone, 'the router dropped ob2 (its sessions ended with its BIRD)');
    lab.startBird('ob2');
    t.ok(await whenTrue(() => nextHops(lab, 'or', serverNet).length === 2, 15000), 'BIRD restarted from the file fwlb wrote: ob2 is back');
  });
});
