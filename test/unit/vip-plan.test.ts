// Unit: the SLB's pure planner. What an API edit makes of the VIP list, and the plan of a change: which VIPs it
// touches, the health their members start with, which need a socket check, which addresses move, and the refusals.
import { t } from 'tap';
import { ConfigError, validateVip } from '@fwlb/config';
import { addMember, createVip, deleteMember, deleteVip, healthKey, NotFoundError, patchMember, planChange, replaceVip } from '@fwlb/slb';

const body = (id: string, address: string, members: string[], extra: object = {}) => ({
  id,
  address,
  port: 80,
  protocol: 'tcp',
  members: members.map((m) => ({ address: m, port: 8080 })),
  ...extra,
});
const a = validateVip(body('a', '203.0.113.10', ['10.0.0.1', '10.0.0.2']), []);
const b = validateVip(body('b', '203.0.113.11', ['10.0.0.3']), []);
const opts = (up: Set<string> = new Set(), haproxy = true) => ({ budget: 6000, up: (k: string) => up.has(k), known: (k: string) => up.has(k), haproxy });

t.test('edits: create, replace, delete, and members by key in any spelling', async (t) => {
  const c = createVip(body('c', '203.0.113.12', ['10.0.0.9']))([a, b]);
  t.same(
    c.next.map((v) => v.id),
    ['a', 'b', 'c'],
  );
  t.equal(c.vip?.id, 'c');
  t.throws(() => createVip(body('c', '203.0.113.10', ['10.0.0.9']))([a]), ConfigError, 'an overlap is refused');
  t.throws(() => replaceVip('a', body('x', '203.0.113.10', []))([a]), /must be "a" as in the path/);
  t.throws(() => deleteVip('zz')([a]), NotFoundError);
  const added = addMember('a', { address: '10.0.0.7', port: 8080 })([a, b]);
  t.same(
    added.vip?.members.map((m) => m.address),
    ['10.0.0.1', '10.0.0.2', '10.0.0.7'],
  );
  t.equal(added.next[1], b, 'the other VIP is the same object: nothing else is rendered');
  t.equal(patchMember('a', '10.0.0.2:8080', { state: 'drain' })([a]).vip?.members[1].state, 'drain');
  t.same(
    deleteMember('a', '10.0.0.1:8080')([a]).vip?.members.map((m) => m.address),
    ['10.0.0.2'],
  );
  const e = t.throws(() => addMember('a', { address: '127.0.0.1', port: 8080 })([a])) as ConfigError;
  t.match(e.problems[0].field, /^\/address$/, 'a member field is named as the request sent it');
  t.throws(() => deleteMember('a', '10.9.9.9:1')([a]), NotFoundError);
});

t.test('the plan: what a change touches and what its new members start as', async (t) => {
  const next = addMember('a', { address: '10.0.0.7', port: 8080 })([a, b]).next;
  const up = new Set([healthKey(a, a.members[0])]);
  const p = planChange([a, b], next, opts(up));
  t.same([...p.changed], ['a']);
  const na = p.nextById.get('a')!;
  t.equal(p.initial.get(healthKey(na, na.members[0])), true, 'a member that was up stays up');
  t.equal(p.initial.get(healthKey(na, na.members[1])), false, 'a member that was down stays down');
  t.equal(p.initial.get(healthKey(na, na.members[2])), false, 'a new member starts down');
  t.same(p.newListeners, [], 'a member change needs no socket check');
  t.same([...p.touchedAddresses], [], 'a member change touches no address');
  const moved = replaceVip('b', body('b', '203.0.113.99', ['10.0.0.3']))([a, b]).next;
  const q = planChange([a, b], moved, opts());
  t.same(
    q.newListeners.map((v) => v.id),
    ['b'],
    'a new address needs the socket check',
  );
  t.same([...q.touchedAddresses].sort(), ['203.0.113.11', '203.0.113.99'], 'the old and the new address');
});

t.test('the plan refuses: L7 without HAProxy, over the check budget', async (t) => {
  const l7 = createVip(body('web', '203.0.113.20', [], { mode: 'http', pools: [{ name: 'www' }], defaultPool: 'www' }))([a]).next;
  t.throws(() => planChange([a], l7, opts(new Set(), false)), /HAProxy is not available on this node/);
  t.doesNotThrow(() => planChange([a], l7, opts()));
  const big = createVip({
    ...body('big', '203.0.113.30', []),
    members: Array.from({ length: 200 }, (_, i) => ({ address: `10.1.${i >> 7}.${(i & 127) + 1}`, port: 80 })),
    timers: { interval: 100, response: 50, retries: 2, deadInterval: 100, rise: 1 },
  })([a]).next;
  t.throws(() => planChange([a], big, { ...opts(), budget: 1000 }), /\/members: 2,002 health checks\/s would exceed this node's budget of 1,000/);
  t.doesNotThrow(() => planChange(big, [a], { ...opts(), budget: 1000 }), 'taking the load away passes over the budget');
});
