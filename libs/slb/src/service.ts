// The SLB tier's state and its one way to change the kernel: validate, render the VIPs a change touches, apply the
// difference in one transaction, roll back on failure; imperative shell of libs/slb.
import { accessSync, constants } from 'node:fs';
import type { ResolvedSlbConfig, ResolvedVip, MemberConfig, VipConfig } from '@fwlb/config';
import { checkBudgetProblem, ConfigError, isL7, memberKey, memberKeyOf, probeSpec, validateVip, vipDocument } from '@fwlb/config';
import type { HealthEvent, HealthState, ProbeResult } from '@fwlb/health';
import type { NftJson, NftRunner } from '@fwlb/nft';
import { applySlbCommands, applyTablesCommands, declarationsModel, familiesInUse, hasDeclarations, memberCounterKey, NO_TABLES, parseCounterSets, parseSlbListing, poolTargets, SlbCounters, SlbTables, staleCounterCommands, tablesCommands, vipKeyString } from './kernel';
import { backendMap, declarationsText, declared, healthKey, renderVip, SLB_FAMILIES, SlbFamily, slbFamilyOf, SLB_OBJECTS, VipFragment, vipChain } from './render';
import type { HaproxyStat, L7Engine } from './haproxy';
import { LocalSocket, vipConflict } from './local-services';
import { backendName, DEFAULT_RULE, frontendName, L7Want, renderL7, ruleId, ruleTable, serverName } from './haproxy-render';

/** The part of libs/routing that manages VIP addresses, so tests can put a fake in front of the kernel. */
export interface AddressPort {
  labelledAddresses(ifname: string, label: string): Promise<string[]>;
  /** False when the address was there already: a failed change then leaves it where it was. */
  addAddress(ifname: string, addr: string, label: string): Promise<boolean | void>;
  delAddress(ifname: string, addr: string): Promise<void>;
}

/** The SLB tables in the kernel (`ip` and `ip6`): read (terse, no counter elements), one transaction, the counters. */
export interface SlbKernel {
  read(): Promise<SlbTables>;
  apply(cmds: NftJson[]): Promise<void>;
  /** Declares a family's table, its pool maps and counter sets (`declarationsText`; idempotent). */
  declare(family: SlbFamily): Promise<void>;
  counters(): Promise<SlbCounters>;
}

export function nftSlbKernel(nft: NftRunner, table: string): SlbKernel {
  const readFamily = async (f: SlbFamily) => {
    // The four listings at once (about 0.2 s each at 1,000 VIPs); a map that is missing reads as null, and any
    // other failure fails the read (an unread pool must never pass for an empty one: its members would be down).
    const maps = [SLB_OBJECTS.dispatch, backendMap('tcp'), backendMap('udp')].map((m) => nft.json(['list', 'map', f, table, m]));
    const [terse, ...listings] = await Promise.all([nft.json(['-t', 'list', 'table', f, table]), ...maps]);
    return terse ? parseSlbListing(terse, listings) : null;
  };
  return {
    read: async () => {
      const [ip, ip6] = await Promise.all(SLB_FAMILIES.map(readFamily));
      return { ip, ip6 };
    },
    apply: (cmds) => nft.apply(cmds),
    declare: (f) => nft.applyText(declarationsText(table, f)),
    // Both tables' sets in one parse: their keys carry the address, so they never collide.
    counters: async () => {
      const all = await Promise.all(SLB_FAMILIES.map((f) => nft.json(['list', 'sets', 'table', f, table])));
      return parseCounterSets({ nftables: all.flatMap((l) => (l as { nftables?: unknown[] } | null)?.nftables ?? []) });
    },
  };
}

export interface MonitorHandle {
  readonly state: HealthState;
  readonly last: ProbeResult | null;
  /** Set while the last check gave no verdict (helper down, content regex over budget): why. */
  readonly unknown?: string | null;
  stop(): void;
}

/** Starts one health monitor for a (RIP, port, check, timers); main.ts wires libs/health, tests a fake. */
export type MonitorFactory = (key: string, vip: ResolvedVip, member: { address: string; port: number }, initial: HealthState, onEvent: (ev: HealthEvent) => void) => MonitorHandle;

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
  /** The L7 data plane (HAProxy) for VIPs with `mode: "http"`; absent: such VIPs are refused. */
  l7?: L7Engine;
  /** The probe helper answers (for the metric; absent in tests). */
  helperUp?: () => boolean;
  /** This node's own addresses (all but `vipAddresses`) and sockets: a VIP that would capture one is refused. */
  local?: (vipAddresses: Iterable<string>) => { addresses: ReadonlySet<string>; sockets: readonly LocalSocket[] };
}

const readable = (path: string) => {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
};

/** The L4 VIPs: the ones the nft table holds (an L7 VIP is HAProxy's). */
const l4 = (vs: readonly ResolvedVip[]) => vs.filter((v) => !isL7(v));

/** The most VIPs one SLB holds: the same limit for the API and the config file's schema (`vips` maxItems). */
export const MAX_VIPS = 4096;

