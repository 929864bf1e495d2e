// Builds and tears down the namespace sandwich, starts servers and balancer nodes; I/O layer of deploy/lab.
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ChildProcess, spawnSync } from 'node:child_process';
import * as http from 'node:http';
import {
  ECHO_PORT,
  FIREWALL_RULESET_PATH,
  firewallNatRules,
  HTTP_PORT,
  LabOptions,
  PROXY_HTTP_PORT,
  PROXY_TCP_PORT,
  RIP_NET,
  SYNC_NET,
  Topology,
  topology,
  VrrpSide,
} from './topology';
import { TIME_WAIT_ADVICE_SECONDS } from '@fwlb/config';
import { hostPort } from '@fwlb/flowhash';
import { conntrackdConfig } from './conntrackd';
import { keepalivedNode, renderKeepalived, VRRP_TIMERS } from './keepalived';
import { deleteNs, inNs, listNs, run, spawnInNs } from './netns';
import { parseBirdProtocols } from '@fwlb/routing';

export const REPO = resolve(__dirname, '../../..');
export const BALANCER_MAIN = join(REPO, 'apps/balancer/dist/main.js');
export const AGENT = join(__dirname, 'agent.js');
export const SLB_MAIN = join(REPO, 'apps/slb/dist/main.js');
/** Node.js's options for the agents, as the package's commands give them (deploy/package/node-flags). */
export const NODE_FLAGS = readFileSync(join(REPO, 'deploy/package/node-flags'), 'utf8')
  .split('\n')
  .filter((l) => l && !l.startsWith('#'));
/** Hostile and junk packets from a raw socket (deploy/lab/tools/spoof.py). */
export const SPOOF = join(REPO, 'deploy/lab/tools/spoof.py');

/** A conntrack entry as `conntrack -L` prints it, reduced to what the session tests compare. */
export interface KernelSession {
  proto: number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  mark: number;
  /** TCP: ASSURED; UDP: a reply was seen (the shared table's notion of a session). */
  answered: boolean;
  /** TCP in TIME_WAIT or CLOSE: the connection is over (the shared table ends such a record). */
  over: boolean;
}

/** A node process: `outside`, `inside` and `slb`, or with nodesPerSide > 1 a balancer's name (ob1, ib2, ...). */
export type NodeRole = 'outside' | 'inside' | 'slb' | string;
const NODE_NS: Record<string, string> = { outside: 'ob', inside: 'ib', slb: 'slb' };
/** The namespace a node process runs in. */
export const nodeNs = (role: NodeRole): string => NODE_NS[role] ?? role;

export interface NodeProc {
  proc: ChildProcess;
  log: string[];
}

/** The firewall's sets of the TCP flows it dropped packets of (deploy/lab/firewall.nft), by family. */
const DROP_SETS = ['dropnew', 'dropinvalid', 'dropnew6', 'dropinvalid6'];

/** The clients' and servers' source port range: wide, so benchmarks do not run out of ports. */
const WIDE_PORTS = '10000 65000';

export class Lab {
  readonly t: Topology;
  private procs: ChildProcess[] = [];
  readonly nodes: Partial<Record<NodeRole, NodeProc>> = {};

  constructor(opts: LabOptions) {
    this.t = topology(opts);
  }

  ns(name: string): string {
    return `${this.t.opts.prefix}-${name}`;
  }

  host(name: string) {
    return this.t.hosts.find((h) => h.name === name)!;
  }

  /** "[addr6]:port" of every host of a role (lab option ipv6): the real servers' or the clients' IPv6 ends. */
  targets6(role: 'server' | 'client', port: number): string[] {
    return this.t.hosts.filter((h) => h.role === role).map((h) => hostPort(h.addr6!, port));
  }

