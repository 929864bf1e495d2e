// Integration: the session table under Redis Sentinel (1 primary, 1 replica, 3 sentinels): the primary is killed
// while a writer runs (on loopback), then while both balancer nodes sync sessions through the lab's management
// network; writes resume after the failover and nothing crashes.
import { t } from 'tap';
import Redis from 'ioredis';
import { connect, SessionRecord, SessionTable, DEFAULT_LAYOUT } from '@fwlb/session-table';
import { drive, ECHO_PORT, MGMT_NET, portBase } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { convergeSessions, nodesSurvived } from '../helpers/sessions';
import { startSentinels } from '../helpers/redis';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('Sentinel failover', async (t) => {
  const set = await startSentinels(t);
  let crashes = 0;
  const onCrash = () => crashes++;
  process.on('uncaughtException', onCrash);
  t.teardown(() => process.off('uncaughtException', onCrash));
  const redis = connect({ sentinels: set.sentinels, primaryName: 'fwlb', node: 'ob' });
  redis.on('error', () => undefined);
  t.teardown(() => redis.disconnect());
  const table = new SessionTable(redis, 'ob', 'st:', DEFAULT_LAYOUT);
  let n = 0;
  const log: { at: number; ok: boolean }[] = [];
  let stop = false;
  const writer = (async () => {
    while (!stop) {
      const now = Date.now();
      const rec: SessionRecord = {
        outerAddr: '198.51.100.11',
        outerPort: 10000 + (n++ % 50000),
        innerAddr: '203.0.113.100',
        innerPort: 80,
        proto: 6,
        firewall: 'fw1',
        node: 'ob',
        firstSeen: now,
        expires: now + 60000,
      };
      log.push({
        at: now,
        ok: await table.put([rec]).then(
          () => true,
          () => false,
        ),
      });
      await sleep(50);
    }
  })();
  await sleep(1500);
  t.ok(log.filter((l) => l.ok).length > 10, 'writes go to the primary');
  const killedAt = Date.now();
  await set.killPrimary();
  const resumeBy = killedAt + 20000;
  while (Date.now() < resumeBy && !log.some((l) => l.at > killedAt + 100 && l.ok)) await sleep(100);
  await sleep(1000);
  stop = true;
  await writer;
  const firstOk = log.find((l) => l.at > killedAt + 100 && l.ok);
  t.ok(firstOk, 'writes resumed after the failover');
  t.comment(
    `writes resumed ${firstOk ? firstOk.at - killedAt : 'never'} ms after the primary was killed; ${log.filter((l) => !l.ok).length} writes failed meanwhile`,
  );
  t.ok(
    log.filter((l) => l.at > killedAt).some((l) => !l.ok),
    'writes failed fast while there was no primary (none blocked)',
  );
  t.equal(crashes, 0, 'no crash');
  const promoted = new Redis({ port: set.replicaPort, maxRetriesPerRequest: 1 });
  t.teardown(() => promoted.disconnect());
  t.match(((await promoted.call('ROLE')) as unknown[])[0], 'master', 'the replica was promoted');
  t.ok((await table.count()) > 0, 'the new primary holds the sessions');
});

t.test('both balancer nodes on Sentinel: the primary dies during traffic, no controller crashes, writes resume', async (t) => {
  const base = portBase();
  const host = `${MGMT_NET}.1`;
  const sentinels = [2, 3, 4].map((i) => ({ host, port: base + i }));
  const lab = await startLab(t, { mgmt: true, sessionTable: { sentinels, primaryName: 'fwlb' } });
  const set = await startSentinels(t, { netns: lab.ns('rd'), host, base });
  const converge = async (ms: number) => (await convergeSessions(lab, ms, 1)).ms;

  const vip = `${lab.t.vip}:${ECHO_PORT}`;
  const longs = Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [vip], count: 10, durationMs: 12000, intervalMs: 100 } })));
  await sleep(1000);
  t.ok((await converge(15000)) >= 0, 'the nodes found the primary through the sentinels and wrote their sessions');
  const killedAt = Date.now();
  await set.killPrimary();
  await sleep(300);
  await drive(lab, 'c1', { short: { targets: [vip], count: 50, concurrency: 5 } });
  const ms = await converge(20000);
  t.comment(`Redis matched both kernels again ${Date.now() - killedAt} ms after the primary was killed`);
  t.ok(ms >= 0, 'session writes resumed on the promoted replica');
  await nodesSurvived(t, lab, longs);
});
