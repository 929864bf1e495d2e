// Integration: a node whose token file is missing exits 2 before it touches the kernel (the namespace's nft ruleset
// and ip rules compared before and after), and so does an SLB; one whose probe helper cannot run (no python) starts
// degraded, with an alarm.
import { t } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteNs, inNs, REPO, run, uniquePrefix } from '@fwlb/lab';

t.test('a missing token file: exit 2, the kernel as it was', async (t) => {
  const ns = `${uniquePrefix('tk')}-n`;
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-token-'));
  t.teardown(() => {
    deleteNs(ns);
    rmSync(dir, { recursive: true, force: true });
  });
  run(['ip', 'netns', 'add', ns]);
  // The interfaces the config names (a veth pair: this kernel has no dummy links).
  inNs(ns, ['ip', 'link', 'add', 'sd0', 'type', 'veth', 'peer', 'name', 'fw1']);
  const kernel = () =>
    [inNs(ns, ['nft', 'list', 'ruleset']), inNs(ns, ['ip', 'rule', 'show']), inNs(ns, ['ip', 'route', 'show', 'table', 'all'])].join('\n---\n');
  const before = kernel();
  const token = join(dir, 'token');
  const node = {
    role: 'outside',
    sideInterface: 'sd0',
    firewalls: [{ id: 'fw1', nextHop: '172.16.1.2', interface: 'fw1' }],
    hash: { seed: 1 },
    api: { listen: `unix:${join(dir, 'api.sock')}`, tokenFile: token },
  };
  const slb = { name: 'slb', interface: 'sd0', seed: 1, api: { listen: `unix:${join(dir, 'slb.sock')}`, tokenFile: token }, vips: [] };
  for (const [main, cfg] of [
    ['apps/balancer/dist/main.js', node],
    ['apps/slb/dist/main.js', slb],
  ] as const) {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(cfg));
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, join(REPO, main), 'run', '--config', file], { encoding: 'utf8', timeout: 30000 });
    t.equal(r.status, 2, `${main} run: exit 2`);
    t.match(r.stderr, /\/api\/tokenFile: cannot read the token file/);
    t.equal(kernel(), before, `${main}: nft ruleset, ip rules and routes unchanged`);
  }
});

t.test('no python for the probe helper: the node starts degraded, with an alarm, and says why', async (t) => {
  const ns = `${uniquePrefix('py')}-n`;
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-nopy-'));
  const node: { proc?: ReturnType<typeof spawn> } = {};
  t.teardown(() => {
    node.proc?.kill('SIGKILL');
    deleteNs(ns);
    rmSync(dir, { recursive: true, force: true });
  });
  run(['ip', 'netns', 'add', ns]);
  inNs(ns, ['ip', 'link', 'add', 'sd0', 'type', 'veth', 'peer', 'name', 'fw1']);
  for (const l of ['lo', 'sd0', 'fw1']) inNs(ns, ['ip', 'link', 'set', l, 'up']);
  for (const k of ['net.ipv4.ip_forward', 'net.ipv4.fwmark_reflect', 'net.ipv4.tcp_fwmark_accept']) inNs(ns, ['sysctl', '-qw', `${k}=1`]);
  const sock = join(dir, 'api.sock');
  const file = join(dir, 'config.json');
  writeFileSync(
    file,
    JSON.stringify({
      role: 'outside',
      sideInterface: 'sd0',
      firewalls: [{ id: 'fw1', nextHop: '172.16.1.2', interface: 'fw1' }],
      hash: { seed: 1 },
      api: { listen: `unix:${sock}` },
      health: { target: '192.0.2.1' },
    }),
  );
  const env = { ...process.env, FWLB_PYTHON: join(dir, 'no-python3') };
  const doc = spawnSync('ip', ['netns', 'exec', ns, process.execPath, join(REPO, 'apps/balancer/dist/main.js'), 'doctor', '--config', file], {
    encoding: 'utf8',
    env,
  });
  t.match(doc.stdout, /^warn\s+probe helper \(python3\): .*the node starts degraded, health checks cannot run/m, 'doctor: a warning, not a refusal');
  const p = spawn('ip', ['netns', 'exec', ns, process.execPath, join(REPO, 'apps/balancer/dist/main.js'), 'run', '--config', file], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  node.proc = p;
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  const t0 = Date.now();
  while (!/listening on/.test(out) && Date.now() - t0 < 15000 && p.exitCode === null) await new Promise((r) => setTimeout(r, 100));
  t.match(out, /listening on/, `the node started (exit ${p.exitCode})`);
  const h = await new Promise<{ status: string; alarms: string[] }>((resolve, reject) =>
    http
      .get({ socketPath: sock, path: '/health' }, (res) => {
        let s = '';
        res.on('data', (d) => (s += d));
        res.on('end', () => resolve(JSON.parse(s)));
      })
      .on('error', reject),
  );
  t.equal(h.status, 'degraded');
  t.ok(
    h.alarms.some((a: string) => /probe helper down .*no-python3.*health checks cannot run, the last health state holds/.test(a)),
    `the alarm names the helper and its interpreter: ${JSON.stringify(h.alarms)}`,
  );
  t.match(inNs(ns, ['nft', 'list', 'table', 'inet', 'fwlb']), /table inet fwlb/, 'and it programmed the kernel');
});
