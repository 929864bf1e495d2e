// Integration: firewall 2's link goes down during traffic; only its buckets move, streams elsewhere survive, it comes back.
import { t } from 'tap';
import { bucketOf, buildJoinedTable, canonicalKey, PROTO_TCP, splitHostPort } from '@fwlb/flowhash';
import { spawnSync } from 'node:child_process';
import { BALANCER_MAIN, drive, ECHO_PORT, inNs, DriveReport, spawnInNs, SPOOF } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { openStatusPage } from '../helpers/status-page';

t.test('firewall 2 fails and rejoins', async (t) => {
  // Dual stack: IPv6 streams to the real servers cross the failure and the return beside the IPv4 ones.
  const lab = await startLab(t, { ipv6: true });
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const servers = [`${lab.t.vip}:${ECHO_PORT}`];
  const servers6 = lab.targets6('server', ECHO_PORT);
  const cfg = lab.t.nodes.outside;
  const table = buildJoinedTable(
    cfg.firewalls.map((f) => f.id),
    cfg.hash.buckets!,
  );
  const firewallOf = (client: string, port: number, target: string) => {
    const [daddr, dport] = splitHostPort(target);
    return table.owner[
      bucketOf(canonicalKey('outside', { saddr: client, sport: port, daddr, dport: Number(dport), proto: PROTO_TCP }), cfg.hash.seed, cfg.hash.buckets!)
    ];
  };
  const shorts = () => Promise.all(clients.map((c) => drive(lab, c.name, { short: { targets: servers, count: 150, concurrency: 8 } })));
  const failedOf = (rs: DriveReport[]) => rs.reduce((a, r) => a + r.short.failed, 0);

  // 30 long-lived streams over all three firewalls, running through the failure and the return.
  const longs = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: servers, count: 15, durationMs: 14000, intervalMs: 100 } })));
  const longs6 = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: servers6, count: 15, durationMs: 14000, intervalMs: 100 } })));
  await new Promise((r) => setTimeout(r, 1000));

  inNs(lab.ns('ob'), ['ip', 'link', 'set', 'fw2', 'down']);
  const detect = await lab.waitFirewalls((fw) => fw.find((f) => f.id === 'fw2')!.live === false, 10000, 'fw2 down on both nodes');
  // The API reports what the kernel does: the moment both say fw2 is not live, neither bucket map holds it.
  const fw2Mark = (cfg.marks?.base ?? 65536) + 1; // the default mark range starts at 65536
  t.same(
    (['ob', 'ib'] as const).map((n) => lab.bucketMarks(n).has(fw2Mark)),
    [false, false],
    'as soon as /firewalls says fw2 is not live, no kernel bucket maps to it',
  );
  t.comment(`fw2 left the bucket table on both nodes ${detect} ms after its link went down`);
  const st = await lab.api('outside', 'GET', '/status');
  t.equal(st.body.buckets.distribution.fw2, undefined, 'fw2 has no buckets');
  // The metrics of a running node pass promtool and show the failure.
  const metrics = await lab.apiText('outside', '/metrics');
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8' });
  t.equal(lint.status, 0, `promtool check metrics on the outside node: ${lint.stdout}${lint.stderr}`);
  t.match(metrics, /^fwlb_firewall_live\{firewall="fw2"\} 0$/m, 'fwlb_firewall_live shows fw2 out');
  t.match(metrics, /^fwlb_firewall_link_up\{firewall="fw2"\} 0$/m, 'and its link down');
  t.match(metrics, /^fwlb_health_checks_total\{firewall="fw2",result="failed"\} [1-9]/m, 'the failed checks are counted');
  t.match(metrics, /^fwlb_firewall_live\{firewall="fw1"\} 1$/m);
  t.match(st.body.firewalls.find((f: any) => f.id === 'fw2').health.reason, /own link fw2 is down/, 'the outside node saw its own link');

  lab.resetFirewallCounters();
  const newFlows = async () => {
    const text = await lab.apiText('outside', '/metrics');
    return Object.fromEntries(
      ['fw1', 'fw2', 'fw3'].map((f) => [f, Number(text.match(new RegExp(`^fwlb_firewall_new_flows_total\\{firewall="${f}"\\} (\\d+)$`, 'm'))?.[1] ?? NaN)]),
    );
  };
  const flows0 = await newFlows();
  const during = await shorts();
  t.equal(failedOf(during), 0, 'after detection, every new connection succeeds');
  // Read from the kernel's counters at the scrape (a listing of the table at most a second old, shared with /status):
  // every connection just made is in them, none on fw2.
  await new Promise((r) => setTimeout(r, 1100));
  const flows1 = await newFlows();
  const made = during.reduce((a, r) => a + r.short.ok, 0);
  t.equal(flows1.fw2 - flows0.fw2, 0, 'fwlb_firewall_new_flows_total: no new flow hashed to fw2');
  t.ok(
    flows1.fw1 - flows0.fw1 + flows1.fw3 - flows0.fw3 >= made,
    `and the ${made} connections just made are on fw1 and fw3 at the next scrape (${flows1.fw1 - flows0.fw1} and ${flows1.fw3 - flows0.fw3})`,
  );
  const c1 = lab.firewallCounters();
  t.equal(c1.find((f) => f.id === 'fw2')!.newSessions, 0, 'fw2 takes no new session while down');
  t.ok(
    c1.filter((f) => f.id !== 'fw2').every((f) => f.newSessions > 100),
    'fw1 and fw3 carry the new sessions',
  );

  inNs(lab.ns('ob'), ['ip', 'link', 'set', 'fw2', 'up']);
  const back = await lab.waitFirewalls((fw) => fw.every((f) => f.live), 15000, 'fw2 back on both nodes');
  t.same(
    (['ob', 'ib'] as const).map((n) => lab.bucketMarks(n).has(fw2Mark)),
    [true, true],
    'as soon as /firewalls says fw2 is live again, both kernels map buckets to it',
  );
  t.comment(`fw2 back in the bucket table ${back} ms after its link came up`);
  lab.resetFirewallCounters();
  const after = await shorts();
  t.equal(failedOf(after), 0, 'after the return, every new connection succeeds');
  t.ok(lab.firewallCounters().find((f) => f.id === 'fw2')!.newSessions > 50, 'fw2 receives new sessions again');

  const longReports = await longs;
  let onOthers = 0;
  const brokenElsewhere: string[] = [];
  longReports.forEach((r, i) => {
    for (const s of r.long.streams) {
      const fw = firewallOf(clients[i].addr!, s.port, s.target);
      if (fw === 'fw2') continue;
      onOthers++;
      if (s.err) brokenElsewhere.push(`${clients[i].name}:${s.port} via ${fw}: ${s.err}`);
    }
  });
  t.ok(onOthers >= 10, `${onOthers} long-lived streams crossed fw1 or fw3`);
  t.same(brokenElsewhere, [], 'no stream on fw1 or fw3 broke through the failure and the return');
  // What the outside node held when a stream could not connect (ENETUNREACH: a SYN left without a firewall's mark).
  if (brokenElsewhere.length)
    t.comment(
      inNs(lab.ns('ob'), ['nft', 'list', 'map', 'inet', 'fwlb', 'buckets']) +
        inNs(lab.ns('ob'), ['ip', 'rule']) +
        (lab.nodes.outside?.log ?? []).slice(-30).join('\n'),
    );
  const on6: string[] = [];
  const broken6: string[] = [];
  (await longs6).forEach((r, i) => {
    for (const s of r.long.streams) {
      const fw = firewallOf(clients[i].addr6!, s.port, s.target);
      if (fw === 'fw2') continue;
      on6.push(fw!);
      if (s.err) broken6.push(`${clients[i].name}:${s.port} via ${fw}: ${s.err}`);
    }
  });
  t.ok(on6.length >= 10, `${on6.length} IPv6 streams crossed fw1 or fw3`);
  t.same(broken6, [], 'no IPv6 stream on fw1 or fw3 broke either');

  // Panic mode: every probe of the outside node is dropped in its own output (echo requests carrying a firewall's
  // mark). The firewalls are fine; losing all three at once is a fault of the measuring, so the node keeps them.
  const ob = lab.ns('ob');
  // Both families: this lab's nodes probe each other over IPv6.
  inNs(ob, ['nft', 'add', 'table', 'inet', 'cutprobes']);
  inNs(ob, ['nft', 'add', 'chain', 'inet', 'cutprobes', 'out', '{ type filter hook output priority 0; }']);
  inNs(ob, ['nft', 'add', 'rule', 'inet', 'cutprobes', 'out', 'icmp', 'type', 'echo-request', 'meta', 'mark', '!=', '0', 'drop']);
  inNs(ob, ['nft', 'add', 'rule', 'inet', 'cutprobes', 'out', 'icmpv6', 'type', 'echo-request', 'meta', 'mark', '!=', '0', 'drop']);
  const t1 = Date.now();
  let fwv: any[] = [];
  while (Date.now() - t1 < 10000) {
    fwv = (await lab.api('outside', 'GET', '/firewalls')).body;
    if (fwv.every((f) => !f.healthy)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const alarms: string[] = (await lab.api('outside', 'GET', '/health')).body.alarms;
  t.match(
    alarms.join(' '),
    /panic: only 0 of 3 firewalls look up at once/,
    `every probe failed within ${Date.now() - t1} ms and the outside node raised the panic alarm`,
  );
  // The first firewall to fail may leave for a moment before the burst tips the node into panic; the kernel then
  // takes it back (what /firewalls shows is what the kernel runs on, so wait for the commit).
  const t2 = Date.now();
  while (Date.now() - t2 < 3000) {
    fwv = (await lab.api('outside', 'GET', '/firewalls')).body;
    if (fwv.every((f) => f.live)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.same(
    fwv.map((f: any) => [f.healthy, f.live]),
    [
      [false, true],
      [false, true],
      [false, true],
    ],
    `every firewall is in the table (${Date.now() - t2} ms after the last probe failed)`,
  );
  lab.resetFirewallCounters();
  const panicRun = await shorts();
  t.equal(failedOf(panicRun), 0, 'in panic, every new connection succeeds');
  t.ok(
    lab.firewallCounters().every((f) => f.newSessions > 30),
    'over all three firewalls',
  );
  // Then one firewall really fails (its link): it leaves the table, panic or not.
  inNs(ob, ['ip', 'link', 'set', 'fw2', 'down']);
  await lab.waitFirewalls((fw) => !fw.find((f) => f.id === 'fw2')!.live, 10000, 'fw2 out on both nodes during panic');
  lab.resetFirewallCounters();
  const failRun = await shorts();
  t.equal(failedOf(failRun), 0, 'a firewall that really fails during panic leaves the table: every new connection succeeds');
  t.equal(lab.firewallCounters().find((f) => f.id === 'fw2')!.newSessions, 0, 'fw2 took no new session');
  inNs(ob, ['ip', 'link', 'set', 'fw2', 'up']);
  inNs(ob, ['nft', 'delete', 'table', 'inet', 'cutprobes']);
  await lab.waitFirewalls((fw) => fw.every((f) => f.live && f.healthy), 15000, 'all back and believed');
  t.same((await lab.api('outside', 'GET', '/health')).body.alarms, [], 'the alarm is gone');

  // Hostile packets at the outside node during traffic: 10,000 crafted ICMP errors and 10,000 stray echo replies
  // from a client, and as many ICMPv6 ones. No probe is fooled or crashed: no firewall changes state, no connection fails.
  const sinceBefore = (await lab.api('outside', 'GET', '/firewalls')).body.map((f: any) => f.health?.since ?? null);
  const client = lab.host('c1');
  // Both families: this lab's nodes probe each other over IPv6 (the errors quote probes to the inside node).
  const ob6 = lab.t.bridges.find((b) => b.ifname === 'cli0')!.addr6!.split('/')[0];
  const ib6 = lab.t.bridges.find((b) => b.ifname === 'srv0')!.addr6!.split('/')[0];
  const flood = Promise.all(
    [
      ['icmp-errors', '198.51.100.1', '10000'],
      ['echo-replies', '198.51.100.1', '10000'],
      ['icmp6-errors', ob6, '10000', ib6],
      ['echo6-replies', ob6, '10000'],
    ].map((args) => new Promise<void>((res) => spawnInNs(client.ns, ['/usr/bin/python3', SPOOF, ...args]).once('exit', () => res()))),
  );
  lab.resetFirewallCounters();
  const [floodRun] = await Promise.all([shorts(), flood]);
  await new Promise((r) => setTimeout(r, 500));
  const fwAfter = (await lab.api('outside', 'GET', '/firewalls')).body;
  t.equal(failedOf(floodRun), 0, '0 of 300 connections failed during 40,000 hostile ICMP and ICMPv6 packets at the outside node');
  t.same(
    fwAfter.map((f: any) => f.healthy),
    [true, true, true],
    'no firewall marked down',
  );
  t.same(
    fwAfter.map((f: any) => f.health?.since ?? null),
    sinceBefore,
    'no health transition at all',
  );

  // One controller per node: a second one on the same node refuses to start and leaves the first alone.
  const second = spawnSync('ip', ['netns', 'exec', lab.ns('ob'), process.execPath, BALANCER_MAIN, 'run', '--config', lab.configPath('outside')], {
    encoding: 'utf8',
    timeout: 15000,
  });
  t.equal(second.status, 2, 'a second controller on the node exits with status 2');
  t.match(second.stderr, /another fwlb balancer \(table inet fwlb\) is already running on this node/, 'saying why');
  t.equal((await lab.api('outside', 'GET', '/health')).status, 200, 'the first one still serves');

  // A firewall taken out for maintenance stays out across a controller restart (the node's stateFile).
  const tok = cfg.api!.token!;
  for (const role of ['outside', 'inside'] as const)
    t.equal((await lab.api(role, 'PUT', '/firewalls/fw3/admin', { enabled: false }, tok)).status, 200, `fw3 taken out for maintenance on the ${role} node`);
  for (const role of ['outside', 'inside'] as const) await lab.killNode(role);
  await lab.startNode('outside');
  await lab.startNode('inside');
  for (const [role, ns] of [
    ['outside', 'ob'],
    ['inside', 'ib'],
  ] as const) {
    const fw3 = (await lab.api(role, 'GET', '/firewalls')).body.find((f: any) => f.id === 'fw3');
    t.same([fw3.enabled, fw3.live], [false, false], `after both controllers restarted, fw3 is still out on the ${role} node`);
    t.notOk(lab.bucketMarks(ns).has((cfg.marks?.base ?? 65536) + 2), 'and no bucket maps to it');
  }
  for (const role of ['outside', 'inside'] as const)
    t.equal((await lab.api(role, 'PUT', '/firewalls/fw3/admin', { enabled: true }, tok)).status, 200, 'back in');

  // The status page, in headless Chromium, while streams cross every firewall: fw1 shown down within 2 s of its link
  // being cut, its chart of what the node sends it falling to nothing, the history saying why; then back up.
  const streams = Promise.all(clients.map((c) => drive(lab, c.name, { long: { targets: servers, count: 10, durationMs: 60000, intervalMs: 50 } })));
  const page = await openStatusPage(t, lab.socketPath('outside'));
  await page.waitForSelector('#fw-fw1 .up', { timeout: 5000 });
  t.pass('the page shows fw1 up');
  const bps = () => page.$eval('#chart-fw1', (e) => e.getAttribute('data-bps'));
  // Two samples of the kernel's counters make a rate.
  await page.waitForFunction("Number(document.querySelector('#chart-fw1')?.getAttribute('data-bps')) > 0", null, { timeout: 20000 });
  t.comment(`fw1's chart shows ${await bps()} B/s sent to it`);
  t.pass('the chart shows the traffic this node sends fw1');
  const cut = Date.now();
  inNs(lab.ns('ob'), ['ip', 'link', 'set', 'fw1', 'down']);
  await page.waitForSelector('#fw-fw1 .down', { timeout: 5000 });
  const shown = Date.now() - cut;
  t.ok(shown <= 2000, `the page showed fw1 down ${shown} ms after its link was cut`);
  const fw1Events = () =>
    page.$$eval('#history tr.event', (rows: any[]) =>
      rows.filter((r) => r.dataset.firewall === 'fw1').map((r) => [...r.querySelectorAll('td')].map((c: any) => c.textContent as string)),
    );
  // Both the kernel's change (live) and the probes' (health) are in the page's history, each with its reason.
  await page.waitForFunction(
    `[...document.querySelectorAll('#history tr.event')].filter((r) => r.dataset.firewall === 'fw1').map((r) => r.textContent).join()` +
      `.match(/live.?down.*link.*down[^]*health.?down.?own link fw1 is down|health.?down.?own link fw1 is down[^]*live.?down.*link.*down/)`,
    null,
    { timeout: 10000 },
  );
  const apiRows = (await lab.api('outside', 'GET', '/firewalls/history')).body.events
    .filter((e: any) => e.firewall === 'fw1')
    .reverse()
    .map((e: any) => [e.what, e.up ? 'up' : 'down', e.reason]);
  await new Promise((r) => setTimeout(r, 1500)); // the page's next refresh
  t.same(
    (await fw1Events()).map((r) => [r[2], r[3], r[4]]),
    apiRows,
    "the page's history of fw1 is the API's: what changed, how, and why",
  );
  t.ok(
    apiRows.some((r: string[]) => r[0] === 'live' && r[1] === 'down' && /link/.test(r[2])),
    'fw1 left new sessions in the kernel, and the reason names its link',
  );
  await page.waitForFunction("document.querySelector('#chart-fw1')?.getAttribute('data-bps') === '0'", null, { timeout: 20000 });
  t.pass("fw1's chart falls to nothing: the node sends it no packet");
  if (process.env.FWLB_SCREENSHOT) await page.screenshot({ path: process.env.FWLB_SCREENSHOT, fullPage: true });
  inNs(lab.ns('ob'), ['ip', 'link', 'set', 'fw1', 'up']);
  await lab.waitFirewalls((fw) => fw.every((f) => f.live), 15000, 'fw1 back');
  await page.waitForFunction(
    "document.querySelector('#fw-fw1 td:nth-child(3) .up') && document.querySelector('#history tr.event[data-firewall=fw1]')?.textContent.includes('takes new sessions')",
    null,
    { timeout: 5000 },
  );
  t.match((await fw1Events())[0], [/./, 'fw1', 'live', 'up', 'takes new sessions'], 'the page shows fw1 live again, and its history says so first');
  await streams;
});
