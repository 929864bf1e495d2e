// Integration: the SLB tier behind the sandwich: real clients reach real servers only through VIPs (nft DNAT maps).
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { drive, ECHO_PORT, HTTP_PORT, inNs, REPO, RIP_NET, waitUntil, WEB_PORT } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { openStatusPage } from '../helpers/status-page';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('SLB tier', async (t) => {
  const lab = await startLab(t);
  const token = lab.t.slb.api!.token!;
  const vip = lab.t.vip;
  const web = `${vip}:${WEB_PORT}`;
  const rips = lab.t.hosts.filter((h) => h.role === 'server').map((h) => h.addr!);
  const api = (method: string, path: string, body?: unknown) => lab.api('slb', method, path, body, token);
  const member = async (vipId: string, addr: string) => (await api('GET', `/vips/${vipId}/members`)).body.find((m: any) => m.address === addr);
  const waitMember = (vipId: string, addr: string, up: boolean, ms = 10000) =>
    lab.waitMembers(
      (vs) => vs.find((v) => v.id === vipId)?.members.find((m: any) => m.address === addr)?.health.up === up,
      ms,
      `${vipId} member ${addr} ${up ? 'up' : 'down'}`,
    );
  /** Wait until the member's last check failed for a reason matching `re` (a restart may first fail it as refused). */
  const waitReason = async (vipId: string, addr: string, re: RegExp, ms = 10000) => {
    const t0 = Date.now();
    for (;;) {
      const m = await member(vipId, addr);
      if (m.health.up === false && re.test(m.health.lastCheck?.reason ?? '')) return m;
      if (Date.now() - t0 > ms) throw new Error(`${vipId} ${addr}: no check failed with ${re} within ${ms} ms: ${JSON.stringify(m.health)}`);
      await sleep(50);
    }
  };
  /** HTTP GETs from both clients at once; bodies name the server that answered. */
  const httpLoad = async (perClient: number) => {
    const rs = await Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { http: { targets: [web], count: perClient, concurrency: 8 } })));
    const bodies: Record<string, number> = {};
    for (const r of rs) for (const [b, n] of Object.entries(r.http.bodies)) bodies[b] = (bodies[b] ?? 0) + n;
    return { ok: rs.reduce((a, r) => a + r.http.ok, 0), failed: rs.reduce((a, r) => a + r.http.failed, 0), errors: rs.map((r) => r.http.errors), bodies };
  };
  /** A VIP's members once the background counter read is newer than `since` (reads answer from memory). */
  const freshMembers = async (vipId: string, since: number) => {
    for (;;) {
      const ms = (await api('GET', `/vips/${vipId}/members`)).body;
      if (ms.every((m: any) => m.counters.at !== null && m.counters.at > since)) return ms;
      if (Date.now() - since > 10000) throw new Error(`counters of ${vipId} not refreshed within 10 s`);
      await sleep(100);
    }
  };
  const share = (bodies: Record<string, number>, name: string) => (bodies[`fwlb lab server ${name}`] ?? 0) / Object.values(bodies).reduce((a, b) => a + b, 0);

  await t.test('clients reach the servers only through the VIP', async (t) => {
    const direct = await drive(lab, 'c1', { short: { targets: [`${rips[0]}:${ECHO_PORT}`], count: 3, concurrency: 3, timeoutMs: 1000 } });
    t.equal(direct.short.ok, 0, `a real server's own address is unreachable from a client (${JSON.stringify(direct.short.errors)})`);
    const via = await drive(lab, 'c1', { short: { targets: [`${vip}:${ECHO_PORT}`], count: 30, concurrency: 6 } });
    t.equal(via.short.failed, 0, 'the VIP answers');
    const addrs = inNs(lab.ns('slb'), ['ip', '-4', '-o', 'addr', 'show', 'dev', 'up0']);
    t.match(addrs, new RegExp(`${vip.replace(/\./g, '\\.')}/32 .*up0:vip`), 'the SLB holds the VIP address with its label');
  });

  await t.test('spread: 3,000 requests by weight 1:2:1, each within 5 points; source hash sticks', async (t) => {
    const res = await api('PATCH', `/vips/web/members/${rips[1]}:${HTTP_PORT}`, { weight: 2 });
    t.equal(res.status, 200, JSON.stringify(res.body));
    const r = await httpLoad(1500);
    t.equal(r.failed, 0, `no request failed ${JSON.stringify(r.errors)}`);
    t.equal(r.ok, 3000);
    const want: Record<string, number> = { s1: 0.25, s2: 0.5, s3: 0.25 };
    for (const [s, w] of Object.entries(want)) {
      const got = share(r.bodies, s);
      t.ok(Math.abs(got - w) <= 0.05, `${s}: ${(got * 100).toFixed(1)}% for a ${w * 100}% share`);
    }
    const counters = (await freshMembers('web', Date.now())).map((m: any) => m.counters.newSessions);
    t.ok(counters[1] > counters[0] && counters[1] > counters[2], `member counters follow the weights: ${counters}`);

    const sh = await api('PUT', '/vips/web', { ...lab.t.slb.vips!.find((v) => v.id === 'web'), scheduler: 'sh' });
    t.equal(sh.status, 200, JSON.stringify(sh.body));
    for (const c of ['c1', 'c2']) {
      const one = await drive(lab, c, { http: { targets: [web], count: 60, concurrency: 6 } });
      t.equal(one.http.failed, 0);
      t.equal(Object.keys(one.http.bodies).length, 1, `${c} always lands on one server: ${JSON.stringify(one.http.bodies)}`);
    }
    const rr = await api(
      'PUT',
      '/vips/web',
      lab.t.slb.vips!.find((v) => v.id === 'web'),
    );
    t.equal(rr.status, 200, 'back to round robin, weights 1:1:1');
  });

  await t.test('a server dies: after detection no new connection fails; it returns after rise checks', async (t) => {
    const t0 = Date.now();
    await lab.killServer('s3');
    const detect = await waitMember('web', rips[2], false);
    t.comment(`s3 down after ${Date.now() - t0} ms (detection wait ${detect} ms)`);
    const after = await httpLoad(300);
    t.equal(after.failed, 0, `0 of 600 requests failed after detection ${JSON.stringify(after.errors)}`);
    t.equal(share(after.bodies, 's3'), 0, 'none went to the dead server');
    // The SLB controller restarts while s3 is dead: the kernel's DNAT map is its last known health, so s3 stays out.
    await lab.killNode('slb');
    await lab.startNode('slb');
    const restarted = await member('web', rips[2]);
    t.equal(restarted.health.up, false, `after a controller restart the dead server is still out (${restarted.health.reason})`);
    t.ok((await member('web', rips[0])).health.up, 'and the live ones still in');
    // The SLB's status page shows each member as the API does: s3 down with its reason, the others up.
    const page = await openStatusPage(t, lab.socketPath('slb'));
    const rowsOf = () =>
      page.$$eval('#vips tr.member', (rows: any[]) =>
        rows.filter((r) => r.dataset.vip === 'web').map((r) => [r.dataset.member, ...[...r.querySelectorAll('td')].map((c: any) => c.textContent as string)]),
      );
    await page.waitForSelector('#vips tr.member', { timeout: 5000 });
    // The page refreshes every second and s3's reason changes once the restarted controller has adopted the kernel:
    // the page and the API are compared once the page has caught up (within 5 s), as an operator would see them.
    const s3 = `${rips[2]}:8080`;
    const view = async () => {
      const apiMembers = (await api('GET', '/vips/web/members')).body;
      const rows = await rowsOf();
      return {
        page: rows.map((r) => [r[0], r[2], r[4], r[0] === s3 ? r[10] : '']),
        api: apiMembers.map((m: any) => [
          `${m.address}:${m.port}`,
          m.health.up ? 'up' : 'down',
          m.state,
          `${m.address}:${m.port}` === s3 ? m.health.reason : '',
        ]),
      };
    };
    let seen = await view();
    for (let i = 0; i < 25 && JSON.stringify(seen.page) !== JSON.stringify(seen.api); i++) {
      await new Promise((r) => setTimeout(r, 200));
      seen = await view();
    }
    t.same(seen.page, seen.api, "the SLB's status page shows web's members with the API's health, state and s3's reason");
    const afterRestart = await httpLoad(150);
    t.equal(afterRestart.failed, 0, `0 of 300 requests failed right after the restart ${JSON.stringify(afterRestart.errors)}`);
    t.equal(share(afterRestart.bodies, 's3'), 0, 'none went to the dead server');
    const metrics = await lab.apiText('slb', '/metrics');
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8' });
    t.equal(lint.status, 0, `promtool check metrics on the SLB: ${lint.stdout}${lint.stderr}`);
    t.match(metrics, new RegExp(`^fwlb_member_up\\{vip="web",member="${rips[2]}:8080"\\} 0$`, 'm'), 'the metrics show the dead member down');
    const t1 = Date.now();
    await lab.startServer('s3');
    await waitMember('web', rips[2], true);
    const back = Date.now() - t1;
    const rise = lab.t.slb.vips!.find((v) => v.id === 'web')!.timers!;
    t.ok(back >= (rise.rise! - 1) * rise.deadInterval! * 0.9, `back after ${back} ms: not before ${rise.rise} passed checks`);
    await page.waitForFunction(
      `[...document.querySelectorAll('#vips tr.member')].find((r) => r.dataset.vip === 'web' && r.dataset.member === '${rips[2]}:8080')?.querySelector('.up')`,
      null,
      { timeout: 5000 },
    );
    t.pass('the page shows s3 up again');
    const again = await httpLoad(150);
    t.equal(again.failed, 0);
    t.ok(share(again.bodies, 's3') > 0.2, `s3 takes sessions again: ${(share(again.bodies, 's3') * 100).toFixed(1)}%`);
  });

  await t.test('health kinds: http removes a server answering 500; http-content removes a page without the string', async (t) => {
    await lab.killServer('s1');
    await lab.startServer('s1', ['--http-status', '500']);
    await waitMember('web', rips[0], false);
    t.match((await waitReason('web', rips[0], /status 500/)).health.lastCheck.reason, /status 500/, 'the check names the status');
    const r = await httpLoad(150);
    t.equal(r.failed, 0, 'no client sees the 500');
    t.equal(share(r.bodies, 's1'), 0);

    await lab.killServer('s1');
    await lab.startServer('s1');
    await waitMember('web', rips[0], true);
    // A second VIP on the same servers with a TCP check shows that the port stays open while the content check fails.
    const base = lab.t.slb.vips!.find((v) => v.id === 'web')!;
    const put = await api('PUT', '/vips/web', { ...base, check: { kind: 'http-content', path: '/', contains: 'lab server' } });
    t.equal(put.status, 200, JSON.stringify(put.body));
    t.ok(
      put.body.members.every((m: any) => m.health.up && m.slots > 0),
      'changing the check keeps the members that were up in service',
    );
    const tcpVip = await api('POST', '/vips', { ...base, id: 'web-tcp', port: 8081, check: { kind: 'tcp' } });
    t.equal(tcpVip.status, 201, JSON.stringify(tcpVip.body));
    await lab.waitMembers((vs) => vs.every((v) => v.members.every((m: any) => m.health.up)), 10000, 'web and web-tcp members up');
    await lab.killServer('s2');
    await lab.startServer('s2', ['--http-body', 'maintenance page\n']);
    await waitMember('web', rips[1], false);
    await waitReason('web', rips[1], /content mismatch/);
    t.pass('the content check fails on the page without the string');
    await waitMember('web-tcp', rips[1], true);
    t.pass('while the same port passes a TCP check');
    t.equal((await member('web', rips[1])).health.up, false, 'and the content check keeps it out');
    const r2 = await httpLoad(150);
    t.equal(r2.failed, 0);
    t.equal(r2.bodies['maintenance page'] ?? 0, 0, 'no client gets the maintenance page');
    await lab.killServer('s2');
    await lab.startServer('s2');
    t.equal((await api('DELETE', '/vips/web-tcp')).status, 204);
    t.equal((await api('PUT', '/vips/web', base)).status, 200);
    await lab.waitMembers((vs) => vs.every((v) => v.members.every((m: any) => m.health.up)), 10000, 'all members up again');
  });

  await t.test('shared RIP: :80 and :443 on the same servers with different ports both work', async (t) => {
    const tls = {
      id: 'tls',
      address: vip,
      port: 443,
      protocol: 'tcp',
      check: { kind: 'tcp-half-open' },
      timers: { interval: 200, response: 100, retries: 2, deadInterval: 300, rise: 1 },
      members: rips.map((a) => ({ address: a, port: ECHO_PORT })),
    };
    const res = await api('POST', '/vips', tls);
    t.equal(res.status, 201, JSON.stringify(res.body));
    await lab.waitMembers((vs) => vs.find((v) => v.id === 'tls')?.members.every((m: any) => m.health.up), 10000, 'tls members up');
    const [a, b] = await Promise.all([
      drive(lab, 'c1', { short: { targets: [`${vip}:443`], count: 150, concurrency: 8 } }),
      drive(lab, 'c2', { http: { targets: [web], count: 150, concurrency: 8 } }),
    ]);
    t.equal(a.short.failed, 0, 'VIP:443 → RIP:7007 echoes');
    t.equal(b.http.failed, 0, 'VIP:80 → RIP:8080 serves pages');
    t.equal(Object.keys(b.http.bodies).length, 3, 'all three servers serve :80');
    t.equal((await api('DELETE', '/vips/tls')).status, 204);
  });

  await t.test('one-arm VIP (snat): a server without a route back to the clients answers through the SLB node', async (t) => {
    const s3 = lab.host('s3');
    const vipOf = (id: string, port: number, extra: object) => ({
      id,
      address: vip,
      port,
      protocol: 'tcp',
      check: { kind: 'tcp', port: ECHO_PORT },
      timers: { interval: 200, response: 100, retries: 2, deadInterval: 300, rise: 1 },
      members: [{ address: s3.addr!, port: ECHO_PORT }],
      ...extra,
    });
    for (const body of [vipOf('onearm', 7010, { snat: {} }), vipOf('twoarm', 7011, {})]) {
      const res = await api('POST', '/vips', body);
      t.equal(res.status, 201, JSON.stringify(res.body));
    }
    await lab.waitMembers((vs) => ['onearm', 'twoarm'].every((id) => vs.find((v) => v.id === id)?.members.every((m: any) => m.health.up)), 10000, 'members up');
    // s3 keeps its own network only: no route to the clients.
    const gw = lab.t.routes.find((r) => r.ns === s3.ns && r.dst === 'default')!;
    inNs(s3.ns, ['ip', 'route', 'del', 'default']);
    t.teardown(() => inNs(s3.ns, ['ip', 'route', 'replace', 'default', 'via', String(gw.via)]));
    const one = await drive(lab, 'c1', { short: { targets: [`${vip}:7010`], count: 40, concurrency: 4, timeoutMs: 2000 } });
    t.equal(one.short.failed, 0, `40 of 40 connections to the one-arm VIP answered (${JSON.stringify(one.short.errors)})`);
    const two = await drive(lab, 'c1', { short: { targets: [`${vip}:7011`], count: 4, concurrency: 4, timeoutMs: 1500 } });
    t.equal(two.short.failed, 4, 'the same member behind a two-arm VIP cannot answer without the route (what snat changes)');
    const listing = inNs(lab.ns('slb'), ['conntrack', '-L', '-p', 'tcp', '--orig-dst', vip, '--dport', '7010']);
    const nodeAddr = `${RIP_NET}.1`;
    t.ok(listing.includes(`src=${s3.addr} dst=${nodeAddr} sport=${ECHO_PORT}`), `the member answered the node's own address ${nodeAddr}`);
    inNs(s3.ns, ['ip', 'route', 'replace', 'default', 'via', String(gw.via)]);
    for (const id of ['onearm', 'twoarm']) t.equal((await api('DELETE', `/vips/${id}`)).status, 204);
  });

  await t.test('drain: a long-lived stream on a drained member survives; new sessions avoid it', async (t) => {
    const longs = Promise.all(
      ['c1', 'c2'].map((c) => drive(lab, c, { long: { targets: [`${vip}:${ECHO_PORT}`], count: 6, durationMs: 6000, intervalMs: 100 } })),
    );
    await sleep(1000);
    const onS1 = () =>
      inNs(lab.ns('slb'), [
        'conntrack',
        '-L',
        '-p',
        'tcp',
        '--orig-dst',
        vip,
        '--orig-port-dst',
        String(ECHO_PORT),
        '--reply-src',
        rips[0],
        '--state',
        'ESTABLISHED',
      ])
        .split('\n')
        .filter((l) => l.includes('ESTABLISHED')).length;
    const before = onS1();
    t.ok(before >= 2, `${before} long-lived streams run on s1`);
    const res = await api('PATCH', `/vips/echo/members/${rips[0]}:${ECHO_PORT}`, { state: 'drain' });
    t.equal(res.status, 200);
    t.equal(res.body.slots, 0, 'the drained member has no slot in the map');
    const n0 = (await freshMembers('echo', Date.now())).map((m: any) => m.counters.newSessions);
    const shorts = await drive(lab, 'c1', { short: { targets: [`${vip}:${ECHO_PORT}`], count: 120, concurrency: 8 } });
    t.equal(shorts.short.failed, 0, 'new sessions succeed');
    const n1 = (await freshMembers('echo', Date.now())).map((m: any) => m.counters.newSessions);
    t.equal(n1[0], n0[0], 'no new session reached the drained member');
    t.equal(n1[1] + n1[2] - n0[1] - n0[2], 120, 'all 120 reached the others (the counters are fresh)');
    t.equal(onS1(), before, 'its established streams are still there');
    const l = await longs;
    t.equal(
      l.reduce((a, r) => a + r.long.broken, 0),
      0,
      'no long-lived stream broke',
    );
    t.equal((await api('PATCH', `/vips/echo/members/${rips[0]}:${ECHO_PORT}`, { state: 'enabled' })).status, 200);
  });

  await t.test('bad input is refused with a 400 naming the field; the kernel is unchanged', async (t) => {
    const ns = lab.ns('slb');
    const kernel = () => [inNs(ns, ['nft', 'list', 'table', 'ip', 'fwlb_slb']), inNs(ns, ['ip', '-4', '-o', 'addr', 'show'])].join('\n');
    const before = kernel();
    const base = lab.t.slb.vips!.find((v) => v.id === 'web')!;
    const cases: [unknown, RegExp][] = [
      [{ ...base, id: 'web2' }, /\/port: overlaps VIP "web"/],
      [{ ...base, id: 'x', port: 81, address: '203.0.113.101', members: [{ address: rips[0], port: 0 }] }, /\/members\/0\/port: must be >= 1/],
      [{ ...base, id: 'x', port: 81, address: '203.0.113.101', scheduler: 'wlc' }, /\/scheduler: must be equal to one of the allowed values/],
    ];
    for (const [body, want] of cases) {
      const res = await api('POST', '/vips', body);
      t.equal(res.status, 400);
      t.match(res.body.message, want);
    }
    t.equal(kernel(), before, 'nft table and addresses byte-identical');
  });

  await t.test('the probe helper stops answering, then dies: no member goes down, the DNAT stays, /health raises the alarm', async (t) => {
    const ns = lab.ns('slb');
    const helperPid = () =>
      inNs(ns, ['ip', 'netns', 'pids', ns])
        .split('\n')
        .filter(Boolean)
        .find((p) => {
          try {
            return inNs(ns, ['cat', `/proc/${p}/cmdline`]).includes('fwlb-probe.py');
          } catch {
            return false;
          }
        });
    const health = async () => (await lab.api('slb', 'GET', '/health')).body;
    const members = async () =>
      (await api('GET', '/vips')).body.flatMap((v: any) => v.members.map((m: any) => `${v.id} ${m.address} ${m.health.up} ${m.health.since}`));
    const before = await members();
    const rules = () => (inNs(ns, ['nft', 'list', 'table', 'ip', 'fwlb_slb']).match(/dnat ip to/g) ?? []).length;
    const dnatBefore = rules();
    t.equal((await health()).status, 'ok');
    const pid = helperPid()!;
    t.ok(pid, `the helper runs (pid ${pid})`);
    inNs(ns, ['kill', '-STOP', pid]);
    const load = httpLoad(100);
    let alarm: any = null;
    const t0 = Date.now();
    while (Date.now() - t0 < 8000) {
      const h = await health();
      if (h.status !== 'ok') {
        alarm = h;
        break;
      }
      await sleep(50);
    }
    t.ok(alarm, `/health is not ok while the helper is stuck: ${JSON.stringify(alarm)}`);
    t.match(alarm?.alarms?.[0] ?? '', /probe helper down/, 'and names the alarm');
    t.equal(rules(), dnatBefore, `every VIP keeps its DNAT (${dnatBefore} rules)`);
    let back = false;
    while (Date.now() - t0 < 15000) {
      if ((await health()).status === 'ok') {
        back = true;
        break;
      }
      await sleep(50);
    }
    t.ok(back, `the stuck helper was replaced and /health is ok again after ${Date.now() - t0} ms`);
    t.not(helperPid(), pid, 'by a new process');
    const l = await load;
    t.equal(l.failed, 0, `0 of ${l.ok + l.failed} requests failed meanwhile`);
    t.same(await members(), before, 'no member changed state');
  });

  await t.test('50 concurrent VIP creations and deletions: every 201 is in the kernel and in the state file', async (t) => {
    const ns = lab.ns('slb');
    const vipOf = (i: number) => ({ id: `c${i}`, address: vip, port: 9000 + i, protocol: 'tcp', members: [{ address: rips[i % 3], port: ECHO_PORT }] });
    const created = await Promise.all(Array.from({ length: 50 }, (_, i) => api('POST', '/vips', vipOf(i))));
    t.same(
      created.map((r) => r.status),
      Array(50).fill(201),
      'all 50 answered 201',
    );
    const listing = inNs(ns, ['nft', '-j', 'list', 'table', 'ip', 'fwlb_slb']);
    const chains = new Set(
      JSON.parse(listing)
        .nftables.filter((x: any) => x.chain)
        .map((x: any) => x.chain.name),
    );
    const dispatch = inNs(ns, ['nft', '-j', 'list', 'map', 'ip', 'fwlb_slb', 'vips']);
    t.equal(
      Array.from({ length: 50 }, (_, i) => `v_c${i}`).filter((n) => chains.has(n) && dispatch.includes(`"${n}"`)).length,
      50,
      'each one is in the kernel: its chain, and the dispatch jumps to it',
    );
    const saved = JSON.parse(readFileSync(lab.t.slb.stateFile!, 'utf8')).vips as { id: string }[];
    t.equal(saved.filter((v) => /^c\d+$/.test(v.id)).length, 50, 'and in the state file');
    const deleted = await Promise.all(Array.from({ length: 50 }, (_, i) => api('DELETE', `/vips/c${i}`)));
    t.same(
      deleted.map((r) => r.status),
      Array(50).fill(204),
      'all 50 deletions answered 204',
    );
    const after = inNs(ns, ['nft', '-j', 'list', 'table', 'ip', 'fwlb_slb']);
    t.notMatch(after, /"v_c\d+"/, 'none is left in the kernel');
    t.notOk(
      (JSON.parse(readFileSync(lab.t.slb.stateFile!, 'utf8')).vips as { id: string }[]).some((v) => /^c\d+$/.test(v.id)),
      'nor in the state file',
    );
  });

  await t.test("the VIP's address deleted by hand: the SLB puts it back on the kernel's notice, not at its next full pass", async (t) => {
    // The full pass is put an hour away, so that only the notice can bring the address back.
    const path = lab.configPath('slb');
    const original = readFileSync(path, 'utf8');
    const restartWith = async (text: string) => {
      writeFileSync(path, text);
      await lab.killNode('slb');
      await lab.startNode('slb');
    };
    await restartWith(JSON.stringify({ ...JSON.parse(original), resyncSeconds: 3600 }));
    t.teardown(() => restartWith(original));
    const held = () => inNs(lab.ns('slb'), ['ip', '-4', '-o', 'addr', 'show', 'dev', 'up0']).includes(`${vip}/32`);
    await waitUntil(async () => held() && (await api('GET', '/status')).body.started === true, 10000, 'the kernel state adopted');
    const notices = async () => (await api('GET', '/status')).body.addressNotices as number;
    const before = await notices();
    inNs(lab.ns('slb'), ['ip', 'addr', 'del', `${vip}/32`, 'dev', 'up0']);
    const back = await waitUntil(held, 10000, () => `the VIP address back: ${lab.nodes.slb!.log.slice(-5).join(' | ')}`);
    t.ok((await notices()) > before, `counted as a notice (${before} before, ${await notices()} after)`);
    const via = await drive(lab, 'c1', { short: { targets: [`${vip}:${ECHO_PORT}`], count: 30, concurrency: 6 } });
    t.equal(via.short.failed, 0, 'the VIP answers again');
    t.comment(`the VIP address was back ${back} ms after it was deleted`);
  });

  await t.test('the config lifecycle: a VIP added through the API survives a restart and a reload; an edit of the config file takes over', async (t) => {
    const added = { id: 'api-added', address: vip, port: 9100, protocol: 'tcp', members: [{ address: rips[0], port: ECHO_PORT }] };
    t.equal((await api('POST', '/vips', added)).status, 201);
    t.equal((await api('PATCH', `/vips/web/members/${rips[1]}:8080`, { weight: 5 })).status, 200, "web's member weight changed through the API");
    const restart = async () => {
      const before = lab.nodes.slb!;
      await lab.killNode('slb');
      const node = await lab.startNode('slb');
      return { log: node.log, was: before };
    };
    const weightOf = async (addr: string) => (await member('web', addr)).weight;
    const r1 = await restart();
    t.equal((await api('GET', '/vips/api-added')).status, 200, 'the API’s VIP survived the restart');
    t.match(inNs(lab.ns('slb'), ['nft', 'list', 'map', 'ip', 'fwlb_slb', 'vips']), /9100/, 'and is in the kernel');
    t.equal(await weightOf(rips[1]), 5, 'the API’s change to a config file VIP survived too');
    t.ok(
      r1.log.some((l) => /VIP web: changed through the API, the config file's version unchanged since: the API's version runs/.test(l)),
      'the start says which VIP runs as the API left it',
    );
    // The other direction: the operator edits web in the config file; the file's version runs from the next start.
    const path = lab.configPath('slb');
    const cfg = JSON.parse(readFileSync(path, 'utf8'));
    const web0 = cfg.vips.find((v: { id: string }) => v.id === 'web');
    web0.members = web0.members.map((m: { address: string; weight?: number }) => (m.address === rips[1] ? { ...m, weight: 3 } : m));
    writeFileSync(path, JSON.stringify(cfg, null, 2));
    const check = spawnSync(process.execPath, [join(REPO, 'apps/slb/dist/main.js'), 'check-config', path], { encoding: 'utf8' });
    t.equal(check.status, 0, check.stderr);
    t.match(check.stdout, /VIP web: the config file changed it since the API's last change: the file's version runs/, 'check-config says what will run');
    t.match(check.stdout, /VIP api-added: added through the API/);
    const r2 = await restart();
    t.equal(await weightOf(rips[1]), 3, 'the config file’s edit runs');
    t.equal((await api('GET', '/vips/api-added')).status, 200, 'and the API’s own VIP is still there');
    t.ok(r2.log.some((l) => /VIP web: the config file changed it since the API's last change/.test(l)));
    // export: the running VIPs as a config file, the API's included.
    const exp = spawnSync(process.execPath, [join(REPO, 'apps/slb/dist/main.js'), 'export', '--config', path], { encoding: 'utf8' });
    t.equal(exp.status, 0, exp.stderr);
    const exported = JSON.parse(exp.stdout);
    t.same(exported.vips.map((v: { id: string }) => v.id).sort(), [...cfg.vips.map((v: { id: string }) => v.id), 'api-added'].sort());
    t.equal(exported.interface, cfg.interface, 'the rest of the config file as written');
    // Reload without a restart: an edit of web in the file runs at once; the API's VIP stays; a key that takes a
    // restart is refused as a whole; SIGHUP does the same as POST /reload.
    const baseline = readFileSync(path, 'utf8');
    const edit = (weight: number, extra: Record<string, unknown> = {}) => {
      const doc = JSON.parse(baseline);
      const w = doc.vips.find((v: { id: string }) => v.id === 'web');
      w.members = w.members.map((m: { address: string }) => (m.address === rips[1] ? { ...m, weight } : m));
      writeFileSync(path, JSON.stringify({ ...doc, ...extra }, null, 2));
    };
    const pid = lab.nodes.slb!.proc.pid;
    edit(4);
    const rl = await api('POST', '/reload');
    t.equal(rl.status, 200, JSON.stringify(rl.body));
    t.same(rl.body, { changed: ['web'] });
    t.equal(await weightOf(rips[1]), 4, "the file's edit runs without a restart");
    t.equal((await api('GET', '/vips/api-added')).status, 200, "the API's VIP stays");
    edit(6, { countersSeconds: 7 });
    const no = await api('POST', '/reload');
    t.equal(no.status, 422);
    t.same(
      no.body.details.map((p: { field: string }) => p.field),
      ['/countersSeconds'],
      'refused, naming the key that takes a restart',
    );
    t.equal(await weightOf(rips[1]), 4, 'and nothing changed');
    edit(2);
    lab.nodes.slb!.proc.kill('SIGHUP');
    await waitUntil(async () => (await weightOf(rips[1])) === 2, 5000, 'SIGHUP applied the edit');
    t.equal(lab.nodes.slb!.proc.pid, pid, 'the same process throughout');
    t.equal((await api('DELETE', '/vips/api-added')).status, 204);
  });
});
