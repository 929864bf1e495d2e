// Test helper: a real redis-server on loopback, in a directory of its own, stopped at teardown even when a test fails.
import { spawnSync, ChildProcess } from 'node:child_process';
import { launch, Place, portBase, spawnAt } from '@fwlb/lab';
export { startCluster } from '@fwlb/lab';
export type { Place, RedisCluster } from '@fwlb/lab';
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

export async function startRedis(t: { teardown(fn: () => void): void }, extra: string[] = []): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-redis-'));
  const port = portBase(1);
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
  /**
   * kill -9 of whichever server is the primary now; resolves once the sentinels name the other one, after starting the
   * killed one again as its replica. Returns the ms from the kill to the promotion.
   */
  failover(): Promise<number>;
  /** SIGSTOP (true) or SIGCONT (false) of whichever server is the replica now: a replica that stops answering. */
  pauseReplica(paused: boolean): void;
}

/**
 * 1 primary, 1 replica and 3 sentinels (quorum 2, down after 500 ms) on loopback or at `at`, all stopped at
 * teardown; resolves once the replica is online and every sentinel knows it and the other sentinels.
 */
export async function startSentinels(t: { teardown(fn: () => void): void }, at: Place = {}): Promise<SentinelSet> {
  const host = at.host ?? '127.0.0.1';
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-sentinel-'));
  const base = at.base ?? portBase();
  const procs: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const primary = await launch(base, dir, [], at);
  procs.push(primary);
  const rdir = join(dir, 'replica');
  mkdirSync(rdir);
  const servers = new Map<number, { proc: ChildProcess; dir: string }>([
    [base, { proc: primary, dir }],
    [base + 1, { proc: await launch(base + 1, rdir, ['--replicaof', host, String(base)], at), dir: rdir }],
  ]);
  procs.push(servers.get(base + 1)!.proc);
  const sentinels = [2, 3, 4].map((i) => ({ host, port: base + i }));
  for (const s of sentinels) {
    const conf = join(dir, `sentinel-${s.port}.conf`);
    writeFileSync(
      conf,
      `port ${s.port}\nbind ${host}\nprotected-mode no\ndir ${dir}\nsentinel monitor fwlb ${host} ${base} 2\nsentinel down-after-milliseconds fwlb 500\nsentinel failover-timeout fwlb 3000\nsentinel parallel-syncs fwlb 1\n`,
    );
    procs.push(spawnAt(at, [conf, '--sentinel']));
  }
  // Settled when every sentinel knows the replica and the two other sentinels (asked with redis-cli, which runs
  // where the sentinels are).
  const cli = (port: number, ...args: string[]) => {
    const cmd = ['redis-cli', '-h', host, '-p', String(port), ...args];
    const r = spawnSync(at.netns ? 'ip' : cmd[0], at.netns ? ['netns', 'exec', at.netns, ...cmd] : cmd.slice(1), { encoding: 'utf8' });
    return r.stdout ?? '';
  };
  const deadline = Date.now() + 20000;
  for (;;) {
    // ROLE lists a replica once it is online (synced), which takes the primary's diskless-sync delay (5 s).
    const ok =
      cli(base, 'ROLE').trim().split('\n').length >= 5 &&
      sentinels.every(
        (s) =>
          (cli(s.port, 'SENTINEL', 'replicas', 'fwlb').match(/^name$/gm) ?? []).length === 1 &&
          (cli(s.port, 'SENTINEL', 'sentinels', 'fwlb').match(/^name$/gm) ?? []).length === 2,
      );
    if (ok) break;
    if (Date.now() > deadline) throw new Error('sentinels did not settle within 20 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  const primaryNow = () => Number(cli(sentinels[0].port, 'SENTINEL', 'get-master-addr-by-name', 'fwlb').split('\n')[1]);
  return {
    primaryPort: base,
    replicaPort: base + 1,
    sentinels,
    killPrimary: async () => {
      const exited = new Promise((r) => primary.once('exit', r));
      primary.kill('SIGKILL');
      await exited;
    },
    pauseReplica: (paused) => {
      const replica = [...servers].find(([port]) => port !== primaryNow())![1];
      replica.proc.kill(paused ? 'SIGSTOP' : 'SIGCONT');
    },
    failover: async () => {
      const was = primaryNow();
      const victim = servers.get(was)!;
      const exited = new Promise((r) => victim.proc.once('exit', r));
      const killedAt = Date.now();
      victim.proc.kill('SIGKILL');
      await exited;
      for (const end = Date.now() + 20000; primaryNow() === was; await new Promise((r) => setTimeout(r, 100)))
        if (Date.now() > end) throw new Error(`the sentinels did not promote a replica of ${was} within 20 s`);
      const ms = Date.now() - killedAt;
      const other = primaryNow();
      victim.proc = await launch(was, victim.dir, ['--replicaof', host, String(other)], at);
      procs.push(victim.proc);
      return ms;
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
