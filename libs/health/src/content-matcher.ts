// Content matching for http-content checks under a node-wide budget, in a worker thread; shell layer of libs/health.
//
// Why a worker: a regex runs against a page the backend controls. Even capped at REGEX_LIMIT_MS a match, 256 members
// whose pages make a pattern backtrack cost 5 s of every second on the thread that answers the API, runs the
// reconciler and supervises the probe helper. In a thread of its own the cost lands there, and this budget bounds it.
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { REGEX_LIMIT_MS } from './content-match';
import type { ContentAnswer, ContentJob } from './content-worker';

/** Regex time the node spends per second, summed over all checks, unless configured (ms of the worker thread). */
export const DEFAULT_REGEX_MS_PER_SECOND = 200;
/** How long a regex that ran into its limit is not run again for its owner (ms): its checks are unknown meanwhile. */
export const REGEX_QUARANTINE_MS = 30_000;
/** The most matches of one owner that may wait for the worker; more are unknown at once. */
const MAX_WAITING_PER_OWNER = 4096;
/** How long an alarm stays after the last check it concerns (ms). */
const ALARM_HOLD_MS = 5_000;

export interface ContentVerdict {
  ok: boolean;
  reason: string;
  /** No verdict: the match was not run (over budget, quarantined, the worker failed). */
  unknown?: boolean;
}

export interface ContentMatcherOptions {
  /** See DEFAULT_REGEX_MS_PER_SECOND. */
  regexMsPerSecond?: number;
  limitMs?: number;
  quarantineMs?: number;
  now?: () => number;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

export interface ContentStats {
  matches: number;
  timeouts: number;
  /** Matches not run: over budget, quarantined, or too many waiting. */
  skipped: number;
  workerRestarts: number;
  /** Worker time spent on matches (ms). */
  busyMs: number;
}

interface Window {
  start: number;
  spent: number;
  byOwner: Map<string, number>;
}

/**
 * Runs content regexes for many owners (a VIP, a firewall) in one worker thread. Each owner's matches run one at a
 * time, so one owner's slow pages queue behind each other, not in front of everyone else's. Over the node's budget
 * an owner past its fair share is refused; a regex that ran into its limit is quarantined for its owner. Either way
 * the check is unknown, never down: the backend answered, and what it costs to read its answer says nothing about
 * its health; an alarm names the owner.
 */
export class ContentMatcher {
  readonly budgetMs: number;
  readonly limitMs: number;
  readonly quarantineMs: number;
  readonly stats: ContentStats = { matches: 0, timeouts: 0, skipped: 0, workerRestarts: 0, busyMs: 0 };
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, (a: ContentAnswer | null) => void>();
  private readonly tails = new Map<string, Promise<unknown>>();
  private readonly waiting = new Map<string, number>();
  private readonly quarantined = new Map<string, { until: number; reason: string }>();
  private readonly overBudget = new Map<string, { at: number; spentMs: number }>();
  private window: Window;
  private previous: Window;
  private closed = false;

