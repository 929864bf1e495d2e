// The SLB's passes over the kernel: the adoption at start, the full pass (drift repair, addresses) and the flush of
// the VIPs whose member health changed; when each is due, and what a failed one leaves for the next. Shell layer of
// libs/slb: the SLB service owns the VIPs and the API's changes, this owns bringing the kernel to them.
import type { ResolvedSlbConfig, ResolvedVip } from '@fwlb/config';
import { isProxied } from '@fwlb/config';
import { canonicalAddress } from '@fwlb/flowhash';
import { cpuMs, periodForShare } from '@fwlb/service';
import type { MonitorPool } from './monitor-pool';
import { adoptedHealth, SlbTables } from './kernel';
import { tablesCommands } from './kernel-diff';
import { renderVip } from './render';
import type { AppliedVips } from './applied-vips';
import type { SlbTableWriter } from './table-writer';
import type { L7Applier } from './l7-applier';

export interface SlbReconcileResult {
  nftCommands: number;
  addressesAdded: string[];
  addressesRemoved: string[];
  tableHandle: number | null;
}

/** What the passes read and write: the service's VIPs and its parts that hold what was applied. */
export interface SlbPassDeps {
  config: ResolvedSlbConfig;
  vips: () => readonly ResolvedVip[];
  vip: (id: string) => ResolvedVip | undefined;
  pool: () => MonitorPool;
  writer: SlbTableWriter;
  l7: L7Applier;
  applied: AppliedVips;
  now: () => number;
}

/**
 * The share of a core each periodic job of a large table may take (the full pass, the counters' read): beyond it the
 * job's period stretches. One figure for both, so that an idle node's total stays predictable.
 */
export const BACKGROUND_CPU_SHARE = 0.0025;
/** VIPs beyond which a table is large for the periodic jobs (below it, they keep their configured periods). */
export const LARGE_VIPS = 200;

/** The L4 VIPs: the ones the nft table holds (a proxied VIP is HAProxy's). */
const l4 = (vs: readonly ResolvedVip[]) => vs.filter((v) => !isProxied(v));

export class SlbPasses {
  /** Passes run and failed (a change through the API counts as one), and the last failure's message. */
  reconciles = 0;
  failures = 0;
  lastError: string | null = null;
  /** Set once the kernel state has been adopted; until then /health says `starting` and changes wait their turn. */
  started = false;
  /** Kernel notices that may have touched a VIP's address (see addressesChanged). */
  addressNotices = 0;

  /** The VIPs whose member health changed since the last pass. */
  private readonly dirty = new Set<string>();
  private lastRead = 0;
  private readFailed = false;
  /** A notice asks for a full pass; cleared when one starts, so that a notice during a pass asks for the next. */
  private fullWanted = false;
  /** The CPU used when the last full pass began, and what that pass cost (ms, its nft listings included). */
  private fullStartedCpu = 0;
  private lastFullCpuMs = 0;

  constructor(private readonly d: SlbPassDeps) {}

  /** Member health changed for these VIPs: the next pass renders them. */
  healthChanged(vipIds: Iterable<string>): void {
    for (const id of vipIds) this.dirty.add(id);
  }

  /** A change through the API is a pass of its own VIPs: counted as one. */
  changeStarted(): void {
    this.reconciles++;
  }

  /** A change through the API failed: counted like a failed pass. */
  changeFailed(e: unknown): void {
    this.failures++;
    this.lastError = e instanceof Error ? e.message : String(e);
  }

  /**
   * The kernel says an interface changed or an address came or went: when it may be one of the VIPs' (or `address`
   * is unknown), the next pass is a full one, which puts the addresses back; true when the caller should trigger it.
   * Why: an interface taken down loses its IPv6 addresses, and someone may delete one by hand.
   */
  addressesChanged(address?: string): boolean {
    if (address !== undefined && !this.d.vips().some((v) => canonicalAddress(v.address) === address)) return false;
    this.fullWanted = true;
    this.addressNotices++;
    return true;
  }

  /**
   * A full pass every `resyncSeconds`; with more than LARGE_VIPS VIPs, less often if it must, so that drift repair takes at
   * most BACKGROUND_CPU_SHARE of a core (its own CPU and its nft listings'). By size, not by time: a small table on a
   * busy machine keeps its period. Drift is also repaired at once where the kernel says so (an address notice).
   */
  fullEveryMs(): number {
    const every = this.d.config.resyncSeconds * 1000;
    return this.d.vips().length > LARGE_VIPS ? periodForShare(every, this.lastFullCpuMs, BACKGROUND_CPU_SHARE) : every;
  }

