// ajv schema and types of the balancer node's config file; pure layer of libs/config.
import { checkSpecSchema, timersSchema, CheckSpec, TimerConfig } from '@fwlb/health';
import { bgpSchema, BgpConfig } from './bgp';

export interface FirewallConfig {
  /** Stable firewall id; the bucket table is keyed by it. */
  id: string;
  /** The firewall's address on this node's side, used as the next hop of its routing table. */
  nextHop: string;
  /**
   * The firewall's IPv6 address on this node's side (global, or link-local: the route names `interface`). Give it
   * on every firewall or on none: without it, IPv6 is not steered. @default null
   */
  nextHop6?: string;
  /** The interface on this node that leads to the firewall; packets arriving on it are learned as this firewall's. */
  interface: string;
  /** Optional MAC of the firewall, for shared segments: learning then matches the source MAC as well. */
  mac?: string;
  /** Administratively enabled (default true). */
  enabled?: boolean;
  /**
   * Sync group: firewalls with the same name hold each other's sessions (conntrackd FTFW, FGSP, pfsync).
   * A firewall that fails gives its buckets to the live members of its group first. The same on every node.
   */
  syncGroup?: string;
  /**
   * The firewall's own NAT addresses (IPv4 or IPv6 prefixes, or addresses): the pools it SNATs connections to and the addresses it
   * publishes services on (DNAT). A packet from the side to one of them goes to this firewall before any hash or
   * state: only this firewall can translate it back. The same list on both sides' nodes. @default []
   */
  natPools?: string[];
}

export interface SessionTableConfig {
  /** `redis://host:port`, `rediss://` for TLS, or `unix:/path/to/redis.sock`. @default "redis://127.0.0.1:6379" */
  url?: string;
  /** Sentinel mode: the sentinels and the primary's name (take the place of `url`). */
  sentinels?: { host: string; port: number }[];
  /** Redis Cluster mode: some of the cluster's nodes (the client learns the rest); takes the place of `url`. */
  cluster?: { host: string; port: number }[];
  primaryName?: string;
  password?: string;
  tls?: boolean;
  /** PEM file of the CA that signed Redis's certificate. */
  tlsCaFile?: string;
  /** Prefix of every key; the same on both nodes. @default "fwlb:" */
  keyPrefix?: string;
  /** Milliseconds between batched writes. @default 100 */
  flushMs?: number;
  /** Seconds between full re-syncs from a conntrack dump (they also refresh expiries). @default 30 */
  resyncSeconds?: number;
  /**
   * Seconds between this node's health-view heartbeats (the agreement): a view older than three is stale, so a node
   * that died stops vetoing within three to four heartbeats; the leader lock lives three. @default 2
   */
  heartbeatSeconds?: number;
  /** Receive buffer of the conntrack event socket; the kernel drops events when it is full (then a re-sync follows). @default 8388608 */
  eventBufferBytes?: number;
}

export interface ApiTls {
  certFile: string;
  keyFile: string;
}

export interface IdRange {
  base: number;
  size: number;
}

