// Reconciles the kernel (nft table, ip rules, routes) with the node's desired state; imperative shell of apps/balancer.
import { EventEmitter } from 'node:events';
import type { ResolvedBalancerConfig } from '@fwlb/config';
import type { BucketTable } from '@fwlb/flowhash';
import { applyTableChange, planTableChange, NftJson, NftRunner, ActualTable } from '@fwlb/nft';
import { planRouting, planIsEmpty, touchesOwned, RoutingEvent } from '@fwlb/routing';
import { ReconcileResult, ReconcilerEvents, RoutingPort, stopwatch } from './reconciler-types';
import { Membership, MembershipSnapshot } from './membership';
import { bucketTable, renderRoutes, renderTable, syncGroups, TABLE_FAMILY, TABLE_NAME, RenderInput, RenderedTable } from './render';
import { desiredPins, movedBuckets, PinSource, renderInput, switchTable } from './desired';
import { PinMaps, pinMapName } from './pin-maps';
import { familiesOf } from './rules';
import { KernelView } from './kernel-view';

/** How long after a switch time its reconcile runs: the kernel switched by itself; this only tidies up. */
const SWITCH_SETTLE_MS = 50;
/**
 * How long after a change that rewrote chains the objects it left (see planTableChange) are deleted: the packets
 * that ran the old rules are long done by then.
 */
const LEFT_OBJECTS_MS = 200;

/**
 * How long a listing of the nft table vouches for it while this node wants the same table: a pass within it that
 * only writes pins (one per answered session off its bucket, up to a pass every 200 ms under churn) does not list
 * the table again. Why: each listing is a few nft runs, and spawning them was most of what a busy node's
 * controller spent its time on. Why not longer: a table someone else changed is put right at the first pass after
 * this, and the rules' counters /status shows are as old as the last listing.
 */
export const LISTING_TRUST_MS = 1000;

export class Reconciler {
  /** What the kernel runs on (the last committed pass) and the rules' counters: what the API reads. */
  private readonly view = new KernelView();
  /** The config's sync groups, and each firewall's (derived from the config, at start and at each reload). */
  private groups: string[][];
  private groupOf: ReadonlyMap<string, string | undefined>;
  private lastActual: ActualTable | null = null;
  /**
   * The table this node wanted when `lastActual` was listed and showed exactly that table, and when the listing
   * began; null while the kernel may hold anything else (a pass changed the table without listing it again, or
   * failed).
   */
  private listing: { want: string; at: number } | null = null;
  /** The kernel's pins maps, kept by this node: a read does not list them. */
  private readonly pinMaps: PinMaps;
  last: ReconcileResult | null = null;
  lastError: string | null = null;
  reconciles = 0;
  failures = 0;
  /** Passes that did not list the nft table (see LISTING_TRUST_MS). */
  passesUnlisted = 0;
  /** Kernel notices that a link changed or that someone else touched fwlb's rules or tables. */
  private routingNotices = 0;
  /** Switches this node's kernel got after their second (see switchLate). */
  private lateSwitches = 0;
  private lateSwitchMaxMs = 0;

  /** Where the pins come from (the session layer), or none without a session table; see usePins. */
  private pinSource: PinSource | null = null;
  /**
   * `tableChange`: a committed reconcile changed the bucket table (not on the first): a session recorded by another
   * node may have become an exception (a sibling on the same side holds sessions this node never saw).
   * `tableComing`: a committed reconcile rendered a switch to another bucket table at `at` (an admin change, an
   * agreed join): the buckets that will move, told once per switch, so that their sessions can be read and pinned
   * before it (a pin that agrees with the current table changes nothing).
   * `reconciled`: every pass's duration and outcome (metrics).
   */
  readonly events = new EventEmitter<ReconcilerEvents>();
  readonly membership: Membership;

  /** The bucket table of the last reconcile, or null before the first. */
  currentTable(): BucketTable | null {
    return this.view.currentTable();
  }

  /** The buckets an admin change of `id` would move (the change is not made). */
  movedIf(id: string, enabled: boolean): number[] {
    return this.movedTo(this.membership.liveIf(id, enabled));
  }

