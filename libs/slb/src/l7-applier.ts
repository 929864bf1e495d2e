// The L7 VIPs' way into HAProxy: render them with the health the SLB knows, make HAProxy run them, and remember
// what it was told and why the last try failed. Apart from the nft writes: HAProxy failing never holds back an L4
// VIP. Shell layer of libs/slb.
import type { ResolvedVip } from '@fwlb/config';
import { isProxied } from '@fwlb/config';
import type { L7Engine } from './haproxy';
import type { HaproxyStat } from './haproxy-cli';
import { L7Panic, L7Want, renderL7 } from './haproxy-render';
import { healthKey } from './render';

export class L7Applier {
  /** What HAProxy was last told to run (null while no L7 VIP was ever applied). */
  private want: L7Want | null = null;
  /** Why the last apply failed (the next pass tries again), or null. */
  private failed: string | null = null;

  constructor(
    private readonly engine: L7Engine | undefined,
    private readonly log?: (msg: string, fields?: Record<string, unknown>) => void,
  ) {}

  /** Whether this node can serve L7 VIPs at all. */
  get available(): boolean {
    return !!this.engine;
  }

  /** A pass after a failed apply tries again even when no L7 VIP changed. */
  get retryDue(): boolean {
    return this.failed !== null;
  }

  /**
   * Renders the L7 VIPs of `vips` with the health `up` gives and makes HAProxy run them (runtime API, or a checked
   * reload when the structure changed). Nothing to do on a node that never had an L7 VIP.
   */
  async apply(vips: readonly ResolvedVip[], up: (healthKey: string) => boolean): Promise<void> {
    const l7 = vips.filter(isProxied);
    if (!this.engine || (!l7.length && !this.want)) return;
    const want = renderL7(l7, (v, m) => up(healthKey(v, m)), this.engine.paths);
    try {
      const r = await this.engine.apply(want);
      if (r.reloaded) this.log?.(`HAProxy loaded a new config: ${l7.length} VIPs (mode http or tcp)`, { event: 'haproxy-reload', vips: l7.length });
    } catch (e) {
      this.failed = e instanceof Error ? e.message : String(e);
      throw e;
    }
    this.want = want;
    this.failed = null;
  }

  /** A pass's apply: a failure is an alarm and a retry on the next pass, never a failed pass for the L4 VIPs. */
  async applyOrAlarm(vips: readonly ResolvedVip[], up: (healthKey: string) => boolean): Promise<void> {
    await this.apply(vips, up).catch((e) => this.log?.(`ALARM VIPs HAProxy serves not applied, will retry: ${(e as Error).message}`));
  }

  /** HAProxy's counters, or `prev` when it cannot say (or never ran an L7 VIP). */
  async stats(prev: Map<string, HaproxyStat>): Promise<Map<string, HaproxyStat>> {
    if (!this.engine || !this.want) return prev;
    return this.engine.stats().catch(() => prev);
  }

  /** The pools HAProxy serves in panic now (as last applied). */
  panics(): L7Panic[] {
    return this.want?.panics ?? [];
  }

  alarms(vips: readonly ResolvedVip[]): string[] {
    const out = this.engine && this.want ? this.engine.alarms() : [];
    for (const p of this.panics())
      out.push(
        `VIP ${p.vip} pool ${p.pool} in panic: ${p.healthy} of ${p.enabled} enabled members up (threshold ${Math.round(p.threshold * 100)}%), every enabled member takes requests`,
      );
    if (this.failed) out.push(`VIPs HAProxy serves not applied (HAProxy keeps what it ran; L4 VIPs are not affected): ${this.failed}`);
    if (!this.engine && vips.some(isProxied))
      out.push(`HAProxy is not available on this node: ${vips.filter(isProxied).length} VIPs it would serve (mode http or tcp) are not served`);
    return out;
  }

  /** Whether HAProxy runs (null: not on this node). */
  up(): boolean | null {
    return this.engine ? this.engine.status().running === true : null;
  }

  status(): Record<string, unknown> | null {
    return this.engine ? this.engine.status() : null;
  }
}
