// Unit: kernel-identical jhash, canonical keys and the Maglev bucket table (table-driven + fast-check properties).
import { t } from 'tap';
import fc from 'fast-check';
import {
  bucketMoves,
  bucketOf,
  canonicalAddress,
  canonicalOrNull,
  familyOf,
  formatAddress,
  hostPort,
  parseAddress,
  splitHostPort,
  buildGroupedTable,
  buildJoinedTable,
  buildTable,
  syncGroupRescue,
  canonicalKey,
  distribution,
  jhash,
  keyImage,
  moved,
  reciprocalScale,
  PROTO_TCP,
  PROTO_UDP,
  PROTO_ICMP,
} from '@fwlb/flowhash';

// Captured from the kernel (6.18, nft 1.0.6): `udp dport 9 meta mark set jhash ip saddr . th sport . ip daddr .
// th dport . meta l4proto mod 251 seed 0x12345678`, 127.0.0.1:sport -> 127.0.0.1:9, marks read back from conntrack.
const KERNEL_UDP: [number, number][] = [
  [40000, 222],
  [40001, 2],
  [40002, 197],
  [40003, 184],
  [40004, 195],
  [40005, 133],
  [40006, 238],
  [40007, 201],
  [40008, 163],
  [40009, 178],
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
  t.equal(jhash(new Uint8Array(0), 0), 0xdeadbeef >>> 0, 'empty key returns the initial value');
  const seen = new Set([1, 4, 12, 13, 24, 25].map((n) => jhash(new Uint8Array(n).fill(7), 1)));
  t.equal(seen.size, 6, 'different lengths hash differently');
  t.equal(reciprocalScale(0xffffffff, 251), 250);
  t.equal(reciprocalScale(0, 251), 0);
});

const ip = fc
  .tuple(fc.integer({ min: 1, max: 254 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 }))
  .map((a) => a.join('.'));
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
      const after = buildTable(
        xs,
        m,
        xs.filter((x) => x !== gone),
      );
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
      return (
        moved(buildTable(xs, m), buildTable(xs, m, xs)) === 0 &&
        JSON.stringify(buildTable(xs, m, xs).owner) === JSON.stringify(buildTable(xs, m).owner) &&
        gone !== undefined
      );
    }),
  );
  t.pass();
});

t.test('table refuses a non-prime size and handles no live member', async (t) => {
  t.throws(() => buildTable(['a', 'b'], 100), /prime/);
  t.ok(buildTable(['a', 'b'], 7, []).owner.every((o) => o === null));
});

// The balancer's table: members joined in config order.
t.test('property: joined table balanced, and removing one of N (anywhere in the order) moves only its own', async (t) => {
  fc.assert(
    fc.property(ids, prime, fc.nat(), (xs, m, pick) => {
      const full = buildJoinedTable(xs, m);
      const d = Object.values(distribution(full));
      const balanced = d.length === xs.length && Math.max(...d) - Math.min(...d) <= 1 && d.reduce((a, b) => a + b, 0) === m;
      const gone = xs[pick % xs.length];
      const after = buildJoinedTable(
        xs,
        m,
        xs.filter((x) => x !== gone),
      );
      const onlyOwn = full.owner.every((o, b) => o === gone || o === after.owner[b]);
      const da = Object.values(distribution(after));
      const back = JSON.stringify(buildJoinedTable(xs, m, xs).owner) === JSON.stringify(full.owner);
      return balanced && onlyOwn && moved(full, after) / m <= 1 / xs.length + 0.005 && Math.max(...da) - Math.min(...da) <= 2 && back;
    }),
  );
  t.pass();
});

t.test('property: a member appended to the order moves nothing until it is live, then only the buckets it takes, evenly', async (t) => {
  fc.assert(
    fc.property(ids, prime, (xs, m) => {
      const before = buildJoinedTable(xs, m);
      const added = [...xs, 'new-member'];
      const notYet = buildJoinedTable(added, m, xs);
      const live = buildJoinedTable(added, m);
      const onlyToNew = before.owner.every((o, b) => live.owner[b] === o || live.owner[b] === 'new-member');
      const took = live.owner.filter((o) => o === 'new-member').length;
      // Each member before it gave up its fair part of what the new one took (within two buckets).
      const gave = xs.map((x) => before.owner.filter((o, b) => o === x && live.owner[b] === 'new-member').length);
      return moved(before, notYet) === 0 && onlyToNew && took === Math.floor(m / added.length) && Math.max(...gave) - Math.min(...gave) <= 2;
    }),
  );
  t.pass();
});

