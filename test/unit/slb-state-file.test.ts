// Unit (file system in a temp directory): the SLB state file is written safely and a bad one is a clear error.
import { t } from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@fwlb/config';
import { exportConfig, fileDigests, loadSlbConfigWithState, mergeVips, parseState, saver, vipDigest, vipSources } from '@fwlb/slb';

const dir = mkdtempSync(join(tmpdir(), 'fwlb-state-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const vip = { id: 'web', address: '203.0.113.100', port: 80, protocol: 'tcp' as const, members: [{ address: '10.20.0.11', port: 8080 }] };

t.test('write + rename leaves no temp file and does not follow a planted symlink', async (t) => {
  const path = join(dir, 'state.json');
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'keep me');
  // The old fixed name `<path>.tmp` pointed here would have overwritten the victim.
  symlinkSync(victim, `${path}.tmp`);
  await saver(path, [vip])([vip]);
  t.same(JSON.parse(readFileSync(path, 'utf8')), { file: { web: vipDigest(vip) }, vips: [vip] });
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

// The lifecycle's rule: a VIP runs as the last of the config file and the API to change it.
const web = vip;
const web2 = { ...vip, members: [{ address: '10.20.0.12', port: 8080 }] };
const api1 = { ...vip, id: 'api1', port: 8081 };
const ids = (vs: readonly { id: string }[]) => vs.map((v) => v.id);

t.test('mergeVips: the API’s changes stand while the file’s version is the one they were made against', async (t) => {
  const file = fileDigests([web]);
  // Added through the API: runs; the file never had it.
  let m = mergeVips([web], { vips: [web, api1], file: { ...file, api1: null } });
  t.same(ids(m.vips), ['web', 'api1']);
  t.match(m.origins, [{ id: 'api1', from: 'api', why: /added through the API/ }]);
  // Changed through the API, file unchanged: the API's version.
  m = mergeVips([web], { vips: [web2], file });
  t.same(m.vips, [web2]);
  t.match(m.origins, [{ id: 'web', from: 'api', why: /changed through the API/ }]);
  // Deleted through the API, file unchanged: it does not run.
  m = mergeVips([web], { vips: [], file });
  t.same(m.vips, []);
  t.match(m.origins, [{ id: 'web', from: 'api', why: /deleted through the API/ }]);
  // The file edited web since: the file's version runs, whatever the API had done to it.
  const edited = { ...web, port: 81 };
  for (const apiVips of [[web2], [], [web]]) {
    m = mergeVips([edited], { vips: apiVips, file });
    t.same(m.vips, [edited], `file edited; the API had ${JSON.stringify(ids(apiVips))}`);
  }
  t.match(mergeVips([edited], { vips: [web2], file }).origins, [{ id: 'web', from: 'file', why: /the config file changed it since/ }]);
  // The file removed a VIP the API had changed: gone. The file added one: runs.
  t.same(mergeVips([], { vips: [web2], file }).vips, []);
  t.same(ids(mergeVips([web, api1], { vips: [web], file }).vips), ['web', 'api1'], 'a VIP new in the file runs');
  // Nothing differs: no origin to report.
  t.same(mergeVips([web], { vips: [web], file }).origins, []);
  // Key order and formatting do not count as an edit.
  t.equal(vipDigest(JSON.parse(JSON.stringify({ protocol: 'tcp', port: 80, members: web.members, address: web.address, id: 'web' }))), vipDigest(web));
});

t.test('parseState: the current document, the older bare list (the API keeps winning), or a refusal', async (t) => {
  t.same(parseState([web2], [web]), { vips: [web2], file: fileDigests([web]) });
  t.same(mergeVips([web], parseState([web2], [web])!).vips, [web2], 'an older state file: its VIPs run, as before');
  t.equal(parseState({ vips: [] }, [web]), null);
  t.equal(parseState({ vips: [], file: { web: 3 } }, [web]), null);
  t.equal(parseState('x', [web]), null);
});

t.test('load, save, edit, export: both directions through the files', async (t) => {
  const state = join(dir, 'life-state.json');
  const cfg = join(dir, 'life-slb.json');
  const doc = { interface: 'up0', vips: [web], stateFile: state };
  writeFileSync(cfg, JSON.stringify(doc));
  // The API adds api1 and changes web; what it saves is what a restart loads.
  await saver(state, [web])([web2, api1]);
  let c = loadSlbConfigWithState(cfg);
  t.same(ids(c.vips), ['web', 'api1']);
  t.equal(c.vips[0].members[0].address, '10.20.0.12', 'web as the API left it');
  t.same(
    vipSources(c).origins.map((o) => [o.id, o.from]),
    [
      ['web', 'api'],
      ['api1', 'api'],
    ],
  );
  t.same(JSON.parse(exportConfig(c)), { ...doc, vips: [web2, api1] }, 'export: the config file with the running VIPs');
  // The operator edits web in the file: it runs from the next start; api1 stays.
  writeFileSync(cfg, JSON.stringify({ ...doc, vips: [{ ...web, port: 81 }] }));
  c = loadSlbConfigWithState(cfg);
  t.same(
    c.vips.map((v) => [v.id, v.port]),
    [
      ['web', 81],
      ['api1', 8081],
    ],
  );
  const bad = join(dir, 'bad-state.json');
  writeFileSync(bad, '{"vips": []}');
  writeFileSync(cfg, JSON.stringify({ ...doc, stateFile: bad }));
  t.throws(() => loadSlbConfigWithState(cfg), /bad-state\.json is invalid: \/: is not an SLB state file/);
});
