// Layer 2 agreement: every node publishes its health view; one leader turns the fresh views into a bucket-table
// epoch; every node applies the epoch it reads. The decisions are here, Redis is behind a port; shell-free and
// clocked by the caller, so tests drive it with a fake store.
import { agreedDown, agreedUp, EpochDoc, REPLICA_ACK_MS, voters } from '@fwlb/session-table';
import { createHash } from 'node:crypto';
import { Agreement, switchTime } from './membership';

/** The part of libs/session-table the agreement uses. */
export interface AgreementStore {
  lead(ttlMs: number): Promise<boolean>;
  healthViews(maxAgeMs: number, now?: number): Promise<Record<string, Record<string, boolean>>>;
  epoch(): Promise<EpochDoc | null>;
  /** The epoch published (`replicated`: whether a replica held it before it was announced), or null. */
  publishEpoch(members: string[], live: string[], down: string[], now?: number, joinAt?: number): Promise<(EpochDoc & { replicated?: boolean | null }) | null>;
  setHealthView(view: Record<string, boolean>, now?: number, digest?: string): Promise<void>;
  /** Every node's hash config digest (fresh views only). */
  configDigests?(maxAgeMs: number, now?: number): Promise<Record<string, string>>;
}

export interface AgreementOptions {
  /** The configured firewall ids. */
  ids: string[];
  store: AgreementStore;
  /** Views older than three periods are stale; the leader lock lives three periods. */
  periodMs: number;
  /** The agreement to apply (the membership's setAgreement and a reconcile). */
  apply: (a: Agreement) => void;
  log?: (m: string, fields?: Record<string, unknown>) => void;
  now?: () => number;
  /** This node's hash config digest (`hashConfigDigest`): published with the view and compared with the others'. */
  digest?: string;
  /**
   * How much later than usual (ms) firewalls `joining` should take new sessions: a join that moves many sessions
   * waits until every node can have read and pinned them (see SessionLayer.leadFor). Absent, or failing: no more.
   */
  joinLead?: (joining: string[]) => Promise<number>;
}

/**
 * What every node of the sandwich must share for a flow to land in the same bucket and firewall on all of them:
 * seed, bucket count, hash order, and the firewalls with their sync groups (ids in config order: the bucket table
 * joins them in that order), and the table's construction. A short SHA-256.
 */
export function hashConfigDigest(c: {
  hash: { seed: number; buckets: number; order: string };
  firewalls: readonly { id: string; syncGroup?: string }[];
}): string {
  const doc = {
    table: 'joined',
    seed: c.hash.seed,
    buckets: c.hash.buckets,
    order: c.hash.order,
    firewalls: c.firewalls.map((f) => [f.id, f.syncGroup ?? null]),
  };
  return createHash('sha256').update(JSON.stringify(doc)).digest('hex').slice(0, 16);
}

export class AgreementLoop {
  appliedEpoch = 0;
  /**
   * Who published the applied epoch and when: an epoch of the same number but another document replaces it. Why: a
   * failover can lose an epoch after a node applied it (a replica too slow to confirm it in time); the leader's next
   * epoch then takes the lost one's number, and it must not look applied already.
   */
  private appliedAt = 0;
  private appliedBy = '';
  private appliedGeneration: string | null = null;
  /** Set while an epoch was refused (it would leave no firewall live): why. */
  alarm: string | null = null;
  /** Set while another node publishes a different hash config digest: which nodes. */
  configAlarm: string | null = null;
  private view: Record<string, boolean>;
  private ids: string[];
  private digest: string | undefined;

  constructor(private readonly o: AgreementOptions) {
    this.ids = o.ids;
    this.digest = o.digest;
    this.view = Object.fromEntries(o.ids.map((id) => [id, true]));
  }

