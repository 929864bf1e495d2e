// Integration: node redundancy through a real routing daemon. Two nodes per side announce over BGP with BFD (BIRD,
// fwlb's configuration) to the outside router, the SLB node and the firewalls, which install one ECMP next hop per
// node that announces the best path. A dead node is withdrawn by BFD; a node whose controller alone died keeps
// announcing (fail static); a drained node is less preferred; a configuration BIRD refuses is never loaded.
import { t, Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { drive, DriveReport, ECHO_PORT, inNs, Lab, LAB_BFD, SERVER_NET } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { openStatusPage } from '../helpers/status-page';
import { startRedisOnSocket } from '../helpers/redis';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BALANCER_MAIN = require.resolve('@fwlb/balancer/dist/main.js');

const nextHops = (lab: Lab, host: string, dst: string) => lab.nextHops(host, dst);
/** What broke, and when each stream that got no echo sent its unanswered message, relative to the action. */
const brokenReport = (r: { t0: number; longErrors: unknown; list: { addr: string; port: number; stalledAt: number | null }[] }) => {
  const stalled = r.list.filter((x) => x.stalledAt !== null).map((x) => `${x.addr}:${x.port} at +${x.stalledAt! - r.t0} ms`);
  return `${JSON.stringify(r.longErrors)}${stalled.length ? ` (unanswered: ${stalled.join(', ')})` : ''}`;
};

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
  // Dual stack (an IPv6 session beside each IPv4 one) and NAT-ing firewalls (their pools announced too).
  const lab = await startLab(t, { sessionTable: { url, heartbeatSeconds: 2 }, nodesPerSide: 2, routing: 'bgp', ipv6: true, natFirewalls: true });
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
    const configured = [...new Set(lab.t.balancers.ob1.bgp!.peers.flatMap((p) => p.announce))];
    t.same(
      node.announced.map((r: any) => `${r.prefix} ${r.metric}`).sort(),
      configured.map((p) => `${p} 100`).sort(),
      'the announce table: each configured prefix once, at the metric of a fit node',
    );
    t.ok(configured.some((p) => p.includes(':')) && configured.includes('10.96.0.0/16'), 'IPv6 prefixes and the NAT pools among them');
    t.equal(nextHops(lab, 'or', '2001:db8:5::/64').length, 2, 'IPv6: the outside router has one next hop per outside node');
    const metrics = await lab.apiText('ob1', '/metrics');
    t.match(metrics, /fwlb_bgp_announce_state\{state="fit"\} 1/);
    t.match(metrics, /fwlb_bgp_session_established\{peer="router"\} 1/);
    t.match(metrics, /fwlb_bfd_session_up\{peer="router"\} 1/);
    t.same(
      node.peers.filter((p: any) => p.bfd !== 'Up').map((p: any) => p.name),
      [],
      'BFD up with every peer',
    );
  });

  /**
   * 200 long-lived streams (100 per client, one echo every 100 ms) and new connections (one every 25 ms per client)
   * around `act`; returns what broke, what failed and when.
   */
  const servers6 = lab.targets6('server', ECHO_PORT);
  const underTraffic = async (act: () => Promise<void>, durationMs = 9000) => {
    const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 100, durationMs, intervalMs: 100 } })));
    const longs6 = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: servers6, count: 30, durationMs, intervalMs: 100 } })));
    await sleep(1000);
    const shorts = Promise.all(
      clients.map((c) => drive(lab, c.name, { short: { targets: [target], count: Math.floor((durationMs - 2000) / 25), concurrency: 0, intervalMs: 25 } })),
    );
    await sleep(1000);
    const t0 = Date.now();
    await act();
    const [longR, shortR, long6R]: DriveReport[][] = [await longs, await shorts, await longs6];
    const streams = longR.flatMap((r, i) => r.long.streams.map((x) => ({ ...x, addr: clients[i].addr! })));
    const streams6 = long6R.flatMap((r) => r.long.streams);
    return {
      t0,
      list: streams,
      streams6: streams6.length,
      broken6: streams6.filter((x) => x.err).length,
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
    let killed = 0;
    let linksUp = 0;
    let survivor: ReturnType<Lab['kernelSessions']> = [];
    // Every change of the router's route to the node, relative to the kill: a failure's report shows whether the
    // router used the node at that moment.
    const routeLog: string[] = [];
    let sampler: NodeJS.Timeout | null = null;
    const r = await underTraffic(async () => {
      const killedAt = Date.now();
      killed = killedAt;
      let had: boolean | null = null;
      sampler = setInterval(() => {
        const has = nextHops(lab, router, dst).includes(addr);
        if (has !== had) routeLog.push(`+${Date.now() - killedAt} ms ${has ? 'with' : 'without'} ${node}`);
        had = has;
      }, 50);
      await lab.killNode(node);
      lab.nodeLinks(node, false, 'carrier');
      // BFD's verdict (the router's session down) and the router's kernel route without the node.
      const peer = `${node}`;
      const watchBfd = whenTrue(() => !lab.bgpSessions(router).find((s) => s.name === peer)!.established, 5000);
      const watchRoute = whenTrue(() => !nextHops(lab, router, dst).includes(addr), 5000);
      [bfdDown, withdrawn] = await Promise.all([watchBfd, watchRoute]);
      t.ok(bfdDown && withdrawn, `the router dropped ${node}`);
      t.comment(
        `${node}: the router's session down ${bfdDown! - killedAt} ms after the kill (BFD ${LAB_BFD.intervalMs} ms x ${LAB_BFD.multiplier}), its next hop gone from the kernel ${withdrawn! - killedAt} ms after`,
      );
      await sleep(2500);
      // While the node is dead its sibling carries every stream (it picked them up mid-flight).
      survivor = lab.kernelSessions(node.replace(/1$/, '2'));
      await sleep(500);
      lab.nodeLinks(node, true, 'carrier');
      linksUp = Date.now();
      await lab.startNode(node);
      const back = await whenTrue(() => nextHops(lab, router, dst).includes(addr), 20000);
      t.ok(back, `${node} back in the router's routes`);
      t.comment(`${node}: back in the routes ${back! - linksUp} ms after its links came up (+${back! - killedAt} ms after the kill)`);
    }, 13000);
    if (sampler) clearInterval(sampler);
    t.comment(`the router's route: ${routeLog.join(', ')}`);
    t.equal(r.streams, 200);
    const stalled = r.list.filter((x) => x.stalledAt !== null).map((x) => `${x.addr}:${x.port} sent at +${x.stalledAt! - killed} ms`);
    t.equal(
      r.broken,
      0,
      `0 of 200 streams broke ${JSON.stringify(r.longErrors)}${stalled.length ? ` (unanswered: ${stalled.join(', ')}; links up at +${linksUp - killed} ms)` : ''}`,
    );
    const carried = r.list.filter((x) => survivor.some((e) => (e.src === x.addr && e.sport === x.port) || (e.dst === x.addr && e.dport === x.port)));
    t.equal(carried.length, 200, `the surviving node carried all 200 streams while ${node} was dead`);
    t.equal(r.streams6, 60, 'and 60 IPv6 streams ran beside them');
    t.equal(r.broken6, 0, '0 of 60 IPv6 streams broke');
    const late = r.failedAt.filter((at) => withdrawn !== null && at > withdrawn + 200);
    t.same(
      late,
      [],
      `no new connection failed that started after the withdrawal (failed: ${r.failedAt.length} of ${r.started}, ${JSON.stringify(r.shortErrors)}; ` +
        `${late.length ? `those started at +${late.map((at) => at - killed).join(', +')} ms after the kill, ` : ''}the withdrawal at +${withdrawn === null ? '?' : withdrawn - killed} ms, links up at +${linksUp - killed} ms)`,
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
    t.equal(r.broken, 0, `0 of ${r.streams} streams broke ${brokenReport(r)}`);
    t.equal(r.failedAt.length, 0, `0 of ${r.started} new connections failed`);
    const node = (await lab.api('ob1', 'GET', '/node')).body;
    t.equal(node.state, 'fit', 'the restarted controller found the node fit');
    t.same(nextHops(lab, 'or', serverNet), both, 'and the router still has both');
  });

  await t.test("the status page shows the node's announcements and sessions, and a drain within 2 s", async (t) => {
    const page = await openStatusPage(t, lab.socketPath('ob1'));
    await page.waitForSelector('#bgp-state.up', { timeout: 5000 });
    t.equal(await page.textContent('#bgp-state'), 'fit');
    t.equal(await page.locator('#routing tr').count(), 1 + lab.t.balancers.ob1.bgp!.peers.length, 'a row per peer');
    t.equal(await page.locator('#routing td .down').count(), 0, 'every BGP and BFD session up');
    const at = Date.now();
    await lab.api('ob1', 'PUT', '/node/drain', { drained: true }, 'lab-token-0123456789');
    await page.waitForSelector('#bgp-state.down', { timeout: 5000 });
    t.equal(await page.textContent('#bgp-state'), 'drained');
    t.ok(Date.now() - at <= 2000, `the page showed the drain ${Date.now() - at} ms after it`);
    await lab.api('ob1', 'PUT', '/node/drain', { drained: false }, 'lab-token-0123456789');
    await whenTrue(() => nextHops(lab, 'or', serverNet).length === 2, 5000);
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
    t.equal(r.broken, 0, `0 of ${r.streams} streams broke ${brokenReport(r)}`);
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

  await t.test('systemd gave up on the controller: `fwlb announce unfit` makes the node least preferred; the controller back, it is fit again', async (t) => {
    await lab.killNode('ob1');
    const out = execFileSync('ip', ['netns', 'exec', lab.ns('ob1'), process.execPath, BALANCER_MAIN, 'announce', 'unfit', '--config', lab.configPath('ob1')], {
      encoding: 'utf8',
    });
    t.match(out, /announce table 250: unfit/);
    t.ok(await whenTrue(() => nextHops(lab, 'or', serverNet).length === 1, 5000), 'the router left ob1');
    t.same(nextHops(lab, 'or', serverNet), [addrOf('ob2')]);
    t.match(
      inNs(lab.ns('or'), ['birdc', '-s', lab.t.birds.find((b) => b.name === 'or')!.socket, 'show', 'route', 'all', serverNet]),
      /65001 65001 65001 65001 65001/,
      'ob1 with 4 prepends',
    );
    await lab.startNode('ob1');
    t.equal((await lab.api('ob1', 'GET', '/node')).body.state, 'fit');
    t.ok(await whenTrue(() => nextHops(lab, 'or', serverNet).length === 2, 5000), 'the router has both again');
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

t.test('BGP with BFD, 4 nodes per side: every router and firewall routes over all four; agreement and forwarding as with two', async (t) => {
  const { url } = await startRedisOnSocket(t);
  const lab = await startLab(t, { sessionTable: { url, heartbeatSeconds: 2 }, nodesPerSide: 4, routing: 'bgp' });
  t.comment(`every BGP session established ${await lab.waitBgp()} ms after the nodes started`);
  const serverNet = `${SERVER_NET}.0/24`;
  await whenTrue(() => nextHops(lab, 'or', serverNet).length === 4 && nextHops(lab, 'fw3', lab.t.clientNet).length === 4, 5000);
  t.equal(nextHops(lab, 'or', serverNet).length, 4, 'the outside router: 4 next hops');
  t.equal(nextHops(lab, 'slb', 'default').length, 4, 'the SLB node: 4');
  for (const fw of ['fw1', 'fw2', 'fw3']) {
    t.equal(nextHops(lab, fw, lab.t.clientNet).length, 4, `${fw} to the clients: 4`);
    t.equal(nextHops(lab, fw, serverNet).length, 4, `${fw} to the servers: 4`);
  }
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const target = `${lab.t.vip}:${ECHO_PORT}`;
  const outside = lab.balancerNames().filter((n) => n.startsWith('ob'));
  const syns = async () => Promise.all(outside.map(async (n) => (await lab.api(n, 'GET', '/node')).body.newConnections as number));

  // ib2's probes through fw2 are cut: ib2 sees fw2 down, the seven others see it up.
  const fw2 = lab.ns('fw2');
  const ib2 = lab.t.ecmp.find((e) => e.ns === lab.ns('fw1') && e.via.ib2)!.via.ib2;
  inNs(fw2, ['nft', 'add', 'table', 'inet', 'cut']);
  inNs(fw2, ['nft', 'add', 'chain', 'inet', 'cut', 'probes', '{ type filter hook prerouting priority -400; }']);
  inNs(fw2, ['nft', 'add', 'rule', 'inet', 'cut', 'probes', 'ip', 'saddr', ib2, 'icmp', 'type', 'echo-request', 'drop']);
  t.teardown(() => inNs(fw2, ['nft', 'delete', 'table', 'inet', 'cut']));
  const ms = await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw2')!.live === false, 20000, 'fw2 not live on all eight nodes');
  t.comment(`fw2 out of new sessions on all eight nodes ${ms} ms after ib2's probes through it were cut`);
  t.same(
    lab.balancerNames().map((n) => lab.bucketMarks(n).has(0x10001)),
    lab.balancerNames().map(() => false),
    "no node's bucket map holds fw2",
  );
  const onFw2 = () => lab.kernelSessions('fw2').filter((s) => s.dport === ECHO_PORT && s.dst === lab.t.vip).length;
  const before = { fw2: onFw2(), syns: await syns() };
  lab.resetFirewallCounters();
  const r = await Promise.all(clients.map((c) => drive(lab, c.name, { short: { targets: [target], count: 200, concurrency: 10, timeoutMs: 7000 } })));
  t.equal(
    r.reduce((a, x) => a + x.short.failed, 0),
    0,
    `400 new connections, 0 failed (${JSON.stringify(r.map((x) => x.short.errors))})`,
  );
  t.equal(onFw2() - before.fw2, 0, 'none of them crossed fw2');
  const spread = (await syns()).map((n, i) => n - before.syns[i]);
  t.ok(
    spread.every((n) => n > 0),
    `the outside router spread them over all four outside nodes (SYNs each: ${spread.join(', ')})`,
  );
  t.same(
    lab.firewallCounters().map((f) => f.drops),
    [0, 0, 0],
    '0 firewall drops',
  );
});
