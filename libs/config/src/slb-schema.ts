// ajv schemas and types of the SLB tier: its config file, VIPs and members (also the API bodies); pure layer of libs/config.
import { checkSpecSchema, timersSchema, CheckSpec, TimerConfig } from '@fwlb/health';
import { apiSchema, ApiTls } from './balancer-schema';

/** Admin state of a member: `drain` takes no new sessions while established ones finish. */
export type MemberState = 'enabled' | 'drain';

export interface MemberConfig {
  /** The real server's address (RIP), IPv4 or IPv6: an L4 VIP's members are in the VIP's family, an L7 VIP's may be in either. */
  address: string;
  /** The real server's port; may differ from the VIP's (port translation). */
  port: number;
  /** Relative share of new sessions, 1-100. @default 1 */
  weight?: number;
  /** @default "enabled" */
  state?: MemberState;
  /** L7 VIPs only (`mode: "http"`): the pool (`pools[].name`) this member serves. */
  pool?: string;
  /**
   * VIPs HAProxy serves only (`mode` `http` or `tcp`): HAProxy opens each connection to this member with a PROXY protocol header (`v1` text, `v2` binary)
   * that carries the client's address and port; the member must expect it on this port. fwlb's checks of the member
   * send a health check's header too (`PROXY UNKNOWN`, or a v2 LOCAL command).
   */
  proxyProtocol?: 'v1' | 'v2';
}

/** L7 scheduler of a pool: round robin, least connections, or a hash of the client's address. */
export type L7Scheduler = 'rr' | 'leastconn' | 'source';

/** A server pool of an L7 VIP; its members are the VIP's members whose `pool` names it. */
export interface PoolConfig {
  name: string;
  /** @default "rr" */
  scheduler?: L7Scheduler;
  /** `cookie`: an inserted cookie keeps a client on its member; `source`: the client's address does. @default "none" */
  persistence?: 'none' | 'cookie' | 'source';
  /** The pool's own health check and timers; absent: the VIP's. */
  check?: CheckSpec;
  timers?: TimerConfig;
}

/**
 * One L7 rule: every field given must match (host exact or `*.suffix`, path by prefix or by a regex of the whole path,
 * a header's exact value); the first rule that matches picks the pool. At least one field.
 */
export interface RuleConfig {
  host?: string;
  path?: string;
  pathRegex?: string;
  header?: { name: string; value: string };
  pool: string;
}

export interface VipConfig {
  /** Stable id, used in the API path and in nft object names. */
  id: string;
  /** IPv4 or IPv6; the API prints IPv6 in its RFC 5952 form. */
  address: string;
  port: number;
  protocol: 'tcp' | 'udp';
  /**
   * `rr`: round robin. `sh`: source-hash persistence (one client address sticks to one member). `flow`: a consistent
   * hash (Maglev) of the connection's addresses, ports and protocol: every SLB node with the same members, health and
   * `seed` picks the same member for a connection, so a connection the routers move to another SLB node keeps its
   * member. `sh` has that property too, per client address. @default "rr"
   */
  scheduler?: 'sh' | 'rr' | 'flow';
  /** The pool's health check; the member's port is used when the check names none. @default {kind: "tcp"} */
  check?: CheckSpec;
  /** @default {interval: 1000, response: 500, retries: 3, deadInterval: 2000, rise: 2} */
  timers?: TimerConfig;
  /**
   * Panic threshold of the pool (Envoy's): when fewer than this share of the enabled members are up, the checks
   * are not believed and every enabled member takes new sessions (fail open). 0: no panic; with no member up the
   * VIP answers RST (TCP) or port unreachable (UDP) (fail closed). An L7 VIP applies it to each of its pools (a pool
   * with no member up answers 503). @default 0
   */
  panicThreshold?: number;
  members: MemberConfig[];
  /**
   * L4: one-arm. The connections leave towards the members with this SLB node's address on the way out (`{}`) or
   * with `address`, so the members answer the node without a route back through it; they see that address, not the
   * client's. In an SLB group, give the address the group's nodes share (its VRRP address on the members' side):
   * the kernel keeps the client's port when it can, so a connection keeps its tuple on the node that takes over.
   */
  snat?: { address?: string };
  /**
   * `http`: an L7 VIP served by HAProxy (rules to pools). `tcp`: a TCP service that HAProxy proxies connection by
   * connection (any protocol over TCP): members in either family, the client's address carried by the PROXY protocol
   * where a member asks for it (`proxyProtocol`), `scheduler` `rr` or `sh`. Absent or `l4`: nft DNAT. @default "l4"
   */
  mode?: 'l4' | 'http' | 'tcp';
  /** L7: the pools, rules in order, and the pool of requests no rule matches. */
  pools?: PoolConfig[];
  rules?: RuleConfig[];
  defaultPool?: string;
  /** L7: add `X-Forwarded-For` with the client's address. @default true */
  forwardedFor?: boolean;
  /** L7: terminate TLS with this PEM file (certificate and key); the VIP then speaks HTTPS. */
  tls?: { certificate: string };
}

