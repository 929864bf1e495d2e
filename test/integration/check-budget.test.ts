// Integration (real fwlb-slb process, real probe helper, real HTTP backends, its own namespace): the node's check
// budget. 256 members whose pages make their VIP's content regex backtrack, checked every second, beside a VIP whose
// checks are sound: the API stays quick, the helper is never restarted, the sound VIP's verdicts hold (a member
// killed goes down within its timers), and the offending VIP's members are unknown with an alarm naming it. Then a
// change that asks for more checks than the budget: refused, naming the field and the budget, and nothing changes.
import { t } from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inNs, percentile, spawnInNs, uniquePrefix, ScaleSlb, SLB_MAIN } from '@fwlb/lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const EVIL_MEMBERS = 256;
const BUDGET = 2000;
// A page of 28 'a's and a '!': (a+)+$ backtracks through 2^28 ways to split it before it gives up.
const SERVERS = `
const http = require('node:http');
const page = (body) => (req, res) => res.end(body);
http.createServer(page('a'.repeat(28) + '!')).listen(8080, '0.0.0.0');
http.createServer(page('status: ok')).listen(8081, '0.0.0.0');
`;

const evilVip = {
  id: 'evil',
  address: '10.100.0.1',
  port: 80,
  protocol: 'tcp',
  check: { kind: 'http-content', regex: '^(a+)+$' },
  timers: { interval: 1000, response: 500, retries: 2, deadInterval: 1000, rise: 1 },
  members: Array.from({ length: EVIL_MEMBERS }, (_, j) => ({ address: `10.50.${1 + Math.floor(j / 200)}.${10 + (j % 200)}`, port: 8080 })),
};
const goodVip = {
  id: 'good',
  address: '10.100.0.2',
  port: 80,
  protocol: 'tcp',
  check: { kind: 'http-content', regex: 'status: (ok|fine)$' },
  timers: { interval: 200, response: 100, retries: 2, deadInterval: 200, rise: 1 },
  members: Array.from({ length: 4 }, (_, j) => ({ address: `10.50.9.${10 + j}`, port: 8081 })),
};
const KILLED = '10.50.9.13';

