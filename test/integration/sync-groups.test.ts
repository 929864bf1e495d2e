// Integration: firewall sync groups. fw1 and fw2 share session state (conntrackd FTFW, write-through),
// fw3 is alone. A firewall that fails silently gives its buckets to its group peer, so its sessions keep flowing
// through the firewall that holds their state; without the group (or without a peer) they break.
import { t } from 'tap';
import { bucketOf, buildGroupedTable, buildJoinedTable, canonicalKey, PROTO_TCP, PROTO_UDP, splitHostPort } from '@fwlb/flowhash';
import { drive, ECHO_PORT, DriveReport, Lab } from '@fwlb/lab';
import { startLab } from '../helpers/lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ALL = ['fw1', 'fw2', 'fw3'];

t.test('sync groups', async (t) => {
  // Dual stack: conntrackd syncs IPv6 sessions as well, and IPv6 streams ride along where fw2 fails.
  const lab = await startLab(t, { syncGroups: [['fw1', 'fw2']], ipv6: true });
  await lab.startSync();
  const cfg = lab.t.nodes.outside;
  const buckets = cfg.hash.buckets!;
  const home = buildJoinedTable(ALL, buckets);
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const vip = lab.t.vip;
  const target = `${vip}:${ECHO_PORT}`;
  const bucket = (saddr: string, sport: number, proto = PROTO_TCP) =>
    bucketOf(canonicalKey('outside', { saddr, sport, daddr: vip, dport: ECHO_PORT, proto }), cfg.hash.seed, buckets);

  /** 90 long-lived streams (45 per client) running through `during`; each stream's bucket and whether it broke. */
  const streams = async (during: () => Promise<void>) => {
    const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: [target], count: 45, durationMs: 14000, intervalMs: 100 } })));
    await sleep(1500);
    await during();
    const reports: DriveReport[] = await longs;
    return reports.flatMap((r, i) => r.long.streams.map((s) => ({ b: bucket(clients[i].addr!, s.port), err: s.err, name: `${clients[i].name}:${s.port}` })));
  };
  const down = (id: string) => lab.waitFirewalls((fw) => fw.find((f) => f.id === id)!.live === false, 10000, `${id} down on both nodes`);
  const up = () => lab.waitFirewalls((fw) => fw.every((f) => f.live), 15000, 'every firewall live on both nodes');
  const byHome = (ss: { b: number; err: string | null; name: string }[], id: string) => ss.filter((s) => home.owner[s.b] === id);
  const broken = (ss: { err: string | null }[]) => ss.filter((s) => s.err).length;

  await t.test('fw2 fails silently: its streams continue through fw1, its group peer; it returns: 0 broken', async (t) => {
    const udpBase = 30000;
    const udpFlows = 60;
    const udp = () => drive(lab, 'c1', { udp: { targets: [target], flows: udpFlows, basePort: udpBase } });
    const fw2Udp = Array.from({ length: udpFlows }, (_, i) => udpBase + i).filter((p) => home.owner[bucket(clients[0].addr!, p, PROTO_UDP)] === 'fw2');
    let moved: Record<string, number> = {};
    let fw1NewForUdp = -1;
    let udpFailed = -1;
    const longs6 = Promise.all(
      clients.map((c) => drive(lab, c.name, { long: { targets: lab.targets6('server', ECHO_PORT), count: 30, durationMs: 14000, intervalMs: 100 } })),
    );
    const ss = await streams(async () => {
      t.equal((await udp()).udp.failed, 0, 'UDP flows answered before the failure');
      await sleep(300); // conntrackd's updates reach fw1
      lab.failFirewall('fw2');
      t.comment(`fw2 out of the bucket table on both nodes ${await down('fw2')} ms after it went silent`);
      const fws = (await lab.api('outside', 'GET', '/firewalls')).body;
      moved = fws.find((f: any) => f.id === 'fw2').bucketsMovedTo;
      t.equal(fws.find((f: any) => f.id === 'fw2').syncGroup, 'g1', '/firewalls names the group');
      const before = lab.firewallCounters();
      const r = await udp();
      udpFailed = r.udp.failed;
      fw1NewForUdp = lab.firewallCounters().find((f) => f.id === 'fw1')!.newSessions - before.find((f) => f.id === 'fw1')!.newSessions;
      await sleep(1000);
      lab.reviveFirewall('fw2');
      t.comment(`fw2 back in the bucket table ${await up()} ms after it was revived`);
      await sleep(2000);
    });
    t.same(moved, { fw1: home.owner.filter((o) => o === 'fw2').length }, 'while fw2 was down, all its buckets were on fw1 (/firewalls bucketsMovedTo)');
    t.ok(fw2Udp.length >= 10, `${fw2Udp.length} UDP flows were on fw2`);
    t.equal(udpFailed, 0, 'after the failure, every UDP flow got its reply (fw2 flows through fw1)');
    t.equal(fw1NewForUdp, 0, 'and fw1 knew them: no new session on fw1 (the state came from conntrackd)');
    const on2 = byHome(ss, 'fw2');
    t.ok(on2.length >= 15, `${on2.length} of 90 streams were on fw2`);
    t.same(
      on2.filter((s) => s.err).map((s) => `${s.name}: ${s.err}`),
      [],
      "0 of fw2's streams broke: they continued through fw1",
    );
    t.same(
      ss.filter((s) => home.owner[s.b] !== 'fw2' && s.err).map((s) => s.name),
      [],
      'the streams on fw1 and fw3 were not disturbed',
    );
    const ss6 = (await longs6).flatMap((r, i) =>
      r.long.streams.map((x) => {
        const [daddr] = splitHostPort(x.target);
        const b = bucketOf(
          canonicalKey('outside', { saddr: clients[i].addr6!, sport: x.port, daddr, dport: ECHO_PORT, proto: PROTO_TCP }),
          cfg.hash.seed,
          buckets,
        );
        return { b, err: x.err, name: `${clients[i].name}:${x.port}` };
      }),
    );
    const on2v6 = byHome(ss6, 'fw2');
    t.ok(on2v6.length >= 8, `${on2v6.length} of 60 IPv6 streams were on fw2`);
    t.equal(
      broken(ss6),
      0,
      `0 of 60 IPv6 streams broke, fw2's among them (${ss6
        .filter((x) => x.err)
        .map((x) => `${x.name}: ${x.err}`)
        .join(', ')})`,
    );
  });

  await t.test('fw3 fails (no group): its streams break as today, the others are not disturbed', async (t) => {
    const ss = await streams(async () => {
      lab.failFirewall('fw3');
      await down('fw3');
      const fws = (await lab.api('outside', 'GET', '/firewalls')).body;
      const to = fws.find((f: any) => f.id === 'fw3').bucketsMovedTo;
      t.same(Object.keys(to).sort(), ['fw1', 'fw2'], "fw3's buckets spread over fw1 and fw2");
      await sleep(1500);
      lab.reviveFirewall('fw3');
      await up();
      await sleep(1000);
    });
    const on3 = byHome(ss, 'fw3');
    t.ok(on3.length >= 15, `${on3.length} of 90 streams were on fw3`);
    t.equal(broken(on3), on3.length, 'every stream on fw3 broke (nobody holds its state)');
    t.same(
      ss.filter((s) => home.owner[s.b] !== 'fw3' && s.err).map((s) => s.name),
      [],
      'the streams on fw1 and fw2 were not disturbed',
    );
  });

  await t.test("without the sync group in fwlb, fw2 fails: the streams sent to fw3 break (today's behaviour)", async (t) => {
    await restartNodes(lab, false);
    const spread = buildJoinedTable(ALL, buckets, ['fw1', 'fw3']);
    t.notSame(spread.owner, buildGroupedTable(ALL, buckets, ['fw1', 'fw3'], [['fw1', 'fw2']]).owner, 'the model: without the group some of fw2 goes to fw3');
    const ss = await streams(async () => {
      lab.failFirewall('fw2');
      await down('fw2');
      await sleep(1500);
      lab.reviveFirewall('fw2');
      await up();
      await sleep(1000);
    });
    const on2 = byHome(ss, 'fw2');
    const toFw3 = on2.filter((s) => spread.owner[s.b] === 'fw3');
    t.ok(toFw3.length >= 3, `${toFw3.length} of fw2's ${on2.length} streams were sent to fw3`);
    t.equal(broken(toFw3), toFw3.length, "every one of them broke: fw3 does not hold fw2's state");
    t.equal(broken(on2.filter((s) => spread.owner[s.b] === 'fw1')), 0, 'those sent to fw1 survived (conntrackd still syncs fw1 and fw2)');
    t.same(
      ss.filter((s) => home.owner[s.b] !== 'fw2' && s.err).map((s) => s.name),
      [],
      'the others were not disturbed',
    );
  });
});

async function restartNodes(lab: Lab, syncGroups: boolean): Promise<void> {
  lab.writeNodeConfigs(syncGroups);
  for (const role of ['outside', 'inside'] as const) {
    await lab.killNode(role);
    await lab.startNode(role);
  }
  await lab.waitFirewalls((fw) => fw.every((f) => f.live), 15000, 'every firewall live after the restart');
}
