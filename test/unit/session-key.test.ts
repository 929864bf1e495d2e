// Unit: the session table's query prefilter (a Redis glob on the session id).
import { t } from 'tap';
t.test('queryPattern: a Redis glob prefilter on the id for address or port queries, nothing else', async (t) => {
  const { queryPattern } = await import('@fwlb/session-table');
  t.equal(queryPattern({ addr: '198.51.100.7' }), '*198.51.100.7:*', 'the address followed by its port separator, on either side');
  t.equal(queryPattern({ addr: '198.51.100.7', port: 80 }), '*198.51.100.7:*', 'the address narrows most');
  t.equal(queryPattern({ port: 80 }), '*:80[>/]*', 'a port is followed by > (outer) or / (inner)');
  t.equal(queryPattern({ firewall: 'fw2' }), undefined, 'the firewall is not in the id');
  t.equal(queryPattern({ addr: '*' }), undefined, 'no glob character reaches Redis');
});
