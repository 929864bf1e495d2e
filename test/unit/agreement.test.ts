// Unit: the layer-2 agreement loop against a fake store (views, lock, epochs with generations), on a fake clock.
import { t } from 'tap';
import { AgreementLoop, AgreementStore, Agreement, hashConfigDigest } from '@fwlb/balancer';
import { decodeEpoch, EpochDoc } from '@fwlb/session-table';

const IDS = ['fw1', 'fw2', 'fw3'];

function fakeStore(node: string) {
  const s = {
    leader: null as string | null,
    views: {} as Record<string, Record<string, boolean>>,
    doc: null as EpochDoc | null,
    counter: 0,
    generation: 'g1',
    published: 0,
    digests: {} as Record<string, string>,
  };
  const store: AgreementStore = {
    lead: async () => {
      s.leader ??= node;
      return s.leader === node;
    },
    healthViews: async () => s.views,
    epoch: async () => s.doc,
    publishEpoch: async (members, live, down, _now, joinAt) => {
      if (s.leader !== node) return null;
      s.published++;
      s.doc = { epoch: ++s.counter, generation: s.generation, members, live, down, by: node, at: 0, ...(joinAt !== undefined ? { joinAt } : {}) };
      return s.doc;
    },
    setHealthView: async (view, _now, digest) => {
      s.views[node] = view;
      if (digest) s.digests[node] = digest;
    },
    configDigests: async () => s.digests,
  };
  return { s, store };
}

const loop = (store: AgreementStore, applied: Agreement[]) =>
  new AgreementLoop({ ids: IDS, store, periodMs: 1000, apply: (a) => applied.push(a), now: () => 0 });

t.test('the leader publishes live and down from the views; every node applies it once', async (t) => {
  const { s, store } = fakeStore('ob');
  const applied: Agreement[] = [];
  const l = loop(store, applied);
  s.views.ib = { fw1: true, fw2: false, fw3: false };
  await l.publish({ fw1: true, fw2: true, fw3: false });
  t.same(applied, [{ epoch: 1, live: ['fw1'], down: ['fw3'] }], 'fw2: the nodes disagree, so not live and not down; fw3: both see it down');
  await l.step();
  t.equal(s.published, 1, 'nothing changed: no new epoch');
  t.equal(applied.length, 1, 'and nothing applied twice');
});

t.test('an epoch that leaves no firewall live is refused with an alarm; the last one stays', async (t) => {
  const { s, store } = fakeStore('ob');
  const applied: Agreement[] = [];
  const l = loop(store, applied);
  await l.publish({ fw1: true, fw2: true, fw3: true });
  t.equal(applied.length, 1);
  s.doc = { ...s.doc!, epoch: 99, live: [], down: IDS };
  await l.applyEpoch();
  t.equal(applied.length, 1, 'not applied');
  t.match(l.alarm, /epoch 99 by ob would leave no firewall live; epoch 1 stays in force/);
  s.doc = { ...s.doc!, epoch: 100, live: ['fw1', 'fw2', 'fw9'] };
  await l.applyEpoch();
  t.same(applied[1], { epoch: 100, live: ['fw1', 'fw2'], down: ['fw1', 'fw2', 'fw3'] }, 'a later good epoch is applied; unknown ids are dropped');
  t.equal(l.alarm, null, 'and the alarm clears');
});

t.test('after Redis lost its data, a new generation is applied although its number is smaller', async (t) => {
  const { s, store } = fakeStore('ob');
  const applied: Agreement[] = [];
  const l = loop(store, applied);
  await l.publish({ fw1: true, fw2: true, fw3: true });
  s.doc = { ...s.doc!, epoch: 50 };
  await l.applyEpoch();
  t.equal(l.appliedEpoch, 50);
  // FLUSHALL: no views, no epoch, no lock.
  s.views = {};
  s.doc = null;
  s.leader = null;
  s.counter = 0;
  s.generation = 'g2';
  await l.step();
  t.equal(s.published, 1, 'no view at all: the leader publishes nothing (it would agree on nothing)');
  await l.publish({ fw1: true, fw2: false, fw3: true });
  t.equal(s.doc!.epoch, 1);
  t.same(applied.at(-1), { epoch: 1, live: ['fw1', 'fw3'], down: ['fw2'] }, 'epoch 1 of the new generation applied after epoch 50 of the old');
});

