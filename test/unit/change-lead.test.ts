// Unit: the extra lead of an admin change that moves many sessions (read and pin time, bounded).
import { t } from 'tap';
import { changeLeadMs, LEAD_MAX_MS, LEAD_MIN_SESSIONS } from '@fwlb/balancer';

t.test('a change that moves few sessions needs no extra lead', async (t) => {
  t.equal(changeLeadMs(0, null), 0);
  t.equal(changeLeadMs(LEAD_MIN_SESSIONS - 1, 10), 0, 'just below the threshold, even on a slow reader');
});

t.test("above the threshold: the read at the node's own rate plus the pins", async (t) => {
  // 100,000 sessions: 100,000 / 200 a ms to read + 100,000 / 250 a ms to pin = 500 + 400 ms.
  t.equal(changeLeadMs(100_000, 200), 900);
  t.equal(changeLeadMs(100_000, null), 1400, 'an unmeasured node reads 100 a ms: 1,000 + 400 ms');
  t.ok(changeLeadMs(100_000, 50) > changeLeadMs(100_000, 500), 'a slower reader waits longer');
  t.equal(changeLeadMs(LEAD_MIN_SESSIONS, 100_000), Math.ceil(LEAD_MIN_SESSIONS / 100_000 + LEAD_MIN_SESSIONS / 250), 'at the threshold');
});

t.test('never more than the bound: the request answers once the change is in force', async (t) => {
  t.equal(changeLeadMs(10_000_000, 10), LEAD_MAX_MS);
});
