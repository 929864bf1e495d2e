// Test helper: poll both balancer nodes until the shared session table holds what each node's kernel holds.
import type { Test } from 'tap';
import type { DriveReport, Lab } from '@fwlb/lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const sessionCount = async (lab: Lab, role: 'outside' | 'inside') => (await lab.api(role, 'GET', '/sessions/count')).body;

/**
 * Resolves with both nodes' counts once Redis's held sessions equal each kernel's (and the outside kernel holds at
 * least `minKernel`); throws after `ms`.
 */
export async function convergeSessions(lab: Lab, ms: number, minKernel = 0) {
  const t0 = Date.now();
  for (;;) {
    const [o, i] = await Promise.all([sessionCount(lab, 'outside'), sessionCount(lab, 'inside')]);
    if (o.redis !== null && o.redis === o.kernel && i.redis === i.kernel && o.kernel >= minKernel) return { ms: Date.now() - t0, o, i };
    if (Date.now() - t0 > ms) throw new Error(`Redis and kernel did not agree within ${ms} ms: ${JSON.stringify({ o, i })}`);
    await sleep(100);
  }
}

/** After a Redis failure: both controllers still run and answer, and none of the long-lived streams broke. */
export async function nodesSurvived(t: Test, lab: Lab, longs: Promise<DriveReport[]>): Promise<void> {
  for (const role of ['outside', 'inside'] as const) {
    t.equal(lab.nodes[role]!.proc.exitCode, null, `the ${role} controller is still running`);
    t.equal((await lab.api(role, 'GET', '/health')).status, 200, `the ${role} controller answers`);
  }
  const l = await longs;
  t.equal(
    l.reduce((a, r) => a + r.long.broken, 0),
    0,
    'no stream broke',
  );
}