t.test('the check budget: costly content regexes starve nothing; a change over the budget is refused', async (t) => {
  const s = new ScaleSlb(uniquePrefix('cb'), { vips: 0, members: 0 });
  t.teardown(() => s.cleanup());
  s.setup();
  const doc = JSON.parse(readFileSync(s.configPath, 'utf8'));
  doc.vips = [evilVip, goodVip];
  doc.checkBudget = { checksPerSecond: BUDGET };
  writeFileSync(s.configPath, JSON.stringify(doc));
  const servers = spawnInNs(s.ns, [process.execPath, '-e', SERVERS]);
  t.teardown(() => servers.kill('SIGKILL'));
  await sleep(300);
  const t0 = Date.now();
  await s.start();
  await s.adopted(t0);
  const members = async (id: string) => (await s.api('GET', `/vips/${id}/members`)).body as any[];
  for (let i = 0; i < 100 && !(await members('good')).every((m) => m.health.up); i++) await sleep(100);
  t.ok(
    (await members('good')).every((m) => m.health.up),
    "the sound VIP's members come up",
  );

  await t.test('256 members with a backtracking page every second: /health quick, no helper restart, the others keep their verdicts', async (t) => {
    const latencies: number[] = [];
    let killedAt = 0;
    let downAt = 0;
    const end = Date.now() + 15000;
    const watch = (async () => {
      while (Date.now() < end) {
        const m = (await members('good')).find((x) => x.address === KILLED);
        if (killedAt && !downAt && m && !m.health.up) downAt = Date.now();
        await sleep(50);
      }
    })();
    try {
      while (Date.now() < end) {
        if (!killedAt && Date.now() > end - 9000) {
          // The member dies as a server does: its port answers with a reset.
          inNs(
            s.ns,
            ['nft', '-f', '-'],
            [
              'table inet cbkill {',
              '  chain out {',
              '    type filter hook output priority 0;',
              `    ip daddr ${KILLED} tcp dport 8081 reject with tcp reset`,
              '  }',
              '}',
              '',
            ].join('\n'),
          );
          killedAt = Date.now();
        }
        latencies.push((await s.api('GET', '/health')).ms);
        await sleep(20);
      }
    } finally {
      await watch;
    }
    const p99 = percentile(latencies, 99);
    t.ok(
      p99 < 50,
      `/health p99 ${p99.toFixed(1)} ms (p50 ${percentile(latencies, 50).toFixed(1)}, max ${Math.max(...latencies).toFixed(1)}, n=${latencies.length})`,
    );
    t.same(
      s.log.filter((l) => /probe helper down|helper.*stuck/.test(l)),
      [],
      'the probe helper was never taken for stuck, never restarted',
    );
    t.ok(downAt > 0, 'the killed member of the sound VIP went down');
    // Its timers: 2 failures 200 ms apart, 100 ms each, plus the poll above (50 ms) and jitter.
    t.ok(downAt - killedAt < 2000, `within its timers: ${downAt - killedAt} ms after it was killed`);
    const good = await members('good');
    t.equal(good.filter((m) => m.health.up).length, 3, 'the other members of the sound VIP stay up');
    const evil = await members('evil');
    const unknown = evil.filter((m) => /content regex of VIP evil ran longer than 20 ms/.test(m.health.unknown ?? ''));
    t.equal(unknown.length, EVIL_MEMBERS, `every member of the offending VIP is unknown (${unknown.length})`);
    const h = (await s.api('GET', '/health')).body;
    t.equal(h.status, 'degraded');
    t.ok(
      h.alarms.some((a: string) => /VIP evil/.test(a)),
      `an alarm names the VIP: ${h.alarms.find((a: string) => /VIP evil/.test(a))}`,
    );
    t.notOk(
      h.alarms.some((a: string) => /VIP good/.test(a)),
      'no alarm names the sound VIP',
    );
  });

  await t.test('a change that asks for more checks than the budget: refused naming the field and the budget; nothing changes', async (t) => {
    const before = s.nft(['list', 'table', 'ip', 'fwlb_slb']);
    const busy = {
      ...goodVip,
      id: 'busy',
      address: '10.100.0.3',
      timers: { interval: 100, response: 50, retries: 2, deadInterval: 100, rise: 1 },
      members: Array.from({ length: 200 }, (_, j) => ({ address: `10.50.10.${10 + j}`, port: 8081 })),
    };
    const r = await s.api('POST', '/vips', busy);
    t.equal(r.status, 400);
    t.match(JSON.stringify(r.body), /\/members.*2,2\d\d health checks\/s would exceed this node's budget of 2,000 \(checkBudget\.checksPerSecond\)/);
    t.equal((await s.api('GET', '/vips/busy')).status, 404, 'no VIP was made');
    t.equal(s.nft(['list', 'table', 'ip', 'fwlb_slb']), before, 'the kernel is as it was');
    const faster = await s.api('PUT', '/vips/evil', { ...evilVip, timers: { ...evilVip.timers, interval: 100, response: 50, deadInterval: 100 } });
    t.equal(faster.status, 400);
    t.match(JSON.stringify(faster.body), /\/timers\/interval.*would exceed this node's budget of 2,000/, 'a shorter interval: the interval is named');
    // The config file: the same demand is refused before anything runs.
    const file = join(s.dir, 'over.json');
    writeFileSync(file, JSON.stringify({ ...doc, vips: [evilVip, goodVip, busy] }));
    let out = '';
    let code = 0;
    try {
      execFileSync(process.execPath, [SLB_MAIN, 'check-config', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      code = (e as { status: number }).status;
      out = String((e as { stderr: string }).stderr) + String((e as { stdout: string }).stdout);
    }
    t.equal(code, 2, 'check-config exits 2');
    t.match(out, /\/vips: 2,\d{3} health checks\/s would exceed this node's budget of 2,000/);
  });
});
