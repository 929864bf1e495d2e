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
  t.equal(rs.reduce((a, r) => a + r.http.failed, 0), 0, '0 of 300 requests failed');
  t.equal(bodies.size, 3, 'all three servers answered');
  t.equal(lab.firewallCounters().reduce((a, f) => a + f.drops, 0), 0, 'no firewall drop');
  const fw = await lab.api('inside', 'GET', '/firewalls');
  t.ok(fw.body.every((f: any) => f.live), 'the firewall probes still pass (local marking comes after DNAT)');
  const token = lab.t.nodes.inside.api!.token!;
  const drain = await lab.api('inside', 'PATCH', `/vips/web-ib/members/${lab.host('s1').addr}:8080`, { state: 'drain' }, token);
  t.equal(drain.status, 200, 'the VIP is managed through the inside node API');
  t.equal(drain.body.slots, 0);
});
