// Test helper: poll both balancer nodes until the shared session table holds what each node's kernel holds.
import type { Lab } from '@fwlb/lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const sessionCount = async (lab: Lab, role: 'outside' | 'inside') => (await lab.api(role, 'GET', '/sessions/count')).body;

/** Resolves with both nodes' counts once Redis's held sessions equal each kernel's; throws after `ms`. */
export async function convergeSessions(lab: Lab, ms: number) {
  const t0 = Date.now();
  for (;;) {
    const [o, i] = await Promise.all([sessionCount(lab, 'outside'), sessionCount(lab, 'inside')]);
    if (o.redis !== null && o.redis === o.kernel && i.redis === i.kernel) return { ms: Date.now() - t0, o, i };
    if (Date.now() - t0 > ms) throw new Error(`Redis and kernel did not agree within ${ms} ms: ${JSON.stringify({ o, i })}`);
    await sleep(100);
  }
}
