// Integration: L7 VIPs (mode http) served by HAProxy, which fwlb-slb starts, supervises and drives through its
// runtime API; real HTTP requests from the clients cross the sandwich to the SLB node and on to the servers.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  drive,
  ECHO_PORT,
  HTTP_PORT,
  inNs,
  L7_PORT,
  L7_REQUESTS,
  l7Misrouted,
  l7Vip,
  PROXY_HTTP_PORT,
  PROXY_TCP_PORT,
  REPO,
  waitUntil as waitFor,
} from '@fwlb/lab';
import type { HttpRequestSpec } from '@fwlb/lab';
import { haproxyCli } from '@fwlb/slb';
import { startLab } from '../helpers/lab';

/** The lab's table of requests (host, path, header) and the pool each must reach (deploy/lab/src/topology.ts). */
const TABLE = L7_REQUESTS;

t.test('L7 VIPs through HAProxy', async (t) => {
  const lab = await startLab(t);
  const token = lab.t.slb.api!.token!;
  const api = (method: string, path: string, body?: unknown) => lab.api('slb', method, path, body, token);
  const target = `${lab.t.vip}:${L7_PORT}`;
  const servers = lab.t.hosts.filter((h) => h.role === 'server');
  const rips = servers.map((h) => h.addr!);
  const body = (i: number) => `fwlb lab server ${servers[i].name}`;
  const POOLS = { www: [body(0), body(1)], api: [body(2)] };
  const hxDir = join(lab.t.opts.runDir, 'haproxy');
  // The master refuses connections for a moment while it re-executes after a reload: retried for up to 2 s.
  const master = (cmd: string) => haproxyCli(join(hxDir, 'master.sock'), cmd, 3000, 2000);
  /** The master's reload count and its workers, from its own CLI (`show proc`). */
  const reloads = async () => {
    const out = await master('show proc');
    const m = /^\d+\s+master\s+(\d+)/m.exec(out);
    if (!m) throw new Error(`show proc: ${out}`);
    return Number(m[1]);
  };
  const status = async () => (await api('GET', '/status')).body;
  const member = async (addr: string) => (await api('GET', '/vips/shop/members')).body.find((m: any) => m.address === addr);
  const load = (client: string, requests: HttpRequestSpec[], count: number, concurrency = 8, cookies = false) =>
    drive(lab, client, { http: { targets: [target], count, concurrency, requests, cookies } });

  await t.test('HAProxy runs the L7 VIP; fwlb checks its members', async (t) => {
    // The lab waits for every member up, which the API can say while the SLB still adopts its state.
    const ms = await waitFor(
      async () => {
        const st = await status();
        return st.started && st.haproxy.running && ((await api('GET', '/vips/shop/members')).body as any[]).every((m) => m.health.up);
      },
      10000,
      'adopted, HAProxy running, shop members up',
    );
    t.comment(`HAProxy running ${ms} ms after the lab's nodes were up`);
    const st = await status();
    t.equal(st.haproxy.running, true, `HAProxy runs: ${JSON.stringify(st.haproxy)}`);
    const cfg = readFileSync(join(hxDir, 'haproxy.cfg'), 'utf8');
    t.notMatch(cfg, /\bcheck\b/, "HAProxy's own health checks are off: fwlb decides");
    t.match(cfg, new RegExp(`bind ${lab.t.vip.replace(/\./g, '\\.')}:${L7_PORT}`), 'the frontend binds the VIP address');
  });

  await t.test('a table of 12 requests (host, path, header) to their pools: 3,000 requests, 0 misrouted, 0 failed', async (t) => {
    const rs = await Promise.all(['c1', 'c2'].map((c) => load(c, TABLE, 1500)));
    const failed = rs.reduce((a, r) => a + r.http.failed, 0);
    t.equal(failed, 0, `no request failed ${JSON.stringify(rs.map((r) => r.http.errors))}`);
    t.equal(
      rs.reduce((a, r) => a + r.http.ok, 0),
      3000,
    );
    const bad = rs.flatMap((r) => l7Misrouted(r.http.byLabel));
    t.same(bad, [], 'no request reached a server outside its pool');
    for (const row of TABLE)
      t.ok(
        rs.some((r) => r.http.byLabel[row.label]),
        `${row.label} was sent`,
      );
    const www = rs.reduce((a, r) => a + (r.http.bodies[body(0)] ?? 0), 0);
    const www2 = rs.reduce((a, r) => a + (r.http.bodies[body(1)] ?? 0), 0);
    t.ok(www > 0 && www2 > 0, `pool www spreads over both members: ${www} / ${www2}`);
  });

  await t.test('counters per rule and per member from HAProxy; X-Forwarded-For; TLS termination from a PEM file', async (t) => {
    const since = Date.now();
    let view: any;
    await waitFor(
      async () => {
        view = (await api('GET', '/vips/shop')).body;
        return view.counters.at > since;
      },
      8000,
      'counters read after the table run',
    );
    const rules = view.counters.rules as { rule: number; requests: number }[];
    t.equal(rules.length, 4, 'one counter per rule');
    // 3,000 requests over 12 table rows: the api host rows (2) hit rule 0, the prefix row rule 1, the header row rule
    // 2, the regex row rule 3, and the 7 www rows match no rule: 250 requests per row.
    t.same(
      rules.map((r) => r.requests),
      [500, 250, 250, 250],
      `requests per rule ${JSON.stringify(rules)}`,
    );
    t.equal(view.counters.defaultPool, 1750, 'requests of no rule (default pool)');
    const members = view.members as any[];
    t.ok(
      members.every((m) => m.counters.responses > 0),
      `per-member responses from HAProxy: ${members.map((m) => m.counters.responses)}`,
    );
    t.equal(members[2].counters.responses, 1250, 'the api member answered every api request');

    const client = lab.t.hosts.find((h) => h.name === 'c1')!;
    const head = inNs(lab.ns('c1'), ['curl', '-s', '-D', '-', '-o', '/dev/null', '-H', 'Host: www.example.com', `http://${target}/`]);
    t.match(head, new RegExp(`x-seen-forwarded-for: ${client.addr!.replace(/\./g, '\\.')}`, 'i'), 'the server sees the client in X-Forwarded-For');

    const pem = join(lab.t.opts.runDir, 'shop-tls.pem');
    const key = join(lab.t.opts.runDir, 'shop-tls.key');
    inNs(lab.ns('slb'), [
      'openssl',
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=www.example.com',
      '-keyout',
      key,
      '-out',
      `${pem}.crt`,
    ]);
    writeFileSync(pem, readFileSync(`${pem}.crt`, 'utf8') + readFileSync(key, 'utf8'));
    const missing = await api('POST', '/vips', { ...l7Vip(rips), id: 'shop-tls', port: 8443, tls: { certificate: '/nonexistent.pem' } });
    t.equal(missing.status, 400, 'a certificate that cannot be read: 400');
    t.equal(missing.body.details?.[0]?.field, '/tls/certificate', JSON.stringify(missing.body));
    const c = await api('POST', '/vips', { ...l7Vip(rips), id: 'shop-tls', port: 8443, tls: { certificate: pem } });
    t.equal(c.status, 201, JSON.stringify(c.body));
    const https = (host: string, path: string) =>
      inNs(lab.ns('c1'), ['curl', '-sk', '--resolve', `${host}:8443:${lab.t.vip}`, `https://${host}:8443${path}`]).trim();
    t.match(https('www.example.com', '/'), /fwlb lab server s[12]$/, 'HTTPS terminated on the VIP, www pool behind it');
    t.equal(https('api.example.com', '/'), body(2), 'and the rules apply to the decrypted request');
    const del = await api('DELETE', '/vips/shop-tls');
    t.equal(del.status, 204);
  });

  await t.test("the PROXY protocol: members that ask for it get the client's address from HAProxy, and pass fwlb's checks", async (t) => {
    // The servers' PROXY_HTTP_PORT requires a header (it closes a connection without one). s1 asks for v2, s2 for
    // v1, s3 for none: its checks, without a header, fail. No panic, so the checks decide.
    const members = [
      { address: rips[0], port: PROXY_HTTP_PORT, pool: 'www', proxyProtocol: 'v2' },
      { address: rips[1], port: PROXY_HTTP_PORT, pool: 'www', proxyProtocol: 'v1' },
      { address: rips[2], port: PROXY_HTTP_PORT, pool: 'www' },
    ];
    const vip = {
      ...l7Vip(rips),
      id: 'shop-proxy',
      port: 8444,
      panicThreshold: 0,
      pools: [{ name: 'www', scheduler: 'rr' }],
      rules: [],
      defaultPool: 'www',
      members,
    };
    const c = await api('POST', '/vips', vip);
    t.equal(c.status, 201, JSON.stringify(c.body));
    const health = async () => ((await api('GET', '/vips/shop-proxy/members')).body as any[]).map((m) => m.health);
    await waitFor(
      async () => {
        const h = await health();
        return h[0].up && h[1].up && h[2].lastCheck !== null;
      },
      10000,
      'the members that ask for the header up, and a check of the other done',
    );
    const h = await health();
    t.same(
      h.map((x) => [x.up, x.lastCheck.ok]),
      [
        [true, true],
        [true, true],
        [false, false],
      ],
      `fwlb's checks pass on the members that ask for the header, and fail on the one that does not send it (${h[2].lastCheck.reason})`,
    );
    const cfg = readFileSync(join(hxDir, 'haproxy.cfg'), 'utf8');
    t.match(cfg, /send-proxy-v2/, 'HAProxy sends the v2 header to s1');
    for (const client of ['c1', 'c2']) {
      const addr = lab.t.hosts.find((x) => x.name === client)!.addr!;
      const seen = Array.from({ length: 6 }, () => inNs(lab.ns(client), ['curl', '-s', '-m', '5', `http://${lab.t.vip}:8444/`]).trim());
      const re = new RegExp(`^fwlb lab server (s1|s2) proxy ${addr.replace(/\./g, '\\.')}:\\d+$`);
      t.ok(
        seen.every((b) => re.test(b)),
        `${client}: each answer names the client's address, as the header carried it: ${JSON.stringify(seen)}`,
      );
      t.same(new Set(seen.map((b) => b.split(' ')[3])), new Set(['s1', 's2']), `${client}: both headers (v1 and v2) reached their member`);
    }
    t.equal((await api('DELETE', '/vips/shop-proxy')).status, 204);
  });

  await t.test("a proxied TCP VIP (mode tcp): a service that is not HTTP, the client's address in the PROXY header, long streams kept", async (t) => {
    // s1 and s2 serve PROXY_TCP_PORT, which requires the header (v2 and v1); s3 serves the plain echo port, without one.
    const port = 7010;
    const vip = {
      id: 'tcp-proxy',
      address: lab.t.vip,
      port,
      protocol: 'tcp',
      mode: 'tcp',
      members: [
        { address: rips[0], port: PROXY_TCP_PORT, proxyProtocol: 'v2' },
        { address: rips[1], port: PROXY_TCP_PORT, proxyProtocol: 'v1' },
        { address: rips[2], port: ECHO_PORT },
      ],
    };
    const c = await api('POST', '/vips', vip);
    t.equal(c.status, 201, JSON.stringify(c.body));
    await waitFor(async () => ((await api('GET', '/vips/tcp-proxy/members')).body as any[]).every((m) => m.health.up), 10000, 'the proxied TCP VIP members up');
    const cfg = readFileSync(join(hxDir, 'haproxy.cfg'), 'utf8');
    t.match(cfg, /frontend f\.tcp-proxy\n {2}mode tcp\n/, 'HAProxy runs it in TCP mode');
    const target = `${lab.t.vip}:${port}`;
    const [longs, ...asked] = await Promise.all([
      Promise.all(['c1', 'c2'].map((client) => drive(lab, client, { long: { targets: [target], count: 10, durationMs: 3000, intervalMs: 100 } }))),
      ...['c1', 'c2'].map((client) => drive(lab, client, { whoami: { targets: [target], count: 9 } })),
    ]);
    const answers = new Set<string>();
    for (const [i, client] of ['c1', 'c2'].entries()) {
      const addr = lab.t.hosts.find((x) => x.name === client)!.addr!;
      const seen = asked[i].whoami!;
      const re = new RegExp(`^(?:(s1|s2) proxy ${addr.replace(/\./g, '\\.')}:\\d+|who)$`);
      t.ok(
        seen.every((b) => re.test(b)),
        `${client}: s1 and s2 name the client's address as the header carried it, s3 (no header) echoes: ${JSON.stringify(seen)}`,
      );
      for (const b of seen) answers.add(b === 'who' ? 's3' : b.split(' ')[0]);
    }
    t.same([...answers].sort(), ['s1', 's2', 's3'], 'round robin reached every member, each with its own header (v2, v1, none)');
    const streams = longs.flatMap((r) => r.long.streams);
    t.equal(streams.length, 20, '20 long streams');
    t.equal(streams.filter((s) => s.err).length, 0, `0 of 20 long streams through HAProxy broke ${JSON.stringify(longs.map((r) => r.long.errors))}`);
    // HAProxy's counters, read in the background.
    await waitFor(async () => (await api('GET', '/vips/tcp-proxy')).body.counters.newSessions >= 38, 5000, "HAProxy's session count read back");
    const v = (await api('GET', '/vips/tcp-proxy')).body;
    const perMember = (v.members as any[]).map((m) => m.counters.newSessions);
    t.ok(
      perMember.every((n) => n > 0) && perMember.reduce((a, b) => a + b, 0) === v.counters.newSessions,
      `the VIP's sessions (${v.counters.newSessions}) are its members' (${perMember})`,
    );
    t.equal((await api('DELETE', '/vips/tcp-proxy')).status, 204, 'the VIP deleted');
    t.notMatch(readFileSync(join(hxDir, 'haproxy.cfg'), 'utf8'), /tcp-proxy/, 'deleted, it is gone from the config');
  });

  await t.test('a member killed: out within the timers, then 0 of 600 failed and none reached it; back after rise', async (t) => {
    const timers = l7Vip(rips).timers!;
    const killedAt = Date.now();
    await lab.killServer(servers[0].name);
    const outMs = await waitFor(async () => (await member(rips[0])).health.up === false, 5000, 's1 down');
    // Detection: a failed probe every interval, `retries` of them; the bound adds a response timeout and polling.
    const bound = (timers.retries! + 1) * timers.interval! + timers.response! + 500;
    t.ok(Date.now() - killedAt <= bound, `s1 out ${Date.now() - killedAt} ms after it died (bound ${bound} ms)`);
    t.comment(`s1 out after ${outMs} ms`);
    const www = TABLE.filter((r) => r.pool === 'www');
    const r = await load('c1', www, 600);
    t.equal(r.http.failed, 0, `0 of 600 failed ${JSON.stringify(r.http.errors)}`);
    t.equal(r.http.bodies[body(0)] ?? 0, 0, 'none reached the dead member');
    t.equal(r.http.bodies[body(1)], 600, 'the other www member took them all');
    // fwlb put it in maintenance in HAProxy (read back from HAProxy's stats, refreshed in the background).
    await waitFor(async () => /MAINT/.test((await member(rips[0])).haproxy ?? ''), 5000, 'HAProxy shows s1 in maintenance');
    await lab.startServer(servers[0].name);
    const backMs = await waitFor(async () => (await member(rips[0])).health.up === true, 5000, 's1 up');
    t.ok(backMs >= timers.rise! * timers.interval! - 250, `s1 back after ${backMs} ms (rise ${timers.rise} x ${timers.interval} ms)`);
    const after = await load('c1', www, 200);
    t.ok((after.http.bodies[body(0)] ?? 0) > 0, `s1 takes requests again: ${JSON.stringify(after.http.bodies)}`);
  });

  await t.test("the api pool's one member fails its checks but serves: the pool in panic, 0 of 600 failed; checks pass again: out of it", async (t) => {
    const apiRows = TABLE.filter((r) => r.pool === 'api');
    const s3 = servers[2].name;
    t.teardown(() => lab.refuseChecks(s3, false));
    await lab.refuseChecks(s3, true);
    const downMs = await waitFor(async () => (await member(rips[2])).health.up === false, 5000, `${s3} down by its checks`);
    t.match((await member(rips[2])).health.reason, /status 503/, 'its checks say why');
    const alarms = async () => ((await api('GET', '/health')).body.alarms as string[]).join('\n');
    t.match(await alarms(), /VIP shop pool api in panic: 0 of 1 enabled members up/, `an alarm names the pool (${downMs} ms after the checks failed)`);
    const r = await load('c1', apiRows, 600);
    t.equal(r.http.failed, 0, `0 of 600 failed ${JSON.stringify(r.http.errors)}`);
    t.equal(r.http.bodies[body(2)], 600, 'its one member served them all');
    await lab.refuseChecks(s3, false);
    await waitFor(async () => (await member(rips[2])).health.up === true, 5000, `${s3} up`);
    await waitFor(async () => !/pool api in panic/.test(await alarms()), 5000, 'the panic alarm cleared');
    t.pass('out of panic once its checks pass');
  });

  await t.test('cookie persistence: 60 of 60 on one member; drained, existing sessions stay, new ones avoid it', async (t) => {
    const www = [{ label: 'www', host: 'www.example.com', path: '/' }];
    // Four client sessions (a cookie jar each), 60 requests each, one after another within a session.
    const sessions = await Promise.all(['c1', 'c2', 'c1', 'c2'].map((c) => load(c, www, 60, 1, true)));
    sessions.forEach((x, i) => {
      const w = x.http.byWorker[0];
      t.ok(
        x.http.failed === 0 && Object.keys(w).length === 1 && Object.values(w)[0] === 60,
        `client session ${i}: 60 of 60 on one member ${JSON.stringify(w)}`,
      );
    });
    const r = { http: { byWorker: sessions.map((x) => x.http.byWorker[0]), cookies: sessions.map((x) => x.http.cookies[0]) } };
    if (!r.http.byWorker.some((w) => w[body(0)])) {
      // Round robin put every session on s2 (possible, rarely): one more session until one lands on s1.
      for (let i = 0; i < 6 && !r.http.byWorker.some((w) => w[body(0)]); i++) {
        const x = await load('c1', www, 1, 1, true);
        r.http.byWorker.push(x.http.byWorker[0]);
        r.http.cookies.push(x.http.cookies[0]);
      }
    }
    // Drain s1: a session holding its cookie keeps it, one without a cookie goes to s2.
    const d = await api('PATCH', `/vips/shop/members/${rips[0]}:${HTTP_PORT}`, { state: 'drain' });
    t.equal(d.status, 200, JSON.stringify(d.body));
    // The cookie a session on s1 was given.
    const onS1 = r.http.byWorker.findIndex((w) => w[body(0)]);
    t.ok(onS1 >= 0, 'a session landed on s1');
    const cookie = Object.entries(r.http.cookies[onS1])
      .map(([k, v]) => `${k}=${v}`)
      .join('; ');
    t.match(cookie, /^FWLB_shop=[0-9a-f]+$/, `its persistence cookie: ${cookie}`);
    const held = await load('c1', [{ ...www[0], label: 'held', headers: { cookie } }], 60, 4);
    t.same(held.http.bodies, { [body(0)]: 60 }, 'requests of an existing session (its cookie) still reach the drained member');
    const fresh = await load('c2', www, 120, 4);
    t.equal(fresh.http.bodies[body(0)] ?? 0, 0, `new sessions avoid the drained member ${JSON.stringify(fresh.http.bodies)}`);
    const e = await api('PATCH', `/vips/shop/members/${rips[0]}:${HTTP_PORT}`, { state: 'enabled' });
    t.equal(e.status, 200);
  });

  await t.test('20 member, weight and rule changes under load: 0 failed, 0 reloads, each effective; 5 new L7 VIPs: 0 failed', async (t) => {
    const before = await reloads();
    const engineBefore = (await status()).haproxy.reloads;
    const steady = load('c2', TABLE, 4000, 4);
    const base = l7Vip(rips);
    let changes = 0;
    const check = async (row: HttpRequestSpec, want: string[], what: string) => {
      const r = await load('c1', [row], 20, 4);
      const got = Object.keys(r.http.bodies);
      t.ok(
        r.http.failed === 0 && got.length > 0 && got.every((b) => want.includes(b)),
        `${what}: ${JSON.stringify(r.http.bodies)} ${JSON.stringify(r.http.errors)}`,
      );
    };
    for (let i = 0; i < 5; i++) {
      // Weight: s2 heavier, then back.
      const weight = i % 2 ? 1 : 10;
      const w = await api('PATCH', `/vips/shop/members/${rips[1]}:${HTTP_PORT}`, { weight });
      t.equal(w.status, 200, JSON.stringify(w.body));
      changes++;
      const hw = await haproxyCli(join(hxDir, 'admin.sock'), `get weight b.shop.www/${rips[1]}_${HTTP_PORT}`);
      t.match(hw, new RegExp(`^${weight} `), `weight change ${i}: HAProxy runs s2 at weight ${weight} (${hw.trim()})`);
      // A rule: /beta/ on www.example.com goes to api, then the rule goes away again.
      const rules = i % 2 === 0 ? [{ host: 'www.example.com', path: '/beta/', pool: 'api' }, ...base.rules!] : base.rules!;
      const p = await api('PUT', '/vips/shop', { ...base, rules });
      t.equal(p.status, 200, JSON.stringify(p.body));
      changes++;
      await check(
        { label: 'beta', host: 'www.example.com', path: '/beta/x' },
        i % 2 === 0 ? POOLS.api : POOLS.www,
        `rule change ${i}: /beta/ goes to ${i % 2 === 0 ? 'api' : 'www'}`,
      );
      // A member: s2 leaves the www pool and comes back (joining after its checks rise).
      const del = await api('DELETE', `/vips/shop/members/${rips[1]}:${HTTP_PORT}`);
      t.equal(del.status, 204, JSON.stringify(del.body));
      changes++;
      await check({ label: 'www', host: 'www.example.com', path: '/' }, [body(0)], `member removed ${i}: www only on s1`);
      const add = await api('POST', '/vips/shop/members', { address: rips[1], port: HTTP_PORT, pool: 'www' });
      t.equal(add.status, 201, JSON.stringify(add.body));
      changes++;
      await waitFor(async () => (await member(rips[1])).health.up === true, 5000, 's2 back up');
    }
    await check({ label: 'www', host: 'www.example.com', path: '/' }, POOLS.www, 's2 serves www again');
    t.equal(changes, 20, '20 changes');
    t.equal(await reloads(), before, 'HAProxy reloaded 0 times (its master says)');
    t.equal((await status()).haproxy.reloads, engineBefore, 'and fwlb sent no reload');
    const r = await steady;
    t.equal(r.http.failed, 0, `0 of ${r.http.ok + r.http.failed} requests failed during the changes ${JSON.stringify(r.http.errors)}`);
    t.same(l7Misrouted(r.http.byLabel), [], 'none misrouted during the changes');

    const during = load('c2', TABLE, 2000, 4);
    for (let i = 0; i < 5; i++) {
      const c = await api('POST', '/vips', { ...base, id: `shop${i + 2}`, port: L7_PORT + 1 + i });
      t.equal(c.status, 201, JSON.stringify(c.body));
    }
    const s = await during;
    t.equal(s.http.failed, 0, `0 of ${s.http.ok + s.http.failed} requests failed across 5 reloads ${JSON.stringify(s.http.errors)}`);
    t.equal(await reloads(), before + 5, 'each new L7 VIP was one seamless reload');
    const n = await load('c1', TABLE, 120, 4);
    t.equal(n.http.failed, 0);
    const other = await drive(lab, 'c1', { http: { targets: [`${lab.t.vip}:${L7_PORT + 5}`], count: 24, concurrency: 4, requests: TABLE } });
    t.equal(other.http.failed, 0, 'a new L7 VIP answers');
    t.same(l7Misrouted(other.http.byLabel), [], 'and routes by its rules');
  });

  await t.test('bad input: 400 naming the field, HAProxy config and kernel unchanged', async (t) => {
    const base = l7Vip(rips);
    const cfg = readFileSync(join(hxDir, 'haproxy.cfg'), 'utf8');
    const map = readFileSync(join(hxDir, 'shop.map'), 'utf8');
    const nft = inNs(lab.ns('slb'), ['nft', 'list', 'table', 'ip', 'fwlb_slb']).replace(/packets \d+ bytes \d+/g, '');
    const cases: [string, unknown, RegExp][] = [
      ['an overlapping rule', { ...base, rules: [...base.rules!, { host: 'api.example.com', path: '/x', pool: 'www' }] }, /^\/rules\/4$/],
      ['a regex that does not compile', { ...base, rules: [{ host: 'www.example.com', pathRegex: '/v[0-9+/x', pool: 'api' }] }, /^\/rules\/0\/pathRegex$/],
      ['an unknown scheduler', { ...base, pools: [{ name: 'www', scheduler: 'fastest' }, { name: 'api' }] }, /^\/pools\/0\/scheduler$/],
      ['a rule naming no pool', { ...base, rules: [{ host: 'x.example.com', pool: 'nope' }] }, /^\/rules\/0\/pool$/],
    ];
    for (const [what, b, field] of cases) {
      const r = await api('PUT', '/vips/shop', b);
      t.equal(r.status, 400, `${what}: 400`);
      t.ok(
        (r.body.details ?? []).some((p: any) => field.test(p.field)),
        `${what}: names the field ${JSON.stringify(r.body.details ?? r.body)}`,
      );
    }
    t.equal(readFileSync(join(hxDir, 'haproxy.cfg'), 'utf8'), cfg, 'HAProxy config unchanged');
    t.equal(readFileSync(join(hxDir, 'shop.map'), 'utf8'), map, 'rule map unchanged');
    t.equal(inNs(lab.ns('slb'), ['nft', 'list', 'table', 'ip', 'fwlb_slb']).replace(/packets \d+ bytes \d+/g, ''), nft, 'nft table unchanged');
  });

  await t.test('the controller killed: HAProxy keeps serving; restarted, it adopts the running HAProxy (one seamless reload)', async (t) => {
    const pid = (await status()).haproxy.masterPid;
    const before = await reloads();
    const during = load('c2', TABLE, 1200, 4);
    await lab.killNode('slb');
    const alone = await load('c1', TABLE, 240, 4);
    t.equal(alone.http.failed, 0, `with no controller, 0 of 240 requests failed ${JSON.stringify(alone.http.errors)}`);
    t.same(l7Misrouted(alone.http.byLabel), [], 'and none misrouted');
    await lab.startNode('slb');
    await waitFor(async () => (await status()).started === true, 10000, 'the restarted SLB adopted its state');
    const st = await status();
    t.equal(st.haproxy.masterPid, pid, 'the new controller adopted the same HAProxy master');
    t.equal(await reloads(), before + 1, 'and reloaded it once with its config');
    const r = await during;
    t.equal(r.http.failed, 0, `0 of ${r.http.ok + r.http.failed} requests failed across the kill, the restart and the reload ${JSON.stringify(r.http.errors)}`);
  });

  await t.test('HAProxy killed with SIGKILL: back within 2 s with the same VIPs, alarm in /status', async (t) => {
    const pid = (await status()).haproxy.masterPid;
    t.ok(pid > 0, `master pid ${pid}`);
    const killed = Date.now();
    process.kill(pid, 'SIGKILL');
    const ms = await waitFor(
      async () => {
        const st = await status();
        return st.haproxy.running && st.haproxy.masterPid !== pid && (await load('c1', TABLE.slice(0, 2), 2, 1)).http.ok === 2;
      },
      5000,
      'HAProxy back and answering',
    );
    t.ok(Date.now() - killed <= 2000, `answering again ${Date.now() - killed} ms after the kill (${ms} ms polled)`);
    const st = await status();
    t.ok(
      st.alarms.some((a: string) => /HAProxy exited/.test(a)),
      `alarm shown: ${JSON.stringify(st.alarms)}`,
    );
    const r = await load('c1', TABLE, 240);
    t.equal(r.http.failed, 0, 'every VIP answers as before');
    t.same(l7Misrouted(r.http.byLabel), [], 'with the same rules');
    const other = await drive(lab, 'c1', { http: { targets: [`${lab.t.vip}:${L7_PORT + 3}`], count: 12, concurrency: 4, requests: TABLE } });
    t.equal(other.http.failed, 0, 'the VIPs added through the API are back too');
  });

  await t.test("under the shipped unit's capabilities: an L7 VIP on port 80 works, and HAProxy outlives the unit's restart", async (t) => {
    const unit = readFileSync(join(REPO, 'deploy/systemd/fwlb-slb.service'), 'utf8');
    t.match(unit, /^KillMode=process$/m);
    t.match(unit, /^NoNewPrivileges=yes$/m);
    const caps = /^CapabilityBoundingSet=(.+)$/m
      .exec(unit)![1]
      .split(/\s+/)
      .map((c) => c.replace(/^CAP_/, '').toLowerCase());
    // What the unit leaves a root agent: this bounding set and no new privileges (setpriv does what systemd does).
    const asUnit = (set: string[]) => ['setpriv', '--no-new-privs', `--bounding-set=-all,${set.map((c) => `+${c}`).join(',')}`, '--'];
    const bind80 = (set: string[]) =>
      spawnSync('ip', ['netns', 'exec', lab.ns('slb'), ...asUnit(set), 'python3', '-c', 'import socket; socket.socket().bind(("127.0.0.1", 80))']).status;
    t.equal(bind80(caps), 0, "with the unit's set, port 80 binds");
    t.not(bind80(caps.filter((c) => c !== 'net_bind_service')), 0, 'without CAP_NET_BIND_SERVICE it would not');
    /** systemctl stop with KillMode=process: SIGTERM to the agent alone. */
    const stopUnit = async () => {
      const n = lab.nodes.slb!;
      const exited = new Promise((r) => n.proc.once('exit', r));
      n.proc.kill('SIGTERM');
      await exited;
      delete lab.nodes.slb;
    };
    const startUnit = async () => {
      await lab.startNode('slb', asUnit(caps));
      await waitFor(async () => (await status()).started === true, 10000, 'the SLB adopted its state');
    };
    // A fresh HAProxy, started by the agent under the unit's set (the running one came from an unrestricted agent).
    const old = (await status()).haproxy.masterPid;
    await stopUnit();
    process.kill(old, 'SIGTERM');
    await waitFor(async () => !existsSync(`/proc/${old}`), 5000, 'the old HAProxy gone');
    await startUnit();
    const pid = (await status()).haproxy.masterPid;
    const bnd = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1];
    const want = caps.reduce((m, c) => m | (1n << BigInt({ net_bind_service: 10, net_admin: 12, net_raw: 13 }[c] ?? 63)), 0n);
    t.equal(BigInt(`0x${bnd}`), want, `HAProxy runs with the unit's capabilities only (CapBnd ${bnd})`);
    // Port 80 of the VIP address is the lab's L4 VIP `web`: it makes way for the L7 one, and comes back after.
    const web = lab.t.slb.vips!.find((v) => v.address === lab.t.vip && v.port === 80)!;
    t.equal((await api('DELETE', `/vips/${web.id}`)).status, 204);
    const vip80 = { ...l7Vip(rips), id: 'shop80', port: 80 };
    const created = await api('POST', '/vips', vip80);
    t.equal(created.status, 201, created.status === 201 ? 'an L7 VIP on port 80' : JSON.stringify(created.body));
    const on80 = (client: string, count: number) => drive(lab, client, { http: { targets: [`${lab.t.vip}:80`], count, concurrency: 4, requests: TABLE } });
    const first = await on80('c1', 60);
    t.equal(first.http.failed, 0, `an L7 VIP on port 80: 0 of 60 failed ${JSON.stringify(first.http.errors)}`);
    t.same(l7Misrouted(first.http.byLabel), []);
    // systemctl restart: the agent stops (SIGTERM, alone) and starts again; HAProxy serves throughout and is adopted.
    const during = on80('c2', 600);
    await stopUnit();
    const alone = await on80('c1', 60);
    t.equal(alone.http.failed, 0, 'with the unit stopped, port 80 still answers');
    await startUnit();
    t.equal((await status()).haproxy.masterPid, pid, 'the restarted unit adopted the same HAProxy');
    const r = await during;
    t.equal(r.http.failed, 0, `0 of ${r.http.ok + r.http.failed} requests failed across the restart ${JSON.stringify(r.http.errors)}`);
    t.equal((await api('DELETE', '/vips/shop80')).status, 204);
    t.equal((await api('POST', '/vips', web)).status, 201);
  });
});