t.test('joined table: trailing members that are not live are left out; the order matters and is the same everywhere', async (t) => {
  const all = ['fw1', 'fw2', 'fw3', 'fw4', 'fw5'];
  t.same(buildJoinedTable(all, 251, ['fw1', 'fw2', 'fw3']).owner, buildJoinedTable(['fw1', 'fw2', 'fw3'], 251).owner);
  t.same(buildJoinedTable(all, 251).owner, buildJoinedTable([...all], 251).owner, 'deterministic');
  t.notSame(buildJoinedTable(all, 251).owner, buildJoinedTable([...all].reverse(), 251).owner, 'another order, another table');
  t.throws(() => buildJoinedTable(['a', 'b'], 100), /prime/);
  t.ok(
    buildJoinedTable(['a', 'b'], 7, []).owner.every((o) => o === null),
    'no member live: no owner',
  );
  t.same(distribution(buildJoinedTable(['a'], 7)), { a: 7 });
});

// Sync groups.
t.test('sync group: a firewall that is down gives its buckets to its group peer only; the others never move', async (t) => {
  const all = ['fw1', 'fw2', 'fw3'];
  const groups = [['fw1', 'fw2']];
  const home = buildJoinedTable(all, 251);
  const down2 = buildGroupedTable(all, 251, ['fw1', 'fw3'], groups);
  home.owner.forEach((h, b) => {
    if (h === 'fw2') t.equal(down2.owner[b], 'fw1', `bucket ${b}: fw2's goes to fw1`);
    else t.equal(down2.owner[b], h, `bucket ${b}: ${h} keeps it`);
  });
  t.same(bucketMoves(all, down2), { fw2: { fw1: distribution(home).fw2 } }, '/status: where fw2 went');
  t.same(buildGroupedTable(all, 251, all, groups).owner, home.owner, 'fw2 back: takes back exactly what it gave up');
  // Without a group, fw2's buckets spread over fw1 and fw3 (today's behaviour); with the group, none reaches fw3.
  const spread = buildJoinedTable(all, 251, ['fw1', 'fw3']);
  t.ok(
    home.owner.some((h, b) => h === 'fw2' && spread.owner[b] === 'fw3'),
    'without the group some of fw2 goes to fw3',
  );
  t.same(buildGroupedTable(all, 251, ['fw1', 'fw3'], []).owner, spread.owner, 'no groups: buildJoinedTable');
  // The whole group down: its buckets spread over every live firewall.
  const both = buildGroupedTable(all, 251, ['fw3'], groups);
  t.ok(
    both.owner.every((o) => o === 'fw3'),
    'fw1 and fw2 down: fw3 takes everything',
  );
  // A lone firewall down (no group): spread as today, never into a group's rescue.
  t.same(buildGroupedTable(all, 251, ['fw1', 'fw2'], groups).owner, buildJoinedTable(all, 251, ['fw1', 'fw2']).owner, 'fw3 down: as without groups');
});

t.test('sync group of three: the buckets of one that is down are spread over the other two, consistently', async (t) => {
  const all = ['a', 'b', 'c', 'd'];
  const groups = [['a', 'b', 'c']];
  const home = buildJoinedTable(all, 1021);
  const bDown = buildGroupedTable(all, 1021, ['a', 'c', 'd'], groups);
  const took = bucketMoves(all, bDown).b;
  t.same(Object.keys(took).sort(), ['a', 'c'], 'b goes to a and c, not d');
  t.ok(Math.abs(took.a - took.c) <= took.a * 0.3, `roughly evenly (a ${took.a}, c ${took.c})`);
  const rescue = syncGroupRescue(1021, ['a', 'c', 'd'], groups);
  home.owner.forEach((h, b) => h === 'b' && t.equal(bDown.owner[b], rescue('b', b)));
  t.equal(rescue('d', 0), null, 'd is in no group');
  t.equal(rescue('a', 0), null, 'a is live: nothing to rescue');
  const bcDown = buildGroupedTable(all, 1021, ['a', 'd'], groups);
  t.ok(
    home.owner.every((h, b) => (h === 'b' || h === 'c' ? bcDown.owner[b] === 'a' : bcDown.owner[b] === h)),
    'b and c down: a takes both, d keeps its own',
  );
});

t.test('property: with sync groups, live members keep their buckets and a down member goes to its group when one is live', async (t) => {
  fc.assert(
    fc.property(
      ids,
      prime,
      fc.array(fc.boolean(), { minLength: 16, maxLength: 16 }),
      fc.array(fc.nat(3), { minLength: 16, maxLength: 16 }),
      (xs, m, up, grp) => {
        const live = xs.filter((_, i) => up[i]);
        const groups = [0, 1, 2].map((g) => xs.filter((_, i) => grp[i] === g)).filter((g) => g.length >= 2);
        const groupOf = new Map(groups.flatMap((g) => g.map((id) => [id, g] as const)));
        const home = buildJoinedTable(xs, m).owner;
        const out = buildGroupedTable(xs, m, live, groups).owner;
        return home.every((h, b) => {
          const o = out[b];
          if (!live.length) return o === null;
          if (live.includes(h!)) return o === h;
          if (!live.includes(o!)) return false;
          const peers = groupOf.get(h!)?.filter((p) => live.includes(p)) ?? [];
          return peers.length ? peers.includes(o!) : true;
        });
      },
    ),
  );
  t.pass();
});