export interface BalancerConfig {
  role: 'outside' | 'inside';
  /** Node name, shown in /status. @default the role */
  name?: string;
  /** The client-side (outside) or server-side (inside) interface: packets entering here are hashed. */
  sideInterface: string;
  firewalls: FirewallConfig[];
  hash: {
    /** Seed shared by both nodes: both must hash a flow to the same bucket. */
    seed: number;
    /** Bucket count M, prime. @default 251 */
    buckets?: number;
    /**
     * `canonical` (default) hashes (outer, inner) on both nodes. `packet` hashes (source, destination) as seen;
     * it is asymmetric on purpose and exists only to demonstrate the failure fwlb prevents.
     */
    order?: 'canonical' | 'packet';
  };
  /** fwmark range owned by fwlb: firewall i (0-based, config order) gets mark base+i. @default {base: 0x10000, size: 256} */
  marks?: IdRange;
  /** Routing-table id range: firewall i gets table base+i. @default {base: 1000, size: 256} */
  tables?: IdRange;
  /** ip rule priority range: firewall i gets priority base+i. @default {base: 10000, size: 256} */
  rulePriorities?: IdRange;
  /** Record the firewall a flow arrives from in its ct mark (layer 1). @default true */
  ingressLearning?: boolean;
  api?: {
    /** "host:port" or "unix:/path". @default "127.0.0.1:8480" */
    listen?: string;
    /** Bearer token required for mutations. */
    token?: string;
    /** File holding the bearer token (first line). */
    tokenFile?: string;
    /**
     * Serve HTTPS with this certificate (PEM, with its chain) and key. Required when the API listens on an address
     * other than loopback and a token is set: the token would otherwise cross the network in clear.
     */
    tls?: ApiTls;
  };
  /** Seconds between periodic full reconciles. @default 10 */
  resyncSeconds?: number;
  /**
   * Firewall health: each firewall is probed along the path to the twin node's probe address, with probes
   * carrying that firewall's mark, so a firewall is up only when traffic crosses it. Absent: every firewall counts as up.
   */
  /**
   * The share of this node's conntrack table (net.netfilter.nf_conntrack_max) at which `/health` raises an alarm.
   * Why 0.8 by default: a full table drops every new connection, and spoofed SYNs fill a balancer's table sooner
   * than a firewall's (a balancer node tracks every flow of its side, a firewall only its share), so the alarm must
   * come while there is room to act. @default 0.8
   */
  conntrackAlarmRatio?: number;
  /**
   * Seconds this node's conntrack keeps a TCP handshake that does not complete (SYN_SENT, SYN_RECV) instead of the
   * kernel's 120 s and 60 s; 0 keeps the kernel's. Why: a balancer node tracks every flow of its side, a firewall
   * only its share, so with the kernel's timeouts spoofed SYNs fill a node's table at a rate the firewalls absorb.
   * Every SYN is steered afresh whatever entry it meets, so a shorter unanswered state costs no connection its
   * firewall. @default 10
   */
  handshakeTimeoutSeconds?: number;
  /** Path of an SLB config file: the inside node then runs the SLB tier in its own process (VIPs on its API). */
  slb?: string;
  /**
   * Where the firewalls' admin state (set through the API) is kept across restarts, so a firewall taken out for
   * maintenance stays out. Absent: the API's changes last until restart.
   */
  stateFile?: string;
  /** The shared session table in Redis (layer 3); absent: no session sync. */
  sessionTable?: SessionTableConfig;
  /** Announcements through a routing daemon (BGP with BFD): see docs/bgp.md. Absent: fwlb announces nothing. */
  bgp?: BgpConfig;
  health?: {
    /**
     * The twin node's probe address (e.g. its side-interface address), IPv4 or IPv6 (the nodes then need
     * `net.ipv6.fwmark_reflect=1`). Give `target` or `targets`.
     */
    target?: string;
    /**
     * Several probe addresses (node redundancy: the other side's nodes, e.g. their transit addresses): a
     * firewall is up while any of them answers through it, so one dead node on the other side takes no firewall down.
     */
    targets?: string[];
    /** The check; its mark is set per firewall. @default {kind: "icmp"} */
    check?: CheckSpec;
    /** @default {interval: 500, response: 200, retries: 3, deadInterval: 1000, rise: 2} */
    timers?: TimerConfig;
    /**
     * Panic threshold (Envoy's idea): when fewer than this share of the firewalls are seen up at the same time,
     * this node's probes are not believed; the last good membership is kept (minus firewalls whose link is down or
     * that are disabled) and an alarm is raised. 0 turns panic mode off. @default 0.5
     */
    panicThreshold?: number;
  };
}

const ipv4 = { type: 'string', format: 'ipv4' } as const;
/** An IPv4 or IPv6 address (the format is registered by validate.ts). */
const ipAddress = { type: 'string', format: 'IPv4 or IPv6' } as const;
const ifname = { type: 'string', pattern: '^[A-Za-z0-9_.:@-]{1,15}$' } as const;
const range = (max: number) => ({
  type: 'object',
  additionalProperties: false,
  required: ['base', 'size'],
  properties: { base: { type: 'integer', minimum: 1, maximum: max }, size: { type: 'integer', minimum: 1, maximum: 4096 } },
});

