// Integration: reading fwlb's table from the kernel without listing its large map. The rules, counters and objects
// come from a terse listing of the ruleset and equal a full listing's; the other maps are listed; the large one comes
// back declared, with its handle, and without elements; another table's objects of the same names are left out.
import { t } from 'tap';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nftCli } from '@fwlb/nft';
import { deleteNs, inNs, run, uniquePrefix } from '@fwlb/lab';
import { keyImage } from '@fwlb/flowhash';

const N = 20000;
const PIN_TYPE = 'ipv4_addr . inet_service . ipv4_addr . inet_service . inet_proto';

function pinElements(n: number, first = 0): string {
  const els: string[] = [];
  for (let j = first; j < first + n; j++)
    els.push(`10.${64 + (j >> 16)}.${(j >> 8) & 255}.${j & 255} . ${1024 + (j % 50000)} . 203.0.113.1 . 80 . 6 : ${256 + (j % 3)}`);
  return els.join(', ');
}

t.test('a read that leaves the large map out equals a full read', async (t) => {
  const ns = `${uniquePrefix('nfr')}`;
  run(['ip', 'netns', 'add', ns]);
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-nft-read-'));
  t.teardown(() => {
    deleteNs(ns);
    rmSync(dir, { recursive: true, force: true });
  });
  // nft in the test's namespace: a wrapper the runner starts with its arguments as an array.
  const bin = join(dir, 'nft');
  writeFileSync(bin, `#!/bin/sh\nexec ip netns exec ${ns} nft "$@"\n`);
  chmodSync(bin, 0o755);
  inNs(
    ns,
    ['nft', '-f', '-'],
    [
      'table inet fwlb {',
      '  ct timeout hs { protocol tcp; l3proto ip; policy = { syn_sent: 10 }; }',
      `  map pins { type ${PIN_TYPE} : mark; size 200000; }`,
      '  map buckets { type mark : mark; elements = { 0 : 256, 1 : 257 }; }',
      '  set fresh { type ipv4_addr; flags timeout; timeout 10s; }',
      '  chain prerouting {',
      '    type filter hook prerouting priority -150; policy accept;',
      '    ct mark { 256, 257 } counter meta mark set ct mark comment "fwlb:restore"',
      `    meta mark set ip saddr . tcp sport . ip daddr . tcp dport . meta l4proto map @pins counter comment "fwlb:pinned"`,
      '  }',
      '}',
      // Another table with objects of the same names: a read of fwlb must not take them.
      'table inet other {',
      '  map pins { type mark : mark; elements = { 7 : 7 }; }',
      '  chain prerouting { type filter hook prerouting priority 0; counter comment "fwlb:restore"; }',
      '}',
      `add element inet fwlb pins { ${pinElements(N)} }`,
    ].join('\n') + '\n',
  );
  const nft = nftCli(bin);
  let t0 = performance.now();
  const full = (await nft.read('inet', 'fwlb'))!;
  const fullMs = performance.now() - t0;
  t.equal(full.maps.get('pins')!.elements.size, N, `a full read lists the ${N} pins`);

  t0 = performance.now();
  const part = (await nft.read('inet', 'fwlb', new Set(['pins'])))!;
  const partMs = performance.now() - t0;
  t.comment(`read of the table with ${N} pins: ${fullMs.toFixed(0)} ms listed, ${partMs.toFixed(0)} ms with the pins left out`);
  t.equal(part.maps.get('pins')!.elements.size, 0, 'the pins are not listed');
  t.equal(part.maps.get('pins')!.handle, full.maps.get('pins')!.handle, 'the map is there, with its handle');
  t.same([...part.maps.get('buckets')!.elements], [...full.maps.get('buckets')!.elements], 'the other map is listed');
  t.same([...part.chains], [...full.chains], 'the same chains and rules in order');
  t.same([...part.counters], [...full.counters], 'the same rule counters');
  t.ok(part.counters.size === 2, 'both counted rules');
  t.same([...part.sets], [...full.sets], 'the same sets');
  t.same([...part.ctTimeouts!], ['hs'], 'the ct timeout object');
  t.equal(part.handle, full.handle);

  inNs(ns, ['nft', 'delete', 'table', 'inet', 'fwlb']);
  t.equal(await nft.read('inet', 'fwlb', new Set(['pins'])), null, 'no table: null');
});

