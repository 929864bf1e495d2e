// Unit: a costly read behind the API (a conntrack dump, a Redis read) runs at most once per period, shared by the
// callers meanwhile; a failed read is not kept.
import { t } from 'tap';
import { throttledRead } from '@fwlb/service';

t.test('one read per period, shared; a failure is retried at the next call', async (t) => {
  let clock = 0;
  let reads = 0;
  let fail = false;
  const read = throttledRead(
    async () => {
      reads++;
      if (fail) throw new Error('Redis away');
      return reads;
    },
    1000,
    () => clock,
  );
  t.same(await Promise.all([read(), read(), read()]), [1, 1, 1], 'callers at once share one read');
  clock = 999;
  t.equal(await read(), 1, 'within the period: the same value');
  clock = 1001;
  t.equal(await read(), 2, 'after it: read again');
  fail = true;
  clock = 2500;
  await t.rejects(read(), /Redis away/);
  fail = false;
  t.equal(await read(), 4, 'a failed read is not kept: the next call reads again at once');
  t.equal(reads, 4);
});
