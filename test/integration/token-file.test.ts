// Integration: a node whose token file is missing exits 2 before it touches the kernel (the namespace's nft ruleset
// and ip rules compared before and after), and so does an SLB.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
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
