// Unit: docker-compose.yml is valid (docker-compose config) and describes the lab's topology and node configs.
import { t, Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { bgpDeployFiles, composeTopology, redundantDeployFiles, slbGroupDeployFiles, slbGroupTopology, topology, REPO, Topology, VIP } from '@fwlb/lab';

const lab = topology({ prefix: 'x', runDir: '/run/fwlb', ipv6: true });

/** `file` is valid for docker-compose and gives each host of `lab` (switches are its networks) the lab's addresses. */
async function matchesLab(t: Test, file: string, lab: Topology, extraNetworks: string[] = [], redis = true): Promise<Record<string, any>> {
  const r = spawnSync('docker-compose', ['-f', join(REPO, file), 'config'], { encoding: 'utf8', cwd: REPO });
  t.equal(r.status, 0, `docker-compose config: ${r.stderr}`);
  const doc = parse(r.stdout);
  const services = doc.services as Record<string, any>;
  t.same(
    Object.keys(services).sort(),
    [...lab.hosts.filter((h) => h.role !== 'switch').map((h) => h.name), ...(redis ? ['redis'] : [])].sort(),
    redis ? 'one service per lab host, plus redis' : 'one service per lab host',
  );
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
  for (const l of lab.links) for (const end of [l.a, l.b]) for (const a of [end.addr, end.addr6]) add(end.ns, a);
  for (const b of lab.bridges) for (const a of [b.addr, b.addr6]) add(b.ns, a);
  for (const [host, addrs] of labAddrs) {
    if (!services[host]) continue; // a switch: a network in compose
    const nets = Object.entries(services[host].networks as Record<string, any>).filter(([n]) => !extraNetworks.includes(n));
    const composeAddrs = new Set(nets.flatMap(([, n]) => [n.ipv4_address, n.ipv6_address].filter(Boolean)));
    t.same([...composeAddrs].sort(), [...addrs].sort(), `${host} addresses match (both families)`);
  }
  return services;
}

t.test('docker-compose config accepts the file and it matches the lab', async (t) => {
  await matchesLab(t, 'docker-compose.yml', lab);
});

t.test('deploy/docker-compose.redundant.yml matches the redundant lab, with the configs it mounts', async (t) => {
  const red = composeTopology();
  const services = await matchesLab(t, 'deploy/docker-compose.redundant.yml', red, ['mgmt']);
  // The firewalls' MACs are the ones the nodes' configs name.
  for (const k of [1, 2, 3]) {
    const env = services[`fw${k}`].environment.FWLB_IFACES as string;
    for (const cfg of Object.values(red.balancers)) t.ok(env.includes(`,${cfg.firewalls[k - 1].mac}`), `fw${k} sets the MAC ${cfg.firewalls[k - 1].mac}`);
  }
  // What the nodes run is what the lab's topology and keepalived template give, byte for byte.
  for (const [file, content] of Object.entries(redundantDeployFiles())) {
    t.equal(
      readFileSync(join(REPO, 'deploy/configs/redundant', file), 'utf8'),
      content,
      `deploy/configs/redundant/${file} is current (regenerate: node scripts/redundant-configs.js)`,
    );
  }
  for (const n of ['ob1', 'ob2', 'ib1', 'ib2']) {
    t.match(
      services[n].volumes.map((v: any) => (typeof v === 'string' ? v : `${v.source}:${v.target}`)).join(' '),
      new RegExp(`configs/redundant/keepalived-${n}\\.conf`),
      `${n} mounts its keepalived config`,
    );
  }
});

t.test('deploy/docker-compose.slb-group.yml matches the SLB group lab, with the configs it mounts', async (t) => {
  const lab = slbGroupTopology();
  const services = await matchesLab(t, 'deploy/docker-compose.slb-group.yml', lab, [], false);
  for (const [file, content] of Object.entries(slbGroupDeployFiles())) {
    t.equal(
      readFileSync(join(REPO, 'deploy/configs/slb-group', file), 'utf8'),
      content,
      `deploy/configs/slb-group/${file} is current (regenerate: node scripts/redundant-configs.js)`,
    );
  }
  for (const n of ['slb', 'slb2']) {
    t.match(
      services[n].volumes.map((v: any) => (typeof v === 'string' ? v : `${v.source}:${v.target}`)).join(' '),
      new RegExp(`configs/slb-group/keepalived-${n}\\.conf`),
      `${n} mounts its keepalived config`,
    );
  }
  // What keepalived holds is where the others send: the inside node's route to the VIP, the servers' gateway.
  const [gateway, rip] = lab.vrrp[0].addresses.map((a) => a.split('/')[0]);
  t.match(services.ib.environment.FWLB_IFACES, `route=${VIP}/32,${gateway}`, 'the inside node routes the VIP to the group');
  for (const s of ['s1', 's2', 's3']) t.match(services[s].environment.FWLB_IFACES, `gw=${rip}`, `${s}'s gateway is the group's`);
});

t.test('deploy/docker-compose.bgp.yml matches the BGP lab: every peer runs the lab BIRD, every node its bgp section', async (t) => {
  const lab = composeTopology('bgp');
  const services = await matchesLab(t, 'deploy/docker-compose.bgp.yml', lab, ['mgmt']);
  const mounts = (n: string) => (services[n].volumes ?? []).map((v: any) => (typeof v === 'string' ? v : `${v.source}:${v.target}`)).join(' ');
  for (const [file, content] of Object.entries(bgpDeployFiles())) {
    t.equal(
      readFileSync(join(REPO, 'deploy/configs/bgp', file), 'utf8'),
      content,
      `deploy/configs/bgp/${file} is current (regenerate: node scripts/redundant-configs.js)`,
    );
  }
  for (const b of lab.birds.filter((x) => !(x.name in lab.balancers))) {
    t.match(mounts(b.name), new RegExp(`configs/bgp/bird-${b.name}\\.conf:/etc/fwlb/bird\\.conf`), `${b.name} runs its BIRD`);
    t.notMatch(services[b.name].environment.FWLB_IFACES, /route=|gw=/, `${b.name}: no static route to the nodes (BGP gives them)`);
  }
  for (const n of Object.keys(lab.balancers)) {
    t.match(mounts(n), new RegExp(`configs/bgp/${n}\\.json:/etc/fwlb/config\\.json`));
    t.notMatch(mounts(n), /keepalived/);
    const cfg = JSON.parse(readFileSync(join(REPO, 'deploy/configs/bgp', `${n}.json`), 'utf8'));
    t.equal(cfg.bgp.configFile, '/etc/bird/bird.conf', `${n}: BIRD's file where the entry point starts it from`);
    t.ok(cfg.bgp.peers.length >= 4, `${n}: a session to its router and to each firewall`);
  }
});

t.test('node configs in deploy/configs are the lab node configs', async (t) => {
  for (const role of ['outside', 'inside'] as const) {
    const file = JSON.parse(readFileSync(join(REPO, 'deploy/configs', `${role}.json`), 'utf8'));
    const { api: _a, resyncSeconds: _r, stateFile: _s, ...want } = lab.nodes[role];
    const { api: _b, stateFile, ...got } = file;
    t.same(got, want, `${role}.json matches the lab`);
    t.ok(file.api.tokenFile, `${role}.json reads its token from a file`);
    t.equal(stateFile, `/var/lib/fwlb/${role}-state.json`, `${role}.json keeps the API's changes where a reboot leaves them`);
  }
  const file = JSON.parse(readFileSync(join(REPO, 'deploy/configs/slb.json'), 'utf8'));
  const { api: _a, resyncSeconds: _r, stateFile: _s, ...want } = lab.slb;
  const { api: _b, stateFile, ...got } = file;
  t.same(got, want, 'slb.json matches the lab');
  t.equal(stateFile, '/var/lib/fwlb/slb-state.json', 'slb.json keeps the API changes where a reboot leaves them');
  t.ok(file.api.tokenFile, 'slb.json reads its token from a file');
});
