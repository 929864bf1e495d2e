// The SLB tier's state and its one way to change it: validate, render the VIPs a change touches, apply the
// difference in one transaction, roll back on failure; the passes that keep the kernel there are in passes.ts.
// Imperative shell of libs/slb.
import type { NftJson } from '@fwlb/nft';
import type { ResolvedSlbConfig, ResolvedVip, MemberConfig, VipConfig } from '@fwlb/config';
import { ConfigError, isProxied } from '@fwlb/config';
import type { ProbeResult } from '@fwlb/health';
import { MonitorFactory, MonitorPool } from './monitor-pool';
import type { AddressPort, SlbKernel } from './kernel-port';
import { viewKeys, VipViews } from './vip-views';
import { GroupCommit } from './group-commit';
import * as plan from './vip-plan';
import { Edit, NotFoundError, planChange } from './vip-plan';
import { staleCounterCommands } from './kernel';
import { healthKey, renderVip } from './render';
import type { L7Engine } from './haproxy';
import { captureProblems, LocalSocket, unreadableCertificates } from './local-services';
import { AppliedVips } from './applied-vips';
import { SlbTableWriter } from './table-writer';
import { L7Applier } from './l7-applier';
import { SlbPasses, SlbReconcileResult } from './passes';

export type { SlbReconcileResult } from './passes';

export interface SlbDeps {
  kernel: SlbKernel;
  addresses: AddressPort;
  monitors: MonitorFactory;
  /** Persist the VIPs after accepted changes (the state file); concurrent changes share one write. */
  save?: (vips: readonly VipConfig[]) => void | Promise<void>;
  /** Ask for a pass soon (the bounded runner); health changes call it. */
  trigger?: () => void;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  now?: () => number;
  /** Conditions an operator must see (the probe helper down); /health is not `ok` while there are any. */
  alarms?: () => string[];
  /** The proxy data plane (HAProxy) for VIPs with `mode` `http` or `tcp`; absent: such VIPs are refused. */
  l7?: L7Engine;
  /** The probe helper answers (for the metric; absent in tests). */
  helperUp?: () => boolean;
  /** This node's own addresses (all but `vipAddresses`) and sockets: a VIP that would capture one is refused. */
  local?: (vipAddresses: Iterable<string>) => { addresses: ReadonlySet<string>; sockets: readonly LocalSocket[] };
}

export class SlbService {
  private vipList: ResolvedVip[];
  private byId = new Map<string, ResolvedVip>();
  /** Member health: a monitor per health key, and which VIPs a verdict concerns. */
  private readonly pool: MonitorPool;
  /** The VIPs as last applied: what the kernel holds for each, the slots the API reports, the pools in panic. */
  private readonly applied = new AppliedVips(() => this.views.refreshed());
  /** What the API and the metrics show (members, counters, the cached GET /vips body). */
  readonly views: VipViews;

  /** The kernel's side: the tables as believed, declarations, addresses, the transaction. */
  private readonly writer: SlbTableWriter;
  /** The L7 VIPs' side: HAProxy. */
  private readonly l7: L7Applier;
  /** The passes that bring the kernel to the VIPs: adoption, full pass, health flush. */
  private readonly passes: SlbPasses;
  private queue: Promise<unknown> = Promise.resolve();
  /** Member health checks by result since start: unknown is a check that could not run (helper down or overloaded). */
  readonly checks = { ok: 0, failed: 0, unknown: 0 };

  countCheck(r: ProbeResult): void {
    if (r.unknown) this.checks.unknown++;
    else if (r.ok) this.checks.ok++;
    else this.checks.failed++;
  }

  /** nft transactions sent (each one all or nothing), since start. */
  get transactions(): number {
    return this.writer.transactions;
  }

  get label(): string {
    return this.writer.label;
  }

  constructor(
    readonly config: ResolvedSlbConfig,
    private readonly deps: SlbDeps,
  ) {
    this.vipList = [...config.vips];
    this.index();
    this.writer = new SlbTableWriter(deps.kernel, deps.addresses, config.table, config.interface, `${config.interface}:vip`);
    this.l7 = new L7Applier(deps.l7, deps.log);
    this.passes = new SlbPasses({
      config,
      vips: () => this.vipList,
      vip: (id) => this.byId.get(id),
      pool: () => this.pool,
      writer: this.writer,
      l7: this.l7,
      applied: this.applied,
      now: () => this.now(),
    });
    // A resolved VIP serializes as its config document (vipDocument is its JSON round trip); the saver caches that text per VIP.
    this.saver = deps.save ? new GroupCommit(deps.save, () => this.vipList as unknown as readonly VipConfig[]) : null;
    this.views = new VipViews({
      vips: () => this.vipList,
      slots: (id) => this.applied.get(id)?.slots ?? [],
      health: { healthOf: (k) => this.pool.healthOf(k), monitorOf: (k) => this.pool.monitorOf(k) },
      started: () => this.started,
      now: () => this.now(),
    });
    this.pool = new MonitorPool(
      deps.monitors,
      (users) => {
        this.passes.healthChanged(users);
        this.deps.trigger?.();
      },
      () => this.now(),
      deps.log,
    );
  }

