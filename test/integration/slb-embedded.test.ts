// Integration: the SLB tier inside the inside node's process: its VIP is on the node's own server-side interface,
// served on the node's API, and reached by clients through the whole sandwich.
import { t } from 'tap';
import { drive, EMBEDDED_VIP, inNs, WEB_PORT } from '@fwlb/lab';
import { startLab } from '../helpers/lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('SLB embedded in the inside node', async (t) => {
  const lab = await startLab(t, { slbEmbedded: true });
  const t0 = Date.now();
  for (;;) {
    const v = await lab.api('inside', 'GET', '/vips/web-ib/members');
    if (v.status === 200 && v.body.every((m: any) => m.health.up)) break;
    if (Date.now() - t0 > 10000) throw new Error(`members not up: ${JSON.stringify(v.body)}`);
    await sleep(100);
  }
  t.match(inNs(lab.ns('ib'), ['ip', '-4', '-o', 'addr', 'show', 'dev', 'srv0']), /203\.0\.113\.200\/32 .*srv0:vip/, 'the inside node holds the VIP');
  lab.resetFirewallCounters();
  const rs = await Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { http: { targets: [`${EMBEDDED_VIP}:${WEB_PORT}`], count: 150, concurrency: 8 } })));
  const bodies = new Set(rs.flatMap((r) => Object.keys(r.http.bodies)));
  t.equal(
    rs.reduce((a, r) => a + r.http.failed, 0),
    0,
    '0 of 300 requests failed',
  );
  t.equal(bodies.size, 3, 'all three servers answered');
  t.equal(
    lab.firewallCounters().reduce((a, f) => a + f.drops, 0),
    0,
    'no firewall drop',
  );
  const fw = await lab.api('inside', 'GET', '/firewalls');
  t.ok(
    fw.body.every((f: any) => f.live),
    'the firewall probes still pass (local marking comes after DNAT)',
  );
  const token = lab.t.nodes.inside.api!.token!;
  const drain = await lab.api('inside', 'PATCH', `/vips/web-ib/members/${lab.host('s1').addr}:8080`, { state: 'drain' }, token);
  t.equal(drain.status, 200, 'the VIP is managed through the inside node API');
  t.equal(drain.body.slots, 0);
  t.equal((await lab.api('inside', 'PATCH', `/vips/web-ib/members/${lab.host('s1').addr}:8080`, { state: 'enabled' }, token)).status, 200);

  await t.test(
    "a firewall only the inside node sees down: the VIP's replies (from the real servers, after DNAT) go back through it while it is heard from",
    async (t) => {
      // fw2 drops the inside node's probes only: the inside node sees it down (suspect: its link is up), the outside
      // node sees it up and keeps sending new connections through it.
      const fw2 = lab.ns('fw2');
      inNs(fw2, ['nft', 'add', 'table', 'ip', 'cut']);
      inNs(fw2, ['nft', 'add', 'chain', 'ip', 'cut', 'probecut', '{ type filter hook forward priority -10; }']);
      inNs(fw2, ['nft', 'add', 'rule', 'ip', 'cut', 'probecut', 'ip', 'daddr', lab.t.nodes.inside.health!.target!, 'icmp', 'type', 'echo-request', 'drop']);
      t.teardown(() => inNs(fw2, ['nft', 'delete', 'table', 'ip', 'cut']));
      const t1 = Date.now();
      for (;;) {
        const [o, i] = await Promise.all(
          (['outside', 'inside'] as const).map(async (r) => (await lab.api(r, 'GET', '/firewalls')).body.find((f: any) => f.id === 'fw2')),
        );
        if (o.live && i.suspect) break;
        if (Date.now() - t1 > 10000) throw new Error(`fw2 not suspect on the inside node only: ${JSON.stringify([o, i])}`);
        await sleep(50);
      }
      lab.resetFirewallCounters();
      const rs = await Promise.all(
        ['c1', 'c2'].map((c) => drive(lab, c, { http: { targets: [`${EMBEDDED_VIP}:${WEB_PORT}`], count: 150, concurrency: 8, timeoutMs: 5000 } })),
      );
      const chain = JSON.parse(inNs(lab.ns('ib'), ['nft', '-j', 'list', 'chain', 'inet', 'fwlb', 'prerouting'])).nftables;
      const heard = chain.find((x: any) => x.rule && JSON.stringify(x.rule.expr).includes('"right":"@heard"'));
      const heardPackets = heard?.rule.expr.find((e: any) => e.counter)?.counter.packets ?? 0;
      const fw = lab.firewallCounters();
      t.ok(
        fw.find((f) => f.id === 'fw2')!.newSessions > 20,
        `the outside node still sent new connections through fw2 (${fw.find((f) => f.id === 'fw2')!.newSessions})`,
      );
      t.equal(
        rs.reduce((a, r) => a + r.http.failed, 0),
        0,
        `0 of 300 requests failed ${JSON.stringify(rs.map((r) => r.http.errors))}`,
      );
      t.equal(
        fw.reduce((a, f) => a + f.drops, 0),
        0,
        `no firewall drop ${JSON.stringify(lab.firewallDropFlows().slice(0, 5))}`,
      );
      t.ok(heardPackets > 0, `the real servers' replies went back through fw2 because their connections were heard from it (${heardPackets} packets)`);
    },
  );
});