  /**
   * A reloaded config: its firewalls and digest. A firewall only this node knows gets no agreement until every
   * node's view has it up (a view without it vetoes it), and the leader counts only the firewalls it knows.
   */
  reconfigure(ids: string[], digest?: string): void {
    this.ids = ids;
    this.digest = digest;
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  /**
   * Apply the current epoch if it is newer than the applied one, or of a new generation (Redis lost its data and
   * the numbering started again). An epoch that leaves no firewall live is refused: data in Redis never takes
   * every firewall out; the last agreement stays in force and an alarm says why.
   */
  async applyEpoch(): Promise<void> {
    const doc = await this.o.store.epoch();
    if (
      !doc ||
      (doc.generation === this.appliedGeneration &&
        (doc.epoch < this.appliedEpoch || (doc.epoch === this.appliedEpoch && doc.at === this.appliedAt && doc.by === this.appliedBy)))
    )
      return;
    const known = new Set(this.ids);
    const live = doc.live.filter((id) => known.has(id));
    if (!live.length) {
      if (this.alarm === null) this.o.log?.(`ALARM epoch ${doc.epoch} by ${doc.by} would leave no firewall live; keeping epoch ${this.appliedEpoch}`);
      this.alarm = `epoch ${doc.epoch} by ${doc.by} would leave no firewall live; epoch ${this.appliedEpoch} stays in force`;
      return;
    }
    this.alarm = null;
    this.appliedEpoch = doc.epoch;
    this.appliedGeneration = doc.generation;
    this.appliedAt = doc.at;
    this.appliedBy = doc.by;
    this.o.apply({ epoch: doc.epoch, live, down: doc.down.filter((id) => known.has(id)), ...(doc.joinAt !== undefined ? { joinAt: doc.joinAt } : {}) });
    this.o.log?.(`applied epoch ${doc.epoch} by ${doc.by}: live ${live.join(',')}`, { event: 'epoch', epoch: doc.epoch, by: doc.by, live });
  }

  /** As the leader (when this node holds or takes the lock), publish a new epoch when the fresh views changed it. */
  async lead(): Promise<void> {
    const ttl = 3 * this.o.periodMs;
    if (!(await this.o.store.lead(ttl))) return;
    const views = await this.o.store.healthViews(ttl, this.now());
    // No fresh view at all (Redis just lost its data), or only abstentions: nothing to agree on yet.
    if (!voters(views).length) return;
    const live = agreedUp(views, this.ids);
    const down = agreedDown(views, this.ids);
    const cur = await this.o.store.epoch();
    if (cur && JSON.stringify(cur.live) === JSON.stringify(live) && JSON.stringify(cur.down) === JSON.stringify(down)) return;
    // A firewall that joins new sessions does so at one second on every node (see switchTime); one that leaves does
    // at once (it failed, or a node sees it down and keeps it out of its own table already).
    // A join still to come keeps its time in the next epoch.
    const joining = live.filter((id) => !(cur?.live ?? []).includes(id));
    const pending = cur?.joinAt !== undefined && cur.joinAt > this.now() ? cur.joinAt : undefined;
    const lead = joining.length && cur && this.o.joinLead ? await this.o.joinLead(joining).catch(() => 0) : 0;
    const doc = await this.o.store.publishEpoch(this.ids, live, down, this.now(), joining.length && cur ? switchTime(this.now() + lead) : pending);
    if (doc?.replicated === false)
      this.o.log?.(`epoch ${doc.epoch} published, but no Redis replica confirmed it within ${REPLICA_ACK_MS} ms: a primary lost now would lose it`);
  }

  /** Lead if possible, then apply; never throws (Redis away: the last agreement stays). */
  step(): Promise<void> {
    return this.lead()
      .then(() => this.applyEpoch())
      .catch(() => undefined);
  }

  /** Publish this node's view (a change, or the periodic refresh), then compare the config digests, then step. */
  publish(view?: Record<string, boolean>): Promise<void> {
    if (view) this.view = view;
    return this.o.store
      .setHealthView(this.view, this.now(), this.digest)
      .then(() => this.compareDigests())
      .then(() => this.step())
      .catch(() => undefined);
  }

  /**
   * A node whose seed, bucket count or firewalls differ hashes flows elsewhere: a flow that moves to it (ECMP, VRRP)
   * or its twin's replies cross another firewall. Nothing can be agreed around that; the alarm names the nodes.
   */
  private async compareDigests(): Promise<void> {
    if (!this.digest || !this.o.store.configDigests) return;
    const all = await this.o.store.configDigests(3 * this.o.periodMs, this.now());
    const other = Object.entries(all)
      .filter(([, d]) => d !== this.digest)
      .map(([n, d]) => `${n} (${d})`)
      .sort();
    const alarm = other.length
      ? `hash config differs: this node ${this.digest}, ${other.join(', ')}: seed, buckets, order or firewalls (ids, sync groups) must be the same on every node`
      : null;
    if (alarm !== this.configAlarm) this.o.log?.(alarm ? `ALARM ${alarm}` : 'hash config: every node agrees again');
    this.configAlarm = alarm;
  }
}
