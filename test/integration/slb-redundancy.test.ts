// Integration: two SLB nodes, active/standby under keepalived (one VRRP instance moves the inside node's gateway to
// the VIPs and the real servers' gateway together), with the `flow` scheduler: both nodes compute the same Maglev
// table from the same members, health and seed, so a connection that moves to the other node keeps its member
// without any state shared between them.
import { t } from 'tap';
import { randomBytes } from 'node:crypto';
import { memberKey, validateSlbConfig } from '@fwlb/config';
import { formatAddress } from '@fwlb/flowhash';
import { drive, ECHO_PORT, inNs, L7_PORT, Lab, ONE_ARM_PORT, RIP_NET, run, STICKY_PORT, waitUntil } from '@fwlb/lab';
import { flowSlot, haproxyCli, vipSlots } from '@fwlb/slb';
import { join } from 'node:path';
import { startLab } from '../helpers/lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const FLOWS = 10000;

// One UDP datagram per flow from its own source address and port (any address of a local route can be bound).
const SENDER = `
const dgram = require('node:dgram');
const flows = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
(async () => {
  for (const f of flows) {
    const s = dgram.createSocket('udp4');
    await new Promise((res, rej) => { s.once('error', rej); s.bind({ address: f.src, port: f.sport }, res); });
    await new Promise((res) => s.send('x', f.dport, f.dst, () => res()));
    s.close();
  }
})().catch((e) => { console.error(e.message); process.exit(1); });
`;

/** Random sources in 10.1/16, one flow per source address and port. */
function sources(n: number): { src: string; sport: number }[] {
  const out = new Map<string, { src: string; sport: number }>();
  while (out.size < n) {
    const r = randomBytes(4);
    const src = formatAddress(new Uint8Array([10, 1, r[0], r[1]]));
    if (/\.(0|255)$/.test(src)) continue;
    const f = { src, sport: 1024 + (r.readUInt16BE(2) % 64000) };
    out.set(`${f.src}:${f.sport}`, f);
  }
  return [...out.values()];
}

/** `show table` of an L7 VIP's stick table on an SLB node: client address → server id. */
async function stickTable(lab: Lab, node: string, table: string): Promise<Map<string, string>> {
  const dir = lab.t.slbs[node].haproxy!.dir!;
  const out = await haproxyCli(join(dir, 'admin.sock'), `show table ${table}`);
  return new Map([...out.matchAll(/key=(\S+) .*?server_id=(\d+)/g)].map((m) => [m[1], m[2]]));
}

/** The echo VIP's guard counters on a node: packets dropped as replies of connections it did not translate. */
function guardDrops(lab: Lab, node: string): number {
  const j = JSON.parse(inNs(lab.ns(node), ['nft', '-j', 'list', 'chain', 'ip', 'fwlb_slb', 'guard']));
  return j.nftables.filter((x: any) => x.rule).reduce((a: number, x: any) => a + (x.rule.expr.find((e: any) => e.counter)?.counter.packets ?? 0), 0);
}

