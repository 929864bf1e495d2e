// Unit: the SLB schedulers: weighted round robin, and the weighted source-hash table's minimal moves (property tests).
import { t } from 'tap';
import fc from 'fast-check';
import { roundRobinSlots, sourceHashSize, sourceHashSlots } from '@fwlb/slb';

const count = (slots: string[]) => slots.reduce<Record<string, number>>((a, k) => ((a[k] = (a[k] ?? 0) + 1), a), {});

t.test('round robin gives each member exactly its weight per cycle, interleaved', async (t) => {
  const slots = roundRobinSlots([{ key: 'a', weight: 3 }, { key: 'b', weight: 1 }, { key: 'c', weight: 2 }]);
  t.same(count(slots), { a: 3, b: 1, c: 2 });
  t.equal(slots.length, 6);
  t.not(slots.slice(0, 3).join(), 'a,a,a', 'not bunched');
  t.same(roundRobinSlots([{ key: 'a', weight: 4 }, { key: 'b', weight: 2 }]), ['a', 'b', 'a'], 'weights reduced by their gcd');
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

t.test('kernelMembers: the last known health read back from a table listing', async (t) => {
  const { kernelMembers } = await import('@fwlb/slb');
  t.equal(kernelMembers(null), null, 'no table: nothing known');
  t.equal(kernelMembers({ nftables: [{ metainfo: {} }] }), null);
  const listing = {
    nftables: [
      { table: { family: 'ip', name: 'fwlb_slb', handle: 1 } },
      { counter: { name: 'vip_web', packets: 3 } },
      { counter: { name: 'vip_empty', packets: 0 } },
      { counter: { name: 'm_web_x', packets: 0 } },
      {
        rule: {
          chain: 'dnat',
          expr: [
            { counter: 'vip_web' },
            { dnat: { family: 'ip', addr: { map: { key: { numgen: { mode: 'inc', mod: 3 } }, data: { set: [[0, { concat: ['10.20.0.11', 8080] }], [1, { concat: ['10.20.0.12', 8080] }], [2, { concat: ['10.20.0.11', 8080] }]] } } } } },
          ],
        },
      },
    ],
  };
  const m = kernelMembers(listing)!;
  t.same([...m.get('vip_web')!].sort(), ['10.20.0.11:8080', '10.20.0.12:8080'], 'members in the map');
  t.same([...m.get('vip_empty')!], [], 'a VIP with its counter but no DNAT rule had no live member');
  t.notOk(m.has('m_web_x'), 'member counters are not VIPs');
});
