// The lab's sandwich described as data: namespaces, links, addresses, routes and node configs; pure layer of deploy/lab.
import { join } from 'node:path';
import type { BalancerConfig, SessionTableConfig, SlbConfig, VipConfig } from '@fwlb/config';
import { bootstrapConfig, LAB_ASN, LabBird, LabPeer, nodeBgp, peerRouterConfig } from './bird';

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
  /** A management network: namespace `rd` with bridge `mg0` 10.99.0.1/24, and `mgmt0` on every node (ob .11, ib .12; ob<i> .2<i>, ib<i> .3<i>). */
  mgmt?: boolean;
  /**
   * Firewall sync pairs, e.g. [['fw1', 'fw2']]: a sync link `sync0` between the two (SYNC_NET(g), .k for
   * firewall k) on which `Lab.startSync` runs conntrackd FTFW, and `syncGroup: "g<g>"` in both nodes' configs.
   */
  syncGroups?: string[][];
  /**
   * Node redundancy: this many balancer nodes per side (ob1.., ib1..), on shared transit segments
   * (switch namespaces `ot`, `it`; firewalls told apart by MAC), behind an outside router `or` (the clients' gateway)
   * and the SLB node as the inside router. Needs a session table (the nodes agree through it). 1: today's sandwich.
   */
  nodesPerSide?: number;
  /**
   * With nodesPerSide > 1: `ecmp` (active-active: ECMP routes over the nodes, see `routing`) or
   * `vrrp` (active/standby: keepalived holds each side's gateway and transit addresses; `Lab.startKeepalived`).
   */
  mode?: 'ecmp' | 'vrrp';
  /**
   * How the ECMP routes are made (mode ecmp): `static` (multipath routes over every node, which tests force with
   * `Lab.setEcmp`) or `bgp` (BIRD in every node, router and firewall; the nodes announce through fwlb's bgp section,
   * BFD detects a dead one). @default "static"
   */
  routing?: 'static' | 'bgp';
  /**
   * NAT-ing firewalls: firewall k owns the pool NAT_POOL(k) (in both nodes' configs as `natPools`), SNATs
   * connections the servers open to NAT_SNAT(k), publishes the VIP on NAT_PUBLISHED(k) (DNAT only) and on
   * NAT_FULL(k) (DNAT, and SNAT to NAT_FULL_SOURCE(k) on the inside). See `Lab.build`.
   */
  natFirewalls?: boolean;
  /**
   * Dual stack: every link of the sandwich also carries IPv6 (2001:db8::/32, see CLIENT_NET6 and the others), the
   * nodes' configs give each firewall a `nextHop6`, and clients reach the servers' IPv6 addresses through the
   * firewalls (the SLB node routes IPv6 to them; its VIPs stay IPv4). One node per side.
   */
  ipv6?: boolean;
  /**
   * SLB redundancy: this many SLB nodes (`slb`, `slb2`, ...), an active/standby group under keepalived
   * (`Lab.startKeepalived`): one VRRP instance moves the uplink gateway SLB_GATEWAY (the inside node routes the VIP
   * to it) and the servers' gateway RIP_NET.1 together; the real servers sit on a switch namespace `rs`. The echo
   * VIPs use the `flow` scheduler, so either node sends a connection to the same member. One node per side, IPv4.
   * @default 1
   */
  slbNodes?: number;
}

export interface Host {
  role: 'client' | 'outside' | 'firewall' | 'inside' | 'slb' | 'server' | 'mgmt' | 'router' | 'switch';
  /** Short name, e.g. c1, ob, fw2. */
  name: string;
  ns: string;
  /** Address on its LAN or, for firewalls, the outside-side address. */
  addr?: string;
  /** Its IPv6 address on its LAN (lab option ipv6). */
  addr6?: string;
}

export interface Link {
  a: { ns: string; ifname: string; addr?: string; addr6?: string; mac?: string };
  b: { ns: string; ifname: string; addr?: string; addr6?: string; mac?: string };
  /** Enslave the b end to this bridge in b's namespace. */
  bridgeB?: string;
}

export interface Topology {
  hosts: Host[];
  bridges: { ns: string; ifname: string; addr?: string; addr6?: string }[];
  links: Link[];
  /** `via` a list: a multipath (ECMP) route. An IPv6 `via` makes an IPv6 route (`dst` "default" included). */
  routes: { ns: string; dst: string; via: string | string[] }[];
  /**
   * The ECMP routes over each side's nodes (nodesPerSide > 1): the route in `ns` to `dst` has one next hop per
   * node, `via[node]` (routing bgp: what BGP installs while every node announces the same path).
   */
  ecmp: { side: 'outside' | 'inside'; ns: string; dst: string; via: Record<string, string> }[];
  /** Every balancer node's config by node name: `outside` and `inside`, or ob1.., ib1.. with nodesPerSide > 1. */
  balancers: Record<string, BalancerConfig>;
  /** routing bgp: the BIRDs the lab runs (routers, firewalls, and each node's, whose configuration fwlb writes). */
  birds: LabBird[];
  /** mode vrrp: one VRRP instance per side, over that side's nodes (highest priority first). */
  vrrp: {
    side: VrrpSide;
    vrid: number;
    /** false: a returning node stays backup (`nopreempt`). @default true */
    preempt?: boolean;
    nodes: string[];
    advertInterface: string;
    trackInterfaces: string[];
    addresses: string[];
    addresses6?: string[];
  }[];
  clientNet: string;
  serverNet: string;
  nodes: { outside: BalancerConfig; inside: BalancerConfig };
  /** The SLB tier's config: the VIPs clients use (the first SLB node's). */
  slb: SlbConfig;
  /** Every SLB node's config by node name: `slb`, and `slb2`, ... with slbNodes > 1. */
  slbs: Record<string, SlbConfig>;
  /** The one VIP address; clients reach the servers only through it. */
  vip: string;
  /** The IPv6 VIP address (lab option ipv6). */
  vip6?: string;
  opts: Required<
    Omit<LabOptions, 'broken' | 'sessionTable' | 'mgmt' | 'slbEmbedded' | 'syncGroups' | 'nodesPerSide' | 'natFirewalls' | 'ipv6' | 'slbNodes'>
  > & {
    nodesPerSide: number;
    slbNodes: number;
    broken: boolean;
    sessionTable?: string | SessionTableConfig;
    mgmt?: boolean;
    slbEmbedded?: boolean;
    syncGroups?: string[][];
    natFirewalls?: boolean;
    ipv6?: boolean;
  };
  /** The SLB config the inside node runs in-process (with `slbEmbedded`). */
  embeddedSlb?: SlbConfig;
}

