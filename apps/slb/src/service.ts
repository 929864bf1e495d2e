// The SLB tier's state and its one way to change the kernel: validate, render, apply in one transaction, roll back on
// failure; imperative shell of apps/slb.
import type { ResolvedSlbConfig, ResolvedVip, MemberConfig, VipConfig } from '@fwlb/config';
import { ConfigError, memberKey, validateVip, vipDocument } from '@fwlb/config';
import type { HealthEvent, HealthState, ProbeResult } from '@fwlb/health';
import { diffTable, NftRunner } from '@fwlb/nft';
import { healthKey, memberCounter, memberNewCounter, pool, renderSlb, SLB_FAMILY, vipCounter } from './render';

/** The part of libs/routing that manages VIP addresses, so tests can put a fake in front of the kernel. */
export interface AddressPort {
  labelledAddresses(ifname: string, label: string): Promise<string[]>;
  addAddress(ifname: string, addr: string, label: string): Promise<void>;
  delAddress(ifname: string, addr: string): Promise<void>;
}

export interface MonitorHandle {
  readonly state: HealthState;
  readonly last: ProbeResult | null;
  stop(): void;
}

/** Starts one health monitor for a (RIP, port, check, timers); main.ts wires libs/health, tests a fake. */
export type MonitorFactory = (key: string, vip: ResolvedVip, member: { address: string; port: number }, initial: HealthState, onEvent: (ev: HealthEvent) => void) => MonitorHandle;

export interface SlbDeps {
  nft: NftRunner;
  addresses: AddressPort;
  monitors: MonitorFactory;
  /** Persist the VIPs after each accepted change (the state file). */
  save?: (vips: VipConfig[]) => void;
  /** Ask for a reconcile soon (the bounded runner); health changes call it. */
  trigger?: () => void;
  log?: (msg: string) => void;
  now?: () => number;
  /** Conditions an operator must see (the probe helper down); /health is not `ok` while there are any. */
  alarms?: () => string[];
}

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

/**
 * Which members each VIP's DNAT map holds in a `nft -j list table` listing, by the VIP's named counter: a VIP whose
 * counter exists but has no DNAT rule had no live member. null when there is no table.
 */
export function kernelMembers(listing: unknown): Map<string, Set<string>> | null {
  const items = (listing as { nftables?: any[] } | null)?.nftables;
  if (!items?.some((it) => it.table)) return null;
  const out = new Map<string, Set<string>>();
  for (const it of items) if (it.counter && typeof it.counter.name === 'string' && it.counter.name.startsWith('vip_')) out.set(it.counter.name, new Set());
  for (const it of items) {
    const expr: any[] = it.rule?.chain === 'dnat' ? it.rule.expr ?? [] : [];
    const name = expr.find((s) => typeof s?.counter === 'string')?.counter;
    const set = expr.find((s) => s?.dnat)?.dnat?.addr?.map?.data?.set;
    if (typeof name !== 'string' || !Array.isArray(set)) continue;
    const members = out.get(name) ?? new Set<string>();
    for (const [, v] of set) if (Array.isArray(v?.concat)) members.add(`${v.concat[0]}:${v.concat[1]}`);
    out.set(name, members);
  }
  return out;
}

export class SlbService {
  private vipList: ResolvedVip[];
  private readonly health = new Map<string, { up: boolean; reason: string; since: number }>();
  private readonly monitors = new Map<string, MonitorHandle>();
  private queue: Promise<unknown> = Promise.resolve();
  private namedCounters = new Map<string, { packets: number; bytes: number }>();
  /** When the counters were read from the kernel (ms), or null before the first read. */
  countersAt: number | null = null;
  readonly label: string;
  reconciles = 0;
  failures = 0;
  lastError: string | null = null;

  constructor(readonly config: ResolvedSlbConfig, private readonly deps: SlbDeps) {
    this.vipList = [...config.vips];
    this.label = `${config.interface}:vip`;
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }

  /**
   * A restart keeps the last known health, and the kernel is where it is kept: a member in its VIP's DNAT map was
   * up, an enabled member missing from it was down (a member that was down before the restart gets no traffic
   * until it passes `rise` checks). With no table yet (a fresh node) or a VIP the kernel never had, members count as
   * up until their checks say otherwise, so a first start changes nothing either. Members added later through the
   * API start down and take traffic after `rise` passed checks.
   */
  async start(vips: readonly ResolvedVip[] = this.vipList): Promise<SlbReconcileResult> {
    this.vipList = [...vips];
    const inKernel = kernelMembers(await this.deps.nft.list(SLB_FAMILY, this.config.table).catch(() => null));
    this.syncMonitors((_k, v, m) => {
      const mine = inKernel?.get(vipCounter(v));
      if (!mine) return 'up';
      const member = v.members.find((x) => x.address === m.address && x.port === m.port);
      return member?.state === 'drain' || mine.has(`${m.address}:${m.port}`) ? 'up' : 'down';
    });
    return this.reconcile();
  }

