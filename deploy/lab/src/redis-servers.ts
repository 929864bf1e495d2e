// Real redis-server processes for the tests and the benchmarks: where one runs (the root namespace's loopback or a
// lab namespace), and a Redis Cluster of 3 masters and 3 replicas. I/O layer of deploy/lab.
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where a Redis process runs: the root namespace's loopback by default, or a namespace and address. */
export interface Place {
  netns?: string;
  host?: string;
  /** First port (primary; replica +1, sentinels +2..+4); random when absent. */
  base?: number;
}

export function spawnAt(at: Place, args: string[]): ChildProcess {
  const cmd = at.netns ? ['ip', 'netns', 'exec', at.netns, 'redis-server', ...args] : ['redis-server', ...args];
  return spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
}

export function launch(port: number, dir: string, extra: string[], at: Place = {}): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    // Off loopback, Redis refuses clients without a password unless protected mode is off (namespaces only here).
    const prot = at.host && at.host !== '127.0.0.1' ? ['--protected-mode', 'no'] : [];
    const p = spawnAt(at, ['--port', String(port), '--bind', at.host ?? '127.0.0.1', ...prot, '--save', '', '--appendonly', 'no', '--dir', dir, ...extra]);
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

export interface RedisCluster {
  /** The seed nodes a client is given (every node; a client needs only one that answers). */
  nodes: { host: string; port: number }[];
  /** Ask one node (redis-cli, where the node runs). */
  cli(port: number, ...args: string[]): string;
  /** The port of the master serving `key`'s slot now. */
  masterOf(key: string): number;
  /** kill -9 that master, as a crash; resolves once it has exited. */
  killMaster(port: number): Promise<void>;
  /** Resolves once every slot is served again and the cluster says ok (on every live node); throws after `ms`. */
  settled(ms?: number): Promise<void>;
}

/** The port of the live master that serves `slot`, from CLUSTER NODES. */
function masterServing(nodes: string, slot: number): number {
  for (const line of nodes.split('\n')) {
    const f = line.split(' ');
    if (!f[2]?.includes('master') || f[2].includes('fail')) continue;
    for (const range of f.slice(8)) {
      const [lo, hi = lo] = range.split('-').map(Number);
      if (slot >= lo && slot <= hi) return Number(f[1].split(':')[1].split('@')[0]);
    }
  }
  throw new Error(`no master serves slot ${slot}`);
}

/**
 * A random first port for a server's `span` ports on loopback or in the lab, below the kernel's ephemeral range
 * (32768 and up by default): a port picked there may be in use by any client connection of the machine.
 */
export function portBase(span = 10): number {
  return 10000 + Math.floor(Math.random() * (22768 - span));
}

/**
 * A Redis Cluster of 3 masters and 3 replicas (cluster-node-timeout 1 s) on loopback or at `at`, all stopped and
 * removed at teardown; resolves once the cluster is ok everywhere with a replica behind each master.
 */
export async function startCluster(t: { teardown(fn: () => void): void }, at: Place = {}): Promise<RedisCluster> {
  const host = at.host ?? '127.0.0.1';
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-cluster-'));
  // The cluster bus listens on port + 10000: both ranges must be free.
  const base = at.base ?? portBase(10006);
  const procs = new Map<number, ChildProcess>();
  t.teardown(() => {
    for (const p of procs.values()) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const ports = [0, 1, 2, 3, 4, 5].map((i) => base + i);
  await Promise.all(
    ports.map(async (port) => {
      const d = join(dir, String(port));
      mkdirSync(d);
      // validity factor 0: a replica always takes over its dead master, however long since it last heard from it.
      const conf = [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-node-timeout',
        '1000',
        '--cluster-replica-validity-factor',
        '0',
      ];
      procs.set(port, await launch(port, d, conf, at));
    }),
  );
  const cli = (port: number, ...args: string[]) => {
    const cmd = ['redis-cli', '-h', host, '-p', String(port), ...args];
    const r = spawnSync(at.netns ? 'ip' : cmd[0], at.netns ? ['netns', 'exec', at.netns, ...cmd] : cmd.slice(1), { encoding: 'utf8' });
    return (r.stdout ?? '') + (r.stderr ?? '');
  };
  const made = cli(base, '--cluster', 'create', ...ports.map((p) => `${host}:${p}`), '--cluster-replicas', '1', '--cluster-yes');
  if (!/All 16384 slots covered/.test(made)) throw new Error(`redis-cli --cluster create failed: ${made}`);
  const live = () => [...procs.keys()];
  const settled = async (ms = 20000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      // Every live node says ok, and no slot is served by a node that is dead (killed here, or flagged as failing).
      const servedByDead = (p: number) =>
        cli(p, 'CLUSTER', 'NODES')
          .split('\n')
          .some((l) => {
            const f = l.split(' ');
            return f.length > 8 && (/fail/.test(f[2]) || !procs.has(Number(f[1]?.split(':')[1]?.split('@')[0])));
          });
      const ok = live().every((p) => /cluster_state:ok/.test(cli(p, 'CLUSTER', 'INFO')) && !servedByDead(p));
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`the cluster did not settle within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  await settled();
  // A replica behind every master (create assigns them; they take a moment to sync).
  const deadline = Date.now() + 20000;
  const synced = () => ports.filter((p) => /master_link_status:up/.test(cli(p, 'INFO', 'replication'))).length;
  while ((cli(base, 'CLUSTER', 'NODES').match(/ slave [0-9a-f]{40} /g) ?? []).length < 3 || synced() < 3) {
    if (Date.now() > deadline) throw new Error('the replicas did not join within 20 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    nodes: ports.map((port) => ({ host, port })),
    cli,
    masterOf: (key) => masterServing(cli(live()[0], 'CLUSTER', 'NODES'), Number(cli(live()[0], 'CLUSTER', 'KEYSLOT', key).trim())),
    async killMaster(port) {
      const p = procs.get(port)!;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
      procs.delete(port);
    },
    settled,
  };
}
