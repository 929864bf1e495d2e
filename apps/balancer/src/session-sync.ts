// Layer 3: records every session this node steers (conntrack NEW/DESTROY, ct mark = firewall) in the shared Redis
// session table, in batches; re-syncs from a dump after lost events, after Redis comes back, and periodically
// (which refreshes expiries). Shell layer of apps/balancer.
import type { CtEntry, CtEventKind } from '@fwlb/conntrack';
import type { SessionEnd, SessionRecord } from '@fwlb/session-table';
import { sessionId } from '@fwlb/session-table';
import { canonicalKey } from '@fwlb/flowhash';
import { SIDE_LABEL } from './render';

/** The part of libs/session-table the sync uses, so tests can put a fake in front of Redis. */
export interface SessionStore {
  put(records: SessionRecord[], now?: number): Promise<number>;
  /** Records of sessions that ended, each only while it holds the firewall given (a later connection's stays). */
  delete(ends: readonly SessionEnd[]): Promise<number>;
  /** This node no longer holds these sessions, though they may live on: keep them until `until` unless refreshed. */
  grace(ids: string[], until: number): Promise<number>;
}

export interface SessionSyncOptions {
  node: string;
  role: 'outside' | 'inside';
  /** Told of every session change, e.g. to keep the local cache the pins are computed from. */
  onChange?: (kind: 'put' | 'delete' | 'grace', rec: SessionRecord) => void;
  /** ct mark → firewall id; entries with other marks are not fwlb's. */
  firewallOf: (mark: number) => string | undefined;
  store: SessionStore;
  dump: () => Promise<CtEntry[]>;
  flushMs: number;
  resyncMs: number;
  now?: () => number;
  log?: (m: string) => void;
}

/**
 * Both nodes must write the same key for a session: (outer, inner) as the hash sees it. A flow whose first packet
 * came from the side interface carries the SIDE_LABEL ct label: its original source is the side end, which is the
 * outer end on the outside node and the inner end on the inside node. A flow learned from a firewall is the reverse.
 */
export function sessionOf(
  e: CtEntry,
  firewall: string,
  node: string,
  now: number,
  minTtlMs: number,
  role: 'outside' | 'inside',
  maxTtlMs = Infinity,
): SessionRecord {
  // flowhash's canonicalKey is the one place that decides which end is outer: a flow that came in from the side is
  // seen as this node sees it; one learned from a firewall came in the way the twin's side sees it.
  const sideFirst = e.labels?.includes(SIDE_LABEL) ?? false;
  const seenAs = sideFirst ? role : role === 'outside' ? 'inside' : 'outside';
  const k = canonicalKey(seenAs, { saddr: e.orig.src, daddr: e.orig.dst, sport: e.orig.sport ?? 0, dport: e.orig.dport ?? 0, proto: e.orig.proto });
  return {
    ...k,
    firewall,
    node,
    // The connection's own start where conntrack keeps one: a re-sync rewrites every record, and a record that said
    // "first seen now" would make every other node's live entry on the tuple look earlier than it (see staleness).
    firstSeen: e.start !== undefined && e.start <= now ? e.start : now,
    expires: now + Math.min(Math.max((e.timeout ?? 0) * 1000, minTtlMs), maxTtlMs),
  };
}

/**
 * Sessions worth a record: TCP and UDP. ICMP and other protocols are hashed on addresses only and are short; their
 * conntrack entries (health probes among them) are not recorded.
 */
export function tracked(e: CtEntry, firewallOf: (mark: number) => string | undefined): string | undefined {
  return e.orig.proto === 6 || e.orig.proto === 17 ? firewallOf(e.mark) : undefined;
}

const IPS_SEEN_REPLY = 1 << 1;
const IPS_ASSURED = 1 << 2;

/**
 * A session enters the shared table once it has been answered: TCP when its handshake completed (ASSURED), UDP
 * when a reply was seen. Why: a stray ACK or a spoofed SYN creates a conntrack entry (nf_conntrack_tcp_loose,
 * SYN_RECV) that no firewall will ever carry; recording it would fill Redis and every node's cache.
 */
export function answered(e: CtEntry): boolean {
  return (e.status & (e.orig.proto === 6 ? IPS_ASSURED : IPS_SEEN_REPLY)) !== 0;
}

/** TCP states in which a DESTROY is the session's own end (FIN or RST seen); anything else may be a flush. */
const ENDED = new Set(['FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE']);

/**
 * A TCP connection that is over while its entry lives on: both ends closed (TIME_WAIT) or one reset it (CLOSE). A
 * re-sync ends its record again rather than writing it. Why: its end may have been lost with Redis (a failover), and
 * a client that reuses the port (a CGNAT, a proxy) starts a new connection on the tuple within seconds; a re-sync
 * that wrote the ended connection back would make every node without state of its own send the new connection's
 * packets to the ended one's firewall. Not FIN_WAIT or CLOSE_WAIT: a half-closed connection still carries data the
 * other way.
 */
