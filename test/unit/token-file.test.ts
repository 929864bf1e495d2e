// Unit: a token file that cannot be read or holds no usable token is a config error, found by check-config (exit 2)
// before a node would touch the kernel.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tokenFileProblem } from '@fwlb/service';
import { REPO } from '@fwlb/lab';

const dir = mkdtempSync(join(tmpdir(), 'fwlb-token-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('tokenFileProblem', async (t) => {
  t.equal(tokenFileProblem(undefined), null, 'no token file: nothing to check');
  t.match(tokenFileProblem(join(dir, 'nope')), { field: '/api/tokenFile', message: /cannot read the token file .*nope \(ENOENT\); create it/ });
  writeFileSync(join(dir, 'empty'), '\n');
  t.match(tokenFileProblem(join(dir, 'empty')), { message: /is empty/ });
  writeFileSync(join(dir, 'short'), 'abc\n');
  t.match(tokenFileProblem(join(dir, 'short')), { message: /3 characters, shorter than 16/ });
  writeFileSync(join(dir, 'good'), '0123456789abcdef0123\n');
  t.equal(tokenFileProblem(join(dir, 'good')), null);
});

t.test('fwlb check-config and fwlb-slb check-config: exit 2 naming /api/tokenFile', async (t) => {
  const node = {
    role: 'outside',
    sideInterface: 'sd0',
    firewalls: [{ id: 'fw1', nextHop: '172.16.1.2', interface: 'fw1' }],
    hash: { seed: 1 },
    api: { tokenFile: join(dir, 'missing-token') },
  };
  const slb = { name: 'slb', interface: 'up0', seed: 1, api: { tokenFile: join(dir, 'missing-token') }, vips: [] };
  for (const [main, cfg] of [
    ['apps/balancer/dist/main.js', node],
    ['apps/slb/dist/main.js', slb],
  ] as const) {
    const file = join(dir, `${main.split('/')[1]}.json`);
    writeFileSync(file, JSON.stringify(cfg));
    const r = spawnSync(process.execPath, [join(REPO, main), 'check-config', file], { encoding: 'utf8' });
    t.equal(r.status, 2, `${main}: exit 2 (${r.stderr.trim()})`);
    t.match(r.stderr, /\/api\/tokenFile: cannot read the token file/);
    writeFileSync(join(dir, 'missing-token'), 'a-token-of-enough-length\n');
    const ok = spawnSync(process.execPath, [join(REPO, main), 'check-config', file], { encoding: 'utf8' });
    t.equal(ok.status, 0, `with the file: ${ok.stderr}`);
    if (main.includes('balancer')) {
      rmSync(join(dir, 'missing-token'));
      const doctor = spawnSync(process.execPath, [join(REPO, main), 'doctor', '--config', file], { encoding: 'utf8' });
      t.match(doctor.stdout, /MISSING API token file: cannot read the token file/, 'doctor lists it with the other checks');
      writeFileSync(join(dir, 'missing-token'), 'a-token-of-enough-length\n');
    }
    rmSync(join(dir, 'missing-token'));
  }
});

t.test('token create: a new 0600 file with a random token the check accepts; an existing one kept unless --force', async (t) => {
  const file = join(dir, 'created-token');
  const main = join(REPO, 'apps/balancer/dist/main.js');
  const r = spawnSync(process.execPath, [main, 'token', 'create', file], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /wrote a new API token to .*created-token \(mode 0600\)/);
  t.equal(statSync(file).mode & 0o777, 0o600);
  const first = readFileSync(file, 'utf8');
  t.match(first, /^[A-Za-z0-9_-]{43}\n$/, '32 random bytes, base64url');
  t.equal(tokenFileProblem(file), null);
  const again = spawnSync(process.execPath, [main, 'token', 'create', file], { encoding: 'utf8' });
  t.equal(again.status, 2, 'an existing token file is kept (exit 2)');
  t.match(again.stderr, /exists: keep it, or give --force/);
  t.equal(readFileSync(file, 'utf8'), first);
  const forced = spawnSync(process.execPath, [main, 'token', 'create', file, '--force'], { encoding: 'utf8' });
  t.equal(forced.status, 0);
  t.not(readFileSync(file, 'utf8'), first, 'a new token');
});

t.test('--version: every command says its version', async (t) => {
  for (const [main, prog] of [
    ['apps/balancer/dist/main.js', 'fwlb'],
    ['apps/slb/dist/main.js', 'fwlb-slb'],
    ['apps/fwlbctl/dist/main.js', 'fwlbctl'],
    ['libs/conntrack/dist/cli.js', 'fwlb-conntrack'],
  ]) {
    const r = spawnSync(process.execPath, [join(REPO, main), '--version'], { encoding: 'utf8' });
    t.equal(r.status, 0, `${prog}: ${r.stderr}`);
    t.match(r.stdout.trim(), new RegExp(`^${prog} \\d+\\.\\d+\\.\\d+$`));
  }
});
