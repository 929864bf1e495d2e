// The lab's sandwich described as data: namespaces, links, addresses, routes and node configs; pure layer of deploy/lab.
import { join } from 'node:path';
import type { BalancerConfig, SessionTableConfig, SlbConfig } from '@fwlb/config';

export interface LabOptions {
  /** Namespace name prefix, unique per run. */
  prefix: string;
  firewalls?: number;
  clients?: number;
  servers?: number;
  seed?: number;
  buckets?: number;
  /** Broken baseline: no ingress learning and each node hashes the packet's own (source, destination) order. */
  broken?: boolean;
  /** Directory for configs, sockets and logs. */
  runDir: string;
  /** The shared session table: a Redis URL (`unix:/path` reaches it from every namespace) or a full section; absent: none. */
  sessionTable?: string | SessionTableConfig;
  /** The inside node also runs the SLB tier in its own process, with VIP 203.0.113.200 on `srv0`. */
  slbEmbedded?: boolean;
  /** A management network: namespace `rd` with bridge `mg0` 10.99.0.1/24, and `mgmt0` on both nodes (.11, .12). */
  mgmt?: boolean;
  /**
   * Firewall sync pairs (issue 11), e.g. [['fw1', 'fw2']]: a sync link `sync0` between the two (SYNC_NET(g), .k for
   * firewall k) on which `Lab.startSync` runs conntrackd FTFW, and `syncGroup: "g<g>"` in both nodes' configs.
   */
  syncGroups?: string[][];
}

export interface Host {
  role: 'client' | 'outside' | 'firewall' | 'inside' | 'slb' | 'server' | 'mgmt';
  /** Short name, e.g. c1, ob, fw2. */
  name: string;
  ns: string;
  /** Address on its LAN or, for firewalls, the outside-side address. */
  addr?: string;
}

export interface Link {
  a: { ns: string; ifname: string; addr?: string };
  b: { ns: string; ifname: string; addr?: string };
  /** Enslave the b end to this bridge in b's namespace. */
  bridgeB?: string;
}

export interface Topology {
  hosts: Host[];
  bridges: { ns: string; ifname: string; addr: string }[];
  links: Link[];
  routes: { ns: string; dst: string; via: string }[];
  clientNet: string;
  serverNet: string;
  nodes: { outside: BalancerConfig; inside: BalancerConfig };
  /** The SLB tier's config: the VIPs clients use. */
  slb: SlbConfig;
  /** The one VIP address; clients reach the servers only through it. */
  vip: string;
  opts: Required<Omit<LabOptions, 'broken' | 'sessionTable' | 'mgmt' | 'slbEmbedded' | 'syncGroups'>> & { broken: boolean; sessionTable?: string | SessionTableConfig; mgmt?: boolean; slbEmbedded?: boolean; syncGroups?: string[][] };
  /** The SLB config the inside node runs in-process (with `slbEmbedded`). */
  embeddedSlb?: SlbConfig;
}

export const CLIENT_NET = '198.51.100';
export const SERVER_NET = '203.0.113';
export const OUTSIDE_TRANSIT = (k: number) => `172.16.${k}`;
/** The optional management network (Redis, Sentinel). */
export const MGMT_NET = '10.99.0';
/** The real servers' private network behind the SLB node. */
export const RIP_NET = '10.20.0';
/** The VIP address the SLB publishes on the server-side LAN. */
export const VIP = `${SERVER_NET}.100`;
export const SLB_UPLINK = `${SERVER_NET}.2`;
/** The VIP of the SLB tier embedded in the inside node (`slbEmbedded`). */
export const EMBEDDED_VIP = `${SERVER_NET}.200`;
export const ECHO_PORT = 7007;
export const HTTP_PORT = 8080;
export const WEB_PORT = 80;
export const INSIDE_TRANSIT = (k: number) => `172.17.${k}`;
/** The sync network of firewall sync pair g (1-based): conntrackd's FTFW messages, never steered by fwlb. */
export const SYNC_NET = (g: number) => `10.98.${g}`;

