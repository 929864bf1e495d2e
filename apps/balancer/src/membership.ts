// Firewall membership: the one owner of each firewall's admin state, own health, own link and the agreed epoch,
// and of what follows from them (who takes new sessions, whose established flows keep their firewall); pure layer
// of apps/balancer. The API, the health monitors and the agreement write it; the reconciler reads snapshots.
import type { ResolvedBalancerConfig } from '@fwlb/config';

export interface FirewallSlot {
  id: string;
  index: number;
  mark: number;
  table: number;
  priority: number;
}

/** Each firewall's mark, routing table and rule priority, resolved once from the validated config. */
export function slots(c: ResolvedBalancerConfig): FirewallSlot[] {
  return c.firewalls.map((f, i) => ({ id: f.id, index: i, mark: c.marks.base + i, table: c.tables.base + i, priority: c.rulePriorities.base + i }));
}

/**
 * How far ahead a change that every node must make at once takes effect: each node of both sides must have it in
 * its kernel before then (an event through Redis and one reconcile), so that all switch bucket maps at the same
 * second and no connection's SYN and SYN-ACK meet two tables. Rounded up to a whole second (nft's `meta time`). Why
 * 2 s: a node busy with hundreds of new connections a second answers an operator's request well after the node that
 * shared the change first, and its pass takes a while more; at 1 s, nodes of a busy lab committed switches late
 * (`lateSwitches` in /status counts them; bench/controller-cpu.ts prints them).
 */
export const SWITCH_LEAD_MS = 2000;
export const switchTime = (now: number) => Math.ceil((now + SWITCH_LEAD_MS) / 1000) * 1000;

/** What every node agreed through the shared table (layer 2): the leader's epoch. */
export interface Agreement {
  epoch: number;
  /**
   * Firewalls every node sees up: they may take new sessions. Those the previous epoch did not have take them from
   * `joinAt` on (ms since the epoch), when set: the same second on every node.
   */
  live: string[];
  joinAt?: number;
  /** Firewalls every node sees down: their flows are re-hashed unless a packet from them proves otherwise. */
  down: string[];
}

export interface HealthDetail {
  reason: string;
  since: number;
  latencyMs?: number;
}

export interface MembershipSnapshot {
  /** Firewalls that take new sessions: enabled, seen up by this node, agreed (with a session table), link up. */
  live: string[];
  /**
   * Firewalls whose established flows keep them (restore by ct mark): this node's link to them is up and they are
   * not gone. Why not "seen up by this node": a packet that arrived from firewall k proves that k forwards that
   * flow; the twin may see k up and send through it while this node's probes fail.
   */
  restorable: string[];
  /**
   * Firewalls that look gone (agreed down; without a session table, down in this node's own view) while the link
   * to them is up: a flow keeps such a firewall only while packets of it keep arriving from it (the `heard` set).
   */
  suspect: string[];
  agreement: Agreement | null;
  /** Set while this node is in panic (see Membership): why. */
  panic: string | null;
}

export interface FirewallView {
  id: string;
  mark: number;
  table: number;
  priority: number;
  enabled: boolean;
  /**
   * When `enabled` took effect, or takes effect, on every node (ms since the epoch, a whole second: the kernels
   * switch bucket maps at it); null when it comes from the config or the state file, or was made on this node alone.
   */
  enabledAt: number | null;
  healthy: boolean;
  link: boolean;
  health: HealthDetail | null;
}

export class Membership {
  private slotList: readonly FirewallSlot[];
  private cfg: ResolvedBalancerConfig;
  /** The operator's wish per firewall: `enabled` from `at` (ms since the epoch) on, `before` until then. */
  private readonly admin = new Map<string, { enabled: boolean; at: number; before: boolean }>();
  private readonly health = new Map<string, boolean>();
  private readonly detail = new Map<string, HealthDetail>();
  private readonly link = new Map<string, boolean>();
  /** Firewalls added by a reload whose checks have not yet decided their health. */
  private readonly awaiting = new Set<string>();
  private agreement: Agreement | null = null;
  /** The agreed live firewalls before the current epoch, while its joins wait for their time. */
  private liveBefore: Set<string> | null = null;
  /** The firewalls this node last saw up while not in panic: the membership panic mode keeps. */
  private lastGood: Set<string>;
  private panicThreshold: number;
  /** When each firewall last went down in this node's view. */
  private readonly downAt = new Map<string, number>();
  /**
   * Failures this close together count as "at once": the monitors run on jittered timers, so one cause (all probes
   * dropped) takes the firewalls down one after the other within about one detection time.
   */
  private panicWindowMs: number;
  /**
   * How long a node whose links all came back abstains: its probes need `rise` checks per firewall to see them up
   * again, and until then its view would veto firewalls that every other node sees up.
   */
  private settleMs: number;
  /** When this node's links last came back after all were down; null if they never were. */
  private linksBackAt: number | null = null;

