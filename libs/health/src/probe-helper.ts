// Client of the fwlb-probe socket shim (raw sockets, SO_MARK, SO_BINDTODEVICE); I/O layer of libs/health.
import { execFile, spawn, ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface ProbeRequest {
  op: 'icmp' | 'syn' | 'connect';
  target: string;
  port?: number;
  timeoutMs: number;
  mark?: number;
  device?: string;
  source?: string;
  send?: string;
  readMax?: number;
  close?: 'fin' | 'rst';
}

export interface ProbeAnswer {
  ok: boolean;
  reason: string;
  latencyMs?: number;
  data?: string;
  /** The probe could not be run (the helper is down, stuck or restarting): the answer says nothing about the target. */
  unknown?: boolean;
}

export const HELPER_PATH = join(__dirname, '..', 'helper', 'fwlb-probe.py');

/** The helper's interpreter: the system python (standard library only), or FWLB_PYTHON. */
const defaultPython = () => process.env.FWLB_PYTHON ?? '/usr/bin/python3';
const DEFAULT_BACKOFF_MS = 100;
/** The most probes one helper has in flight; more are answered `unknown` at once (see ProbeHelper.request). */
export const MAX_IN_FLIGHT = 16384;

const HELPER_IMPORTS = 'import errno, heapq, json, os, random, selectors, socket, struct, sys, time; print(sys.version.split()[0])';

/** For doctors: can the probe helper run here (its python, its standard library, its file)? Async: a doctor runs its checks at once. */
export function probeHelperRunnable(python = defaultPython()): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    execFile(python, ['-c', HELPER_IMPORTS], { encoding: 'utf8', timeout: 5000 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code && typeof (err as NodeJS.ErrnoException).code === 'string') {
        return resolve({ ok: false, detail: `cannot run ${python}: ${err.message} (health checks need it: install python3, or set FWLB_PYTHON)` });
      }
      if (err) return resolve({ ok: false, detail: `${python} failed: ${(stderr || '').trim().split('\n').pop()}` });
      if (!existsSync(HELPER_PATH)) return resolve({ ok: false, detail: `${HELPER_PATH} is missing` });
      resolve({ ok: true, detail: `${python} ${stdout.trim()} runs ${HELPER_PATH}` });
    });
  });
}

/** What the helper's supervision shows, for alarms. */
export interface HelperStatus {
  up: boolean;
  restarts: number;
  /** Why it last went away (exit code or signal, spawn error, stuck). */
  lastError: string | null;
  /** When it last changed between up and down (ms). */
  since: number;
}

export interface HelperOptions {
  python?: string;
  netns?: string;
  /** First restart delay; doubles on each failure up to `maxBackoffMs`. @default 100 */
  backoffMs?: number;
  /** @default 5000 */
  maxBackoffMs?: number;
  /** Called when the helper goes up or down. */
  onStatus?: (s: HelperStatus) => void;
}

/** The alarm a node shows while its probe helper is down: health checks cannot run, the last health state holds. */
export function helperAlarms(h: ProbeHelper): string[] {
  const s = h.status();
  return s.up
    ? []
    : [
        `probe helper down since ${new Date(s.since).toISOString()} (${s.lastError ?? 'starting'}; ${s.restarts} restarts): health checks cannot run, the last health state holds`,
      ];
}

/**
 * One long-lived helper process per node; requests are matched to answers by id, so probes run concurrently.
 * Supervised: when it exits, fails to start or gets stuck, pending and new requests are answered `unknown` (never
 * a failed check: a broken helper says nothing about a firewall or a server), and it is restarted with backoff.
 */
export class ProbeHelper {
  private nextId = 1;
  private readonly pending = new Map<number, (a: ProbeAnswer) => void>();
  private proc: ChildProcess | null = null;
  private ready = false;
  private waiters: (() => void)[] = [];
  private closed = false;
  private backoff: number;
  private restartTimer: NodeJS.Timeout | null = null;
  private stuck = 0;
  /** Requests whose backstop fired late (this thread was busy) and got a second wait. */
  private readonly deferred = new Set<number>();
  /** Times this thread's own lateness, not the helper, held up a backstop (see request). */
  overloaded = 0;
  /** Requests answered `unknown` without being sent because MAX_IN_FLIGHT were in flight. */
  saturated = 0;
  readonly state: HelperStatus = { up: false, restarts: 0, lastError: null, since: Date.now() };

  private constructor(private readonly o: HelperOptions) {
    this.backoff = o.backoffMs ?? DEFAULT_BACKOFF_MS;
    this.spawn();
  }

  /** Python is the system one: the helper uses its standard library only. */
  static start(python = defaultPython(), netns?: string, opts: Omit<HelperOptions, 'python' | 'netns'> = {}): ProbeHelper {
    return new ProbeHelper({ ...opts, python, netns });
  }

  /** The helper's process id while it runs (for operators and tests). */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  status(): HelperStatus {
    return { ...this.state };
  }

  private setUp(up: boolean, err?: string): void {
    if (err) this.state.lastError = err;
    if (this.state.up === up) return;
    this.state.up = up;
    this.state.since = Date.now();
    this.o.onStatus?.(this.status());
  }