/** The change is live in the kernel, but the state file could not be written. */
export class SaveError extends Error {
  readonly code = 'FWLB_SAVE_FAILED';
}

export class NotFoundError extends Error {
  constructor(readonly what: 'vip' | 'member', message: string) {
    super(message);
    this.name = 'NotFoundError';
  }
}

export interface SlbReconcileResult {
  nftCommands: number;
  addressesAdded: string[];
  addressesRemoved: string[];
  tableHandle: number | null;
}

type Member = { address: string; port: number };

/** How old the cached GET /vips body may be when only health or counters changed. */
export const LIST_MAX_AGE_MS = 1000;

const viewKeyCache = new WeakMap<ResolvedVip, { vip: string; members: string[]; counters: string[] }>();

/** A VIP's lookup keys for views (its counter key, its members' keys), made once per VIP object. */
function viewKeys(v: ResolvedVip) {
  let k = viewKeyCache.get(v);
  if (!k) {
    const vk: [string, 'tcp' | 'udp', number] = [v.address, v.protocol, v.port];
    k = { vip: vipKeyString(vk), members: v.members.map(memberKey), counters: v.members.map((m) => memberCounterKey(vk, m)) };
    viewKeyCache.set(v, k);
  }
  return k;
}

export class SlbService {
  private vipList: ResolvedVip[];
  private byId = new Map<string, ResolvedVip>();
  private readonly health = new Map<string, { up: boolean; reason: string; since: number }>();
  private readonly monitors = new Map<string, MonitorHandle>();
  /** Which VIPs use each health key: a health event re-renders those VIPs only. */
  private readonly users = new Map<string, Set<string>>();
  /** The VIPs as last applied: what the kernel holds for each, and the slots the API reports. */
  private readonly fragments = new Map<string, VipFragment>();
  /** VIPs whose pool is in panic, as last rendered (alarms read this instead of walking 8,000 members). */
  private readonly panicked = new Map<string, { healthy: number; enabled: number }>();
  /** Bumped by every accepted change: the cached GET /vips body is rebuilt for a new one at once. */
  private version = 0;
  /** Bumped when health or counters change what GET /vips shows (the cached body may lag these by a second). */
  private liveVersion = 0;
  private listCache: { body: Buffer; version: number; live: number; at: number } | null = null;

  private setFragment(f: VipFragment): void {
    if (this.fragments.get(f.id) !== f) this.liveVersion++;
    this.fragments.set(f.id, f);
    if (f.panic) this.panicked.set(f.id, f.panic);
    else this.panicked.delete(f.id);
  }

  private dropFragment(id: string): void {
    this.fragments.delete(id);
    this.panicked.delete(id);
  }

  /** The tables as this controller last read or wrote them (null before start, or with no table). */
  private believed: SlbTables = NO_TABLES;
  private lastRead = 0;
  private readFailed = false;
  private readonly dirty = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();
  private counterValues: SlbCounters = { vipNew: new Map(), memberNew: new Map(), memberPackets: new Map() };
  /** When the counters were read from the kernel (ms), or null before the first read. */
  countersAt: number | null = null;
  readonly label: string;
  reconciles = 0;
  failures = 0;
  /** Member health checks by result since start: unknown is a check that could not run (helper down or overloaded). */
  readonly checks = { ok: 0, failed: 0, unknown: 0 };

  countCheck(r: ProbeResult): void {
    if (r.unknown) this.checks.unknown++;
    else if (r.ok) this.checks.ok++;
    else this.checks.failed++;
  }

  /** nft transactions sent (each one all or nothing), since start. */
  transactions = 0;
  lastError: string | null = null;

  constructor(readonly config: ResolvedSlbConfig, private readonly deps: SlbDeps) {
    this.vipList = [...config.vips];
    this.index();
    this.label = `${config.interface}:vip`;
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
    return this.serial(() => this.adopt());
  }

  /** Set once the kernel state has been adopted; until then /health says `starting` and changes wait their turn. */
  started = false;

  private async adopt(): Promise<SlbReconcileResult> {
    const have = await this.read();
    for (const v of this.vipList) {
      const table = have[slbFamilyOf(v.address)];
      const known = table?.chains.has(vipChain(v.id));
      const inPool = new Set(poolTargets(table, [v.address, v.protocol, v.port]));
      this.retarget(
        undefined,
        v,
        (m) => {
          if (!known) return 'up';
          const member = v.members.find((x) => x.address === m.address && x.port === m.port);
          return member?.state === 'drain' || inPool.has(memberKey(m)) ? 'up' : 'down';
        },
        true,
      );
    }
    const r = await this.full(have);
    this.started = true;
    await this.monitorsStarted();
    return r;
  }

