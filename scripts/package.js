#!/usr/bin/env node
// `npm run package`: the production Debian package, build/fwlb_<version>_<arch>.deb, from a built checkout.
// It holds the built JavaScript, the production dependencies (npm ci --omit=dev, from the lockfile), the commands on
// PATH, the units, the keepalived template, the docs and the example configs; never the lab, the tests, the
// benchmarks or a dev dependency. Architecture-specific: netlink's native addon is kept for this machine only.
// `--out DIR` writes the package elsewhere; `--stage-only` leaves the tree in build/package/root without a .deb.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const { join, relative } = require('node:path');

const REPO = join(__dirname, '..');
const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const outDir = arg('--out') ?? join(REPO, 'build');
const work = join(REPO, 'build', 'package');
const root = join(work, 'root');
const lib = join(root, 'usr/lib/fwlb');

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
  return r.stdout.trim();
}
const copy = (from, to, mode) => {
  fs.mkdirSync(join(to, '..'), { recursive: true });
  fs.cpSync(from, to, { recursive: true, dereference: true });
  if (mode !== undefined) fs.chmodSync(to, mode);
};
const workspaces = () =>
  ['libs', 'apps'].flatMap((d) => fs.readdirSync(join(REPO, d)).map((n) => `${d}/${n}`)).filter((w) => fs.existsSync(join(REPO, w, 'package.json')));

const pkg = JSON.parse(fs.readFileSync(join(REPO, 'package.json'), 'utf8'));
const debArch = sh('dpkg', ['--print-architecture']);
const nodeArch = { amd64: 'x64', arm64: 'arm64', armhf: 'arm', i386: 'ia32' }[debArch];
if (!nodeArch) throw new Error(`no Node.js architecture known for Debian's ${debArch}`);
for (const w of workspaces()) {
  if (!fs.existsSync(join(REPO, w, 'dist'))) throw new Error(`${w}/dist is missing: build first (npx tsc -b)`);
}

fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(lib, { recursive: true });

// Production dependencies from the lockfile: npm ci needs every workspace's package.json (the lab's too, or the
// lockfile would not match); the lab's link is taken out afterwards (it has no dependency of its own outside fwlb).
const npmDir = join(work, 'npm');
for (const f of ['package.json', 'package-lock.json']) copy(join(REPO, f), join(npmDir, f));
for (const w of [...workspaces(), 'deploy/lab']) copy(join(REPO, w, 'package.json'), join(npmDir, w, 'package.json'));
sh('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: npmDir });
fs.rmSync(join(npmDir, 'node_modules/@fwlb/lab'));
fs.renameSync(join(npmDir, 'node_modules'), join(lib, 'node_modules'));
const prebuilds = join(lib, 'node_modules/netlink/prebuilds');
for (const p of fs.readdirSync(prebuilds)) if (p !== `linux-${nodeArch}`) fs.rmSync(join(prebuilds, p), { recursive: true });

// The workspaces: their package.json (the @fwlb links point at them) and the built JavaScript only.
for (const w of workspaces()) {
  copy(join(REPO, w, 'package.json'), join(lib, w, 'package.json'));
  fs.cpSync(join(REPO, w, 'dist'), join(lib, w, 'dist'), {
    recursive: true,
    filter: (src) => fs.statSync(src).isDirectory() || (src.endsWith('.js') && !src.includes('.test.')),
  });
}
copy(join(REPO, 'libs/health/helper'), join(lib, 'libs/health/helper'));
const { name, version, description, license, engines } = pkg;
fs.writeFileSync(join(lib, 'package.json'), `${JSON.stringify({ name, version, description, license, engines, private: true }, null, 2)}\n`);
copy(join(REPO, 'deploy/package/launch.js'), join(lib, 'launch.js'), 0o644);
copy(join(REPO, 'deploy/package/node-flags'), join(lib, 'node-flags'), 0o644);

// The commands on PATH, the units and what an operator reads or copies.
for (const c of ['fwlb', 'fwlb-slb', 'fwlbctl', 'fwlb-conntrack']) copy(join(REPO, 'deploy/package/command.sh'), join(root, 'usr/bin', c), 0o755);
for (const u of ['fwlb.service', 'fwlb-slb.service', 'fwlb-unfit.service']) copy(join(REPO, 'deploy/systemd', u), join(root, 'usr/lib/systemd/system', u), 0o644);
copy(join(REPO, 'deploy/systemd/fwlb.service.d/bgp.conf'), join(root, 'usr/share/fwlb/systemd/fwlb.service.d/bgp.conf'), 0o644);
copy(join(REPO, 'deploy/keepalived/fwlb-node.conf'), join(root, 'usr/share/fwlb/keepalived/fwlb-node.conf'), 0o644);
const doc = join(root, 'usr/share/doc/fwlb');
copy(join(REPO, 'README.md'), join(doc, 'README.md'));
copy(join(REPO, 'docs'), join(doc, 'docs'));
copy(join(REPO, 'deploy/configs'), join(doc, 'examples'));
fs.writeFileSync(join(doc, 'copyright'), `fwlb ${version}\nLicense: ${license}\n`);

// Debian's control files: the run-time dependencies only; HAProxy (L7 VIPs) and Redis (several nodes per side) are
// recommended, BIRD (BGP) and keepalived (VRRP) suggested.
const control = join(root, 'DEBIAN');
for (const s of ['postinst', 'prerm', 'postrm']) copy(join(REPO, 'deploy/package', s), join(control, s), 0o755);
const nodeMajor = Number(/\d+/.exec(engines.node)[0]);
const installedKb = Number(sh('du', ['-sk', '--exclude=DEBIAN', root]).split(/\s+/)[0]);
fs.writeFileSync(
  join(control, 'control'),
  [
    'Package: fwlb',
    `Version: ${version}`,
    `Architecture: ${debArch}`,
    'Maintainer: fwlb developers <fwlb@example.org>',
    `Installed-Size: ${installedKb}`,
    `Depends: nodejs (>= ${nodeMajor}), nftables, conntrack, python3, iproute2`,
    'Recommends: haproxy, redis-server',
    'Suggests: bird2, keepalived',
    'Section: net',
    'Priority: optional',
    `Description: ${description}`,
    ' Balancer nodes on both sides of a set of active-active stateful firewalls send every session',
    ' through exactly one firewall in both directions; an SLB tier publishes VIPs behind them.',
    '',
  ].join('\n'),
);

if (process.argv.includes('--stage-only')) {
  console.log(root);
} else {
  fs.mkdirSync(outDir, { recursive: true });
  const deb = join(outDir, `fwlb_${version}_${debArch}.deb`);
  sh('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', root, deb]);
  fs.rmSync(work, { recursive: true, force: true });
  console.log(relative(process.cwd(), deb) || deb);
}
