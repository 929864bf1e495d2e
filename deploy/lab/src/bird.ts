// The lab's BGP (node redundancy with `routing: 'bgp'`): the routers' and firewalls' BIRD configurations and the
// nodes' bgp sections; pure layer of deploy/lab. The nodes' BIRD configuration is fwlb's own (libs/routing).
import { join } from 'node:path';
import type { BgpConfig } from '@fwlb/config';

/** A BIRD the lab runs: in `ns`, from `file` (for a node: a bootstrap that fwlb replaces), control socket `socket`. */
export interface LabBird {
  name: string;
  ns: string;
  file: string;
  socket: string;
  config: string;
}

export const LAB_ASN = { router: 65000, outside: 65001, inside: 65002, slb: 65003, firewall: (k: number) => 65100 + k };

/** BFD in the lab: 100 ms × 3, the figure the production docs start from. */
export const LAB_BFD = { intervalMs: 100, multiplier: 3 };

export interface LabPeer {
  name: string;
  address: string;
  asn: number;
}

const family = (a: string) => (a.includes(':') ? 6 : 4);

/**
 * A router's or a firewall's BIRD: it learns the nodes' prefixes over BGP with BFD and installs them as multipath
 * routes (one next hop per node that announces the best path).
 */
export function peerRouterConfig(routerId: string, asn: number, peers: LabPeer[]): string {
  const lines = [
    `router id ${routerId};`,
    `protocol device { scan time 10; }`,
    `protocol bfd { interface "*" { min rx interval ${LAB_BFD.intervalMs} ms; min tx interval ${LAB_BFD.intervalMs} ms; multiplier ${LAB_BFD.multiplier}; }; }`,
  ];
  for (const f of [4, 6].filter((x) => peers.some((p) => family(p.address) === x)))
    lines.push(`protocol kernel kernel${f} { ipv${f} { import none; export all; }; merge paths on limit 16; }`);
  for (const p of peers)
    lines.push(
      `protocol bgp ${p.name} {`,
      `  local as ${asn}; neighbor ${p.address} as ${p.asn}; direct; bfd on;`,
      `  hold time 9; keepalive time 3; connect retry time 2; error wait time 1, 10;`,
      `  ipv${family(p.address)} { import all; export none; };`,
      `}`,
    );
  return lines.join('\n') + '\n';
}

/** What a node's BIRD starts from before fwlb loads its own configuration (Debian's package ships one too). */
export const bootstrapConfig = (routerId: string) => `router id ${routerId};\nprotocol device { }\n`;

/** A node's bgp section: one session per peer address, each announcing the prefixes of its family. */
export function nodeBgp(
  runDir: string,
  node: string,
  asn: number,
  routerId: string,
  peers: { name: string; address: string; asn: number; announce: string[] }[],
): BgpConfig {
  return {
    asn,
    routerId,
    configFile: join(runDir, `bird-${node}.conf`),
    controlSocket: join(runDir, `bird-${node}.ctl`),
    bfd: LAB_BFD,
    peers: peers.map((p) => ({ ...p, announce: p.announce.filter((a) => family(a) === family(p.address)) })).filter((p) => p.announce.length),
  };
}
