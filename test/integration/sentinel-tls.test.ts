// Integration: with TLS configured, the session table speaks TLS to the sentinels as well as to Redis:
// a capture on loopback shows neither the AUTH command nor the password in clear. Real redis-server and sentinel.
import { t } from 'tap';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, ready, SessionTable, DEFAULT_LAYOUT } from '@fwlb/session-table';
import { portBase, waitForLine } from '@fwlb/lab';

const PASSWORD = 'fwlb-sentinel-secret-42';

t.test('TLS to the sentinels: no AUTH in clear', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-stls-'));
  const procs: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
  t.equal(
    spawnSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]).status,
    0,
  );
  const base = portBase();
  const [primaryPort, sentinelPort] = [base, base + 1];
  const tls = ['tls-cert-file', cert, 'tls-key-file', key, 'tls-ca-cert-file', cert, 'tls-auth-clients', 'no'];
  const start = async (args: string[], ready: RegExp, what: string) => {
    const p = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(p);
    await waitForLine(p, ready, 10000, what);
  };
  await start(
    [
      '--port',
      '0',
      '--tls-port',
      String(primaryPort),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--requirepass',
      PASSWORD,
      ...tls.flatMap((x, i) => (i % 2 ? [x] : [`--${x}`])),
    ],
    /Ready to accept connections/,
    'primary',
  );
  const conf = join(dir, 'sentinel.conf');
  const lines = [
    `port 0`,
    `tls-port ${sentinelPort}`,
    `bind 127.0.0.1`,
    `dir ${dir}`,
    `tls-replication yes`,
    `requirepass ${PASSWORD}`,
    `sentinel monitor fwlb 127.0.0.1 ${primaryPort} 1`,
    `sentinel auth-pass fwlb ${PASSWORD}`,
  ];
  for (let i = 0; i < tls.length; i += 2) lines.push(`${tls[i]} ${tls[i + 1]}`);
  writeFileSync(conf, lines.join('\n') + '\n');
  await start([conf, '--sentinel'], /\+monitor master fwlb/, 'sentinel');

  const td = spawn('tcpdump', ['--immediate-mode', '-i', 'lo', '-nn', '-A', '-U', '-l', `tcp port ${sentinelPort} or tcp port ${primaryPort}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.push(td);
  let captured = '';
  td.stdout!.on('data', (d) => (captured += d.toString('latin1')));
  await waitForLine(td, /listening on/, 10000, 'tcpdump');

  const r = await ready(
    connect({ sentinels: [{ host: '127.0.0.1', port: sentinelPort }], primaryName: 'fwlb', password: PASSWORD, tls: true, tlsCaFile: cert, node: 'ob' }),
    10000,
  );
  t.teardown(() => r.disconnect());
  const table = new SessionTable(r, 'ob', 'stls:', DEFAULT_LAYOUT);
  const now = Date.now();
  await table.put([
    {
      outerAddr: '198.51.100.11',
      outerPort: 40000,
      innerAddr: '203.0.113.100',
      innerPort: 443,
      proto: 6,
      firewall: 'fw1',
      node: 'ob',
      firstSeen: now,
      expires: now + 60000,
    },
  ]);
  t.equal(await table.count(), 1, 'found the primary through the sentinel and wrote to it, all over TLS with AUTH');
  await new Promise((res) => setTimeout(res, 500));
  td.kill('SIGINT');
  await new Promise((res) => td.once('exit', res));
  t.ok(/\d+ > \d+|\.\d+ > /.test(captured) && captured.length > 1000, `the capture saw the traffic (${captured.length} bytes of text)`);
  t.notOk(captured.includes(PASSWORD), 'the password never crossed in clear');
  t.notOk(/AUTH|SENTINEL|get-master-addr-by-name/i.test(captured), 'nor the AUTH or SENTINEL commands');
});
