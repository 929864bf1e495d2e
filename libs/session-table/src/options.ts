// Connection options of the shared Redis (standalone or Sentinel, AUTH, TLS) and their defaults; libs/session-table.
import { readFileSync } from 'node:fs';
import Redis, { Cluster, ClusterOptions, RedisOptions } from 'ioredis';

export interface SessionTableOptions {
  /** Standalone Redis: `redis://[:password@]host:port[/db]`, `rediss://` for TLS, or `unix:/path`. @default "redis://127.0.0.1:6379" */
  url?: string;
  /** Sentinel mode: the sentinels to ask for the primary (takes the place of `url`). */
  sentinels?: { host: string; port: number }[];
  /** Redis Cluster mode: some of the cluster's nodes, the client learns the others (takes the place of `url`). */
  cluster?: { host: string; port: number }[];
  /** Sentinel mode: the monitored primary's name. @default "fwlb" */
  primaryName?: string;
  /** AUTH password (Redis and, in Sentinel mode, the sentinels unless `sentinelPassword` is set). */
  password?: string;
  sentinelPassword?: string;
  /** TLS to Redis (a `rediss://` url turns it on too). @default false */
  tls?: boolean;
  /** PEM file of the CA that signed Redis's certificate (TLS); absent: the system's CAs. */
  tlsCaFile?: string;
  /** Prefix of every key and channel, so several sandwiches can share one Redis. @default "fwlb:" */
  keyPrefix?: string;
  /** This node's name, recorded with the sessions it saw and used as its lock owner id. */
  node: string;
}

export const SESSION_TABLE_DEFAULTS = {
  url: 'redis://127.0.0.1:6379',
  primaryName: 'fwlb',
  keyPrefix: 'fwlb:',
  /** A command that gets no answer within this fails (a stuck Redis never stalls a loop). */
  commandTimeoutMs: 5000,
};

/**
 * The ioredis options for `o` (pure, so the security-relevant ones are tested): `url` for a standalone server
 * reached by URL, else the options say where. A client that never gives up: while Redis is away, commands fail
 * fast (no offline queue, a command timeout, so a caller never waits on a dead server) and it keeps reconnecting
 * every 200-1000 ms. With TLS, the sentinels are spoken to over TLS too: otherwise the AUTH to them, and the
 * primary's address they answer with, cross the network in clear.
 */
export function redisOptions(
  o: SessionTableOptions,
  extra: RedisOptions = {},
  readFile: (p: string) => Buffer = readFileSync,
): { url?: string; options: RedisOptions } {
  const tls = o.tls || o.tlsCaFile || o.url?.startsWith('rediss://') ? (o.tlsCaFile ? { ca: readFile(o.tlsCaFile) } : {}) : null;
  const common: RedisOptions = {
    password: o.password,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: SESSION_TABLE_DEFAULTS.commandTimeoutMs,
    retryStrategy: (times) => Math.min(200 * times, 1000),
    lazyConnect: false,
    // A flush writes one Lua call per bucket it touches (some 250 at 20,000 new flows/s): sent in one write per tick
    // instead of one each (bench/sessions-worker.ts with and without BENCH_AUTOPIPELINE=0: sync lag p50 about 10 % lower at 20,000/s).
    enableAutoPipelining: true,
    ...(tls ? { tls } : {}),
    ...extra,
  };
  if (o.sentinels?.length) {
    return {
      options: {
        ...common,
        sentinels: o.sentinels,
        name: o.primaryName ?? SESSION_TABLE_DEFAULTS.primaryName,
        sentinelPassword: o.sentinelPassword ?? o.password,
        sentinelRetryStrategy: (times) => Math.min(200 * times, 1000),
        ...(tls ? { enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
      },
    };
  }
  const url = o.url ?? SESSION_TABLE_DEFAULTS.url;
  // A unix socket reaches Redis from any network namespace on the host (the lab uses that).
  if (url.startsWith('unix:')) return { options: { ...common, path: url.slice(5) } };
  return { url, options: common };
}

/**
 * The ioredis Cluster options for `o` (pure): each node is spoken to as a standalone server is (AUTH, TLS, fail
 * fast), the slot map is refreshed after a failover moves a slot, and commands go to masters only (a replica can
 * lag behind what this node wrote).
 */
export function clusterOptions(o: SessionTableOptions, extra: RedisOptions = {}, readFile: (p: string) => Buffer = readFileSync): ClusterOptions {
  const { options } = redisOptions({ ...o, url: undefined, sentinels: undefined, cluster: undefined }, extra, readFile);
  const { retryStrategy: _, enableAutoPipelining: __, ...node } = options;
  return {
    redisOptions: node,
    enableOfflineQueue: false,
    scaleReads: 'master',
    // Not on a cluster: a pipeline caught by a failover gets MOVED for the commands of the slots that moved, and
    // ioredis follows a redirect of a whole pipeline only (the session-table test's failover failed on an HLEN).
    enableAutoPipelining: false,
    clusterRetryStrategy: (times) => Math.min(200 * times, 1000),
    // A command sent to a master that died waits this long for the cluster's new slot map before it fails.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    slotsRefreshTimeout: 2000,
    ...(options.tls ? { dnsLookup: (address, cb) => cb(null, address) } : {}),
  };
}

/** A client for `o`: a Cluster client when `o.cluster` is given, else a standalone or Sentinel one. */
export function connect(o: SessionTableOptions, extra: RedisOptions = {}): Redis | Cluster {
  if (o.cluster?.length) return new Cluster(o.cluster, clusterOptions(o, extra));
  const { url, options } = redisOptions(o, extra);
  return url ? new Redis(url, options) : new Redis(options);
}

/** Resolves once the client is connected (commands fail fast before that, by design). */
export function ready<R extends Redis | Cluster>(r: R, ms = 10000): Promise<R> {
  if (r.status === 'ready') return Promise.resolve(r);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      r.off('ready', ok);
      reject(new Error(`Redis not ready within ${ms} ms (status ${r.status})`));
    }, ms);
    const ok = () => {
      clearTimeout(t);
      resolve(r);
    };
    r.once('ready', ok);
  });
}
