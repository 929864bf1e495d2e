// Test helpers: poll both balancer nodes until the shared session table holds what each node's kernel holds; a
// firewall that leaves and rejoins under long-lived streams, then both nodes losing their state.
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { drive, ECHO_PORT, inNs } from '@fwlb/lab';
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

const token = (lab: Lab) => lab.t.nodes.outside.api!.token!;
const both = async (lab: Lab, method: string, path: string, body?: unknown) =>
  Promise.all((['outside', 'inside'] as const).map((r) => lab.api(r, method, path, body, token(lab))));

/** 100 streams before fw2 leaves, 100 while it is out; fw2 rejoins; both nodes lose conntrack and restart. */
export async function firewallChanges(lab: Lab, t: { equal(a: unknown, b: unknown, m: string): unknown }, onRejoined?: () => Promise<void>) {
  const vip = `${lab.t.vip}:${ECHO_PORT}`;
  const stream = (ms: number) =>
    Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 50, durationMs: ms, intervalMs: 200, timeoutMs: 3000 } })));
  lab.resetFirewallCounters();
  const a = stream(16000);
  await sleep(1500);
  for (const r of await both(lab, 'PUT', '/firewalls/fw2/admin', { enabled: false })) t.equal(r.status, 200, 'fw2 leaves the table');
  await sleep(300);
  const b = stream(13000);
  await sleep(1500);
  for (const r of await both(lab, 'PUT', '/firewalls/fw2/admin', { enabled: true })) t.equal(r.status, 200, 'fw2 rejoins');
  await sleep(1000);
  await onRejoined?.();
  // Both nodes lose their state, as a reboot would: conntrack flushed, the kernel's record of which firewall each
  // connection started on (the conn sets, with a session table) emptied, and the controllers restarted.
  for (const role of ['outside', 'inside'] as const) await lab.killNode(role);
  for (const n of ['ob', 'ib']) {
    inNs(lab.ns(n), ['conntrack', '-F']);
    for (const k of [0, 1, 2]) spawnSync('ip', ['netns', 'exec', lab.ns(n), 'nft', 'flush', 'set', 'inet', 'fwlb', `conn${k}`], { stdio: 'ignore' });
  }
  await lab.startNode('outside');
  await lab.startNode('inside');
  const [ra, rb] = await Promise.all([a, b]);
  const broken = [...ra, ...rb].reduce((n, r) => n + r.long.broken, 0);
  const drops = lab.firewallCounters().reduce((n, f) => n + f.drops, 0);
  return { broken, drops, streams: [...ra, ...rb].reduce((n, r) => n + r.long.ok + r.long.broken, 0) };
}
