// Unit: the ctnetlink codec on bytes captured from this kernel (test/fixtures/ctnetlink-*.hex) and round trips.
import { t } from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { formatAddress } from '@fwlb/flowhash';
import { encodeEntry, eventKind, parseAttrs, parseEntry, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, NLM_F_CREATE, CtEntry } from '@fwlb/conntrack';

const fixture = (name: string) =>
  JSON.parse(readFileSync(join(__dirname, '../../../test/fixtures', name), 'utf8')) as { type: number; flags: number; hex: string }[];

t.test('a captured dump of a TCP, a UDP and an ICMP entry with marks', async (t) => {
  const msgs = fixture('ctnetlink-dump.json');
  const entries = msgs.map((m) => parseEntry(Buffer.from(m.hex, 'hex'))!);
  const tcp = entries.find((e) => e.orig.proto === 6)!;
  t.same(tcp.orig, { src: '192.0.2.1', dst: '192.0.2.2', proto: 6, sport: 40001, dport: 7007 });
  t.same(tcp.reply, { src: '192.0.2.2', dst: '192.0.2.1', proto: 6, sport: 7007, dport: 40001 });
  t.equal(tcp.mark, 0x10001, 'ct mark');
  t.equal(tcp.tcpState, 'ESTABLISHED');
  t.ok(tcp.timeout! > 0 && tcp.timeout! <= 432000, `timeout ${tcp.timeout}`);
  t.ok(tcp.status & (1 << 2), 'ASSURED');
  const udp = entries.find((e) => e.orig.proto === 17)!;
  t.same([udp.orig.sport, udp.orig.dport, udp.mark], [40002, 7007, 0x10002]);
  const icmp = entries.find((e) => e.orig.proto === 1)!;
  t.same([icmp.orig.src, icmp.orig.dst, icmp.orig.sport], ['192.0.2.1', '192.0.2.2', undefined], 'ICMP has no ports');
});

t.test('captured events: NEW then DESTROY of one flow', async (t) => {
  const msgs = fixture('ctnetlink-events.json');
  const kinds = msgs.map((m) => eventKind(m.type, m.flags));
  t.ok(kinds.includes('new') && kinds.includes('destroy'), `kinds ${kinds}`);
  const news = msgs.filter((m) => eventKind(m.type, m.flags) === 'new').map((m) => parseEntry(Buffer.from(m.hex, 'hex'))!);
  const gone = msgs.filter((m) => eventKind(m.type, m.flags) === 'destroy').map((m) => parseEntry(Buffer.from(m.hex, 'hex'))!);
  t.ok(
    news.some((n) => gone.some((g) => g.id === n.id && g.orig.sport === n.orig.sport)),
    'the destroyed entry is the one that was new (same id and tuple)',
  );
});

t.test('event kinds from type and flags', async (t) => {
  t.equal(eventKind((1 << 8) | IPCTNL_MSG_CT_NEW, NLM_F_CREATE), 'new');
  t.equal(eventKind((1 << 8) | IPCTNL_MSG_CT_NEW, 0), 'update');
  t.equal(eventKind((1 << 8) | IPCTNL_MSG_CT_DELETE, 0), 'destroy');
  t.equal(eventKind((2 << 8) | IPCTNL_MSG_CT_NEW, NLM_F_CREATE), null, 'another nfnetlink subsystem');
});

t.test('malformed attributes are refused, not misread', async (t) => {
  t.throws(() => parseAttrs(Buffer.from([0xff, 0x00, 0x01, 0x00, 0, 0, 0, 0])), /bad netlink attribute/);
  t.equal(parseEntry(Buffer.from([2, 0, 0, 0])), null, 'no tuples: no entry');
});

