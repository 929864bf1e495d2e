// Integration: the pure flow hash (libs/flowhash) against the kernel's nft jhash, for random IPv4 and IPv6 flows:
// every flow's bucket, as the kernel wrote it into the flow's ct mark, equals the model's.
import { t } from 'tap';
import { randomBytes } from 'node:crypto';
import { bucketOf, canonicalAddress, canonicalKey, formatAddress, PROTO_UDP } from '@fwlb/flowhash';
import { deleteNs, inNs, run, uniquePrefix } from '@fwlb/lab';

const SEED = 0x5eed1234;
const BUCKETS = 251;
const FLOWS = 10000;

// Sends one UDP datagram per flow from its own source address and port (any address of a local route can be
// bound) to a next hop that does not exist: conntrack keeps one entry per flow with the mark.
const SENDER = `
const dgram = require('node:dgram');
const flows = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
(async () => {
  for (const f of flows) {
    const s = dgram.createSocket(f.src.includes(':') ? 'udp6' : 'udp4');
    await new Promise((res, rej) => { s.once('error', rej); s.bind({ address: f.src, port: f.sport }, res); });
    await new Promise((res) => s.send('x', f.dport, f.dst, () => res()));
    s.close();
  }
  console.log('sent', flows.length);
})().catch((e) => { console.error(e.message); process.exit(1); });
`;

interface Flow {
  src: string;
  sport: number;
  dst: string;
  dport: number;
}

/** Random flows from 10.1/16 to 10.2/16, or from 2001:db8:1::/64 to 2001:db8:2::/64, one per source address and port. */
function flows(n: number, v6: boolean): Flow[] {
  const out: Flow[] = [];
  const used = new Set<string>();
  while (out.length < n) {
    const r = randomBytes(40);
    const addr = (net: number[], off: number) => {
      const b = new Uint8Array(v6 ? 16 : 4);
      b.set(net);
      b.set(r.subarray(off, off + b.length - net.length), net.length);
      return formatAddress(b);
    };
    const src = v6 ? addr([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0], 0) : addr([10, 1], 0);
    const dst = v6 ? addr([0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0], 8) : addr([10, 2], 8);
    const f = { src, sport: 1024 + (r.readUInt16BE(20) % 64000), dst, dport: 1 + (r.readUInt16BE(22) % 65535) };
    if (v6 ? false : /\.(0|255)$/.test(src) || /\.(0|255)$/.test(dst)) continue;
    const key = `${f.src} ${f.sport}`;
    if (used.has(key)) continue;
    used.add(key);
    out.push(f);
  }
  return out;
}

t.test('the flow hash model equals the kernel on random flows', async (t) => {
  const ns = `${uniquePrefix('jh')}-n`;
  run(['ip', 'netns', 'add', ns]);
  t.teardown(() => deleteNs(ns));
  for (const cmd of [
    ['ip', 'link', 'set', 'lo', 'up'],
    ['ip', 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1'],
    ['ip', 'link', 'set', 'v0', 'up'],
    ['ip', 'link', 'set', 'v1', 'up'],
    ['ip', 'addr', 'add', '10.255.0.1/24', 'dev', 'v0'],
    ['ip', '-6', 'addr', 'add', '2001:db8:ff::1/64', 'dev', 'v0', 'nodad'],
    ['ip', 'neigh', 'add', '10.255.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'v0', 'nud', 'permanent'],
    ['ip', '-6', 'neigh', 'add', '2001:db8:ff::2', 'lladdr', '02:00:00:00:00:02', 'dev', 'v0', 'nud', 'permanent'],
    ['ip', 'route', 'add', 'local', '10.1.0.0/16', 'dev', 'lo'],
    ['ip', 'route', 'add', '10.2.0.0/16', 'via', '10.255.0.2', 'dev', 'v0'],
    ['ip', '-6', 'route', 'add', 'local', '2001:db8:1::/64', 'dev', 'lo'],
    // IPv6 binds an address only if an interface holds it, whatever the routes say.
    ['sysctl', '-qw', 'net.ipv6.ip_nonlocal_bind=1'],
    ['ip', '-6', 'route', 'add', '2001:db8:2::/64', 'via', '2001:db8:ff::2', 'dev', 'v0'],
  ])
    inNs(ns, cmd);
  // The expressions the balancer's rules hash with (the outside node's order: source first).
  const hash = (f: 'ip' | 'ip6') =>
    `meta mark set jhash ${f} saddr . th sport . ${f} daddr . th dport . meta l4proto mod ${BUCKETS} seed ${SEED} ct mark set meta mark`;
  inNs(
    ns,
    ['nft', '-f', '-'],
    `table inet jh {
  chain out {
    type filter hook output priority 0; policy accept;
    meta nfproto ipv4 meta l4proto udp ${hash('ip')}
    meta nfproto ipv6 meta l4proto udp ${hash('ip6')}
  }
}
`,
  );
  for (const v6 of [false, true]) {
    await t.test(`${FLOWS.toLocaleString('en')} random ${v6 ? 'IPv6' : 'IPv4'} UDP flows`, async (t) => {
      const want = flows(FLOWS, v6);
      t.match(inNs(ns, [process.execPath, '-e', SENDER], JSON.stringify(want)), /^sent/);
      const seen = new Map<string, number>();
      for (const line of inNs(ns, ['conntrack', '-L', '-f', v6 ? 'ipv6' : 'ipv4', '-p', 'udp']).split('\n')) {
        const m = /src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) .*mark=(\d+)/.exec(line);
        if (m) seen.set(`${canonicalAddress(m[1])} ${m[3]}`, Number(m[5]));
      }
      let agree = 0;
      const differ: string[] = [];
      for (const f of want) {
        const model = bucketOf(canonicalKey('outside', { saddr: f.src, sport: f.sport, daddr: f.dst, dport: f.dport, proto: PROTO_UDP }), SEED, BUCKETS);
        const kernel = seen.get(`${f.src} ${f.sport}`);
        if (kernel === model) agree++;
        else if (differ.length < 5) differ.push(`${f.src}:${f.sport} -> ${f.dst}:${f.dport}: model ${model}, kernel ${kernel}`);
      }
      t.equal(seen.size, FLOWS, 'the kernel holds every flow');
      t.equal(agree, FLOWS, `model and kernel agree on ${agree} of ${FLOWS} flows ${differ.join('; ')}`);
      // The marks spread over the buckets: a constant hash would agree with a constant model too.
      t.ok(new Set(seen.values()).size > BUCKETS * 0.9, `${new Set(seen.values()).size} of ${BUCKETS} buckets hit`);
    });
  }
});