t.test('IPv6 addresses: every RFC 4291 text form parses to the same bytes, and prints in the RFC 5952 form', async (t) => {
  const forms = ['2001:db8:0:0:0:0:0:1', '2001:DB8::1', '2001:0db8:0000::0001', '2001:db8::0:1'];
  for (const f of forms) t.equal(canonicalAddress(f), '2001:db8::1', f);
  t.equal(canonicalAddress('::'), '::');
  t.equal(canonicalAddress('::1'), '::1');
  t.equal(canonicalAddress('fe80::'), 'fe80::');
  t.equal(canonicalAddress('2001:db8:0:1:0:0:0:1'), '2001:db8:0:1::1', 'the longest zero run');
  t.equal(canonicalAddress('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1', 'the first of two equal runs');
  t.equal(canonicalAddress('2001:db8:1:1:1:1:0:1'), '2001:db8:1:1:1:1:0:1', 'one zero word stays');
  t.equal(canonicalAddress('64:ff9b::192.0.2.1'), '64:ff9b::c000:201', 'a dotted quad tail');
  t.equal(canonicalAddress('::ffff:c000:201'), '::ffff:192.0.2.1', 'IPv4-mapped in mixed notation (RFC 5952 section 5, as inet_ntop prints it)');
  t.equal(canonicalAddress('192.0.2.001'), '192.0.2.1', 'IPv4 too');
  t.same([...parseAddress('2001:db8::ff00:42:8329')], [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0x42, 0x83, 0x29]);
  for (const bad of [
    '2001:db8::1::2',
    '2001:db8:1:2:3:4:5:6:7',
    '2001:db8:1:2:3:4:5',
    '2001:db8::g',
    '12345::',
    ':1',
    '1:',
    '::ffff:192.0.2.256',
    '2001:db8::1/64',
    '',
  ])
    t.throws(() => parseAddress(bad), { name: 'TypeError' }, `refused: ${JSON.stringify(bad)}`);
  t.equal(familyOf('2001:db8::1'), 6);
  t.equal(familyOf('192.0.2.1'), 4);
  t.same(splitHostPort(hostPort('2001:db8::1', 80)), ['2001:db8::1', 80], 'an IPv6 end in brackets, and back');
  t.same([hostPort('192.0.2.1', 80), splitHostPort('192.0.2.1:80')], ['192.0.2.1:80', ['192.0.2.1', 80]]);
  t.same([canonicalOrNull('2001:DB8::1'), canonicalOrNull('2001:db8::g')], ['2001:db8::1', null]);
});

t.test('property: the RFC 5952 form round-trips any 16 bytes', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
      const text = formatAddress(b);
      return Buffer.from(parseAddress(text)).equals(Buffer.from(b)) && formatAddress(parseAddress(text.toUpperCase())) === text;
    }),
    { numRuns: 2000 },
  );
  t.pass('2,000 random addresses');
});

t.test('IPv6 key image: four registers per address, ports and protocol padded as for IPv4', async (t) => {
  const img = keyImage({ outerAddr: '2001:db8::11', outerPort: 0x1234, innerAddr: '2001:db8:1::12', innerPort: 80, proto: PROTO_TCP });
  t.same(
    [...img],
    [
      0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x12, 0x34, 0, 0, 0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0, 80, 0, 0, 6,
      0, 0, 0,
    ],
  );
  t.equal(keyImage({ outerAddr: '2001:db8::1', outerPort: 0, innerAddr: '2001:db8::2', innerPort: 0, proto: 58 }).length, 36);
  t.throws(() => keyImage({ outerAddr: '2001:db8::1', outerPort: 1, innerAddr: '192.0.2.1', innerPort: 2, proto: PROTO_UDP }), /two families/);
});

t.test('property: both nodes hash an IPv6 flow to the same bucket', async (t) => {
  const addr = fc.uint8Array({ minLength: 16, maxLength: 16 }).map(formatAddress);
  fc.assert(
    fc.property(
      addr,
      addr,
      fc.integer({ min: 1, max: 65535 }),
      fc.integer({ min: 1, max: 65535 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      (c, s, cp, sp, seed) => {
        const fromClient = canonicalKey('outside', { saddr: c, sport: cp, daddr: s, dport: sp, proto: PROTO_TCP });
        const fromServer = canonicalKey('inside', { saddr: s, sport: sp, daddr: c, dport: cp, proto: PROTO_TCP });
        return bucketOf(fromClient, seed, 251) === bucketOf(fromServer, seed, 251);
      },
    ),
    { numRuns: 2000 },
  );
  t.pass('2,000 random IPv6 flows');
});