export function isOver(e: CtEntry): boolean {
  return e.orig.proto === 6 && (e.tcpState === 'TIME_WAIT' || e.tcpState === 'CLOSE');
}

/**
 * What a DESTROY event means for the shared record. Why not always delete: conntrack destroys live entries too
 * (`conntrack -F`, a reboot, eviction under pressure), and the twin may still hold the session; a DESTROY event
 * also carries no ct label, so its orientation cannot be derived from it. A TCP entry that saw FIN or
 * RST has ended: delete. Anything else (an established TCP entry, UDP, whose end is only its timeout) gets a
 * grace expiry, which any node that still holds the session, or picks it up again, refreshes.
 */
export function destroyAction(e: CtEntry): 'delete' | 'grace' {
  return e.orig.proto === 6 && e.tcpState !== undefined && ENDED.has(e.tcpState) ? 'delete' : 'grace';
}

/**
 * How long a record lives unless refreshed: at least two re-sync periods (every node refreshes what it holds once a
 * period; also the grace of a session destroyed without an end), at most four (conntrack's 5-day TCP timeout is no
 * reason to keep a record nobody refreshes).
 */
export function recordTtl(resyncMs: number): { min: number; max: number } {
  return { min: 2 * resyncMs, max: 4 * resyncMs };
}

/** A conntrack entry's identity across its events: the kernel's id (the tuple where an entry has none, in tests). */
const ctKey = (e: CtEntry): number | string => e.id ?? `${e.orig.src}:${e.orig.sport}>${e.orig.dst}:${e.orig.dport}/${e.orig.proto}`;

type Pending = { op: 'put' | 'delete' | 'grace'; rec: SessionRecord };
/** The end of a recorded session, with its start, so that a later connection's record on the tuple stays. */
const endOf = (rec: SessionRecord, id = sessionId(rec)): SessionEnd => ({ id, firewall: rec.firewall, firstSeen: rec.firstSeen });
/** A flow this node tracks: its orientation, its record once answered, and whether that record ended (see isOver). */
type Flow = { sideFirst: boolean; rec: SessionRecord | null; ended?: boolean };

export class SessionSync {
  /** The last operation per session id since the previous flush (a later event for the same id wins). */
  private pending = new Map<string, Pending>();
  /**
   * fwlb's flows by conntrack id: whether the first packet came from the side interface, read from the NEW event
   * (the only event that carries ct labels: UPDATE and DESTROY events carry none here), and the record once the
   * flow was answered. Orientation is decided once, from NEW or a dump, never from a later event.
   * Rebuilt from every dump, so it is bounded by the kernel's own table.
   */
  private flows = new Map<number | string, Flow>();
  private timer: NodeJS.Timeout | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  private behind = false;
  private busy: Promise<unknown> = Promise.resolve();
  /** Records waiting for the next write to Redis. */
  pendingCount(): number {
    return this.pending.size;
  }

  readonly metrics = {
    written: 0,
    deleted: 0,
    graced: 0,
    deferred: 0,
    writeErrors: 0,
    resyncs: 0,
    resyncsCoalesced: 0,
    lastResync: null as null | { at: number; sessions: number; ms: number },
  };

  constructor(private readonly o: SessionSyncOptions) {}

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  private get minTtl(): number {
    return recordTtl(this.o.resyncMs).min;
  }

  private get maxTtl(): number {
    return recordTtl(this.o.resyncMs).max;
  }

  private record(e: CtEntry, fw: string, now: number, sideFirst: boolean): SessionRecord {
    return sessionOf({ ...e, labels: sideFirst ? [SIDE_LABEL] : undefined }, fw, this.o.node, now, this.minTtl, this.o.role, this.maxTtl);
  }

  /** How many sessions this node holds in the shared table's sense (answered, fwlb's). */
  get held(): number {
    let n = 0;
    for (const f of this.flows.values()) if (f.rec && !f.ended) n++;
    return n;
  }