export function topology(o: LabOptions): Topology {
  const opts = { firewalls: 3, clients: 2, servers: 3, seed: 0x5eed1234, buckets: 251, broken: false, ...o };
  const ns = (n: string) => `${opts.prefix}-${n}`;
  const hosts: Host[] = [];
  const links: Link[] = [];
  const routes: Topology['routes'] = [];
  const bridges = [
    { ns: ns('ob'), ifname: 'cli0', addr: `${CLIENT_NET}.1/24` },
    { ns: ns('ib'), ifname: 'srv0', addr: `${SERVER_NET}.1/24` },
    { ns: ns('slb'), ifname: 'rip0', addr: `${RIP_NET}.1/24` },
  ];
  hosts.push({ role: 'outside', name: 'ob', ns: ns('ob') }, { role: 'inside', name: 'ib', ns: ns('ib') }, { role: 'slb', name: 'slb', ns: ns('slb'), addr: SLB_UPLINK });
  // The SLB node hangs off the inside node's server LAN; the real servers sit behind it on a private network.
  links.push({ a: { ns: ns('slb'), ifname: 'up0', addr: `${SLB_UPLINK}/24` }, b: { ns: ns('ib'), ifname: 'slb' }, bridgeB: 'srv0' });
  routes.push({ ns: ns('slb'), dst: 'default', via: `${SERVER_NET}.1` });
  for (let i = 1; i <= opts.clients; i++) {
    const addr = `${CLIENT_NET}.${10 + i}`;
    hosts.push({ role: 'client', name: `c${i}`, ns: ns(`c${i}`), addr });
    links.push({ a: { ns: ns(`c${i}`), ifname: 'eth0', addr: `${addr}/24` }, b: { ns: ns('ob'), ifname: `c${i}` }, bridgeB: 'cli0' });
    routes.push({ ns: ns(`c${i}`), dst: 'default', via: `${CLIENT_NET}.1` });
  }
  for (let i = 1; i <= opts.servers; i++) {
    const addr = `${RIP_NET}.${10 + i}`;
    hosts.push({ role: 'server', name: `s${i}`, ns: ns(`s${i}`), addr });
    links.push({ a: { ns: ns(`s${i}`), ifname: 'eth0', addr: `${addr}/24` }, b: { ns: ns('slb'), ifname: `s${i}` }, bridgeB: 'rip0' });
    routes.push({ ns: ns(`s${i}`), dst: 'default', via: `${RIP_NET}.1` });
  }
  if (opts.mgmt) {
    // Management network for shared services (Redis, Sentinel): never steered by fwlb.
    hosts.push({ role: 'mgmt', name: 'rd', ns: ns('rd'), addr: `${MGMT_NET}.1` });
    bridges.push({ ns: ns('rd'), ifname: 'mg0', addr: `${MGMT_NET}.1/24` });
    links.push({ a: { ns: ns('ob'), ifname: 'mgmt0', addr: `${MGMT_NET}.11/24` }, b: { ns: ns('rd'), ifname: 'ob' }, bridgeB: 'mg0' });
    links.push({ a: { ns: ns('ib'), ifname: 'mgmt0', addr: `${MGMT_NET}.12/24` }, b: { ns: ns('rd'), ifname: 'ib' }, bridgeB: 'mg0' });
  }
  const fwOut: BalancerConfig['firewalls'] = [];
  const fwIn: BalancerConfig['firewalls'] = [];
  const groupOf = new Map<string, string>();
  (opts.syncGroups ?? []).forEach((g, i) => {
    if (g.length !== 2) throw new RangeError(`lab sync group ${i + 1}: the lab builds pairs (conntrackd over UDP unicast); larger groups use multicast`);
    const [a, b] = g.map((name) => Number(/^fw(\d+)$/.exec(name)?.[1] ?? NaN));
    if (!(a >= 1 && a <= opts.firewalls && b >= 1 && b <= opts.firewalls && a !== b)) throw new RangeError(`lab sync group ${i + 1}: unknown firewalls ${g.join(', ')}`);
    links.push({ a: { ns: ns(`fw${a}`), ifname: 'sync0', addr: `${SYNC_NET(i + 1)}.${a}/24` }, b: { ns: ns(`fw${b}`), ifname: 'sync0', addr: `${SYNC_NET(i + 1)}.${b}/24` } });
    for (const name of g) groupOf.set(name, `g${i + 1}`);
  });
  for (let k = 1; k <= opts.firewalls; k++) {
    const fw = ns(`fw${k}`);
    hosts.push({ role: 'firewall', name: `fw${k}`, ns: fw, addr: `${OUTSIDE_TRANSIT(k)}.2` });
    links.push({ a: { ns: ns('ob'), ifname: `fw${k}`, addr: `${OUTSIDE_TRANSIT(k)}.1/24` }, b: { ns: fw, ifname: 'out0', addr: `${OUTSIDE_TRANSIT(k)}.2/24` } });
    links.push({ a: { ns: ns('ib'), ifname: `fw${k}`, addr: `${INSIDE_TRANSIT(k)}.1/24` }, b: { ns: fw, ifname: 'in0', addr: `${INSIDE_TRANSIT(k)}.2/24` } });
    routes.push({ ns: fw, dst: `${CLIENT_NET}.0/24`, via: `${OUTSIDE_TRANSIT(k)}.1` }, { ns: fw, dst: `${SERVER_NET}.0/24`, via: `${INSIDE_TRANSIT(k)}.1` });
    const group = groupOf.has(`fw${k}`) ? { syncGroup: groupOf.get(`fw${k}`) } : {};
    fwOut.push({ id: `fw${k}`, nextHop: `${OUTSIDE_TRANSIT(k)}.2`, interface: `fw${k}`, ...group });
    fwIn.push({ id: `fw${k}`, nextHop: `${INSIDE_TRANSIT(k)}.2`, interface: `fw${k}`, ...group });
  }
  const node = (role: 'outside' | 'inside', side: string, firewalls: BalancerConfig['firewalls']): BalancerConfig => ({
    role,
    name: role === 'outside' ? 'ob' : 'ib',
    sideInterface: side,
    firewalls,
    hash: { seed: opts.seed, buckets: opts.buckets, ...(opts.broken ? { order: 'packet' as const } : {}) },
    ...(opts.broken ? { ingressLearning: false } : {}),
    api: { listen: `unix:${opts.runDir}/${role}.sock`, token: 'lab-token-0123456789' },
    stateFile: join(opts.runDir, `${role}-state.json`),
    // Each node probes the twin's side address through every firewall.
    health: { target: role === 'outside' ? `${SERVER_NET}.1` : `${CLIENT_NET}.1`, check: { kind: 'icmp' }, timers: { interval: 200, response: 100, retries: 3, deadInterval: 400, rise: 2 } },
    resyncSeconds: 5,
    ...(opts.slbEmbedded && role === 'inside' ? { slb: join(opts.runDir, 'inside-slb.json') } : {}),
    ...(opts.sessionTable ? { sessionTable: { flushMs: 100, resyncSeconds: 5, ...(typeof opts.sessionTable === 'string' ? { url: opts.sessionTable } : opts.sessionTable) } } : {}),
  });
  const rips = hosts.filter((h) => h.role === 'server').map((h) => h.addr!);
  const fast = { interval: 200, response: 100, retries: 2, deadInterval: 300, rise: 2 };
  const slb: SlbConfig = {
    name: 'slb',
    interface: 'up0',
    seed: opts.seed,
    api: { listen: `unix:${opts.runDir}/slb.sock`, token: 'lab-token-0123456789' },
    stateFile: join(opts.runDir, 'slb-state.json'),
    resyncSeconds: 5,
    vips: [
      { id: 'echo', address: VIP, port: ECHO_PORT, protocol: 'tcp', scheduler: 'rr', check: { kind: 'tcp' }, timers: fast, members: rips.map((a) => ({ address: a, port: ECHO_PORT })) },
      // UDP members are checked over TCP on the same port: the lab's echo servers serve both.
      { id: 'echo-udp', address: VIP, port: ECHO_PORT, protocol: 'udp', scheduler: 'rr', check: { kind: 'tcp', port: ECHO_PORT }, timers: fast, members: rips.map((a) => ({ address: a, port: ECHO_PORT })) },
      { id: 'web', address: VIP, port: WEB_PORT, protocol: 'tcp', scheduler: 'rr', check: { kind: 'http', path: '/' }, timers: fast, members: rips.map((a) => ({ address: a, port: HTTP_PORT })) },
    ],
  };
  if (opts.slbEmbedded) routes.push({ ns: ns('ib'), dst: `${RIP_NET}.0/24`, via: SLB_UPLINK });
  const embeddedSlb: SlbConfig | undefined = opts.slbEmbedded
    ? {
        name: 'ib-slb',
        interface: 'srv0',
        seed: opts.seed,
        vips: [{ id: 'web-ib', address: EMBEDDED_VIP, port: WEB_PORT, protocol: 'tcp', scheduler: 'rr', check: { kind: 'http', path: '/' }, timers: fast, members: rips.map((a) => ({ address: a, port: HTTP_PORT })) }],
      }
    : undefined;
  return {
    embeddedSlb,
    hosts,
    bridges,
    links,
    routes,
    clientNet: `${CLIENT_NET}.0/24`,
    serverNet: `${SERVER_NET}.0/24`,
    nodes: { outside: node('outside', 'cli0', fwOut), inside: node('inside', 'srv0', fwIn) },
    slb,
    vip: VIP,
    opts,
  };
}

/** The strict stateful firewall (deploy/lab/firewall.nft, shared with docker-compose): established/related accept, new SYN/UDP/ICMP accept, everything else counted and dropped. */
export const FIREWALL_RULESET_PATH = join(__dirname, '..', 'firewall.nft');
