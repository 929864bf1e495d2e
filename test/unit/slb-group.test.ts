// Unit: what SLB groups use: the `flow` scheduler (the model's member for a connection, the same on every node, its
// minimal moves, its per-VIP pool map through the SLB service over a fake kernel that refuses what nft refuses),
// HAProxy peers, and one-arm (SNAT) VIPs.
import { t } from 'tap';
import { randomBytes } from 'node:crypto';
import { validateSlbConfig } from '@fwlb/config';
import { flowMap, flowSlot, SLB_OBJECTS, vipSlots } from '@fwlb/slb';
import { setup, TOKEN, web } from '../helpers/slb-fixture';

const auth = { authorization: `Bearer ${TOKEN}` };

/** Random client ends towards one VIP. */
const flows = (n: number) =>
  Array.from({ length: n }, () => {
    const r = randomBytes(6);
    return { saddr: `198.51.${r[0]}.${r[1]}`, sport: 1024 + (r.readUInt16BE(2) % 60000), daddr: '203.0.113.100', dport: 80, protocol: 'tcp' as const };
  });

t.test('flow: shares follow weights; a member that goes down moves only its own connections, and they come back with it', async (t) => {
  const members = [
    { address: '10.20.0.11', port: 80, weight: 1 },
    { address: '10.20.0.12', port: 80, weight: 2 },
    { address: '10.20.0.13', port: 80, weight: 1 },
    { address: '10.20.0.14', port: 80, weight: 1 },
  ];
  const v = validateSlbConfig({ interface: 'up0', vips: [{ id: 'web', address: '203.0.113.100', port: 80, protocol: 'tcp', scheduler: 'flow', members }] })
    .vips[0];
  const keys = members.map((m) => `${m.address}:${m.port}`);
  const memberOf = (live: string[]) => {
    const slots = vipSlots(v, new Set(live));
    return (f: ReturnType<typeof flows>[0]) => slots[flowSlot(f, 7, slots.length)];
  };
  const fs = flows(20000);
  const all = memberOf(keys);
  const before = fs.map(all);
  const share = (m: string) => before.filter((x) => x === m).length / fs.length;
  t.ok(Math.abs(share(keys[1]) - 0.4) < 0.04, `weight 2 of 5 takes ${share(keys[1]).toFixed(3)} of the connections`);
  for (const k of [keys[0], keys[2], keys[3]]) t.ok(Math.abs(share(k) - 0.2) < 0.04, `weight 1 of 5 takes ${share(k).toFixed(3)}`);
  const gone = keys[2];
  const after = fs.map(memberOf(keys.filter((k) => k !== gone)));
  t.equal(fs.filter((_, i) => before[i] !== gone && after[i] !== before[i]).length, 0, 'no connection of a live member moved');
  t.equal(after.filter((m) => m === gone).length, 0, 'none goes to the member that is down');
  t.same(fs.map(all), before, 'the same members, health and seed give the same member (another node, or the member back)');
  t.not(
    fs.map((f) => memberOf(keys)({ ...f }) === memberOf(keys)({ ...f, sport: f.sport + 1 })).filter(Boolean).length,
    fs.length,
    'the port is part of the key (not a source hash)',
  );
});

