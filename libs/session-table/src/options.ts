// Connection options of the shared Redis (standalone or Sentinel, AUTH, TLS) and their defaults; libs/session-table.
import { readFileSync } from 'node:fs';
import Redis, { RedisOptions } from 'ioredis';

export interface SessionTableOptions {
  /** Standalone Redis: `redis://[:password@]host:port[/db]`, `rediss://` for TLS, or `unix:/path`. @default "redis://127.0.0.1:6379" */
  url?: string;
  /** Sentinel mode: the sentinels to ask for the primary (takes the place of `url`). */
  sentinels?: { host: string; port: number }[];
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
};

/**
 * An ioredis client that never gives up: while Redis is away, commands fail fast (no offline queue, so a
 * caller never waits on a dead server) and the client keeps reconnecting every 200-1000 ms.
 */
export function connect(o: SessionTableOptions, extra: RedisOptions = {}): Redis {
  const common: RedisOptions = {
    password: o.password,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(200 * times, 1000),
    lazyConnect: false,
    ...(o.tls || o.tlsCaFile || o.url?.startsWith('rediss://') ? { tls: o.tlsCaFile ? { ca: readFileSync(o.tlsCaFile) } : {} } : {}),
    ...extra,
  };
  if (o.sentinels?.length) {
    return new Redis({ ...common, sentinels: o.sentinels, name: o.primaryName ?? SESSION_TABLE_DEFAULTS.primaryName, sentinelPassword: o.sentinelPassword ?? o.password, sentinelRetryStrategy: (times) => Math.min(200 * times, 1000) });
  }
  const url = o.url ?? SESSION_TABLE_DEFAULTS.url;
  // A unix socket reaches Redis from any network namespace on the host (the lab uses that).
  if (url.startsWith('unix:')) return new Redis({ ...common, path: url.slice(5) });
  return new Redis(url, common);
}

/** Resolves once the client is connected (commands fail fast before that, by design). */
export function ready(r: Redis, ms = 10000): Promise<Redis> {
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
