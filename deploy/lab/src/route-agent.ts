// The lab's route agent (node redundancy): the stand-in for the upstream routers' BGP sessions with the
// nodes (health-driven announcements, BFD). It polls every balancer node's GET /health and keeps each ECMP route
// of the topology (the routers' and the firewalls' routes over a side's nodes) to the nodes that answer. I/O layer
// of deploy/lab.
import type { Lab } from './lab';

export interface RouteAgentOptions {
  /** Milliseconds between polls. @default 100 */
  intervalMs?: number;
  /** Polls without an answer before a node's next hops are withdrawn. @default 2 */
  misses?: number;
  /** Answers in a row before a node's next hops come back. @default 2 */
  rise?: number;
  /** Milliseconds a poll waits for an answer. @default 150 */
  timeoutMs?: number;
}

export interface RouteEvent {
  at: number;
  node: string;
  in: boolean;
}

export class RouteAgent {
  readonly events: RouteEvent[] = [];
  private readonly inRoute = new Map<string, boolean>();
  private readonly streak = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private readonly o: Required<RouteAgentOptions>;

  constructor(
    private readonly lab: Lab,
    o: RouteAgentOptions = {},
  ) {
    this.o = { intervalMs: 100, misses: 2, rise: 2, timeoutMs: 150, ...o };
    for (const n of lab.balancerNames()) this.inRoute.set(n, true);
  }

  start(): void {
    const tick = async () => {
      await this.poll();
      if (this.timer) this.timer = setTimeout(tick, this.o.intervalMs);
    };
    this.timer = setTimeout(tick, this.o.intervalMs);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The nodes whose next hops are in the routes now. */
  routed(): string[] {
    return [...this.inRoute].filter(([, v]) => v).map(([k]) => k);
  }

  private async answers(node: string): Promise<boolean> {
    const poll = this.lab.api(node, 'GET', '/health').then(
      (r) => r.status === 200,
      () => false,
    );
    const late = new Promise<boolean>((r) => setTimeout(() => r(false), this.o.timeoutMs).unref());
    return Promise.race([poll, late]);
  }

  async poll(): Promise<void> {
    const nodes = this.lab.balancerNames();
    const ok = await Promise.all(nodes.map((n) => this.answers(n)));
    const changed = new Set<'outside' | 'inside'>();
    nodes.forEach((n, i) => {
      const was = this.inRoute.get(n)!;
      // streak counts answers while out, misses while in.
      const s = ok[i] === was ? 0 : (this.streak.get(n) ?? 0) + 1;
      this.streak.set(n, s);
      if (s >= (was ? this.o.misses : this.o.rise)) {
        this.inRoute.set(n, !was);
        this.streak.set(n, 0);
        this.events.push({ at: Date.now(), node: n, in: !was });
        changed.add(this.lab.t.balancers[n].role);
      }
    });
    for (const side of changed) this.apply(side);
  }

  /** Replace the side's ECMP routes with the nodes in route; with none, every node stays (never withdraw the last). */
  private apply(side: 'outside' | 'inside'): void {
    this.lab.setEcmp(this.routed(), side);
  }
}