t.test('flow through the SLB service: a map of its own, keyed by the hash; member changes are its elements; back to rr, the map goes', async (t) => {
  const { s, app, nft, monitors } = setup();
  await s.start();
  const put = await app.inject({ method: 'PUT', url: '/vips/web', payload: { ...web(), scheduler: 'flow' }, headers: auth });
  t.equal(put.statusCode, 200, put.body);
  const st = () => nft.state!;
  const rule = nft.rules.get('v_web')![0] as any[];
  const dnat = rule.find((x: any) => x.dnat).dnat.addr.map;
  t.equal(dnat.data, `@${flowMap('web')}`);
  t.equal(dnat.key.jhash.seed, 9);
  t.same(
    dnat.key.jhash.expr.concat.map((e: any) => e.payload?.field ?? e.meta?.key),
    ['saddr', 'sport', 'daddr', 'dport', 'l4proto'],
    'the hash covers the connection',
  );
  const pool = () => [...st().flowPools.get(flowMap('web'))!].sort((a, b) => a[0] - b[0]).map(([, m]) => m);
  const slotsBefore = pool();
  t.equal(slotsBefore.length, dnat.key.jhash.mod, 'one element per slot');
  t.same(new Set(slotsBefore), new Set(['10.20.0.11:8080', '10.20.0.12:8080']));
  t.equal([...st().pools.keys()].filter((k) => k.includes('"tcp",80')).length, 0, 'no slots left in be_tcp');
  t.same([...st().endpoints].sort(), ['["10.20.0.11","tcp",8080]', '["10.20.0.12","tcp",8080]'], 'the members are in the guard set');
  const batches = nft.batches.length;
  monitors.get([...monitors.keys()].find((k) => k.includes('10.20.0.11'))!)!.emit(false);
  await s.reconcile();
  const slotsAfter = pool();
  t.ok(
    slotsAfter.every((m, i) => slotsBefore[i] === '10.20.0.11:8080' || m === slotsBefore[i]),
    'only the slots of the member that went down changed',
  );
  t.notOk(slotsAfter.includes('10.20.0.11:8080'));
  const cmds = nft.batches.slice(batches).flat() as any[];
  t.notOk(
    cmds.some((c) => c.flush || c.add?.rule),
    'a member change is elements only',
  );
  const rr = await app.inject({ method: 'PUT', url: '/vips/web', payload: web(), headers: auth });
  t.equal(rr.statusCode, 200, rr.body);
  t.notOk(st().sets.has(flowMap('web')), 'round robin again: the map is deleted');
  t.ok(
    [...st().pools.keys()].some((k) => k.includes('"tcp",80')),
    'the slots are in be_tcp again',
  );
  const del = await app.inject({ method: 'DELETE', url: '/vips/web', headers: auth });
  t.equal(del.statusCode, 204);
  t.ok(st().endpoints.size > 0, 'a change keeps endpoints (another VIP out of its scope may share one)');
  await s.reconcile();
  t.equal(st().endpoints.size, 0, 'the full pass removes endpoints no VIP has');
  t.ok(st().sets.has(SLB_OBJECTS.endpoints));
});

t.test('flow: a failed change leaves no map behind', async (t) => {
  const { s, app, nft } = setup();
  await s.start();
  nft.failNext();
  const put = await app.inject({ method: 'PUT', url: '/vips/web', payload: { ...web(), scheduler: 'flow' }, headers: auth });
  t.equal(put.statusCode, 500);
  t.notOk(nft.state!.sets.has(flowMap('web')), 'the map declared for it is taken back');
  t.equal(nft.rules.get('v_web')![0].find((x: any) => x.dnat).dnat.addr.map.data, '@be_tcp', 'the VIP as it was');
});