t.test('encode then parse is the identity (property)', async (t) => {
  const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.'));
  const entry = fc.record({
    src: ip,
    dst: ip,
    sport: fc.integer({ min: 1, max: 65535 }),
    dport: fc.integer({ min: 1, max: 65535 }),
    mark: fc.nat(),
    status: fc.nat(0xffff),
    timeout: fc.nat(432000),
    id: fc.nat(),
    start: fc.nat(4_000_000_000_000),
  });
  await fc.assert(
    fc.asyncProperty(entry, async (x) => {
      const e: CtEntry = {
        orig: { src: x.src, dst: x.dst, proto: 6, sport: x.sport, dport: x.dport },
        reply: { src: x.dst, dst: x.src, proto: 6, sport: x.dport, dport: x.sport },
        status: x.status,
        mark: x.mark,
        timeout: x.timeout,
        id: x.id,
        tcpState: 'ESTABLISHED',
        start: x.start,
      };
      return JSON.stringify(parseEntry(encodeEntry(e))) === JSON.stringify(e);
    }),
    { numRuns: 300 },
  );
  t.pass('300 random entries');
});

t.test('a captured IPv6 dump: TCP, UDP and ICMPv6 entries with marks, addresses in the RFC 5952 form', async (t) => {
  const entries = fixture('ctnetlink-dump6.json').map((m) => parseEntry(Buffer.from(m.hex, 'hex'))!);
  t.equal(entries.length, 3);
  const tcp = entries.find((e) => e.orig.proto === 6)!;
  t.same(tcp.orig, { src: '2001:db8::1', dst: '2001:db8:0:1::ab:2', proto: 6, sport: 40001, dport: 7007 });
  t.same(tcp.reply, { src: '2001:db8:0:1::ab:2', dst: '2001:db8::1', proto: 6, sport: 7007, dport: 40001 });
  t.equal(tcp.mark, 0x10001);
  t.ok(tcp.tcpState, `tcp state ${tcp.tcpState}`);
  const udp = entries.find((e) => e.orig.proto === 17)!;
  t.same([udp.orig.sport, udp.orig.dport, udp.mark], [40002, 7007, 0x10002]);
  const icmp = entries.find((e) => e.orig.proto === 58)!;
  t.same([icmp.orig.src, icmp.orig.sport, icmp.mark], ['2001:db8::1', undefined, 0x10003], 'ICMPv6 has no ports');
  // Encoding names the family in nfgenmsg and carries the 16-byte addresses: the kernel's own bytes come back.
  const raw = Buffer.from(fixture('ctnetlink-dump6.json').find((m) => parseEntry(Buffer.from(m.hex, 'hex'))!.orig.proto === 17)!.hex, 'hex');
  const again = encodeEntry(udp);
  t.equal(again[0], 10, 'nfgenmsg family AF_INET6');
  t.same(parseEntry(again), udp, 'encode then parse');
  t.ok(again.subarray(4, 4 + 76).equals(raw.subarray(4, 4 + 76)), 'the original tuple encodes to the kernel bytes');
});

t.test('IPv6 encode then parse is the identity (property)', async (t) => {
  const ip6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => formatAddress(b));
  await fc.assert(
    fc.asyncProperty(ip6, ip6, fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 1, max: 65535 }), fc.nat(), async (src, dst, sport, dport, mark) => {
      const e: CtEntry = { orig: { src, dst, proto: 17, sport, dport }, reply: { src: dst, dst: src, proto: 17, sport: dport, dport: sport }, status: 0, mark };
      return JSON.stringify(parseEntry(encodeEntry(e))) === JSON.stringify(e);
    }),
    { numRuns: 300 },
  );
  t.throws(
    () =>
      encodeEntry({
        orig: { src: '2001:db8::1', dst: '192.0.2.1', proto: 6, sport: 1, dport: 2 },
        reply: { src: '192.0.2.1', dst: '2001:db8::1', proto: 6, sport: 2, dport: 1 },
        status: 0,
        mark: 0,
      }),
    /two families/,
  );
  t.pass('300 random IPv6 entries');
});