  /** The runner's pass: the adoption until it succeeded, a full pass when one is due or the last failed, else the health changes. */
  tick(): Promise<SlbReconcileResult> {
    if (!this.started) return this.adopt();
    if (this.readFailed || this.fullWanted || this.d.now() - this.lastRead >= this.fullEveryMs()) return this.fullRead();
    return this.flushDirty();
  }

  /**
   * Adopts the kernel: one terse read, then only what differs is written. The last known health is the kernel's:
   * a member in its VIP's DNAT map was up, an enabled member missing from it was down.
   */
  async adopt(): Promise<SlbReconcileResult> {
    const have = await this.read();
    const pool = this.d.pool();
    for (const v of this.d.vips()) pool.retarget(undefined, v, adoptedHealth(have, v), true);
    const r = await this.full(have);
    this.started = true;
    await pool.allStarted();
    return r;
  }

  /** A full pass: reads the table, and writes what differs from every VIP's fragment. The periodic resync. */
  async fullRead(): Promise<SlbReconcileResult> {
    return this.full(await this.read());
  }

  private async read(): Promise<SlbTables> {
    this.fullStartedCpu = cpuMs();
    this.fullWanted = false;
    try {
      return await this.d.writer.read();
    } catch (e) {
      throw this.failed(e);
    }
  }

  /**
   * A pass that failed: its VIPs are rendered again by the next pass, which is a full one (the kernel may hold
   * anything now). Returns `e`, to be thrown.
   */
  private failed(e: unknown, dirty: Iterable<string> = []): unknown {
    this.healthChanged(dirty);
    this.changeFailed(e);
    this.readFailed = true;
    return e;
  }

  private render(v: ResolvedVip) {
    return renderVip(v, this.d.pool().up, this.d.config.seed);
  }

  /** Renders the VIPs whose health changed since the last pass and applies their chains only. */
  private async flushDirty(): Promise<SlbReconcileResult> {
    const { writer, l7, config } = this.d;
    const ids = new Set(this.dirty);
    this.dirty.clear();
    const vips = [...ids].flatMap((id) => this.d.vip(id) ?? []);
    const frags = l4(vips).map((v) => this.render(v));
    const have = writer.tables();
    const cmds = tablesCommands({ table: config.table, want: frags, have, scope: ids });
    this.reconciles++;
    try {
      await writer.transact(cmds);
    } catch (e) {
      throw this.failed(e, ids);
    }
    writer.took(have, cmds);
    for (const f of frags) this.d.applied.set(f);
    this.lastError = null;
    // HAProxy after the table and apart from it: HAProxy failing never holds back an L4 member's health (an alarm
    // says so, and the next pass, or the full pass, tries again).
    if (vips.some(isProxied) || l7.retryDue) await l7.applyOrAlarm(this.d.vips(), this.d.pool().up);
    return { nftCommands: cmds.length, addressesAdded: [], addressesRemoved: [], tableHandle: writer.handle() };
  }

  /**
   * Brings the kernel to every VIP: addresses first (a DNAT rule for an address the node does not hold is harmless,
   * the reverse would answer RST), then the table in one transaction; the addresses this pass added are removed again
   * when the transaction fails, so the kernel is as it was. VIPs whose health did not change keep their fragment.
   */
  private async full(have: SlbTables): Promise<SlbReconcileResult> {
    const { writer, l7, applied, config } = this.d;
    const vips = this.d.vips();
    this.reconciles++;
    // The VIPs whose health changed are taken now, not cleared at the end: a health event that arrives while this
    // pass waits for the kernel marks its VIP again, and the next pass renders it; else the cached fragment would
    // keep a dead member in the kernel.
    const dirty = new Set(this.dirty);
    this.dirty.clear();
    try {
      const frags = l4(vips).map((v) => (applied.has(v.id) && !dirty.has(v.id) ? applied.get(v.id)! : this.render(v)));
      const decl = await writer.declare(frags, have);
      have = decl.have;
      const cmds = tablesCommands({ table: config.table, want: frags, have });
      const r = await writer
        .withAddresses(new Set(vips.map((v) => v.address)), null, () => writer.transact(cmds))
        .catch(async (e) => {
          await decl.undo();
          throw e;
        });
      writer.took(have, cmds);
      applied.replaceAll(frags);
      // HAProxy apart: an L7 failure is an alarm and a retry, never a failed pass for the L4 VIPs.
      await l7.applyOrAlarm(vips, this.d.pool().up);
      this.lastRead = this.d.now();
      this.lastFullCpuMs = cpuMs() - this.fullStartedCpu;
      this.readFailed = false;
      this.lastError = null;
      return { nftCommands: cmds.length, ...r, tableHandle: writer.handle() };
    } catch (e) {
      throw this.failed(e, dirty);
    }
  }
}