  /** `agreementExpected`: a session table is configured, so agreement (when known) decides who is gone. */
  constructor(
    config: ResolvedBalancerConfig,
    private readonly agreementExpected = config.sessionTable !== null,
    private readonly now: () => number = Date.now,
  ) {
    this.cfg = config;
    this.slotList = Object.freeze(slots(config).map((s) => Object.freeze(s)));
    for (const f of config.firewalls) this.admin.set(f.id, { enabled: f.enabled, at: 0, before: f.enabled });
    this.lastGood = new Set(this.slotList.map((s) => s.id));
    this.panicThreshold = 0;
    this.panicWindowMs = 0;
    this.settleMs = 0;
    this.setTimers(config);
  }

  private setTimers(config: ResolvedBalancerConfig): void {
    this.panicThreshold = config.health?.panicThreshold ?? 0;
    const tm = config.health?.timers;
    this.panicWindowMs = tm ? Math.max(tm.timeout, tm.retries * tm.interval) + 2 * tm.interval : 0;
    this.settleMs = tm ? (tm.rise + 2) * tm.interval : 0;
  }

  get config(): ResolvedBalancerConfig {
    return this.cfg;
  }

  get slots(): readonly FirewallSlot[] {
    return this.slotList;
  }

  /**
   * A reloaded config (checked by reloadProblems): firewalls that stay keep their state (admin, health, link); a
   * firewall whose `enabled` changed in the file takes it; an added one is down until its checks prove it up (with a
   * health section: it takes no bucket before), and enabled as the file says; a removed one is forgotten. Returns
   * the ids added and removed, and `undo`, which puts everything back as it was (the kernel refused the change).
   */
  reconfigure(next: ResolvedBalancerConfig): { added: string[]; removed: string[]; undo: () => void } {
    const saved = {
      maps: [this.admin, this.health, this.detail, this.link, this.downAt].map((m) => new Map(m as Map<string, unknown>)),
      awaiting: new Set(this.awaiting),
      lastGood: new Set(this.lastGood),
      cfg: this.cfg,
      slotList: this.slotList,
      panicAt: this.panicAt,
    };
    const undo = () => {
      [this.admin, this.health, this.detail, this.link, this.downAt].forEach((m, i) => {
        (m as Map<string, unknown>).clear();
        for (const [k, v] of saved.maps[i]) (m as Map<string, unknown>).set(k, v);
      });
      this.awaiting.clear();
      for (const id of saved.awaiting) this.awaiting.add(id);
      this.lastGood = saved.lastGood;
      this.cfg = saved.cfg;
      this.slotList = saved.slotList;
      this.panicAt = saved.panicAt;
      this.setTimers(saved.cfg);
    };
    const before = new Map(this.cfg.firewalls.map((f) => [f.id, f]));
    const ids = new Set(next.firewalls.map((f) => f.id));
    const removed = [...before.keys()].filter((id) => !ids.has(id));
    const added = next.firewalls.filter((f) => !before.has(f.id)).map((f) => f.id);
    for (const id of removed) {
      for (const m of [this.admin, this.health, this.detail, this.link, this.downAt] as Map<string, unknown>[]) m.delete(id);
      this.lastGood.delete(id);
      this.awaiting.delete(id);
    }
    for (const f of next.firewalls) {
      const was = before.get(f.id);
      if (!was) {
        this.admin.set(f.id, { enabled: f.enabled, at: 0, before: f.enabled });
        if (next.health) {
          this.awaiting.add(f.id);
          this.health.set(f.id, false);
          this.detail.set(f.id, { reason: 'added by a reload: waiting for its first checks', since: this.now() });
        }
      } else if (was.enabled !== f.enabled) this.setAdmin(f.id, f.enabled);
    }
    this.cfg = next;
    this.slotList = Object.freeze(slots(next).map((s) => Object.freeze(s)));
    this.setTimers(next);
    this.updatePanic();
    return { added, removed, undo };
  }

  /** Set while this node is in panic: since when. */
  private panicAt: number | null = null;

  private ownUp(id: string): boolean {
    return this.health.get(id) !== false && this.link.get(id) !== false;
  }

