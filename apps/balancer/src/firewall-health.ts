// Firewall health: one monitor per firewall probing the twin node through that firewall (marked probes),
// plus this node's own link to it; transitions move buckets through the reconciler. Shell layer of apps/balancer.
import { readFileSync } from 'node:fs';
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { anyOf, ContentMatcher, createChecker, HealthMonitor, helperAlarms, ProbeHelper, ProbeResult } from '@fwlb/health';
import type { Membership } from './membership';
import { slots } from './membership';

/** This node's own link: a firewall whose interface is down is down at once, without waiting for retries. */
export function linkProblem(ifname: string): string | null {
  try {
    const state = readFileSync(`/sys/class/net/${ifname}/operstate`, 'utf8').trim();
    return state === 'up' || state === 'unknown' ? null : `own link ${ifname} is ${state}`;
  } catch {
    return `own link ${ifname} does not exist`;
  }
}

export interface FirewallHealthHooks {
  /** Ask for a reconcile soon. */
  trigger: () => void;
  log: (m: string, fields?: Record<string, unknown>) => void;
  /** This node's whole view after every change, for the shared health views (layer 2). */
  onView?: (view: Record<string, boolean>) => void;
  /** Every check's result (metrics). */
  onResult?: (firewall: string, r: ProbeResult) => void;
}

/** The firewall health of a node: one monitor per firewall, replaced when a reload changes what it checks. */
export class FirewallHealth {
  private readonly monitors = new Map<string, { monitor: HealthMonitor; key: string }>();
  private readonly helper: ProbeHelper;
  private readonly content: ContentMatcher;

  private constructor(
    private config: ResolvedBalancerConfig,
    private readonly membership: Membership,
    private readonly hooks: FirewallHealthHooks,
  ) {
    const { log } = hooks;
    this.helper = ProbeHelper.start(undefined, undefined, {
      onStatus: (s) => log(s.up ? `probe helper up (${s.restarts} restarts)` : `ALARM probe helper down: ${s.lastError}; firewall health holds its last state`),
    });
    // An http-content regex runs in a worker thread, never on the thread that answers the API and reconciles.
    this.content = new ContentMatcher({ log });
    this.reconfigure(config);
  }

  static start(config: ResolvedBalancerConfig, membership: Membership, hooks: FirewallHealthHooks): FirewallHealth | null {
    return config.health ? new FirewallHealth(config, membership, hooks) : null;
  }

  /**
   * Start the monitors a config asks for: a firewall whose check, mark, interface or timers are unchanged keeps its
   * monitor (and its state); a changed one gets a new monitor that starts from the state the membership holds (a
   * firewall added by a reload: down, until `rise` checks pass); a removed one's monitor stops.
   */
  reconfigure(next: ResolvedBalancerConfig): void {
    this.config = next;
    const h = next.health;
    const healthy = new Map(this.membership.views().map((v) => [v.id, v.healthy]));
    const want = new Set<string>();
    for (const s of slots(next)) {
      if (!h) break;
      const fw = next.firewalls[s.index];
      want.add(fw.id);
      const key = JSON.stringify([fw.interface, s.mark, h]);
      const have = this.monitors.get(fw.id);
      if (have?.key === key) continue;
      have?.monitor.stop();
      const monitor = this.monitor(fw, s.mark, healthy.get(fw.id) === false ? 'down' : 'up');
      this.monitors.set(fw.id, { monitor, key });
      monitor.start();
    }
    for (const [id, { monitor }] of this.monitors)
      if (!want.has(id)) {
        monitor.stop();
        this.monitors.delete(id);
      }
  }

  private monitor(fw: ResolvedBalancerConfig['firewalls'][number], mark: number, initial: 'up' | 'down'): HealthMonitor {
    const h = this.config.health!;
    const { trigger, log, onView, onResult } = this.hooks;
    const membership = this.membership;
    const checker = createChecker({ ...h.check, mark }, this.helper, { matcher: this.content, owner: `firewall ${fw.id}` });
    return new HealthMonitor({
      name: fw.id,
      // Several targets (the other side's nodes): the firewall is up while any of them answers through it.
      checker: h.targets.length > 1 ? anyOf(checker, h.targets) : checker,
      target: { address: h.targets[0] },
      timers: h.timers,
      initial,
      precheck: () => {
        const p = linkProblem(fw.interface);
        // The kernel deleted this firewall's routes when the link went down; put them back as soon as it is up.
        // A link that goes down also ends the restore of its flows at once (they are re-hashed, not black-holed).
        // On a shared transit segment the link is the same for every firewall on it: they change together,
        // so a node that lost its only link abstains at once instead of vetoing the firewalls one by one.
        let changed = false;
        for (const f of this.config.firewalls) if (f.interface === fw.interface) changed = membership.setLink(f.id, p === null) || changed;
        if (changed) trigger();
        return p;
      },
      onResult: (id, res) => {
        if (res.ok && res.latencyMs !== undefined) membership.setLatency(id, res.latencyMs);
        onResult?.(id, res);
      },
      onEvent: (id, ev) => {
        log(`firewall ${id} ${ev.to.toUpperCase()}: ${ev.reason}`, {
          event: 'firewall-health',
          firewall: id,
          from: ev.from,
          to: ev.to,
          reason: ev.reason,
          ...(ev.latencyMs !== undefined ? { latencyMs: ev.latencyMs } : {}),
        });
        const wasPanic = membership.snapshot().panic;
        membership.setHealth(id, ev.to === 'up', ev.reason, ev.latencyMs);
        const panic = membership.snapshot().panic;
        if (panic && !wasPanic) log(`ALARM ${panic}`);
        if (!panic && wasPanic) log('panic over: the probes are believed again');
        onView?.(membership.ownView());
        trigger();
      },
    });
  }

  alarms(): string[] {
    return [...helperAlarms(this.helper), ...this.content.alarms()];
  }

  helperUp(): boolean {
    return this.helper.status().up;
  }

  stop(): void {
    for (const { monitor } of this.monitors.values()) monitor.stop();
    this.monitors.clear();
    this.helper.close();
    this.content.close();
  }
}
