// Integration: the production package. Built by scripts/package.js, its contents listed (no lab, test, benchmark,
// .git, TypeScript source or dev dependency), unpacked into a scratch root whose commands run (--version, the Node.js
// check, check-config on the example configs, doctor in a namespace), and installed, upgraded, removed and purged
// with dpkg into another scratch root (what each keeps, and that none of it touches the kernel).
import { t } from 'tap';
import { spawnSync, SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteNs, inNs, REPO, run, uniquePrefix } from '@fwlb/lab';

const dir = mkdtempSync(join(tmpdir(), 'fwlb-package-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const version = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version as string;
const sh = (cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> =>
  spawnSync(cmd, args, { encoding: 'utf8', timeout: 120000, env: { ...process.env, ...env } });

const built = sh(process.execPath, [join(REPO, 'scripts/package.js'), '--out', dir]);
const deb = join(REPO, built.stdout.trim().split('\n').pop() ?? '');

t.test('the package builds and holds what runs, nothing of the lab', async (t) => {
  t.equal(built.status, 0, built.stderr);
  t.ok(existsSync(deb), deb);
  const listing = spawnSync('sh', ['-c', 'dpkg-deb --fsys-tarfile "$1" | tar -t', 'sh', deb], { encoding: 'utf8', maxBuffer: 64 << 20 });
  t.equal(listing.status, 0);
  const paths = listing.stdout
    .split('\n')
    .filter(Boolean)
    .map((p) => p.replace(/^\.\//, ''));
  for (const want of [
    'usr/bin/fwlb',
    'usr/bin/fwlb-slb',
    'usr/bin/fwlbctl',
    'usr/bin/fwlb-conntrack',
    'usr/lib/fwlb/launch.js',
    'usr/lib/fwlb/node-flags',
    'usr/lib/fwlb/apps/balancer/dist/main.js',
    'usr/lib/fwlb/libs/health/helper/fwlb-probe.py',
    'usr/lib/systemd/system/fwlb.service',
    'usr/lib/systemd/system/fwlb-slb.service',
    'usr/lib/systemd/system/fwlb-unfit.service',
    'usr/share/fwlb/keepalived/fwlb-node.conf',
    'usr/share/fwlb/systemd/fwlb.service.d/bgp.conf',
    'usr/share/doc/fwlb/examples/outside.json',
    'usr/share/doc/fwlb/examples/slb.json',
  ])
    t.ok(paths.includes(want), `holds ${want}`);
  const ours = paths.filter((p) => !p.includes('/node_modules/'));
  t.same(
    ours.filter((p) => /(^|\/)(test|bench|\.git|lab)(\/|$)|\.ts$|\.tsbuildinfo$|\.map$/.test(p)),
    [],
    'no test, bench, .git, lab, TypeScript source, declaration or source map of ours',
  );
  // Every package the lockfile marks dev-only (tap, typescript, eslint, prettier, playwright-core, ...) is absent.
  const lock = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  const dev = Object.entries(lock.packages)
    .filter(([p, v]) => v.dev && p.startsWith('node_modules/'))
    .map(([p]) => p);
  t.ok(dev.length > 50, `the lockfile lists dev dependencies (${dev.length})`);
  const inside = dev.filter((p) => paths.some((x) => x.startsWith(`usr/lib/fwlb/${p}/`)));
  t.same(inside, [], 'no dev dependency inside');
  t.notOk(
    paths.some((p) => p.startsWith('usr/lib/fwlb/node_modules/@fwlb/lab')),
    'the lab workspace is not linked',
  );
  t.ok(
    paths.some((p) => p.startsWith('usr/lib/fwlb/node_modules/fastify/')),
    'production dependencies are inside',
  );
  const control = sh('dpkg-deb', ['--field', deb]).stdout;
  t.match(control, new RegExp(`^Version: ${version.replace(/\./g, '\\.')}$`, 'm'));
  t.match(control, /^Depends: nodejs \(>= 20\), nftables, conntrack, python3, iproute2$/m, 'what fwlb needs at run time, and only that');
  t.match(control, /^Recommends: haproxy, redis-server$/m);
});

t.test('unpacked into a scratch root: every command runs from it', async (t) => {
  const root = join(dir, 'root');
  mkdirSync(root);
  run(['dpkg-deb', '-x', deb, root]);
  for (const c of ['fwlb', 'fwlb-slb', 'fwlbctl', 'fwlb-conntrack']) {
    const r = sh(join(root, 'usr/bin', c), ['--version']);
    t.equal(r.status, 0, `${c} --version: ${r.stderr}`);
    t.equal(r.stdout.trim(), `${c} ${version}`);
  }
  // An old Node.js: refused by the launcher before fwlb's code loads, exit 3 (the units do not restart on it).
  const old = join(dir, 'node18');
  writeFileSync(
    join(dir, 'old.js'),
    "Object.defineProperty(process.versions, 'node', { value: '18.19.0' });\nObject.defineProperty(process, 'version', { value: 'v18.19.0' });\n",
  );
  writeFileSync(old, `#!/bin/sh\nexec ${process.execPath} -r ${join(dir, 'old.js')} "$@"\n`, { mode: 0o755 });
  const refused = sh(join(root, 'usr/bin/fwlb'), ['--version'], { FWLB_NODE: old });
  t.equal(refused.status, 3);
  t.match(refused.stderr, /^fwlb: needs Node\.js >=20, but \S+ is v18\.19\.0\./);
  t.equal(refused.stdout, '', 'nothing of fwlb ran');

  // The example configs pass check-config once their token file exists (made by the packaged command).
  const examples = join(root, 'usr/share/doc/fwlb/examples');
  const token = join(dir, 'token');
  const configs = join(dir, 'configs');
  mkdirSync(configs);
  const withToken = (file: string, tokenFile: string) => {
    const c = JSON.parse(readFileSync(join(examples, file), 'utf8'));
    c.api.tokenFile = tokenFile;
    const out = join(configs, file);
    writeFileSync(out, JSON.stringify(c));
    return out;
  };
  const missing = sh(join(root, 'usr/bin/fwlb'), ['check-config', withToken('outside.json', token)]);
  t.equal(missing.status, 2, 'no token file yet: a config error');
  t.match(missing.stderr, `/api/tokenFile: cannot read the token file ${token} (ENOENT); create it with \`fwlb token create ${token}\``);
  const created = sh(join(root, 'usr/bin/fwlb'), ['token', 'create', token]);
  t.equal(created.status, 0, created.stderr);
  for (const [cmd, file] of [
    ['fwlb', 'outside.json'],
    ['fwlb', 'inside.json'],
    ['fwlb-slb', 'slb.json'],
  ]) {
    const r = sh(join(root, 'usr/bin', cmd), ['check-config', withToken(file, token)]);
    t.equal(r.status, 0, `${cmd} check-config ${file}: ${r.stderr}`);
  }

  // doctor, in a namespace of its own: its checks run from the package (the probe helper is the packaged one).
  const ns = `${uniquePrefix('pk')}-n`;
  t.teardown(() => deleteNs(ns));
  run(['ip', 'netns', 'add', ns]);
  const doc = sh('ip', ['netns', 'exec', ns, join(root, 'usr/bin/fwlb'), 'doctor']);
  t.match(doc.stdout, /^ok\s+nft binary: nftables/m);
  t.match(doc.stdout, /^MISSING ip_forward/m, 'a fresh namespace does not forward: said, with the sysctl');
  t.equal(doc.status, 1, 'exit 1: something required is missing');
  const slbDoc = sh('ip', ['netns', 'exec', ns, join(root, 'usr/bin/fwlb-slb'), 'doctor']);
  const helper = join(root, 'usr/lib/fwlb/libs/health/helper/fwlb-probe.py');
  t.ok(
    slbDoc.stdout.split('\n').some((l) => /^ok\s+probe helper \(python3\): /.test(l) && l.endsWith(` runs ${helper}`)),
    'the packaged probe helper runs',
  );
});

t.test("dpkg install, upgrade, remove, purge: the operator's files stay, the kernel is untouched", async (t) => {
  const root = join(dir, 'dpkg-root');
  mkdirSync(join(root, 'var/lib/dpkg/info'), { recursive: true });
  mkdirSync(join(root, 'var/lib/dpkg/updates'));
  writeFileSync(join(root, 'var/lib/dpkg/status'), '');
  const ns = `${uniquePrefix('pd')}-n`;
  t.teardown(() => deleteNs(ns));
  run(['ip', 'netns', 'add', ns]);
  // A node's kernel state (what a running fwlb leaves): a table and a rule, which no maintainer script may touch.
  inNs(ns, ['nft', 'add', 'table', 'inet', 'fwlb']);
  inNs(ns, ['ip', 'rule', 'add', 'fwmark', '0x10000', 'table', '1000', 'priority', '10000']);
  const kernel = () => [inNs(ns, ['nft', 'list', 'ruleset']), inNs(ns, ['ip', 'rule', 'show'])].join('\n');
  const before = kernel();
  const dpkg = (...args: string[]) => sh('ip', ['netns', 'exec', ns, 'dpkg', `--root=${root}`, '--force-script-chrootless', '--force-depends', ...args]);

  const installed = dpkg('-i', deb);
  t.equal(installed.status, 0, installed.stderr);
  t.match(installed.stdout, /fwlb: installed\. Put a node's config in \/etc\/fwlb\/node\.json/);
  for (const d of ['etc/fwlb', 'var/lib/fwlb', 'var/log/fwlb']) t.ok(existsSync(join(root, d)), `${d} created`);
  writeFileSync(join(root, 'etc/fwlb/node.json'), '{"operator":"edited"}\n');
  writeFileSync(join(root, 'var/lib/fwlb/outside-state.json'), '{"admin":{"fw2":false}}\n');

  const upgraded = dpkg('-i', deb);
  t.equal(upgraded.status, 0, upgraded.stderr);
  t.match(upgraded.stdout, new RegExp(`upgraded from ${version.replace(/\./g, '\\.')}; running nodes keep their kernel state`));
  t.equal(readFileSync(join(root, 'etc/fwlb/node.json'), 'utf8'), '{"operator":"edited"}\n', 'an upgrade keeps /etc/fwlb');
  t.equal(readFileSync(join(root, 'var/lib/fwlb/outside-state.json'), 'utf8'), '{"admin":{"fw2":false}}\n', 'and /var/lib/fwlb');
  t.equal(kernel(), before, 'an upgrade changes nothing in the kernel');

  const removed = dpkg('-r', 'fwlb');
  t.equal(removed.status, 0, removed.stderr);
  t.match(removed.stdout, /The kernel keeps what fwlb programmed, and keeps forwarding with it/, 'removal says what stays in the kernel');
  t.notOk(existsSync(join(root, 'usr/bin/fwlb')), 'the commands are gone');
  t.ok(existsSync(join(root, 'etc/fwlb/node.json')) && existsSync(join(root, 'var/lib/fwlb/outside-state.json')), 'configs and state kept');
  t.equal(kernel(), before, 'removal leaves the kernel as it is');

  const purged = dpkg('-P', 'fwlb');
  t.equal(purged.status, 0, purged.stderr);
  t.notOk(existsSync(join(root, 'var/lib/fwlb')), 'purge removes the state');
  t.same(readdirSync(join(root, 'etc/fwlb')), ['node.json'], "purge leaves the operator's configs");
  t.equal(kernel(), before);
});
