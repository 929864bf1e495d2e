// Unit: log lines carry their syslog priority for journald, and the audit trail can go to a file of its own.
import { t } from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fstatSync } from 'node:fs';
import { auditSink, nodeLogger, stdoutIsJournal } from '@fwlb/service';

t.test('FWLB_LOG_FORMAT=journal (the default under systemd): each JSON line starts with its priority', async (t) => {
  const lines: string[] = [];
  const saved = process.env.FWLB_LOG_FORMAT;
  process.env.FWLB_LOG_FORMAT = 'journal';
  t.teardown(() => (saved === undefined ? delete process.env.FWLB_LOG_FORMAT : (process.env.FWLB_LOG_FORMAT = saved)));
  const log = nodeLogger('fwlb', 'ob', 'debug', { write: (s) => void lines.push(s) });
  log.debug('d');
  log.info('i');
  log.warn('ALARM w');
  log.error('e');
  t.same(
    lines.map((l) => l.slice(0, 3)),
    ['<7>', '<6>', '<4>', '<3>'],
    'debug 7, info 6, warning 4, error 3',
  );
  t.same(JSON.parse(lines[2].slice(3)).msg, 'ALARM w', 'the rest of the line is the JSON record');
});

t.test('FWLB_AUDIT_LOG: audit records appended to their own file; an unwritable one falls back to stdout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-audit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'audit.log');
  const sink = auditSink(file);
  const rec = (status: number) => ({
    audit: true as const,
    at: '2026-12-02T00:00:00Z',
    method: 'PUT',
    route: '/firewalls/:id/admin',
    url: '/firewalls/fw2/admin',
    actor: 'token:abc',
    peer: 'unix',
    status,
    ms: 1,
  });
  sink(rec(200));
  sink(rec(409));
  t.same(
    readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).status),
    [200, 409],
  );
  const written: string[] = [];
  const real = process.stdout.write.bind(process.stdout);
  (process.stdout as any).write = (s: string) => (written.push(s), true);
  try {
    auditSink(join(dir, 'no-such-dir', 'audit.log'))(rec(200));
  } finally {
    (process.stdout as any).write = real;
  }
  t.match(JSON.parse(written[0]), { audit: true, status: 200, auditLogError: /no-such-dir.*ENOENT/ }, 'not lost, and says why');
});

t.test("$JOURNAL_STREAM counts only when it names this process's standard output", async (t) => {
  const st = fstatSync(1);
  t.ok(stdoutIsJournal(`${st.dev}:${st.ino}`), 'the device and inode of stdout');
  t.notOk(stdoutIsJournal(`${st.dev}:${st.ino + 1}`), 'another stream (a pipe to a child inherits the variable)');
  t.notOk(stdoutIsJournal(undefined));
  t.notOk(stdoutIsJournal('garbage'));
});
