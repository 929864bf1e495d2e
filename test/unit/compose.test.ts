// Unit: docker-compose.yml is valid (docker-compose config) and describes the lab's topology and node configs.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { topology, REPO } from '@fwlb/lab';

const lab = topology({ prefix: 'x', runDir: '/run/fwlb' });

t.test('docker-compose config accepts the file and it matches the lab', async (t) => {
  const r = spawnSync('docker-compose', ['-f', join(REPO, 'docker-compose.yml'), 'config'], { encoding: 'utf8', cwd: REPO });
  t.equal(r.status, 0, `docker-compose config: ${r.stderr}`);
  const doc = parse(r.stdout);
  const services = doc.services as Record<string, any>;
  t.same(Object.keys(services).sort(), [...lab.hosts.map((h) => h.name), 'redis'].sort(), 'one service per lab host, plus redis');
  for (const name of Object.keys(services).filter((n) => n !== 'redis')) {
    const s = services[name];
    t.ok(s.cap_add.includes('NET_ADMIN'), `${name} has NET_ADMIN`);
    t.equal(String(s.sysctls['net.ipv4.ip_forward']), '1', `${name} forwards`);
  }
  // Every address the lab gives a host is the address compose gives the same service.
  const labAddrs = new Map<string, Set<string>>();
  const add = (ns: string, a?: string) => {
    if (!a) return;
    const host = lab.hosts.find((h) => h.ns === ns)!.name;
    if (!labAddrs.has(host)) labAddrs.set(host, new Set());
    labAddrs.get(host)!.add(a.split('/')[0]);
  };
  for (const l of lab.links) {
    add(l.a.ns, l.a.addr);
    add(l.b.ns, l.b.addr);
  }
  for (const b of lab.bridges) add(b.ns, b.addr);
  for (const [host, addrs] of labAddrs) {
    const composeAddrs = new Set(Object.values(services[host].networks as Record<string, any>).map((n) => n.ipv4_address));
    t.same([...composeAddrs].sort(), [...addrs].sort(), `${host} addresses match`);
  }
});

t.test('node configs in deploy/configs are the lab node configs', async (t) => {
  for (const role of ['outside', 'inside'] as const) {
    const file = JSON.parse(readFileSync(join(REPO, 'deploy/configs', `${role}.json`), 'utf8'));
    const { api: _a, resyncSeconds: _r, ...want } = lab.nodes[role];
    const { api: _b, ...got } = file;
    t.same(got, want, `${role}.json matches the lab`);
    t.ok(file.api.tokenFile, `${role}.json reads its token from a file`);
  }
  const file = JSON.parse(readFileSync(join(REPO, 'deploy/configs/slb.json'), 'utf8'));
  const { api: _a, resyncSeconds: _r, ...want } = lab.slb;
  const { api: _b, ...got } = file;
  t.same(got, want, 'slb.json matches the lab');
  t.ok(file.api.tokenFile, 'slb.json reads its token from a file');
});
