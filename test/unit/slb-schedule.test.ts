// Unit: the SLB schedulers: weighted round robin, and the weighted source-hash table's minimal moves (property tests).
import { t } from 'tap';
import fc from 'fast-check';
import { roundRobinSlots, sourceHashSize, sourceHashSlots } from '@fwlb/slb';

const count = (slots: string[]) => slots.reduce<Record<string, number>>((a, k) => ((a[k] = (a[k] ?? 0) + 1), a), {});

t.test('round robin gives each member exactly its weight per cycle, interleaved', async (t) => {
  const slots = roundRobinSlots([
    { key: 'a', weight: 3 },
    { key: 'b', weight: 1 },
    { key: 'c', weight: 2 },
  ]);
  t.same(count(slots), { a: 3, b: 1, c: 2 });
  t.equal(slots.length, 6);
  t.not(slots.slice(0, 3).join(), 'a,a,a', 'not bunched');
  t.same(
    roundRobinSlots([
      { key: 'a', weight: 4 },
      { key: 'b', weight: 2 },
    ]),
    ['a', 'b', 'a'],
    'weights reduced by their gcd',
  );
  t.same(roundRobinSlots([]), []);
});

t.test('source hash: shares follow weights, and a member going down moves only its own slots', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 2, maxLength: 6 }), fc.nat(), async (weights, pick) => {
      const ms = weights.map((w, i) => ({ key: `10.0.0.${i + 1}:80`, weight: w }));
      const all = new Set(ms.map((m) => m.key));
      const size = sourceHashSize(ms);
      const full = sourceHashSlots(ms, all);
      if (full.length !== size) return false;
      const total = weights.reduce((a, b) => a + b, 0);
      const c = count(full);
      // Each member's share is within 5 points of its weight share.
      for (const m of ms) if (Math.abs((c[m.key] ?? 0) / size - m.weight / total) > 0.05) return false;
      const gone = ms[pick % ms.length].key;
      const less = sourceHashSlots(ms, new Set([...all].filter((k) => k !== gone)));
      for (let i = 0; i < size; i++) {
        if (full[i] !== gone && less[i] !== full[i]) return false; // someone else's slot moved
        if (less[i] === gone) return false;
      }
      return true;
    }),
    { numRuns: 200 },
  );
  t.pass('held for 200 random pools');
  t.same(sourceHashSlots([{ key: 'a', weight: 1 }], new Set()), [], 'no live member: no slots');
});

t.test('parseSlbListing: the last known health and the dispatch read back from a terse listing', async (t) => {
  const { parseSlbListing, poolTargets } = await import('@fwlb/slb');
  t.equal(parseSlbListing(null, []), null, 'no table: nothing known');
  t.equal(parseSlbListing({ nftables: [{ metainfo: {} }] }, []), null);
  const terse = {
    nftables: [
      { table: { family: 'ip', name: 'fwlb_slb', handle: 7 } },
      { set: { name: 'vip_new', type: ['ipv4_addr', 'inet_proto', 'inet_service'] } },
      { map: { name: 'vips', type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'verdict' } },
      { counter: { name: 'vip_old', packets: 3 } },
      { chain: { name: 'v_web' } },
      { chain: { name: 'v_empty' } },
      {
        rule: {
          chain: 'v_web',
          comment: 'fwlb:abc',
          expr: [{ set: { op: 'update', set: '@vip_new' } }, { dnat: { family: 'ip', addr: { map: { data: '@be_tcp' } } } }],
        },
      },
      { rule: { chain: 'v_empty', comment: 'fwlb:def', expr: [{ set: { op: 'update', set: '@vip_new' } }] } },
    ],
  };
  const dispatch = { nftables: [{ map: { name: 'vips', elem: [[{ concat: ['203.0.113.100', 'tcp', 80] }, { jump: { target: 'v_web' } }]] } }] };
  const slot = (s: number, m: string) => [{ concat: ['203.0.113.100', 80, s] }, { concat: [m, 8080] }];
  const pools = { nftables: [{ map: { name: 'be_tcp', elem: [slot(2, '10.20.0.11'), slot(0, '10.20.0.11'), slot(1, '10.20.0.12')] } }] };
  const st = parseSlbListing(terse, [dispatch, pools, null])!;
  t.equal(st.handle, 7);
  t.same(poolTargets(st, ['203.0.113.100', 'tcp', 80]), ['10.20.0.11:8080', '10.20.0.12:8080', '10.20.0.11:8080'], 'members in the pool map, in slot order');
  t.same(poolTargets(st, ['203.0.113.100', 'udp', 80]), [], 'the same address and port in UDP is another pool');
  t.same(st.chains.get('v_web')!.digests, ['fwlb:abc']);
  t.same(st.chains.get('v_empty')!.digests, ['fwlb:def']);
  t.same([...st.dispatch], [['["203.0.113.100","tcp",80]', 'v_web']]);
  t.same(st.counters, ['vip_old'], 'counter objects of an earlier version are listed (reconcile removes them)');
  t.equal(st.sets.get('vips'), JSON.stringify([['ipv4_addr', 'inet_proto', 'inet_service'], 'verdict']));
});
