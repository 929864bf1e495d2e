// The SLB's member health: one monitor per health key (a RIP, port, check and timers probed once however many VIPs
// share it), which VIPs use each key, and each key's last verdict; shell layer of libs/slb.
import type { ResolvedVip } from '@fwlb/config';
import { memberKey, probeSpec } from '@fwlb/config';
import type { HealthEvent, HealthState, ProbeResult } from '@fwlb/health';
import { healthKey } from './render';

export interface MonitorHandle {
  readonly state: HealthState;
  readonly last: ProbeResult | null;
  /** Set while the last check gave no verdict (helper down, content regex over budget): why. */
  readonly unknown?: string | null;
  stop(): void;
}

/** Starts one health monitor for a (RIP, port, check, timers); main.ts wires libs/health, tests a fake. */
export type MonitorFactory = (
  key: string,
  vip: ResolvedVip,
  member: { address: string; port: number },
  initial: HealthState,
  onEvent: (ev: HealthEvent) => void,
) => MonitorHandle;

export interface MemberHealth {
  up: boolean;
  reason: string;
  since: number;
}

type Member = { address: string; port: number; pool?: string; proxyProtocol?: 'v1' | 'v2' };

/** Monitors a start creates per event-loop turn: 8,000 of them in one block would hold every request back. */
const START_BATCH = 500;

export class MonitorPool {
  private readonly health = new Map<string, MemberHealth>();
  private readonly monitors = new Map<string, MonitorHandle>();
  /** Which VIPs use each health key: a health event re-renders those VIPs only. */
  private readonly users = new Map<string, Set<string>>();
  /** Monitors not started yet (see START_BATCH). */
  private readonly unstarted = new Map<string, () => void>();
  private starting: NodeJS.Immediate | null = null;
  private drained: (() => void)[] = [];
  private stopped = false;

  /**
   * `changed`: a key's verdict changed; its users (VIP ids) must be rendered again. `now`: the clock of the initial
   * verdicts.
   */
  constructor(
    private readonly factory: MonitorFactory,
    private readonly changed: (users: ReadonlySet<string>) => void,
    private readonly now: () => number,
    private readonly log?: (msg: string, fields?: Record<string, unknown>) => void,
  ) {}

  /** Whether the member behind a health key is up, as its checks last said (unknown keys are down). */
  readonly up = (key: string): boolean => this.health.get(key)?.up ?? false;

  healthOf(key: string): MemberHealth | undefined {
    return this.health.get(key);
  }

  monitorOf(key: string): MonitorHandle | undefined {
    return this.monitors.get(key);
  }

  /** Monitors running or waiting to start. */
  get size(): number {
    return this.monitors.size + this.unstarted.size;
  }

  /**
   * Moves one VIP's health keys from `before` to `after`: a key new to the node starts a monitor whose initial state
   * comes from `initialOf`; a key no VIP uses any more stops its monitor. Costs the members of this VIP only.
   * `defer`: start the new monitors a batch per event-loop turn (a start with thousands of them).
   */
  retarget(before: ResolvedVip | undefined, after: ResolvedVip | undefined, initialOf: (m: Member) => HealthState, defer = false): void {
    const id = (after ?? before)!.id;
    const keep = new Set<string>();
    for (const m of after?.members ?? []) {
      const k = healthKey(after!, m);
      keep.add(k);
      let u = this.users.get(k);
      if (!u) this.users.set(k, (u = new Set()));
      u.add(id);
      if (this.monitors.has(k) || this.unstarted.has(k)) continue;
      const initial = initialOf(m);
      this.health.set(k, {
        up: initial === 'up',
        reason: initial === 'up' ? 'known up' : 'down (not in service when this controller started, or new): waiting for checks',
        since: this.now(),
      });
      const create = () => this.monitors.set(k, this.start(k, after!, m, initial));
      if (defer) this.unstarted.set(k, create);
      else create();
    }
    if (this.unstarted.size) this.startSoon();
    for (const m of before?.members ?? []) {
      const k = healthKey(before!, m);
      if (keep.has(k)) continue;
      const u = this.users.get(k);
      u?.delete(id);
      if (u && u.size === 0) {
        this.users.delete(k);
        this.unstarted.delete(k);
        this.monitors.get(k)?.stop();
        this.monitors.delete(k);
        this.health.delete(k);
      }
    }
  }

  /** An L7 member is probed with its pool's check and timers where the pool has its own. */
  private start(k: string, v: ResolvedVip, m: Member, initial: HealthState): MonitorHandle {
    return this.factory(k, { ...v, ...probeSpec(v, m) }, m, initial, (ev) => {
      this.health.set(k, { up: ev.to === 'up', reason: ev.reason, since: ev.at });
      const users = this.users.get(k) ?? new Set<string>();
      this.log?.(`member ${memberKey(m)} (${v.check.kind}) ${ev.to.toUpperCase()}: ${ev.reason}`, {
        event: 'member-health',
        member: memberKey(m),
        check: v.check.kind,
        vips: [...users],
        from: ev.from,
        to: ev.to,
        reason: ev.reason,
      });
      this.changed(users);
    });
  }

  private startSoon(): void {
    if (this.starting || this.stopped) return;
    this.starting = setImmediate(() => {
      this.starting = null;
      let n = 0;
      for (const [k, create] of this.unstarted) {
        this.unstarted.delete(k);
        create();
        if (++n >= START_BATCH) break;
      }
      if (this.unstarted.size) this.startSoon();
      else for (const f of this.drained.splice(0)) f();
    });
  }

  /** Resolves once every deferred monitor runs (a batch per event-loop turn: requests are served between them). */
  allStarted(): Promise<void> {
    if (!this.unstarted.size) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    if (this.starting) clearImmediate(this.starting);
    this.unstarted.clear();
    for (const f of this.drained.splice(0)) f();
    for (const m of this.monitors.values()) m.stop();
    this.monitors.clear();
  }
}
