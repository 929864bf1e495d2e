// Unit: the health timer rules with a fake clock and no jitter, table-driven; no test sleeps.
import { t } from 'tap';
import { HealthTimer, TimerConfig, HealthEvent, ProbeResult, TimerConfigError } from '@fwlb/health';

/** Runs checks at the timer's own schedule until `until`, calling tick every 10 ms of fake time. */
function simulate(cfg: TimerConfig, probe: (now: number) => ProbeResult, until: number, initial: 'up' | 'down' = 'up') {
  const timer = new HealthTimer({ jitter: 0, ...cfg }, 0, () => 0.5, initial);
  const events: HealthEvent[] = [];
  const checks: number[] = [];
  for (let now = 0; now <= until; now += 10) {
    const tk = timer.tick(now);
    if (tk) events.push(tk);
    if (now >= timer.nextCheckAt) {
      checks.push(now);
      const ev = timer.record(probe(now), now);
      if (ev) events.push(ev);
    }
  }
  return { timer, events, checks };
}

const fail = (reason = 'refused'): ProbeResult => ({ ok: false, reason, latencyMs: 1 });
const ok: ProbeResult = { ok: true, latencyMs: 2 };

const cases: {
  name: string;
  cfg: TimerConfig;
  probe: (n: number) => ProbeResult;
  until: number;
  initial?: 'up' | 'down';
  want: { to: string; at: number; reason: RegExp }[];
  checks?: number[];
}[] = [
  {
    name: 'retries: DOWN on the 3rd failed attempt, retries run at interval',
    cfg: { interval: 100, response: 50, retries: 3, timeout: 10000 },
    probe: (n) => (n >= 200 ? fail() : ok),
    until: 500,
    want: [{ to: 'down', at: 400, reason: /refused \(3 of 3 attempts failed\)/ }],
  },
  {
    name: 'timeout beats retries',
    cfg: { interval: 100, response: 50, retries: 10, timeout: 250 },
    probe: (n) => (n >= 100 ? fail('timeout') : ok),
    until: 600,
    want: [{ to: 'down', at: 350, reason: /timeout \(timeout 250 ms since first failure\)/ }],
  },
  {
    name: 'a success resets the failure count',
    cfg: { interval: 100, response: 50, retries: 2, timeout: 10000 },
    probe: (n) => (n === 100 || n === 300 || n === 500 ? fail() : ok),
    until: 600,
    want: [],
  },
  {
    name: 'dead interval while DOWN, rise successes to come back',
    cfg: { interval: 100, response: 50, retries: 1, deadInterval: 500, rise: 3 },
    probe: (n) => (n < 1000 ? fail('status 503') : ok),
    until: 3000,
    want: [
      { to: 'down', at: 100, reason: /status 503/ },
      { to: 'up', at: 2100, reason: /3 of 3 checks passed/ },
    ],
    checks: [100, 600, 1100, 1600, 2100, 2200, 2300, 2400, 2500, 2600, 2700, 2800, 2900, 3000],
  },
  {
    name: 'a failure while DOWN restarts the rise count',
    cfg: { interval: 100, response: 50, retries: 1, deadInterval: 100, rise: 2 },
    probe: (n) => (n === 100 || n === 300 ? fail() : ok),
    until: 500,
    initial: 'up',
    want: [
      { to: 'down', at: 100, reason: /refused/ },
      { to: 'up', at: 500, reason: /2 of 2/ },
    ],
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const r = simulate(c.cfg, c.probe, c.until, c.initial);
    t.equal(r.events.length, c.want.length, `events: ${JSON.stringify(r.events)}`);
    c.want.forEach((w, i) => {
      t.equal(r.events[i]?.to, w.to);
      t.equal(r.events[i]?.at, w.at);
      t.match(r.events[i]?.reason, w.reason);
    });
    if (c.checks) t.same(r.checks, c.checks, 'check times');
  });
}

t.test('events carry latency', async (t) => {
  const r = simulate({ interval: 100, response: 50, retries: 1 }, () => fail(), 100);
  t.equal(r.events[0].latencyMs, 1);
});

t.test('response >= interval is rejected with a clear message', async (t) => {
  const e = t.throws(() => new HealthTimer({ interval: 100, response: 100, retries: 3 }, 0)) as unknown as TimerConfigError;
  t.equal(e.code, 'FWLB_HEALTH_TIMERS_INVALID');
  t.equal(e.field, 'response');
  t.match(e.message, /response \(100 ms\) must be smaller than interval \(100 ms\)/);
  t.throws(() => new HealthTimer({ interval: 100, response: 50, retries: 0 }, 0), /retries/);
  t.throws(() => new HealthTimer({ interval: 100, response: 50, retries: 1, jitter: 1 }, 0), /jitter/);
});

t.test('jitter spreads check times within ±jitter', async (t) => {
  let seq = 0;
  const rand = () => [0, 1, 0.5][seq++ % 3];
  const h = new HealthTimer({ interval: 1000, response: 100, retries: 3, jitter: 0.2 }, 0, rand);
  const times = [h.nextCheckAt];
  for (let i = 0; i < 2; i++) {
    const now = h.nextCheckAt;
    h.record(ok, now);
    times.push(h.nextCheckAt - now);
  }
  t.same(times, [800, 1200, 1000]);
});

