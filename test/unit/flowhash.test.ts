// Unit: kernel-identical jhash, canonical keys and the Maglev bucket table (table-driven + fast-check properties).
import { t } from 'tap';
import fc from 'fast-check';
import { bucketOf, buildTable, canonicalKey, distribution, jhash, keyImage, moved, reciprocalScale, PROTO_TCP, PROTO_UDP, PROTO_ICMP } from '@fwlb/flowhash';

// Captured from the kernel (6.18, nft 1.0.6): `udp dport 9 meta mark set jhash ip saddr . th sport . ip daddr .
// th dport . meta l4proto mod 251 seed 0x12345678`, 127.0.0.1:sport -> 127.0.0.1:9, marks read back from conntrack.
const KERNEL_UDP: [number, number][] = [
  [40000, 222], [40001, 2], [40002, 197], [40003, 184], [40004, 195],
  [40005, 133], [40006, 238], [40007, 201], [40008, 163], [40009, 178],
];

t.test('model matches marks the kernel computed', async (t) => {
  for (const [sport, mark] of KERNEL_UDP) {
    const k = { outerAddr: '127.0.0.1', outerPort: sport, innerAddr: '127.0.0.1', innerPort: 9, proto: PROTO_UDP };
    t.equal(bucketOf(k, 0x12345678, 251), mark, `sport ${sport}`);
  }
});

t.test('key image follows nft register layout', async (t) => {
  const img = keyImage({ outerAddr: '198.51.100.11', outerPort: 0x1234, innerAddr: '203.0.113.12', innerPort: 80, proto: PROTO_TCP });
  t.same([...img], [198, 51, 100, 11, 0x12, 0x34, 0, 0, 203, 0, 113, 12, 0, 80, 0, 0, 6, 0, 0, 0]);
  const icmp = keyImage({ outerAddr: '10.0.0.1', outerPort: 0, innerAddr: '10.0.0.2', innerPort: 0, proto: PROTO_ICMP });
  t.equal(icmp.length, 12);
});

t.test('jhash edge lengths and reciprocal scale', async (t) => {
  // Lengths 0, 1, 12, 13 exercise the empty tail, the byte tail, the exact block and the mix loop.
  t.equal(jhash(new Uint8Array(0), 0), (0xdeadbeef) >>> 0, 'empty key returns the initial value');
  const seen = new Set([1, 4, 12, 13, 24, 25].map((n) => jhash(new Uint8Array(n).fill(7), 1)));
  t.equal(seen.size, 6, 'different lengths hash differently');
  t.equal(reciprocalScale(0xffffffff, 251), 250);
  t.equal(reciprocalScale(0, 251), 0);
});

const ip = fc.tuple(fc.integer({ min: 1, max: 254 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 })).map((a) => a.join('.'));
const port = fc.integer({ min: 1, max: 65535 });

t.test('property: both nodes hash a flow to the same bucket', async (t) => {
  fc.assert(
    fc.property(ip, port, ip, port, fc.constantFrom(PROTO_TCP, PROTO_UDP, PROTO_ICMP), fc.nat(), (c, cp, s, sp, proto, seed) => {
      // Outside sees client->server; inside sees the reply server->client.
      const out = canonicalKey('outside', { saddr: c, sport: cp, daddr: s, dport: sp, proto });
      const ins = canonicalKey('inside', { saddr: s, sport: sp, daddr: c, dport: cp, proto });
      return bucketOf(out, seed, 251) === bucketOf(ins, seed, 251);
    }),
  );
  t.pass('symmetric for all sampled flows');
});

t.test('property: the packet-order hash is not symmetric (what fwlb prevents)', async (t) => {
  let differ = 0;
  for (let p = 1000; p < 1100; p++) {
    const a = bucketOf({ outerAddr: '198.51.100.11', outerPort: p, innerAddr: '203.0.113.11', innerPort: 80, proto: PROTO_TCP }, 5, 251);
    const b = bucketOf({ outerAddr: '203.0.113.11', outerPort: 80, innerAddr: '198.51.100.11', innerPort: p, proto: PROTO_TCP }, 5, 251);
    if (a !== b) differ++;
  }
  t.ok(differ > 90, `${differ}/100 flows land in different buckets when each side hashes (src, dst)`);
});

const ids = fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/), { minLength: 2, maxLength: 16 });
const prime = fc.constantFrom(251, 1021, 4093);

t.test('property: deterministic, whatever the order of ids', async (t) => {
  fc.assert(fc.property(ids, prime, (xs, m) => JSON.stringify(buildTable(xs, m).owner) === JSON.stringify(buildTable([...xs].reverse(), m).owner)));
  t.pass();
});

t.test('property: balanced', async (t) => {
  fc.assert(
    fc.property(ids, prime, (xs, m) => {
      const d = Object.values(distribution(buildTable(xs, m)));
      return d.length === xs.length && Math.max(...d) - Math.min(...d) <= 1 && d.reduce((a, b) => a + b, 0) === m;
    }),
  );
  t.pass();
});

t.test('property: removing one of N moves at most 1/N + 0.5% of buckets, and only its own', async (t) => {
  fc.assert(
    fc.property(ids, prime, fc.nat(), (xs, m, pick) => {
      const gone = xs[pick % xs.length];
      const before = buildTable(xs, m);
      const after = buildTable(xs, m, xs.filter((x) => x !== gone));
      const mv = moved(before, after);
      const onlyOwn = before.owner.every((o, b) => o === gone || o === after.owner[b]);
      const d = Object.values(distribution(after));
      return onlyOwn && mv / m <= 1 / xs.length + 0.005 && Math.max(...d) - Math.min(...d) <= 2 && !after.owner.includes(gone);
    }),
  );
  t.pass();
});

t.test('property: a rejoining member gets exactly its buckets back', async (t) => {
  fc.assert(
    fc.property(ids, prime, fc.nat(), (xs, m, pick) => {
      const gone = xs[pick % xs.length];
      return moved(buildTable(xs, m), buildTable(xs, m, xs)) === 0 && JSON.stringify(buildTable(xs, m, xs).owner) === JSON.stringify(buildTable(xs, m).owner) && gone !== undefined;
    }),
  );
  t.pass();
});

t.test('table refuses a non-prime size and handles no live member', async (t) => {
  t.throws(() => buildTable(['a', 'b'], 100), /prime/);
  t.ok(buildTable(['a', 'b'], 7, []).owner.every((o) => o === null));
});