  vips(): readonly ResolvedVip[] {
    return this.vipList;
  }

  vip(id: string): ResolvedVip {
    return this.find(this.vipList, id);
  }

  private up = (key: string): boolean => this.health.get(key)?.up ?? false;

  /**
   * Starts a monitor for every (RIP, port, check, timers) in use and stops the ones nobody uses. A new key takes
   * its initial state from `initialOf`: at start, up (adopt); later, the state the same VIP member had under its old
   * check (changing a check must not take a pool down), else down until `rise` passed checks.
   */
  private syncMonitors(initialOf: (key: string, v: ResolvedVip, m: { address: string; port: number }) => HealthState): void {
    const want = new Map<string, { v: ResolvedVip; m: { address: string; port: number } }>();
    for (const v of this.vipList) for (const m of v.members) want.set(healthKey(v, m), { v, m });
    const starts: [string, ResolvedVip, { address: string; port: number }, HealthState][] = [];
    for (const [k, { v, m }] of want) if (!this.monitors.has(k)) starts.push([k, v, m, initialOf(k, v, m)]);
    for (const [k, mon] of this.monitors) {
      if (!want.has(k)) {
        mon.stop();
        this.monitors.delete(k);
        this.health.delete(k);
      }
    }
    for (const [k, v, m, initial] of starts) {
      this.health.set(k, { up: initial === 'up', reason: initial === 'up' ? 'known up' : 'down (not in service when this controller started, or new): waiting for checks', since: this.now() });
      this.monitors.set(
        k,
        this.deps.monitors(k, v, m, initial, (ev) => {
          this.health.set(k, { up: ev.to === 'up', reason: ev.reason, since: ev.at });
          this.deps.log?.(`member ${m.address}:${m.port} (${v.check.kind}) ${ev.to.toUpperCase()}: ${ev.reason}`);
          this.deps.trigger?.();
        }),
      );
    }
  }

  /** Under the current state: was this VIP's member up (by whatever check it had)? */
  private wasUp(prev: readonly ResolvedVip[]) {
    return (_k: string, v: ResolvedVip, m: { address: string; port: number }): HealthState => {
      const old = prev.find((x) => x.id === v.id);
      const om = old?.members.find((x) => x.address === m.address && x.port === m.port);
      return old && om && this.up(healthKey(old, om)) ? 'up' : 'down';
    };
  }

