// Integration: the session table over TLS with AUTH to a real redis-server (Debian's is built with TLS); a wrong
// password is refused with a clear error.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, ready, SessionTable, DEFAULT_LAYOUT } from '@fwlb/session-table';
import { startRedis } from '../helpers/redis';
import { portBase } from '@fwlb/lab';

t.test('TLS and AUTH', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
  const gen = spawnSync('openssl', [
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
  ]);
  t.equal(gen.status, 0, 'a self-signed certificate');
  const tlsPort = portBase(1);
  const redis = await startRedis(t, [
    '--tls-port',
    String(tlsPort),
    '--tls-cert-file',
    cert,
    '--tls-key-file',
    key,
    '--tls-ca-cert-file',
    cert,
    '--tls-auth-clients',
    'no',
    '--requirepass',
    'fwlb-secret-0123',
  ]);
  void redis;
  const good = await ready(connect({ url: `rediss://127.0.0.1:${tlsPort}`, tlsCaFile: cert, password: 'fwlb-secret-0123', node: 'ob' }));
  t.teardown(() => good.disconnect());
  const table = new SessionTable(good, 'ob', 'tls:', DEFAULT_LAYOUT);
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
  t.equal(await table.count(), 1, 'writes and reads over TLS with AUTH');
  const bad = connect({ url: `rediss://127.0.0.1:${tlsPort}`, tlsCaFile: cert, password: 'wrong-password', node: 'ob' });
  const err = await new Promise<Error>((resolve) => bad.once('error', resolve));
  bad.disconnect();
  t.match(err.message, /WRONGPASS|invalid username-password/, `a wrong password is refused: ${err.message}`);
  const untrusted = connect({ url: `rediss://127.0.0.1:${tlsPort}`, password: 'fwlb-secret-0123', node: 'ob' });
  const terr = await new Promise<Error>((resolve) => untrusted.once('error', resolve));
  untrusted.disconnect();
  t.match(terr.message, /self[- ]signed|certificate/i, `a server certificate from an unknown CA is refused: ${terr.message}`);
});
