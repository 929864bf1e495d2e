// Integration (real nft, real fwlb-slb process, its own namespace): the SLB control plane with 1,000 VIPs × 8 members.
// A member change writes that VIP's objects and nothing else, a restart against the same kernel writes nothing, and
// GETs run no process. Timings are the bench's (bench/slb-control.ts); this test asserts what the kernel saw.
import { t } from 'tap';
import { spawnInNs, uniquePrefix, ScaleSlb } from '@fwlb/lab';

const VIPS = 1000;
const MEMBERS = 8;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The pool elements of every VIP but `skip`, as `nft -j list map` lists them (sorted). */
function poolsExcept(s: ScaleSlb, skip: string): string[] {
  const m = JSON.parse(s.nft(['-j', 'list', 'map', 'ip', 'fwlb_slb', 'be_tcp'])).nftables.find((x: any) => x.map).map;
  return (m.elem as any[])
    .filter((e) => e[0].concat[0] !== skip)
    .map((e) => JSON.stringify(e))
    .sort();
}

function rulesExcept(s: ScaleSlb, skipChain: string): string[] {
  const items = JSON.parse(s.nft(['-t', '-j', 'list', 'table', 'ip', 'fwlb_slb'])).nftables;
  return items
    .filter((x: any) => x.rule && x.rule.chain !== skipChain)
    .map((x: any) => `${x.rule.chain} ${x.rule.handle} ${x.rule.comment ?? ''}`)
    .sort();
}