/** The REST API section every node process's config has. */
export const apiSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    listen: { type: 'string', pattern: '^(unix:/.+|[0-9.]+:[0-9]{1,5}|\\[[0-9a-fA-F:]+\\]:[0-9]{1,5})$' },
    token: { type: 'string', minLength: 16 },
    tokenFile: { type: 'string', minLength: 1 },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['certFile', 'keyFile'],
      properties: { certFile: { type: 'string', minLength: 1 }, keyFile: { type: 'string', minLength: 1 } },
    },
  },
} as const;

/** Redis servers by address: the sentinels, or some nodes of a cluster. */
const redisNodes = {
  type: 'array',
  minItems: 1,
  items: {
    type: 'object',
    additionalProperties: false,
    required: ['host', 'port'],
    properties: { host: { type: 'string', minLength: 1 }, port: { type: 'integer', minimum: 1, maximum: 65535 } },
  },
} as const;

export const balancerSchema = {
  $id: 'fwlb/balancer-config',
  type: 'object',
  additionalProperties: false,
  required: ['role', 'sideInterface', 'firewalls', 'hash'],
  properties: {
    role: { enum: ['outside', 'inside'] },
    // No spaces or separators: the name is a field of every session record and the leader lock's owner.
    name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' },
    sideInterface: ifname,
    firewalls: {
      type: 'array',
      minItems: 1,
      maxItems: 256,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'nextHop', 'interface'],
        properties: {
          id: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,32}$' },
          nextHop: ipv4,
          nextHop6: { type: 'string', format: 'ipv6' },
          interface: ifname,
          mac: { type: 'string', pattern: '^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$' },
          enabled: { type: 'boolean' },
          syncGroup: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,32}$' },
          natPools: { type: 'array', maxItems: 256, uniqueItems: true, items: { type: 'string', minLength: 2, maxLength: 43 } },
        },
      },
    },
    hash: {
      type: 'object',
      additionalProperties: false,
      required: ['seed'],
      properties: {
        seed: { type: 'integer', minimum: 0, maximum: 0xffffffff },
        buckets: { type: 'integer', minimum: 2, maximum: 65521 },
        order: { enum: ['canonical', 'packet'] },
      },
    },
    marks: range(0x7fffffff),
    tables: range(0x7fffffff),
    rulePriorities: range(32000),
    ingressLearning: { type: 'boolean' },
    api: apiSchema,
    resyncSeconds: { type: 'number', minimum: 1, maximum: 3600 },
    conntrackAlarmRatio: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
    handshakeTimeoutSeconds: { type: 'integer', minimum: 0, maximum: 120 },
    slb: { type: 'string', minLength: 1 },
    stateFile: { type: 'string', minLength: 1, maxLength: 4096 },
    sessionTable: {
      type: 'object',
      additionalProperties: false,
      properties: {
        url: { type: 'string', pattern: '^(rediss?://.+|unix:/.+)$' },
        sentinels: redisNodes,
        cluster: { ...redisNodes, maxItems: 64 },
        primaryName: { type: 'string', minLength: 1 },
        password: { type: 'string', minLength: 1 },
        tls: { type: 'boolean' },
        tlsCaFile: { type: 'string', minLength: 1 },
        keyPrefix: { type: 'string', pattern: '^[A-Za-z0-9_:.-]{1,64}$' },
        flushMs: { type: 'integer', minimum: 10, maximum: 10000 },
        resyncSeconds: { type: 'number', minimum: 1, maximum: 3600 },
        heartbeatSeconds: { type: 'number', minimum: 0.5, maximum: 60 },
        eventBufferBytes: { type: 'integer', minimum: 4096, maximum: 1073741824 },
      },
    },
    bgp: bgpSchema,
    health: {
      type: 'object',
      additionalProperties: false,
      properties: {
        target: ipAddress,
        targets: { type: 'array', minItems: 1, maxItems: 16, uniqueItems: true, items: ipAddress },
        check: checkSpecSchema,
        timers: timersSchema,
        panicThreshold: { type: 'number', minimum: 0, maximum: 1 },
      },
    },
  },
} as const;
