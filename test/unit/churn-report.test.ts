// Unit: the soak's sorting of failed connections by the limits docs/limits.md states (test/helpers/churn-report.ts).
import { t } from 'tap';
import { bucketOf, buildGroupedTable, canonicalKey, PROTO_TCP } from '@fwlb/flowhash';
import type { ChurnResult, Lab } from '@fwlb/lab';
import { ECHO_PORT } from '@fwlb/lab';
import { explainFailures } from '../helpers/churn-report';

const ids = ['fw1', 'fw2', 'fw3'];
const hash = { seed: 0x5eed1234, buckets: 251 };
const vip = '203.0.113.100';
const client = '198.51.100.11';
const lab = { t: { vip, balancers: { ob1: { role: 'outside', firewalls: ids.map((id) => ({ id })), hash } } } } as unknown as Lab;
const all = buildGroupedTable(ids, hash.buckets, ids, []);
const noFw2 = buildGroupedTable(ids, hash.buckets, ['fw1', 'fw3'], []);
const movedBy = (port: number) => {
  const b = bucketOf(canonicalKey('outside', { saddr: client, sport: port, daddr: vip, dport: ECHO_PORT, proto: PROTO_TCP }), hash.seed, hash.buckets);
  return all.owner[b] !== noFw2.owner[b];
};
const ports = Array.from({ length: 2000 }, (_, i) => 40000 + i);
const moving = ports.find(movedBy)!;
const staying = ports.find((p) => !movedBy(p))!;
const S = 1_800_000_000_000;

function result(failed: [number, number][], events: { at: number; what: string }[] = []): ChurnResult {
  return {
    failedAt: failed.map(([at]) => at),
    failedFlows: failed.map(([, p]) => `${client}:${p}`),
    switches: [S],
    events,
  } as unknown as ChurnResult;
}

t.test('a connection that started just before a switch second, in a bucket that moved, is a handshake across it', async (t) => {
  const [f] = explainFailures(lab, result([[S - 3, moving]]), 'fw2');
  t.match(f.why, /across the switch second, started 3 ms before it/);
});

t.test('not when its bucket stayed, nor when it started well before or after the second', async (t) => {
  const failed = explainFailures(
    lab,
    result([
      [S - 3, staying],
      [S - 1000, moving],
      [S + 500, moving],
    ]),
    'fw2',
  );
  t.same(
    failed.map((f) => f.why),
    [null, null, null],
  );
});

t.test('a controller stopped across the second explains failures until a second after it answers again', async (t) => {
  const events = [
    { at: S - 2000, what: 'ob1 stopped' },
    { at: S + 3000, what: 'ob1 answers' },
  ];
  const failed = explainFailures(
    lab,
    result(
      [
        [S + 2500, staying],
        [S + 3900, staying],
        [S + 4500, staying],
      ],
      events,
    ),
    'fw2',
  );
  t.match(failed[0].why, /ob1's controller down across the switch second \(5000 ms away\)/);
  t.match(failed[1].why, /ob1's controller down/);
  t.equal(failed[2].why, null, 'not once it has been back a while');
});

t.test('a controller whose stop began before the second is away from the start of its stop', async (t) => {
  // The stop closes the API first: the node refuses a change from then on, and its kernel keeps what it had.
  const events = [
    { at: S - 1200, what: 'ob1 stopping' },
    { at: S + 400, what: 'ob1 stopped' },
    { at: S + 2000, what: 'ob1 answers' },
  ];
  const [f] = explainFailures(lab, result([[S + 450, staying]], events), 'fw2');
  t.match(f.why, /ob1's controller down across the switch second \(3200 ms away\)/);
  const later = [
    { at: S + 100, what: 'ob1 stopping' },
    { at: S + 400, what: 'ob1 stopped' },
    { at: S + 2000, what: 'ob1 answers' },
  ];
  t.equal(explainFailures(lab, result([[S + 450, staying]], later), 'fw2')[0].why, null, 'a stop that began after the second explains nothing');
});

t.test('a controller that was back before the second explains nothing', async (t) => {
  const events = [
    { at: S - 3000, what: 'ob1 stopped' },
    { at: S - 1000, what: 'ob1 answers' },
  ];
  const [f] = explainFailures(lab, result([[S + 200, staying]], events), 'fw2');
  t.equal(f.why, null);
});
