// What the benchmarks share: a throwaway redis-server on a unix socket, and an open-loop HTTP client over a unix
// socket (latency from each request's scheduled send, so a stall of the server counts). I/O layer of deploy/lab.
import { spawn, ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';

/** redis-server on a unix socket in `dir`, no persistence; resolves once it accepts connections. */
export function startRedis(sock: string, dir: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const p = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    p.stdout!.on('data', (d) => {
      buf += d;
      if (/ready to accept connections/i.test(buf)) resolve(p);
    });
    p.on('exit', (c) => reject(new Error(`redis-server exited ${c}`)));
  });
}

export interface OpenLoopResult {
  /** Latencies (ms) of the 200 answers, from each request's scheduled time. */
  lat: number[];
  /** Requests that failed or answered other than 200. */
  errors: number;
}

/** GET `path` at `rate` per second for `seconds` over a keep-alive agent on a unix socket, whatever the answers take. */
export async function openLoop(o: { socketPath: string; path: string; rate: number; seconds: number; headers?: Record<string, string> }): Promise<OpenLoopResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const lat: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < o.rate * o.seconds; i++) {
    const at = t0 + (i * 1000) / o.rate;
    const wait = at - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(
      new Promise<void>((resolve) => {
        const req = request({ socketPath: o.socketPath, path: o.path, agent, headers: o.headers }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) lat.push(Math.max(0, performance.now() - at));
            else errors++;
            resolve();
          });
        });
        req.on('error', () => {
          errors++;
          resolve();
        });
        req.end();
      }),
    );
  }
  await Promise.all(pending);
  agent.destroy();
  return { lat, errors };
}

/** The p-th percentile of `xs` (nearest rank), NaN when empty. */
export function percentile(xs: readonly number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
