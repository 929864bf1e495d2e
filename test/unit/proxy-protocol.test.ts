// Unit: the lab's PROXY protocol reader (what the lab's servers behind an L7 VIP with `proxyProtocol` do), against
// headers built by hand from the specification and against fwlb's own health check headers.
import { t } from 'tap';
import { parseProxyHeader } from '@fwlb/lab';
import { PROXY_CHECK_HEADER } from '@fwlb/health';

const v2 = (cmd: number, fam: number, addr: number[]) =>
  Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20 | cmd, fam, addr.length >> 8, addr.length & 0xff, ...addr]);

t.test('v1 and v2 headers name the client; a check header names none; anything else is refused', async (t) => {
  const line4 = 'PROXY TCP4 198.51.100.11 203.0.113.100 40001 8444\r\n';
  t.same(parseProxyHeader(Buffer.from(`${line4}GET /`)), { length: line4.length, source: { address: '198.51.100.11', port: 40001 } });
  const line6 = 'PROXY TCP6 2001:db8:c::11 2001:db8:5::100 40001 8444\r\n';
  t.same(parseProxyHeader(Buffer.from(line6)), { length: line6.length, source: { address: '2001:db8:c::11', port: 40001 } });
  const ipv4 = v2(1, 0x11, [198, 51, 100, 11, 203, 0, 113, 100, 0x9c, 0x41, 0x20, 0xfc]);
  t.same(parseProxyHeader(Buffer.concat([ipv4, Buffer.from('GET /')])), { length: 28, source: { address: '198.51.100.11', port: 40001 } });
  const six = [0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, ...Array(9).fill(0), 0x11, ...Array(16).fill(0), 0x9c, 0x41, 0x20, 0xfc];
  t.same(parseProxyHeader(v2(1, 0x21, six)), { length: 52, source: { address: '2001:db8:c:0:0:0:0:11', port: 40001 } });
  t.same(parseProxyHeader(Buffer.from(PROXY_CHECK_HEADER.v1)), { length: 15, source: null }, "fwlb's v1 check header");
  t.same(parseProxyHeader(Buffer.from(PROXY_CHECK_HEADER.v2, 'latin1')), { length: 16, source: null }, "fwlb's v2 check header (LOCAL)");
  t.same(parseProxyHeader(ipv4.subarray(0, 20)), { more: true }, 'a v2 header in two reads');
  t.same(parseProxyHeader(Buffer.from('PROXY TCP4 198.51')), { more: true }, 'a v1 header in two reads');
  t.match(parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n')), { bad: /no PROXY header/ }, 'a request without a header');
  t.match(parseProxyHeader(Buffer.from(`PROXY ${'x'.repeat(120)}`)), { bad: /107/ });
});
