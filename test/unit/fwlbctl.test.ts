// Unit: fwlbctl against real HTTP servers on unix sockets (the balancer and SLB apps over fake kernels): commands,
// tables, --json, and exit codes that say what failed.
import { t } from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateBalancerConfig } from '@fwlb/config';
import { Announcer, build, Reconciler, Reloader, RoutingPort } from '@fwlb/balancer';
import { fakes } from '../helpers/fake-announcer';
import { run, table } from '@fwlb/fwlbctl';
import { REPO } from '@fwlb/lab';
import { recordingNft } from '../helpers/recording-nft';
import { setup, TOKEN, web } from '../helpers/slb-fixture';

const CTL = join(REPO, 'apps/fwlbctl/dist/main.js');
/** The binary, run without blocking this process (its server answers from this event loop). */
const ctl = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [CTL, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
const dir = mkdtempSync(join(tmpdir(), 'fwlbctl-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('--help and --version answer without a node, exit 0; an unknown command is a usage error, exit 3 (Nagios UNKNOWN)', async (t) => {
  for (const h of ['--help', '-h', 'help']) {
    const r = await ctl([h]);
    t.equal(r.status, 0, `${h}: exit 0`);
    t.match(r.stdout, /^usage: fwlbctl /, `${h}: the usage on stdout`);
  }
  const v = await ctl(['--version']);
  t.same([v.status, v.stdout.trim()], [0, 'fwlbctl 0.1.0']);
  const bad = await ctl(['frobnicate']);
  t.same([bad.status, /unknown command "frobnicate"/.test(bad.stderr)], [3, true]);
  const one = await ctl(['help', 'member']);
  t.same(
    one.stdout
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).slice(0, 2).join(' ')),
    ['member add', 'member remove|drain|enable', 'member weight'],
    "help COMMAND: that command's lines",
  );
});

t.test('table pads columns', async (t) => {
  t.equal(
    table(
      ['a', 'bb'],
      [
        ['xxx', 1],
        [null, true],
      ],
    ),
    'a    bb\nxxx  1\n-    true',
  );
});

t.test('against a balancer API', async (t) => {
  const config = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 7 },
  });
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const r = new Reconciler(config, recordingNft(), routing);
  let alarm: string | null = null;
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, apply: () => r.reconcile(), alarms: () => (alarm ? [alarm] : []) });
  const sock = join(dir, 'ob.sock');
  await app.listen({ path: sock });
  t.teardown(() => app.close());
  await r.reconcile();
  const api = `unix:${sock}`;
  const fw = await run({ api }, ['firewalls']);
  t.match(fw.text, /^firewall\s+enabled\s+healthy/m);
  t.equal((fw.json as any[]).length, 3);
  await t.rejects(run({ api }, ['firewall', 'disable', 'fw2']), { code: 'FWLB_UNAUTHORIZED', exit: 1 }, 'a mutation without the token is refused, exit 1');
  const off = await run({ api, token: TOKEN }, ['firewall', 'disable', 'fw2']);
  t.match(off.json, { id: 'fw2', enabled: false, live: false, buckets: 0 });
  t.match((await run({ api }, ['firewalls'])).text, /^fw2\s.*\sfw1:\d+ fw3:\d+/m, "the table shows where fw2's buckets went");
  await t.rejects(run({ api, token: TOKEN }, ['firewall', 'disable', 'fw9']), { code: 'FWLB_NO_SUCH_FIREWALL', exit: 1 });
  await t.rejects(run({ api }, ['frobnicate']), { code: 'FWLBCTL_USAGE', exit: 3 });
  await t.rejects(run({ api: `unix:${join(dir, 'nobody.sock')}` }, ['status']), { code: 'FWLBCTL_UNREACHABLE', exit: 2 });
  // The binary: --json output parses, exit codes come through.
  const bin = await ctl(['--api', api, '--json', 'status']);
  t.equal(bin.status, 0, bin.stderr);
  t.equal(JSON.parse(bin.stdout).role, 'outside');
  // health, for keepalived's track_script: 0 ok, 3 degraded with the alarm, 4 no answer.
  const healthy = await ctl(['--api', api, 'health']);
  t.equal(healthy.status, 0, healthy.stderr);
  t.equal(healthy.stdout.trim(), 'outside: ok');
  alarm = 'probe helper down';
  const degraded = await ctl(['--api', api, 'health']);
  t.equal(degraded.status, 1, 'degraded: exit 1 (WARNING)');
  t.match(degraded.stderr, /degraded: probe helper down/);
  alarm = null;
  t.equal((await ctl(['--api', `unix:${join(dir, 'nobody.sock')}`, 'health'])).status, 2, 'no answer: exit 2 (CRITICAL)');
  t.equal((await ctl(['--api', api, 'health', '--timeout', '0'])).status, 3, 'a bad timeout: usage (UNKNOWN)');
  const refused = await ctl(['--api', api, 'firewall', 'enable', 'fw2'], { FWLB_TOKEN: 'wrong' });
  t.equal(refused.status, 1);
  t.match(refused.stderr, /FWLB_UNAUTHORIZED/);
});

