// Unit: the session table's query prefilter (a Redis glob on the session id), and the key image and bucket of an id.
import { t } from 'tap';
import { bucketOf, keyImage } from '@fwlb/flowhash';
import { bucketOfId, ipv4KeyImage, sessionId } from '@fwlb/session-table';
t.test('queryPattern: a Redis glob prefilter on the id for address or port queries, nothing else', async (t) => {
  const { queryPattern } = await import('@fwlb/session-table');
  t.equal(queryPattern({ addr: '198.51.100.7' }), '*198.51.100.7:*', 'the address followed by its port separator, on either side');
  t.equal(queryPattern({ addr: '198.51.100.7', port: 80 }), '*198.51.100.7:*', 'the address narrows most');
  t.equal(queryPattern({ port: 80 }), '*:80[>/]*', 'a port is followed by > (outer) or / (inner)');
  t.equal(queryPattern({ firewall: 'fw2' }), undefined, 'the firewall is not in the id');
  t.equal(queryPattern({ addr: '*' }), undefined, 'no glob character reaches Redis');
});

t.test('session ids: IPv6 in brackets, canonical only; every field checked when read back', async (t) => {
  const { sessionId, parseSessionId, decodeRecord, encodeRecord } = await import('@fwlb/session-table');
  const k6 = { outerAddr: '2001:db8:c::11', outerPort: 40000, innerAddr: '2001:db8:20::12', innerPort: 7007, proto: 6 };
  const id6 = sessionId(k6);
  t.equal(id6, '[2001:db8:c::11]:40000>[2001:db8:20::12]:7007/6');
  t.same(parseSessionId(id6), k6, 'round trip');
  const k4 = { outerAddr: '198.51.100.11', outerPort: 40000, innerAddr: '203.0.113.100', innerPort: 7007, proto: 17 };
  t.same(parseSessionId(sessionId(k4)), k4, 'IPv4 as before');
  const rec = { ...k6, firewall: 'fw2', node: 'ob', firstSeen: 1, expires: 2 };
  t.same(decodeRecord(id6, encodeRecord(rec)), rec, 'a record round trip');
  for (const bad of [
    '[2001:DB8:c::11]:40000>[2001:db8:20::12]:7007/6', // not canonical: another spelling would be another session
    '[2001:db8:c:0:0:0:0:11]:40000>[2001:db8:20::12]:7007/6',
    '[2001:db8:c::11]:40000>198.51.100.1:7007/6', // two families
    '198.51.100.1:40000>[2001:db8:20::12]:7007/6',
    '2001:db8:c::11:40000>[2001:db8:20::12]:7007/6', // no brackets
    '[2001:db8:c::11:40000>[2001:db8:20::12]:7007/6',
    '[2001:db8:c::11]:40000>[2001:db8:20::12:7007/6',
    '[::ffff:1.2.3.4]:1>[2001:db8::1]:2/6',
    '[2001:db8:c::11]:70000>[2001:db8:20::12]:7007/6',
    '[2001:db8:c::11]:1>[2001:db8:20::12]:7007/1',
    '[g::1]:1>[2001:db8::1]:2/6',
  ])
    t.equal(parseSessionId(bad), null, `refused: ${bad}`);
});

t.test('ipv4KeyImage: the key image of an IPv4 session straight from its id, as keyImage gives it, and its bucket; null for anything else', async (t) => {
  let x = 99;
  const rnd = (n: number) => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % n);
  for (let i = 0; i < 2000; i++) {
    const k = {
      outerAddr: `${rnd(256)}.${rnd(256)}.${rnd(256)}.${rnd(256)}`,
      outerPort: i % 7 ? rnd(65536) : 65535,
      innerAddr: `${rnd(256)}.${rnd(256)}.${rnd(256)}.${rnd(256)}`,
      innerPort: i % 5 ? rnd(65536) : 0,
      proto: i % 2 ? 6 : 17,
    };
    const got = ipv4KeyImage(sessionId(k));
    if (!got || Buffer.compare(Buffer.from(got), Buffer.from(keyImage(k))) !== 0 || bucketOfId(sessionId(k), 77, 251) !== bucketOf(k, 77, 251)) {
      t.fail(`${sessionId(k)}: ${got && Buffer.from(got).toString('hex')}`);
      return;
    }
  }
  t.pass('2,000 random ids: the same bytes as keyImage, the same bucket as bucketOf');
  for (const bad of [
    '1.2.3.256:5>6.7.8.9:10/6',
    '1.2.3.4:65536>6.7.8.9:10/6',
    '1.2.3.4:5>6.7.8.9:10/6x',
    '1.2.3.4:5>6.7.8.9:10/1',
    '1.2.3:5>6.7.8.9:10/6',
    '01.2.3.4:5>6.7.8.9:10/6',
    '1.2.3.4:5>6.7.8.9:10',
    '[2001:db8::1]:5>[2001:db8::2]:6/6',
    '',
  ])
    t.equal(ipv4KeyImage(bad), null, `refused: ${JSON.stringify(bad)}`);
  const six = { outerAddr: '2001:db8::7', outerPort: 1, innerAddr: '2001:db8:5::10', innerPort: 2, proto: 6 };
  t.equal(bucketOfId(sessionId(six), 77, 251), bucketOf(six, 77, 251), 'an IPv6 id takes the general path');
  t.equal(bucketOfId('junk', 77, 251), null);
});
