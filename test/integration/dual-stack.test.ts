// Integration: a dual-stack sandwich. IPv4 and IPv6 traffic in one run through the same nodes, firewalls and
// bucket table; every IPv6 session crosses the firewall the model names, and ICMP errors follow their flow.
import { t } from 'tap';
import { bucketOf, buildJoinedTable, canonicalKey, hostPort, PROTO_TCP } from '@fwlb/flowhash';
import { spawnSync } from 'node:child_process';
import { drive, ECHO_PORT, formatReport, HTTP_PORT, inNs, Lab, runScenario, spawnInNs, WEB_PORT } from '@fwlb/lab';
import { slbDoctor } from '@fwlb/slb';
import { startLab } from '../helpers/lab';
import { startRedisOnSocket } from '../helpers/redis';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const token = (lab: Lab) => lab.t.nodes.outside.api!.token!;

/** A counter of /proc/net/snmp or /proc/net/snmp6 in a namespace. */
function snmp(ns: string, file: 'snmp' | 'snmp6', name: string): number {
  const text = inNs(ns, ['cat', `/proc/net/${file}`]);
  if (file === 'snmp6') return Number(new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  // snmp: a header line of names, then a line of values, per protocol.
  const [proto, field] = name.split('.');
  const lines = text.split('\n').filter((l) => l.startsWith(`${proto}:`));
  const names = lines[0].split(/\s+/);
  return Number(lines[1].split(/\s+/)[names.indexOf(field)]);
}

t.test('dual stack: IPv4 and IPv6 through one sandwich', async (t) => {
  const { url } = await startRedisOnSocket(t);
  const lab = await startLab(t, { ipv6: true, sessionTable: url });

  await t.test('the lab scenario in IPv6 alone (through the IPv6 VIPs, L4 and L7): 0 failed, 0 drops', async (t) => {
    const r = await runScenario(lab, { families: ['ipv6'], shortPerClient: 150, udpPerClient: 30, longPerClient: 4, longDurationMs: 3000, l7PerClient: 60 });
    t.comment(formatReport(r));
    t.same(Object.keys(r.byFamily), ['ipv6'], 'IPv6 only');
    t.equal(r.failed.total, 0, `0 failed (${JSON.stringify(r.failed)})`);
    t.equal(r.l7Misrouted.length, 0, 'every L7 request reached its pool');
    t.equal(r.totals.drops, 0, `no firewall dropped a packet ${JSON.stringify(lab.firewallDropFlows().slice(0, 5))}`);
    t.ok(r.totals.sessions > 0, `the firewalls carried ${r.totals.sessions} sessions`);
  });

  await t.test('the lab scenario in both families at once: 0 failed, 0 drops, IPv6 on every firewall', async (t) => {
    const r = await runScenario(lab, { shortPerClient: 300, udpPerClient: 50, longPerClient: 6, longDurationMs: 5000 });
    t.comment(formatReport(r));
    if (r.failed.total)
      t.comment(
        (lab.nodes.slb?.log ?? [])
          .filter((l) => /DOWN|UP|ALARM/.test(l))
          .slice(-20)
          .join('\n'),
      );
    t.equal(r.byFamily.ipv6?.total, 0, `IPv6: 0 failed (${JSON.stringify(r.byFamily.ipv6)})`);
    t.equal(r.byFamily.ipv4?.total, 0, `IPv4: 0 failed (${JSON.stringify(r.byFamily.ipv4)})`);
    t.equal(r.totals.drops, 0, `no firewall dropped a packet ${JSON.stringify(lab.firewallDropFlows().slice(0, 5))}`);
    const v6 = lab.t.hosts.filter((h) => h.role === 'firewall').map((h) => lab.kernelSessions(h.name, 'ipv6').filter((e) => e.dport === ECHO_PORT).length);
    t.ok(
      v6.every((n) => n > 0),
      `every firewall carried IPv6 sessions: ${JSON.stringify(v6)}`,
    );
  });

  await t.test(
    'the SLB tier in IPv6: its own VIP address, L4 (HTTP, port translation) and changes through the API; a restart adopts the ip6 table',
    async (t) => {
      const slbTok = lab.t.slb.api!.token!;
      const vip6 = lab.t.vip6!;
      const addrs = () =>
        JSON.parse(inNs(lab.ns('slb'), ['ip', '-6', '-j', 'addr', 'show', 'dev', 'up0']))[0]
          .addr_info.filter((a: any) => a.prefixlen === 128)
          .map((a: any) => `${a.local} metric ${a.metric}`);
      t.same(addrs(), [`${vip6} metric 6174`], 'the IPv6 VIP is on up0 as a /128 marked with the VIP metric');
      const web = await drive(lab, 'c1', { http: { targets: [hostPort(vip6, WEB_PORT)], count: 60, concurrency: 6 } });
      t.equal(
        web.http.failed,
        0,
        `60 HTTP requests through the IPv6 L4 VIP port ${WEB_PORT} to the members' port ${HTTP_PORT}, 0 failed ${JSON.stringify(web.http.errors)}`,
      );
      t.same(
        Object.keys(web.http.bodies).sort(),
        ['fwlb lab server s1', 'fwlb lab server s2', 'fwlb lab server s3'],
        `round robin over the three IPv6 members: ${JSON.stringify(web.http.bodies)}`,
      );
      await sleep(2500);
      const v = await lab.api('slb', 'GET', '/vips/web6');
      t.ok(v.body.counters.newSessions >= 60, `the VIP counted its sessions in the ip6 table: ${v.body.counters.newSessions}`);
      t.same(
        v.body.members.map((m: any) => m.address),
        lab.t.hosts.filter((h) => h.role === 'server').map((h) => h.addr6),
        'members in their canonical form',
      );

      const body = {
        id: 'extra6',
        address: '2001:DB8:5:0::101',
        port: ECHO_PORT,
        protocol: 'tcp',
        check: { kind: 'tcp' },
        members: [{ address: lab.host('s1').addr6, port: ECHO_PORT }],
      };
      const made = await lab.api('slb', 'POST', '/vips', body, slbTok);
      t.equal(made.status, 201, `a new IPv6 VIP through the API ${JSON.stringify(made.body)}`);
      t.equal(made.body.address, '2001:db8:5::101', 'stored and shown in RFC 5952 form');
      t.ok(addrs().includes('2001:db8:5::101 metric 6174'), 'its address is on up0');
      const key = encodeURIComponent(`[2001:DB8:20::${lab.host('s1').addr6!.split('::')[1]}]:${ECHO_PORT}`);
      const patched = await lab.api('slb', 'PATCH', `/vips/extra6/members/${key}`, { weight: 3 }, slbTok);
      t.equal(patched.status, 200, `a member named in another IPv6 text form is found ${JSON.stringify(patched.body)}`);
      // A service of the SLB node itself on its own IPv6 address: a VIP there would capture it.
      const own = spawnInNs(lab.ns('slb'), [process.execPath, '-e', "require('net').createServer().listen(2222, '2001:db8:5::2', () => console.log('ready'))"]);
      t.teardown(() => void own.kill());
      await new Promise((r) => own.stdout!.once('data', r));
      const capture = await lab.api('slb', 'POST', '/vips', { ...body, id: 'capture', address: '2001:db8:5::2', port: 2222 }, slbTok);
      t.equal(capture.status, 400, "a VIP on the node's own address and a port it serves is refused");
      t.match(
        capture.body.message,
        /\/address: 2001:db8:5::2 is this node's own address, and \[2001:db8:5::2\]:2222\/tcp serves on it/,
        'naming the field and the socket',
      );
      own.kill();
      const mixed = await lab.api(
        'slb',
        'POST',
        '/vips',
        { ...body, id: 'mixed', address: '192.0.2.50', members: [{ address: lab.host('s1').addr6, port: ECHO_PORT }] },
        slbTok,
      );
      t.equal(mixed.status, 400, 'an IPv4 L4 VIP with an IPv6 member is refused');
      t.match(JSON.stringify(mixed.body), /members\/0\/address/, 'naming the field');
      // The member answers through the new VIP; members come up after `rise` checks.
      let echo = { short: { failed: 1 } } as any;
      for (let i = 0; i < 20 && echo.short.failed; i++) {
        await sleep(300);
        echo = await drive(lab, 'c1', { short: { targets: [`[2001:db8:5::101]:${ECHO_PORT}`], count: 10, concurrency: 2 } });
      }
      t.equal(echo.short.failed, 0, 'TCP through the new IPv6 VIP');
      t.equal((await lab.api('slb', 'DELETE', '/vips/extra6', undefined, slbTok)).status, 204, 'deleted');
      t.notOk(addrs().includes('2001:db8:5::101 metric 6174'), 'its address left up0');
      t.notOk(inNs(lab.ns('slb'), ['nft', 'list', 'table', 'ip6', 'fwlb_slb']).includes('v_extra6'), 'its chain left the ip6 table');

      await lab.killNode('slb');
      await lab.startNode('slb');
      await lab.waitMembers((vips) => vips.every((x) => x.members.every((m: any) => m.health.up)), 15000, 'every SLB member up after the restart');
      let st = await lab.api('slb', 'GET', '/status');
      for (let i = 0; i < 50 && !st.body.started; i++) {
        await sleep(100);
        st = await lab.api('slb', 'GET', '/status');
      }
      t.ok(st.body.started, 'the restarted SLB adopted the kernel');
      t.equal(st.body.transactions, 0, `the restart adopted both tables as they were: no nft transaction (${JSON.stringify(st.body.table)})`);
      t.same(st.body.table.families, ['ip', 'ip6'], 'both tables in use');
      const doctor = await slbDoctor(undefined, 'haproxy', true);
      const six = doctor.find((c) => c.name === 'nft DNAT maps (IPv6)');
      t.ok(six?.ok && six.required, `the doctor checks the ip6 table's objects with nft and requires them for IPv6 VIPs: ${six?.detail}`);
    },
  );

  await t.test('every IPv6 connection crossed the firewall its bucket names, on both nodes', async (t) => {
    for (const h of lab.t.hosts.filter((x) => x.role === 'firewall')) inNs(h.ns, ['conntrack', '-F']);
    const c1 = lab.host('c1');
    const targets = lab.targets6('server', ECHO_PORT);
    const rep = await drive(lab, 'c1', { short: { targets, count: 600, concurrency: 12 } });
    t.equal(rep.short.failed, 0, '600 IPv6 connections, 0 failed');
    const cfg = lab.t.nodes.outside;
    const table = buildJoinedTable(
      cfg.firewalls.map((f) => f.id),
      cfg.hash.buckets!,
    );
    const where = new Map<string, string[]>();
    for (const h of lab.t.hosts.filter((x) => x.role === 'firewall')) {
      for (const e of lab.kernelSessions(h.name, 'ipv6')) {
        if (e.dport !== ECHO_PORT || e.src !== c1.addr6) continue;
        const k = `${e.src} ${e.sport} ${e.dst}`;
        where.set(k, [...(where.get(k) ?? []), h.name]);
      }
    }
    let agree = 0;
    const differ: string[] = [];
    for (const [k, fws] of where) {
      const [src, sport, dst] = k.split(' ');
      const want =
        table.owner[
          bucketOf(
            canonicalKey('outside', { saddr: src, sport: Number(sport), daddr: dst, dport: ECHO_PORT, proto: PROTO_TCP }),
            cfg.hash.seed,
            cfg.hash.buckets!,
          )
        ];
      if (fws.length === 1 && fws[0] === want) agree++;
      else if (differ.length < 5) differ.push(`${k}: on ${fws.join(', ')}, model ${want}`);
    }
    t.ok(where.size >= 590, `${where.size} connections seen on the firewalls`);
    t.equal(agree, where.size, `each on exactly one firewall, the model's: ${agree} of ${where.size} ${differ.join('; ')}`);
  });

  await t.test('ICMP errors follow their flow: port unreachable from the servers reaches the client through the same firewall', async (t) => {
    // The servers (IPv6) and the SLB node (the IPv4 VIP's own port 9) answer every datagram to a closed port; the
    // kernel's rate limits (per destination, and per namespace: a burst of 50) would hide some of the answers.
    for (const h of lab.t.hosts.filter((x) => x.role === 'server' || x.role === 'slb'))
      inNs(h.ns, ['sysctl', '-qw', 'net.ipv6.icmp.ratelimit=0', 'net.ipv4.icmp_ratelimit=0', 'net.ipv4.icmp_msgs_burst=10000']);
    const c1 = lab.host('c1');
    const closed = 9;
    const flows = 60;
    lab.resetFirewallCounters();
    const before6 = snmp(c1.ns, 'snmp6', 'Icmp6InDestUnreachs');
    const before4 = snmp(c1.ns, 'snmp', 'Icmp.InDestUnreachs');
    await drive(lab, 'c1', { udp: { targets: lab.targets6('server', closed), flows, basePort: 31000 } });
    await drive(lab, 'c1', { udp: { targets: [`${lab.t.vip}:${closed}`], flows, basePort: 32000 } });
    const got6 = snmp(c1.ns, 'snmp6', 'Icmp6InDestUnreachs') - before6;
    const got4 = snmp(c1.ns, 'snmp', 'Icmp.InDestUnreachs') - before4;
    t.equal(got6, flows, `${got6} of ${flows} ICMPv6 port-unreachable errors reached the client`);
    t.equal(got4, flows, `${got4} of ${flows} ICMP port-unreachable errors reached the client`);
    const fw = lab.firewallCounters();
    t.same(
      fw.map((f) => f.drops),
      fw.map(() => 0),
      "no firewall dropped one: each came back through its flow's firewall",
    );
  });

  await t.test("both nodes lose their state mid-stream: IPv6 sessions off their bucket's firewall keep it through the pins (0 broken, 0 drops)", async (t) => {
    const targets = lab.targets6('server', ECHO_PORT);
    const stream = (ms: number) =>
      Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { long: { targets, count: 30, durationMs: ms, intervalMs: 200, timeoutMs: 3000 } })));
    const admin = async (enabled: boolean) => {
      for (const role of ['outside', 'inside'] as const)
        t.equal(
          (await lab.api(role, 'PUT', '/firewalls/fw2/admin', { enabled }, token(lab))).status,
          200,
          `fw2 ${enabled ? 'rejoins' : 'leaves'} on the ${role} node`,
        );
    };
    lab.resetFirewallCounters();
    const a = stream(16000);
    await sleep(1500);
    await admin(false);
    await sleep(300);
    // Started while fw2 is out: these sit off their bucket's firewall once it is back.
    const b = stream(13000);
    await sleep(1500);
    await admin(true);
    await sleep(1500);
    const pinned = (n: string) =>
      JSON.parse(inNs(lab.ns(n), ['nft', '-j', 'list', 'map', 'inet', 'fwlb', 'pins_v6'])).nftables.find((x: any) => x.map).map.elem?.length ?? 0;
    const pins = ['ob', 'ib'].map(pinned);
    t.ok(
      pins.every((n) => n > 0),
      `both nodes pin IPv6 sessions from the shared table: ${pins.join(', ')}`,
    );
    for (const role of ['outside', 'inside'] as const) await lab.killNode(role);
    for (const n of ['ob', 'ib']) {
      inNs(lab.ns(n), ['conntrack', '-F']);
      for (const k of [0, 1, 2])
        for (const sfx of ['', '_v6'])
          spawnSync('ip', ['netns', 'exec', lab.ns(n), 'nft', 'flush', 'set', 'inet', 'fwlb', `conn${k}${sfx}`], { stdio: 'ignore' });
    }
    await lab.startNode('outside');
    await lab.startNode('inside');
    const reports = [...(await a), ...(await b)];
    const streams = reports.reduce((n, r) => n + r.long.ok + r.long.broken, 0);
    t.equal(streams, 120, 'every stream ran');
    t.equal(
      reports.reduce((n, r) => n + r.long.broken, 0),
      0,
      `0 of ${streams} IPv6 streams broke ${JSON.stringify(reports.map((r) => r.long.errors))}`,
    );
    const fw = lab.firewallCounters();
    t.same(
      fw.map((f) => f.drops),
      fw.map(() => 0),
      `0 firewall drops ${JSON.stringify(lab.firewallDropFlows().slice(0, 5))}`,
    );
  });
});
