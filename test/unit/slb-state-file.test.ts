// Unit (file system in a temp directory): the SLB state file is written safely and a bad one is a clear error.
import { t } from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@fwlb/config';
import { loadSlbConfigWithState, saver } from '@fwlb/slb';

const dir = mkdtempSync(join(tmpdir(), 'fwlb-state-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const vip = { id: 'web', address: '203.0.113.100', port: 80, protocol: 'tcp' as const, members: [{ address: '10.20.0.11', port: 8080 }] };

t.test('write + rename leaves no temp file and does not follow a planted symlink', async (t) => {
  const path = join(dir, 'state.json');
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'keep me');
  // The old fixed name `<path>.tmp` pointed here would have overwritten the victim.
  symlinkSync(victim, `${path}.tmp`);
  await saver(path)([vip]);
  t.same(JSON.parse(readFileSync(path, 'utf8')), [vip]);
  t.equal(readFileSync(victim, 'utf8'), 'keep me', 'the symlink target is untouched');
  t.same(
    readdirSync(dir).filter((f) => f.endsWith('.tmp') && f !== 'state.json.tmp'),
    [],
    'no temp file left behind',
  );
});

t.test('an empty, truncated or invalid state file is a ConfigError naming the file', async (t) => {
  for (const [name, text, re] of [
    ['empty', '', /state file is not valid JSON/],
    ['truncated', '[{"id": "web", "addr', /state file is not valid JSON/],
    ['invalid', JSON.stringify([{ ...vip, port: 0 }]), /\/vips\/0\/port/],
  ] as const) {
    const path = join(dir, `${name}.json`);
    writeFileSync(path, text);
    const cfg = join(dir, `${name}-slb.json`);
    writeFileSync(cfg, JSON.stringify({ interface: 'up0', vips: [vip], stateFile: path }));
    const e = t.throws(() => loadSlbConfigWithState(cfg)) as unknown as ConfigError;
    t.type(e, ConfigError, name);
    t.match(e.message, new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is invalid`), `${name}: names the file`);
    t.match(e.message, re, name);
  }
  t.notOk(existsSync(join(dir, 'missing.json')));
  const cfg = join(dir, 'missing-slb.json');
  writeFileSync(cfg, JSON.stringify({ interface: 'up0', vips: [vip], stateFile: join(dir, 'missing.json') }));
  t.equal(loadSlbConfigWithState(cfg).vips.length, 1, 'no state file yet: the config file’s VIPs');
});