t.test('anyOf: up while any address answers, the failure names every address', async (t) => {
  const { anyOf } = await import('@fwlb/health');
  const answers = new Map<string, ProbeResultLike>([
    ['172.17.0.1', { ok: false, reason: 'timeout' }],
    ['172.17.0.2', { ok: true, latencyMs: 3 }],
  ]);
  const asked: string[] = [];
  const fake = { kind: 'icmp' as const, check: async (target: { address: string }) => (asked.push(target.address), answers.get(target.address)!) };
  const c = anyOf(fake, ['172.17.0.1', '172.17.0.2']);
  t.same(await c.check({ address: 'ignored' }, 100), { ok: true, latencyMs: 3 });
  t.same(asked.sort(), ['172.17.0.1', '172.17.0.2'], 'every address is probed');
  answers.set('172.17.0.2', { ok: false, reason: 'refused' });
  t.same(await c.check({ address: 'ignored' }, 100), { ok: false, reason: '172.17.0.1: timeout; 172.17.0.2: refused' });
  answers.set('172.17.0.1', { ok: false, unknown: true, reason: 'helper down' });
  answers.set('172.17.0.2', { ok: false, unknown: true, reason: 'helper down' });
  t.equal((await c.check({ address: 'ignored' }, 100)).unknown, true, 'no probe could run: no evidence either way');
  t.throws(() => anyOf(fake, []), RangeError);
});

interface ProbeResultLike {
  ok: boolean;
  reason?: string;
  latencyMs?: number;
  unknown?: boolean;
}

/**
 * Checks that time out, as the monitor records them: `response` after they were sent, the next one sent a
 * (jittered) interval after that record. Returns the events and how many attempts had failed at DOWN.
 */
function timingOut(cfg: TimerConfig, rand: () => number) {
  const timer = new HealthTimer(cfg, 0, rand);
  let failed = 0;
  for (let i = 0; i < 20; i++) {
    const recordedAt = timer.nextCheckAt + cfg.response;
    failed++;
    const ev = timer.tick(recordedAt) ?? timer.record({ ok: false, reason: 'timeout' }, recordedAt);
    if (ev) return { ev, failed };
  }
  return { ev: null, failed };
}

t.test('the default timeout lets `retries` checks that time out all come back, at any jitter', async (t) => {
  const cfg = { interval: 300, response: 250, retries: 3 };
  t.equal(new HealthTimer(cfg, 0).cfg.timeout, Math.ceil(3 * (300 * 1.1 + 250)), 'retries x (jittered interval + response)');
  for (const r of [0, 0.5, 1]) {
    const { ev, failed } = timingOut(cfg, () => r);
    t.equal(failed, 3, `rand ${r}: DOWN on the 3rd attempt`);
    t.match(ev?.reason, /3 of 3 attempts failed/, `rand ${r}: by retries, not cut short by the timeout rule (${ev?.reason})`);
  }
  const set = timingOut({ ...cfg, timeout: 400 }, () => 1);
  t.match(set.ev?.reason, /timeout 400 ms since first failure/, 'a timeout set in the config still cuts it short');
});

t.test('time the node excuses (its own stall) does not count towards the timeout rule', async (t) => {
  const h = new HealthTimer({ interval: 100, response: 50, retries: 10, timeout: 250, jitter: 0 }, 0);
  h.record(fail('timeout'), 100);
  h.excuse(1000);
  t.equal(h.tick(400), null, '300 ms after the first failure, 1,000 ms of them excused: still up');
  t.equal(h.record(fail('timeout'), 1200), null, 'a second failure 1,100 ms later, 1,000 excused: still up');
  const ev = h.tick(1360);
  t.match(ev?.reason, /timeout 250 ms since first failure/, "DOWN once 250 ms of the member's own time have passed");
  const fresh = new HealthTimer({ interval: 100, response: 50, retries: 10, timeout: 250, jitter: 0 }, 0);
  fresh.excuse(1000);
  fresh.record(fail('timeout'), 100);
  t.match(fresh.tick(360)?.reason, /since first failure/, 'an excuse before any failure carries nothing forward');
});

t.test('a monitor whose event loop stalls between checks does not count the stall against the member', async (t) => {
  const { HealthMonitor } = await import('@fwlb/health');
  // A fake clock that the "stall" moves forward: every check after the first runs 2 s after it was due.
  let clock = 0;
  const results: ProbeResult[] = [];
  const events: HealthEvent[] = [];
  let checks = 0;
  const checker = {
    kind: 'http' as const,
    check: async () => {
      checks++;
      clock += 250; // the check times out at its deadline
      return { ok: false, reason: 'timeout (no response)' };
    },
  };
  const m = new HealthMonitor({
    name: 'm',
    checker,
    target: { address: '192.0.2.1', port: 80 },
    timers: { interval: 300, response: 250, retries: 3, jitter: 0 },
    onEvent: (_n, ev) => events.push(ev),
    onResult: (_n, r) => results.push(r),
    now: () => clock,
  });
  // Drive it by hand: each timer callback runs when `clock` reaches the due time plus the stall.
  const origSetTimeout = global.setTimeout;
  const queue: (() => void)[] = [];
  (global as unknown as { setTimeout: unknown }).setTimeout = (f: () => void) => (queue.push(f), { unref() {} }) as unknown as NodeJS.Timeout;
  t.teardown(() => {
    (global as unknown as { setTimeout: unknown }).setTimeout = origSetTimeout;
    m.stop();
  });
  m.start();
  for (let i = 0; i < 3 && queue.length; i++) {
    clock = m.timer.nextCheckAt + (i === 0 ? 0 : 2000);
    queue.shift()!();
    await new Promise((r) => setImmediate(r));
  }
  (global as unknown as { setTimeout: unknown }).setTimeout = origSetTimeout;
  t.equal(checks, 3, 'three checks ran');
  t.equal(events.length, 1, `one event: ${JSON.stringify(events)}`);
  t.match(events[0]?.reason, /3 of 3 attempts failed/, 'DOWN after all three attempts; the 4 s of stall did not cut it short');
});