  /** Create every namespace, link, address and route; firewalls get their strict ruleset. */
  build(): void {
    mkdirSync(this.t.opts.runDir, { recursive: true });
    for (const h of this.t.hosts) {
      run(['ip', 'netns', 'add', h.ns]);
      inNs(h.ns, ['ip', 'link', 'set', 'lo', 'up']);
      const sys = ['net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0'];
      if (h.role === 'outside' || h.role === 'inside' || h.role === 'firewall' || h.role === 'slb' || h.role === 'router') sys.push('net.ipv4.ip_forward=1');
      // ECMP routes (nodesPerSide > 1) hash on the 5-tuple, as a data-centre router does.
      if (h.role === 'firewall' || h.role === 'slb' || h.role === 'router') sys.push('net.ipv4.fib_multipath_hash_policy=1');
      // Nodes answer the twin's firewall probes through the firewall they came from (see render.ts).
      if (h.role === 'outside' || h.role === 'inside') sys.push('net.ipv4.fwmark_reflect=1', 'net.ipv4.tcp_fwmark_accept=1');
      // Several nodes per side: an ended connection's entry goes within a second (fwlb doctor's advice), so a new
      // connection that reuses its tuple and is moved to this node does not meet it.
      // And entries carry their start time: a node tells an earlier connection's entry from a later one's when it
      // hears that a sibling recorded a connection on the tuple (fwlb doctor's advice).
      if ((h.role === 'outside' || h.role === 'inside') && this.t.opts.nodesPerSide > 1)
        sys.push(`net.netfilter.nf_conntrack_tcp_timeout_time_wait=${TIME_WAIT_ADVICE_SECONDS}`, 'net.netfilter.nf_conntrack_timestamp=1');
      // SLB nodes of a group: a node that takes connections back (its links return) still holds their entries from
      // before, whose windows the connections have left behind; strict tracking would call their packets invalid,
      // leave them untranslated, and the node's own stack would reset them (fwlb-slb doctor's advice).
      if (h.role === 'slb' && this.t.opts.slbNodes > 1) sys.push('net.netfilter.nf_conntrack_tcp_be_liberal=1');
      // Benchmark hygiene: a wide port range and tw reuse keep short-connection loads from running out of ports.
      if (h.role === 'client' || h.role === 'server') sys.push(`net.ipv4.ip_local_port_range=${WIDE_PORTS}`, 'net.ipv4.tcp_tw_reuse=1');
      if (this.t.opts.ipv6) {
        // Addresses usable at once (no duplicate address detection on links the lab alone builds).
        // A link taken down and up again (a node's failure in the tests) keeps its IPv6 addresses, as IPv4 ones.
        sys.push(
          'net.ipv6.conf.default.accept_dad=0',
          'net.ipv6.conf.all.accept_dad=0',
          'net.ipv6.conf.all.keep_addr_on_down=1',
          'net.ipv6.conf.default.keep_addr_on_down=1',
        );
        if (h.role === 'firewall' || h.role === 'slb' || h.role === 'router') sys.push('net.ipv6.fib_multipath_hash_policy=1');
        if (h.role === 'outside' || h.role === 'inside') sys.push('net.ipv6.fwmark_reflect=1');
        if (h.role === 'outside' || h.role === 'inside' || h.role === 'firewall' || h.role === 'slb' || h.role === 'router')
          sys.push('net.ipv6.conf.all.forwarding=1', 'net.ipv6.conf.default.forwarding=1');
      }
      inNs(h.ns, ['sysctl', '-qw', ...sys]);
    }
    for (const b of this.t.bridges) {
      inNs(b.ns, ['ip', 'link', 'add', b.ifname, 'type', 'bridge']);
      if (b.addr) inNs(b.ns, ['ip', 'addr', 'add', b.addr, 'dev', b.ifname]);
      if (b.addr6) inNs(b.ns, ['ip', '-6', 'addr', 'add', b.addr6, 'dev', b.ifname, 'nodad']);
      inNs(b.ns, ['ip', 'link', 'set', b.ifname, 'up']);
    }
    for (const l of this.t.links) {
      // Created in the root namespace under a throwaway name, then renamed inside each namespace.
      const tmp = `v${process.pid.toString(36)}${Math.floor(Math.random() * 1e8).toString(36)}`.slice(0, 13);
      run(['ip', 'link', 'add', tmp + 'a', 'netns', l.a.ns, 'type', 'veth', 'peer', 'name', tmp + 'b', 'netns', l.b.ns]);
      inNs(l.a.ns, ['ip', 'link', 'set', tmp + 'a', 'name', l.a.ifname]);
      inNs(l.b.ns, ['ip', 'link', 'set', tmp + 'b', 'name', l.b.ifname]);
      for (const end of [l.a, l.b]) {
        if (end.mac) inNs(end.ns, ['ip', 'link', 'set', end.ifname, 'address', end.mac]);
        if (end.addr) inNs(end.ns, ['ip', 'addr', 'add', end.addr, 'dev', end.ifname]);
        if (end.addr6) inNs(end.ns, ['ip', '-6', 'addr', 'add', end.addr6, 'dev', end.ifname, 'nodad']);
        inNs(end.ns, ['sysctl', '-qw', `net.ipv4.conf.${end.ifname}.rp_filter=0`]);
      }
      if (l.bridgeB) inNs(l.b.ns, ['ip', 'link', 'set', l.b.ifname, 'master', l.bridgeB]);
      inNs(l.a.ns, ['ip', 'link', 'set', l.a.ifname, 'up']);
      inNs(l.b.ns, ['ip', 'link', 'set', l.b.ifname, 'up']);
    }
    for (const r of this.t.routes) inNs(r.ns, routeCmd('add', r.dst, r.via));
    for (const h of this.t.hosts.filter((x) => x.role === 'firewall')) inNs(h.ns, ['nft', '-f', FIREWALL_RULESET_PATH]);
    if (this.t.opts.natFirewalls) {
      for (const h of this.t.hosts.filter((x) => x.role === 'firewall')) {
        const file = join(this.t.opts.runDir, `${h.name}-nat.nft`);
        writeFileSync(file, firewallNatRules(Number(h.name.slice(2)), this.t.opts.ipv6));
        inNs(h.ns, ['nft', '-f', file]);
      }
    }
    for (const [file, cfg] of Object.entries(this.t.balancers)) writeFileSync(join(this.t.opts.runDir, `${file}.json`), JSON.stringify(cfg, null, 2));
    for (const [name, cfg] of Object.entries(this.t.slbs)) writeFileSync(join(this.t.opts.runDir, `${name}.json`), JSON.stringify(cfg, null, 2));
    if (this.t.embeddedSlb) writeFileSync(join(this.t.opts.runDir, 'inside-slb.json'), JSON.stringify(this.t.embeddedSlb, null, 2));
    // Lab plumbing, not fwlb: connections the servers open themselves leave with the SLB node's address.
    const snat = {
      nftables: [
        { add: { table: { family: 'ip', name: 'lab_snat' } } },
        { add: { chain: { family: 'ip', table: 'lab_snat', name: 'post', type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' } } },
        {
          add: {
            rule: {
              family: 'ip',
              table: 'lab_snat',
              chain: 'post',
              expr: [
                { match: { op: '==', left: { meta: { key: 'oifname' } }, right: 'up0' } },
                { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: { prefix: { addr: `${RIP_NET}.0`, len: 24 } } } },
                { masquerade: null },
              ],
            },
          },
        },
      ],
    };
    const snatFile = join(this.t.opts.runDir, 'lab-snat.json');
    writeFileSync(snatFile, JSON.stringify(snat));
    for (const name of Object.keys(this.t.slbs)) inNs(this.ns(name), ['nft', '-j', '-f', snatFile]);
    for (const b of this.t.birds) this.startBird(b.name);
  }

  readonly birdLogs: string[] = [];

  /**
   * BIRD in one namespace of a `routing: 'bgp'` lab, in the foreground (killed with the lab). A node's starts from a
   * bootstrap configuration unless fwlb has written its own there already.
   */
  startBird(name: string): void {
    const b = this.t.birds.find((x) => x.name === name);
    if (!b) throw new RangeError(`no BIRD ${name} in this lab`);
    if (!existsSync(b.file)) writeFileSync(b.file, b.config);
    const p = spawnInNs(b.ns, ['bird', '-f', '-c', b.file, '-s', b.socket, '-P', `${b.socket}.pid`]);
    p.stdout?.on('data', (d) => this.birdLogs.push(`${name}: ${d}`));
    p.stderr?.on('data', (d) => this.birdLogs.push(`${name}: ${d}`));
    this.procs.push(p);
    this.birdProcs.set(name, p);
  }

  private readonly birdProcs = new Map<string, ChildProcess>();

  /** Kill one BIRD (SIGKILL: its sessions end without a word, as a crashed daemon's). */
  async killBird(name: string): Promise<void> {
    const p = this.birdProcs.get(name);
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
    this.birdProcs.delete(name);
  }

  /** The next hops of the route to `dst` in a host's namespace, sorted (one per node for an ECMP route). */
  nextHops(host: string, dst: string): string[] {
    const text = inNs(this.ns(host), ['ip', '-o', ...(dst.includes(':') ? ['-6'] : []), 'route', 'show', dst]);
    return [...text.matchAll(/via (\S+)/g)].map((m) => m[1]).sort();
  }

  /** `birdc` in a lab BIRD's namespace (a router's, a firewall's, a node's). */
  birdc(name: string, args: string[]): string {
    const b = this.t.birds.find((x) => x.name === name);
    if (!b) throw new RangeError(`no BIRD ${name} in this lab`);
    return run(['birdc', '-s', b.socket, ...args]);
  }

  /** The BGP sessions of a lab BIRD and whether each is established. */
  bgpSessions(name: string): { name: string; established: boolean; info: string }[] {
    return parseBirdProtocols(this.birdc(name, ['show', 'protocols']))
      .filter((p) => p.proto === 'BGP')
      .map((p) => ({ name: p.name, established: p.established, info: p.info }));
  }

  /** Wait until every BGP session of the routers and firewalls is established. */
  async waitBgp(ms = 30000): Promise<number> {
    const routers = this.t.birds.filter((b) => !(b.name in this.t.balancers)).map((b) => b.name);
    let last = '';
    return waitUntil(
      () => {
        const down = routers.flatMap((r) =>
          this.bgpSessions(r)
            .filter((x) => !x.established)
            .map((x) => `${r}:${x.name} ${x.info}`),
        );
        last = down.join(', ');
        return down.length === 0;
      },
      ms,
      () => `every BGP session established (not yet: ${last}) ${this.birdLogs.join('')}`,
      100,
    );
  }

  /** Start a long-running agent (servers) in a namespace and wait for its "ready" line. */
  async startAgent(hostName: string, args: string[]): Promise<ChildProcess> {
    const p = spawnInNs(this.ns(hostName), [process.execPath, AGENT, ...args]);
    this.procs.push(p);
    await waitForLine(p, /^ready/, 10000, `agent ${args[0]} in ${hostName}`);
    return p;
  }

  /** Server agents by host name, so a test can kill one and start it again. */
  readonly agents = new Map<string, ChildProcess>();
  /** Server agents that answer fwlb's health checks 503 now (see refuseChecks). */
  private readonly refusing = new Set<string>();

  /** Every client and server runs the echo/HTTP agent; a server's page names it ("fwlb lab server s2"). */
  async startServers(): Promise<void> {
    for (const h of this.t.hosts.filter((x) => x.role === 'server' || x.role === 'client')) await this.startServer(h.name);
  }

  async startServer(name: string, extra: string[] = []): Promise<ChildProcess> {
    // The agent takes the first occurrence of an option: `extra` overrides the defaults.
    const serve = [
      'serve',
      ...extra,
      '--tcp',
      String(ECHO_PORT),
      '--udp',
      String(ECHO_PORT),
      '--http',
      String(HTTP_PORT),
      '--proxy-http',
      String(PROXY_HTTP_PORT),
      '--proxy-tcp',
      String(PROXY_TCP_PORT),
      '--http-body',
      `fwlb lab server ${name}\n`,
    ];
    const p = await this.startAgent(name, serve);
    this.agents.set(name, p);
    this.refusing.delete(name);
    return p;
  }

  /** A server that answers fwlb's health checks 503 (`refuse`) while it serves every other request, or answers them again. */
  async refuseChecks(name: string, refuse: boolean): Promise<void> {
    const p = this.agents.get(name);
    if (!p) throw new Error(`no server agent ${name}`);
    // The agent flips on each signal: send one only when its state is not already the one asked for.
    if (this.refusing.has(name) === refuse) return;
    const said = waitForLine(p, refuse ? /^refusing checks/ : /^answering checks/, 5000, `server ${name} switching its checks`);
    p.kill('SIGUSR2');
    await said;
    if (refuse) this.refusing.add(name);
    else this.refusing.delete(name);
  }

  /** kill -9 a server agent: its ports close at once. */
  async killServer(name: string): Promise<void> {
    const p = this.agents.get(name);
    if (!p) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
    this.agents.delete(name);
  }

  configPath(role: NodeRole): string {
    return join(this.t.opts.runDir, `${role}.json`);
  }

  socketPath(role: NodeRole): string {
    return join(this.t.opts.runDir, `${role}.sock`);
  }

  /**
   * Start a balancer node and wait until its API answers. `wrap` goes before the command inside the namespace
   * (e.g. setpriv with a unit's capabilities). `ms`: how long it may take (a node loading a large session table
   * takes longer). `nodeArgs`: node's own options (a benchmark's `--cpu-prof`).
   */
  async startNode(role: NodeRole, wrap: string[] = [], ms = 15000, nodeArgs: string[] = []): Promise<NodeProc> {
    const ns = this.ns(nodeNs(role));
    const p = spawnInNs(ns, [
      ...wrap,
      process.execPath,
      ...NODE_FLAGS,
      ...nodeArgs,
      role in this.t.slbs ? SLB_MAIN : BALANCER_MAIN,
      'run',
      '--config',
      this.configPath(role),
    ]);
    this.procs.push(p);
    const log: string[] = [];
    // FWLB_LAB_LOGS=DIR keeps every node's output, across restarts, in DIR/<node>.log: for hunting a rare fault.
    const keep = process.env.FWLB_LAB_LOGS ? join(process.env.FWLB_LAB_LOGS, `${role}.log`) : null;
    const onData = (d: Buffer) => {
      log.push(...d.toString().split('\n').filter(Boolean));
      if (keep) appendFileSync(keep, d);
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', onData);
    const node = { proc: p, log };
    this.nodes[role] = node;
    await waitForLine(p, /listening on/, ms, `balancer ${role}`, log);
    return node;
  }

  /** The balancer nodes' names: `outside` and `inside`, or ob1.., ib1.. with nodesPerSide > 1. */
  balancerNames(): string[] {
    return Object.keys(this.t.balancers);
  }

  async startNodes(): Promise<void> {
    for (const b of this.balancerNames()) await this.startNode(b);
    for (const s of Object.keys(this.t.slbs)) await this.startNode(s);
    await this.waitFirewalls((fw) => fw.every((f) => f.live), 15000, 'all firewalls live on both nodes');
    for (const s of Object.keys(this.t.slbs))
      await this.waitMembers((vips) => vips.every((v) => v.members.every((m: any) => m.health.up)), 15000, `every member up on ${s}`, s);
  }

  /** Poll an SLB node's GET /vips until `ok` holds; returns the time it took. */
  async waitMembers(ok: (vips: any[]) => boolean, ms: number, what: string, node = 'slb'): Promise<number> {
    let v: { status: number; body: any } = { status: 0, body: null };
    return waitUntil(
      async () => {
        v = await this.api(node, 'GET', '/vips').catch(() => ({ status: 0, body: null }));
        return v.status === 200 && ok(v.body);
      },
      ms,
      () => `${what}: ${JSON.stringify(v.body)}`,
    );
  }

  /** Poll every balancer node's GET /firewalls (or those of `nodes`) until `ok` holds for all; returns the time it took. */
  async waitFirewalls(
    ok: (fw: { id: string; live: boolean; healthy: boolean }[]) => boolean,
    ms: number,
    what: string,
    nodes = this.balancerNames(),
  ): Promise<number> {
    let views: { status: number; body: any }[] = [];
    return waitUntil(
      async () => {
        views = await Promise.all(nodes.map((r) => this.api(r, 'GET', '/firewalls').catch(() => ({ status: 0, body: null }))));
        return views.every((v) => v.status === 200 && ok(v.body));
      },
      ms,
      () => `${what}: ${JSON.stringify(views.map((v) => v.body))}`,
    );
  }

  /** Stop a node as systemd would (SIGTERM) and wait for it to exit: it leaves the kernel as it is. */
  stopNode(role: NodeRole): Promise<void> {
    return this.endNode(role, 'SIGTERM');
  }

  /** kill -9: the controller dies without any cleanup, as in a crash. */
  killNode(role: NodeRole): Promise<void> {
    return this.endNode(role, 'SIGKILL');
  }

  private async endNode(role: NodeRole, signal: NodeJS.Signals): Promise<void> {
    const n = this.nodes[role];
    if (!n) return;
    const exited = new Promise((r) => n.proc.once('exit', r));
    // `ip netns exec` execs node in place, so the child's pid is the controller's pid.
    n.proc.kill(signal);
    await exited;
    delete this.nodes[role];
  }

  /** The keepalived timers the lab runs with (mode vrrp). */
  static readonly VRRP_TIMERS = VRRP_TIMERS;

  /**
   * keepalived (Debian's) in every node of a `vrrp` lab, from fwlb's template, its health check `fwlbctl health`;
   * waits until each side's addresses have a holder. Killed with the lab.
   */
  async startKeepalived(timers: Partial<typeof Lab.VRRP_TIMERS> = {}): Promise<void> {
    const tm = { ...Lab.VRRP_TIMERS, ...timers };
    for (const v of this.t.vrrp) {
      for (const [i, node] of v.nodes.entries()) await this.startKeepalivedOn(node, renderKeepalived(keepalivedNode(v, node, i, this.socketPath(node), tm)));
    }
    await waitUntil(
      () => this.t.vrrp.every((v) => this.vrrpHolder(v.side) !== null),
      15000,
      () => `a keepalived holder of each side's addresses: ${this.keepalivedLogs.join('')}`,
    );
  }

  /** keepalived's output, each chunk with when it arrived (ms since the epoch). */
  readonly keepalivedOutput: { at: number; node: string; text: string }[] = [];

  get keepalivedLogs(): string[] {
    return this.keepalivedOutput.map((o) => `${o.node}: ${o.text}`);
  }

  /**
   * keepalived's state changes and check results since `since` (ms since the epoch), as `1234 ms ib1: <line>` (ms
   * after `zero`): where a side's addresses, and so its traffic, were meanwhile.
   */
  vrrpEvents(since: number, zero = since): string[] {
    return this.keepalivedOutput
      .filter((o) => o.at >= since)
      .flatMap((o) =>
        o.text
          .split('\n')
          .filter((l) => /entering|script|priority|master|backup|fault/i.test(l))
          .map((l) => `${o.at - zero} ms ${o.node}: ${l.trim()}`),
      );
  }

  private async startKeepalivedOn(node: string, config: string): Promise<void> {
    const dir = this.t.opts.runDir;
    const conf = join(dir, `keepalived-${node}.conf`);
    writeFileSync(conf, config);
    const pid = (x: string) => join(dir, `keepalived-${node}-${x}.pid`);
    const p = spawnInNs(this.ns(node), [
      'keepalived',
      '--dont-fork',
      '--log-console',
      '--vrrp',
      '-f',
      conf,
      '-p',
      pid('main'),
      '-r',
      pid('vrrp'),
      '-c',
      pid('checkers'),
    ]);
    const log = (d: Buffer) => this.keepalivedOutput.push({ at: Date.now(), node, text: String(d) });
    p.stdout?.on('data', log);
    p.stderr?.on('data', log);
    this.procs.push(p);
    await new Promise((r) => setTimeout(r, 100));
    if (p.exitCode !== null) throw new Error(`keepalived in ${node} exited ${p.exitCode}: ${this.keepalivedLogs.join('')}`);
  }

  /** The node that holds a side's VRRP addresses now (its first address on its interface), or null. */
  vrrpHolder(side: VrrpSide): string | null {
    const v = this.t.vrrp.find((x) => x.side === side);
    if (!v) return null;
    const [addr, , dev] = v.addresses[0].split(' ');
    const ip = addr.split('/')[0];
    const holders = v.nodes.filter((n) => {
      try {
        return inNs(this.ns(n), ['ip', '-o', '-4', 'addr', 'show', 'dev', dev]).includes(` ${ip}/`);
      } catch {
        return false;
      }
    });
    return holders.length === 1 ? holders[0] : holders.length ? holders.join('+') : null;
  }

  /**
   * Point every ECMP route of the side(s) at `nodes` only (those of each route's side; a route none of them is on
   * keeps all its next hops): a test's forced rehash (routing static; behind BGP, drain nodes instead).
   */
  setEcmp(nodes: string[], side?: 'outside' | 'inside'): void {
    for (const e of this.t.ecmp.filter((x) => !side || x.side === side)) {
      const on = Object.keys(e.via).filter((n) => nodes.includes(n));
      const via = (on.length ? on : Object.keys(e.via)).map((n) => e.via[n]);
      inNs(e.ns, routeCmd('replace', e.dst, via));
    }
  }

  /**
   * A node's links go down (every interface of its namespace but lo) or come back up; coming back also puts back
   * its static routes, which the kernel removed with the links. `carrier`: the links' far ends instead.
   */
  nodeLinks(name: string, up: boolean, how: 'admin' | 'carrier' = 'admin'): void {
    const ns = this.ns(nodeNs(name));
    if (how === 'carrier') {
      // The far ends go down: the node's links lose their carrier, as when a node dies or its cables are pulled. Its
      // kernel keeps its routes (an interface taken down by hand loses them).
      for (const l of this.t.links) {
        const far = l.a.ns === ns ? l.b : l.b.ns === ns ? l.a : null;
        if (far) inNs(far.ns, ['ip', 'link', 'set', far.ifname, up ? 'up' : 'down']);
      }
      return;
    }
    const ifs = inNs(ns, ['ip', '-o', 'link', 'show'])
      .split('\n')
      .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
      .filter((x): x is string => !!x && x !== 'lo');
    for (const i of ifs) inNs(ns, ['ip', 'link', 'set', i, up ? 'up' : 'down']);
    if (up) for (const r of this.t.routes.filter((x) => x.ns === ns)) inNs(ns, routeCmd('replace', r.dst, r.via));
  }

  /**
   * conntrackd FTFW on both firewalls of every sync pair (`syncGroups`), then a check that each daemon answers on
   * its control socket. Killed with the lab.
   */
  async startSync(): Promise<void> {
    const groups = this.t.opts.syncGroups ?? [];
    for (const [g, pair] of groups.entries()) {
      for (const [i, name] of pair.entries()) {
        const k = (n: string) => Number(n.slice(2));
        const conf = join(this.t.opts.runDir, `conntrackd-${name}.conf`);
        writeFileSync(
          conf,
          conntrackdConfig({
            self: `${SYNC_NET(g + 1)}.${k(name)}`,
            peer: `${SYNC_NET(g + 1)}.${k(pair[1 - i])}`,
            iface: 'sync0',
            dir: this.t.opts.runDir,
            name,
          }),
        );
        const p = spawnInNs(this.ns(name), ['conntrackd', '-C', conf]);
        const log: string[] = [];
        p.stdout?.on('data', (d) => log.push(String(d)));
        p.stderr?.on('data', (d) => log.push(String(d)));
        this.procs.push(p);
        const until = Date.now() + 10000;
        for (;;) {
          if (p.exitCode !== null) throw new Error(`conntrackd in ${name} exited ${p.exitCode}: ${log.join('')}`);
          if (spawnSync('ip', ['netns', 'exec', this.ns(name), 'conntrackd', '-C', conf, '-s'], { stdio: 'ignore' }).status === 0) break;
          if (Date.now() > until) throw new Error(`conntrackd in ${name} did not answer in 10 s: ${log.join('')}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  }

  /** A firewall fails silently: it drops everything, in and out, and its links stay up. */
  failFirewall(name: string): void {
    const ns = this.ns(name);
    inNs(ns, ['nft', 'add', 'table', 'inet', 'labfail']);
    for (const [chain, hook] of [
      ['pre', 'prerouting'],
      ['out', 'output'],
    ]) {
      inNs(ns, ['nft', 'add', 'chain', 'inet', 'labfail', chain, `{ type filter hook ${hook} priority -400; policy drop; }`]);
    }
  }

  reviveFirewall(name: string): void {
    inNs(this.ns(name), ['nft', 'delete', 'table', 'inet', 'labfail']);
  }

  /** Rewrite both nodes' config files with or without the sync groups (takes effect when the nodes restart). */
  writeNodeConfigs(syncGroups: boolean): void {
    for (const role of ['outside', 'inside'] as const) {
      // The topology's configs carry the groups; without them, the same configs minus `syncGroup`.
      const cfg = this.t.nodes[role];
      const firewalls = syncGroups ? cfg.firewalls : cfg.firewalls.map(({ syncGroup: _, ...rest }) => rest);
      writeFileSync(this.configPath(role), JSON.stringify({ ...cfg, firewalls }, null, 2));
    }
  }

  /** GET a text route (e.g. /metrics) of a node's API. */
  async apiText(role: NodeRole, path: string): Promise<string> {
    return (await this.request(role, 'GET', path)).text;
  }

  async api(role: NodeRole, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: any }> {
    const r = await this.request(role, method, path, body, token);
    return { status: r.status, body: r.text ? JSON.parse(r.text) : null };
  }

  /** The same request to every balancer node, each with its own API token (an operator's change sent to each node). */
  async apiAll(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }[]> {
    return (await this.apiEach(method, path, body)).map((a) => {
      if ('error' in a) throw a.error;
      return a;
    });
  }

  /** As apiAll, but a node that cannot answer (its controller is down) gives its error, and the others still answer. */
  async apiEach(method: string, path: string, body?: unknown): Promise<({ node: string; status: number; body: any } | { node: string; error: Error })[]> {
    const names = this.balancerNames();
    const answers = await Promise.allSettled(names.map((n) => this.api(n, method, path, body, this.t.balancers[n].api!.token!)));
    return answers.map((a, i) => (a.status === 'fulfilled' ? { node: names[i], ...a.value } : { node: names[i], error: a.reason as Error }));
  }

  private request(role: NodeRole, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; text: string }> {
    return new Promise((res, rej) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        {
          socketPath: this.socketPath(role),
          method,
          path,
          headers: { ...(data ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
        },
        (r) => {
          let s = '';
          r.on('data', (d) => (s += d));
          r.on('end', () => res({ status: r.statusCode ?? 0, text: s }));
        },
      );
      req.on('error', rej);
      req.end(data);
    });
  }

  /** Junk TCP from a host: `ack` (ACK-only from random ports of its own address) or `syn` (spoofed sources). */
  junk(host: string, kind: 'ack' | 'syn', dst: string, dport: number, count: number): void {
    inNs(this.host(host).ns, this.junkCommand(host, kind, dst, dport, count));
  }

  /** The command line of `junk`, to run it in the background; `rate` packets a second (0: as fast as it goes). */
  junkCommand(host: string, kind: 'ack' | 'syn', dst: string, dport: number, count: number, rate = 0): string[] {
    const h = this.host(host);
    const src = kind === 'ack' ? h.addr! : h.addr!.split('.').slice(0, 3).join('.');
    return ['/usr/bin/python3', SPOOF, kind, dst, String(dport), String(count), src, String(rate)];
  }

  /** The conntrack table of a namespace (TCP/UDP entries of one family, IPv4 by default). */
  kernelSessions(nsName: string, family: 'ipv4' | 'ipv6' = 'ipv4'): KernelSession[] {
    const out: KernelSession[] = [];
    for (const line of inNs(this.ns(nsName), ['conntrack', '-L', '-f', family]).split('\n')) {
      const m = /^(tcp|udp)\s+(\d+)\s.*?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)/.exec(line);
      if (!m) continue;
      const tcp = m[1] === 'tcp';
      out.push({
        proto: Number(m[2]),
        src: m[3],
        dst: m[4],
        sport: Number(m[5]),
        dport: Number(m[6]),
        mark: Number(/ mark=(\d+)/.exec(line)?.[1] ?? 0),
        answered: tcp ? line.includes('[ASSURED]') : !line.includes('[UNREPLIED]'),
        over: tcp && /^tcp\s+\d+\s+\d+\s+(TIME_WAIT|CLOSE)\s/.test(line),
      });
    }
    return out;
  }

  /**
   * The member an SLB node's conntrack sent each connection to a VIP, by the client's `address:port`: the reply
   * tuple's source of every entry whose original destination is `vip`:`port`.
   */
  slbDnat(nsName: string, protocol: 'tcp' | 'udp', vip: string, port: number): Map<string, string> {
    const out = new Map<string, string>();
    const listing = inNs(this.ns(nsName), ['conntrack', '-L', '-p', protocol, '--orig-dst', vip, '--dport', String(port)]);
    for (const line of listing.split('\n')) {
      const m = /src=(\S+) dst=\S+ sport=(\d+) dport=\d+ .*?src=(\S+) dst=\S+ sport=(\d+)/.exec(line);
      if (m) out.set(`${m[1]}:${m[2]}`, `${m[3]}:${m[4]}`);
    }
    return out;
  }

  /** The marks the kernel's bucket map of a balancer node holds right now (`nft list map inet fwlb buckets`). */
  bucketMarks(nsName: string): Set<number> {
    const j = JSON.parse(inNs(this.ns(nsName), ['nft', '-j', 'list', 'map', 'inet', 'fwlb', 'buckets']));
    const m = j.nftables.find((x: any) => x.map)?.map;
    return new Set((m?.elem ?? []).map((e: any) => Number(e[1])));
  }

  /** Per-firewall counters from the strict firewalls' named counters. */
  firewallCounters(): { id: string; newSessions: number; established: number; drops: number }[] {
    return this.t.hosts
      .filter((h) => h.role === 'firewall')
      .map((h) => {
        const j = JSON.parse(inNs(h.ns, ['nft', '-j', 'list', 'counters', 'table', 'inet', 'fwf']));
        const c: Record<string, number> = {};
        for (const it of j.nftables) if (it.counter) c[it.counter.name] = it.counter.packets;
        return { id: h.name, newSessions: c.new ?? 0, established: c.est ?? 0, drops: c.dropped ?? 0 };
      });
  }

  /**
   * Diagnostics for a test that hunts a rare fault (not for benchmarks: it costs every forwarded packet): each
   * balancer node remembers, per TCP flow and exit interface, when a packet of the flow first and last left through
   * it with a given mark (the mark picks the firewall)
   * (a table of the lab's own, `ip fwlbdiag`, beside fwlb's). `flowExits` reads it.
   */
  traceFlowExits(): void {
    const file = join(this.t.opts.runDir, 'lab-flow-exits.json');
    writeFileSync(file, JSON.stringify({ nftables: flowExitCommands(this.exitMarks()) }));
    for (const b of this.balancerNames()) inNs(this.ns(b), ['nft', '-j', '-f', file]);
    // FWLB_LAB_PCAP=DIR: every balancer node's interfaces captured as well (headers of the echo service's packets),
    // DIR/<node>-<interface>.pcap, for the packets of one flow in time order; the captures end with the lab.
    const dir = process.env.FWLB_LAB_PCAP;
    if (!dir) return;
    const links = (ns: string): { ifname: string; address: string }[] => JSON.parse(inNs(ns, ['ip', '-j', 'link', 'show']));
    const macs = this.t.hosts.filter((h) => h.role === 'firewall').flatMap((h) => links(h.ns).map((l) => `${l.address} ${h.name} ${l.ifname}`));
    writeFileSync(join(dir, 'firewall-macs.txt'), macs.join('\n') + '\n');
    for (const b of this.balancerNames()) {
      for (const { ifname } of links(this.ns(b)).filter((l) => l.ifname !== 'lo')) {
        const args = ['tcpdump', '-i', ifname, '-s', '96', '-B', '8192', '-U', '-w', join(dir, `${b}-${ifname}.pcap`), 'tcp', 'port', String(ECHO_PORT)];
        this.procs.push(spawnInNs(this.ns(b), args));
      }
    }
  }

  /**
   * Every forwarding host of the lab (nodes, firewalls, routers, SLB nodes) records the ICMP destination unreachable
   * messages it sends itself (a table of the lab's own, `ip fwlbicmp`): to whom, which code, the mark of the packet it
   * refused (the message carries it where net.ipv4.fwmark_reflect is 1, as on the balancer nodes), and the source port of the
   * packet it refused (a set of its own: nft 1.0.6 cannot list a concatenation holding a raw payload field).
   * `unreachables` reads it: a connection that failed with ENETUNREACH or EHOSTUNREACH was refused by one of them.
   */
  traceUnreachables(): void {
    // Declared, deleted and made again: a second call starts afresh instead of adding the rule twice.
    const text =
      'table ip fwlbicmp {}\ndelete table ip fwlbicmp\ntable ip fwlbicmp {\n' +
      '  set sent { typeof ip daddr . icmp code . meta mark; flags timeout; timeout 600s; size 65536; }\n' +
      '  set sport { typeof @th,224,16; flags timeout; timeout 600s; size 65536; }\n' +
      // The output hook: the host's own messages, not those it forwards.
      '  chain out { type filter hook output priority 0; policy accept;\n' +
      '    icmp type destination-unreachable add @sent { ip daddr . icmp code . meta mark } add @sport { @th,224,16 }\n  }\n}\n';
    for (const h of this.forwarders()) inNs(h.ns, ['nft', '-f', '-'], text);
  }

  private forwarders() {
    return this.t.hosts.filter((h) => ['outside', 'inside', 'firewall', 'slb', 'router'].includes(h.role));
  }

  /** What `traceUnreachables` recorded: `ob1 sent net-unreachable to 10.0.1.10 (3 s ago) about source ports 40000`. */
  unreachables(): string[] {
    const out: string[] = [];
    const list = (ns: string, set: string) => JSON.parse(inNs(ns, ['nft', '-j', 'list', 'set', 'ip', 'fwlbicmp', set])).nftables.find((x: any) => x.set)?.set;
    for (const h of this.forwarders()) {
      const sent = list(h.ns, 'sent');
      if (!sent?.elem?.length) continue;
      const ports = (list(h.ns, 'sport')?.elem ?? []).map((e: any) => e.elem.val);
      for (const e of sent.elem)
        out.push(
          `${h.name} sent ${e.elem.val.concat[1]} to ${e.elem.val.concat[0]} about a packet marked 0x${Number(e.elem.val.concat[2]).toString(16)} (${Math.round(sent.timeout - e.elem.expires)} s ago)`,
        );
      out.push(`${h.name}: about source ports ${ports.join(' ')}`);
    }
    return out;
  }

  /** The marks the exits are told apart by: each firewall's (fwlb's slots, 0x10000 + its index), then 0 (none). */
  private exitMarks(): number[] {
    return [...this.t.hosts.filter((h) => h.role === 'firewall').map((_, i) => 0x10000 + i), 0];
  }

  /** Where each balancer node sent the TCP flows of these client ports: `ob2 <flow> via tr0 mark 0x10001 first 12 s ago, last 10 s ago`. */
  flowExits(ports: number[]): string[] {
    const out: string[] = [];
    // Ages are as of this call: each listing takes a while, and an element's expiry counts down meanwhile.
    const t0 = Date.now();
    for (const b of this.balancerNames()) {
      const seen = new Map<string, { first?: number; last?: number }>();
      for (const mark of this.exitMarks()) {
        for (const when of ['first', 'last'] as const) {
          const j = JSON.parse(inNs(this.ns(b), ['nft', '-j', 'list', 'set', 'ip', 'fwlbdiag', `${when}_${mark.toString(16)}`]));
          const s = j.nftables.find((x: any) => x.set)?.set;
          for (const e of s?.elem ?? []) {
            const [src, sport, dst, dport, oif] = e.elem.val.concat;
            if (!ports.includes(sport) && !ports.includes(dport)) continue;
            const k = `${src}:${sport}>${dst}:${dport} via ${oif} mark ${mark ? `0x${mark.toString(16)}` : '0 or another'}`;
            seen.set(k, { ...seen.get(k), [when]: Math.round(s.timeout - e.elem.expires - (Date.now() - t0) / 1000) });
          }
        }
      }
      for (const [k, v] of seen) out.push(`${b} ${k} first ${v.first} s ago, last ${v.last} s ago`);
    }
    return out;
  }

  /**
   * What every balancer node and firewall holds in conntrack (state, mark, timeout) for the TCP flows of these client
   * ports to `dport`, and where each node sent them (with `traceFlowExits`): a test's message when a flow failed.
   */
  flowTraces(ports: number[], dport: number): string {
    const names = [...this.balancerNames(), ...this.t.hosts.filter((h) => h.role === 'firewall').map((h) => h.name)];
    const lines = Object.fromEntries(
      names.map((n) => [
        n,
        ['--dport', '--sport']
          .flatMap((dir) => inNs(this.ns(n), ['conntrack', '-L', '-p', 'tcp', dir, String(dport)]).split('\n'))
          .filter((l) => ports.some((p) => p && l.includes(`port=${p} `)))
          .map((l) => l.replace(/\s+/g, ' ')),
      ]),
    );
    return JSON.stringify({ ...lines, exits: this.flowExits(ports) });
  }

  /**
   * The TCP flows each firewall dropped packets of since the last reset (firewall.nft remembers them for 10 minutes):
   * `fw1 new 10.0.1.10:40000>203.0.113.10:7 (3 s ago)`, one line per flow, `invalid` when outside its session's
   * state or window. For a test's message when it counts drops.
   */
  firewallDropFlows(): string[] {
    const out: string[] = [];
    for (const h of this.t.hosts.filter((x) => x.role === 'firewall')) {
      for (const set of DROP_SETS) {
        const j = JSON.parse(inNs(h.ns, ['nft', '-j', 'list', 'set', 'inet', 'fwf', set]));
        const s = j.nftables.find((x: any) => x.set)?.set;
        for (const e of s?.elem ?? []) {
          const [src, sport, dst, dport] = e.elem.val.concat;
          out.push(`${h.name} ${set.slice(4).replace('6', '')} ${hostPort(src, sport)}>${hostPort(dst, dport)} (${s.timeout - e.elem.expires} s ago)`);
        }
      }
    }
    return out;
  }

  /**
   * Clients behave like a carrier-grade NAT or a forward proxy: each picks its source ports from `ports` ports only,
   * so a 5-tuple comes back within a second or two of its last use (tcp_tw_reuse is on). `null` restores the wide range.
   */
  clientPorts(ports: number | null): void {
    const range = ports === null ? WIDE_PORTS : `40000 ${40000 + ports - 1}`;
    for (const h of this.t.hosts.filter((x) => x.role === 'client')) inNs(h.ns, ['sysctl', '-qw', `net.ipv4.ip_local_port_range=${range}`]);
  }

  resetFirewallCounters(): void {
    for (const h of this.t.hosts.filter((x) => x.role === 'firewall')) {
      inNs(h.ns, ['nft', 'reset', 'counters', 'table', 'inet', 'fwf']);
      for (const set of DROP_SETS) inNs(h.ns, ['nft', 'flush', 'set', 'inet', 'fwf', set]);
    }
  }

  /** Stop everything and delete every namespace of this run. Safe to call twice. */
  teardown(keepRunDir = false): void {
    for (const p of this.procs) {
      try {
        p.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    this.procs = [];
    const mine = listNs().filter((n) => n.startsWith(this.t.opts.prefix + '-'));
    for (const n of mine) deleteNs(n);
    if (!keepRunDir) rmSync(this.t.opts.runDir, { recursive: true, force: true });
  }
}

/**
 * Polls `ok` every `everyMs` until it holds; returns how long that took. On timeout, throws naming `what` (a function
 * is called then, so it can show the last state it saw).
 */
export async function waitUntil(ok: () => boolean | Promise<boolean>, ms: number, what: string | (() => string), everyMs = 50): Promise<number> {
  const t0 = Date.now();
  while (!(await ok())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return Date.now() - t0;
}

/**
 * nft commands of the lab's exit trace: per mark (the last one also takes every mark not listed), two sets of
 * (flow, exit interface), one filled at the flow's first packet out, one refreshed at every packet. One set per mark
 * because nft 1.0.6 cannot list a set whose concatenation holds a mark.
 */
function flowExitCommands(marks: number[]): unknown[] {
  const t = { family: 'ip', table: 'fwlbdiag' };
  const key = {
    concat: [
      ['ip', 'saddr'],
      ['tcp', 'sport'],
      ['ip', 'daddr'],
      ['tcp', 'dport'],
    ]
      .map(([protocol, field]) => ({ payload: { protocol, field } }))
      .concat([{ meta: { key: 'oifname' } } as any]),
  };
  const cmds: unknown[] = [
    { add: { table: { family: 'ip', name: 'fwlbdiag' } } },
    { add: { chain: { ...t, name: 'post', type: 'filter', hook: 'postrouting', prio: 0, policy: 'accept' } } },
  ];
  const listed = marks.slice(0, -1);
  marks.forEach((mark, i) => {
    const which =
      i < listed.length
        ? { match: { op: '==', left: { meta: { key: 'mark' } }, right: mark } }
        : { match: { op: '!=', left: { meta: { key: 'mark' } }, right: { set: listed } } };
    for (const [when, op] of [
      ['first', 'add'],
      ['last', 'update'],
    ]) {
      const name = `${when}_${mark.toString(16)}`;
      cmds.push({
        add: { set: { ...t, name, type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service', 'ifname'], flags: ['timeout'], timeout: 600, size: 65536 } },
      });
      cmds.push({
        add: {
          rule: {
            ...t,
            chain: 'post',
            expr: [{ match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } }, which, { set: { op, elem: key, set: `@${name}` } }],
          },
        },
      });
    }
  });
  return cmds;
}

/** `ip route` arguments for one next hop or a multipath route over several. */
/** `ip route add|replace` of a lab route; an IPv6 next hop makes it an IPv6 route ("default" included). */
export function routeCmd(op: 'add' | 'replace', dst: string, via: string | string[]): string[] {
  return ['ip', ...([via].flat()[0].includes(':') ? ['-6'] : []), 'route', op, dst, ...viaArgs(via)];
}

export function viaArgs(via: string | string[]): string[] {
  if (typeof via === 'string') return ['via', via];
  return via.length === 1 ? ['via', via[0]] : via.flatMap((v) => ['nexthop', 'via', v]);
}

export function waitForLine(p: ChildProcess, re: RegExp, ms: number, what: string, log: string[] = []): Promise<void> {
  return new Promise((resolveP, reject) => {
    let buf = '';
    const timer = setTimeout(() => done(new Error(`${what} did not start within ${ms} ms: ${buf}${log.join('\n')}`)), ms);
    const onData = (d: Buffer) => {
      buf += d.toString();
      if (buf.split('\n').some((l) => re.test(l))) done();
    };
    const onExit = (code: number | null) => done(new Error(`${what} exited with ${code}: ${buf}${log.join('\n')}`));
    function done(err?: Error) {
      clearTimeout(timer);
      p.stdout?.off('data', onData);
      p.stderr?.off('data', onData);
      p.off('exit', onExit);
      if (err) reject(err);
      else resolveP();
    }
    p.stdout?.on('data', onData);
    p.stderr?.on('data', onData);
    p.on('exit', onExit);
  });
}

/** A prefix unique to this process, short enough for namespace names. */
export function uniquePrefix(tag = 'fl'): string {
  return `${tag}${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
}