// Runs in the test's namespace (a netlink socket belongs to the namespace of the process that opens it): writes the
// elements the parent passes on stdin as steps, and prints each step's outcome.
const WRITER = `
const { NetlinkElements } = require(process.argv[1]);
const steps = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
const raw = (l) => l.map(([hex, value]) => ({ key: Buffer.from(hex, 'hex'), value }));
(async () => {
  const w = new NetlinkElements();
  const out = [];
  for (const s of steps) {
    try {
      if (s.ops) await w.change({ family: 'inet', table: 'fwlb' }, s.ops.map((o) => ({ ...o, elements: o.keys.map((k) => ({ key: Buffer.from(k, 'hex') })) })));
      else await w.write({ family: 'inet', table: 'fwlb', name: s.map }, raw(s.del), raw(s.add));
      out.push('ok');
    } catch (e) {
      out.push(e.message);
    }
  }
  w.close();
  console.log(JSON.stringify(out));
})();
`;

t.test('elements over nfnetlink: added, given another value, deleted, in batches; a refused batch changes nothing', async (t) => {
  const ns = `${uniquePrefix('nfw')}`;
  run(['ip', 'netns', 'add', ns]);
  t.teardown(() => deleteNs(ns));
  inNs(
    ns,
    ['nft', '-f', '-'],
    `table inet fwlb {\n  map pins { type ${PIN_TYPE} : mark; }\n  map pins_v6 { type ipv6_addr . inet_service . ipv6_addr . inet_service . inet_proto : mark; }\n}\n`,
  );
  const key = (j: number) => ({
    outerAddr: `10.${64 + (j >> 16)}.${(j >> 8) & 255}.${j & 255}`,
    outerPort: 1024 + (j % 50000),
    innerAddr: '203.0.113.1',
    innerPort: 80,
    proto: 6,
  });
  const hex = (k: Parameters<typeof keyImage>[0]) => Buffer.from(keyImage(k)).toString('hex');
  const M = 120000;
  const all = Array.from({ length: M }, (_, j) => [hex(key(j)), 256 + (j % 3)] as [string, number]);
  const v6 = { outerAddr: '2001:db8::7', outerPort: 4000, innerAddr: '2001:db8:5::10', innerPort: 443, proto: 17 };
  const steps = [
    // More than one batch (a batch is what the socket's send buffer holds).
    { map: 'pins', del: [], add: all },
    // The first 1,000 get another value: deleted and added in one batch.
    { map: 'pins', del: all.slice(0, 1000), add: all.slice(0, 1000).map(([k]) => [k, 999]) },
    // The last 20,000 go.
    { map: 'pins', del: all.slice(M - 20000), add: [] },
    { map: 'pins_v6', del: [], add: [[hex(v6), 0x10002]] },
    // Refused as a whole: a key that is not there (ENOENT) beside one that is.
    { map: 'pins', del: [all[5000], [hex(key(M + 1)), 256]], add: [] },
    // Refused as a whole: a key that is there with another value (EEXIST), beside a new one.
    {
      map: 'pins',
      del: [],
      add: [
        [hex(key(M + 2)), 256],
        [all[6000][0], 5],
      ],
    },
  ];
  const outcome = JSON.parse(inNs(ns, [process.execPath, '-e', WRITER, require.resolve('@fwlb/nft')], JSON.stringify(steps)));
  t.same(outcome.slice(0, 4), ['ok', 'ok', 'ok', 'ok']);
  t.match(outcome[4], /refused the batch \(errno 2\)/, 'a missing key: refused');
  t.match(outcome[5], /refused the batch \(errno 17\)/, 'an existing key with another value: refused');
  const listed = JSON.parse(inNs(ns, ['nft', '-j', 'list', 'map', 'inet', 'fwlb', 'pins'])).nftables.find((x: any) => x.map).map.elem as [any, number][];
  const got = new Map(listed.map(([k, v]) => [k.concat.join(' '), v]));
  const want = new Map<string, number>();
  for (let j = 0; j < M - 20000; j++) {
    const k = key(j);
    want.set(`${k.outerAddr} ${k.outerPort} ${k.innerAddr} ${k.innerPort} tcp`, j < 1000 ? 999 : 256 + (j % 3));
  }
  t.equal(got.size, want.size, `the kernel holds ${want.size} elements`);
  t.ok(
    [...want].every(([k, v]) => got.get(k) === v),
    'each with its value: the keys and marks as nft reads them',
  );
  const six = JSON.parse(inNs(ns, ['nft', '-j', 'list', 'map', 'inet', 'fwlb', 'pins_v6'])).nftables.find((x: any) => x.map).map.elem;
  t.same(six, [[{ concat: ['2001:db8::7', 4000, '2001:db8:5::10', 443, 'udp'] }, 0x10002]], 'an IPv6 key');
});

