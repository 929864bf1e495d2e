// Unit: the element changes that put moved sessions' starts in a node's `conn` sets (one firewall's set each, keyed as
// the side's packets carry the tuple), and which of a node's own entries such a move replaces.
import { t } from 'tap';
import { validateBalancerConfig } from '@fwlb/config';
import { keyImage } from '@fwlb/flowhash';
import { connRecordOps, staleness } from '@fwlb/balancer';

const fws = (v6: boolean) =>
  [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.17.${k}.2`, interface: `fw${k}`, ...(v6 ? { nextHop6: `2001:db8:17:${k}::2` } : {}) }));
const config = (role: 'outside' | 'inside', v6 = false) =>
  validateBalancerConfig({ role, sideInterface: 'side0', hash: { seed: 1, buckets: 7 }, firewalls: fws(v6), sessionTable: { url: 'redis://127.0.0.1:6379' } });
const tcp = { outerAddr: '198.51.100.7', outerPort: 40000, innerAddr: '203.0.113.10', innerPort: 443, proto: 6, firewall: 'fw2' };
const hex = (k: Uint8Array) => Buffer.from(k).toString('hex');
/** [verb, set, keys in hex] of each change. */
const shape = (ops: ReturnType<typeof connRecordOps>) => ops.map((o) => [o.verb, o.name, o.elements.map((e) => hex(e.key))]);

t.test('outside: the tuple as the client sends it, into its firewall set and out of the others (added first)', async (t) => {
  const key = hex(keyImage(tcp));
  t.same(shape(connRecordOps(config('outside'), [tcp])), [
    ['add', 'conn0', [key]],
    ['add', 'conn2', [key]],
    ['delete', 'conn0', [key]],
    ['delete', 'conn2', [key]],
    ['add', 'conn1', [key]],
  ]);
  t.ok(
    connRecordOps(config('outside'), [tcp]).every((o) => o.elements.every((e) => e.value === undefined)),
    'set elements carry no value',
  );
});

t.test('inside: the tuple as the server sends it', async (t) => {
  const swapped = { ...tcp, outerAddr: tcp.innerAddr, outerPort: tcp.innerPort, innerAddr: tcp.outerAddr, innerPort: tcp.outerPort };
  t.same(shape(connRecordOps(config('inside'), [tcp])).at(-1), ['add', 'conn1', [hex(keyImage(swapped))]]);
  t.not(hex(keyImage(swapped)), hex(keyImage(tcp)));
});

t.test('IPv6 sessions go to the _v6 sets, only where the node steers IPv6; sessions of a set share one change', async (t) => {
  const v6 = { ...tcp, outerAddr: '2001:db8:c::7', innerAddr: '2001:db8:5::10', firewall: 'fw1' };
  const other = { ...tcp, outerPort: 40001 };
  const ops = connRecordOps(config('outside', true), [tcp, v6, other]);
  t.same(
    ops.filter((o) => o.verb === 'add').map((o) => [o.name, o.elements.length]),
    [
      ['conn0', 2],
      ['conn2', 2],
      ['conn1_v6', 1],
      ['conn2_v6', 1],
      ['conn1', 2],
      ['conn0_v6', 1],
    ],
  );
  t.same(connRecordOps(config('outside'), [v6]), [], 'an IPv4-only node has no IPv6 sets');
});

t.test('nothing for UDP (no conn records) or a firewall that is not configured', async (t) => {
  t.same(connRecordOps(config('outside'), [{ ...tcp, proto: 17 }]), []);
  t.same(connRecordOps(config('outside'), [{ ...tcp, firewall: 'fw9' }]), []);
});

t.test("a node's entry on a moved record's tuple: an earlier connection's goes, a later one's stays", async (t) => {
  const firewallOf = (mark: number) => ({ 0x10000: 'fw1', 0x10001: 'fw2' })[mark];
  const rec = { firewall: 'fw2', firstSeen: 1_000_000 };
  t.equal(staleness(null, rec, firewallOf), 'same', 'no entry: only the start record is corrected');
  t.equal(staleness({ mark: 0x10001, start: 900_000 }, rec, firewallOf), 'same', "one on the record's firewall stays");
  t.equal(staleness({ mark: 0, start: 900_000 }, rec, firewallOf), 'same', 'one without a firewall mark stays');
  t.equal(staleness({ mark: 0x10000, start: 999_000 }, rec, firewallOf), 'earlier', 'one on another firewall, started before the record');
  t.equal(staleness({ mark: 0x10000 }, rec, firewallOf), 'earlier', 'one without a start time counts as earlier');
  t.equal(staleness({ mark: 0x10000, start: 1_000_001 }, rec, firewallOf), 'later', 'one started after the record was first seen is a later connection');
});
