// Unit: what a balancer's kernel should hold for a membership snapshot: the buckets a change would move, the table
// of a switch still to come, and the pins of both tables.
import { t } from 'tap';
import { validateBalancerConfig } from '@fwlb/config';
import { bucketTable, desiredPins, Membership, movedBuckets, PinSource, renderInput, switchTable } from '@fwlb/balancer';

const config = validateBalancerConfig({
  role: 'inside',
  sideInterface: 'srv0',
  firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.17.${k}.2`, interface: `fw${k}` })),
  hash: { seed: 42 },
});
const snap = new Membership(config).snapshot();
const input = renderInput(config, snap);
const table = bucketTable(input);

t.test('the buckets a change would move are exactly those whose owner differs', async (t) => {
  const moved = movedBuckets(config, snap, ['fw1', 'fw3']);
  const without = bucketTable({ ...input, live: ['fw1', 'fw3'] });
  t.same(
    moved,
    table.owner.flatMap((o, b) => (o !== without.owner[b] ? [b] : [])),
  );
  t.ok(moved.length > 0);
  t.ok(
    moved.every((b) => table.owner[b] === 'fw2'),
    'only fw2 buckets move when fw2 leaves (the Maglev table keeps the rest)',
  );
  t.same(movedBuckets(config, snap, snap.live), [], 'the same live set moves nothing');
});

t.test('a switch: the later table, or nothing when it changes no owner or leaves no firewall', async (t) => {
  const later = switchTable(input, table, ['fw1', 'fw3']);
  t.ok(later);
  t.notOk(later!.owner.includes('fw2'), 'fw2 owns nothing after it left');
  t.equal(switchTable(input, table, ['fw1', 'fw2', 'fw3']), null, 'same owners: no switch');
  t.equal(switchTable(input, table, []), null, 'no firewall after it: no switch (the node drops new flows)');
  const none = bucketTable({ ...input, live: [] });
  t.equal(switchTable({ ...input, live: [] }, none, ['fw1']), null, 'no firewall before it: no switch');
});

t.test('pins of both tables until a switch: the current table wins a session both pin', async (t) => {
  const markOf = new Map([
    ['fw1', 1],
    ['fw2', 2],
    ['fw3', 3],
  ]);
  const calls: string[][] = [];
  const source: PinSource = {
    pins: (tb) => {
      const owners = [...new Set(tb.owner.filter((o): o is string => o !== null))].sort();
      calls.push(owners);
      // s1 is pinned under both tables (to different marks), s2 only under the later one
      return owners.includes('fw2')
        ? new Map([['s1', 1]])
        : new Map([
            ['s1', 3],
            ['s2', 3],
          ]);
    },
  };
  const later = switchTable(input, table, ['fw1', 'fw3'])!;
  const pins = desiredPins(source, input, markOf, [], table, { table: later, live: ['fw1', 'fw3'] });
  t.same(
    calls,
    [
      ['fw1', 'fw2', 'fw3'],
      ['fw1', 'fw3'],
    ],
    'asked for the current table, then the later one',
  );
  t.same([...pins].sort(), [
    ['s1', 1],
    ['s2', 3],
  ]);
  calls.length = 0;
  t.same([...desiredPins(source, input, markOf, [], table, null)], [['s1', 1]], 'no switch: the current table only');
  t.equal(calls.length, 1);
});