  /**
   * The buckets firewalls `ids` would take were they to join new sessions now (an agreed join, before the leader
   * publishes it). An upper bound: a firewall that is disabled here takes none when it comes.
   */
  movedByJoin(ids: readonly string[]): number[] {
    const snap = this.membership.snapshot();
    return this.movedTo([...new Set([...snap.live, ...ids])], snap);
  }

  /** The buckets whose owner would differ from today's with `live` taking new sessions. */
  private movedTo(live: string[], snap = this.membership.snapshot()): number[] {
    return movedBuckets(this.config, snap, live);
  }

  /** The table the last reconcile switches to at a later second, or null when no switch is pending. */
  comingTable(): BucketTable | null {
    return this.view.comingTable();
  }

  private cfg: ResolvedBalancerConfig;

  get config(): ResolvedBalancerConfig {
    return this.cfg;
  }

  constructor(
    config: ResolvedBalancerConfig,
    private readonly nft: NftRunner,
    private readonly routing: RoutingPort,
    private readonly now: () => number = Date.now,
    membership?: Membership,
  ) {
    this.cfg = config;
    this.groups = syncGroups(config);
    this.groupOf = new Map(config.firewalls.map((f) => [f.id, f.syncGroup]));
    this.membership = membership ?? new Membership(config, config.sessionTable !== null, now);
    this.pinMaps = new PinMaps(nft);
  }

  /** A reloaded config (the membership takes it too): the next reconcile renders from it. */
  reconfigure(next: ResolvedBalancerConfig): void {
    this.cfg = next;
    this.groups = syncGroups(next);
    this.groupOf = new Map(next.firewalls.map((f) => [f.id, f.syncGroup]));
  }

  /** The session layer gives its pins once it has loaded them (before the first reconcile); null takes them away. */
  usePins(source: PinSource | null): void {
    this.pinSource = source;
  }

  private queue: Promise<unknown> = Promise.resolve();
  private timers: Record<'switch' | 'left', NodeJS.Timeout | null> = { switch: null, left: null };

  /**
   * A pass `ms` from now: at a pending switch's time (a later call moves it), or to delete what a pass left (`keep`:
   * one already set serves).
   */
  private reconcileAfter(which: 'switch' | 'left', ms: number, keep = false): void {
    const set = this.timers[which];
    if (set && keep) return;
    if (set) clearTimeout(set);
    const timer = setTimeout(() => {
      this.timers[which] = null;
      void this.reconcile().catch(() => undefined);
    }, ms);
    timer.unref();
    this.timers[which] = timer;
  }

  /**
   * An admin change still to come (see Membership.setAdmin): the bucket table from its time on, when it differs
   * from the current one. A reconcile just after that time renders the new table alone.
   */
  private pendingSwitch(input: RenderInput, table: BucketTable): { at: number; table: BucketTable; live: string[] } | null {
    const at = this.membership.pendingAt();
    if (at === null) return null;
    this.reconcileAfter('switch', Math.max(0, at - this.now()) + SWITCH_SETTLE_MS);
    const live = this.membership.snapshot(at).live;
    const later = switchTable(input, table, live);
    return later ? { at, table: later, live } : null;
  }

