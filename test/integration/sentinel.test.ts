// Integration: the session table under Redis Sentinel (1 primary, 1 replica, 3 sentinels on loopback): the primary
// is killed while a writer runs; writes resume after the failover and nothing crashes.
import { t } from 'tap';
import Redis from 'ioredis';
import { connect, SessionRecord, SessionTable } from '@fwlb/session-table';
import { startSentinels } from '../helpers/redis';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('Sentinel failover', async (t) => {
  const set = await startSentinels(t);
  // Wait until every sentinel knows the replica and the other sentinels.
  const deadline = Date.now() + 20000;
  for (;;) {
    const ok = await Promise.all(
      set.sentinels.map(async (s) => {
        const c = new Redis({ port: s.port, host: s.host, lazyConnect: true, maxRetriesPerRequest: 1 });
        try {
          await c.connect();
          const reps = (await c.call('SENTINEL', 'replicas', 'fwlb')) as unknown[];
          const peers = (await c.call('SENTINEL', 'sentinels', 'fwlb')) as unknown[];
          return reps.length === 1 && peers.length === 2;
        } catch {
          return false;
        } finally {
          c.disconnect();
        }
      }),
    );
    if (ok.every(Boolean)) break;
    if (Date.now() > deadline) throw new Error('sentinels did not settle');
    await sleep(200);
  }
  let crashes = 0;
  const onCrash = () => crashes++;
  process.on('uncaughtException', onCrash);
  t.teardown(() => process.off('uncaughtException', onCrash));
  const redis = connect({ sentinels: set.sentinels, primaryName: 'fwlb', node: 'ob' });
  redis.on('error', () => undefined);
  t.teardown(() => redis.disconnect());
  const table = new SessionTable(redis, 'ob', 'st:');
  let n = 0;
  const log: { at: number; ok: boolean }[] = [];
  let stop = false;
  const writer = (async () => {
    while (!stop) {
      const now = Date.now();
      const rec: SessionRecord = { outerAddr: '198.51.100.11', outerPort: 10000 + (n++ % 50000), innerAddr: '203.0.113.100', innerPort: 80, proto: 6, firewall: 'fw1', node: 'ob', firstSeen: now, expires: now + 60000 };
      log.push({ at: now, ok: await table.put([rec]).then(() => true, () => false) });
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
  t.comment(`writes resumed ${firstOk ? firstOk.at - killedAt : 'never'} ms after the primary was killed; ${log.filter((l) => !l.ok).length} writes failed meanwhile`);
  t.ok(log.filter((l) => l.at > killedAt).some((l) => !l.ok), 'writes failed fast while there was no primary (none blocked)');
  t.equal(crashes, 0, 'no crash');
  const promoted = new Redis({ port: set.replicaPort, maxRetriesPerRequest: 1 });
  t.teardown(() => promoted.disconnect());
  t.match(((await promoted.call('ROLE')) as unknown[])[0], 'master', 'the replica was promoted');
  t.ok((await table.count()) > 0, 'the new primary holds the sessions');
});