t.test('an epoch the failover lost: the older one is ignored, the next one numbered as the lost one is applied', async (t) => {
  const { s, store } = fakeStore('ib');
  s.leader = 'ob';
  const doc = (epoch: number, at: number, live: string[]) => ({ epoch, generation: 'g1', members: IDS, live, down: [], by: 'ob', at });
  const applied: Agreement[] = [];
  const l = loop(store, applied);
  s.doc = doc(5, 1000, ['fw1', 'fw3']);
  await l.applyEpoch();
  // The primary dies before its replica held epoch 5: the promoted replica holds epoch 4.
  s.doc = doc(4, 900, IDS);
  await l.applyEpoch();
  t.equal(applied.length, 1, 'the older epoch is not applied');
  await l.applyEpoch();
  // The leader publishes again; the counter it reads is 4, so the new epoch is numbered 5 too.
  s.doc = doc(5, 2000, ['fw1', 'fw2', 'fw3']);
  await l.applyEpoch();
  t.same(applied.at(-1), { epoch: 5, live: IDS, down: [] }, 'a new document under the applied number is applied');
  await l.applyEpoch();
  t.equal(applied.length, 2, 'and once');
});

t.test('a node that is not the leader only applies', async (t) => {
  const { s, store } = fakeStore('ib');
  s.leader = 'ob';
  s.doc = { epoch: 3, generation: 'g1', members: IDS, live: IDS, down: [], by: 'ob', at: 0 };
  const applied: Agreement[] = [];
  const l = loop(store, applied);
  await l.publish({ fw1: false, fw2: true, fw3: true });
  t.equal(s.published, 0);
  t.same(applied, [{ epoch: 3, live: IDS, down: [] }]);
  t.same(s.views.ib, { fw1: false, fw2: true, fw3: true }, 'its view is published for the leader');
});

t.test('four nodes: one node that sees a firewall down vetoes it for all; a node that lost every link abstains', async (t) => {
  const { s, store } = fakeStore('ob1');
  const applied: Agreement[] = [];
  const l = loop(store, applied);
  const up = { fw1: true, fw2: true, fw3: true };
  Object.assign(s.views, { ob2: up, ib1: up, ib2: { fw1: true, fw2: false, fw3: true } });
  await l.publish(up);
  t.same(applied.at(-1), { epoch: 1, live: ['fw1', 'fw3'], down: [] }, 'ib2 alone sees fw2 down: fw2 takes no new sessions, and is not gone');
  // ib2 lost every link: it publishes an empty view, which counts for nothing.
  s.views.ib2 = {};
  await l.step();
  t.same(
    applied.at(-1),
    { epoch: 2, live: ['fw1', 'fw2', 'fw3'], down: [], joinAt: 2000 },
    'an empty view is an abstention, not a veto (fw2 joins at the whole second 2 s ahead)',
  );
  for (const n of ['ob2', 'ib1', 'ib2']) s.views[n] = {};
  await l.publish({});
  t.equal(applied.length, 2, 'only abstentions: nothing to agree on, the last epoch stays');
});

t.test('nodes compare their hash config digests: a node with another seed or other firewalls raises an alarm', async (t) => {
  const base = {
    hash: { seed: 42, buckets: 251, order: 'canonical' },
    firewalls: [{ id: 'fw1' }, { id: 'fw2', syncGroup: 'g1' }, { id: 'fw3', syncGroup: 'g1' }],
  };
  const d = hashConfigDigest(base);
  t.match(d, /^[0-9a-f]{16}$/);
  t.equal(hashConfigDigest({ ...base, firewalls: base.firewalls.map((f) => ({ ...f })) }), d, 'the same config, the same digest');
  for (const [what, other] of [
    ['seed', { ...base, hash: { ...base.hash, seed: 43 } }],
    ['buckets', { ...base, hash: { ...base.hash, buckets: 257 } }],
    ['firewall order', { ...base, firewalls: [base.firewalls[1], base.firewalls[0], base.firewalls[2]] }],
    ['sync group', { ...base, firewalls: [base.firewalls[0], { id: 'fw2' }, { id: 'fw3' }] }],
  ] as const)
    t.not(hashConfigDigest(other), d, `another ${what}, another digest`);
  const { s, store } = fakeStore('ob1');
  const l = new AgreementLoop({ ids: IDS, store, periodMs: 1000, apply: () => undefined, now: () => 0, digest: d });
  Object.assign(s.digests, { ob2: d, ib1: d });
  await l.publish({ fw1: true, fw2: true, fw3: true });
  t.equal(l.configAlarm, null, 'every node agrees: no alarm');
  s.digests.ib2 = hashConfigDigest({ ...base, hash: { ...base.hash, seed: 43 } });
  await l.publish();
  t.match(l.configAlarm, new RegExp(`hash config differs: this node ${d}, ib2 \\(${s.digests.ib2}\\)`));
  s.digests.ib2 = d;
  await l.publish();
  t.equal(l.configAlarm, null, 'fixed: the alarm clears');
});

