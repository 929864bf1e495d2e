// Integration: both balancer nodes share their session table on a Redis Cluster (3 masters, 3 replicas) in the lab's
// management network: they find it, write their sessions, agree on the firewalls through it; a master dies during
// traffic, its replica is promoted, no controller crashes, the writes resume and no stream breaks. Then, on the
// cluster after its failover: a firewall leaves and rejoins under long-lived streams and both nodes lose their state
// (conntrack flushed, controllers restarted): the pins come back from the cluster and no stream breaks.
import { t } from 'tap';
import { drive, ECHO_PORT, MGMT_NET, portBase } from '@fwlb/lab';
import { tableKeys } from '@fwlb/session-table';
import { startLab } from '../helpers/lab';
import { convergeSessions, firewallChanges, nodesSurvived } from '../helpers/sessions';
import { startCluster } from '../helpers/redis';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const roles = ['outside', 'inside'] as const;

t.test('both balancer nodes on a Redis Cluster: a master dies during traffic, writes resume, no stream breaks', async (t) => {
  const base = portBase(10006);
  const host = `${MGMT_NET}.1`;
  const nodes = [0, 1, 2, 3, 4, 5].map((i) => ({ host, port: base + i }));
  const lab = await startLab(t, { mgmt: true, sessionTable: { cluster: nodes.slice(0, 2) } });
  const cluster = await startCluster(t, { netns: lab.ns('rd'), host, base });
  t.teardown(() => {
    if (process.env.FWLB_TEST_LOGS)
      for (const r of roles) for (const l of lab.nodes[r]?.log ?? []) if (!/"request"/.test(l)) console.error(`${r}: ${l.slice(0, 300)}`);
  });
  const converge = async (ms: number) => (await convergeSessions(lab, ms, 1)).ms;

  const vip = `${lab.t.vip}:${ECHO_PORT}`;
  const longs = Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 10, durationMs: 15000, intervalMs: 100 } })));
  await sleep(1000);
  t.ok((await converge(20000)) >= 0, 'the nodes found the cluster from two seed nodes and wrote their sessions');
  const epochOf = async (r: (typeof roles)[number]) => (await lab.api(r, 'GET', '/status')).body.agreement?.epoch;
  const e0 = Date.now();
  let epochs: unknown[] = [];
  while (Date.now() - e0 < 20000 && !(epochs = await Promise.all(roles.map(epochOf))).every((e) => typeof e === 'number' && e >= 1)) await sleep(200);
  t.ok(
    epochs.every((e) => typeof e === 'number' && e >= 1),
    `both nodes applied an epoch published through the cluster (${epochs})`,
  );
  // The master of the control keys (leader lock, epochs, views): the hardest one to lose.
  const victim = cluster.masterOf(tableKeys('fwlb:').leader);
  const killedAt = Date.now();
  await cluster.killMaster(victim);
  await sleep(300);
  await drive(lab, 'c1', { short: { targets: [vip], count: 50, concurrency: 5 } });
  const ms = await converge(30000);
  t.comment(`Redis matched both kernels again ${Date.now() - killedAt} ms after the master was killed`);
  t.ok(ms >= 0, 'session writes resumed through the promoted replica');
  t.not(cluster.masterOf(tableKeys('fwlb:').leader), victim, 'a replica serves the control slot now');
  // The leader publishes on the promoted replica; both nodes apply the same epoch again.
  const l0 = Date.now();
  let later: unknown[] = [];
  while (Date.now() - l0 < 20000) {
    later = await Promise.all(roles.map(epochOf));
    if (later[0] === later[1] && typeof later[0] === 'number') break;
    await sleep(200);
  }
  t.ok(later[0] === later[1] && typeof later[0] === 'number', `both nodes apply the same epoch after the failover (${later})`);
  await nodesSurvived(t, lab, longs);

  const r = await firewallChanges(lab, t, async () => {
    const pins = await Promise.all(roles.map(async (role) => (await lab.api(role, 'GET', '/status')).body.pins));
    t.ok(
      pins.every((p) => p > 0),
      `on the cluster, sessions off their bucket's firewall are pinned on both nodes: ${pins}`,
    );
  });
  t.equal(r.streams, 200, '200 long-lived streams ran while fw2 left and rejoined and both nodes lost their state');
  t.equal(r.broken, 0, 'no stream broke');
  t.equal(r.drops, 0, 'no firewall dropped a packet');
  const pinned = await lab.api('outside', 'GET', '/status');
  t.ok(
    (pinned.body.counters.pinned?.packets ?? 0) > 0,
    `packets found their firewall through pins loaded from the cluster: ${JSON.stringify(pinned.body.counters.pinned)}`,
  );
});