export const CLIENT_NET = '198.51.100';
export const SERVER_NET = '203.0.113';
export const OUTSIDE_TRANSIT = (k: number) => `172.16.${k}`;
/** NAT-ing firewalls (`natFirewalls`): firewall k's pool, and the addresses in it. */
export const NAT_NET = '10.96.0.0/16';
export const NAT_POOL = (k: number) => `10.96.${k}.0/24`;
export const NAT_SNAT = (k: number) => `10.96.${k}.1`;
export const NAT_FULL_SOURCE = (k: number) => `10.96.${k}.2`;
export const NAT_PUBLISHED = (k: number) => `10.96.${k}.80`;
export const NAT_FULL = (k: number) => `10.96.${k}.81`;
/** The same in IPv6 (natFirewalls with ipv6): firewall k's pool 2001:db8:96:k::/64. */
export const NAT_NET6 = '2001:db8:96::/48';
export const NAT_POOL6 = (k: number) => `2001:db8:96:${k}::/64`;
export const NAT_SNAT6 = (k: number) => `2001:db8:96:${k}::1`;
export const NAT_FULL_SOURCE6 = (k: number) => `2001:db8:96:${k}::2`;
export const NAT_PUBLISHED6 = (k: number) => `2001:db8:96:${k}::80`;
export const NAT_FULL6 = (k: number) => `2001:db8:96:${k}::81`;
/** The optional management network (Redis, Sentinel). */
export const MGMT_NET = '10.99.0';
/** The real servers' private network behind the SLB node. */
export const RIP_NET = '10.20.0';
/** The VIP address the SLB publishes on the server-side LAN. */
export const VIP = `${SERVER_NET}.100`;
export const SLB_UPLINK = `${SERVER_NET}.2`;
/** slbNodes > 1: SLB node i's (1-based) uplink address, and the group's gateway address the VRRP master holds. */
export const SLB_NODE_UPLINK = (i: number) => `${SERVER_NET}.${1 + i}`;
export const SLB_GATEWAY = `${SERVER_NET}.20`;
/** A VRRP group of the lab: a side of balancer nodes, or the SLB nodes. */
export type VrrpSide = 'outside' | 'inside' | 'slb';
/** The SLB nodes' names: `slb`, then `slb2`, `slb3`, ... */
export const slbNodeName = (i: number) => (i === 1 ? 'slb' : `slb${i}`);
/** Lab option ipv6: the SLB's IPv6 VIP address on the server-side LAN (L4 echo, UDP and web, and an L7 VIP). */
export const VIP6 = '2001:db8:5::100';
/** The VIP of the SLB tier embedded in the inside node (`slbEmbedded`). */
export const EMBEDDED_VIP = `${SERVER_NET}.200`;
export const ECHO_PORT = 7007;
export const HTTP_PORT = 8080;
/** Every server's HTTP port that requires the PROXY protocol (a member with `proxyProtocol`). */
export const PROXY_HTTP_PORT = 8088;
/** Every server's TCP echo port that requires the PROXY protocol, and answers `who` with the client it names. */
export const PROXY_TCP_PORT = 7009;
export const WEB_PORT = 80;
/** The lab's L7 VIP (mode http, HAProxy) listens on the VIP address at this port. */
export const L7_PORT = 8000;
export const INSIDE_TRANSIT = (k: number) => `172.17.${k}`;
/**
 * Lab option ipv6: the clients' LAN (outside node ::1), the server LAN (inside node ::1, SLB node ::2), the real
 * servers' LAN (SLB node ::1), and firewall k's transit links (node ::1, firewall ::2).
 */
export const CLIENT_NET6 = '2001:db8:c::';
export const SERVER_NET6 = '2001:db8:5::';
export const RIP_NET6 = '2001:db8:20::';
export const OUTSIDE_TRANSIT6 = (k: number) => `2001:db8:16:${k}::`;
export const INSIDE_TRANSIT6 = (k: number) => `2001:db8:17:${k}::`;
/** Node redundancy with ipv6: the outside nodes' side segment (router ::1, node i ::1i), the shared transit segments (node i ::i, firewall k ::1k). */
export const OUTSIDE_SIDE_NET6 = '2001:db8:192::';
export const SHARED_OUTSIDE_TRANSIT6 = '2001:db8:16::';
export const SHARED_INSIDE_TRANSIT6 = '2001:db8:17::';
/** The sync network of firewall sync pair g (1-based): conntrackd's FTFW messages, never steered by fwlb. */
export const SYNC_NET = (g: number) => `10.98.${g}`;
/** Node redundancy: the outside nodes' side segment (router `or` .1, node i .10+i). */
export const OUTSIDE_SIDE_NET = '192.0.2';
/** Node redundancy: the shared transit segments (node i .i, firewall k .10+k). */
export const SHARED_OUTSIDE_TRANSIT = '172.16.0';
export const SHARED_INSIDE_TRANSIT = '172.17.0';
/** The fixed MAC of firewall k on the outside (side 1) or inside (side 2) transit segment. */
export const FIREWALL_MAC = (side: 1 | 2, k: number) => `02:fb:0${side}:00:00:${k.toString(16).padStart(2, '0')}`;

