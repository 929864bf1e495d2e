// Unit: the API over TLS. A token never crosses the network in clear: a node refuses to listen off loopback with a
// token and without api.tls (check-config, exit 2), and fwlbctl refuses to send one over http:// off this host. An
// HTTPS node answers fwlbctl with --ca; unreadable or mismatched certificate files are config errors.
import { t } from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateBalancerConfig } from '@fwlb/config';
import { apiProblems, httpsOf } from '@fwlb/service';
import { build, Reconciler, RoutingPort } from '@fwlb/balancer';
import { REPO } from '@fwlb/lab';
import { recordingNft } from '../helpers/recording-nft';

const dir = mkdtempSync(join(tmpdir(), 'fwlb-tls-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const TOKEN = 'tls-token-0123456789abcdef';
const tokenFile = join(dir, 'token');
writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });

function certificate(name: string): { certFile: string; keyFile: string } {
  const keyFile = join(dir, `${name}-key.pem`);
  const certFile = join(dir, `${name}-cert.pem`);
  const args = ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1'];
  const r = spawnSync('openssl', [...args, '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return { certFile, keyFile };
}
const a = certificate('a');
const b = certificate('b');

t.test('apiProblems: off loopback with a token needs TLS; the TLS files must be readable and a pair', async (t) => {
  const fields = (api: Parameters<typeof apiProblems>[0], env = {}) => apiProblems(api, env).map((p) => p.field);
  t.same(fields({ listen: '127.0.0.1:8480', tokenFile }), [], 'loopback');
  t.same(fields({ listen: '[::1]:8480', tokenFile }), []);
  t.same(fields({ listen: 'unix:/run/fwlb/api.sock', tokenFile }), [], 'a unix socket');
  t.same(fields({ listen: '0.0.0.0:8480' }), [], 'no token: a read-only API may be plain');
  t.same(fields({ listen: '0.0.0.0:8480', tokenFile }), ['/api/tls'], 'a token file off loopback');
  t.match(
    apiProblems({ listen: '192.0.2.1:8480', tokenFile }, {})[0].message,
    /listens on 192\.0\.2\.1:8480, not loopback, and its bearer token would cross the network in clear/,
  );
  t.same(fields({ listen: '[2001:db8::1]:8480' }, { FWLB_TOKEN: TOKEN }), ['/api/tls'], 'a token from FWLB_TOKEN too');
  t.same(fields({ listen: '0.0.0.0:8480', tokenFile, tls: a }), [], 'with TLS');
  t.same(fields({ listen: '0.0.0.0:8480', tls: { certFile: join(dir, 'none.pem'), keyFile: a.keyFile } }), ['/api/tls/certFile']);
  t.same(fields({ tls: { certFile: a.certFile, keyFile: b.keyFile } }), ['/api/tls'], 'a key that is not the certificate’s');
  t.match(apiProblems({ tls: { certFile: a.certFile, keyFile: b.keyFile } })[0].message, /do not load as a pair/);
});

t.test('check-config refuses a token off loopback without TLS (exit 2), and takes it with TLS', async (t) => {
  const node = (api: unknown) => ({
    role: 'outside',
    sideInterface: 'sd0',
    firewalls: [{ id: 'fw1', nextHop: '172.16.1.2', interface: 'fw1' }],
    hash: { seed: 1 },
    api,
  });
  const file = join(dir, 'node.json');
  const check = (doc: unknown) => {
    writeFileSync(file, JSON.stringify(doc));
    return spawnSync(process.execPath, [join(REPO, 'apps/balancer/dist/main.js'), 'check-config', file], {
      encoding: 'utf8',
      env: { ...process.env, FWLB_TOKEN: '' },
    });
  };
  const plain = check(node({ listen: '0.0.0.0:8480', tokenFile }));
  t.equal(plain.status, 2);
  t.match(plain.stderr, /\/api\/tls: is required: the API listens on 0\.0\.0\.0:8480/);
  const tls = check(node({ listen: '0.0.0.0:8480', tokenFile, tls: a }));
  t.equal(tls.status, 0, tls.stderr);
  const schema = check(node({ listen: '0.0.0.0:8480', tls: { certFile: a.certFile } }));
  t.equal(schema.status, 2);
  t.match(schema.stderr, /\/api\/tls\/keyFile/);
});

const CTL = join(REPO, 'apps/fwlbctl/dist/main.js');
const ctl = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [CTL, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );

t.test('an HTTPS node: fwlbctl with --ca changes it; a token never goes in clear off this host', async (t) => {
  const config = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 7 },
    api: { listen: '127.0.0.1:0', tokenFile, tls: a },
  });
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const r = new Reconciler(config, recordingNft(), routing);
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, apply: () => r.reconcile(), https: httpsOf(config.api) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  await r.reconcile();
  const port = (app.server.address() as { port: number }).port;
  const off = await ctl(['--api', `https://127.0.0.1:${port}`, '--ca', a.certFile, 'firewall', 'disable', 'fw2'], { FWLB_TOKEN: TOKEN });
  t.equal(off.status, 0, off.stderr);
  t.match(off.stdout, /^fw2: enabled false/);
  const wrongCa = await ctl(['--api', `https://127.0.0.1:${port}`, '--ca', b.certFile, 'status']);
  t.equal(wrongCa.status, 2, 'a certificate the CA did not sign: no answer (CRITICAL)');
  const plain = await ctl(['--api', `http://127.0.0.1:${port}`, 'status']);
  t.equal(plain.status, 2, 'plain HTTP gets no answer from an HTTPS node');
  // Off this host over http://: refused before anything is sent (192.0.2.0/24 is documentation space).
  const clear = await ctl(['--api', 'http://192.0.2.10:8480', 'firewall', 'enable', 'fw2'], { FWLB_TOKEN: TOKEN });
  t.equal(clear.status, 3);
  t.match(clear.stderr, /FWLBCTL_CLEAR_TOKEN|refusing to send the token in clear to http:\/\/192\.0\.2\.10:8480/);
  t.equal(readFileSync(tokenFile, 'utf8').trim(), TOKEN);
});
