// What the benchmarks share: a throwaway redis-server on a unix socket, and an open-loop HTTP client over a unix
// socket (latency from each request's scheduled send, so a stall of the server counts). I/O layer of deploy/lab.
import { spawn, ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, uniquePrefix } from './lab';
import type { LabOptions } from './topology';

/** redis-server on a unix socket in `dir`, no persistence; resolves once it accepts connections. */
export function startRedis(sock: string, dir: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const p = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
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
export async function openLoop(o: {
  socketPath: string;
  path: string;
  rate: number;
  seconds: number;
  headers?: Record<string, string>;
}): Promise<OpenLoopResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const lat: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < o.rate * o.seconds; i++) {
    const at = t0 + (i * 1000) / o.rate;
    // Each request waits for its time: one sent early would count from its time, not from its send, and read as 0 ms
    // (at 1,000/s every request was due within 1 ms, so none waited and all were sent at once). setTimeout sleeps at
    // least 1 ms: a request due sooner waits that long, and those due meanwhile go right after it.
    const wait = at - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
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

/** The median of the finite values of `xs` (a failed round is NaN and left out), NaN when none. */
export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median, lowest and highest of the finite values, and how many rounds gave one. */
export function spread(xs: readonly number[]): { median: number; min: number; max: number; n: number } {
  const s = xs.filter((x) => Number.isFinite(x));
  return { median: median(s), min: s.length ? Math.min(...s) : NaN, max: s.length ? Math.max(...s) : NaN, n: s.length };
}

/**
 * A lab of its own for a benchmark (namespace prefix `<tag>…`, run directory under the temp dir), built with its
 * servers and nodes started; torn down on Ctrl-C and when the start fails. The caller tears it down when done.
 */
export async function startBenchLab(tag: string, opts: Partial<Omit<LabOptions, 'prefix' | 'runDir'>> = {}): Promise<Lab> {
  const prefix = uniquePrefix(tag);
  const lab = new Lab({ prefix, runDir: join(tmpdir(), `fwlb-bench-${prefix}`), ...opts });
  process.on('SIGINT', () => {
    lab.teardown();
    process.exit(130);
  });
  try {
    lab.build();
    await lab.startServers();
    await lab.startNodes();
  } catch (e) {
    lab.teardown();
    throw e;
  }
  return lab;
}

export interface ProcessUsage {
  /** CPU time of the process itself (ms). */
  cpuMs: number;
  /** Of its children that exited and were waited for (the nft and conntrack runs). */
  childMs: number;
  /** Of its live children (the probe helper). */
  helperMs: number;
  rssMb: number;
}

/** A process's CPU time and RSS from /proc; two readings and the time between give its share of a core. */
export function processUsage(pid: number): ProcessUsage {
  const stat = (p: number) => readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ').map(Number);
  const f = stat(pid);
  let helperMs = 0;
  for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
    try {
      const g = stat(Number(c));
      helperMs += (g[11] + g[12]) * 10;
    } catch {
      /* exited meanwhile */
    }
  }
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return { cpuMs: (f[11] + f[12]) * 10, childMs: (f[13] + f[14]) * 10, helperMs, rssMb: Number(rss) / 1024 };
}

/**
 * A bench lab whose session table is a throwaway Redis on a unix socket: `run` gets the lab, and both go afterwards,
 * whatever happens.
 */
export async function withRedisLab<T>(
  tag: string,
  opts: Partial<Omit<LabOptions, 'prefix' | 'runDir' | 'sessionTable'>>,
  run: (lab: Lab) => Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-bench-redis-'));
  const sock = join(dir, 'redis.sock');
  const redis = await startRedis(sock, dir);
  try {
    const lab = await startBenchLab(tag, { sessionTable: { url: `unix:${sock}`, heartbeatSeconds: 2 }, ...opts });
    try {
      return await run(lab);
    } finally {
      lab.teardown();
    }
  } finally {
    redis.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}
