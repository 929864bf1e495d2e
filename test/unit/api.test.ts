// Unit: REST routes through app.inject(), with a fake nft runner and fake routing in front of the kernel.
import { t } from 'tap';
import { validateBalancerConfig } from '@fwlb/config';
import { parseListing } from '@fwlb/nft';
import { AuditRecord, nodeLogger } from '@fwlb/service';
import { recordingNft as fakeNft } from '../helpers/recording-nft';
import { fakeNft as modelNft } from '../helpers/fake-nft';
import { build, Reconciler, RoutingPort } from '@fwlb/balancer';

const config = validateBalancerConfig({
  role: 'outside',
  sideInterface: 'cli0',
  firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
  hash: { seed: 7 },
});

const fakeRouting: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
const TOKEN = 'test-token-0123456789abcdef';

function setup() {
  const nft = fakeNft();
  const r = new Reconciler(config, nft, fakeRouting);
  const audits: AuditRecord[] = [];
  const app = build({ reconciler: r, token: TOKEN, audit: (a) => void audits.push(a), apply: () => r.reconcile() });
  return { nft, r, app, audits };
}

t.test('a shared change this node applies after its second is counted and logged as late; one in time is not', async (t) => {
  const nft = fakeNft();
  const r = new Reconciler(config, nft, fakeRouting);
  await r.reconcile();
  let at = 0;
  const logs: string[] = [];
  const app = build({
    reconciler: r,
    token: TOKEN,
    audit: () => undefined,
    apply: () => r.reconcile(),
    // Another node shared the same change first, and this node got its request late: that time stands.
    shareAdmin: async () => at,
    logger: nodeLogger('fwlb', 'ob', 'warn', { write: (l) => void logs.push(l) }),
  });
  const put = (enabled: boolean) =>
    app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', headers: { authorization: `Bearer ${TOKEN}` }, payload: { enabled } });
  at = Date.now() - 300;
  t.equal((await put(false)).statusCode, 200);
  let c = (await app.inject({ method: 'GET', url: '/status' })).json().counters;
  t.equal(c.lateSwitches, 1, 'the change reached the kernel after its second: counted');
  t.ok(c.lateSwitchMaxMs >= 300, `by at least how late its request came (${c.lateSwitchMaxMs} ms)`);
  t.match(logs.join(''), /admin change of fw2 reached this node's kernel \d+ ms after the second every node switches at/, 'and logged');
  at = Math.ceil((Date.now() + 2000) / 1000) * 1000;
  const inTime = await put(true);
  t.equal(inTime.statusCode, 200);
  t.equal(inTime.json().enabledAt, at, 'the answer names the second every node switches at');
  c = (await app.inject({ method: 'GET', url: '/status' })).json().counters;
  t.equal(c.lateSwitches, 1, 'a change in time is not counted');
  at = Date.now() - 300;
  t.equal((await put(true)).statusCode, 200);
  t.equal((await app.inject({ method: 'GET', url: '/status' })).json().counters.lateSwitches, 1, 'nor the same change again, which changes nothing here');
});

t.test('GET /health and /status', async (t) => {
  const { app, r } = setup();
  await r.reconcile();
  const h = await app.inject({ method: 'GET', url: '/health' });
  t.equal(h.statusCode, 200);
  const s = (await app.inject({ method: 'GET', url: '/status' })).json();
  t.equal(s.role, 'outside');
  t.equal(s.firewalls.length, 3);
  t.equal(
    Object.values(s.buckets.distribution as Record<string, number>).reduce((a, b) => a + b, 0),
    251,
  );
});

t.test('a node that stops while an admin change waits for Redis refuses the change at once instead of holding its close', async (t) => {
  const nft = modelNft();
  const r = new Reconciler(config, nft, fakeRouting);
  await r.reconcile();
  let tries = 0;
  const app = build({
    reconciler: r,
    token: TOKEN,
    audit: () => undefined,
    apply: () => r.reconcile(),
    shareAdmin: async () => {
      tries++;
      throw new Error('Connection is closed.');
    },
    shareWaitMs: 5000,
  });
  const t0 = Date.now();
  const answer = app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', headers: { authorization: `Bearer ${TOKEN}` }, payload: { enabled: false } });
  await new Promise((w) => setTimeout(w, 300));
  t.ok(tries >= 1, `the change keeps trying to share itself (${tries} tries)`);
  await app.close();
  const res = await answer;
  const answeredMs = Date.now() - t0;
  t.ok(answeredMs < 2000, `answered at the close, not after the share's 5 s (${answeredMs} ms)`);
  t.equal(res.statusCode, 503, res.body);
  t.match(res.json().message, /the node is stopping/);
  t.equal(r.membership.isEnabled('fw2'), true, 'nothing was changed');
});

t.test('Redis away: an admin change waits for it to share itself, and is refused if it cannot, unless sent with ?local=true', async (t) => {
  const nft = modelNft();
  const r = new Reconciler(config, nft, fakeRouting);
  await r.reconcile();
  let failing = 0;
  const tries: number[] = [];
  const saved: Record<string, boolean>[] = [];
  const app = build({
    reconciler: r,
    token: TOKEN,
    audit: () => undefined,
    apply: () => r.reconcile(),
    // Redis does not answer for the next `failing` tries (a failover), then takes the proposed time.
    shareAdmin: async (_id, _enabled, at) => {
      tries.push(Date.now());
      if (failing-- > 0) throw new Error("Stream isn't writeable and enableOfflineQueue options is false");
      return at;
    },
    shareWaitMs: 700,
    saveAdmin: (s) => void saved.push(s),
  });
  const put = (enabled: boolean, query = '') =>
    app.inject({ method: 'PUT', url: `/firewalls/fw2/admin${query}`, headers: { authorization: `Bearer ${TOKEN}` }, payload: { enabled } });

  failing = 2;
  const shared = await put(false);
  t.equal(shared.statusCode, 200, 'Redis back within the wait (a failover): the change is shared and made');
  t.equal(tries.length, 3, 'after two failed tries');
  t.equal(shared.json().live, false);

  failing = 100;
  tries.length = 0;
  const refused = await put(true);
  t.equal(refused.statusCode, 503, `Redis away for longer: refused (${refused.body})`);
  t.equal(refused.json().code, 'FWLB_NOT_SHARED');
  t.match(refused.json().message, /could not be shared.*nothing was changed.*\?local=true/);
  t.ok(tries.length >= 3 && tries.at(-1)! - tries[0] <= 700, `tried for the wait and no longer (${tries.length} tries)`);
  t.equal(r.membership.isEnabled('fw2'), false, 'the node still has fw2 out');
  t.equal(saved.length, 1, 'and its state file was not written again');
  t.notOk(r.firewalls().find((f) => f.id === 'fw2')!.live, 'nor its kernel changed');

  const local = await put(true, '?local=true');
  t.equal(local.statusCode, 200, 'with ?local=true: made on this node alone');
  t.equal(local.json().live, true);
  t.match(
    (await app.inject({ method: 'GET', url: '/health' })).json().alarms.join(),
    /admin change of fw2 not shared with the other nodes/,
    'an alarm says so',
  );
  t.equal((await put(true, '?local=maybe')).statusCode, 400, 'a query the API does not know is refused');
});

t.test('a shared admin change: every node switches at the time the first share gave; the answer comes once it is in force', async (t) => {
  const nft = modelNft();
  const r = new Reconciler(config, nft, fakeRouting);
  await r.reconcile();
  const shared: { id: string; enabled: boolean; at: number; calledAt: number }[] = [];
  let firstAt = 0;
  const app = build({
    reconciler: r,
    token: TOKEN,
    audit: () => undefined,
    apply: () => r.reconcile(),
    shareAdmin: async (id, enabled, at) => {
      shared.push({ id, enabled, at, calledAt: Date.now() });
      firstAt ||= at;
      return firstAt;
    },
  });
  const batches = nft.batches.length;
  const t0 = Date.now();
  const res = await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', headers: { authorization: `Bearer ${TOKEN}` }, payload: { enabled: false } });
  t.equal(res.statusCode, 200);
  t.equal(shared.length, 1);
  t.equal(shared[0].at % 1000, 0, 'the proposed time is a whole second');
  // Bounded by when the request was sent and when the time was shared (the handler's clock lies between): a loaded
  // machine may take a while in between.
  t.ok(
    shared[0].at >= t0 + 2000 && shared[0].at <= shared[0].calledAt + 3000,
    `2 to 3 s ahead (${shared[0].at - t0} ms after the request, ${shared[0].at - shared[0].calledAt} ms after the share)`,
  );
  t.ok(Date.now() >= shared[0].at, 'the answer came once the time had passed');
  t.equal(res.json().live, false, 'and says fw2 is out');
  const texts = nft.batches.slice(batches).map((b) => JSON.stringify(b));
  t.match(texts[0], /buckets_next/, 'first the kernel got both tables, switched by its clock');
  t.match(texts[0], new RegExp(`"right":${shared[0].at / 1000}`), 'at that second');
  const final = texts.findIndex((x, i) => i > 0 && /"flush":\{"chain"/.test(x) && !/"time"/.test(x));
  t.ok(final > 0, 'then the new table alone');
  t.notMatch(texts[final], /"delete":\{"map"/, 'which leaves buckets_next in place: a packet may still be running the old rules');
  for (let i = 0; i < 50 && (await nft.read('inet', 'fwlb'))!.maps.has('buckets_next'); i++) await new Promise((ok) => setTimeout(ok, 20));
  t.notOk((await nft.read('inet', 'fwlb'))!.maps.has('buckets_next'), 'a pass soon after deletes it');
  t.match(JSON.stringify(nft.batches.at(-1)), /^\[\{"delete":\{"map":\{[^}]*"name":"buckets_next"\}\}\}\]$/, 'in a change of its own');
});

t.test('an admin change that moves many sessions takes effect later: by the lead the session layer asks for', async (t) => {
  const r = new Reconciler(config, fakeNft(), fakeRouting);
  await r.reconcile();
  const asked: [string, boolean, number[]][] = [];
  const shared: number[] = [];
  const app = build({
    reconciler: r,
    token: TOKEN,
    audit: () => undefined,
    shareAdmin: async (_id, _enabled, at) => (shared.push(at), at),
    switchLead: async (id, enabled) => (asked.push([id, enabled, r.movedIf(id, enabled)]), 4000),
  });
  const before = r.currentTable()!.owner.slice();
  const t0 = Date.now();
  const res = await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', headers: { authorization: `Bearer ${TOKEN}` }, payload: { enabled: false } });
  t.equal(res.statusCode, 200);
  t.same(
    asked.map(([id, enabled]) => [id, enabled]),
    [['fw2', false]],
    'the lead is asked for the change being made',
  );
  t.same(
    asked[0][2],
    before.flatMap((o, b) => (o === 'fw2' ? [b] : [])),
    "with the buckets it would move (fw2's), computed before the change",
  );
  t.ok(shared[0] >= t0 + 5000, `the time shared is the usual lead plus 4 s after the request (${shared[0] - t0} ms)`);
  const failing = build({
    reconciler: r,
    token: TOKEN,
    audit: () => undefined,
    shareAdmin: async (_id, _enabled, at) => (shared.push(at), at),
    switchLead: async () => {
      throw new Error('Redis away');
    },
  });
  const t1 = Date.now();
  t.equal(
    (await failing.inject({ method: 'PUT', url: '/firewalls/fw1/admin', headers: { authorization: `Bearer ${TOKEN}` }, payload: { enabled: false } }))
      .statusCode,
    200,
    'a lead that cannot be estimated does not hold the change up',
  );
  t.ok(shared[1] <= Date.now() + 3000 && shared[1] >= t1 + 2000, 'it takes the usual lead');
});

t.test('what an admin change would do is known before it is made, and asking changes nothing', async (t) => {
  const r = new Reconciler(config, fakeNft(), fakeRouting);
  await r.reconcile();
  const before = r.membership.snapshot();
  t.notOk(r.membership.liveIf('fw2', false).includes('fw2'), 'fw2 disabled would leave the live set');
  t.ok(r.membership.liveIf('fw2', true).includes('fw2'), 'enabled it stays');
  t.same(r.movedIf('fw2', true), [], 'enabling an enabled firewall moves nothing');
  t.same(r.membership.snapshot(), before, 'the membership is as it was');
  t.ok(r.membership.isEnabled('fw2'), 'fw2 is still enabled');
});

t.test('PUT /firewalls/:id/admin needs the bearer token', async (t) => {
  const { app } = setup();
  const res = await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', payload: { enabled: false } });
  t.equal(res.statusCode, 401);
  t.equal(res.json().code, 'FWLB_UNAUTHORIZED');
  const wrong = await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', payload: { enabled: false }, headers: { authorization: 'Bearer nope' } });
  t.equal(wrong.statusCode, 401);
});

t.test('disabling a firewall moves only its buckets', async (t) => {
  const { app, r, nft } = setup();
  await r.reconcile();
  const res = await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', payload: { enabled: false }, headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(res.statusCode, 200);
  t.equal(res.json().enabled, false);
  t.equal(res.json().buckets, 0);
  const s = r.status();
  t.equal(s.firewalls.find((f) => f.id === 'fw2')!.live, false);
  t.ok(nft.batches.length >= 2);
});

t.test('bad bodies are refused with the field named', async (t) => {
  const { app } = setup();
  const auth = { authorization: `Bearer ${TOKEN}` };
  const extra = await app.inject({ method: 'PUT', url: '/firewalls/fw1/admin', payload: { enabled: false, force: true }, headers: auth });
  t.equal(extra.statusCode, 400);
  t.match(extra.json().message, /\/force: unknown key/);
  const type = await app.inject({ method: 'PUT', url: '/firewalls/fw1/admin', payload: { enabled: 'no' }, headers: auth });
  t.equal(type.statusCode, 400);
  t.match(type.json().message, /\/enabled/);
  const missing = await app.inject({ method: 'PUT', url: '/firewalls/fw9/admin', payload: { enabled: true }, headers: auth });
  t.equal(missing.statusCode, 404);
  t.equal(missing.json().code, 'FWLB_NO_SUCH_FIREWALL');
});

t.test('a failed apply is reported and the admin state rolls back', async (t) => {
  const { app, r, nft } = setup();
  await r.reconcile();
  nft.failNext();
  const res = await app.inject({ method: 'PUT', url: '/firewalls/fw3/admin', payload: { enabled: false }, headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(res.statusCode, 500);
  t.equal(res.json().code, 'FWLB_APPLY_FAILED');
  t.equal(r.status().firewalls.find((f) => f.id === 'fw3')!.enabled, true);
});

t.test('parseListing is what the reconciler adopts', async (t) => {
  t.equal(parseListing({ nftables: [{ table: { handle: 3 } }] })!.handle, 3);
});

t.test('concurrent reconciles run one after the other', async (t) => {
  let inFlight = 0;
  let maxInFlight = 0;
  const nft = fakeNft();
  const slowRead = async () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((r) => setTimeout(r, 5));
    inFlight--;
    return null;
  };
  const r = new Reconciler(config, { ...nft, read: slowRead }, fakeRouting);
  await Promise.all([r.reconcile(), r.reconcile(), r.reconcile()]);
  t.equal(maxInFlight, 1, 'never two passes at once');
  t.equal(r.reconciles, 3);
});

t.test('a body nested 5,000 levels deep is a 400, not a 500', async (t) => {
  const { app } = setup();
  const deep = '{"enabled":' + '['.repeat(5000) + ']'.repeat(5000) + '}';
  const res = await app.inject({
    method: 'PUT',
    url: '/firewalls/fw1/admin',
    payload: deep,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
  });
  t.equal(res.statusCode, 400);
  t.match(res.json().message, /nested deeper than 32 levels/);
  const junk = await app.inject({
    method: 'PUT',
    url: '/firewalls/fw1/admin',
    payload: '{"enabled": tru',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
  });
  t.equal(junk.statusCode, 400);
  t.match(junk.json().message, /body is not JSON/);
});

t.test('the admin state is saved after each accepted change and read back at start', async (t) => {
  const { mkdtempSync, readFileSync, rmSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const { loadAdminState, saveAdminState } = await import('@fwlb/balancer');
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-admin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'state.json');
  const nft = fakeNft();
  const r = new Reconciler(config, nft, fakeRouting);
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, apply: () => r.reconcile(), saveAdmin: (a) => saveAdminState(path, a) });
  await r.reconcile();
  t.equal(
    (await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', payload: { enabled: false }, headers: { authorization: `Bearer ${TOKEN}` } })).statusCode,
    200,
  );
  t.same(JSON.parse(readFileSync(path, 'utf8')), { version: 1, admin: { fw1: true, fw2: false, fw3: true } });
  t.same(loadAdminState(path, ['fw1', 'fw2']), { admin: { fw1: true, fw2: false }, unknown: ['fw3'] }, 'read back; firewalls no longer configured are named');
  writeFileSync(path, '{"version": 1, "admin": {"fw1": "off"}}');
  t.throws(() => loadAdminState(path, ['fw1']), /state\.json is invalid: \/admin\/fw1: must be boolean/, 'a bad file names itself and the field');
  writeFileSync(path, '');
  t.throws(() => loadAdminState(path, ['fw1']), /state file is not valid JSON/);
  t.same(loadAdminState(join(dir, 'none.json'), ['fw1']), { admin: {}, unknown: [] }, 'no file yet: nothing saved');
  const failing = build({
    reconciler: r,
    token: TOKEN,
    audit: () => undefined,
    apply: () => r.reconcile(),
    saveAdmin: () => {
      throw new Error('EROFS');
    },
  });
  const res = await failing.inject({ method: 'PUT', url: '/firewalls/fw1/admin', payload: { enabled: false }, headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(res.json().code, 'FWLB_SAVE_FAILED');
  t.match((await failing.inject({ method: 'GET', url: '/health' })).json().alarms.join(), /state file not written: EROFS/);
  // ?strict=true for checks that read only the status code (keepalived with curl).
  const degraded = await failing.inject({ method: 'GET', url: '/health' });
  t.equal(degraded.statusCode, 200, 'degraded: 200 by default, as monitoring expects');
  const strict = await failing.inject({ method: 'GET', url: '/health?strict=true' });
  t.equal(strict.statusCode, 503, 'degraded and strict: 503');
  t.equal(strict.json().status, 'degraded');
  t.equal((await app.inject({ method: 'GET', url: '/health?strict=true' })).statusCode, 200, 'ok and strict: 200');
  t.equal((await app.inject({ method: 'GET', url: '/health?colour=red' })).statusCode, 400, 'an unknown parameter is refused');
});

t.test('every mutation leaves an audit record: who, what, the result; refused ones too', async (t) => {
  const { app, r, audits } = setup();
  await r.reconcile();
  await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', payload: { enabled: false }, headers: { authorization: `Bearer ${TOKEN}` } });
  await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', payload: { enabled: true }, headers: { authorization: 'Bearer wrong' } });
  await app.inject({ method: 'PUT', url: '/firewalls/fw9/admin', payload: { enabled: true }, headers: { authorization: `Bearer ${TOKEN}` } });
  await app.inject({ method: 'GET', url: '/status' });
  t.equal(audits.length, 3, 'GETs are not audited; three mutations are');
  const [ok, unauth, missing] = audits;
  t.match(ok, {
    audit: true,
    method: 'PUT',
    route: '/firewalls/:id/admin',
    url: '/firewalls/fw2/admin',
    status: 200,
    body: { enabled: false },
    before: { enabled: true },
  });
  t.ok(ok.after, 'and the answer after');
  t.notOk('before' in unauth, 'a request refused before its handler records no before');
  t.notOk('before' in missing, 'nor one for a firewall that does not exist');
  t.match(ok.actor, /^token:[0-9a-f]{8}$/, 'the actor is a token id, never the token');
  t.notOk(JSON.stringify(audits).includes(TOKEN), 'the token itself is never logged');
  t.match(unauth, { status: 401, code: 'FWLB_UNAUTHORIZED', actor: 'anonymous' });
  t.match(missing, { status: 404, code: 'FWLB_NO_SUCH_FIREWALL' });
});

t.test('a pass that changes only map elements reads the table once; one that changes rules reads it back for their handles', async (t) => {
  const nft = modelNft();
  let reads = 0;
  const counting = { ...nft, read: (f: string, n: string) => (reads++, nft.read(f, n)) };
  const r = new Reconciler(config, counting, fakeRouting);
  await r.reconcile();
  t.equal(reads, 2, 'the first pass creates the table and reads it back');
  const kinds = (batch: unknown[]) => new Set(batch.flatMap((c) => Object.values(c as Record<string, object>).map((o) => Object.keys(o)[0])));
  reads = 0;
  r.membership.setAdmin('fw2', false);
  await r.reconcile();
  const batch = nft.batches.at(-1)!;
  t.same([...kinds(batch)], ['element'], 'fw2 disabled changes the bucket map only');
  t.equal(reads, 1, 'so the pass read the table once, before its change');
  t.ok(r.ruleCounters(), 'and the counters are still there to read');
  reads = 0;
  await r.reconcile();
  t.equal(reads, 1, 'a pass without a change reads once');
});

t.test('the reconciler tells when a committed reconcile changed the bucket table, and only then', async (t) => {
  const { r } = setup();
  let told = 0;
  let moved: number[] = [];
  r.events.on('tableChange', (m) => {
    told++;
    moved = m;
  });
  await r.reconcile();
  t.equal(told, 0, 'not on the first reconcile');
  await r.reconcile();
  t.equal(told, 0, 'not when the table stays');
  const before = r.currentTable()!.owner.slice();
  r.membership.setAdmin('fw2', false);
  await r.reconcile();
  t.equal(told, 1, 'once when fw2 left');
  const fw2had = before.flatMap((o, b) => (o === 'fw2' ? [b] : []));
  t.ok(fw2had.length > 0);
  t.same(moved, fw2had, "with the buckets that moved: fw2's, and only those");
  r.membership.setAdmin('fw2', true);
  await r.reconcile();
  t.equal(told, 2, 'and once when it came back');
});

t.test('the reconciler tells a coming switch once, with the buckets it will move, before it is in force', async (t) => {
  const { r } = setup();
  const told: [number[], number][] = [];
  r.events.on('tableComing', (m, at) => told.push([m, at]));
  await r.reconcile();
  const before = r.currentTable()!.owner.slice();
  const at = Math.ceil((Date.now() + 60_000) / 1000) * 1000;
  r.membership.setAdmin('fw2', false, at);
  await r.reconcile();
  await r.reconcile();
  t.equal(told.length, 1, 'told once for one switch, however many passes render it');
  const fw2had = before.flatMap((o, b) => (o === 'fw2' ? [b] : []));
  t.ok(fw2had.length > 0);
  t.same(told[0], [fw2had, at], "with fw2's buckets and the time of the switch");
  t.same(r.currentTable()!.owner, before, 'the current table is unchanged until then');
  t.notOk(r.comingTable()!.owner.includes('fw2'), 'and the coming table is there to read: fw2 is out of it');
  r.membership.setAdmin('fw2', true);
  await r.reconcile();
  t.equal(r.comingTable(), null, 'the change taken back: nothing is coming');
  t.equal(told.length, 1, 'and nothing more is told');
});