t.test(`SLB control plane with ${VIPS} VIPs × ${MEMBERS} members`, async (t) => {
  const s = new ScaleSlb(uniquePrefix('sc'), { vips: VIPS, members: MEMBERS });
  t.teardown(() => s.cleanup());
  s.setup();
  const t0 = Date.now();
  await s.start();
  await s.adopted(t0);
  const st = await s.api('GET', '/status');
  t.equal(st.body.vips, VIPS, 'every VIP is loaded');
  t.equal(st.body.monitors, VIPS * MEMBERS, 'one monitor per member');

  await t.test('a member PATCH changes exactly that VIP: its rule and its pool elements, nothing else', async (t) => {
    const vip = '10.100.5.1';
    const otherPools = poolsExcept(s, vip);
    const otherRules = rulesExcept(s, 'v_v5');
    t.equal(otherPools.length, (VIPS - 1) * MEMBERS, 'the other VIPs hold their slots');
    let text = '';
    const mon = spawnInNs(s.ns, ['nft', 'monitor', 'rules']);
    mon.stdout!.on('data', (d: Buffer) => (text += d));
    await sleep(300);
    const before = s.transactionsMark();
    const r = await s.api('PATCH', '/vips/v5/members/10.50.5.10:8000', { state: 'drain' });
    t.equal(r.status, 200, 'drained');
    await sleep(500);
    mon.kill();
    const sent = s.transactionsSince(before);
    t.equal(sent.length, 1, 'one nft transaction');
    // The transaction as sent: every command names v5's chain, or an element keyed by v5's address.
    const cmds = JSON.parse(sent[0]).nftables as any[];
    const about = (c: any) => {
      const o: any = Object.values(Object.values(c)[0] as object)[0];
      if (o.chain === 'v_v5' || o.name === 'v_v5') return true;
      const elems = o.elem as any[] | undefined;
      return !!elems?.length && elems.every((e) => (Array.isArray(e) ? e[0] : e).concat[0] === vip);
    };
    t.ok(cmds.length > 0, `${cmds.length} commands`);
    t.same(
      cmds.filter((c) => !about(c)),
      [],
      'every command is v5’s chain or v5’s pool elements',
    );
    t.ok(
      cmds.some((c) => c.delete?.element?.name === 'be_tcp'),
      'pool elements changed element by element',
    );
    // And what the kernel reported: rule events in v5's chain only.
    const events = text.split('\n').filter((l) => l && !/^# new generation/.test(l));
    t.ok(events.length > 0, `the kernel reported ${events.length} rule events`);
    t.same(
      events.filter((l) => !/^(add|delete) rule ip fwlb_slb v_v5 /.test(l)),
      [],
      'all in v5’s chain',
    );
    t.same(poolsExcept(s, vip), otherPools, 'no other VIP’s pool changed');
    t.same(rulesExcept(s, 'v_v5'), otherRules, 'no other rule was rewritten (same handles)');
    const pool = JSON.parse(s.nft(['-j', 'list', 'map', 'ip', 'fwlb_slb', 'be_tcp']))
      .nftables.find((x: any) => x.map)
      .map.elem.filter((e: any) => e[0].concat[0] === vip);
    t.equal(pool.length, MEMBERS - 1, 'v5 has one slot fewer');
    t.notOk(
      pool.some((e: any) => e[1].concat[0] === '10.50.5.10'),
      'and the drained member is in none',
    );
  });

  await t.test('a restart against the same kernel sends 0 nft transactions and keeps the state', async (t) => {
    const pools = poolsExcept(s, '');
    await s.stop();
    const before = s.nftRuns().length;
    const sent = s.transactionsMark();
    const t1 = Date.now();
    await s.start();
    await s.adopted(t1);
    const runs = s.nftRuns().slice(before);
    t.same(s.transactionsSince(sent), [], `no transaction (nft ran ${runs.length} times, all reads and checks: ${runs.join('; ')})`);
    t.same(poolsExcept(s, ''), pools, 'every pool as it was, the drained member still out (the state file kept the drain)');
    const v5 = await s.api('GET', '/vips/v5/members');
    t.equal(v5.body.find((m: any) => m.address === '10.50.5.10').state, 'drain');
  });

  await t.test('1,000 GETs run no process', async (t) => {
    const before = s.nftRuns().length;
    const sent = s.transactionsMark();
    const urls = ['/vips/v1', '/vips/v999/members', '/health', '/status', '/vips/v500'];
    let ok = 0;
    for (let i = 0; i < 1000; i++) if ((await s.api('GET', urls[i % urls.length])).status === 200) ok++;
    const all = await s.api('GET', '/vips');
    t.equal(all.body.length, VIPS, 'GET /vips lists every VIP');
    t.equal(ok, 1000, 'all answered');
    t.same(s.nftRuns().slice(before), [], 'nft never ran');
    t.same(s.transactionsSince(sent), [], 'and its session took nothing');
  });
});

t.test('an SLB that starts with no VIP takes its first ones (counter sets declared dynamic)', async (t) => {
  // Found by the bench: the counter sets were made dynamic only when a rule updating them came in the same batch,
  // so on a node started empty every POST /vips failed with "Operation not supported".
  const s = new ScaleSlb(uniquePrefix('se'), { vips: 0, members: 0 });
  t.teardown(() => s.cleanup());
  s.setup();
  const t0 = Date.now();
  await s.start();
  await s.adopted(t0);
  const r = await s.api('POST', '/vips', { id: 'first', address: '10.100.0.1', port: 80, protocol: 'tcp', check: { kind: 'icmp' }, members: [] });
  t.equal(r.status, 201, `a VIP without members: ${JSON.stringify(r.body).slice(0, 200)}`);
  t.equal((await s.api('POST', '/vips/first/members', { address: '10.50.0.10', port: 8080 })).status, 201, 'then a member');
  const u = await s.api('POST', '/vips', {
    id: 'second',
    address: '10.100.0.2',
    port: 53,
    protocol: 'udp',
    check: { kind: 'icmp' },
    members: [{ address: '10.50.0.11', port: 53 }],
  });
  t.equal(u.status, 201, 'and a UDP VIP with a member');
  // A new member joins after `rise` passed checks (default timers: about 2 s).
  const pool = () => JSON.parse(s.nft(['-j', 'list', 'map', 'ip', 'fwlb_slb', 'be_udp'])).nftables.find((x: any) => x.map).map.elem;
  const t1 = Date.now();
  while (!pool() && Date.now() - t1 < 15000) await new Promise((r) => setTimeout(r, 100));
  t.same(
    pool(),
    [[{ concat: ['10.100.0.2', 53, 0] }, { concat: ['10.50.0.11', 53] }]],
    `its pool is in the kernel once the member passed its checks (${Date.now() - t1} ms)`,
  );
});