export interface SlbConfig {
  /** Name shown in /status. @default "slb" */
  name?: string;
  /** Interface that holds the VIP addresses (IPv4 added as /32, labelled `<interface>:vip`; IPv6 as /128 with metric 6174). */
  interface: string;
  /** The nft tables fwlb owns for the SLB: `ip <table>` for IPv4 VIPs, `ip6 <table>` for IPv6 ones. @default "fwlb_slb" */
  table?: string;
  /** Seed of the `sh` and `flow` schedulers' hash: the same on every SLB node of a tier. @default 0 */
  seed?: number;
  api?: { listen?: string; token?: string; tokenFile?: string; tls?: ApiTls };
  /** VIPs changed through the API are saved here (atomically) and loaded at start; absent: API changes last until restart. */
  stateFile?: string;
  /** Seconds between periodic full reconciles. @default 10 */
  resyncSeconds?: number;
  /** Seconds between background reads of the kernel's counters; API reads answer from memory. @default 2 */
  countersSeconds?: number;
  vips?: VipConfig[];
  /**
   * What this node's health checks may cost. `checksPerSecond`: the most checks per second the VIPs may ask for (each
   * probe at its shortest period); a config or API change over it is refused. @default 6000. `regexMsPerSecond`:
   * time per second content regexes may take, summed over every check; past it, checks of the VIPs over their share
   * are unknown. @default 200
   */
  checkBudget?: { checksPerSecond?: number; regexMsPerSecond?: number };
  /**
   * The L7 data plane: where fwlb-slb writes HAProxy's config, maps and sockets, and which binary it runs. `peers`:
   * the SLB nodes of a group, this node included (its entry carries this node's `name`): HAProxy's peers protocol
   * shares the L7 VIPs' stick tables among them (source persistence, per-rule request counters), over TCP to each
   * peer's `address` and `port` (default 10000). Every node of the group lists the same peers.
   */
  haproxy?: { dir?: string; binary?: string; peers?: { name: string; address: string; port?: number }[] };
}

/** An IPv4 or IPv6 address (the format is registered by validate-slb.ts). */
const ipAddress = { type: 'string', format: 'IPv4 or IPv6' } as const;
const port = { type: 'integer', minimum: 1, maximum: 65535 } as const;

export const memberSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['address', 'port'],
  properties: {
    address: ipAddress,
    port,
    weight: { type: 'integer', minimum: 1, maximum: 100 },
    state: { enum: ['enabled', 'drain'] },
    pool: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,31}$' },
    proxyProtocol: { enum: ['v1', 'v2'] },
  },
} as const;

const poolName = { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,31}$' } as const;

export const poolSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: poolName,
    scheduler: { enum: ['rr', 'leastconn', 'source'] },
    persistence: { enum: ['none', 'cookie', 'source'] },
    check: checkSpecSchema,
    timers: timersSchema,
  },
} as const;

// Host names, paths and header values go into HAProxy's maps as escaped regexes; the patterns keep out whitespace,
// control characters and what HTTP itself does not allow there.
export const ruleSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['pool'],
  properties: {
    host: {
      type: 'string',
      maxLength: 253,
      pattern: '^(\\*\\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$',
    },
    path: { type: 'string', maxLength: 256, pattern: "^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$" },
    pathRegex: { type: 'string', minLength: 1, maxLength: 256, pattern: '^[\\x21-\\x7e]+$' },
    header: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'value'],
      properties: {
        name: { type: 'string', pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$" },
        value: { type: 'string', maxLength: 256, pattern: '^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$' },
      },
    },
    pool: poolName,
  },
} as const;

/** A partial member update (PATCH): weight and state only; address and port name the member. */
export const memberPatchSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { weight: memberSchema.properties.weight, state: memberSchema.properties.state },
} as const;

export const vipSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'address', 'port', 'protocol', 'members'],
  properties: {
    id: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,31}$' },
    address: ipAddress,
    port,
    protocol: { enum: ['tcp', 'udp'] },
    scheduler: { enum: ['sh', 'rr', 'flow'] },
    check: checkSpecSchema,
    timers: timersSchema,
    panicThreshold: { type: 'number', minimum: 0, maximum: 1 },
    members: { type: 'array', maxItems: 256, items: memberSchema },
    snat: { type: 'object', additionalProperties: false, properties: { address: ipAddress } },
    mode: { enum: ['l4', 'http', 'tcp'] },
    pools: { type: 'array', minItems: 1, maxItems: 64, items: poolSchema },
    rules: { type: 'array', maxItems: 256, items: ruleSchema },
    defaultPool: poolName,
    forwardedFor: { type: 'boolean' },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['certificate'],
      properties: { certificate: { type: 'string', pattern: '^/[!-~]{1,255}$' } },
    },
  },
} as const;

export const slbSchema = {
  $id: 'fwlb/slb-config',
  type: 'object',
  additionalProperties: false,
  required: ['interface'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 64 },
    // The address label is "<interface>:vip" and labels are at most 15 characters.
    interface: { type: 'string', pattern: '^[A-Za-z0-9_.@-]{1,11}$' },
    table: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_]{0,31}$' },
    seed: { type: 'integer', minimum: 0, maximum: 0xffffffff },
    api: apiSchema,
    stateFile: { type: 'string', minLength: 1 },
    resyncSeconds: { type: 'number', minimum: 1, maximum: 3600 },
    countersSeconds: { type: 'number', minimum: 0.2, maximum: 3600 },
    vips: { type: 'array', maxItems: 4096, items: vipSchema },
    checkBudget: {
      type: 'object',
      additionalProperties: false,
      properties: {
        checksPerSecond: { type: 'integer', minimum: 1, maximum: 1000000 },
        regexMsPerSecond: { type: 'integer', minimum: 1, maximum: 1000 },
      },
    },
    haproxy: {
      type: 'object',
      additionalProperties: false,
      properties: {
        dir: { type: 'string', pattern: '^/[A-Za-z0-9._/-]{1,200}$' },
        binary: { type: 'string', minLength: 1, maxLength: 255 },
        peers: {
          type: 'array',
          maxItems: 32,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'address'],
            properties: { name: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,32}$' }, address: ipAddress, port },
          },
        },
      },
    },
  },
} as const;
