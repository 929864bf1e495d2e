// Runs one member's checks on its timer's schedule and reports transitions; the I/O shell around HealthTimer.
import type { Checker, CheckTarget } from './checker';
import { HealthEvent, HealthState, HealthTimer, ProbeResult, TimerConfig } from './timer';

export interface MonitorOptions {
  name: string;
  checker: Checker;
  target: CheckTarget;
  timers: TimerConfig;
  initial?: HealthState;
  /** A precondition checked before each probe, e.g. this node's own link to the member; a string is the failure reason. */
  precheck?: () => string | null;
  onEvent: (name: string, ev: HealthEvent) => void;
  /** Every check's result, unknown ones included (metrics). */
  onResult?: (name: string, r: ProbeResult) => void;
  /**
   * First check at a random point of the first interval instead of one interval after start: thousands of monitors
   * started together (an SLB start) then probe evenly spread instead of in one burst every period.
   */
  spread?: boolean;
  /**
   * Checks start on a grid of this many ms (0: when due). Why: thousands of monitors each waking the process for
   * its own check cost an SLB more than the checks; on a grid, the checks due in one slot share a wakeup and one
   * write to the probe helper, which answers them in one write too. The delay is by design, not this node's
   * lateness: it is not excused.
   */
  gridMs?: number;
  now?: () => number;
}

/** How long after a check's deadline its answer may be read before the wait counts as this node's own stall. */
const READ_SLACK_MS = 50;

export class HealthMonitor {
  readonly timer: HealthTimer;
  last: ProbeResult | null = null;
  checks = 0;
  /** Checks that could not be run (the probe helper was unavailable); the state held meanwhile. */
  unknownChecks = 0;
  /** Set while the last check could not be run: why. */
  unknown: string | null = null;
  private handle: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly o: MonitorOptions) {
    this.timer = new HealthTimer(o.timers, this.now(), Math.random, o.initial ?? 'up');
    if (o.spread) this.timer.nextCheckAt = this.now() + Math.random() * this.timer.cfg.interval;
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  get state(): HealthState {
    return this.timer.state;
  }

  start(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    const grid = this.o.gridMs ?? 0;
    const due = grid > 0 ? Math.ceil(this.timer.nextCheckAt / grid) * grid : this.timer.nextCheckAt;
    this.handle = setTimeout(
      () => {
        // Why the catch: a check that throws (a bad spec, a bug) must not kill the process or stop this monitor.
        this.once(due).catch((e) => {
          this.unknownChecks++;
          this.unknown = `check failed to run: ${(e as Error).message}`;
          this.timer.unknown(this.now());
          this.schedule();
        });
      },
      Math.max(0, due - this.now()),
    );
  }

  private async once(due: number): Promise<void> {
    const started = this.now();
    const pre = this.o.precheck?.() ?? null;
    const r: ProbeResult = pre ? { ok: false, reason: pre } : await this.o.checker.check(this.o.target, this.o.timers.response);
    if (this.stopped) return;
    const now = this.now();
    // This node's own lateness: the check ran after it was due, or its answer was read well after its deadline.
    this.timer.excuse(Math.max(0, started - due) + Math.max(0, now - started - this.timer.cfg.response - READ_SLACK_MS));
    this.o.onResult?.(this.o.name, r);
    if (r.unknown) {
      this.unknownChecks++;
      this.unknown = r.reason ?? 'unknown';
      this.timer.unknown(now);
      return this.schedule();
    }
    this.unknown = null;
    this.checks++;
    this.last = r;
    // Own-link failures are not worth retrying: the path is gone.
    const ev = pre && this.timer.state === 'up' ? this.timer.forceDown(now, pre) : (this.timer.tick(now) ?? this.timer.record(r, now));
    if (ev) this.o.onEvent(this.o.name, ev);
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.handle) clearTimeout(this.handle);
  }
}
