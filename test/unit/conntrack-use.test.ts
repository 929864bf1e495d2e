// Unit: the conntrack table's use, its alarm and the doctor's advice (a fake /proc directory for the read).
import { t } from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { conntrackAdvice, conntrackAlarm, conntrackUse } from '@fwlb/conntrack';

t.test('the alarm comes at the configured share of the table, not before', async (t) => {
  t.equal(conntrackAlarm({ count: 209_714, max: 262_144 }, 0.8), null, 'just under 80 %: no alarm');
  t.match(
    conntrackAlarm({ count: 209_716, max: 262_144 }, 0.8),
    /^conntrack table 80% full \(209716 of 262144 entries\)/,
    'at 80 %: the alarm, with the counts',
  );
  t.match(conntrackAlarm({ count: 262_144, max: 262_144 }, 0.8), /100% full.*new connections are dropped when it is full/);
  t.equal(conntrackAlarm(null, 0.8), null, 'no conntrack: nothing to say');
  t.match(conntrackAlarm({ count: 30, max: 1000 }, 0.02), /3% full/, 'the share is configurable');
});

t.test('the doctor sizes the table or says what fills it', async (t) => {
  t.match(conntrackAdvice({ count: 1000, max: 262_144 }, 0.8), /^1000 of 262144 entries \(0\.4%\); size it for every concurrent flow/);
  t.match(conntrackAdvice({ count: 250_000, max: 262_144 }, 0.8), /95\.4%\): raise net\.netfilter\.nf_conntrack_max/);
});

t.test("the read takes count and max from the namespace's /proc, and says nothing when they are missing or odd", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-use-'));
  t.equal(conntrackUse(dir), null, 'no files: null');
  writeFileSync(join(dir, 'nf_conntrack_count'), '42\n');
  writeFileSync(join(dir, 'nf_conntrack_max'), '262144\n');
  t.same(conntrackUse(dir), { count: 42, max: 262144 });
  writeFileSync(join(dir, 'nf_conntrack_max'), '0\n');
  t.equal(conntrackUse(dir), null, 'a table of size 0 is not a table');
});
