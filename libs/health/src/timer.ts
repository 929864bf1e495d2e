// The health timer state machine (interval, response, retries, timeout, dead interval, rise, jitter); pure layer of libs/health.

export interface TimerConfig {
  /** Time between checks while UP (ms). */
  interval: number;
  /** Longest wait for one reply (ms); must be smaller than interval. */
  response: number;
  /** Failed attempts before DOWN; retries run at `interval`. */
  retries: number;
  /**
   * Longest time from the first failure to DOWN (ms), whatever `retries` says; time this node was late to run or read
   * a check does not count. @default retries * (interval * (1 + jitter) + response), long enough for `retries` checks
   * that each time out
   */
  timeout?: number;
  /** Check period while DOWN (ms). @default interval */
  deadInterval?: number;
  /** Successes needed to come back UP. @default 1 */
  rise?: number;
  /** Spread of each period, as a fraction: 0.1 draws from ±10%. @default 0.1 */
  jitter?: number;
}

export type HealthState = 'up' | 'down';

export interface ProbeResult {
  ok: boolean;
  /** Why it failed: refused, timeout, status 503, content mismatch, ... */
  reason?: string;
  latencyMs?: number;
  /** The check could not be run (its helper was unavailable): no evidence either way. */
  unknown?: boolean;
}

export interface HealthEvent {
  from: HealthState;
  to: HealthState;
  at: number;
  reason: string;
  latencyMs?: number;
}

export class TimerConfigError extends Error {
  readonly code = 'FWLB_HEALTH_TIMERS_INVALID';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'TimerConfigError';
  }
}

export function validateTimers(c: TimerConfig): Required<TimerConfig> {
  const pos = (f: keyof TimerConfig, v: number | undefined) => {
    if (v !== undefined && !(Number.isFinite(v) && v > 0)) throw new TimerConfigError(f, `must be a positive number, got ${v}`);
  };
  pos('interval', c.interval);
  pos('response', c.response);
  pos('timeout', c.timeout);
  pos('deadInterval', c.deadInterval);
  if (c.response >= c.interval) throw new TimerConfigError('response', `response (${c.response} ms) must be smaller than interval (${c.interval} ms)`);
  if (!Number.isInteger(c.retries) || c.retries < 1) throw new TimerConfigError('retries', `must be an integer >= 1, got ${c.retries}`);
  const rise = c.rise ?? 1;
  if (!Number.isInteger(rise) || rise < 1) throw new TimerConfigError('rise', `must be an integer >= 1, got ${rise}`);
  const jitter = c.jitter ?? 0.1;
  if (!(jitter >= 0 && jitter < 1)) throw new TimerConfigError('jitter', `must be in [0, 1), got ${jitter}`);
  // A check that times out is recorded `response` after it was sent, and the next one is sent up to a jittered
  // interval after that: retries * interval alone would cut a member off before its last attempt came back. The
  // retries-th failure comes (retries - 1) such periods after the first; one more is the margin for reading it late.
  const attempts = Math.ceil(c.retries * (c.interval * (1 + jitter) + c.response));
  return {
    interval: c.interval,
    response: c.response,
    retries: c.retries,
    timeout: c.timeout ?? attempts,
    deadInterval: c.deadInterval ?? c.interval,
    rise,
    jitter,
  };
}

/**
 * One member's health. The caller runs a probe at `nextCheckAt`, waits at most `response`, and feeds the
 * result to `record`; `tick` applies the timeout rule between results. Time and randomness are parameters.
 */
export class HealthTimer {
  readonly cfg: Required<TimerConfig>;
  state: HealthState;
  private failures = 0;
  private successes = 0;
  private firstFailureAt: number | null = null;
  private lastReason = '';
  nextCheckAt: number;

  constructor(
    cfg: TimerConfig,
    now: number,
    private readonly rand: () => number = Math.random,
    initial: HealthState = 'up',
  ) {
    this.cfg = validateTimers(cfg);
    this.state = initial;
    this.nextCheckAt = now + this.period();
  }

  private period(): number {
    const base = this.state === 'up' ? this.cfg.interval : this.cfg.deadInterval;
    return base * (1 + this.cfg.jitter * (this.rand() * 2 - 1));
  }

  private go(to: HealthState, now: number, reason: string, latencyMs?: number): HealthEvent {
    const ev: HealthEvent = { from: this.state, to, at: now, reason, ...(latencyMs !== undefined ? { latencyMs } : {}) };
    this.state = to;
    this.failures = 0;
    this.successes = 0;
    this.firstFailureAt = null;
    return ev;
  }

  record(r: ProbeResult, now: number): HealthEvent | null {
    let ev: HealthEvent | null = null;
    if (this.state === 'up') {
      if (r.ok) {
        this.failures = 0;
        this.firstFailureAt = null;
      } else {
        this.failures++;
        this.firstFailureAt ??= now;
        this.lastReason = r.reason ?? 'failed';
        if (this.failures >= this.cfg.retries)
          ev = this.go('down', now, `${this.lastReason} (${this.failures} of ${this.cfg.retries} attempts failed)`, r.latencyMs);
        else if (now - this.firstFailureAt >= this.cfg.timeout)
          ev = this.go('down', now, `${this.lastReason} (timeout ${this.cfg.timeout} ms since first failure)`, r.latencyMs);
      }
    } else if (r.ok) {
      this.successes++;
      if (this.successes >= this.cfg.rise) ev = this.go('up', now, `${this.successes} of ${this.cfg.rise} checks passed`, r.latencyMs);
    } else {
      this.successes = 0;
    }
    this.nextCheckAt = now + this.period();
    return ev;
  }

  /**
   * A check that could not be run: the state holds (health that cannot be measured is unknown, not down), and a
   * failure streak in progress is forgotten, so that a later failure starts a fresh count instead of completing
   * an old one across the gap.
   */
  unknown(now: number): null {
    this.failures = 0;
    this.successes = 0;
    this.firstFailureAt = null;
    this.nextCheckAt = now + this.period();
    return null;
  }

  /**
   * `ms` during which this node could not run or read a check (its event loop or its helper stalled): that time is
   * the node's, not the member's, so the timeout rule's clock since the first failure does not count it.
   */
  excuse(ms: number): void {
    if (this.firstFailureAt !== null && ms > 0) this.firstFailureAt += ms;
  }

  /** DOWN at once, for failures that retries cannot help (this node's own link is down). */
  forceDown(now: number, reason: string): HealthEvent | null {
    if (this.state === 'down') return null;
    const ev = this.go('down', now, reason);
    this.nextCheckAt = now + this.period();
    return ev;
  }

  /** The timeout rule, applied between results: DOWN once `timeout` has passed since the first failure. */
  tick(now: number): HealthEvent | null {
    if (this.state === 'up' && this.firstFailureAt !== null && now - this.firstFailureAt >= this.cfg.timeout) {
      const ev = this.go('down', now, `${this.lastReason} (timeout ${this.cfg.timeout} ms since first failure)`);
      this.nextCheckAt = now + this.period();
      return ev;
    }
    return null;
  }
}
