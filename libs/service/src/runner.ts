// Bounded-frequency runner: merges triggers, runs at most once per minInterval, resyncs periodically and retries after
// errors; shell layer shared by the node processes.

export interface RunnerOptions {
  /** Shortest time between two runs. @default 200 */
  minIntervalMs?: number;
  /** Period of the full resync. @default 10000 */
  resyncMs?: number;
  /** Delay of the retry after a failed run. @default 1000 */
  retryMs?: number;
}

export class BoundedRunner {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private pending = false;
  private lastRun = 0;
  private stopped = false;

  constructor(
    private readonly fn: () => Promise<unknown>,
    private readonly opts: Required<RunnerOptions>,
    private readonly onError: (e: unknown) => void,
  ) {}

  static create(fn: () => Promise<unknown>, o: RunnerOptions, onError: (e: unknown) => void): BoundedRunner {
    return new BoundedRunner(fn, { minIntervalMs: o.minIntervalMs ?? 200, resyncMs: o.resyncMs ?? 10000, retryMs: o.retryMs ?? 1000 }, onError);
  }

  trigger(): void {
    if (this.stopped) return;
    this.pending = true;
    if (this.running) return;
    const wait = Math.max(0, this.lastRun + this.opts.minIntervalMs - Date.now());
    this.schedule(wait);
  }

  private schedule(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), ms);
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    this.running = true;
    this.pending = false;
    this.lastRun = Date.now();
    let next = this.opts.resyncMs;
    try {
      await this.fn();
    } catch (e) {
      this.onError(e);
      next = this.opts.retryMs;
    } finally {
      this.running = false;
    }
    if (this.pending) next = Math.min(next, this.opts.minIntervalMs);
    this.schedule(next);
  }

  start(): void {
    this.schedule(this.opts.resyncMs);
  }

  /** A new resync period (a reloaded config): from the next run on. */
  setResyncMs(ms: number): void {
    this.opts.resyncMs = ms;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}

/**
 * A read that costs (a conntrack dump, a Redis round trip) behind an API anyone may call in a loop: at most one every
 * `everyMs`, shared by the callers that come meanwhile. A read that fails is not kept: the next call tries again.
 */
export function throttledRead<T>(read: () => Promise<T>, everyMs = 1000, now: () => number = Date.now): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | null = null;
  return () => {
    if (!last || now() - last.at > everyMs) {
      const value = read();
      const entry = { at: now(), value };
      last = entry;
      value.catch(() => {
        if (last === entry) last = null;
      });
    }
    return last.value;
  };
}