t.test('haproxy.peers: this node among them, names and ends once; the stick tables are shared', async (t) => {
  const { renderL7 } = await import('@fwlb/slb');
  const { ConfigError } = await import('@fwlb/config');
  const base = { interface: 'up0', name: 'slb', vips: [] };
  const peers = [
    { name: 'slb', address: '203.0.113.2' },
    { name: 'slb2', address: '203.0.113.3', port: 10001 },
  ];
  const c = validateSlbConfig({ ...base, haproxy: { peers } });
  t.same(c.haproxy.peers, [
    { name: 'slb', address: '203.0.113.2', port: 10000 },
    { name: 'slb2', address: '203.0.113.3', port: 10001 },
  ]);
  const fields = (doc: unknown) => {
    try {
      validateSlbConfig(doc);
      return [];
    } catch (e) {
      return (e as InstanceType<typeof ConfigError>).problems.map((p) => p.field);
    }
  };
  t.same(fields({ ...base, name: 'other', haproxy: { peers } }), ['/haproxy/peers'], 'this node is not listed');
  t.same(fields({ ...base, haproxy: { peers: [...peers, { name: 'slb2', address: '203.0.113.4' }] } }), ['/haproxy/peers/2/name']);
  t.same(fields({ ...base, haproxy: { peers: [...peers, { name: 'slb3', address: '203.0.113.2' }] } }), ['/haproxy/peers/2/address']);
  t.same(fields({ ...base, haproxy: { peers: [{ name: 'bad name', address: '203.0.113.2' }] } }), ['/haproxy/peers/0/name']);
  const v = validateSlbConfig({
    ...base,
    vips: [
      {
        id: 'st',
        address: '203.0.113.100',
        port: 8001,
        protocol: 'tcp',
        mode: 'http',
        pools: [{ name: 'www', persistence: 'source' }],
        rules: [],
        defaultPool: 'www',
        members: [{ address: '10.20.0.11', port: 8080, pool: 'www' }],
      },
    ],
  }).vips as any[];
  const shared = renderL7(v, () => true, { dir: '/run/x', peers: c.haproxy.peers, localPeer: 'slb' }).config;
  t.match(shared, /^  localpeer slb$/m);
  t.match(shared, /^peers fwlb\n  peer slb 203\.0\.113\.2:10000\n  peer slb2 203\.0\.113\.3:10001$/m);
  t.match(shared, /stick-table type ip size 200k expire 30m peers fwlb\n  stick on src/);
  t.match(shared, /store http_req_cnt peers fwlb/);
  const alone = renderL7(v, () => true, { dir: '/run/x' }).config;
  t.notMatch(alone, /peers|localpeer/, 'a node alone shares nothing');
});

t.test("one-arm VIPs: snat {} leaves with the node's address, snat.address with that one; L4 only, in the VIP's family", async (t) => {
  const { s, app, nft } = setup();
  await s.start();
  const key = JSON.stringify(['203.0.113.100', 'tcp', 80]);
  const put = (body: object) => app.inject({ method: 'PUT', url: '/vips/web', payload: body as Record<string, unknown>, headers: auth });
  t.equal((await put({ ...web(), snat: {} })).statusCode, 200);
  t.same([...nft.state!.snatNode], [key], 'the node address: in snat_node');
  t.equal(nft.state!.snatTo.size, 0);
  t.same((await app.inject({ method: 'GET', url: '/vips/web' })).json().snat, {}, 'the API shows it');
  t.equal((await put({ ...web(), snat: { address: '10.20.0.1' } })).statusCode, 200);
  t.same([...nft.state!.snatTo], [[key, '10.20.0.1']], 'an address: in snat_to');
  t.equal(nft.state!.snatNode.size, 0, 'and out of snat_node, in the same change');
  t.equal((await put(web())).statusCode, 200);
  t.equal(nft.state!.snatNode.size + nft.state!.snatTo.size, 0, 'two-arm again');
  const bad = await put({ ...web(), snat: { address: '2001:db8::1' } });
  t.equal(bad.statusCode, 400);
  t.match(bad.json().details, [{ field: '/snat/address' }]);
  const l7 = validateSlbConfigProblems({
    interface: 'up0',
    vips: [
      {
        id: 'l7',
        address: '203.0.113.100',
        port: 8000,
        protocol: 'tcp',
        mode: 'http',
        snat: {},
        pools: [{ name: 'www' }],
        rules: [],
        defaultPool: 'www',
        members: [{ address: '10.20.0.11', port: 8080, pool: 'www' }],
      },
    ],
  });
  t.same(l7, ['/vips/0/snat'], 'an L7 VIP refuses it');
  t.equal((await app.inject({ method: 'DELETE', url: '/vips/web', headers: auth })).statusCode, 204);
});

function validateSlbConfigProblems(doc: unknown): string[] {
  try {
    validateSlbConfig(doc);
    return [];
  } catch (e) {
    return (e as { problems: { field: string }[] }).problems.map((p) => p.field);
  }
}
