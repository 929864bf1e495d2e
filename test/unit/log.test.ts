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