t.test('a firewall that joins does so at one whole second 2 to 3 s ahead on every node; one that leaves, at once; a pending join keeps its time', async (t) => {
  const { s, store } = fakeStore('ob');
  const applied: Agreement[] = [];
  let now = 10_300;
  const l = new AgreementLoop({ ids: IDS, store, periodMs: 1000, apply: (a) => applied.push(a), now: () => now });
  await l.publish({ fw1: true, fw2: false, fw3: true });
  t.same(applied.at(-1), { epoch: 1, live: ['fw1', 'fw3'], down: ['fw2'] }, 'the first epoch applies at once');
  await l.publish({ fw1: true, fw2: true, fw3: true });
  t.same(applied.at(-1), { epoch: 2, live: ['fw1', 'fw2', 'fw3'], down: [], joinAt: 13_000 }, 'fw2 joins at the next whole second at least 2 s ahead');
  now = 10_500;
  await l.publish({ fw1: true, fw2: true, fw3: false });
  t.same(applied.at(-1), { epoch: 3, live: ['fw1', 'fw2'], down: ['fw3'], joinAt: 13_000 }, 'fw3 leaves at once; fw2 still joins at its time');
  now = 12_500;
  s.views.ib = { fw1: true, fw2: true, fw3: true };
  await l.publish({ fw1: true, fw2: true, fw3: true });
  t.same(applied.at(-1), { epoch: 4, live: ['fw1', 'fw2', 'fw3'], down: [], joinAt: 15_000 });
});

t.test('an epoch document read back from Redis: joinAt is a whole number of ms or absent; anything else refuses the document', async (t) => {
  const base = { epoch: 3, generation: 'g', members: IDS, live: IDS, down: [], by: 'ob', at: 5 };
  t.same(decodeEpoch(JSON.stringify({ ...base, joinAt: 7000 }))?.joinAt, 7000);
  t.equal(decodeEpoch(JSON.stringify(base))?.joinAt, undefined);
  for (const joinAt of [-1, 1.5, '7000', null]) t.equal(decodeEpoch(JSON.stringify({ ...base, joinAt })), null, `joinAt ${JSON.stringify(joinAt)}`);
});

t.test('a join that moves many sessions takes effect later by the lead the leader estimates; a failing estimate holds nothing up', async (t) => {
  const { store } = fakeStore('ob');
  const applied: Agreement[] = [];
  const asked: string[][] = [];
  let lead: () => Promise<number> = async () => 4_700;
  const l = new AgreementLoop({
    ids: IDS,
    store,
    periodMs: 1000,
    apply: (a) => applied.push(a),
    now: () => 10_300,
    joinLead: (joining) => (asked.push(joining), lead()),
  });
  await l.publish({ fw1: true, fw2: false, fw3: true });
  t.same(asked, [], 'no join, no estimate (the first epoch, and a firewall leaving, apply at once)');
  await l.publish({ fw1: true, fw2: true, fw3: true });
  t.same(asked, [['fw2']], 'asked for the firewall that joins');
  t.same(applied.at(-1), { epoch: 2, live: ['fw1', 'fw2', 'fw3'], down: [], joinAt: 17_000 }, 'the whole second at least 2 s plus the lead ahead');
  await l.publish({ fw1: true, fw2: false, fw3: true });
  lead = () => Promise.reject(new Error('Redis away'));
  await l.publish({ fw1: true, fw2: true, fw3: true });
  t.same(applied.at(-1), { epoch: 4, live: ['fw1', 'fw2', 'fw3'], down: [], joinAt: 13_000 }, 'the estimate failed: the usual lead');
});