  /** Resolves once every deferred monitor runs (a batch per event-loop turn: requests are served between them). */
  private monitorsStarted(): Promise<void> {
    if (!this.unstarted.size) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  private drained: (() => void)[] = [];

  vips(): readonly ResolvedVip[] {
    return this.vipList;
  }

  vip(id: string): ResolvedVip {
    return this.find(this.byId, id);
  }

  private up = (key: string): boolean => this.health.get(key)?.up ?? false;

  /**
   * Moves one VIP's health keys from `before` to `after`: a key new to the node starts a monitor whose initial state
   * comes from `initialOf`; a key no VIP uses any more stops its monitor. Costs the members of this VIP only.
   */
  private retarget(before: ResolvedVip | undefined, after: ResolvedVip | undefined, initialOf: (m: Member) => HealthState, defer = false): void {
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
      const v = after!;
      this.health.set(k, { up: initial === 'up', reason: initial === 'up' ? 'known up' : 'down (not in service when this controller started, or new): waiting for checks', since: this.now() });
      const create = () =>
        this.monitors.set(
          k,
          // An L7 member is probed with its pool's check and timers where the pool has its own.
          this.deps.monitors(k, m.pool !== undefined ? { ...v, ...probeSpec(v, m) } : v, m, initial, (ev) => {
            this.health.set(k, { up: ev.to === 'up', reason: ev.reason, since: ev.at });
            this.deps.log?.(`member ${memberKey(m)} (${v.check.kind}) ${ev.to.toUpperCase()}: ${ev.reason}`, { event: 'member-health', member: memberKey(m), check: v.check.kind, vips: [...(this.users.get(k) ?? [])], from: ev.from, to: ev.to, reason: ev.reason });
            for (const user of this.users.get(k) ?? []) this.dirty.add(user);
            this.deps.trigger?.();
          }),
        );
      if (defer) this.unstarted.set(k, create);
      else create();
    }
    if (this.unstarted.size) this.startMonitorsSoon();
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

  /** Monitors not started yet (a start creates 8,000 of them a batch per event-loop turn, not in one block). */
  private readonly unstarted = new Map<string, () => void>();
  private starting: NodeJS.Immediate | null = null;

  private startMonitorsSoon(): void {
    if (this.starting || this.stopped) return;
    this.starting = setImmediate(() => {
      this.starting = null;
      let n = 0;
      for (const [k, create] of this.unstarted) {
        this.unstarted.delete(k);
        create();
        if (++n >= 500) break;
      }
      if (this.unstarted.size) this.startMonitorsSoon();
      else for (const f of this.drained.splice(0)) f();
    });
  }

  /** Serialized: the runner, health events and API changes never interleave their passes. */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.queue.then(f);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** A full pass: reads the table, and writes what differs from every VIP's fragment. The periodic resync. */
  reconcile(): Promise<SlbReconcileResult> {
    return this.serial(async () => this.full(await this.read()));
  }

  private fullStarted = 0;

  /** The runner's pass: health changes (only their VIPs), or a full pass when the resync period is due or the last pass failed. */
  tick(): Promise<SlbReconcileResult> {
    return this.serial(async () => {
      if (!this.started) return this.adopt();
      if (this.readFailed || this.now() - this.lastRead >= this.fullEveryMs()) return this.full(await this.read());
      return this.flushDirty();
    });
  }

  /** How long the last full pass took (ms): its read runs four nft listings, 0.2 s each at 1,000 VIPs. */
  private lastFullMs = 0;

  /**
   * A full pass every `resyncSeconds`; with more than 200 VIPs, every 50 times its own duration if that is longer,
   * so drift repair never takes more than 2 % of a core. By size, not by time: a small table on a busy machine keeps
   * its period.
   */
  fullEveryMs(): number {
    const every = this.config.resyncSeconds * 1000;
    return this.vipList.length > 200 ? Math.max(every, 50 * this.lastFullMs) : every;
  }

  /** Counter elements the last read found. */
  counterElements(): number {
    return this.counterValues.vipNew.size + this.counterValues.memberNew.size + this.counterValues.memberPackets.size;
  }

  private async read(): Promise<SlbTables> {
    this.fullStarted = this.now();
    try {
      return await this.deps.kernel.read();
    } catch (e) {
      this.readFailed = true;
      this.failures++;
      this.lastError = (e as Error).message;
      throw e;
    }
  }

  private async transact(cmds: NftJson[]): Promise<void> {
    if (!cmds.length) return;
    this.transactions++;
    await this.deps.kernel.apply(cmds);
  }

  /** Renders the VIPs whose health changed since the last pass and applies their chains only. */
  private async flushDirty(): Promise<SlbReconcileResult> {
    const ids = new Set(this.dirty);
    this.dirty.clear();
    const frags = [...ids].flatMap((id) => (this.byId.has(id) && !isL7(this.byId.get(id)!) ? [renderVip(this.byId.get(id)!, this.up, this.config.seed)] : []));
    const cmds = tablesCommands({ table: this.config.table, want: frags, have: this.believed, scope: ids });
    this.reconciles++;
    try {
      await this.transact(cmds);
    } catch (e) {
      for (const id of ids) this.dirty.add(id);
      this.failures++;
      this.readFailed = true;
      this.lastError = (e as Error).message;
      throw e;
    }
    this.believed = applyTablesCommands(this.believed, cmds);
    for (const f of frags) this.setFragment(f);
    this.lastError = null;
    // HAProxy after the table and apart from it: HAProxy failing never holds back an L4 member's health (an alarm
    // says so, and the next pass, or the full pass, tries again).
    if ([...ids].some((id) => this.byId.has(id) && isL7(this.byId.get(id)!)) || this.l7Failed) {
      await this.applyL7(this.vipList, this.up).catch((e) => this.deps.log?.(`ALARM L7 VIPs not applied, will retry: ${(e as Error).message}`));
    }
    return { nftCommands: cmds.length, addressesAdded: [], addressesRemoved: [], tableHandle: this.believed.ip?.handle ?? null };
  }

  /**
   * Brings the kernel to every VIP: addresses first (a DNAT rule for an address the node does not hold is harmless,
   * the reverse would answer RST), then the table in one transaction; the addresses this pass added are removed again
   * when the transaction fails, so the kernel is as it was. VIPs whose health did not change keep their fragment.
   */
  private async full(have: SlbTables): Promise<SlbReconcileResult> {
    const vips = this.vipList;
    this.reconciles++;
    // The VIPs whose health changed are taken now: a health event that arrives while this pass waits for the
    // kernel marks its VIP again and the next pass renders it (clearing them all at the end lost such an event, and
    // the cached fragment then kept a dead member in the kernel: CI, slb.test.ts).
    const dirty = new Set(this.dirty);
    this.dirty.clear();
    try {
      const frags = l4(vips).map((v) => (this.fragments.has(v.id) && !dirty.has(v.id) ? this.fragments.get(v.id)! : renderVip(v, this.up, this.config.seed)));
      const decl = await this.declare(frags, have);
      have = decl.have;
      const cmds = tablesCommands({ table: this.config.table, want: frags, have });
      const r = await this.withAddresses(new Set(vips.map((v) => v.address)), null, () => this.transact(cmds)).catch(async (e) => {
        await decl.undo();
        throw e;
      });
      this.believed = applyTablesCommands(have, cmds);
      this.fragments.clear();
      this.panicked.clear();
      for (const f of frags) this.setFragment(f);
      // HAProxy apart: an L7 failure is an alarm and a retry, never a failed pass for the L4 VIPs.
      await this.applyL7(vips, this.up).catch((e) => this.deps.log?.(`ALARM L7 VIPs not applied, will retry: ${(e as Error).message}`));
      this.lastRead = this.now();
      this.lastFullMs = this.lastRead - this.fullStarted;
      this.readFailed = false;
      this.lastError = null;
      return { nftCommands: cmds.length, ...r, tableHandle: this.believed.ip?.handle ?? null };
    } catch (e) {
      for (const id of dirty) this.dirty.add(id);
      this.failures++;
      this.readFailed = true;
      this.lastError = e instanceof Error ? e.message : String(e);
      throw e;
    }
  }

  /**
   * Refuses VIPs that would capture a service of this node: on one of its own addresses (not a VIP address fwlb
   * holds) and a port a socket of the node takes. `field` names each VIP's address field in the error.
   */
  async refuseCaptures(vips: readonly ResolvedVip[], field: (v: ResolvedVip, i: number) => string, source: string): Promise<void> {
    if (!this.deps.local || !vips.length) return;
    const here = this.deps.local(await this.deps.addresses.labelledAddresses(this.config.interface, this.label));
    const problems = vips.flatMap((v, i) => {
      const why = vipConflict(v, here.addresses, here.sockets);
      return why ? [{ field: field(v, i), message: why }] : [];
    });
    if (problems.length) throw new ConfigError(problems, source);
  }

  /**
   * Declares, in text (JSON cannot), the pool maps and counter sets of each table `want` needs and lacks: both
   * families on a full pass, the first VIP of a family on a change. `undo` takes them away again when the
   * transaction that follows fails, so the kernel is as it was.
   */
  private async declare(want: readonly VipFragment[], have: SlbTables): Promise<{ have: SlbTables; undo: () => Promise<void> }> {
    const done: SlbFamily[] = [];
    let next = have;
    const undo = async () => {
      const table = this.config.table;
      // Declared into a table that did not exist: the table goes too.
      const cmds = done.flatMap((f): NftJson[] => (have[f] ? declared(f).map((d) => ({ delete: { [d.kind]: { family: f, table, name: d.name } } })) : [{ delete: { table: { family: f, name: table } } }]));
      if (cmds.length) await this.deps.kernel.apply(cmds).catch(() => undefined);
    };
    try {
      for (const f of familiesInUse(want, have)) {
        if (hasDeclarations(next[f], f)) continue;
        await this.deps.kernel.declare(f);
        done.push(f);
        next = { ...next, [f]: applySlbCommands(next[f], declarationsModel(this.config.table, f)) };
      }
    } catch (e) {
      await undo();
      throw e;
    }
    return { have: next, undo };
  }

  /**
   * Adds the addresses `want` needs before `apply`, removes them again if it fails, and removes the ones no VIP uses
   * after it succeeded. `only` limits the pass to the addresses of a change (null: compare every labelled address).
   */
  private async withAddresses(want: ReadonlySet<string>, only: ReadonlySet<string> | null, apply: () => Promise<void>) {
    const have = new Set(await this.deps.addresses.labelledAddresses(this.config.interface, this.label));
    const added: string[] = [];
    try {
      for (const a of want) {
        if (have.has(a) || (only && !only.has(a))) continue;
        if ((await this.deps.addresses.addAddress(this.config.interface, a, this.label)) !== false) added.push(a);
      }
      await apply();
    } catch (e) {
      for (const a of added) await this.deps.addresses.delAddress(this.config.interface, a).catch(() => undefined);
      throw e;
    }
    const removed = [...have].filter((a) => !want.has(a) && (!only || only.has(a)));
    for (const a of removed) await this.deps.addresses.delAddress(this.config.interface, a);
    return { addressesAdded: added, addressesRemoved: removed };
  }

  /**
   * Apply a change; only when the kernel took it does it become the state (and the state file). Why `build` gets
   * the current list inside the serialized queue: two requests that each built "the list plus my VIP" from the
   * same starting point would both be accepted and the second would silently undo the first. Only the VIPs
   * `build` replaced are rendered and written: a member change is that VIP's chain, nothing else.
   */
  private async change(build: (current: readonly ResolvedVip[]) => ResolvedVip[]): Promise<SlbReconcileResult> {
    const r = await this.serial(async () => {
      const next = build(this.vipList);
      if (next.length > MAX_VIPS) throw new ConfigError([{ field: '/', message: `at most ${MAX_VIPS} VIPs (the config file's limit)` }], 'request body');
      const overBudget = checkBudgetProblem(this.vipList, next, this.config.checkBudget.checksPerSecond);
      if (overBudget) throw new ConfigError([overBudget], 'request body');
      const nextById = new Map(next.map((v) => [v.id, v]));
      const changed = new Set<string>();
      for (const v of next) if (this.byId.get(v.id) !== v) changed.add(v.id);
      for (const id of this.byId.keys()) if (!nextById.has(id)) changed.add(id);
      // A member new to health is down (it joins after passing its checks), unless the same VIP member was up before.
      const wasUp = (v: ResolvedVip, m: Member) => {
        const k = healthKey(v, m);
        if (this.health.has(k)) return this.up(k);
        const old = this.byId.get(v.id);
        const om = old?.members.find((x) => x.address === m.address && x.port === m.port);
        return !!(old && om && this.up(healthKey(old, om)));
      };
      const initial = new Map<string, boolean>();
      for (const id of changed) {
        const v = nextById.get(id);
        for (const m of v?.members ?? []) initial.set(healthKey(v!, m), wasUp(v!, m));
      }
      const up = (k: string) => initial.get(k) ?? this.up(k);
      const frags = [...changed].flatMap((id) => (nextById.has(id) && !isL7(nextById.get(id)!) ? [renderVip(nextById.get(id)!, up, this.config.seed)] : []));
      const l7Touched = [...changed].some((id) => [nextById.get(id), this.byId.get(id)].some((v) => v && isL7(v)));
      if (l7Touched && !this.deps.l7) throw new ConfigError([{ field: '/mode', message: 'HAProxy is not available on this node (fwlb-slb doctor): L7 VIPs (mode "http") cannot be served' }], 'request body');
      await this.refuseCaptures([...changed].flatMap((id) => {
        const v = nextById.get(id);
        const old = this.byId.get(id);
        // Only a VIP that takes a new address, port or protocol: a member change never depends on the node's sockets.
        return v && !(old && old.address === v.address && old.port === v.port && old.protocol === v.protocol) ? [v] : [];
      }), () => '/address', 'request body');
      for (const id of changed) {
        const cert = nextById.get(id)?.tls?.certificate;
        if (cert && !readable(cert)) throw new ConfigError([{ field: '/tls/certificate', message: `cannot read ${cert} (a PEM file with the certificate and its key)` }], 'request body');
      }
      // Addresses: only those of the changed VIPs, and an address stays while another VIP uses it.
      const touched = new Set([...changed].flatMap((id) => [this.byId.get(id)?.address, nextById.get(id)?.address]).filter((a): a is string => !!a));
      const wantAddrs = new Set(next.filter((v) => touched.has(v.address)).map((v) => v.address));
      this.reconciles++;
      // The first VIP of a family declares its table; declaring is idempotent, and taken back if the change fails.
      const decl = await this.declare(frags, this.believed);
      let have = decl.have;
      let cmds = tablesCommands({ table: this.config.table, want: frags, have, scope: changed });
      const r = await this.withAddresses(wantAddrs, touched, async () => {
        // HAProxy first (an L7 change has no nft commands, but a VIP can change mode); if the table then refuses
        // for good, HAProxy goes back to what it ran.
        if (l7Touched) await this.applyL7(next, up);
        try {
          try {
            await this.transact(cmds);
          } catch (e) {
            // The table may have drifted from what this controller believes (someone edited it): read it and try once more.
            have = await this.deps.kernel.read();
            const again = tablesCommands({ table: this.config.table, want: frags, have, scope: changed });
            if (!familiesInUse(frags, have).every((f) => hasDeclarations(have[f], f)) || JSON.stringify(again) === JSON.stringify(cmds)) throw e;
            cmds = again;
            await this.transact(cmds);
          }
        } catch (e) {
          if (l7Touched) await this.applyL7(this.vipList, this.up).catch(() => undefined);
          throw e;
        }
      }).catch(async (e) => {
        await decl.undo();
        this.failures++;
        this.lastError = e instanceof Error ? e.message : String(e);
        throw e;
      });
      this.believed = applyTablesCommands(have, cmds);
      for (const f of frags) this.setFragment(f);
      for (const id of changed) if (!nextById.has(id)) this.dropFragment(id);
      this.version++;
      const prev = this.byId;
      this.vipList = next;
      this.index();
      for (const id of changed) this.retarget(prev.get(id), nextById.get(id), (m) => (initial.get(healthKey(nextById.get(id)!, m)) ? 'up' : 'down'));
      return { nftCommands: cmds.length, ...r, tableHandle: this.believed.ip?.handle ?? null };
    });
    await this.persist();
    return r;
  }

  private saving: Promise<void> | null = null;
  private nextSave: Promise<void> | null = null;

  /**
   * Writes the state file for every change accepted so far. Group commit: a change that arrives while a write runs
   * waits for the one next write, which carries it and every other change that arrived meanwhile; so a burst of
   * changes costs two writes, and a 2xx still means the change is on disk.
   */
  private persist(): Promise<void> {
    if (!this.deps.save) return Promise.resolve();
    if (!this.saving) {
      // A resolved VIP serializes as its config document (vipDocument is its JSON round trip); the saver caches that text per VIP.
      const snapshot = this.vipList as unknown as readonly VipConfig[];
      this.saving = Promise.resolve()
        .then(() => this.deps.save!(snapshot))
        .then(
          () => {
            this.saveError = null;
          },
          (e) => {
            this.saveError = `state file not written: ${(e as Error).message}`;
            throw new SaveError(this.saveError);
          },
        )
        .finally(() => (this.saving = null));
      return this.saving;
    }
    this.nextSave ??= this.saving
      .catch(() => undefined)
      .then(() => {
        this.nextSave = null;
        return this.persist();
      });
    return this.nextSave;
  }

  /** Set while the last change is live in the kernel but not in the state file. */
  saveError: string | null = null;

  /** The other VIPs, for the overlap and duplicate checks (resolved VIPs carry the fields they compare). */
  private others(current: readonly ResolvedVip[], id?: string): readonly ResolvedVip[] {
    return id === undefined ? current : current.filter((v) => v.id !== id);
  }

  private find(current: ReadonlyMap<string, ResolvedVip>, id: string): ResolvedVip {
    const v = current.get(id);
    if (!v) throw new NotFoundError('vip', `no VIP "${id}"`);
    return v;
  }

  async createVip(body: unknown): Promise<ResolvedVip> {
    let v: ResolvedVip | null = null;
    await this.change((cur) => {
      v = validateVip(body, this.others(cur));
      return [...cur, v];
    });
    return v!;
  }

  async replaceVip(id: string, body: unknown): Promise<ResolvedVip> {
    if (body && typeof body === 'object' && 'id' in body && (body as { id: unknown }).id !== id) {
      throw new ConfigError([{ field: '/id', message: `must be "${id}" as in the path` }], 'request body');
    }
    let v: ResolvedVip | null = null;
    await this.change((cur) => {
      this.find(this.byId, id);
      const nv = validateVip({ ...(body as object), id }, this.others(cur, id));
      v = nv;
      return cur.map((x) => (x.id === id ? nv : x));
    });
    return v!;
  }

  async deleteVip(id: string): Promise<void> {
    await this.change((cur) => {
      this.find(this.byId, id);
      return cur.filter((x) => x.id !== id);
    });
  }

  private member(v: ResolvedVip, key: string) {
    const k = memberKeyOf(key);
    const i = v.members.findIndex((m) => memberKey(m) === k);
    if (i < 0) throw new NotFoundError('member', `VIP "${v.id}" has no member ${key}`);
    return i;
  }

  /** Edits one VIP's members, reading the VIP inside the serialized queue (see `change`). */
  private async withMembers(id: string, edit: (v: ResolvedVip, members: MemberConfig[]) => MemberConfig[]): Promise<ResolvedVip> {
    let v: ResolvedVip | null = null;
    await this.change((cur) => {
      const old = this.find(this.byId, id);
      const doc = vipDocument(old);
      doc.members = edit(old, doc.members);
      try {
        v = validateVip(doc, this.others(cur, id));
      } catch (e) {
        // Name the member fields as the request sent them, not as they sit in the VIP.
        if (e instanceof ConfigError) throw new ConfigError(e.problems.map((p) => ({ ...p, field: p.field.replace(/^\/members\/\d+/, '') || '/' })), 'request body');
        throw e;
      }
      const nv = v;
      return cur.map((x) => (x.id === id ? nv : x));
    });
    return v!;
  }

  addMember(id: string, body: MemberConfig): Promise<ResolvedVip> {
    return this.withMembers(id, (_v, ms) => [...ms, body]);
  }

  patchMember(id: string, key: string, patch: Partial<Pick<MemberConfig, 'weight' | 'state'>>): Promise<ResolvedVip> {
    return this.withMembers(id, (v, ms) => {
      const i = this.member(v, key);
      return ms.map((m, j) => (j === i ? { ...m, ...patch } : m));
    });
  }

  deleteMember(id: string, key: string): Promise<ResolvedVip> {
    return this.withMembers(id, (v, ms) => {
      const i = this.member(v, key);
      return ms.filter((_, j) => j !== i);
    });
  }

  /**
   * Counters are read from the counter sets in the background (start.ts runs this every `countersSeconds`): an API
   * read answers from memory and never runs a process. Elements of members no longer configured are dropped here.
   */
  async refreshCounters(): Promise<void> {
    if (this.deps.l7 && this.l7Want) this.l7Stats = await this.deps.l7.stats().catch(() => this.l7Stats);
    const c = await this.deps.kernel.counters();
    this.counterValues = c;
    this.countersAt = this.now();
    this.liveVersion++;
    const vipKeys = new Set(this.vipList.map((v) => viewKeys(v).vip));
    const memberKeys = new Set(this.vipList.flatMap((v) => viewKeys(v).counters));
    const stale = staleCounterCommands(this.config.table, c, vipKeys, memberKeys);
    if (stale.length) await this.serial(() => this.transact(stale));
  }

  memberView(v: ResolvedVip) {
    if (isL7(v)) return this.l7MemberView(v);
    const slots = this.fragments.get(v.id)?.slots ?? [];
    const keys = viewKeys(v);
    return v.members.map((m, i) => {
      const k = healthKey(v, m);
      const h = this.health.get(k);
      const mon = this.monitors.get(k);
      const key = keys.members[i];
      const ck = keys.counters[i];
      let n = 0;
      for (const x of slots) if (x === key) n++;
      return {
        address: m.address,
        port: m.port,
        weight: m.weight,
        state: m.state,
        health: { up: h?.up ?? false, reason: h?.reason ?? (this.started ? '' : 'starting: the kernel state is being adopted'), since: h?.since ?? null, lastCheck: mon?.last ?? null, unknown: mon?.unknown ?? null },
        slots: n,
        counters: {
          at: this.countersAt,
          newSessions: this.counterValues.memberNew.get(ck) ?? 0,
          packets: this.counterValues.memberPackets.get(ck)?.packets ?? 0,
          bytes: this.counterValues.memberPackets.get(ck)?.bytes ?? 0,
        },
      };
    });
  }

  /** An L7 VIP's members: health as fwlb's checks see it, counters from HAProxy's stats (a session is a connection). */
  private l7MemberView(v: ResolvedVip) {
    return v.members.map((m) => {
      const k = healthKey(v, m);
      const h = this.health.get(k);
      const st = this.l7Stats.get(`${backendName(v.id, m.pool!)}/${serverName(m)}`);
      return {
        address: m.address,
        port: m.port,
        weight: m.weight,
        state: m.state,
        pool: m.pool,
        health: { up: h?.up ?? false, reason: h?.reason ?? (this.started ? '' : 'starting: the kernel state is being adopted'), since: h?.since ?? null, lastCheck: this.monitors.get(k)?.last ?? null, unknown: this.monitors.get(k)?.unknown ?? null },
        haproxy: st?.status ?? null,
        // No DNAT slots and no per-packet counters for L7 (HAProxy counts sessions and responses).
        slots: 0,
        counters: { at: this.countersAt, newSessions: st?.sessions ?? 0, responses: st?.requests ?? 0, packets: 0, bytes: 0 },
      };
    });
  }

  /** The VIP's new sessions as last read from the kernel. */
  vipNewSessions(v: ResolvedVip): number {
    return this.counterValues.vipNew.get(viewKeys(v).vip) ?? 0;
  }

  vipView(v: ResolvedVip) {
    if (isL7(v)) {
      const fe = this.l7Stats.get(`${frontendName(v.id)}/FRONTEND`);
      const pools = v.pools.map((p) => {
        const st = this.l7Stats.get(`${backendName(v.id, p.name)}/BACKEND`);
        return { name: p.name, sessions: st?.sessions ?? 0, responses: st?.requests ?? 0 };
      });
      // Requests per rule (in rule order) and of no rule, since HAProxy's last start or reload.
      const rules = v.rules.map((r, i) => ({ rule: i, pool: r.pool, requests: this.l7Stats.get(`${ruleTable(v.id)}/${ruleId(r)}`)?.requests ?? 0 }));
      const unmatched = this.l7Stats.get(`${ruleTable(v.id)}/${DEFAULT_RULE}`)?.requests ?? 0;
      return { ...(v as VipConfig), members: this.memberView(v), counters: { newSessions: fe?.sessions ?? 0, requests: fe?.requests ?? 0, rules, defaultPool: unmatched, pools, at: this.countersAt } };
    }
    const newSessions = this.vipNewSessions(v);
    // The resolved VIP is frozen and serializes as its document: spread it instead of a JSON round trip per VIP per GET.
    return { ...(v as VipConfig), members: this.memberView(v), counters: { newSessions, at: this.countersAt } };
  }

  /**
   * GET /vips as JSON (UTF-8). At 1,000 VIPs × 8 members the body is 2 MB and takes about 0.1 s to build, so it is built
   * once and served to every request until a change is accepted (at once) or it is a second old (health and counters).
   */
  vipsBody(): Buffer {
    const now = this.now();
    const c = this.listCache;
    if (c && c.version === this.version && (c.live === this.liveVersion || now - c.at < LIST_MAX_AGE_MS)) return c.body;
    // Kept encoded: a 2 MB string would be encoded to UTF-8 again for every response.
    const body = Buffer.from(JSON.stringify(this.vipList.map((v) => this.vipView(v))));
    this.listCache = { body, version: this.version, live: this.liveVersion, at: now };
    return body;
  }

  alarms(): string[] {
    const panics = [...this.panicked].map(([id, p]) => {
      const v = this.byId.get(id);
      return `VIP ${id} in panic: ${p.healthy} of ${p.enabled} enabled members up (threshold ${Math.round((v?.panicThreshold ?? 0) * 100)}%), every enabled member takes new sessions`;
    });
    const starting = this.started ? [] : [`starting: adopting the kernel state of ${this.vipList.length} VIPs${this.lastError ? ` (last try failed: ${this.lastError})` : ''}`];
    const l7 = this.deps.l7 && this.l7Want ? this.deps.l7.alarms() : [];
    if (this.l7Failed) l7.push(`L7 VIPs not applied (HAProxy keeps what it ran; L4 VIPs are not affected): ${this.l7Failed}`);
    if (!this.deps.l7 && this.vipList.some(isL7)) l7.push(`HAProxy is not available on this node: ${this.vipList.filter(isL7).length} L7 VIPs are not served`);
    return [...starting, ...(this.saveError ? [this.saveError] : []), ...panics, ...l7, ...(this.deps.alarms?.() ?? [])];
  }

  /** For the metrics: whether the probe helper answers, and whether HAProxy runs (null: not on this node). */
  helperUp(): boolean | null {
    return this.deps.helperUp ? this.deps.helperUp() : null;
  }

  haproxyUp(): boolean | null {
    return this.deps.l7 ? this.deps.l7.status().running === true : null;
  }

  status() {
    return {
      alarms: this.alarms(),
      name: this.config.name,
      table: { family: 'ip', name: this.config.table, families: SLB_FAMILIES.filter((f) => this.believed[f] !== null) },
      interface: this.config.interface,
      vips: this.vipList.length,
      monitors: this.monitors.size + this.unstarted.size,
      started: this.started,
      reconciles: this.reconciles,
      transactions: this.transactions,
      failures: this.failures,
      lastError: this.lastError,
      haproxy: this.deps.l7 ? this.deps.l7.status() : null,
    };
  }

  /** What HAProxy was last told to run (null while no L7 VIP was ever applied). */
  private l7Want: L7Want | null = null;
  /** Why the last L7 apply failed (the next pass tries again), or null. */
  private l7Failed: string | null = null;
  private l7Stats = new Map<string, HaproxyStat>();

  /**
   * Renders the L7 VIPs of `vips` with the health `up` gives and makes HAProxy run them (runtime API, or a checked
   * reload when the structure changed). Nothing to do on a node that never had an L7 VIP.
   */
  private async applyL7(vips: readonly ResolvedVip[], up: (healthKey: string) => boolean): Promise<void> {
    const l7 = vips.filter(isL7);
    if (!this.deps.l7 || (!l7.length && !this.l7Want)) return;
    const want = renderL7(l7, (v, m) => up(healthKey(v, m)), this.deps.l7.paths);
    try {
      const r = await this.deps.l7.apply(want);
      if (r.reloaded) this.deps.log?.(`HAProxy loaded a new config: ${l7.length} L7 VIPs`, { event: 'haproxy-reload', vips: l7.length });
    } catch (e) {
      this.l7Failed = e instanceof Error ? e.message : String(e);
      throw e;
    }
    this.l7Want = want;
    this.l7Failed = null;
  }

  private stopped = false;

  stop(): void {
    this.stopped = true;
    if (this.starting) clearImmediate(this.starting);
    this.unstarted.clear();
    for (const f of this.drained.splice(0)) f();
    for (const m of this.monitors.values()) m.stop();
    this.monitors.clear();
  }
}
