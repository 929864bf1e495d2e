// The last minutes of each firewall as this node saw them: its traffic from the kernel's counters, sampled, and
// every change of its state with the reason, for the status page and GET /firewalls/history. Pure layer of
// apps/balancer: the caller passes the time and what it observed.

/** How often the traffic is sampled, and how many samples (six minutes) and events are kept. */
export const HISTORY_SAMPLE_MS = 5000;
export const HISTORY_SAMPLES = 72;
export const HISTORY_EVENTS = 200;

type Counter = { packets: number; bytes: number } | null;

/** What the history reads of a firewall (a subset of /firewalls' entries). */
export interface ObservedFirewall {
  id: string;
  enabled: boolean;
  healthy: boolean;
  link: boolean;
  live: boolean;
  health: { reason: string } | null;
  sent: Counter;
  newFlows: Counter;
  /** Sessions on it in the shared table (null without one). */
  sessions?: number | null;
}

/**
 * One change: `health` (this node's probes), `link` (its own link), `admin` (the operator), `live` (whether the kernel
 * gives it new sessions: what the others add up to, with the agreement of the other nodes).
 */
export interface FirewallEvent {
  at: number;
  firewall: string;
  what: 'health' | 'link' | 'admin' | 'live';
  up: boolean;
  reason: string;
}

/** The kernel's counters of each firewall at `at` (cumulative: a rate is the difference of two samples). */
export interface TrafficSample {
  at: number;
  firewalls: Record<string, { sentPackets: number; sentBytes: number; newFlows: number; sessions: number | null; live: boolean }>;
}

/** A bounded list: the newest `size` items, oldest first. */
class Ring<T> {
  private items: T[] = [];
  constructor(private readonly size: number) {}
  push(x: T): void {
    this.items.push(x);
    if (this.items.length > this.size) this.items.splice(0, this.items.length - this.size);
  }
  list(): readonly T[] {
    return this.items;
  }
  last(): T | undefined {
    return this.items[this.items.length - 1];
  }
}

/** Why a firewall takes no new sessions, from its state: the first cause that holds. */
function notLiveReason(f: ObservedFirewall): string {
  if (!f.enabled) return 'disabled by the operator';
  if (!f.link) return 'its link is down';
  if (!f.healthy) return `down: ${f.health?.reason || 'health checks failed'}`;
  return 'not seen up by every node, or the probes are in panic';
}

export class FirewallHistory {
  private readonly events = new Ring<FirewallEvent>(HISTORY_EVENTS);
  private readonly samples = new Ring<TrafficSample>(HISTORY_SAMPLES);
  private readonly seen = new Map<string, ObservedFirewall>();

  /**
   * The firewalls' state now: a change since the last call is an event. The first call only learns the state, so a
   * restart does not look like every firewall coming up.
   */
  observe(at: number, firewalls: readonly ObservedFirewall[]): void {
    for (const f of firewalls) {
      const was = this.seen.get(f.id);
      this.seen.set(f.id, f);
      if (!was) continue;
      const add = (what: FirewallEvent['what'], up: boolean, reason: string) => this.events.push({ at, firewall: f.id, what, up, reason });
      if (was.enabled !== f.enabled) add('admin', f.enabled, f.enabled ? 'enabled by the operator' : 'disabled by the operator');
      if (was.link !== f.link) add('link', f.link, f.link ? 'its link is up' : 'its link is down');
      if (was.healthy !== f.healthy) add('health', f.healthy, f.health?.reason || (f.healthy ? 'checks pass' : 'checks fail'));
      if (was.live !== f.live) add('live', f.live, f.live ? 'takes new sessions' : notLiveReason(f));
    }
  }

  /** The kernel's counters as listed at `at`; a listing no newer than the last sample's adds nothing. */
  sample(at: number, firewalls: readonly ObservedFirewall[]): void {
    if (at <= (this.samples.last()?.at ?? -1)) return;
    this.samples.push({
      at,
      firewalls: Object.fromEntries(
        firewalls.map((f) => [
          f.id,
          { sentPackets: f.sent?.packets ?? 0, sentBytes: f.sent?.bytes ?? 0, newFlows: f.newFlows?.packets ?? 0, sessions: f.sessions ?? null, live: f.live },
        ]),
      ),
    });
  }

  view() {
    return { sampleMs: HISTORY_SAMPLE_MS, sampleCount: HISTORY_SAMPLES, samples: this.samples.list(), events: this.events.list() };
  }
}
