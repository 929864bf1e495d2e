// The balancer's `bgp` section: what this node announces to which peers through the routing daemon, and how; pure.
import { canonicalAddress, formatAddress, familyOf } from '@fwlb/flowhash';
import { FieldProblem } from './errors';
import { parsePrefix } from './address-class';

export interface BgpPeerConfig {
  /** A name for the session (letters, digits, `_`): the daemon's protocol is `fwlb_<name>`. */
  name: string;
  /** The peer's address on a directly connected network; its family is the family of what this session carries. */
  address: string;
  asn: number;
  /** The prefixes announced to this peer, all of the peer address's family (`0.0.0.0/0` for a default route). */
  announce: string[];
  /** Run BFD on this session (the peer must too). @default true */
  bfd?: boolean;
}

export interface BgpConfig {
  /** The routing daemon fwlb writes a configuration for. Only BIRD 2 today. @default "bird" */
  daemon?: 'bird';
  /** This node's AS number. */
  asn: number;
  /** The BGP router id (an IPv4 address of this node, unique among the peers). */
  routerId: string;
  /** The file fwlb writes the daemon's whole configuration to. @default "/etc/bird/bird.conf" */
  configFile?: string;
  /** The daemon's control socket. @default "/run/bird/bird.ctl" */
  controlSocket?: string;
  /**
   * The kernel routing table fwlb keeps the announced prefixes in (blackhole routes, never used for forwarding: no ip
   * rule selects it). The daemon learns them from there, so a controller that dies leaves them announced. @default 250
   */
  announceTable?: number;
  /** BFD on the sessions that have it: the interval (ms) and the missed packets that make a peer dead. */
  bfd?: { intervalMs?: number; multiplier?: number };
  /** BGP hold time (s); BFD detects a dead peer sooner, the hold time is the backstop. @default 9 */
  holdTimeSeconds?: number;
  /** AS-path prepends of a less preferred announcement: a drained node's, an unfit node's. @default {drained: 2, unfit: 4} */
  prepend?: { drained?: number; unfit?: number };
  peers: BgpPeerConfig[];
}

export interface ResolvedBgpPeer {
  name: string;
  address: string;
  family: 4 | 6;
  asn: number;
  announce: string[];
  bfd: boolean;
}

export interface ResolvedBgp {
  daemon: 'bird';
  asn: number;
  routerId: string;
  configFile: string;
  controlSocket: string;
  announceTable: number;
  bfd: { intervalMs: number; multiplier: number };
  holdTimeSeconds: number;
  prepend: { drained: number; unfit: number };
  peers: ResolvedBgpPeer[];
}

export const BGP_DEFAULTS = {
  configFile: '/etc/bird/bird.conf',
  controlSocket: '/run/bird/bird.ctl',
  announceTable: 250,
  bfd: { intervalMs: 100, multiplier: 3 },
  holdTimeSeconds: 9,
  prepend: { drained: 2, unfit: 4 },
};

const KERNEL_TABLES: Record<number, string> = { 253: 'default', 254: 'main', 255: 'local' };

const asn = { type: 'integer', minimum: 1, maximum: 4294967294 } as const;
const path = { type: 'string', pattern: '^/[^\\x00-\\x1f"]{1,4095}$' } as const;

export const bgpSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['asn', 'routerId', 'peers'],
  properties: {
    daemon: { enum: ['bird'] },
    asn,
    routerId: { type: 'string', format: 'ipv4' },
    configFile: path,
    controlSocket: path,
    announceTable: { type: 'integer', minimum: 1, maximum: 0x7fffffff },
    bfd: {
      type: 'object',
      additionalProperties: false,
      properties: { intervalMs: { type: 'integer', minimum: 10, maximum: 10000 }, multiplier: { type: 'integer', minimum: 2, maximum: 255 } },
    },
    holdTimeSeconds: { type: 'integer', minimum: 3, maximum: 65535 },
    prepend: {
      type: 'object',
      additionalProperties: false,
      properties: { drained: { type: 'integer', minimum: 1, maximum: 16 }, unfit: { type: 'integer', minimum: 1, maximum: 16 } },
    },
    peers: {
      type: 'array',
      minItems: 1,
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'address', 'asn', 'announce'],
        properties: {
          name: { type: 'string', pattern: '^[A-Za-z0-9_]{1,32}$' },
          address: { type: 'string', format: 'IPv4 or IPv6' },
          asn,
          announce: { type: 'array', minItems: 1, maxItems: 256, uniqueItems: true, items: { type: 'string', minLength: 2, maxLength: 43 } },
          bfd: { type: 'boolean' },
        },
      },
    },
  },
} as const;

