// Unit: the node's check budget. What VIPs ask for (probes shared by VIPs counted once, each at its shortest
// period), the config refusal, the API refusal naming the field, and the content matcher's worker, quarantine and
// per-second budget (a real worker thread; the clock is the test's where the budget's window matters).
import { t } from 'tap';
import { checkBudgetProblem, checkDemand, ConfigError, DEFAULT_CHECKS_PER_SECOND, validateSlbConfig, validateVip } from '@fwlb/config';
import { ContentMatcher } from '@fwlb/health';

const vip = (id: string, n: number, interval = 1000, extra: object = {}) => ({
  id,
  address: `203.0.113.${10 + id.length}`,
  port: 80,
  protocol: 'tcp',
  timers: { interval, response: Math.min(500, interval / 2), retries: 2, deadInterval: 2000, rise: 1 },
  members: Array.from({ length: n }, (_, j) => ({ address: `10.50.${Math.floor(j / 200)}.${10 + (j % 200)}`, port: 8080 })),
  ...extra,
});

t.test('demand: each probe at its shortest period, a probe shared by two VIPs counted once', async (t) => {
  const a = validateVip(vip('a', 10, 1000), []);
  t.equal(checkDemand([a]), 10, '10 members at 1 s: 10 checks/s');
  const fast = validateVip({ ...vip('b', 4, 1000), timers: { interval: 1000, response: 400, retries: 2, deadInterval: 250, rise: 1 } }, []);
  t.equal(checkDemand([fast]), 16, 'a deadInterval shorter than the interval counts (250 ms: 4/s each)');
  const twin = validateVip({ ...vip('twin', 10, 1000), address: '203.0.113.99' }, []);
  t.equal(checkDemand([a, twin]), 10, 'the same members, check and timers behind two VIPs: probed once');
  const other = validateVip({ ...vip('c', 10, 1000), check: { kind: 'icmp' } }, []);
  t.equal(checkDemand([a, other]), 20, 'another check kind is another probe');
  // A resolved VIP is frozen, and its probes are kept with it; a VIP that is not frozen is read each time.
  t.ok(Object.isFrozen(a));
  t.equal(checkDemand([a]), 10, 'asked again: the same');
  const loose = structuredClone(a);
  t.equal(checkDemand([loose]), 10);
  (loose.members as unknown[]).push({ ...loose.members[0], address: '10.50.9.9' });
  t.equal(checkDemand([loose]), 11, 'a VIP that is not frozen counts its members as they are now');
});