export function topology(o: LabOptions): Topology {
  const opts = {
    firewalls: 3,
    clients: 2,
    servers: 3,
    seed: 0x5eed1234,
    buckets: 251,
    broken: false,
    nodesPerSide: 1,
    slbNodes: 1,
    mode: 'ecmp' as const,
    routing: 'static' as const,
    ...o,
  };
  if (opts.slbNodes > 1 && (opts.nodesPerSide > 1 || opts.slbEmbedded || opts.ipv6))
    throw new RangeError('lab slbNodes > 1 builds one balancer node per side, IPv4, without slbEmbedded');
  if (opts.nodesPerSide > 1) return redundantTopology(opts);
  const ns = (n: string) => `${opts.prefix}-${n}`;
  const hosts: Host[] = [];
  const links: Link[] = [];
  const routes: Topology['routes'] = [];
  const v6 = (a: string) => (opts.ipv6 ? { addr6: a } : {});
  const bridges = [
    { ns: ns('ob'), ifname: 'cli0', addr: `${CLIENT_NET}.1/24`, ...v6(`${CLIENT_NET6}1/64`) },
    { ns: ns('ib'), ifname: 'srv0', addr: `${SERVER_NET}.1/24`, ...v6(`${SERVER_NET6}1/64`) },
  ];
  hosts.push({ role: 'outside', name: 'ob', ns: ns('ob') }, { role: 'inside', name: 'ib', ns: ns('ib') });
  const slbGroup = slbNodes(opts, { hosts, bridges, links, routes });
  endHosts(opts, ns('ob'), { hosts, links, routes }, slbGroup.serverSwitch);
  if (opts.mgmt)
    mgmtNetwork(ns, [
      ['ob', 11],
      ['ib', 12],
    ])({ hosts, bridges, links });
  const fwOut: BalancerConfig['firewalls'] = [];
  const fwIn: BalancerConfig['firewalls'] = [];
  const groupOf = new Map<string, string>();
  (opts.syncGroups ?? []).forEach((g, i) => {
    if (g.length !== 2) throw new RangeError(`lab sync group ${i + 1}: the lab builds pairs (conntrackd over UDP unicast); larger groups use multicast`);
    const [a, b] = g.map((name) => Number(/^fw(\d+)$/.exec(name)?.[1] ?? NaN));
    if (!(a >= 1 && a <= opts.firewalls && b >= 1 && b <= opts.firewalls && a !== b))
      throw new RangeError(`lab sync group ${i + 1}: unknown firewalls ${g.join(', ')}`);
    links.push({
      a: { ns: ns(`fw${a}`), ifname: 'sync0', addr: `${SYNC_NET(i + 1)}.${a}/24` },
      b: { ns: ns(`fw${b}`), ifname: 'sync0', addr: `${SYNC_NET(i + 1)}.${b}/24` },
    });
    for (const name of g) groupOf.set(name, `g${i + 1}`);
  });
  for (let k = 1; k <= opts.firewalls; k++) {
    const fw = ns(`fw${k}`);
    hosts.push({ role: 'firewall', name: `fw${k}`, ns: fw, addr: `${OUTSIDE_TRANSIT(k)}.2` });
    links.push({
      a: { ns: ns('ob'), ifname: `fw${k}`, addr: `${OUTSIDE_TRANSIT(k)}.1/24`, ...v6(`${OUTSIDE_TRANSIT6(k)}1/64`) },
      b: { ns: fw, ifname: 'out0', addr: `${OUTSIDE_TRANSIT(k)}.2/24`, ...v6(`${OUTSIDE_TRANSIT6(k)}2/64`) },
    });
    links.push({
      a: { ns: ns('ib'), ifname: `fw${k}`, addr: `${INSIDE_TRANSIT(k)}.1/24`, ...v6(`${INSIDE_TRANSIT6(k)}1/64`) },
      b: { ns: fw, ifname: 'in0', addr: `${INSIDE_TRANSIT(k)}.2/24`, ...v6(`${INSIDE_TRANSIT6(k)}2/64`) },
    });
    routes.push({ ns: fw, dst: `${CLIENT_NET}.0/24`, via: `${OUTSIDE_TRANSIT(k)}.1` }, { ns: fw, dst: `${SERVER_NET}.0/24`, via: `${INSIDE_TRANSIT(k)}.1` });
    if (opts.ipv6)
      routes.push(
        { ns: fw, dst: `${CLIENT_NET6}/64`, via: `${OUTSIDE_TRANSIT6(k)}1` },
        { ns: fw, dst: `${SERVER_NET6}/64`, via: `${INSIDE_TRANSIT6(k)}1` },
        { ns: fw, dst: `${RIP_NET6}/64`, via: `${INSIDE_TRANSIT6(k)}1` },
      );
    const group = { ...(groupOf.has(`fw${k}`) ? { syncGroup: groupOf.get(`fw${k}`) } : {}), ...natPools(opts, k) };
    fwOut.push({
      id: `fw${k}`,
      nextHop: `${OUTSIDE_TRANSIT(k)}.2`,
      ...(opts.ipv6 ? { nextHop6: `${OUTSIDE_TRANSIT6(k)}2` } : {}),
      interface: `fw${k}`,
      ...group,
    });
    fwIn.push({ id: `fw${k}`, nextHop: `${INSIDE_TRANSIT(k)}.2`, ...(opts.ipv6 ? { nextHop6: `${INSIDE_TRANSIT6(k)}2` } : {}), interface: `fw${k}`, ...group });
  }
  const node = (role: 'outside' | 'inside', side: string, firewalls: BalancerConfig['firewalls']) =>
    // With ipv6 the nodes probe each other over IPv6 (the IPv4-only labs keep the IPv4 probes covered).
    nodeConfig(opts, {
      role,
      name: role === 'outside' ? 'ob' : 'ib',
      file: role,
      side,
      firewalls,
      targets: [opts.ipv6 ? (role === 'outside' ? `${SERVER_NET6}1` : `${CLIENT_NET6}1`) : role === 'outside' ? `${SERVER_NET}.1` : `${CLIENT_NET}.1`],
    });
  const rips = hosts.filter((h) => h.role === 'server').map((h) => h.addr!);
  const slbs = Object.fromEntries(slbGroup.names.map((name) => [name, slbConfig(opts, rips, name)]));
  const slb = slbs.slb;
  if (opts.slbEmbedded) routes.push({ ns: ns('ib'), dst: `${RIP_NET}.0/24`, via: SLB_UPLINK });
  const fast = FAST_TIMERS;
  const nodes = { outside: node('outside', 'cli0', fwOut), inside: node('inside', 'srv0', fwIn) };
  const embeddedSlb: SlbConfig | undefined = opts.slbEmbedded
    ? {
        name: 'ib-slb',
        interface: 'srv0',
        seed: opts.seed,
        vips: [
          {
            id: 'web-ib',
            address: EMBEDDED_VIP,
            port: WEB_PORT,
            protocol: 'tcp',
            scheduler: 'rr',
            check: { kind: 'http', path: '/' },
            timers: fast,
            members: rips.map((a) => ({ address: a, port: HTTP_PORT })),
          },
        ],
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
    nodes,
    ecmp: [],
    birds: [],
    vrrp: slbGroup.vrrp,
    balancers: { outside: nodes.outside, inside: nodes.inside },
    slb,
    slbs,
    vip: VIP,
    ...(opts.ipv6 ? { vip6: VIP6 } : {}),
    opts,
  };
}

/**
 * The strict stateful firewall (deploy/lab/firewall.nft, shared with docker-compose): established/related accept, new
 * SYN/UDP/ICMP accept, everything else counted and dropped.
 */
export const FIREWALL_RULESET_PATH = join(__dirname, '..', 'firewall.nft');

type Opts = Topology['opts'];

/** Firewall k's `natPools` in the nodes' configs (natFirewalls), else nothing. */
const natPools = (opts: Opts, k: number) => (opts.natFirewalls ? { natPools: [NAT_POOL(k), ...(opts.ipv6 ? [NAT_POOL6(k)] : [])] } : {});

/**
 * Firewall k's NAT rules (natFirewalls), as a firewall administrator writes them: connections from the server
 * side leave with the firewall's own address; the VIP is published on two of its addresses, one translated on the
 * destination only, one on both (the inside sees the connection come from the firewall's pool).
 */