  /**
   * Runs one reconcile after any in flight: the runner and an API mutation may ask at the same time, and two
   * interleaved read-diff-apply passes would both add the same map elements (EEXIST).
   */
  reconcile(): Promise<ReconcileResult> {
    const next = this.queue.then(() => this.reconcileNow());
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** What the kernel should hold for `snap`: the bucket table, a pending switch, the pins of both, the nft table. */
  private desiredState(snap: MembershipSnapshot) {
    const input = renderInput(this.config, snap);
    const table = bucketTable(input);
    const next = this.pendingSwitch(input, table);
    const markOf = () => new Map(this.membership.slots.map((x) => [x.id, x.mark]));
    const pins = this.pinSource ? desiredPins(this.pinSource, input, markOf(), this.groups, table, next) : null;
    return { table, next, pins, desired: renderTable(input, table, next ?? undefined) };
  }

  /**
   * The kernel took the pass: from here on the API reports what the kernel does, and the listeners hear of buckets
   * that moved (`tableChange`) and, once per pending switch, of those that will (`tableComing`).
   */
  private committed(snap: MembershipSnapshot, desired: RenderedTable, table: BucketTable, next: { at: number; table: BucketTable } | null): void {
    const { moved, coming } = this.view.commit(this.config, snap, desired, table, next);
    if (moved.length) this.events.emit('tableChange', moved);
    if (coming) this.events.emit('tableComing', coming.buckets, coming.at);
  }

  /**
   * After a commit: read the table back for the rules' counters and handles, unless only map elements changed (they
   * changed neither). What vouches for the table then: the read back when the pass changed rules or declarations,
   * nothing after element changes only (the listing is out of date), this pass's own listing when it changed nothing.
   */
  private async readBack(cmds: NftJson[], actual: ActualTable | null, want: string, trusted: boolean, listedAt: number): Promise<void> {
    const onlyElements = cmds.every((c) => Object.values(c as Record<string, object>).every((o) => 'element' in o));
    const readBackAt = this.now();
    this.lastActual = cmds.length && !onlyElements ? await this.list() : actual;
    if (cmds.length) this.listing = onlyElements ? null : { want, at: readBackAt };
    else if (!trusted) this.listing = { want, at: listedAt };
  }

  /** Compute everything first, then write: routes (so marks have a path), then the nft table in one transaction. */
  private async reconcileNow(): Promise<ReconcileResult> {
    this.reconciles++;
    const t0 = performance.now();
    const lap = stopwatch(t0);
    try {
      const snap = this.membership.snapshot();
      const { table, next, pins, desired } = this.desiredState(snap);
      const families = familiesOf(this.config);
      const pinsMs = lap();
      const wantRoutes = renderRoutes(this.config);
      const want = JSON.stringify(desired);
      const listedAt = this.now();
      const trusted = this.listing && this.listing.want === want && listedAt - this.listing.at < LISTING_TRUST_MS ? this.lastActual : null;
      const [actual, rules, routes] = await Promise.all([trusted ?? this.list(), this.routing.rules(), this.routing.routes()]);
      if (trusted) this.passesUnlisted++;
      const readMs = lap();
      if (pins) this.pinMaps.observe(actual, families);
      const plan = planRouting(wantRoutes, rules, routes, { tables: this.config.tables, priorities: this.config.rulePriorities });
      const routingErrors = planIsEmpty(plan) ? [] : await this.routing.apply(plan);
      const diffMs = lap();
      const replacePins = pins ? await this.pinMaps.before(pins, actual, families) : [];
      // A trusted listing showed this very table: nothing of it to change.
      const change = trusted ? { cmds: [], later: [] } : planTableChange(desired, actual);
      const cmds = [...change.cmds, ...replacePins];
      try {
        await applyTableChange(this.nft, desired, actual, cmds);
      } catch (e) {
        // A transaction killed at its timeout may have committed all the same: what the maps hold is not known.
        this.pinMaps.forget();
        throw e;
      }
      if (pins && replacePins.length) this.pinMaps.replaced(pins, families);
      if (pins) await this.pinMaps.after(families);
      const applyMs = lap();
      this.committed(snap, desired, table, next);
      await this.readBack(cmds, actual, want, trusted !== null, listedAt);
      // The listing shows what the next pass deletes: it is not the table `want` describes.
      if (change.later.length) {
        this.listing = null;
        this.reconcileAfter('left', LEFT_OBJECTS_MS, true);
      }
      const changes = plan.addRules.length + plan.delRules.length + plan.setRoutes.length + plan.delRoutes.length;
      this.last = {
        nftCommands: cmds.length,
        pinChanges: pins ? this.pinMaps.changed : 0,
        routingChanges: changes,
        routingErrors: routingErrors.map((e) => e.message),
        tableHandle: this.lastActual?.handle ?? null,
        at: this.now(),
        ms: { pins: pinsMs, read: readMs, diff: diffMs, apply: applyMs, readBack: lap() },
        listed: !trusted,
      };
      this.lastError = routingErrors.length ? routingErrors.map((e) => e.message).join('; ') : null;
      this.events.emit('reconciled', (performance.now() - t0) / 1000, true);
      return this.last;
    } catch (e) {
      this.listing = null;
      this.failures++;
      this.lastError = e instanceof Error ? e.message : String(e);
      this.events.emit('reconciled', (performance.now() - t0) / 1000, false);
      throw e;
    }
  }

  /**
   * Lists the table for its rules' counters unless the last listing is younger than `maxAgeMs`: for /status,
   * /firewalls and a caller that counts packets (a pass that only writes pins may not list it). Queued behind any
   * pass in flight, as a pass is. A listing that fails keeps the counters as they were: the next pass says why.
   */
  freshCounters(maxAgeMs = LISTING_TRUST_MS): Promise<void> {
    const run = this.queue.then(async () => {
      const at = this.view.countersAt();
      if (at !== null && this.now() - at < maxAgeMs) return;
      await this.list().catch(() => null);
    });
    this.queue = run;
    return run;
  }

  /** When the listing the counters come from began (ms since the epoch), or null before the first. */
  countersAt(): number | null {
    return this.view.countersAt();
  }

  /** Lists the table (the pins maps without their elements: this node keeps them) and keeps its rules' counters. */
  private async list(): Promise<ActualTable | null> {
    const at = this.now();
    const actual = await this.nft.read(TABLE_FAMILY, TABLE_NAME, new Set(familiesOf(this.config).map(pinMapName)));
    if (actual) this.view.listed(actual, at);
    return actual;
  }

  /** Per firewall: what this node wants, what the kernel runs on, and its rules' counters. Reads memory only. */
  firewalls() {
    const sessions = this.pinSource?.sessionsByFirewall?.() ?? null;
    // With a session table, the sessions every node recorded on each firewall (null without one).
    return this.view.firewalls(this.membership, this.groupOf).map((f) => ({ ...f, sessions: sessions ? (sessions.get(f.id) ?? 0) : null }));
  }

  /**
   * The kernel says a link or fwlb's own rules or tables changed (an interface taken down loses its IPv4 routes
   * without a notice per route): true when the next pass must look, which the caller triggers.
   */
  routingChanged(e: RoutingEvent): boolean {
    if (!touchesOwned(e, { tables: this.config.tables, priorities: this.config.rulePriorities })) return false;
    this.routingNotices++;
    return true;
  }

  /**
   * A change every node makes at one second reached this node's kernel `ms` after that second: in between, this node
   * hashed new connections with the table the others had left, so handshakes that crossed two nodes may have met two
   * tables. Counted for /status; the caller logs it.
   */
  switchLate(ms: number): void {
    this.lateSwitches++;
    this.lateSwitchMaxMs = Math.max(this.lateSwitchMaxMs, ms);
  }

  /** The passes, and the steering rules' counters as read at the last listing of the table. */
  ruleCounters() {
    return {
      reconciles: this.reconciles,
      reconcileFailures: this.failures,
      reconcilesUnlisted: this.passesUnlisted,
      routingNotices: this.routingNotices,
      lateSwitches: this.lateSwitches,
      lateSwitchMaxMs: this.lateSwitchMaxMs,
      ...this.view.steering(),
    };
  }

  /** The agreed epoch the kernel runs on (null without one). */
  agreement() {
    return this.view.agreement();
  }

  /** Pins in the kernel map (null without a session table). */
  pinCount(): number | null {
    return this.pinSource ? this.pinMaps.size : null;
  }

  status() {
    const agreement = this.agreement();
    return {
      role: this.config.role,
      name: this.config.name,
      table: { family: TABLE_FAMILY, name: TABLE_NAME, handle: this.lastActual?.handle ?? null },
      buckets: this.view.buckets(this.config, this.groups),
      firewalls: this.firewalls(),
      counters: this.ruleCounters(),
      pins: this.pinCount(),
      agreed: agreement ? [...agreement.live].sort() : null,
      agreement,
      lastReconcile: this.last,
      lastError: this.lastError,
    };
  }
}