  constructor(private readonly o: ContentMatcherOptions = {}) {
    this.budgetMs = o.regexMsPerSecond ?? DEFAULT_REGEX_MS_PER_SECOND;
    this.limitMs = o.limitMs ?? REGEX_LIMIT_MS;
    this.quarantineMs = o.quarantineMs ?? REGEX_QUARANTINE_MS;
    this.window = { start: this.now(), spent: 0, byOwner: new Map() };
    this.previous = this.window;
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  /** The current one-second window of spending (a new one when the last is over). */
  private current(): Window {
    const now = this.now();
    if (now - this.window.start >= 1000) {
      this.previous = this.window;
      this.window = { start: now, spent: 0, byOwner: new Map() };
    }
    return this.window;
  }

  /** Does `body` match `regex`? Queued behind the owner's earlier matches; see the class. */
  match(owner: string, regex: string, body: string): Promise<ContentVerdict> {
    if (this.closed) return Promise.resolve({ ok: false, unknown: true, reason: 'content matcher closed' });
    const waiting = this.waiting.get(owner) ?? 0;
    if (waiting >= MAX_WAITING_PER_OWNER) return Promise.resolve(this.skip(`${waiting} content matches of ${owner} waiting`));
    this.waiting.set(owner, waiting + 1);
    const run = (this.tails.get(owner) ?? Promise.resolve()).then(() => this.runOne(owner, regex, body));
    const tail = run.finally(() => {
      const n = (this.waiting.get(owner) ?? 1) - 1;
      if (n) this.waiting.set(owner, n);
      else this.waiting.delete(owner);
      if (this.tails.get(owner) === tail) this.tails.delete(owner);
    });
    this.tails.set(owner, tail);
    return run;
  }

  private skip(reason: string): ContentVerdict {
    this.stats.skipped++;
    return { ok: false, unknown: true, reason };
  }

  private async runOne(owner: string, regex: string, body: string): Promise<ContentVerdict> {
    const q = this.quarantined.get(owner);
    if (q && q.until > this.now()) return this.skip(q.reason);
    if (q) this.quarantined.delete(owner);
    const w = this.current();
    const mine = w.byOwner.get(owner) ?? 0;
    // Fair share: the budget split over the owners that matched in this window or the last one.
    const active = new Set([...w.byOwner.keys(), ...this.previous.byOwner.keys(), owner]).size;
    if (w.spent >= this.budgetMs && mine >= this.budgetMs / active) {
      this.overBudget.set(owner, { at: this.now(), spentMs: Math.round(mine) });
      return this.skip(
        `content regexes over the node's budget (${Math.round(w.spent)} of ${this.budgetMs} ms this second; ${owner} used ${Math.round(mine)} ms)`,
      );
    }
    const a = await this.send({ regex, body, limitMs: this.limitMs });
    if (!a) return this.skip('content match worker failed; restarting it');
    this.stats.matches++;
    this.stats.busyMs += a.ms;
    const cw = this.current();
    cw.spent += a.ms;
    cw.byOwner.set(owner, (cw.byOwner.get(owner) ?? 0) + a.ms);
    if (a.result === 'timeout') {
      this.stats.timeouts++;
      const reason = `content regex of ${owner} ran longer than ${this.limitMs} ms on a member's page: its checks are unknown for ${this.quarantineMs / 1000} s, then tried again`;
      this.quarantined.set(owner, { until: this.now() + this.quarantineMs, reason });
      this.o.log?.(`ALARM ${reason}`, { event: 'content-regex-quarantine', owner });
      return { ok: false, unknown: true, reason };
    }
    if (a.result === 'error') return this.skip('content regex failed to run');
    return a.result ? { ok: true, reason: 'content matches' } : { ok: false, reason: 'content mismatch' };
  }

  private send(job: Omit<ContentJob, 'id'>): Promise<ContentAnswer | null> {
    const w = this.worker ?? this.spawn();
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      w.postMessage({ id, ...job } satisfies ContentJob);
    });
  }

  private spawn(): Worker {
    const w = new Worker(join(__dirname, 'content-worker.js'));
    // The worker never holds the process open: a controller that is done exits.
    w.unref();
    w.on('message', (a: ContentAnswer) => {
      const cb = this.pending.get(a.id);
      this.pending.delete(a.id);
      cb?.(a);
    });
    const gone = (why: string) => {
      if (this.worker !== w) return;
      this.worker = null;
      for (const cb of this.pending.values()) cb(null);
      this.pending.clear();
      if (!this.closed) {
        this.stats.workerRestarts++;
        this.o.log?.(`content match worker ${why}; the next match starts another`, { event: 'content-worker-exit' });
      }
    };
    w.on('error', (e) => gone(`failed: ${e.message}`));
    w.on('exit', (code) => gone(`exited (code ${code})`));
    this.worker = w;
    return w;
  }

  /** Drops the over-budget marks older than ALARM_HOLD_MS. */
  private prune(now: number): void {
    for (const [owner, b] of this.overBudget) if (now - b.at > ALARM_HOLD_MS) this.overBudget.delete(owner);
  }

  /** Owners whose content checks are unknown now: quarantined, or refused over budget within ALARM_HOLD_MS. */
  alarms(): string[] {
    const now = this.now();
    this.prune(now);
    return [
      ...[...this.quarantined.values()].filter((q) => q.until > now).map((q) => q.reason),
      ...[...this.overBudget].map(
        ([owner, b]) =>
          `content regexes of ${owner} are over the node's budget of ${this.budgetMs} ms/s (${b.spentMs} ms in a second): some of its checks are unknown`,
      ),
    ];
  }

  /** Owners with an alarm now (see alarms). */
  alarmed(): string[] {
    const now = this.now();
    this.prune(now);
    return [...new Set([...[...this.quarantined].filter(([, q]) => q.until > now).map(([o]) => o), ...this.overBudget.keys()])];
  }

  close(): void {
    this.closed = true;
    const w = this.worker;
    this.worker = null;
    for (const cb of this.pending.values()) cb(null);
    this.pending.clear();
    void w?.terminate();
  }
}