t.test('a config over the budget is refused naming the VIPs and the budget; under it, accepted', async (t) => {
  const doc = (budget?: number) => ({ interface: 'up0', ...(budget ? { checkBudget: { checksPerSecond: budget } } : {}), vips: [vip('a', 200, 100)] });
  const e = t.throws(() => validateSlbConfig(doc(1000))) as ConfigError;
  t.ok(e instanceof ConfigError);
  t.match(e.message, /\/vips: 2,000 health checks\/s would exceed this node's budget of 1,000 \(checkBudget\.checksPerSecond\)/);
  t.equal(validateSlbConfig(doc(2000)).checkBudget.checksPerSecond, 2000, 'at the budget: accepted');
  t.equal(validateSlbConfig(doc()).checkBudget.checksPerSecond, DEFAULT_CHECKS_PER_SECOND, 'the default budget');
  t.match(
    (t.throws(() => validateSlbConfig({ ...doc(), checkBudget: { checksPerSecond: 0 } })) as Error).message,
    /checkBudget\/checksPerSecond/,
    'a budget of 0 is refused',
  );
  t.match((t.throws(() => validateSlbConfig({ ...doc(), checkBudget: { extra: 1 } })) as Error).message, /checkBudget/, 'unknown keys are refused');
});

t.test('an API change over the budget is refused naming the field; one that takes load away passes even over it', async (t) => {
  const a = validateVip(vip('a', 100, 1000), []);
  const more = validateVip(vip('a', 150, 1000), []);
  t.equal(checkBudgetProblem([a], [more], 1000), null, 'under the budget');
  const p = checkBudgetProblem([a], [more], 120);
  t.equal(p?.field, '/members', 'more members: the members are named');
  t.match(p?.message, /150 health checks\/s would exceed this node's budget of 120 \(checkBudget\.checksPerSecond\); 100 now/);
  const faster = validateVip(vip('a', 100, 500), []);
  t.equal(checkBudgetProblem([a], [faster], 150)?.field, '/timers/interval', 'a shorter interval: the interval is named');
  const b = validateVip({ ...vip('bb', 30, 1000), members: vip('bb', 30).members.map((m) => ({ ...m, port: 9090 })) }, []);
  t.equal(checkBudgetProblem([a], [a, b], 120)?.field, '/members', 'a new VIP: its members are named');
  t.equal(checkBudgetProblem([faster], [a], 150), null, 'over the budget, a change that asks for less passes');
  t.equal(checkBudgetProblem([a, b], [a], 50), null, 'a VIP removed while over the budget passes');
});

t.test('content matcher: verdicts from the worker thread; the thread that asked stays free', async (t) => {
  const m = new ContentMatcher();
  t.teardown(() => m.close());
  t.same(await m.match('VIP a', 'version \\d+', 'version 42'), { ok: true, reason: 'content matches' });
  t.same(await m.match('VIP a', 'version \\d+', 'version x'), { ok: false, reason: 'content mismatch' });
  // A page that makes (a+)+$ backtrack for seconds; the limit stops it in the worker.
  const evil = 'a'.repeat(30) + '!';
  let ticks = 0;
  const tick = setInterval(() => ticks++, 5);
  const t0 = Date.now();
  const r = await m.match('VIP evil', '^(a+)+$', evil);
  clearInterval(tick);
  t.equal(r.unknown, true, 'a regex that ran into its limit gives no verdict: unknown, not down');
  t.match(r.reason, /content regex of VIP evil ran longer than 20 ms/);
  t.ok(ticks >= 1, `this thread ran its timers meanwhile (${ticks} ticks in ${Date.now() - t0} ms)`);
  t.equal(m.stats.timeouts, 1);
});

t.test('content matcher: a regex that ran into its limit is quarantined for its owner only, with an alarm naming it', async (t) => {
  let now = 1_000_000;
  const m = new ContentMatcher({ now: () => now, quarantineMs: 30_000 });
  t.teardown(() => m.close());
  const evil = 'a'.repeat(30) + '!';
  const first = await Promise.all(Array.from({ length: 20 }, () => m.match('VIP evil', '^(a+)+$', evil)));
  t.ok(
    first.every((r) => r.unknown),
    'all 20 checks of the offender are unknown',
  );
  t.equal(m.stats.matches, 1, "one match ran: the owner's matches run one at a time, the rest met the quarantine");
  t.same(m.alarmed(), ['VIP evil']);
  t.match(m.alarms()[0], /VIP evil/);
  t.same(await m.match('VIP good', 'ok', 'all ok'), { ok: true, reason: 'content matches' }, 'another owner is not held');
  now += 30_001;
  t.same(m.alarmed(), [], 'the quarantine ends');
  t.equal((await m.match('VIP evil', '^(a+)+$', 'aaa')).ok, true, 'then its regex is tried again');
});

t.test('content matcher: over the per-second budget, the owner past its share is unknown, the others run', async (t) => {
  let now = 5_000_000;
  // A 3 ms budget: a few matches of a pattern that costs some milliseconds each (under the 20 ms limit) spend it.
  const m = new ContentMatcher({ now: () => now, regexMsPerSecond: 3 });
  t.teardown(() => m.close());
  const slow = 'a'.repeat(19) + '!';
  let spent = 0;
  let refused = 0;
  for (let i = 0; i < 40 && !refused; i++) {
    const r = await m.match('VIP heavy', '^(a+)+$', slow);
    if (r.unknown && /over the node's budget/.test(r.reason)) refused++;
    else spent++;
  }
  t.equal(refused, 1, `the heavy owner is refused once the budget is spent (after ${spent} matches)`);
  t.same(await m.match('VIP light', 'ok', 'ok'), { ok: true, reason: 'content matches' }, 'an owner under its share still runs');
  t.match(m.alarms().join('\n'), /content regexes of VIP heavy are over the node's budget of 3 ms\/s/);
  now += 1000;
  t.equal((await m.match('VIP heavy', '^(a+)+$', 'aa')).ok, true, 'a new second, a new budget');
});