export function firewallNatRules(k: number, ipv6 = false): string {
  const six = [
    'table ip6 fwnat6 {',
    '  chain pre {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    `    iifname "out0" ip6 daddr { ${NAT_PUBLISHED6(k)}, ${NAT_FULL6(k)} } dnat to ${VIP6}`,
    '  }',
    '  chain post {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "out0" ip6 saddr ${RIP_NET6}/64 snat to ${NAT_SNAT6(k)}`,
    `    oifname "in0" ct original ip6 daddr ${NAT_FULL6(k)} snat to ${NAT_FULL_SOURCE6(k)}`,
    '  }',
    '}',
    '',
  ];
  return [
    ...(ipv6 ? six : []),
    'table ip fwnat {',
    '  chain pre {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    `    iifname "out0" ip daddr { ${NAT_PUBLISHED(k)}, ${NAT_FULL(k)} } dnat to ${VIP}`,
    '  }',
    '  chain post {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "out0" ip saddr ${SERVER_NET}.0/24 snat to ${NAT_SNAT(k)}`,
    `    oifname "in0" ct original ip daddr ${NAT_FULL(k)} snat to ${NAT_FULL_SOURCE(k)}`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * The SLB node(s) on the inside node's server LAN, the real servers' network behind them. One node: it holds the
 * servers' bridge `rip0` (its .1 is their gateway). Several: the bridge is in a switch namespace `rs`, each node has
 * its own addresses on both networks, and a VRRP instance moves the two gateway addresses together.
 */
function slbNodes(opts: Opts, t: Pick<Topology, 'hosts' | 'bridges' | 'links' | 'routes'>): { names: string[]; serverSwitch: string; vrrp: Topology['vrrp'] } {
  const ns = (x: string) => `${opts.prefix}-${x}`;
  const v6 = (a: string) => (opts.ipv6 ? { addr6: a } : {});
  if (opts.slbNodes <= 1) {
    t.bridges.push({ ns: ns('slb'), ifname: 'rip0', addr: `${RIP_NET}.1/24`, ...v6(`${RIP_NET6}1/64`) });
    t.hosts.push({ role: 'slb', name: 'slb', ns: ns('slb'), addr: SLB_UPLINK });
    t.links.push({
      a: { ns: ns('slb'), ifname: 'up0', addr: `${SLB_UPLINK}/24`, ...v6(`${SERVER_NET6}2/64`) },
      b: { ns: ns('ib'), ifname: 'slb' },
      bridgeB: 'srv0',
    });
    t.routes.push({ ns: ns('slb'), dst: 'default', via: `${SERVER_NET}.1` });
    if (opts.ipv6) t.routes.push({ ns: ns('slb'), dst: 'default', via: `${SERVER_NET6}1` }, { ns: ns('ib'), dst: `${RIP_NET6}/64`, via: `${SERVER_NET6}2` });
    return { names: ['slb'], serverSwitch: 'slb', vrrp: [] };
  }
  t.hosts.push({ role: 'switch', name: 'rs', ns: ns('rs') });
  t.bridges.push({ ns: ns('rs'), ifname: 'rip0' });
  const names = Array.from({ length: opts.slbNodes }, (_, j) => slbNodeName(j + 1));
  names.forEach((name, j) => {
    t.hosts.push({ role: 'slb', name, ns: ns(name), addr: SLB_NODE_UPLINK(j + 1) });
    t.links.push({ a: { ns: ns(name), ifname: 'up0', addr: `${SLB_NODE_UPLINK(j + 1)}/24` }, b: { ns: ns('ib'), ifname: name }, bridgeB: 'srv0' });
    t.links.push({ a: { ns: ns(name), ifname: 'rip0', addr: `${RIP_NET}.${2 + j}/24` }, b: { ns: ns('rs'), ifname: name }, bridgeB: 'rip0' });
    t.routes.push({ ns: ns(name), dst: 'default', via: `${SERVER_NET}.1` });
  });
  // The inside node reaches the VIP through the group's gateway address, never by asking who holds the VIP: every
  // node holds it (HAProxy binds it, and a VIP without a live member answers from it), the master alone forwards.
  t.routes.push({ ns: ns('ib'), dst: `${VIP}/32`, via: SLB_GATEWAY });
  const vrrp: Topology['vrrp'] = [
    {
      side: 'slb',
      vrid: 30,
      // A returning SLB node stays backup (see the keepalived template).
      preempt: false,
      nodes: names,
      advertInterface: 'up0',
      trackInterfaces: ['up0', 'rip0'],
      addresses: [`${SLB_GATEWAY}/24 dev up0`, `${RIP_NET}.1/24 dev rip0`],
    },
  ];
  return { names, serverSwitch: 'rs', vrrp };
}

/** The clients on the `cli0` bridge of `clientGateway` (its .1), the real servers on the `rip0` bridge of `serverSwitch`. */
function endHosts(opts: Opts, clientGateway: string, t: Pick<Topology, 'hosts' | 'links' | 'routes'>, serverSwitch = 'slb'): void {
  const ns = (x: string) => `${opts.prefix}-${x}`;
  for (let i = 1; i <= opts.clients; i++) {
    const addr = `${CLIENT_NET}.${10 + i}`;
    const addr6 = opts.ipv6 ? `${CLIENT_NET6}${10 + i}` : undefined;
    t.hosts.push({ role: 'client', name: `c${i}`, ns: ns(`c${i}`), addr, ...(addr6 ? { addr6 } : {}) });
    t.links.push({
      a: { ns: ns(`c${i}`), ifname: 'eth0', addr: `${addr}/24`, ...(addr6 ? { addr6: `${addr6}/64` } : {}) },
      b: { ns: clientGateway, ifname: `c${i}` },
      bridgeB: 'cli0',
    });
    t.routes.push({ ns: ns(`c${i}`), dst: 'default', via: `${CLIENT_NET}.1` });
    if (addr6) t.routes.push({ ns: ns(`c${i}`), dst: 'default', via: `${CLIENT_NET6}1` });
  }
  for (let i = 1; i <= opts.servers; i++) {
    const addr = `${RIP_NET}.${10 + i}`;
    const addr6 = opts.ipv6 ? `${RIP_NET6}${10 + i}` : undefined;
    t.hosts.push({ role: 'server', name: `s${i}`, ns: ns(`s${i}`), addr, ...(addr6 ? { addr6 } : {}) });
    t.links.push({
      a: { ns: ns(`s${i}`), ifname: 'eth0', addr: `${addr}/24`, ...(addr6 ? { addr6: `${addr6}/64` } : {}) },
      b: { ns: ns(serverSwitch), ifname: `s${i}` },
      bridgeB: 'rip0',
    });
    t.routes.push({ ns: ns(`s${i}`), dst: 'default', via: `${RIP_NET}.1` });
    if (addr6) t.routes.push({ ns: ns(`s${i}`), dst: 'default', via: `${RIP_NET6}1` });
  }
}
const FAST_TIMERS = { interval: 200, response: 100, retries: 2, deadInterval: 300, rise: 2 };
const L7_TIMERS = { interval: 300, response: 250, retries: 3, deadInterval: 400, rise: 2 };

/** A balancer node's config; `file` names its socket and state file in the run directory. */
function nodeConfig(
  opts: Opts,
  n: { role: 'outside' | 'inside'; name: string; file: string; side: string; firewalls: BalancerConfig['firewalls']; targets: string[] },
): BalancerConfig {
  return {
    role: n.role,
    name: n.name,
    sideInterface: n.side,
    firewalls: n.firewalls,
    hash: { seed: opts.seed, buckets: opts.buckets, ...(opts.broken ? { order: 'packet' as const } : {}) },
    ...(opts.broken ? { ingressLearning: false } : {}),
    api: { listen: `unix:${opts.runDir}/${n.file}.sock`, token: 'lab-token-0123456789' },
    stateFile: join(opts.runDir, `${n.file}-state.json`),
    // Each node probes the other side's node(s) through every firewall.
    health: {
      ...(n.targets.length === 1 ? { target: n.targets[0] } : { targets: n.targets }),
      check: { kind: 'icmp' },
      timers: { interval: 200, response: 100, retries: 3, deadInterval: 400, rise: 2 },
    },
    resyncSeconds: 5,
    ...(opts.slbEmbedded && n.role === 'inside' ? { slb: join(opts.runDir, 'inside-slb.json') } : {}),
    ...(opts.sessionTable
      ? { sessionTable: { flushMs: 100, resyncSeconds: 5, ...(typeof opts.sessionTable === 'string' ? { url: opts.sessionTable } : opts.sessionTable) } }
      : {}),
  };
}

function slbConfig(opts: Opts, rips: string[], name = 'slb'): SlbConfig {
  const fast = FAST_TIMERS;
  // Several SLB nodes: the echo VIPs hash the connection, so a connection keeps its member on either node.
  const scheduler = opts.slbNodes > 1 ? ('flow' as const) : ('rr' as const);
  return {
    name,
    interface: 'up0',
    seed: opts.seed,
    api: { listen: `unix:${opts.runDir}/${name}.sock`, token: 'lab-token-0123456789' },
    stateFile: join(opts.runDir, `${name}-state.json`),
    resyncSeconds: 5,
    vips: [
      {
        id: 'echo',
        address: VIP,
        port: ECHO_PORT,
        protocol: 'tcp',
        scheduler,
        check: { kind: 'tcp' },
        timers: fast,
        members: rips.map((a) => ({ address: a, port: ECHO_PORT })),
      },
      // UDP members are checked over TCP on the same port: the lab's echo servers serve both.
      {
        id: 'echo-udp',
        address: VIP,
        port: ECHO_PORT,
        protocol: 'udp',
        scheduler,
        check: { kind: 'tcp', port: ECHO_PORT },
        timers: fast,
        members: rips.map((a) => ({ address: a, port: ECHO_PORT })),
      },
      {
        id: 'web',
        address: VIP,
        port: WEB_PORT,
        protocol: 'tcp',
        scheduler: 'rr',
        check: { kind: 'http', path: '/' },
        timers: fast,
        members: rips.map((a) => ({ address: a, port: HTTP_PORT })),
      },
      l7Vip(rips),
      ...(opts.slbNodes > 1 ? [stickyVip(rips), oneArmVip(rips)] : []),
      // IPv6: the same services on the IPv6 VIP; the L7 VIP's api pool is an IPv4 server (HAProxy bridges the families).
      ...(opts.ipv6
        ? ipv6Vips(
            rips.map((_, i) => `${RIP_NET6}${11 + i}`),
            rips,
          )
        : []),
    ],
    haproxy: {
      dir: join(opts.runDir, name === 'slb' ? 'haproxy' : `haproxy-${name}`),
      // A group: the L7 VIPs' stick tables are shared among its nodes over their uplinks.
      ...(opts.slbNodes > 1 ? { peers: Array.from({ length: opts.slbNodes }, (_, j) => ({ name: slbNodeName(j + 1), address: SLB_NODE_UPLINK(j + 1) })) } : {}),
    },
  };
}

/** The IPv6 VIPs of the lab's SLB (lab option ipv6): echo over TCP and UDP, the web VIP, and the L7 VIP. */
function ipv6Vips(rips6: string[], rips: string[]): VipConfig[] {
  const fast = FAST_TIMERS;
  const shop = l7Vip(rips);
  return [
    {
      id: 'echo6',
      address: VIP6,
      port: ECHO_PORT,
      protocol: 'tcp',
      scheduler: 'rr',
      check: { kind: 'tcp' },
      timers: fast,
      members: rips6.map((a) => ({ address: a, port: ECHO_PORT })),
    },
    {
      id: 'echo6-udp',
      address: VIP6,
      port: ECHO_PORT,
      protocol: 'udp',
      scheduler: 'sh',
      check: { kind: 'tcp', port: ECHO_PORT },
      timers: fast,
      members: rips6.map((a) => ({ address: a, port: ECHO_PORT })),
    },
    {
      id: 'web6',
      address: VIP6,
      port: WEB_PORT,
      protocol: 'tcp',
      scheduler: 'rr',
      check: { kind: 'http', path: '/' },
      timers: fast,
      members: rips6.map((a) => ({ address: a, port: HTTP_PORT })),
    },
    { ...shop, id: 'shop6', address: VIP6, members: shop.members.map((m, i) => (m.pool === 'www' ? { ...m, address: rips6[i] } : m)) },
  ];
}

/** Requests to the lab's L7 VIP (host, path, header) and the pool each must reach: what `npm run lab` and the tests send. */
export const L7_REQUESTS: { label: string; host: string; path: string; headers?: Record<string, string>; pool: 'www' | 'api' }[] = [
  { label: 'www root', host: 'www.example.com', path: '/', pool: 'www' },
  { label: 'api host', host: 'api.example.com', path: '/', pool: 'api' },
  { label: 'api host, other case and a port', host: 'API.Example.com:8000', path: '/x', pool: 'api' },
  { label: 'api prefix under a wildcard host', host: 'shop.example.com', path: '/api/orders', pool: 'api' },
  { label: 'not the prefix (/apix)', host: 'shop.example.com', path: '/apix', pool: 'www' },
  { label: 'header X-Pool: api', host: 'www.example.com', path: '/', headers: { 'X-Pool': 'api' }, pool: 'api' },
  { label: 'header with another value', host: 'www.example.com', path: '/', headers: { 'X-Pool': 'apix' }, pool: 'www' },
  { label: 'path regex', host: 'www.example.com', path: '/v2/api/items', pool: 'api' },
  { label: 'path regex, no match', host: 'www.example.com', path: '/v2/apx/items', pool: 'www' },
  { label: 'path regex on another host', host: 'm.example.com', path: '/v2/api/items', pool: 'www' },
  { label: 'another domain', host: 'example.org', path: '/api/x', pool: 'www' },
  { label: 'the wildcard does not cover the bare domain', host: 'example.com', path: '/api/x', pool: 'www' },
];

/** The pool each lab server serves in the L7 VIP, by server name (s1, s2: www; s3: api). */
export const L7_POOL_OF: Record<string, 'www' | 'api'> = { s1: 'www', s2: 'www', s3: 'api' };

/**
 * Requests that reached a server outside their pool, from a drive report's answers per label (a body names its
 * server: "fwlb lab server s2").
 */
export function l7Misrouted(byLabel: Record<string, Record<string, number>>): string[] {
  const bad: string[] = [];
  for (const row of L7_REQUESTS) {
    for (const [body, n] of Object.entries(byLabel[row.label] ?? {})) {
      const server = /server (\S+)$/.exec(body)?.[1] ?? body;
      if (L7_POOL_OF[server] !== row.pool) bad.push(`${row.label}: ${n} to ${server} (pool ${row.pool})`);
    }
  }
  return bad;
}

/** slbNodes > 1: the port of a one-arm echo VIP that leaves with the group's shared address on the servers' side. */
export const ONE_ARM_PORT = 7012;

/** One-arm (SNAT to RIP_NET.1, the address the group's master holds), `flow`: the servers see the node's address. */
function oneArmVip(rips: string[]): VipConfig {
  return {
    id: 'echo-onearm',
    address: VIP,
    port: ONE_ARM_PORT,
    protocol: 'tcp',
    scheduler: 'flow',
    snat: { address: `${RIP_NET}.1` },
    check: { kind: 'tcp', port: ECHO_PORT },
    timers: FAST_TIMERS,
    members: rips.map((a) => ({ address: a, port: ECHO_PORT })),
  };
}

/** slbNodes > 1: the port of an L7 VIP whose one pool keeps each client on its server by a stick table (`source`). */
export const STICKY_PORT = 8001;

/** An L7 VIP with source persistence over every server: a client's requests stay on one server, on either SLB node. */
function stickyVip(rips: string[]): VipConfig {
  return {
    id: 'sticky',
    address: VIP,
    port: STICKY_PORT,
    protocol: 'tcp',
    mode: 'http',
    check: { kind: 'http', path: '/' },
    timers: L7_TIMERS,
    pools: [{ name: 'www', scheduler: 'rr', persistence: 'source' }],
    rules: [],
    defaultPool: 'www',
    members: rips.map((a) => ({ address: a, port: HTTP_PORT, pool: 'www' })),
  };
}

/**
 * The lab's L7 VIP: two host names and a path prefix on the VIP address. Pool `www` (s1, s2, cookie persistence) takes
 * what no rule matches; pool `api` (s3) takes api.example.com, /api/ under any example.com name, the `X-Pool: api`
 * header, and versioned API paths on www.example.com.
 */
export function l7Vip(rips: string[]): VipConfig {
  return {
    id: 'shop',
    address: VIP,
    port: L7_PORT,
    protocol: 'tcp',
    mode: 'http',
    check: { kind: 'http', path: '/' },
    // Its api pool has one member: a check answered late under the scenario's load (over 100 ms twice on this
    // 2-core machine) would take the pool down and answer 503, so these checks allow more time than FAST_TIMERS,
    // and a pool whose members all look down is not believed (panic: they all take requests).
    timers: L7_TIMERS,
    panicThreshold: 0.5,
    pools: [
      { name: 'www', scheduler: 'rr', persistence: 'cookie' },
      { name: 'api', scheduler: 'leastconn' },
    ],
    rules: [
      { host: 'api.example.com', pool: 'api' },
      { host: '*.example.com', path: '/api/', pool: 'api' },
      { header: { name: 'X-Pool', value: 'api' }, pool: 'api' },
      { host: 'www.example.com', pathRegex: '/v[0-9]+/api/.*', pool: 'api' },
    ],
    defaultPool: 'www',
    members: [
      { address: rips[0], port: HTTP_PORT, pool: 'www' },
      { address: rips[1], port: HTTP_PORT, pool: 'www' },
      { address: rips[2], port: HTTP_PORT, pool: 'api' },
    ],
  };
}

/**
 * The management network for shared services (Redis, Sentinel), never steered by fwlb: namespace `rd` with bridge
 * `mg0` (MGMT_NET.1), and `mgmt0` on each named node at MGMT_NET.<host>.
 */
function mgmtNetwork(ns: (x: string) => string, nodes: [string, number][]) {
  return (into: { hosts: Host[]; bridges: Topology['bridges']; links: Link[] }): void => {
    into.hosts.push({ role: 'mgmt', name: 'rd', ns: ns('rd'), addr: `${MGMT_NET}.1` });
    into.bridges.push({ ns: ns('rd'), ifname: 'mg0', addr: `${MGMT_NET}.1/24` });
    for (const [node, host] of nodes)
      into.links.push({ a: { ns: ns(node), ifname: 'mgmt0', addr: `${MGMT_NET}.${host}/24` }, b: { ns: ns('rd'), ifname: node }, bridgeB: 'mg0' });
  };
}

/**
 * Node redundancy: N nodes per side, active-active behind ECMP.
 *
 *   clients ─ cli0 [or] sd0 ─┬─ ob1 ─┐                ┌─ ib1 ─┬─ up0 [slb] rip0 ─ servers
 *                            └─ ob2 ─┴─ br0 [ot] fw1..3 [it] br0 ─┴─ ib2 ─┘
 *
 * The outside router `or` and the SLB node (the inside router) reach the other side over an ECMP route with one
 * next hop per node; the firewalls route back over the nodes the same way. Each transit segment is one bridge that
 * every node and every firewall of that side shares, so a node tells the firewalls apart by MAC (`mac` in its
 * config) and reaches firewall k through the same next hop as its siblings. Node i of a side probes the other
 * side's nodes at their transit addresses through every firewall (`health.targets`).
 */
function redundantTopology(opts: Opts): Topology {
  if (!opts.sessionTable) throw new RangeError('lab nodesPerSide > 1 needs a sessionTable: the nodes agree on the firewalls through it');
  if (opts.broken || opts.slbEmbedded || opts.syncGroups?.length)
    throw new RangeError('lab nodesPerSide > 1 builds neither broken, slbEmbedded nor syncGroups');
  const v6 = (a: string) => (opts.ipv6 ? { addr6: a } : {});
  const n = opts.nodesPerSide;
  const ns = (x: string) => `${opts.prefix}-${x}`;
  const hosts: Host[] = [];
  const links: Link[] = [];
  const routes: Topology['routes'] = [];
  const bridges: Topology['bridges'] = [
    { ns: ns('or'), ifname: 'cli0', addr: `${CLIENT_NET}.1/24`, ...v6(`${CLIENT_NET6}1/64`) },
    { ns: ns('or'), ifname: 'sd0', addr: `${OUTSIDE_SIDE_NET}.1/24`, ...v6(`${OUTSIDE_SIDE_NET6}1/64`) },
    { ns: ns('ot'), ifname: 'br0' },
    { ns: ns('it'), ifname: 'br0' },
    { ns: ns('slb'), ifname: 'up0', addr: `${SLB_UPLINK}/24`, ...v6(`${SERVER_NET6}2/64`) },
    { ns: ns('slb'), ifname: 'rip0', addr: `${RIP_NET}.1/24`, ...v6(`${RIP_NET6}1/64`) },
  ];
  hosts.push(
    { role: 'router', name: 'or', ns: ns('or') },
    { role: 'switch', name: 'ot', ns: ns('ot') },
    { role: 'switch', name: 'it', ns: ns('it') },
    { role: 'slb', name: 'slb', ns: ns('slb'), addr: SLB_UPLINK },
  );
  endHosts(opts, ns('or'), { hosts, links, routes });
  const fwOut: BalancerConfig['firewalls'] = [];
  const fwIn: BalancerConfig['firewalls'] = [];
  for (let k = 1; k <= opts.firewalls; k++) {
    const fw = ns(`fw${k}`);
    hosts.push({ role: 'firewall', name: `fw${k}`, ns: fw, addr: `${SHARED_OUTSIDE_TRANSIT}.${10 + k}` });
    links.push({
      a: { ns: fw, ifname: 'out0', addr: `${SHARED_OUTSIDE_TRANSIT}.${10 + k}/24`, ...v6(`${SHARED_OUTSIDE_TRANSIT6}${10 + k}/64`), mac: FIREWALL_MAC(1, k) },
      b: { ns: ns('ot'), ifname: `fw${k}` },
      bridgeB: 'br0',
    });
    links.push({
      a: { ns: fw, ifname: 'in0', addr: `${SHARED_INSIDE_TRANSIT}.${10 + k}/24`, ...v6(`${SHARED_INSIDE_TRANSIT6}${10 + k}/64`), mac: FIREWALL_MAC(2, k) },
      b: { ns: ns('it'), ifname: `fw${k}` },
      bridgeB: 'br0',
    });
    fwOut.push({
      id: `fw${k}`,
      nextHop: `${SHARED_OUTSIDE_TRANSIT}.${10 + k}`,
      ...(opts.ipv6 ? { nextHop6: `${SHARED_OUTSIDE_TRANSIT6}${10 + k}` } : {}),
      interface: 'tr0',
      mac: FIREWALL_MAC(1, k),
      ...natPools(opts, k),
    });
    fwIn.push({
      id: `fw${k}`,
      nextHop: `${SHARED_INSIDE_TRANSIT}.${10 + k}`,
      ...(opts.ipv6 ? { nextHop6: `${SHARED_INSIDE_TRANSIT6}${10 + k}` } : {}),
      interface: 'tr0',
      mac: FIREWALL_MAC(2, k),
      ...natPools(opts, k),
    });
  }
  const balancers: Record<string, BalancerConfig> = {};
  const ecmp: Topology['ecmp'] = [];
  const viaOut: Record<string, string> = {};
  const viaOutTransit: Record<string, string> = {};
  const viaIn: Record<string, string> = {};
  const viaInTransit: Record<string, string> = {};
  const [viaOut6, viaOutTransit6, viaIn6, viaInTransit6]: Record<string, string>[] = [{}, {}, {}, {}];
  const nodeIds = Array.from({ length: n }, (_, j) => j + 1);
  for (const i of nodeIds) {
    const [ob, ib] = [`ob${i}`, `ib${i}`];
    hosts.push(
      { role: 'outside', name: ob, ns: ns(ob), addr: `${OUTSIDE_SIDE_NET}.${10 + i}` },
      { role: 'inside', name: ib, ns: ns(ib), addr: `${SERVER_NET}.${10 + i}` },
    );
    links.push({
      a: { ns: ns(ob), ifname: 'sd0', addr: `${OUTSIDE_SIDE_NET}.${10 + i}/24`, ...v6(`${OUTSIDE_SIDE_NET6}${10 + i}/64`) },
      b: { ns: ns('or'), ifname: ob },
      bridgeB: 'sd0',
    });
    links.push({
      a: { ns: ns(ob), ifname: 'tr0', addr: `${SHARED_OUTSIDE_TRANSIT}.${i}/24`, ...v6(`${SHARED_OUTSIDE_TRANSIT6}${i}/64`) },
      b: { ns: ns('ot'), ifname: ob },
      bridgeB: 'br0',
    });
    links.push({
      a: { ns: ns(ib), ifname: 'tr0', addr: `${SHARED_INSIDE_TRANSIT}.${i}/24`, ...v6(`${SHARED_INSIDE_TRANSIT6}${i}/64`) },
      b: { ns: ns('it'), ifname: ib },
      bridgeB: 'br0',
    });
    links.push({
      a: { ns: ns(ib), ifname: 'sd0', addr: `${SERVER_NET}.${10 + i}/24`, ...v6(`${SERVER_NET6}${10 + i}/64`) },
      b: { ns: ns('slb'), ifname: ib },
      bridgeB: 'up0',
    });
    // The outside nodes reach the clients through the router; the inside nodes are on the VIP's segment.
    routes.push({ ns: ns(ob), dst: `${CLIENT_NET}.0/24`, via: `${OUTSIDE_SIDE_NET}.1` });
    if (opts.ipv6) {
      // IPv6 reaches the real servers themselves, routed by the SLB node.
      routes.push({ ns: ns(ob), dst: `${CLIENT_NET6}/64`, via: `${OUTSIDE_SIDE_NET6}1` }, { ns: ns(ib), dst: `${RIP_NET6}/64`, via: `${SERVER_NET6}2` });
      viaOut6[ob] = `${OUTSIDE_SIDE_NET6}${10 + i}`;
      viaOutTransit6[ob] = `${SHARED_OUTSIDE_TRANSIT6}${i}`;
      viaIn6[ib] = `${SERVER_NET6}${10 + i}`;
      viaInTransit6[ib] = `${SHARED_INSIDE_TRANSIT6}${i}`;
    }
    viaOut[ob] = `${OUTSIDE_SIDE_NET}.${10 + i}`;
    viaOutTransit[ob] = `${SHARED_OUTSIDE_TRANSIT}.${i}`;
    viaIn[ib] = `${SERVER_NET}.${10 + i}`;
    viaInTransit[ib] = `${SHARED_INSIDE_TRANSIT}.${i}`;
    balancers[ob] = nodeConfig(opts, {
      role: 'outside',
      name: ob,
      file: ob,
      side: 'sd0',
      firewalls: fwOut,
      targets: nodeIds.map((j) => (opts.ipv6 ? `${SHARED_INSIDE_TRANSIT6}${j}` : `${SHARED_INSIDE_TRANSIT}.${j}`)),
    });
    balancers[ib] = nodeConfig(opts, {
      role: 'inside',
      name: ib,
      file: ib,
      side: 'sd0',
      firewalls: fwIn,
      targets: nodeIds.map((j) => (opts.ipv6 ? `${SHARED_OUTSIDE_TRANSIT6}${j}` : `${SHARED_OUTSIDE_TRANSIT}.${j}`)),
    });
  }
  if (opts.mgmt)
    mgmtNetwork(
      ns,
      nodeIds.flatMap((i): [string, number][] => [
        [`ob${i}`, 20 + i],
        [`ib${i}`, 30 + i],
      ]),
    )({ hosts, bridges, links });
  const vrrp: Topology['vrrp'] = [];
  const birds: LabBird[] = [];
  if (opts.mode === 'vrrp') {
    // One gateway address per side and segment (.10), held by the active node: the router, the SLB node and the
    // firewalls route to it.
    const [outGw, outTr, inGw, inTr] = [`${OUTSIDE_SIDE_NET}.10`, `${SHARED_OUTSIDE_TRANSIT}.10`, `${SERVER_NET}.10`, `${SHARED_INSIDE_TRANSIT}.10`];
    // Dual stack: the IPv6 gateway addresses (::10) move with the same instances.
    const [outGw6, outTr6, inGw6, inTr6] = [`${OUTSIDE_SIDE_NET6}10`, `${SHARED_OUTSIDE_TRANSIT6}10`, `${SERVER_NET6}10`, `${SHARED_INSIDE_TRANSIT6}10`];
    const six = (a: string[]) => (opts.ipv6 ? { addresses6: a } : {});
    vrrp.push(
      {
        side: 'outside',
        vrid: 51,
        nodes: Object.keys(viaOut),
        advertInterface: 'sd0',
        trackInterfaces: ['sd0', 'tr0'],
        addresses: [`${outGw}/24 dev sd0`, `${outTr}/24 dev tr0`],
        ...six([`${outGw6}/64 dev sd0`, `${outTr6}/64 dev tr0`]),
      },
      {
        side: 'inside',
        vrid: 52,
        nodes: Object.keys(viaIn),
        advertInterface: 'sd0',
        trackInterfaces: ['sd0', 'tr0'],
        addresses: [`${inGw}/24 dev sd0`, `${inTr}/24 dev tr0`],
        ...six([`${inGw6}/64 dev sd0`, `${inTr6}/64 dev tr0`]),
      },
    );
    if (opts.ipv6) {
      routes.push(
        { ns: ns('or'), dst: `${RIP_NET6}/64`, via: outGw6 },
        { ns: ns('or'), dst: `${SERVER_NET6}/64`, via: outGw6 },
        { ns: ns('slb'), dst: 'default', via: inGw6 },
      );
      for (let k = 1; k <= opts.firewalls; k++)
        routes.push(
          { ns: ns(`fw${k}`), dst: `${CLIENT_NET6}/64`, via: outTr6 },
          { ns: ns(`fw${k}`), dst: `${RIP_NET6}/64`, via: inTr6 },
          { ns: ns(`fw${k}`), dst: `${SERVER_NET6}/64`, via: inTr6 },
        );
    }
    routes.push({ ns: ns('or'), dst: `${SERVER_NET}.0/24`, via: outGw }, { ns: ns('slb'), dst: 'default', via: inGw });
    if (opts.natFirewalls) routes.push({ ns: ns('or'), dst: NAT_NET, via: outGw }, ...(opts.ipv6 ? [{ ns: ns('or'), dst: NAT_NET6, via: outGw6 }] : []));
    for (let k = 1; k <= opts.firewalls; k++)
      routes.push({ ns: ns(`fw${k}`), dst: `${CLIENT_NET}.0/24`, via: outTr }, { ns: ns(`fw${k}`), dst: `${SERVER_NET}.0/24`, via: inTr });
  } else {
    ecmp.push({ side: 'outside', ns: ns('or'), dst: `${SERVER_NET}.0/24`, via: viaOut }, { side: 'inside', ns: ns('slb'), dst: 'default', via: viaIn });
    if (opts.natFirewalls)
      ecmp.push(
        { side: 'outside', ns: ns('or'), dst: NAT_NET, via: viaOut },
        ...(opts.ipv6 ? [{ side: 'outside' as const, ns: ns('or'), dst: NAT_NET6, via: viaOut6 }] : []),
      );
    for (let k = 1; k <= opts.firewalls; k++) {
      ecmp.push(
        { side: 'outside', ns: ns(`fw${k}`), dst: `${CLIENT_NET}.0/24`, via: viaOutTransit },
        { side: 'inside', ns: ns(`fw${k}`), dst: `${SERVER_NET}.0/24`, via: viaInTransit },
      );
    }
    if (opts.ipv6) {
      ecmp.push(
        { side: 'outside', ns: ns('or'), dst: `${RIP_NET6}/64`, via: viaOut6 },
        { side: 'outside', ns: ns('or'), dst: `${SERVER_NET6}/64`, via: viaOut6 },
        { side: 'inside', ns: ns('slb'), dst: 'default', via: viaIn6 },
      );
      for (let k = 1; k <= opts.firewalls; k++) {
        ecmp.push(
          { side: 'outside', ns: ns(`fw${k}`), dst: `${CLIENT_NET6}/64`, via: viaOutTransit6 },
          { side: 'inside', ns: ns(`fw${k}`), dst: `${RIP_NET6}/64`, via: viaInTransit6 },
          { side: 'inside', ns: ns(`fw${k}`), dst: `${SERVER_NET6}/64`, via: viaInTransit6 },
        );
      }
    }
    if (opts.routing === 'bgp') birds.push(...bgpRouting(opts, balancers, nodeIds));
    else for (const e of ecmp) routes.push({ ns: e.ns, dst: e.dst, via: Object.values(e.via) });
  }
  const rips = hosts.filter((h) => h.role === 'server').map((h) => h.addr!);
  return {
    hosts,
    bridges,
    links,
    routes,
    ecmp,
    vrrp,
    birds,
    balancers,
    clientNet: `${CLIENT_NET}.0/24`,
    serverNet: `${SERVER_NET}.0/24`,
    nodes: { outside: balancers.ob1, inside: balancers.ib1 },
    slb: slbConfig(opts, rips),
    slbs: { slb: slbConfig(opts, rips) },
    vip: VIP,
    ...(opts.ipv6 ? { vip6: VIP6 } : {}),
    opts,
  };
}

/**
 * routing bgp: each node announces its side's prefixes to the router of its side and the other side's to the
 * firewalls (outside nodes: the server networks to `or`, the clients to the firewalls; inside nodes: a default route
 * to the SLB node, the server networks to the firewalls), over IPv4 sessions and, dual stack, IPv6 ones. The
 * routers and firewalls run the lab's BIRD; the nodes run fwlb's (their bgp section).
 */
function bgpRouting(opts: Opts, balancers: Record<string, BalancerConfig>, nodeIds: number[]): LabBird[] {
  const ns = (x: string) => `${opts.prefix}-${x}`;
  const dir = opts.runDir;
  const six = opts.ipv6;
  const fws = Array.from({ length: opts.firewalls }, (_, j) => j + 1);
  const bird = (name: string, config: string): LabBird => ({
    name,
    ns: ns(name),
    file: join(dir, `bird-${name}.conf`),
    socket: join(dir, `bird-${name}.ctl`),
    config,
  });
  const out: LabBird[] = [];
  const serverNets = [
    `${SERVER_NET}.0/24`,
    ...(opts.natFirewalls ? [NAT_NET] : []),
    ...(six ? [`${RIP_NET6}/64`, `${SERVER_NET6}/64`, ...(opts.natFirewalls ? [NAT_NET6] : [])] : []),
  ];
  const toFirewallsInside = [`${SERVER_NET}.0/24`, ...(six ? [`${RIP_NET6}/64`, `${SERVER_NET6}/64`] : [])];
  const clientNets = [`${CLIENT_NET}.0/24`, ...(six ? [`${CLIENT_NET6}/64`] : [])];
  const both = (name: string, a4: string, a6: string, asn: number, announce: string[]) => [
    { name, address: a4, asn, announce },
    ...(six ? [{ name: `${name}_6`, address: a6, asn, announce }] : []),
  ];
  for (const i of nodeIds) {
    const [ob, ib] = [`ob${i}`, `ib${i}`];
    const obPeers = [
      ...both('router', `${OUTSIDE_SIDE_NET}.1`, `${OUTSIDE_SIDE_NET6}1`, LAB_ASN.router, serverNets),
      ...fws.flatMap((k) => both(`fw${k}`, `${SHARED_OUTSIDE_TRANSIT}.${10 + k}`, `${SHARED_OUTSIDE_TRANSIT6}${10 + k}`, LAB_ASN.firewall(k), clientNets)),
    ];
    const ibPeers = [
      ...both('router', SLB_UPLINK, `${SERVER_NET6}2`, LAB_ASN.slb, ['0.0.0.0/0', ...(six ? ['::/0'] : [])]),
      ...fws.flatMap((k) => both(`fw${k}`, `${SHARED_INSIDE_TRANSIT}.${10 + k}`, `${SHARED_INSIDE_TRANSIT6}${10 + k}`, LAB_ASN.firewall(k), toFirewallsInside)),
    ];
    balancers[ob].bgp = nodeBgp(dir, ob, LAB_ASN.outside, `${OUTSIDE_SIDE_NET}.${10 + i}`, obPeers);
    balancers[ib].bgp = nodeBgp(dir, ib, LAB_ASN.inside, `${SERVER_NET}.${10 + i}`, ibPeers);
    out.push(bird(ob, bootstrapConfig(`${OUTSIDE_SIDE_NET}.${10 + i}`)), bird(ib, bootstrapConfig(`${SERVER_NET}.${10 + i}`)));
  }
  const peers = (side: 'ob' | 'ib', a4: (i: number) => string, a6: (i: number) => string, asn: number): LabPeer[] =>
    nodeIds.flatMap((i) => [{ name: `${side}${i}`, address: a4(i), asn }, ...(six ? [{ name: `${side}${i}_6`, address: a6(i), asn }] : [])]);
  out.push(
    bird(
      'or',
      peerRouterConfig(
        `${OUTSIDE_SIDE_NET}.1`,
        LAB_ASN.router,
        peers(
          'ob',
          (i) => `${OUTSIDE_SIDE_NET}.${10 + i}`,
          (i) => `${OUTSIDE_SIDE_NET6}${10 + i}`,
          LAB_ASN.outside,
        ),
      ),
    ),
    bird(
      'slb',
      peerRouterConfig(
        SLB_UPLINK,
        LAB_ASN.slb,
        peers(
          'ib',
          (i) => `${SERVER_NET}.${10 + i}`,
          (i) => `${SERVER_NET6}${10 + i}`,
          LAB_ASN.inside,
        ),
      ),
    ),
  );
  for (const k of fws)
    out.push(
      bird(
        `fw${k}`,
        peerRouterConfig(`${SHARED_OUTSIDE_TRANSIT}.${10 + k}`, LAB_ASN.firewall(k), [
          ...peers(
            'ob',
            (i) => `${SHARED_OUTSIDE_TRANSIT}.${i}`,
            (i) => `${SHARED_OUTSIDE_TRANSIT6}${i}`,
            LAB_ASN.outside,
          ),
          ...peers(
            'ib',
            (i) => `${SHARED_INSIDE_TRANSIT}.${i}`,
            (i) => `${SHARED_INSIDE_TRANSIT6}${i}`,
            LAB_ASN.inside,
          ),
        ]),
      ),
    );
  return out;
}