  onEvents(batch: { kind: CtEventKind; entry: CtEntry }[]): void {
    const now = this.now();
    for (const { kind, entry } of batch) {
      const key = ctKey(entry);
      if (kind === 'destroy') {
        const flow = this.flows.get(key);
        this.flows.delete(key);
        const rec = flow?.rec;
        if (!rec || flow.ended) continue; // never answered, not fwlb's, or its end already written
        const op = destroyAction(entry);
        this.pending.set(sessionId(rec), { op, rec });
        this.o.onChange?.(op, rec);
        continue;
      }
      const fw = tracked(entry, this.o.firewallOf);
      if (!fw) continue;
      let flow = this.flows.get(key);
      if (kind === 'new' || !flow) {
        if (kind !== 'new' && !entry.labels) {
          // The NEW event was lost (or came before this process): the orientation is unknown here, and a guess
          // could store the session reversed. The next dump (which carries labels) records it.
          this.metrics.deferred++;
          continue;
        }
        flow = { sideFirst: entry.labels?.includes(SIDE_LABEL) ?? false, rec: null };
        this.flows.set(key, flow);
      }
      if (flow.ended) continue;
      if (!answered(entry)) continue;
      if (flow.rec && flow.rec.firewall === fw) continue; // already recorded (the REPLY and ASSURED events of one TCP session)
      const rec = this.record(entry, fw, now, flow.sideFirst);
      flow.rec = rec;
      this.pending.set(sessionId(rec), { op: 'put', rec });
      this.o.onChange?.('put', rec);
    }
    if (!this.timer && this.pending.size) this.timer = setTimeout(() => void this.flush(), this.o.flushMs);
  }

  /** Write what is pending. On failure nothing is retried piecemeal: the next re-sync rewrites everything. */
  flush(): Promise<void> {
    this.timer = null;
    const by = { put: [] as SessionRecord[], delete: [] as SessionEnd[], grace: [] as string[] };
    for (const [id, p] of this.pending) {
      if (p.op === 'put') by.put.push(p.rec);
      else if (p.op === 'delete') by.delete.push(endOf(p.rec, id));
      else by.grace.push(id);
    }
    this.pending.clear();
    const run = async () => {
      try {
        const now = this.now();
        if (by.put.length) this.metrics.written += await this.o.store.put(by.put, now);
        if (by.grace.length) this.metrics.graced += await this.o.store.grace(by.grace, now + this.minTtl);
        if (by.delete.length) this.metrics.deleted += await this.o.store.delete(by.delete);
        if (this.behind) await this.resyncNow('catching up after Redis was unreachable');
      } catch (e) {
        this.metrics.writeErrors++;
        if (!this.behind) this.o.log?.(`session table unreachable, the kernel keeps forwarding; will catch up: ${(e as Error).message}`);
        this.behind = true;
      }
    };
    this.busy = this.busy.then(run);
    return this.busy as Promise<void>;
  }

  /** A re-sync queued behind the work in flight, not yet started; at most one (see resync). */
  private queued: Promise<void> | null = null;

  /**
   * Events were lost, Redis came back, or the period is up: publish every fwlb session in the kernel. Coalesced:
   * while one re-sync waits its turn, asking again joins it (a reader overrunning again and again under a flood
   * would otherwise queue a full dump and rewrite per overrun).
   */
  resync(reason: string): Promise<void> {
    if (this.queued) {
      this.metrics.resyncsCoalesced++;
      return this.queued;
    }
    const run = this.busy.then(() => {
      this.queued = null;
      return this.resyncNow(reason);
    });
    this.queued = run.catch(() => undefined);
    this.busy = run.catch((e) => {
      this.metrics.writeErrors++;
      this.behind = true;
      this.o.log?.(`session re-sync failed (${reason}): ${(e as Error).message}`);
    });
    return this.busy as Promise<void>;
  }

  private async resyncNow(reason: string): Promise<void> {
    const t0 = this.now();
    const entries = await this.o.dump();
    const now = this.now();
    const recs: SessionRecord[] = [];
    // Connections that are over are ended again, not written: their end may have been lost with Redis.
    const over: SessionRecord[] = [];
    const flows: typeof this.flows = new Map();
    for (const e of entries) {
      const fw = tracked(e, this.o.firewallOf);
      if (!fw) continue;
      const sideFirst = e.labels?.includes(SIDE_LABEL) ?? false;
      const rec = answered(e) ? this.record(e, fw, now, sideFirst) : null;
      const ended = rec !== null && isOver(e);
      if (rec) (ended ? over : recs).push(rec);
      flows.set(ctKey(e), { sideFirst, rec, ended });
    }
    this.flows = flows;
    await this.o.store.put(recs, now);
    if (over.length) await this.o.store.delete(over.map((r) => endOf(r)));
    for (const r of recs) this.o.onChange?.('put', r);
    for (const r of over) this.o.onChange?.('delete', r);
    this.behind = false;
    this.metrics.resyncs++;
    this.metrics.lastResync = { at: now, sessions: recs.length, ms: this.now() - t0 };
    if (reason !== 'periodic') this.o.log?.(`session table re-synced (${reason}): ${recs.length} sessions in ${this.now() - t0} ms`);
  }

  start(): void {
    const tick = () => {
      this.resyncTimer = setTimeout(
        () => {
          void this.resync(this.behind ? 'catching up after Redis was unreachable' : 'periodic').then(tick);
        },
        this.behind ? Math.min(1000, this.o.resyncMs) : this.o.resyncMs,
      );
    };
    tick();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
  }
}