  private index(): void {
    this.byId = new Map(this.vipList.map((v) => [v.id, v]));
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }

  /**
   * Adopts the kernel: one terse read, then only what differs is written (a restart against a matching kernel sends
   * no transaction). A restart keeps the last known health, and the kernel is where it is kept: a member in its VIP's
   * DNAT map was up, an enabled member missing from it was down (it gets no traffic until it passes `rise` checks).
   * With no table yet (a fresh node) or a VIP the kernel never had, members count as up until their checks say
   * otherwise, so a first start changes nothing either. Members added later through the API start down.
   */
  async start(vips: readonly ResolvedVip[] = this.vipList): Promise<SlbReconcileResult> {
    this.vipList = [...vips];
    this.index();
    return this.serial(() => this.passes.adopt());
  }

  vips(): readonly ResolvedVip[] {
    return this.vipList;
  }

  vip(id: string): ResolvedVip {
    const v = this.byId.get(id);
    if (!v) throw new NotFoundError('vip', `no VIP "${id}"`);
    return v;
  }

  /** Serialized: the runner, health events and API changes never interleave their passes. */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.queue.then(f);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** See SlbPasses.addressesChanged: true when the caller should trigger a pass. */
  addressesChanged(address?: string): boolean {
    return this.passes.addressesChanged(address);
  }

  /** A full pass: reads the table, and writes what differs from every VIP's fragment. The periodic resync. */
  reconcile(): Promise<SlbReconcileResult> {
    return this.serial(() => this.passes.fullRead());
  }

  /** The runner's pass: health changes (only their VIPs), or a full pass when the resync period is due or the last pass failed. */
  tick(): Promise<SlbReconcileResult> {
    return this.serial(() => this.passes.tick());
  }

  fullEveryMs(): number {
    return this.passes.fullEveryMs();
  }

  /** Counter elements the last read found. */
  counterElements(): number {
    return this.views.counterElements();
  }

  get started(): boolean {
    return this.passes.started;
  }

  get reconciles(): number {
    return this.passes.reconciles;
  }

  get failures(): number {
    return this.passes.failures;
  }

  get lastError(): string | null {
    return this.passes.lastError;
  }

  get addressNotices(): number {
    return this.passes.addressNotices;
  }

  /**
   * Refuses VIPs that would capture a service of this node: on one of its own addresses (not a VIP address fwlb
   * holds) and a port a socket of the node takes. `field` names each VIP's address field in the error.
   */
  async refuseCaptures(vips: readonly ResolvedVip[], field: (v: ResolvedVip, i: number) => string, source: string): Promise<void> {
    if (!this.deps.local || !vips.length) return;
    const problems = captureProblems(vips, this.deps.local(await this.writer.heldAddresses()), field);
    if (problems.length) throw new ConfigError(problems, source);
  }

  /**
   * Apply a change; only when the kernel took it does it become the state (and the state file). Why `build` gets
   * the current list inside the serialized queue: two requests that each built "the list plus my VIP" from the
   * same starting point would both be accepted and the second would silently undo the first. Only the VIPs
   * `build` replaced are rendered and written: a member change is that VIP's chain, nothing else.
   */
  private async change(edit: Edit): Promise<ResolvedVip | undefined> {
    let made: ResolvedVip | undefined;
    await this.serial(async () => {
      const e = edit(this.vipList);
      made = e.vip;
      const chg = planChange(this.vipList, e.next, {
        budget: this.config.checkBudget.checksPerSecond,
        up: this.pool.up,
        known: (k) => this.pool.healthOf(k) !== undefined,
        haproxy: this.l7.available,
      });
      const { next, nextById, changed, initial, l7Touched } = chg;
      const up = (k: string) => initial.get(k) ?? this.pool.up(k);
      const frags = [...changed].flatMap((id) =>
        nextById.has(id) && !isProxied(nextById.get(id)!) ? [renderVip(nextById.get(id)!, up, this.config.seed)] : [],
      );
      await this.refuseCaptures(chg.newListeners, () => '/address', 'request body');
      const certs = unreadableCertificates([...changed].map((id) => nextById.get(id)));
      if (certs.length) throw new ConfigError(certs, 'request body');
      // Addresses: only those of the changed VIPs, and an address stays while another VIP uses it.
      const touched = chg.touchedAddresses;
      const wantAddrs = new Set(next.filter((v) => touched.has(v.address)).map((v) => v.address));
      this.passes.changeStarted();
      // The first VIP of a family declares its table; declaring is idempotent, and taken back if the change fails.
      const decl = await this.writer.declare(frags, this.writer.tables());
      let done = { have: decl.have, cmds: [] as NftJson[] };
      const r = await this.writer
        .withAddresses(wantAddrs, touched, async () => {
          // HAProxy first (an L7 change has no nft commands, but a VIP can change mode); if the table then refuses
          // for good, HAProxy goes back to what it ran.
          if (l7Touched) await this.l7.apply(next, up);
          try {
            done = await this.writer.transactScoped(frags, decl.have, changed);
          } catch (e) {
            if (l7Touched) await this.l7.apply(this.vipList, this.pool.up).catch(() => undefined);
            throw e;
          }
        })
        .catch(async (e) => {
          await decl.undo();
          this.passes.changeFailed(e);
          throw e;
        });
      this.writer.took(done.have, done.cmds);
      for (const f of frags) this.applied.set(f);
      for (const id of changed) if (!nextById.has(id)) this.applied.drop(id);
      this.views.changed();
      const prev = this.byId;
      this.vipList = next;
      this.index();
      for (const id of changed) this.pool.retarget(prev.get(id), nextById.get(id), (m) => (initial.get(healthKey(nextById.get(id)!, m)) ? 'up' : 'down'));
      return { nftCommands: done.cmds.length, ...r, tableHandle: this.writer.handle() };
    });
    await this.saver?.commit();
    return made;
  }

