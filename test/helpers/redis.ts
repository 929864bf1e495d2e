// Test helper: a real redis-server on loopback, in a directory of its own, stopped at teardown even when a test fails.
import { spawn, ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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