  /**
   * Panic mode (Envoy's panic threshold): when fewer than `panicThreshold` of the firewalls look up to this node's
   * probes at the same time, the probes are not believed: losing half the firewalls in one instant is far more
   * likely a fault of the measuring (this node's probe path, its helper, an ACL on the probes) than of the
   * firewalls. Run by the writers (health, link), so reads stay pure: entering panic keeps the last good view plus
   * the firewalls that went down in the same burst; out of panic, the last good view follows the probes.
   */
  private updatePanic(): void {
    const counted = this.counted();
    const upNow = counted.filter((s) => this.ownUp(s.id)).length;
    if (this.panicThreshold > 0 && upNow < this.panicThreshold * counted.length) {
      if (this.panicAt !== null) return;
      this.panicAt = this.now();
      const since = this.panicAt - this.panicWindowMs;
      for (const s of counted) if ((this.downAt.get(s.id) ?? -Infinity) >= since) this.lastGood.add(s.id);
      return;
    }
    this.panicAt = null;
    this.lastGood = new Set(this.slotList.filter((s) => this.ownUp(s.id)).map((s) => s.id));
  }

  /** The firewalls panic counts: not those added by a reload that wait for their first checks (down, but not failing). */
  private counted(): readonly FirewallSlot[] {
    return this.awaiting.size ? this.slotList.filter((s) => !this.awaiting.has(s.id)) : this.slotList;
  }

  /** The health this node acts on (in panic, the last good membership minus links that are down), and why. */
  private effective(): { up: (id: string) => boolean; panic: string | null } {
    if (this.panicAt === null) return { up: (id) => this.ownUp(id), panic: null };
    const counted = this.counted();
    const upNow = counted.filter((s) => this.ownUp(s.id)).length;
    return {
      up: (id) => this.lastGood.has(id) && this.link.get(id) !== false,
      panic: `panic: only ${upNow} of ${counted.length} firewalls look up at once (threshold ${Math.round(this.panicThreshold * 100)}%); the probes are not believed, the last good membership (${[...this.lastGood].join(',') || 'none'}) is kept minus links that are down`,
    };
  }

  has(id: string): boolean {
    return this.admin.has(id);
  }

  /**
   * The operator's change: the firewall takes new sessions (or stops) from `at` on. Why a time: the nodes of a side
   * apply a change at once only if they agree when (see Reconciler: the kernel switches bucket maps at that second);
   * a change that is already the wish keeps the time it was given first.
   */
  setAdmin(id: string, enabled: boolean, at = 0): void {
    const cur = this.admin.get(id);
    if (!cur) throw new RangeError(`no firewall ${id}`);
    if (cur.enabled === enabled) return;
    this.admin.set(id, { enabled, at, before: this.adminAt(id, this.now()) });
  }

  /**
   * A change read from the shared admin state: as setAdmin, and a change still to come keeps its time even where
   * this node holds its wish already without one (the state file, saved by a node that read the change while it
   * stopped, holds the wish alone): before its second the firewall stays as the change found it, as on every other
   * node. Returns whether anything changed.
   */
  adoptShared(id: string, enabled: boolean, at: number): boolean {
    const cur = this.admin.get(id);
    if (!cur) throw new RangeError(`no firewall ${id}`);
    const pending = at > this.now();
    if (cur.enabled === enabled && (!pending || cur.at === at)) return false;
    this.admin.set(id, { enabled, at, before: pending ? !enabled : this.adminAt(id, this.now()) });
    return true;
  }

  /**
   * The firewalls that would take new sessions at `at` were `id`'s admin state `enabled` by then: what a change
   * would do, before it is made (the change itself is not made).
   */
  liveIf(id: string, enabled: boolean, at = this.now()): string[] {
    const cur = this.admin.get(id);
    if (!cur) throw new RangeError(`no firewall ${id}`);
    this.admin.set(id, { enabled, at: 0, before: enabled });
    try {
      return this.snapshot(at).live;
    } finally {
      this.admin.set(id, cur);
    }
  }

  /** Whether the operator lets the firewall take new sessions at time `t`. */
  private adminAt(id: string, t: number): boolean {
    const a = this.admin.get(id);
    return a !== undefined && (t >= a.at ? a.enabled : a.before);
  }

  /** The earliest change still to come (an admin change, an agreed join; ms since the epoch), or null. */
  pendingAt(): number | null {
    const now = this.now();
    const times = [...[...this.admin.values()].map((a) => a.at), this.agreement?.joinAt ?? 0].filter((t) => t > now);
    return times.length ? Math.min(...times) : null;
  }

  /** Every firewall's admin state (the operator's wish, pending or not), for the state file. */
  adminState(): Record<string, boolean> {
    return Object.fromEntries(this.slotList.map((s) => [s.id, this.admin.get(s.id)?.enabled === true]));
  }