  private spawn(): void {
    const python = this.o.python ?? defaultPython();
    const cmd = this.o.netns ? ['ip', 'netns', 'exec', this.o.netns, python, HELPER_PATH] : [python, HELPER_PATH];
    const proc = spawn(cmd[0], cmd.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
    this.proc = proc;
    this.ready = false;
    let gone = false;
    const onGone = (why: string) => {
      if (gone) return;
      gone = true;
      if (this.proc === proc) this.proc = null;
      this.ready = false;
      for (const cb of this.pending.values()) cb({ ok: false, unknown: true, reason: `probe helper ${why}` });
      this.pending.clear();
      this.setUp(false, why);
      if (this.closed) return;
      // A helper that was working gets a quick restart; one that dies before it is ready (a crash loop, python
      // missing) backs off, doubling up to maxBackoffMs.
      const delay = this.backoff;
      this.backoff = Math.min(this.backoff * 2, this.o.maxBackoffMs ?? 5000);
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        this.state.restarts++;
        this.spawn();
      }, delay);
    };
    proc.on('error', (e) => onGone(`could not run ${python}: ${e.message}`));
    proc.stdin!.on('error', () => undefined); // EPIPE when it died: 'exit' reports it
    proc.on('exit', (code, sig) => onGone(`exited (${sig ?? `code ${code}`})`));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      let msg: ProbeAnswer & { id: number; ready?: boolean };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.ready) {
        this.ready = true;
        this.backoff = this.o.backoffMs ?? DEFAULT_BACKOFF_MS;
        this.stuck = 0;
        this.setUp(true);
        const w = this.waiters;
        this.waiters = [];
        for (const f of w) f();
        return;
      }
      const cb = this.pending.get(msg.id);
      if (cb) {
        this.pending.delete(msg.id);
        this.stuck = 0;
        this.setUp(true);
        cb({
          ok: msg.ok === true,
          reason: String(msg.reason ?? ''),
          latencyMs: typeof msg.latencyMs === 'number' ? msg.latencyMs : undefined,
          data: typeof msg.data === 'string' ? msg.data : undefined,
          // The helper could not send the probe in time (overloaded): unknown, never a failed check.
          ...(msg.unknown === true ? { unknown: true } : {}),
        });
      }
    });
  }

  /** Waits for a helper that is (re)starting, at most `ms`. */
  private whenReady(ms: number): Promise<boolean> {
    if (this.ready) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((f) => f !== done);
        resolve(false);
      }, ms);
      const done = () => {
        clearTimeout(t);
        resolve(true);
      };
      this.waiters.push(done);
    });
  }

  /** Requests in flight right now (sent, not answered). */
  get inFlight(): number {
    return this.pending.size;
  }

  async request(req: ProbeRequest): Promise<ProbeAnswer> {
    if (this.closed) return { ok: false, unknown: true, reason: 'probe helper closed' };
    // Backpressure: past this many in flight, more would only queue behind them and time out there; unknown instead.
    if (this.pending.size >= MAX_IN_FLIGHT) {
      this.saturated++;
      return { ok: false, unknown: true, reason: `probe helper saturated (${this.pending.size} probes in flight)` };
    }
    if (!(await this.whenReady(req.timeoutMs))) return { ok: false, unknown: true, reason: `probe helper unavailable: ${this.state.lastError ?? 'starting'}` };
    const proc = this.proc!;
    const id = this.nextId++;
    return new Promise((resolve) => {
      // A backstop a little past the probe's own deadline: a helper that does not answer is stuck, not the target.
      const backstop = req.timeoutMs + 1000;
      const armed = Date.now();
      const t = setTimeout(() => {
        // Timers run before this loop reads its pipes: an answer that arrived while this thread was busy is read
        // in the poll phase, which runs before setImmediate's callbacks. Only then is a missing answer the helper's.
        setImmediate(() => {
          if (!this.pending.has(id)) return;
          // This thread fell behind (the timer fired late by more than half the wait): its own overload, not a stuck
          // helper. Wait as long again, from now, before concluding anything.
          const late = Date.now() - armed - backstop;
          if (late > backstop / 2 && !this.deferred.has(id)) {
            this.deferred.add(id);
            this.overloaded++;
            setTimeout(() => this.unanswered(id, proc, resolve), backstop).unref?.();
            return;
          }
          this.unanswered(id, proc, resolve);
        });
      }, backstop);
      this.pending.set(id, (a) => {
        clearTimeout(t);
        resolve(a);
      });
      // sentAt: the helper answers `unknown` instead of probing when the request waited longer than its timeout.
      this.send(proc, JSON.stringify({ id, ...req, sentAt: Date.now() }) + '\n');
    });
  }

  /**
   * Requests made in one turn of the event loop (the checks due in one slot of their grid) go to the helper in one
   * write: the pipe is corked until the turn's timers have run.
   */
  private send(proc: ChildProcess, line: string): void {
    const stdin = proc.stdin!;
    if (!stdin.writableCorked) {
      stdin.cork();
      setImmediate(() => stdin.uncork());
    }
    stdin.write(line);
  }

  /** A request the helper did not answer within the backstop: unknown, and three in a row mean it is stuck. */
  private unanswered(id: number, proc: ChildProcess, resolve: (a: ProbeAnswer) => void): void {
    this.deferred.delete(id);
    if (!this.pending.delete(id)) return;
    resolve({ ok: false, unknown: true, reason: 'probe helper did not answer' });
    this.setUp(false, 'did not answer (stuck)');
    // Three unanswered requests in a row: the helper is stuck; kill it, supervision restarts it.
    if (++this.stuck >= 3 && this.proc === proc) proc.kill('SIGKILL');
  }

  close(): void {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.proc?.stdin?.end();
    this.proc?.kill();
  }
}