t.test('SLB redundancy: two SLB nodes (keepalived active/standby), the flow scheduler', async (t) => {
  const lab = await startLab(t, { slbNodes: 2 });
  await lab.startKeepalived();
  t.equal(lab.vrrpHolder('slb'), 'slb', 'slb (priority 250) holds the gateway addresses');
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const target = `${lab.t.vip}:${ECHO_PORT}`;
  const tm = Lab.VRRP_TIMERS;
  const advertMs = tm.advert * 1000;
  const waitHolder = (node: string, ms: number) =>
    waitUntil(
      () => lab.vrrpHolder('slb') === node,
      ms,
      () => `${node} to take the SLB gateway addresses (holder ${lab.vrrpHolder('slb')}): ${lab.keepalivedLogs.slice(-10).join('')}`,
      10,
    );

  await t.test('the model equals the kernel: 10,000 random flows to a VIP, through each SLB node, go to the member the pure model picks', async (t) => {
    // A prober with a link to each SLB node: the VIP is routed to one node, then to the other.
    const pr = lab.ns('pr');
    run(['ip', 'netns', 'add', pr]);
    inNs(pr, ['ip', 'link', 'set', 'lo', 'up']);
    inNs(pr, ['ip', 'route', 'add', 'local', '10.1.0.0/16', 'dev', 'lo']);
    // slb2 first: the members answer its flows through slb (their gateway), which has no entry for them yet.
    const nodes = ['slb2', 'slb'];
    nodes.forEach((node, j) => {
      const tmp = `pr${process.pid.toString(36)}${j}`;
      run(['ip', 'link', 'add', `${tmp}a`, 'netns', pr, 'type', 'veth', 'peer', 'name', `${tmp}b`, 'netns', lab.ns(node)]);
      inNs(pr, ['ip', 'link', 'set', `${tmp}a`, 'name', `p${j}`]);
      inNs(lab.ns(node), ['ip', 'link', 'set', `${tmp}b`, 'name', 'pr0']);
      inNs(pr, ['ip', 'addr', 'add', `10.250.${j}.1/30`, 'dev', `p${j}`]);
      inNs(lab.ns(node), ['ip', 'addr', 'add', `10.250.${j}.2/30`, 'dev', 'pr0']);
      inNs(pr, ['ip', 'link', 'set', `p${j}`, 'up']);
      inNs(lab.ns(node), ['ip', 'link', 'set', 'pr0', 'up']);
      inNs(lab.ns(node), ['ip', 'route', 'add', '10.1.0.0/16', 'via', `10.250.${j}.1`]);
    });
    const vip = validateSlbConfig(lab.t.slb).vips.find((v) => v.id === 'echo-udp')!;
    t.equal(vip.scheduler, 'flow');
    const slots = vipSlots(vip, new Set(vip.members.map(memberKey)));
    const flows = sources(FLOWS).map((s) => ({ ...s, dst: vip.address, dport: vip.port }));
    const model = new Map(
      flows.map((f) => [
        `${f.src}:${f.sport}`,
        slots[flowSlot({ saddr: f.src, sport: f.sport, daddr: f.dst, dport: f.dport, protocol: 'udp' }, lab.t.slb.seed!, slots.length)],
      ]),
    );
    let guarded = guardDrops(lab, 'slb');
    for (const [j, node] of nodes.entries()) {
      inNs(pr, ['ip', 'route', 'replace', `${vip.address}/32`, 'via', `10.250.${j}.2`]);
      inNs(pr, [process.execPath, '-e', SENDER], JSON.stringify(flows));
      let kernel = new Map<string, string>();
      await waitUntil(
        () => (kernel = lab.slbDnat(node, 'udp', vip.address, vip.port)).size >= FLOWS,
        10000,
        () => `${FLOWS} entries on ${node}: ${kernel.size}`,
      );
      const differ = flows.filter((f) => kernel.get(`${f.src}:${f.sport}`) !== model.get(`${f.src}:${f.sport}`));
      t.equal(
        differ.length,
        0,
        `${node}: the kernel sent ${FLOWS - differ.length} of ${FLOWS} flows to the model's member ${JSON.stringify(differ.slice(0, 3))}`,
      );
      const spread = new Map<string, number>();
      for (const m of kernel.values()) spread.set(m, (spread.get(m) ?? 0) + 1);
      t.equal(spread.size, vip.members.length, `${node}: every member took flows ${JSON.stringify([...spread])}`);
      if (node === 'slb2') guarded = guardDrops(lab, 'slb') - guarded;
    }
    // The members answered slb2's flows through the master (their gateway): it has no entry for them, and its guard
    // dropped the answers rather than let them out with the member's address.
    t.ok(guarded >= FLOWS * 0.9, `slb's guard dropped ${guarded} answers to connections slb2 translated`);
  });

  await t.test('a member dies while both SLB nodes run: both take it out, with the same members; only its streams end', async (t) => {
    const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 30, durationMs: 6000, intervalMs: 100 } })));
    await sleep(1500);
    const before = lab.slbDnat('slb', 'tcp', lab.t.vip, ECHO_PORT);
    const victim = 's2';
    const victimMember = `${lab.host(victim).addr}:${ECHO_PORT}`;
    const t0 = Date.now();
    await lab.killServer(victim);
    const up = async (node: string) => {
      const r = await lab.api(node, 'GET', '/vips/echo/members');
      return (r.body as any[]).filter((m) => m.health.up).map((m) => `${m.address}:${m.port}`);
    };
    const downIn = await Promise.all(
      ['slb', 'slb2'].map((node) =>
        waitUntil(async () => !(await up(node)).includes(victimMember), 5000, `${victim} down on ${node}`, 20).then(() => Date.now() - t0),
      ),
    );
    t.same(await up('slb2'), await up('slb'), 'both nodes hold the same live members');
    const reports = await longs;
    const streams = reports.flatMap((r, i) => r.long.streams.map((s) => ({ ...s, client: `${clients[i].addr}:${s.port}` })));
    t.equal(streams.length, 60);
    const onVictim = streams.filter((s) => before.get(s.client) === victimMember);
    const others = streams.filter((s) => before.get(s.client) !== victimMember);
    t.ok(onVictim.length > 0, `${onVictim.length} streams were on ${victim}`);
    t.equal(others.filter((s) => s.err).length, 0, `0 of ${others.length} streams to the live members broke`);
    t.comment(`${victim} down on slb after ${downIn[0]} ms, on slb2 after ${downIn[1]} ms`);
    await lab.startServer(victim);
    for (const node of ['slb', 'slb2'])
      await lab.waitMembers((vips) => vips.every((v) => v.members.every((m: any) => m.health.up)), 10000, `every member up again on ${node}`, node);
  });

  await t.test(
    'the active SLB node dies (kill -9, links down): 0 of 200 streams break, each keeps its member on slb2; new connections fail only until slb2 holds the addresses; it returns as backup: 0 broken',
    async (t) => {
      lab.resetFirewallCounters();
      const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 100, durationMs: 14000, intervalMs: 100 } })));
      // One-arm streams: the servers see the group's shared address, which moves with the group.
      const oneArm = Promise.all(
        clients.map((c) => drive(lab, c.name, { long: { targets: [`${lab.t.vip}:${ONE_ARM_PORT}`], count: 20, durationMs: 14000, intervalMs: 100 } })),
      );
      const shorts = Promise.all(
        clients.map((c) => drive(lab, c.name, { short: { targets: [target], count: 500, concurrency: 1, intervalMs: 25, timeoutMs: 3000 } })),
      );
      await sleep(2500);
      // L7: each client's server under source persistence, and a cookie session, as slb serves them.
      const jar = join(lab.t.opts.runDir, 'cookies.txt');
      const get = (client: string, url: string, cookies = false) =>
        inNs(lab.ns(client), ['curl', '-sS', '-m', '3', ...(cookies ? ['-b', jar, '-c', jar] : []), url]).trim();
      const sticky = `http://${lab.t.vip}:${STICKY_PORT}/`;
      const stickyBefore = clients.map((c) => [get(c.name, sticky), get(c.name, sticky), get(c.name, sticky)]);
      for (const [i, answers] of stickyBefore.entries())
        t.equal(new Set(answers).size, 1, `${clients[i].name} stays on ${answers[0]} under source persistence`);
      const cookieBefore = [get('c1', `http://${lab.t.vip}:${L7_PORT}/`, true), get('c1', `http://${lab.t.vip}:${L7_PORT}/`, true)];
      t.equal(cookieBefore[1], cookieBefore[0], `the cookie session stays on ${cookieBefore[0]}`);
      const tables = await Promise.all(['slb', 'slb2'].map((n) => stickTable(lab, n, 'b.sticky.www')));
      for (const c of clients)
        t.equal(tables[1].get(c.addr!), tables[0].get(c.addr!), `slb2's stick table holds ${c.addr} on server ${tables[0].get(c.addr!)}, as slb's (peers)`);
      const onSlb = lab.slbDnat('slb', 'tcp', lab.t.vip, ECHO_PORT);
      const killAt = Date.now();
      await lab.killNode('slb');
      lab.nodeLinks('slb', false);
      let takeover = 0;
      let onSlb2 = new Map<string, string>();
      // The firewalls' drops up to 3 s after the takeover: a new connection caught in the takeover window may fail,
      // and a strict firewall drops its leftover packets; from then on nothing may drop.
      let windowDrops = [0, 0, 0];
      try {
        await waitHolder('slb2', 10000);
        takeover = Date.now() - killAt;
        await sleep(3000);
        windowDrops = lab.firewallCounters().map((f) => f.drops);
        onSlb2 = lab.slbDnat('slb2', 'tcp', lab.t.vip, ECHO_PORT);
        const oneArmCt = inNs(lab.ns('slb2'), ['conntrack', '-L', '-p', 'tcp', '--orig-dst', lab.t.vip, '--dport', String(ONE_ARM_PORT)]);
        t.ok(
          oneArmCt.split('\n').filter((l) => l.includes(`dst=${RIP_NET}.1 sport=${ECHO_PORT}`)).length >= 40,
          `slb2 took the one-arm streams up translated to the group's address ${RIP_NET}.1`,
        );
        t.same(
          clients.map((c) => get(c.name, sticky)),
          stickyBefore.map((a) => a[0]),
          'through slb2, each client reaches the server slb had stuck it to',
        );
        t.equal(get('c1', `http://${lab.t.vip}:${L7_PORT}/`, true), cookieBefore[0], 'and the cookie session its server');
      } finally {
        lab.nodeLinks('slb', true);
        await lab.startNode('slb');
      }
      // Back with its health check passing (keepalived checks every second, `rise` twice), slb stays backup.
      await sleep((tm.rise + 1) * tm.checkInterval * 1000);
      const holderAfter = lab.vrrpHolder('slb');
      const reports = await longs;
      const streams = reports.flatMap((r, i) => r.long.streams.map((s) => ({ ...s, client: `${clients[i].addr}:${s.port}` })));
      t.equal(streams.length, 200);
      t.equal(streams.filter((s) => s.err).length, 0, `0 of 200 streams broke (${JSON.stringify(reports.map((r) => r.long.errors))})`);
      const oneArmR = await oneArm;
      t.equal(
        oneArmR.reduce((a, r) => a + r.long.streams.filter((s) => !s.err).length, 0),
        40,
        `0 of 40 one-arm streams (SNAT to the group's address) broke (${JSON.stringify(oneArmR.map((r) => r.long.errors))})`,
      );
      const moved = streams.filter((s) => onSlb.has(s.client) && onSlb2.has(s.client));
      t.equal(moved.length, 200, `slb2 carried all 200 streams (${moved.length})`);
      const changed = moved.filter((s) => onSlb.get(s.client) !== onSlb2.get(s.client));
      t.equal(changed.length, 0, `each of them to the member slb had sent it to ${JSON.stringify(changed.slice(0, 3))}`);
      const sh = await shorts;
      const failedAt = sh.flatMap((r) => r.short.failedAt).map((at) => at - killAt);
      const ok = sh.reduce((a, r) => a + r.short.ok, 0);
      t.ok(ok > 0, `${ok} new connections succeeded`);
      // A connection fails when its SYN and retransmissions all reach no node: started between the kill and the
      // takeover (its retransmission 1 s later finds slb2), so none started after the takeover.
      t.same(
        failedAt.filter((x) => x < 0 || x > takeover),
        [],
        `every failed new connection started while the route pointed at the dead node (${failedAt.length} failed, at ${JSON.stringify(failedAt)} ms after the kill: ${JSON.stringify(sh.map((r) => r.short.errors))})`,
      );
      t.equal(holderAfter, 'slb2', 'slb came back as backup (nopreempt): the addresses stay where the connections are');
      t.same(
        lab.firewallCounters().map((f, i) => f.drops - windowDrops[i]),
        [0, 0, 0],
        `the firewalls dropped nothing once slb2 had taken over (${lab.firewallDropFlows().join('; ')})`,
      );
      t.ok(
        windowDrops.every((d) => d === 0) || failedAt.length > 0,
        `drops in the takeover window (${windowDrops}) only with a new connection that failed in it (${failedAt.length})`,
      );
      t.comment(
        `slb2 held the addresses ${takeover} ms after the kill (${(takeover / advertMs).toFixed(1)} advert intervals); slb back as backup; ` +
          `${failedAt.length} of ${failedAt.length + ok} new connections failed; longest echo gap ${Math.max(...streams.map((s) => s.maxGapMs))} ms`,
      );
    },
  );
});
