// What the kernel runs on, as the last committed pass left it, and the steering rules' counters of the last listing
// of the table: the reconciler writes it, the API reads it. Memory only: no read of the kernel happens here.
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { bucketMoves, distribution, BucketTable } from '@fwlb/flowhash';
import { ActualTable, ruleDigest } from '@fwlb/nft';
import type { Membership, MembershipSnapshot } from './membership';
import type { RenderedTable } from './render';
import { newFlowsCounter, sentCounter } from './rules';

type Counter = { packets: number; bytes: number } | null;

export class KernelView {
  /** The membership the kernel runs on: set only once the transaction that applies it has committed. */
  private applied: MembershipSnapshot | null = null;
  private table: BucketTable | null = null;
  /** The table the kernel switches to at a later second (a pending admin change or join), or null. */
  private coming: { at: number; table: BucketTable } | null = null;
  /** Per firewall that carries no new sessions: which firewalls took its buckets. */
  private moves: Record<string, Record<string, number>> = {};
  /** Digests of the labelled rules of the last applied table: how a listing's counters are found. */
  private labels: Record<string, string> = {};
  /** The rules' and the named counters of the last listing of the table, and when that listing began. */
  private counters: { of: ActualTable['counters']; named: ActualTable['namedCounters']; at: number } | null = null;

  /**
   * A pass committed `table` (and `next` from its second on). Returns the buckets that moved from the table before
   * (none on the first), and those that will move at the switch when that switch is news (told once per switch).
   */
  commit(
    config: ResolvedBalancerConfig,
    snap: MembershipSnapshot,
    desired: RenderedTable,
    table: BucketTable,
    next: { at: number; table: BucketTable } | null,
  ): { moved: number[]; coming: { buckets: number[]; at: number } | null } {
    this.applied = snap;
    this.labels = Object.fromEntries(Object.entries(desired.labeled).map(([k, r]) => [k, ruleDigest(r)]));
    const before = this.table;
    this.table = table;
    const moved = before ? table.owner.flatMap((o, b) => (o !== before.owner[b] ? [b] : [])) : [];
    const announced = this.coming;
    this.coming = next ? { at: next.at, table: next.table } : null;
    let coming: { buckets: number[]; at: number } | null = null;
    if (next && (announced?.at !== next.at || announced.table.owner.some((o, b) => o !== next.table.owner[b]))) {
      const buckets = next.table.owner.flatMap((o, b) => (o !== table.owner[b] ? [b] : []));
      if (buckets.length) coming = { buckets, at: next.at };
    }
    this.moves = bucketMoves(
      config.firewalls.map((f) => f.id),
      table,
    );
    return { moved, coming };
  }

  /** A listing of the table that began at `at`: its counters are the ones shown from now on. */
  listed(actual: ActualTable, at: number): void {
    this.counters = { of: actual.counters, named: actual.namedCounters, at };
  }

  /** When the last listing began, or null before the first. */
  countersAt(): number | null {
    return this.counters?.at ?? null;
  }

  currentTable(): BucketTable | null {
    return this.table;
  }

  comingTable(): BucketTable | null {
    return this.coming?.table ?? null;
  }

  /** The agreed epoch the kernel runs on (null without one). */
  agreement() {
    return this.applied?.agreement ?? null;
  }

  buckets(config: ResolvedBalancerConfig, groups: string[][]) {
    return { size: config.hash.buckets, distribution: this.table ? distribution(this.table) : {}, movedTo: this.moves, syncGroups: groups };
  }

  /**
   * What the kernel runs on (`live`, `buckets`: the last committed transaction) beside what this node wants
   * (`wantLive`); they differ only while a change is on its way.
   */
  firewalls(membership: Membership, groupOf: ReadonlyMap<string, string | undefined>) {
    const want = membership.snapshot();
    const applied = this.applied;
    const dist = this.table ? distribution(this.table) : {};
    return membership.views().map((v) => ({
      ...v,
      live: applied ? applied.live.includes(v.id) : false,
      wantLive: want.live.includes(v.id),
      restorable: applied ? applied.restorable.includes(v.id) : false,
      suspect: applied ? applied.suspect.includes(v.id) : false,
      buckets: dist[v.id] ?? 0,
      syncGroup: groupOf.get(v.id) ?? null,
      // While it carries no new sessions: which firewalls took its buckets (its sync group first).
      bucketsMovedTo: this.moves[v.id] ?? {},
      learned: this.counterOf(`learn:${v.id}`),
      // Packets from it of flows this node had on another firewall: the flow moved to it (null without learning).
      relearned: this.counterOf(`relearn:${v.id}`),
      // Packets from the side to its NAT pools (null without pools).
      natPool: this.counterOf(`nat-pool:${v.id}`),
      // What this node sent it on established flows, and the new flows it hashed to it (the kernel's counters).
      sent: this.counters?.named.get(sentCounter(v.id)) ?? null,
      newFlows: this.counters?.named.get(newFlowsCounter(v.id)) ?? null,
    }));
  }

  /** The steering rules' counters, as read at the last listing of the table. */
  steering() {
    const c = (label: string) => this.counterOf(label);
    return {
      // The restore rule counts on each firewall's `sent` counter: their sum.
      restored: this.sentTotal(),
      restoredHeard: c('restore-heard'),
      hashedSyn: c('hash-syn'),
      hashedTcpUdp: c('hash-tcp-udp'),
      hashedOther: c('hash-other'),
      droppedNoFirewall: c('no-firewall-drop'),
      pinned: c('pinned'),
    };
  }

  private sentTotal(): Counter {
    const named = this.counters?.named;
    if (!named) return null;
    const sent = [...named].filter(([name]) => name.startsWith(sentCounter('')));
    if (!sent.length) return null;
    return sent.reduce((a, [, v]) => ({ packets: a.packets + v.packets, bytes: a.bytes + v.bytes }), { packets: 0, bytes: 0 });
  }

  /** A labeled rule's counter, both families' rules added up (an IPv6 copy is labeled `<label>/ipv6`). */
  private counterOf(label: string): Counter {
    const counters = this.counters?.of;
    const of = (l: string) => {
      const d = this.labels[l];
      return d && counters ? (counters.get(d) ?? null) : null;
    };
    const v4 = of(label);
    const v6 = of(`${label}/ipv6`);
    if (!v4 || !v6) return v4 ?? v6;
    return { packets: v4.packets + v6.packets, bytes: v4.bytes + v6.bytes };
  }
}