  /** Serialized: the runner, health events and API changes never interleave their read-diff-apply passes. */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.queue.then(f);
    this.queue = next.catch(() => undefined);
    return next;
  }

  reconcile(): Promise<SlbReconcileResult> {
    return this.serial(() => this.applyVips(this.vipList));
  }

  /**
   * Brings the kernel to `vips`: VIP addresses first (a DNAT rule for an address the node does not hold is
   * harmless, the reverse would answer RST), then the nft table in one transaction. If the transaction fails,
   * the addresses this pass added are removed again, so the kernel is as it was.
   */
  private async applyVips(vips: readonly ResolvedVip[], up: (key: string) => boolean = this.up): Promise<SlbReconcileResult> {
    this.reconciles++;
    try {
      const desired = renderSlb({ table: this.config.table, seed: this.config.seed, vips, up });
      const actual = await this.deps.nft.read(SLB_FAMILY, this.config.table);
      const cmds = diffTable(desired, actual);
      const have = new Set(await this.deps.addresses.labelledAddresses(this.config.interface, this.label));
      const want = new Set(vips.map((v) => v.address));
      const added: string[] = [];
      try {
        for (const a of want) {
          if (have.has(a)) continue;
          await this.deps.addresses.addAddress(this.config.interface, a, this.label);
          added.push(a);
        }
        await this.deps.nft.apply(cmds);
      } catch (e) {
        for (const a of added) await this.deps.addresses.delAddress(this.config.interface, a).catch(() => undefined);
        throw e;
      }
      const removed = [...have].filter((a) => !want.has(a));
      for (const a of removed) await this.deps.addresses.delAddress(this.config.interface, a);
      const after = cmds.length ? await this.deps.nft.read(SLB_FAMILY, this.config.table) : actual;
      this.namedCounters = after?.namedCounters ?? new Map();
      this.countersAt = this.now();
      this.lastError = null;
      return { nftCommands: cmds.length, addressesAdded: added, addressesRemoved: removed, tableHandle: after?.handle ?? null };
    } catch (e) {
      this.failures++;
      this.lastError = e instanceof Error ? e.message : String(e);
      throw e;
    }
  }

  /**
   * Apply a change; only when the kernel took it does it become the state (and the state file). Why `build` gets
   * the current list inside the serialized queue: two requests that each built "the list plus my VIP" from the
   * same starting point would both be accepted and the second would silently undo the first (issue 9).
   */
  private change(build: (current: readonly ResolvedVip[]) => ResolvedVip[]): Promise<SlbReconcileResult> {
    return this.serial(async () => {
      const next = build(this.vipList);
      if (next.length > MAX_VIPS) throw new ConfigError([{ field: '/', message: `at most ${MAX_VIPS} VIPs (the config file's limit)` }], 'request body');
      // A member new to health is down (it joins after passing its checks), unless the same VIP member was up before.
      const prev = this.vipList;
      const keep = this.wasUp(prev);
      const initial = new Map<string, boolean>();
      for (const v of next) for (const m of v.members) initial.set(healthKey(v, m), this.health.get(healthKey(v, m))?.up ?? keep('', v, m) === 'up');
      const r = await this.applyVips(next, (k) => initial.get(k) ?? false);
      this.vipList = next;
      this.syncMonitors(this.wasUp(prev));
      try {
        this.deps.save?.(next.map(vipDocument));
        this.saveError = null;
      } catch (e) {
        this.saveError = `state file not written: ${(e as Error).message}`;
        throw new SaveError(this.saveError);
      }
      return r;
    });
  }

  /** Set while the last change is live in the kernel but not in the state file. */
  saveError: string | null = null;

  private others(current: readonly ResolvedVip[], id?: string): VipConfig[] {
    return current.filter((v) => v.id !== id).map(vipDocument);
  }

  private find(current: readonly ResolvedVip[], id: string): ResolvedVip {
    const v = current.find((x) => x.id === id);
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
      this.find(cur, id);
      const nv = validateVip({ ...(body as object), id }, this.others(cur, id));
      v = nv;
      return cur.map((x) => (x.id === id ? nv : x));
    });
    return v!;
  }

  async deleteVip(id: string): Promise<void> {
    await this.change((cur) => {
      this.find(cur, id);
      return cur.filter((x) => x.id !== id);
    });
  }

  private member(v: ResolvedVip, key: string) {
    const i = v.members.findIndex((m) => memberKey(m) === key);
    if (i < 0) throw new NotFoundError('member', `VIP "${v.id}" has no member ${key}`);
    return i;
  }

  /** Edits one VIP's members, reading the VIP inside the serialized queue (see `change`). */
  private async withMembers(id: string, edit: (v: ResolvedVip, members: MemberConfig[]) => MemberConfig[]): Promise<ResolvedVip> {
    let v: ResolvedVip | null = null;
    await this.change((cur) => {
      const old = this.find(cur, id);
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
   * Counters are read from the kernel's named counters (they survive chain rewrites), in the background (start.ts
   * runs this every `countersSeconds`): an API read answers from memory and never runs a process.
   */
  async refreshCounters(): Promise<void> {
    const t = await this.deps.nft.read(SLB_FAMILY, this.config.table);
    this.namedCounters = t?.namedCounters ?? new Map();
    this.countersAt = this.now();
  }

  memberView(v: ResolvedVip) {
    const desired = renderSlb({ table: this.config.table, seed: this.config.seed, vips: [v], up: this.up });
    const slots = desired.slots.get(v.id) ?? [];
    return v.members.map((m) => {
      const k = healthKey(v, m);
      const h = this.health.get(k);
      const mon = this.monitors.get(k);
      const key = memberKey(m);
      return {
        address: m.address,
        port: m.port,
        weight: m.weight,
        state: m.state,
        health: { up: h?.up ?? false, reason: h?.reason ?? '', since: h?.since ?? null, lastCheck: mon?.last ?? null },
        slots: slots.filter((s) => s === key).length,
        counters: {
          at: this.countersAt,
          newSessions: this.namedCounters.get(memberNewCounter(v, m))?.packets ?? 0,
          packets: this.namedCounters.get(memberCounter(v, m))?.packets ?? 0,
          bytes: this.namedCounters.get(memberCounter(v, m))?.bytes ?? 0,
        },
      };
    });
  }

  vipView(v: ResolvedVip) {
    return { ...vipDocument(v), members: this.memberView(v), counters: { newSessions: this.namedCounters.get(vipCounter(v))?.packets ?? 0, at: this.countersAt } };
  }

  alarms(): string[] {
    const panics = this.vipList.flatMap((v) => {
      const p = pool(v, this.up);
      return p.panic ? [`VIP ${v.id} in panic: ${p.healthy.length} of ${p.enabled.length} enabled members up (threshold ${Math.round(v.panicThreshold * 100)}%), every enabled member takes new sessions`] : [];
    });
    return [...(this.saveError ? [this.saveError] : []), ...panics, ...(this.deps.alarms?.() ?? [])];
  }

  status() {
    return {
      alarms: this.alarms(),
      name: this.config.name,
      table: { family: SLB_FAMILY, name: this.config.table },
      interface: this.config.interface,
      vips: this.vipList.length,
      monitors: this.monitors.size,
      reconciles: this.reconciles,
      failures: this.failures,
      lastError: this.lastError,
    };
  }

  stop(): void {
    for (const m of this.monitors.values()) m.stop();
    this.monitors.clear();
  }
}