/** `a.b.c.d/len` or `2001:db8::/len` with its length always written (the daemon's prefix sets need it). */
function fullPrefix(s: string): { text: string; family: 4 | 6 } | { error: string } {
  const p = parsePrefix(s);
  if ('error' in p) return p;
  return { text: `${formatAddress(p.bytes)}/${p.len}`, family: p.bytes.length === 4 ? 4 : 6 };
}

/** The section with its defaults, or the problems found (fields under `/bgp`). */
export function resolveBgp(c: BgpConfig, owned: { base: number; size: number }, problems: FieldProblem[]): ResolvedBgp | null {
  const before = problems.length;
  const names = new Map<string, number>();
  const addrs = new Map<string, number>();
  const peers: ResolvedBgpPeer[] = c.peers.map((p, i) => {
    const at = `/bgp/peers/${i}`;
    if (names.has(p.name)) problems.push({ field: `${at}/name`, message: `duplicate peer name "${p.name}" (also ${`/bgp/peers/${names.get(p.name)}`}/name)` });
    else names.set(p.name, i);
    const family = familyOf(p.address);
    const address = canonicalAddress(p.address);
    if (addrs.has(address))
      problems.push({ field: `${at}/address`, message: `duplicate peer address ${address} (also /bgp/peers/${addrs.get(address)}/address)` });
    else addrs.set(address, i);
    const announce: string[] = [];
    p.announce.forEach((a, j) => {
      const q = fullPrefix(a);
      if ('error' in q) problems.push({ field: `${at}/announce/${j}`, message: q.error });
      else if (q.family !== family)
        problems.push({
          field: `${at}/announce/${j}`,
          message: `${a} is IPv${q.family} but the session to ${p.address} is IPv${family}: give an IPv${q.family} peer for IPv${q.family} prefixes`,
        });
      else announce.push(q.text);
    });
    return { name: p.name, address, family, asn: p.asn, announce, bfd: p.bfd ?? true };
  });
  const table = c.announceTable ?? BGP_DEFAULTS.announceTable;
  if (KERNEL_TABLES[table])
    problems.push({ field: '/bgp/announceTable', message: `${table} is the kernel's ${KERNEL_TABLES[table]} table: its routes would forward` });
  if (table >= owned.base && table < owned.base + owned.size)
    problems.push({
      field: '/bgp/announceTable',
      message: `${table} is one of the firewalls' routing tables (/tables: ${owned.base}..${owned.base + owned.size - 1})`,
    });
  const prepend = { ...BGP_DEFAULTS.prepend, ...c.prepend };
  if (prepend.unfit < prepend.drained)
    problems.push({ field: '/bgp/prepend/unfit', message: `must be at least prepend.drained (${prepend.drained}): an unfit node is the least preferred` });
  if (problems.length > before) return null;
  return {
    daemon: c.daemon ?? 'bird',
    asn: c.asn,
    routerId: c.routerId,
    configFile: c.configFile ?? BGP_DEFAULTS.configFile,
    controlSocket: c.controlSocket ?? BGP_DEFAULTS.controlSocket,
    announceTable: table,
    bfd: { ...BGP_DEFAULTS.bfd, ...c.bfd },
    holdTimeSeconds: c.holdTimeSeconds ?? BGP_DEFAULTS.holdTimeSeconds,
    prepend,
    peers,
  };
}
