// Unit: SLB member checks start on a grid (the checks due in one slot share a wakeup and one write to the probe
// helper), and the periodic work of a large table keeps to a share of a core by the CPU it measured.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { Checker, HealthMonitor } from '@fwlb/health';
import { cpuMs, periodForShare } from '@fwlb/service';

function run(gridMs: number, ms: number): Promise<number[]> {
  const at: number[] = [];
  const checker: Checker = {
    kind: 'icmp',
    check: async () => {
      at.push(Date.now());
      return { ok: true, reason: 'up' };
    },
  };
  const m = new HealthMonitor({
    name: 'm',
    checker,
    target: { address: '192.0.2.1' },
    timers: { interval: 20, response: 10, retries: 2, jitter: 0 },
    gridMs,
    onEvent: () => undefined,
  });
  m.start();
  return new Promise((resolve) =>
    setTimeout(() => {
      m.stop();
      resolve(at);
    }, ms),
  );
}

t.test('on a 100 ms grid, a 20 ms check runs at most once a slot', async (t) => {
  const [free, grid] = await Promise.all([run(0, 1000), run(100, 1000)]);
  t.ok(free.length >= 20, `without a grid: ${free.length} checks in 1 s`);
  t.ok(grid.length <= 11, `on the grid: ${grid.length} checks in 1 s`);
  t.ok(grid.length >= 5, 'the grid still runs the checks');
  // A timer may fire a millisecond before Date.now() reaches its slot: the gaps tell the grid, not the slot numbers.
  const gaps = grid.slice(1).map((x, i) => x - grid[i]);
  t.ok(Math.min(...gaps) >= 90, `checks a slot apart (gaps ${gaps.join(', ')} ms)`);
});

t.test('a share of a core: the period stretches with the cost, and never below the configured one', async (t) => {
  t.equal(periodForShare(2000, 1, 0.0025), 2000);
  t.equal(periodForShare(2000, 50, 0.0025), 20000);
  t.equal(periodForShare(10000, 100, 0.005), 20000);
});

t.test("the CPU measured includes a child's", async (t) => {
  const before = cpuMs();
  const r = spawnSync('python3', ['-c', 'import time\nt=time.process_time()\nwhile time.process_time()-t<0.15: pass']);
  t.equal(r.status, 0);
  const used = cpuMs() - before;
  t.ok(used >= 100, `a child that burned 150 ms counts (${used} ms measured)`);
});
