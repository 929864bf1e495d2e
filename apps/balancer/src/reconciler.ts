// Reconciles the kernel (nft table, ip rules, routes) with the node's desired state; imperative shell of apps/balancer.
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { distribution, BucketTable } from '@fwlb/flowhash';
import { diffTable, NftRunner, ActualTable, ruleDigest } from '@fwlb/nft';
import { planRouting, planIsEmpty, ActualRoute, ActualRule, RoutingPlan, NetlinkError } from '@fwlb/routing';
import { bucketTable, renderRoutes, renderTable, slots, TABLE_FAMILY, TABLE_NAME, RenderInput, Pin } from './render';

/** The part of libs/routing the reconciler uses, so tests can put a fake in front of the kernel. */
export interface RoutingPort {
  rules(): Promise<ActualRule[]>;
  routes(): Promise<ActualRoute[]>;
  apply(plan: RoutingPlan): Promise<NetlinkError[]>;
}

export interface ReconcileResult {
  nftCommands: number;
  routingChanges: number;
  routingErrors: string[];
  tableHandle: number | null;
  at: number;
}

/** Where pins come from (the session cache); absent without a session table. */
export interface PinSource {
  pins(table: BucketTable, markOf: ReadonlyMap<string, number>, reachable: ReadonlySet<string>): Pin[];
}

export class Reconciler {
  private readonly admin = new Map<string, boolean>();
  private readonly health = new Map<string, boolean>();
  private lastTable: BucketTable | null = null;
  private lastActual: ActualTable | null = null;
  last: ReconcileResult | null = null;
  lastError: string | null = null;
  reconciles = 0;
  failures = 0;

  pinSource: PinSource | null = null;
  /** Firewalls every node agrees are up (from the shared health views); null: this node's own view only. */
  private agreed: Set<string> | null = null;
  private lastPins = 0;

  setAgreed(ids: string[] | null): void {
    this.agreed = ids ? new Set(ids) : null;
  }

  /** The bucket table of the last reconcile, or null before the first. */
  currentTable(): BucketTable | null {
    return this.lastTable;
  }

  constructor(readonly config: ResolvedBalancerConfig, private readonly nft: NftRunner, private readonly routing: RoutingPort, private readonly now: () => number = Date.now) {
    for (const f of config.firewalls) this.admin.set(f.id, f.enabled);
  }

  hasFirewall(id: string): boolean {
    return this.admin.has(id);
  }

  setAdmin(id: string, enabled: boolean): void {
    if (!this.admin.has(id)) throw new RangeError(`no firewall ${id}`);
    this.admin.set(id, enabled);
  }

  private readonly healthDetail = new Map<string, { reason: string; since: number; latencyMs?: number }>();

  /** Health of a firewall as seen by this node's probes; without a health section every firewall counts as healthy. */
  setHealth(id: string, up: boolean, reason = '', latencyMs?: number): void {
    this.health.set(id, up);
    this.healthDetail.set(id, { reason, since: this.now(), ...(latencyMs !== undefined ? { latencyMs } : {}) });
  }

  input(): RenderInput {
    const ids = this.config.firewalls.map((f) => f.id);
    const healthy = ids.filter((id) => this.health.get(id) !== false);
    // A firewall takes new sessions only when this node and (with a session table) every node sees it up.
    const live = healthy.filter((id) => this.admin.get(id) && (!this.agreed || this.agreed.has(id)));
    return { config: this.config, live, reachable: healthy };
  }

  private queue: Promise<unknown> = Promise.resolve();

  /**
   * Runs one reconcile after any in flight: the runner and an API mutation may ask at the same time, and two
   * interleaved read-diff-apply passes would both add the same map elements (EEXIST).
   */
  reconcile(): Promise<ReconcileResult> {
    const next = this.queue.then(() => this.reconcileNow());
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Compute everything first, then write: routes (so marks have a path), then the nft table in one transaction. */
  private async reconcileNow(): Promise<ReconcileResult> {
    this.reconciles++;
    try {
      const input = this.input();
      const table = bucketTable(input);
      if (this.pinSource) {
        const markOf = new Map(slots(this.config).map((x) => [x.id, x.mark]));
        input.pins = this.pinSource.pins(table, markOf, new Set(input.reachable));
        this.lastPins = input.pins.length;
      }
      const desired = renderTable(input, table);
      const wantRoutes = renderRoutes(this.config);
      const [actual, rules, routes] = await Promise.all([this.nft.read(TABLE_FAMILY, TABLE_NAME), this.routing.rules(), this.routing.routes()]);
      const plan = planRouting(wantRoutes, rules, routes, { tables: this.config.tables, priorities: this.config.rulePriorities });
      const routingErrors = planIsEmpty(plan) ? [] : await this.routing.apply(plan);
      const cmds = diffTable(desired, actual);
      await this.nft.apply(cmds);
      this.lastTable = table;
      this.lastActual = cmds.length ? await this.nft.read(TABLE_FAMILY, TABLE_NAME) : actual;
      const changes = plan.addRules.length + plan.delRules.length + plan.setRoutes.length + plan.delRoutes.length;
      this.last = { nftCommands: cmds.length, routingChanges: changes, routingErrors: routingErrors.map((e) => e.message), tableHandle: this.lastActual?.handle ?? null, at: this.now() };
      this.lastError = routingErrors.length ? routingErrors.map((e) => e.message).join('; ') : null;
      return this.last;
    } catch (e) {
      this.failures++;
      this.lastError = e instanceof Error ? e.message : String(e);
      throw e;
    }
  }

  status() {
    const input = this.input();
    const table = this.lastTable ?? bucketTable(input);
    const dist = distribution(table);
    const desired = renderTable(input, table);
    const counters = this.lastActual?.counters ?? new Map();
    const counterOf = (label: string) => {
      const rule = desired.labeled[label];
      return rule ? counters.get(ruleDigest(rule)) ?? null : null;
    };
    return {
      role: this.config.role,
      name: this.config.name,
      table: { family: TABLE_FAMILY, name: TABLE_NAME, handle: this.lastActual?.handle ?? null },
      buckets: { size: table.size, distribution: dist },
      firewalls: slots(this.config).map((s) => ({
        id: s.id,
        mark: s.mark,
        table: s.table,
        priority: s.priority,
        enabled: this.admin.get(s.id)!,
        healthy: this.health.get(s.id) !== false,
        health: this.healthDetail.get(s.id) ?? null,
        live: input.live.includes(s.id),
        buckets: dist[s.id] ?? 0,
        learned: counterOf(`learn:${s.id}`),
      })),
      counters: {
        reconciles: this.reconciles,
        reconcileFailures: this.failures,
        restored: counterOf('restore'),
        hashedTcpUdp: counterOf('hash-tcp-udp'),
        hashedOther: counterOf('hash-other'),
        droppedNoFirewall: counterOf('no-firewall-drop'),
        pinned: counterOf('pinned'),
      },
      pins: this.pinSource ? this.lastPins : null,
      agreed: this.agreed ? [...this.agreed].sort() : null,
      lastReconcile: this.last,
      lastError: this.lastError,
    };
  }
}