t.test("set elements over nfnetlink: a tuple moved from one set to another in one transaction, with the sets' timeout", async (t) => {
  const ns = `${uniquePrefix('nfs')}`;
  run(['ip', 'netns', 'add', ns]);
  t.teardown(() => deleteNs(ns));
  const set = (name: string) => `  set ${name} { type ${PIN_TYPE}; timeout 120s; flags dynamic,timeout; }`;
  inNs(ns, ['nft', '-f', '-'], `table inet fwlb {\n${set('conn0')}\n${set('conn1')}\n}\n`);
  const k = { outerAddr: '198.51.100.7', outerPort: 40000, innerAddr: '203.0.113.10', innerPort: 443, proto: 6 };
  const key = Buffer.from(keyImage(k)).toString('hex');
  const other = Buffer.from(keyImage({ ...k, outerPort: 40001 })).toString('hex');
  const steps = [
    { ops: [{ name: 'conn0', verb: 'add', keys: [key, other] }] },
    // Out of conn0 (added first: a delete of a missing element refuses the batch), into conn1.
    {
      ops: [
        { name: 'conn0', verb: 'add', keys: [key] },
        { name: 'conn0', verb: 'delete', keys: [key] },
        { name: 'conn1', verb: 'add', keys: [key] },
      ],
    },
    // The same again: the tuple is in conn1 already, and not in conn0.
    {
      ops: [
        { name: 'conn0', verb: 'add', keys: [key] },
        { name: 'conn0', verb: 'delete', keys: [key] },
        { name: 'conn1', verb: 'add', keys: [key] },
      ],
    },
    { ops: [{ name: 'conn1', verb: 'delete', keys: [other] }] },
  ];
  const outcome = JSON.parse(inNs(ns, [process.execPath, '-e', WRITER, require.resolve('@fwlb/nft')], JSON.stringify(steps)));
  t.same(outcome.slice(0, 3), ['ok', 'ok', 'ok']);
  t.match(outcome[3], /refused the batch \(errno 2\)/, 'a delete of a missing element: refused');
  const elems = (name: string) =>
    (JSON.parse(inNs(ns, ['nft', '-j', 'list', 'set', 'inet', 'fwlb', name])).nftables.find((x: any) => x.set).set.elem ?? []) as any[];
  const tuple = (e: any) => (e.elem ?? e).val?.concat?.join(' ') ?? (e.elem ?? e).concat?.join(' ');
  t.same(elems('conn0').map(tuple), ['198.51.100.7 40001 203.0.113.10 443 tcp']);
  const [moved] = elems('conn1');
  t.equal(tuple(moved), '198.51.100.7 40000 203.0.113.10 443 tcp');
  t.ok(moved.elem?.expires > 100 && moved.elem?.expires <= 120, `it expires with the set's timeout (${moved.elem?.expires} s left)`);
});