t.test('reload: what the node took, or the refusal with its fields (exit 1)', async (t) => {
  const fw = (k: number) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` });
  const doc = (ids: number[], seed = 7) => ({ role: 'outside', sideInterface: 'cli0', firewalls: ids.map(fw), hash: { seed } });
  let file: unknown = doc([1, 2, 3]);
  const config = validateBalancerConfig(file);
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const r = new Reconciler(config, recordingNft(), routing);
  const reloader = new Reloader({
    membership: r.membership,
    reconciler: r,
    health: () => null,
    sessions: null,
    load: () => validateBalancerConfig(file),
    log: () => undefined,
  });
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, reload: () => reloader.reload('API') });
  const sock = join(dir, 'reload.sock');
  await app.listen({ path: sock });
  t.teardown(() => app.close());
  await r.reconcile();
  const api = `unix:${sock}`;
  t.equal((await ctl(['--api', api, 'reload'], { FWLB_TOKEN: TOKEN })).stdout.trim(), 'the config file is unchanged');
  file = doc([1, 2, 3, 4]);
  const took = await ctl(['--api', api, 'reload'], { FWLB_TOKEN: TOKEN });
  t.equal(took.status, 0, took.stderr);
  t.match(took.stdout, /^reloaded: firewalls added fw4, removed none; \d+ nft commands, \d+ routing changes$/m);
  file = doc([1, 2, 3, 4], 8);
  const refused = await ctl(['--api', api, 'reload'], { FWLB_TOKEN: TOKEN });
  t.equal(refused.status, 1);
  t.match(refused.stderr, /FWLB_RELOAD_REFUSED: .*\/hash: changes every flow.s bucket/);
});

t.test('node: the announcements, drain --wait until the node takes no new connection, undrain; no bgp section: named', async (t) => {
  const base = {
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 7 },
  };
  const peers = [{ name: 'router', address: '192.0.2.1', asn: 65000, announce: ['203.0.113.0/24'] }];
  const config = validateBalancerConfig({ ...base, bgp: { asn: 65001, routerId: '192.0.2.11', configFile: join(dir, 'bird.conf'), peers } });
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const r = new Reconciler(config, recordingNft(), routing);
  const f = fakes(peers);
  const announcer = new Announcer(config.bgp!, 'ob1', { rtnl: f.rtnl, daemon: f.daemon, unfitReason: () => null, log: () => undefined });
  await announcer.start(1e9);
  t.teardown(() => announcer.stop());
  // SYNs keep coming for 1 s after the drain, then stop (the routers have left the node).
  let drainedAt = 0;
  let syns = 0;
  const newConnections = async () => (drainedAt && Date.now() - drainedAt > 1000 ? syns : ++syns);
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, announcer, newConnections });
  app.addHook('onRequest', async (req) => {
    if (req.method === 'PUT' && req.url === '/node/drain') drainedAt = Date.now();
  });
  const sock = join(dir, 'bgp.sock');
  await app.listen({ path: sock });
  t.teardown(() => app.close());
  const api = `unix:${sock}`;
  const shown = await run({ api }, ['node']);
  t.match(shown.text, /^announcements fit; BIRD running, configuration loaded/);
  t.match(shown.text, /^router\s+192\.0\.2\.1\s+up\s+true\s+-\s+Established$/m);
  await t.rejects(run({ api }, ['node', 'drain']), { code: 'FWLB_UNAUTHORIZED', exit: 1 });
  const t0 = Date.now();
  const d = await run({ api, token: TOKEN }, ['node', 'drain', '--wait', '10']);
  t.match(d.text, /^drained: no new connection since \d+ ms after the drain \(2000 ms quiet\)/);
  t.ok((d.json as any).quietAfterMs >= 400, `it waited for the SYNs to stop (a poll every 500 ms): ${(d.json as any).quietAfterMs} ms`);
  t.ok(Date.now() - t0 >= (d.json as any).quietAfterMs + 2000, `and for 2 s of quiet: ${Date.now() - t0} ms in all`);
  t.same([...new Set(f.table().map((x) => x.metric))], [200], 'the announce table says drained');
  t.equal(((await run({ api, token: TOKEN }, ['node', 'undrain'])).json as any).state, 'fit');
  // SYNs that never stop: the wait ends with an error, not a false "drained".
  drainedAt = 0;
  const endless = await ctl(['--api', api, '--token-file', writeToken(), 'node', 'drain', '--wait', '1']);
  t.equal(endless.status, 1, 'exit 1 (WARNING)');
  t.match(endless.stderr, /FWLBCTL_DRAIN_TIMEOUT|still taking new connections after 1 s/);
  await t.rejects(run({ api, token: TOKEN }, ['node', 'drain', '--wait', 'soon']), { code: 'FWLBCTL_USAGE', exit: 3 });
  // A node without a bgp section.
  const plain = build({ reconciler: new Reconciler(validateBalancerConfig(base), recordingNft(), routing), token: TOKEN, audit: () => undefined });
  const sock2 = join(dir, 'plain.sock');
  await plain.listen({ path: sock2 });
  t.teardown(() => plain.close());
  await t.rejects(run({ api: `unix:${sock2}` }, ['node']), { code: 'FWLB_NO_BGP', exit: 1 });
});

function writeToken(): string {
  const p = join(dir, 'token');
  writeFileSync(p, TOKEN);
  return p;
}

/** The SLB API over a fake kernel, started and listening on a unix socket of its own (closed after the test). */
async function slbOnSocket(t: { teardown(f: () => unknown): void }, name: string) {
  const { s, app } = setup();
  await s.start();
  const sock = join(dir, name);
  await app.listen({ path: sock });
  t.teardown(() => app.close());
  return { s, sock };
}

t.test('against an SLB API', async (t) => {
  const { s, sock } = await slbOnSocket(t, 'slb.sock');
  const api = `unix:${sock}`;
  t.match((await run({ api }, ['vips'])).text, /web\s+203\.0\.113\.100\s+80\s+tcp\s+rr\s+2\/2/);
  const drained = await run({ api, token: TOKEN }, ['member', 'drain', 'web', '10.20.0.11:8080']);
  t.match(drained.json, { state: 'drain', slots: 0 });
  const added = await run({ api, token: TOKEN }, ['member', 'add', 'web', '10.20.0.13:8080', '--weight', '3']);
  t.match(added.json, { address: '10.20.0.13', weight: 3 });
  // --pool is sent (an L4 VIP refuses it, naming the field).
  await t.rejects(run({ api, token: TOKEN }, ['member', 'add', 'web', '10.20.0.14:8080', '--pool', 'www']), /\/pool: is for members of L7 VIPs only/);
  const w = await run({ api, token: TOKEN }, ['member', 'weight', 'web', '10.20.0.12:8080', '5']);
  t.match(w.json, { weight: 5 });
  t.match((await run({ api, token: TOKEN }, ['member', 'remove', 'web', '10.20.0.13:8080'])).text, /removed/);
  const ms = (await run({ api }, ['members', 'web'])).json as any[];
  t.same(
    ms.map((m) => [m.address, m.state, m.weight]),
    [
      ['10.20.0.11', 'drain', 1],
      ['10.20.0.12', 'enabled', 5],
    ],
  );
  // An IPv6 VIP: members named [addr]:port, in any IPv6 spelling.
  await s.createVip({ ...web(), id: 'web6', address: '2001:db8:5::100', members: [{ address: '2001:db8:20::11', port: 8080 }] });
  const six = await run({ api, token: TOKEN }, ['member', 'add', 'web6', '[2001:DB8:20:0::12]:8080']);
  t.match(six.json, { address: '2001:db8:20::12', port: 8080 });
  t.match(six.text, /^\[2001:db8:20::12\]:8080: weight 1/, 'printed in brackets, RFC 5952');
  t.match((await run({ api, token: TOKEN }, ['member', 'drain', 'web6', '[2001:db8:20::12]:8080'])).json, { state: 'drain' });
  t.match((await run({ api }, ['members', 'web6'])).text, /\[2001:db8:20::12\]:8080\s+1\s+drain/);
  await t.rejects(run({ api, token: TOKEN }, ['member', 'add', 'web6', '2001:db8:20::13:8080']), /usage/, 'an IPv6 member without brackets is a usage error');
});

t.test('sessions: IPv6 ends print as [addr]:port, and --addr takes any spelling of an IPv6 address', async (t) => {
  const config = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, nextHop6: `2001:db8:16:${k}::2`, interface: `fw${k}` })),
    hash: { seed: 7 },
  });
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const r = new Reconciler(config, recordingNft(), routing);
  const rec = {
    outerAddr: '2001:db8:c::11',
    outerPort: 40000,
    innerAddr: '2001:db8:20::12',
    innerPort: 7007,
    proto: 6,
    firewall: 'fw2',
    node: 'ob',
    firstSeen: 1,
    expires: 2_000_000_000_000,
  };
  const asked: unknown[] = [];
  const sessions = {
    query: async (q: { addr?: string }) => (asked.push(q.addr), !q.addr || q.addr === rec.outerAddr || q.addr === rec.innerAddr ? [rec] : []),
    count: async () => ({ redis: 1, grace: 0, kernel: 1 }),
    metrics: () => ({}),
    healthViews: async () => null,
  };
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, apply: () => r.reconcile(), sessions });
  const sock = join(dir, 'ob6.sock');
  await app.listen({ path: sock });
  t.teardown(() => app.close());
  const out = await run({ api: `unix:${sock}` }, ['sessions', '--addr', '2001:DB8:C:0::11']);
  t.match(out.text, /^\[2001:db8:c::11\]:40000\s+\[2001:db8:20::12\]:7007\s+tcp\s+fw2\s+ob/m, 'each end as [addr]:port');
  t.same(asked, ['2001:db8:c::11'], 'the node looked the address up in its canonical form');
  await t.rejects(run({ api: `unix:${sock}` }, ['sessions', '--addr', '2001:db8::g']), { code: 'FWLB_BAD_REQUEST', exit: 1 }, 'a malformed address is refused');
});

t.test('VIPs from a JSON or YAML file: create, show, edit, delete; `fwlbctl slb` finds the SLB from $FWLB_SLB_API', async (t) => {
  const { s, sock } = await slbOnSocket(t, 'slb-vips.sock');
  const env = { FWLB_SLB_API: `unix:${sock}`, FWLB_TOKEN: TOKEN, FWLB_API: 'http://127.0.0.1:1' };
  const yamlFile = join(dir, 'dns.yaml');
  writeFileSync(
    yamlFile,
    ['id: dns', 'address: 2001:db8:5::53', 'port: 53', 'protocol: udp', 'members:', '  - { address: "2001:db8:20::11", port: 53 }', ''].join('\n'),
  );
  const made = await ctl(['slb', 'vip', 'create', yamlFile], env);
  t.equal(made.status, 0, made.stderr);
  t.match(made.stdout, /^dns: \[2001:db8:5::53\]:53\/udp, 1 members \(created\)/);
  t.ok(
    s.vips().some((v) => v.id === 'dns'),
    'in the SLB',
  );
  const jsonFile = join(dir, 'dns.json');
  writeFileSync(
    jsonFile,
    JSON.stringify({
      id: 'dns',
      address: '2001:db8:5::53',
      port: 53,
      protocol: 'udp',
      members: [
        { address: '2001:db8:20::11', port: 53 },
        { address: '2001:db8:20::12', port: 53, weight: 2 },
      ],
    }),
  );
  const edited = await ctl(['slb', 'vip', 'edit', 'dns', jsonFile], env);
  t.equal(edited.status, 0, edited.stderr);
  t.match(edited.stdout, /\(replaced\)\n.*\n\[2001:db8:20::11\]:53\s+1\s+enabled[\s\S]*\[2001:db8:20::12\]:53\s+2\s+enabled/);
  const shown = await ctl(['slb', '--json', 'vip', 'show', 'dns'], env);
  t.same(
    JSON.parse(shown.stdout).members.map((m: any) => m.weight),
    [1, 2],
  );
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'id: web\naddress: 203.0.113.100\nport: 80\nprotocol: tcp\nmembers: []\n');
  const refused = await ctl(['slb', 'vip', 'create', bad], env);
  t.same([refused.status, /FWLB_.*exists/i.test(refused.stderr)], [1, true], `refused by the SLB (WARNING), its reason printed: ${refused.stderr}`);
  t.equal((await ctl(['slb', 'vip', 'create', join(dir, 'none.yaml')], env)).status, 3, 'a missing file: UNKNOWN');
  writeFileSync(bad, '{ not json');
  t.match((await ctl(['slb', 'vip', 'create', bad], env)).stderr, /neither JSON nor YAML/);
  const gone = await ctl(['slb', 'vip', 'delete', 'dns'], env);
  t.same([gone.status, gone.stdout.trim()], [0, 'dns deleted']);
  t.notOk(s.vips().some((v) => v.id === 'dns'));
  t.equal((await ctl(['vips'], env)).status, 2, 'without `slb`, the balancer API ($FWLB_API) is asked: here nobody answers, CRITICAL');
});

t.test('bash completion: commands, subcommands, and files for vip create', async (t) => {
  const script = (await ctl(['completion', 'bash'])).stdout;
  t.match(script, /complete -F _fwlbctl fwlbctl/);
  const complete = (words: string[]) => {
    const r = spawnSync(
      'bash',
      ['-c', `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _fwlbctl; echo "\${COMPREPLY[*]}"`],
      { encoding: 'utf8', cwd: dir },
    );
    return r.stdout.trim();
  };
  t.equal(complete(['fwlbctl', 'vi']), 'vips vip');
  t.equal(complete(['fwlbctl', 'slb', 'vip', 'c']), 'create');
  t.equal(complete(['fwlbctl', '--api', 'unix:/x', 'member', 'd']), 'drain');
  t.equal(complete(['fwlbctl', 'vip', 'create', 'dns.y']), 'dns.yaml', 'a file name');
});

t.test("https with --ca: the node's certificate is checked against the CA file", async (t) => {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  const gen = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { encoding: 'utf8' },
  );
  t.equal(gen.status, 0, gen.stderr);
  const server = https.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) =>
    res.setHeader('content-type', 'application/json').end(JSON.stringify({ status: 'ok', role: 'outside' })),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const api = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  const good = await ctl(['--api', api, '--ca', cert, 'health']);
  t.same([good.status, good.stdout.trim()], [0, 'outside: ok'], good.stderr);
  const unknownCa = await ctl(['--api', api, 'health']);
  t.equal(unknownCa.status, 2, 'without the CA the certificate is not trusted: no answer, CRITICAL');
  t.match(unknownCa.stderr, /self.signed|certificate/i);
});