  /** The operator's wish (it may take effect a moment later, see setAdmin). */
  isEnabled(id: string): boolean {
    return this.admin.get(id)?.enabled === true;
  }

  /** This node's probe result; without a health section every firewall counts as healthy. */
  setHealth(id: string, up: boolean, reason = '', latencyMs?: number): void {
    this.awaiting.delete(id);
    if (!up && this.health.get(id) !== false) this.downAt.set(id, this.now());
    this.health.set(id, up);
    this.detail.set(id, { reason, since: this.now(), ...(latencyMs !== undefined ? { latencyMs } : {}) });
    this.updatePanic();
  }

  /** The latency of the last check that got an answer (the state changes only through setHealth). */
  setLatency(id: string, latencyMs: number): void {
    const d = this.detail.get(id);
    if (d) d.latencyMs = latencyMs;
    else this.detail.set(id, { reason: '', since: this.now(), latencyMs });
  }

  /** This node's own link to the firewall; returns true when it changed. Unknown counts as up. */
  setLink(id: string, up: boolean): boolean {
    const was = this.link.get(id) !== false;
    const allDown = this.allLinksDown();
    this.link.set(id, up);
    if (allDown && up) this.linksBackAt = this.now();
    this.updatePanic();
    return was !== up;
  }

  setAgreement(a: Agreement | null): void {
    // A join still to come keeps the firewalls that were live before (if one is pending already, those of before it).
    const pending = this.agreement?.joinAt !== undefined && this.agreement.joinAt > this.now() ? this.liveBefore : null;
    this.liveBefore = a?.joinAt !== undefined && a.joinAt > this.now() ? (pending ?? new Set(this.agreement?.live ?? a.live)) : null;
    this.agreement = a;
  }

  private allLinksDown(): boolean {
    return this.slotList.every((s) => this.link.get(s.id) === false);
  }

  /**
   * Why this node should not attract traffic (null: it can forward): its links to the firewalls are all down, no
   * firewall answers its probes, or its probes are in panic. A node that cannot reach a firewall its siblings reach
   * is better left by the routers.
   */
  unfitReason(): string | null {
    if (this.allLinksDown()) return 'every link to the firewalls is down';
    if (!this.slotList.some((s) => this.ownUp(s.id))) return "no firewall answers this node's probes";
    return this.effective().panic;
  }

  /** This node's own view, as published to the shared table (in panic, the view it keeps). */
  ownView(): Record<string, boolean> {
    // Every link down: this node forwards nothing, so it abstains (an empty view) instead of vetoing every firewall
    // for the nodes that still forward (a node of a redundant side that lost its links). So it does while
    // its probes settle after the links came back.
    if (this.allLinksDown()) return {};
    if (this.linksBackAt !== null && this.now() - this.linksBackAt < this.settleMs) return {};
    const e = this.effective();
    return Object.fromEntries(this.slotList.map((s) => [s.id, e.up(s.id)]));
  }

  /** What follows at time `at` (default now): a pending admin change counts from its time on. */
  snapshot(at = this.now()): MembershipSnapshot {
    const a = this.agreement;
    const joining = a?.joinAt !== undefined && at < a.joinAt && this.liveBefore;
    const agreedLive = a ? new Set(joining ? a.live.filter((id) => this.liveBefore!.has(id)) : a.live) : null;
    const agreedDown = a ? new Set(a.down) : null;
    const live: string[] = [];
    const restorable: string[] = [];
    const suspect: string[] = [];
    const eff = this.effective();
    for (const { id } of this.slots) {
      const own = eff.up(id);
      const linkUp = this.link.get(id) !== false;
      if (own && linkUp && this.adminAt(id, at) && (!agreedLive || agreedLive.has(id))) live.push(id);
      if (!linkUp) continue;
      // Gone: every node sees it down; before any agreement (or without a session table), this node's own view.
      const gone = this.agreementExpected && agreedDown ? agreedDown.has(id) : !own;
      (gone ? suspect : restorable).push(id);
    }
    return { live, restorable, suspect, agreement: a, panic: eff.panic };
  }

  views(): FirewallView[] {
    return this.slotList.map((s) => {
      const admin = this.admin.get(s.id)!;
      return {
        id: s.id,
        mark: s.mark,
        table: s.table,
        priority: s.priority,
        enabled: admin.enabled,
        enabledAt: admin.at || null,
        healthy: this.health.get(s.id) !== false,
        link: this.link.get(s.id) !== false,
        health: this.detail.get(s.id) ?? null,
      };
    });
  }
}
