// Test helper: a real redis-server on loopback, in a directory of its own, stopped at teardown even when a test fails.
import { spawn, ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisServer {
  port: number;
  url: string;
  proc: ChildProcess;
  /** kill -9, as a crash. */
  kill(): Promise<void>;
  /** Start again on the same port. */
  restart(): Promise<void>;
}

function launch(port: number, dir: string, extra: string[]): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${buf}`)), 10000);
    p.stdout!.on('data', (d) => {
      buf += d;
      if (/Ready to accept connections/.test(buf)) {
        clearTimeout(timer);
        resolve(p);
      }
    });
    p.on('exit', (c) => reject(new Error(`redis-server exited ${c}: ${buf}`)));
  });
}

export async function startRedis(t: { teardown(fn: () => void): void }, extra: string[] = []): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-redis-'));
  const port = 20000 + Math.floor(Math.random() * 30000);
  const s: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc: await launch(port, dir, extra),
    kill: async () => {
      const exited = new Promise((r) => s.proc.once('exit', r));
      s.proc.kill('SIGKILL');
      await exited;
    },
    restart: async () => {
      s.proc = await launch(port, dir, extra);
    },
  };
  t.teardown(() => {
    s.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  return s;
}

export interface SentinelSet {
  primaryPort: number;
  replicaPort: number;
  sentinels: { host: string; port: number }[];
  killPrimary(): Promise<void>;
}

/** 1 primary, 1 replica and 3 sentinels on loopback (quorum 2, down after 500 ms), all stopped at teardown. */
export async function startSentinels(t: { teardown(fn: () => void): void }): Promise<SentinelSet> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-sentinel-'));
  const base = 20000 + Math.floor(Math.random() * 30000);
  const procs: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const primary = await launch(base, dir, []);
  procs.push(primary);
  const rdir = join(dir, 'replica');
  mkdirSync(rdir);
  procs.push(await launch(base + 1, rdir, ['--replicaof', '127.0.0.1', String(base)]));
  const sentinels = [2, 3, 4].map((i) => ({ host: '127.0.0.1', port: base + i }));
  for (const s of sentinels) {
    const conf = join(dir, `sentinel-${s.port}.conf`);
    writeFileSync(conf, `port ${s.port}\nbind 127.0.0.1\ndir ${dir}\nsentinel monitor fwlb 127.0.0.1 ${base} 2\nsentinel down-after-milliseconds fwlb 500\nsentinel failover-timeout fwlb 3000\nsentinel parallel-syncs fwlb 1\n`);
    const p = spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(p);
  }
  return {
    primaryPort: base,
    replicaPort: base + 1,
    sentinels,
    killPrimary: async () => {
      const exited = new Promise((r) => primary.once('exit', r));
      primary.kill('SIGKILL');
      await exited;
    },
  };
}

/** A redis-server that also listens on a unix socket: the lab's nodes reach it from their namespaces by `unix:` URL. */
export async function startRedisOnSocket(t: { teardown(fn: () => void): void }): Promise<{ redis: RedisServer; url: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-rs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'redis.sock');
  const redis = await startRedis(t, ['--unixsocket', sock, '--unixsocketperm', '700']);
  return { redis, url: `unix:${sock}` };
}