  /** The state file, a write per burst of changes (none without a state file). */
  private readonly saver: GroupCommit<readonly VipConfig[]> | null;

  /** Set while the last change is live in the kernel but not in the state file. */
  get saveError(): string | null {
    return this.saver?.error ?? null;
  }

  /** The VIPs in force, as the state file holds them. */
  liveVips(): readonly VipConfig[] {
    return this.vipList as unknown as readonly VipConfig[];
  }

  /** Every VIP at once (a reloaded config file): one transaction for the VIPs that differ, as any change. */
  async replaceAll(next: readonly ResolvedVip[]): Promise<void> {
    await this.change(() => ({ next: [...next] }));
  }

  /** Write the state file now (a reload changed what it records beside the VIPs). */
  async save(): Promise<void> {
    await this.saver?.commit();
  }

  async createVip(body: unknown): Promise<ResolvedVip> {
    return (await this.change(plan.createVip(body)))!;
  }

  async replaceVip(id: string, body: unknown): Promise<ResolvedVip> {
    return (await this.change(plan.replaceVip(id, body)))!;
  }

  async deleteVip(id: string): Promise<void> {
    await this.change(plan.deleteVip(id));
  }

  async addMember(id: string, body: MemberConfig): Promise<ResolvedVip> {
    return (await this.change(plan.addMember(id, body)))!;
  }

  async patchMember(id: string, key: string, patch: Partial<Pick<MemberConfig, 'weight' | 'state'>>): Promise<ResolvedVip> {
    return (await this.change(plan.patchMember(id, key, patch)))!;
  }

  async deleteMember(id: string, key: string): Promise<ResolvedVip> {
    return (await this.change(plan.deleteMember(id, key)))!;
  }

  /**
   * Counters are read from the counter sets in the background (start.ts runs this every `countersSeconds`): an API
   * read answers from memory and never runs a process. Elements of members no longer configured are dropped here.
   */
  async refreshCounters(): Promise<void> {
    this.views.l7Stats = await this.l7.stats(this.views.l7Stats);
    const c = await this.deps.kernel.counters(this.writer.families());
    this.views.setCounters(c, this.now());
    const vipKeys = new Set(this.vipList.map((v) => viewKeys(v).vip));
    const memberKeys = new Set(this.vipList.flatMap((v) => viewKeys(v).counters));
    const stale = staleCounterCommands(this.config.table, c, vipKeys, memberKeys);
    if (stale.length) await this.serial(() => this.writer.transact(stale));
  }

  alarms(): string[] {
    const panics = [...this.applied.panics()].map(([id, p]) => {
      const v = this.byId.get(id);
      return `VIP ${id} in panic: ${p.healthy} of ${p.enabled} enabled members up (threshold ${Math.round((v?.panicThreshold ?? 0) * 100)}%), every enabled member takes new sessions`;
    });
    const starting = this.started
      ? []
      : [`starting: adopting the kernel state of ${this.vipList.length} VIPs${this.lastError ? ` (last try failed: ${this.lastError})` : ''}`];
    const l7 = this.l7.alarms(this.vipList);
    return [...starting, ...(this.saveError ? [this.saveError] : []), ...panics, ...l7, ...(this.deps.alarms?.() ?? [])];
  }

  /** The pools in panic now: an L4 VIP's one pool (`pool` empty), and each L7 VIP's pools on their own. */
  poolPanics(): { vip: string; pool: string }[] {
    return [...[...this.applied.panics()].map(([vip]) => ({ vip, pool: '' })), ...this.l7.panics()];
  }

  /** For the metrics: whether the probe helper answers, and whether HAProxy runs (null: not on this node). */
  helperUp(): boolean | null {
    return this.deps.helperUp ? this.deps.helperUp() : null;
  }

  haproxyUp(): boolean | null {
    return this.l7.up();
  }

  status() {
    return {
      alarms: this.alarms(),
      name: this.config.name,
      table: { family: 'ip', name: this.config.table, families: this.writer.families() },
      interface: this.config.interface,
      vips: this.vipList.length,
      monitors: this.pool.size,
      started: this.started,
      reconciles: this.reconciles,
      transactions: this.transactions,
      failures: this.failures,
      addressNotices: this.addressNotices,
      lastError: this.lastError,
      haproxy: this.l7.status(),
    };
  }

  stop(): void {
    this.pool.stop();
  }
}
