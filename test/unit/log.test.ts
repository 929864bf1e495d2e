// Unit: the node log is one JSON object per line; ALARM messages are warnings; the level filters.
import { t } from 'tap';
import { logLines, nodeLogger } from '@fwlb/service';

t.test('JSON lines with time, level, prog, node, msg', async (t) => {
  const lines: string[] = [];
  const log = logLines(nodeLogger('fwlb', 'ob', 'info', { write: (s) => void lines.push(s) }));
  log('listening on unix:/run/fwlb/api.sock');
  log('ALARM probe helper down: exited (SIGKILL)');
  const [a, b] = lines.map((l) => JSON.parse(l));
  t.match(a, { level: 'info', prog: 'fwlb', node: 'ob', msg: 'listening on unix:/run/fwlb/api.sock' });
  t.match(a.time, /^\d{4}-\d\d-\d\dT/);
  t.match(b, { level: 'warn', msg: /^ALARM probe helper down/ });
  const quiet: string[] = [];
  logLines(nodeLogger('fwlb', 'ob', 'warn', { write: (s) => void quiet.push(s) }))('a routine line');
  t.same(quiet, [], 'level warn drops information');
});

t.test('pretty for a terminal: one readable line per entry, fields kept; JSON when asked', async (t) => {
  const { prettyDest } = await import('@fwlb/service');
  const out: string[] = [];
  const pretty = prettyDest({ write: (s) => void out.push(s) });
  pretty.write(
    JSON.stringify({ level: 'warn', time: '2026-11-29T19:01:02.345Z', prog: 'fwlb', node: 'ob', msg: 'ALARM probe helper down', restarts: 2, pid: 7 }) + '\n',
  );
  pretty.write('not json\n');
  t.same(out, ['19:01:02.345 WARN  ob: ALARM probe helper down restarts=2\n', 'not json\n']);
  const prev = process.env.FWLB_LOG_FORMAT;
  process.env.FWLB_LOG_FORMAT = 'pretty';
  t.teardown(() => (prev === undefined ? delete process.env.FWLB_LOG_FORMAT : (process.env.FWLB_LOG_FORMAT = prev)));
  const lines: string[] = [];
  logLines(nodeLogger('fwlb', 'ib', 'info', { write: (s) => void lines.push(s) }))('listening');
  t.match(lines[0], /^\d\d:\d\d:\d\d\.\d{3} INFO  ib: listening\n$/, 'FWLB_LOG_FORMAT=pretty picks it');
});

t.test('the API logs each request once, through the node logger', async (t) => {
  const { createApi } = await import('@fwlb/service');
  const lines: string[] = [];
  const app = createApi(nodeLogger('fwlb', 'ob', 'info', { write: (s) => void lines.push(s) }), () => undefined);
  app.get('/x', async () => ({ ok: true }));
  await app.inject({ method: 'GET', url: '/x?y=1' });
  const req = lines.map((l) => JSON.parse(l)).filter((o) => o.msg === 'request');
  t.equal(req.length, 1, 'one line per request');
  t.match(req[0], { level: 'info', node: 'ob', method: 'GET', url: '/x?y=1', status: 200 });
  t.type(req[0].ms, 'number');
  const quiet: string[] = [];
  const q = createApi(nodeLogger('fwlb', 'ob', 'warn', { write: (s) => void quiet.push(s) }), () => undefined);
  q.get('/x', async () => ({ ok: true }));
  await q.inject({ method: 'GET', url: '/x' });
  t.same(quiet, [], 'FWLB_LOG_LEVEL=warn: no request lines');
});

t.test('events carry their fields as JSON fields (a transition is queryable without parsing the message)', async (t) => {
  const lines: string[] = [];
  const log = logLines(nodeLogger('fwlb', 'ob', 'info', { write: (s) => void lines.push(s) }));
  log('firewall fw2 DOWN: timeout (3 of 3 attempts failed)', { event: 'firewall-health', firewall: 'fw2', from: 'up', to: 'down' });
  log('ALARM panic', { event: 'panic' });
  const [a, b] = lines.map((l) => JSON.parse(l));
  t.match(a, { level: 'info', event: 'firewall-health', firewall: 'fw2', from: 'up', to: 'down', msg: /^firewall fw2 DOWN/ });
  t.match(b, { level: 'warn', event: 'panic' });
});
