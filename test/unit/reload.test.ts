// Unit: what a reload may change (reloadProblems), how the membership takes a reloaded config (and gives it back),
// and the Reloader end to end over a fake kernel: taken, unchanged, refused by the checks, refused by the kernel.
import { t } from 'tap';
import { ConfigError, reloadProblems, validateBalancerConfig } from '@fwlb/config';
import { buildJoinedTable } from '@fwlb/flowhash';
import { build, Membership, Reconciler, Reloader, RoutingPort } from '@fwlb/balancer';
import { fakeNft } from '../helpers/fake-nft';

const fw = (k: number) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` });
const base = {
  role: 'outside',
  sideInterface: 'cli0',
  firewalls: [1, 2, 3].map(fw),
  hash: { seed: 7 },
  health: { target: '192.0.2.1' },
};
const cfg = (over: Record<string, unknown> = {}) => validateBalancerConfig({ ...base, ...over });
const fields = (a: ReturnType<typeof cfg>, b: ReturnType<typeof cfg>) => reloadProblems(a, b).map((p) => p.field);

t.test('reloadProblems: the firewall list changes only at its end; restart-only keys are named', async (t) => {
  const running = cfg();
  t.same(reloadProblems(running, cfg()), [], 'the same config');
  t.same(fields(running, cfg({ firewalls: [1, 2, 3, 4].map(fw) })), [], 'fw4 appended');
  t.same(fields(running, cfg({ firewalls: [1, 2].map(fw) })), [], 'the last one removed');
  t.same(fields(running, cfg({ firewalls: [1, 2, 5].map(fw) })), [], 'the last one replaced');
  t.same(fields(running, cfg({ firewalls: [1, 3].map(fw) })), ['/firewalls'], 'fw2 removed before fw3, which stays');
  t.match(reloadProblems(running, cfg({ firewalls: [1, 3].map(fw) }))[0].message, /fw2 is removed before firewalls that stay \(fw3\)/);
  t.same(fields(running, cfg({ firewalls: [1, 4, 2, 3].map(fw) })), ['/firewalls/1/id', '/firewalls/2/id'], 'fw4 inserted before fw2, which moves');
  t.match(reloadProblems(running, cfg({ firewalls: [1, 4, 2, 3].map(fw) }))[0].message, /fw4 is added before firewalls that stay/);
  t.same(fields(running, cfg({ firewalls: [1, 3, 2].map(fw) })), ['/firewalls/1/id', '/firewalls/2/id'], 'reordered: both named');
  t.same(fields(running, cfg({ firewalls: [{ ...fw(1), nextHop: '172.16.9.2' }, fw(2), fw(3)] })), [], "a firewall's next hop may change");
  t.same(fields(running, cfg({ health: { target: '192.0.2.1', timers: { interval: 200, response: 100, retries: 2 } } })), [], 'health timers');
  t.same(fields(running, cfg({ handshakeTimeoutSeconds: 5, resyncSeconds: 3, conntrackAlarmRatio: 0.5 })), []);
  t.same(fields(running, cfg({ hash: { seed: 8 } })), ['/hash']);
  t.match(reloadProblems(running, cfg({ hash: { seed: 8 } }))[0].message, /takes a restart, not a reload/);
  t.same(fields(running, cfg({ sideInterface: 'cli1', api: { listen: '127.0.0.1:9' }, name: 'x' })).sort(), ['/api', '/name', '/sideInterface']);
  t.same(fields(running, cfg({ health: undefined })), ['/health'], 'removing the health section');
});

t.test('Membership.reconfigure: kept state stays, an added firewall is down until its checks, a removed one goes; undo', async (t) => {
  const m = new Membership(cfg(), false);
  m.setAdmin('fw2', false);
  m.setHealth('fw3', false, 'timeout');
  const before = JSON.stringify(m.views());
  const r = m.reconfigure(cfg({ firewalls: [1, 2, 3, 4].map(fw) }));
  t.same([r.added, r.removed], [['fw4'], []]);
  const v = Object.fromEntries(m.views().map((x) => [x.id, x]));
  t.equal(v.fw2.enabled, false, 'fw2 stays disabled (the API set it)');
  t.equal(v.fw3.healthy, false, 'fw3 stays down');
  t.equal(v.fw4.healthy, false, 'fw4 is down until its checks pass');
  t.match(v.fw4.health, { reason: /waiting for its first checks/ });
  t.equal(v.fw4.mark, 0x10003, 'fw4 takes the next mark; the others keep theirs');
  t.same(m.snapshot().live, ['fw1'], 'fw4 takes no new session yet');
  t.same(m.ownView(), { fw1: true, fw2: true, fw3: false, fw4: false }, 'and the other nodes are told it is down here');
  // fw4 waiting does not count towards panic: 1 of 3 counted up (fw1, fw2 up by health; fw3 down) is not < 50%.
  t.equal(m.snapshot().panic, null);
  r.undo();
  t.equal(JSON.stringify(m.views()), before, 'undo: as before');
  t.notOk(m.has('fw4'));

  const m2 = new Membership(cfg({ firewalls: [1, 2, 3, 4].map(fw) }), false);
  m2.setAdmin('fw4', false);
  const r2 = m2.reconfigure(cfg());
  t.same([r2.added, r2.removed], [[], ['fw4']]);
  t.notOk(m2.has('fw4'), 'fw4 is forgotten');
  t.same(Object.keys(m2.adminState()), ['fw1', 'fw2', 'fw3'], 'and leaves the state file');
  const r3 = m2.reconfigure(cfg({ firewalls: [fw(1), { ...fw(2), enabled: false }, fw(3)] }));
  t.equal(m2.isEnabled('fw2'), false, 'a firewall the file disables is disabled');
  r3.undo();
  t.equal(m2.isEnabled('fw2'), true);
});

const fakeRouting: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };

function setup(first: ReturnType<typeof cfg>) {
  const nft = fakeNft();
  const membership = new Membership(first, false);
  const r = new Reconciler(first, nft, fakeRouting, Date.now, membership);
  let file: unknown = first;
  const logs: string[] = [];
  const reloader = new Reloader({
    membership,
    reconciler: r,
    health: () => null,
    sessions: null,
    load: () => validateBalancerConfig(file),
    log: (m) => void logs.push(m),
  });
  return { nft, r, membership, reloader, logs, setFile: (f: unknown) => (file = f) };
}

t.test('Reloader: fw4 appended moves no bucket until it is live, then only the ones it takes', async (t) => {
  const { r, membership, reloader, setFile, nft } = setup(cfg());
  await r.reconcile();
  const before = r.currentTable()!;
  t.same(before.owner, buildJoinedTable(['fw1', 'fw2', 'fw3'], 251).owner);
  setFile({ ...base, firewalls: [1, 2, 3, 4].map(fw) });
  const res = await reloader.reload('test');
  t.match(res, { changed: true, added: ['fw4'], removed: [] });
  t.ok(res.nftCommands > 0, `the kernel learned fw4 (${res.nftCommands} nft commands)`);
  t.same(r.currentTable()!.owner, before.owner, 'no bucket moved');
  t.ok(
    nft.rules.get('prerouting')!.some((rule) => JSON.stringify(rule).includes(String(0x10003))),
    "fw4's mark is in the rules",
  );
  membership.setHealth('fw4', true, 'checks passed');
  await r.reconcile();
  const after = r.currentTable()!;
  t.ok(
    before.owner.every((o, b) => after.owner[b] === o || after.owner[b] === 'fw4'),
    'only buckets that go to fw4 move',
  );
  t.equal(after.owner.filter((o) => o === 'fw4').length, 62, 'fw4 takes floor(251/4)');
  t.same((await reloader.reload('again')).changed, false, 'the same file again: unchanged');
});

t.test('Reloader: refused as a whole (naming the field) by the checks and by the kernel; the node keeps its config', async (t) => {
  const { r, reloader, setFile, nft, logs } = setup(cfg());
  await r.reconcile();
  const kernel = JSON.stringify([...nft.rules]);
  setFile({ ...base, hash: { seed: 9 } });
  await t.rejects(reloader.reload('test'), ConfigError);
  setFile({ ...base, firewalls: [1, 2].map(fw) });
  const e = await reloader.reload('test').catch((x) => x);
  t.match(e.message, /fw3 is removed while it is enabled: disable it first/);
  setFile({ ...base, firewalls: [{ ...fw(1), nextHop: 'not-an-address' }] });
  const bad = await reloader.reload('test').catch((x) => x);
  t.ok(bad instanceof ConfigError && bad.problems.some((p) => p.field.startsWith('/firewalls/0/nextHop')), bad.message);
  t.equal(JSON.stringify([...nft.rules]), kernel, 'the kernel as it was');
  t.same(
    r.config.firewalls.map((f) => f.id),
    ['fw1', 'fw2', 'fw3'],
  );
  // The kernel refuses the transaction: everything goes back, and the refusal says so.
  setFile({ ...base, firewalls: [1, 2, 3, 4].map(fw) });
  nft.failNext();
  const k = await reloader.reload('test').catch((x) => x);
  t.match(k.message, /the kernel refused it/);
  t.same(
    r.config.firewalls.map((f) => f.id),
    ['fw1', 'fw2', 'fw3'],
    'the running config stays',
  );
  t.notOk(r.membership.has('fw4'));
  t.equal(JSON.stringify([...nft.rules]), kernel, 'the kernel as it was');
  t.equal(reloader.refused, 4);
  t.ok(logs.every((l) => /refused/.test(l)));
});

t.test('POST /reload: the bearer token, the result, a refusal with its fields', async (t) => {
  const { r, reloader, setFile } = setup(cfg());
  await r.reconcile();
  const TOKEN = 'test-token-0123456789abcdef';
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, reload: () => reloader.reload('API') });
  const auth = { authorization: `Bearer ${TOKEN}` };
  t.equal((await app.inject({ method: 'POST', url: '/reload' })).statusCode, 401);
  setFile({ ...base, firewalls: [1, 2, 3, 4].map(fw) });
  const ok = await app.inject({ method: 'POST', url: '/reload', headers: auth });
  t.equal(ok.statusCode, 200);
  t.match(ok.json(), { changed: true, added: ['fw4'] });
  setFile({ ...base, firewalls: [1, 2, 3, 4].map(fw), marks: { base: 0x20000, size: 256 } });
  const no = await app.inject({ method: 'POST', url: '/reload', headers: auth });
  t.equal(no.statusCode, 422);
  t.equal(no.json().code, 'FWLB_RELOAD_REFUSED');
  t.same(
    no.json().details.map((p: { field: string }) => p.field),
    ['/marks'],
  );
  const none = build({ reconciler: r, token: TOKEN, audit: () => undefined });
  t.equal((await none.inject({ method: 'POST', url: '/reload', headers: auth })).json().code, 'FWLB_NO_RELOAD');
});
