// Integration: a million sessions in the shared table. A bucket table change makes a node read only the moved
// buckets' sessions (counted), and pin those that need it; then both nodes lose their state and load the million
// again while long-lived streams run: none breaks. The times are reported, not asserted (timings are noisy here).
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { buildJoinedTable, bucketOf } from '@fwlb/flowhash';
import type { Redis } from 'ioredis';
import { connect, ready, SessionRecord, SessionTable } from '@fwlb/session-table';
import { drive, ECHO_PORT, inNs, Lab } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { startRedisOnSocket } from '../helpers/redis';
import { sessionCount } from '../helpers/sessions';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const N = 1_000_000;
const roles = ['outside', 'inside'] as const;

/** Until every node's pins reach `n` (ms it took), or throw after `ms`. */
async function pinsReach(lab: Lab, n: number, ms: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const pins = await Promise.all(roles.map(async (r) => (await lab.api(r, 'GET', '/status').catch(() => ({ body: {} }))).body?.pins ?? 0));
    if (pins.every((p: number) => p >= n)) return Date.now() - t0;
    if (Date.now() - t0 > ms) throw new Error(`pins ${pins} did not reach ${n} within ${ms} ms`);
    await sleep(100);
  }
}

t.test('a million sessions: a change reads the moved buckets only; both nodes lose their state and no stream breaks', async (t) => {
  const { url } = await startRedisOnSocket(t);
  // Re-syncs every 30 s: a record lives 60 to 120 s unless refreshed, longer than this test needs.
  const lab = await startLab(t, { sessionTable: { url, resyncSeconds: 30 } });
  t.teardown(() => {
    for (const r of roles) for (const l of lab.nodes[r]?.log ?? []) if (/load|reconcil|pins|session/.test(l)) console.error(`${r}: ${l.slice(0, 300)}`);
  });
  const cfg = lab.t.nodes.outside;
  const ids = cfg.firewalls.map((f) => f.id);
  const layout = { seed: cfg.hash.seed, buckets: cfg.hash.buckets ?? 251 };
  const home = buildJoinedTable(ids, layout.buckets).owner;
  const tok = cfg.api!.token!;
  const vip = `${lab.t.vip}:${ECHO_PORT}`;
  lab.resetFirewallCounters();
  const streams = Promise.all(
    ['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 25, durationMs: 120000, intervalMs: 500, timeoutMs: 3000 } })),
  );

  // A million answered sessions recorded by a sibling node through the table's own writer, each on its bucket's
  // firewall (what the hash gave it): none is an exception until the table changes.
  // The test's own bulk writer, not a node: on a loaded machine one of its batches can wait longer than the nodes'
  // 5 s command timeout, and a failed batch would fail the test for nothing the nodes did.
  const redis = await ready(connect({ url, node: 'sibling' }, { commandTimeout: 60000 }), 5000);
  t.teardown(() => redis.disconnect());
  const writer = new SessionTable(redis, 'sibling', 'fwlb:', layout);
  const moved = new Set(home.flatMap((o, b) => (o === 'fw2' ? [b] : [])));
  let onFw2 = 0;
  const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await (redis as Redis).info('memory'))![1]);
  const mem0 = await usedMemory();
  const w0 = Date.now();
  for (let i = 0; i < N; i += 50000) {
    const now = Date.now();
    const chunk: SessionRecord[] = [];
    for (let j = i; j < i + 50000; j++) {
      const k = {
        outerAddr: `10.${64 + (j >> 16)}.${(j >> 8) & 255}.${j & 255}`,
        outerPort: 1024 + (j % 50000),
        innerAddr: lab.t.vip,
        innerPort: ECHO_PORT,
        proto: 6,
      };
      const b = bucketOf(k, layout.seed, layout.buckets);
      if (moved.has(b)) onFw2++;
      chunk.push({ ...k, firewall: home[b]!, node: 'sibling', firstSeen: now, expires: now + 600000 });
    }
    await writer.put(chunk);
  }
  const writeMs = Date.now() - w0;
  t.comment(`Redis used ${Math.round(((await usedMemory()) - mem0) / N)} bytes per session (used_memory before and after)`);
  t.comment(`wrote ${N} sessions in ${writeMs} ms (${Math.round(N / (writeMs / 1000))}/s); ${onFw2} of them on fw2's ${moved.size} buckets`);
  t.ok((await writer.count()) >= N, 'Redis holds the million');

  // The change: fw2 is disabled (drained): its buckets move, its sessions stay on it through pins.
  const before = await Promise.all(roles.map(async (r) => (await sessionCount(lab, r)).sync));
  const logFrom = roles.map((r) => lab.nodes[r]!.log.length);
  const c0 = Date.now();
  // Watched from the requests on: a change that moves this many sessions takes effect once they can be pinned.
  const pinned = pinsReach(lab, onFw2, 180000);
  const puts = await Promise.all(roles.map((r) => lab.api(r, 'PUT', '/firewalls/fw2/admin', { enabled: false }, tok)));
  roles.forEach((r, i) => t.equal(puts[i].status, 200, `fw2 disabled on the ${r} node`));
  const inForce = Date.now() - c0;
  const pinMs = await pinned;
  const lead = roles.flatMap((r, i) => lab.nodes[r]!.log.slice(logFrom[i]).filter((l) => l.includes('later than usual')));
  t.comment(
    `fw2 disabled on both nodes: in force ${inForce} ms after the requests, every fw2 session pinned on both nodes ${pinMs} ms after them ` +
      `(${pinMs <= inForce ? `${inForce - pinMs} ms before` : `${pinMs - inForce} ms after`} the change took effect)`,
  );
  for (const l of lead) t.comment(`lead: ${JSON.parse(l).msg}`);
  // Each pass of the change: what it wrote and where its time went.
  roles.forEach((r, i) => {
    for (const l of lab.nodes[r]!.log.slice(logFrom[i]).filter((x) => /"(reconciled:|reloaded) /.test(x))) {
      const j = JSON.parse(l);
      t.comment(`${r} node: ${j.msg} at +${Date.parse(j.time) - c0} ms${j.ms ? `, ${JSON.stringify(j.ms)}` : ''}`);
    }
  });
  await sleep(2 * 100 + 1500); // the second read, after the siblings' writes in flight
  const after = await Promise.all(roles.map(async (r) => (await sessionCount(lab, r)).sync));
  roles.forEach((r, i) => {
    const buckets = after[i].bucketsRead - before[i].bucketsRead;
    const records = after[i].recordsRead - before[i].recordsRead;
    // Read at once, and again after the writes in flight landed (buckets that move during a read join the next).
    t.ok(buckets >= moved.size && buckets <= 2 * moved.size, `the ${r} node read fw2's ${moved.size} buckets (${buckets} bucket reads), no other`);
    t.ok(records >= onFw2 && records <= 2 * (onFw2 + 1000), `and their sessions only: ${records} records read for ${onFw2} moved, of ${N}`);
  });

  // Both nodes lose their state, as a reboot would, and load the million again.
  for (const role of roles) await lab.killNode(role);
  for (const n of ['ob', 'ib']) {
    inNs(lab.ns(n), ['conntrack', '-F']);
    for (const k of [0, 1, 2]) spawnSync('ip', ['netns', 'exec', lab.ns(n), 'nft', 'flush', 'set', 'inet', 'fwlb', `conn${k}`], { stdio: 'ignore' });
  }
  const r0 = Date.now();
  for (const role of roles) await lab.startNode(role, [], 180000);
  const back = Date.now() - r0 + (await pinsReach(lab, onFw2, 180000));
  t.comment(`both nodes restarted without conntrack state: their pins were back ${back} ms after the first start`);
  // `ip netns exec` execs the node in place: the pid is the controller's.
  const rss = roles.map((r) => Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${lab.nodes[r]!.proc.pid}/status`, 'utf8'))![1]) / 1024));
  t.comment(`controller RSS with the million cached: ${rss.join(' and ')} MB`);
  const counts = await Promise.all(roles.map(async (r) => (await sessionCount(lab, r)).sync.cached));
  t.ok(
    counts.every((c) => c >= N),
    `each node loaded the million into its cache (${counts})`,
  );
  const ran = await streams;
  const broken = ran.reduce((n, r) => n + r.long.broken, 0);
  const total = ran.reduce((n, r) => n + r.long.ok + r.long.broken, 0);
  t.equal(total, 50, '50 long-lived streams ran through it all');
  t.equal(broken, 0, 'none broke');
  t.equal(
    lab.firewallCounters().reduce((n, f) => n + f.drops, 0),
    0,
    'no firewall dropped a packet',
  );
});
