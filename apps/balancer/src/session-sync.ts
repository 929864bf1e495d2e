// Layer 3: records every session this node steers (conntrack NEW/DESTROY, ct mark = firewall) in the shared Redis
// session table, in batches; re-syncs from a dump after lost events, after Redis comes back, and periodically
// (which refreshes expiries). Shell layer of apps/balancer.
import type { CtEntry, CtEventKind } from '@fwlb/conntrack';
import type { SessionRecord } from '@fwlb/session-table';
import { sessionId } from '@fwlb/session-table';
import { SIDE_LABEL } from './render';

/** The part of libs/session-table the sync uses, so tests can put a fake in front of Redis. */
export interface SessionStore {
  put(records: SessionRecord[], now?: number): Promise<number>;
  delete(ids: string[]): Promise<number>;
}

export interface SessionSyncOptions {
  node: string;
  role: 'outside' | 'inside';
  /** Told of every session change, e.g. to keep the local cache the pins are computed from. */
  onChange?: (kind: 'put' | 'delete', rec: SessionRecord) => void;
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
export function sessionOf(e: CtEntry, firewall: string, node: string, now: number, minTtlMs: number, role: 'outside' | 'inside'): SessionRecord {
  const src = { addr: e.orig.src, port: e.orig.sport ?? 0 };
  const dst = { addr: e.orig.dst, port: e.orig.dport ?? 0 };
  const sideFirst = e.labels?.includes(SIDE_LABEL) ?? false;
  const srcIsOuter = role === 'outside' ? sideFirst : !sideFirst;
  const [outer, inner] = srcIsOuter ? [src, dst] : [dst, src];
  return {
    outerAddr: outer.addr,
    outerPort: outer.port,
    innerAddr: inner.addr,
    innerPort: inner.port,
    proto: e.orig.proto,
    firewall,
    node,
    firstSeen: now,
    expires: now + Math.max((e.timeout ?? 0) * 1000, minTtlMs),
  };
}

/**
 * Sessions worth a record: TCP and UDP. ICMP and other protocols are hashed on addresses only and are short; their
 * conntrack entries (health probes among them) are not recorded.
 */
export function tracked(e: CtEntry, firewallOf: (mark: number) => string | undefined): string | undefined {
  return e.orig.proto === 6 || e.orig.proto === 17 ? firewallOf(e.mark) : undefined;
}

export class SessionSync {
  private puts = new Map<string, SessionRecord>();
  private dels = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  private behind = false;
  private busy: Promise<unknown> = Promise.resolve();
  readonly metrics = { written: 0, deleted: 0, writeErrors: 0, resyncs: 0, lastResync: null as null | { at: number; sessions: number; ms: number } };

  constructor(private readonly o: SessionSyncOptions) {}

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  /** Records expire after at least two re-sync periods unless refreshed, whatever conntrack's timeout was at NEW. */
  private get minTtl(): number {
    return 2 * this.o.resyncMs;
  }

  onEvents(batch: { kind: CtEventKind; entry: CtEntry }[]): void {
    const now = this.now();
    for (const { kind, entry } of batch) {
      const fw = tracked(entry, this.o.firewallOf);
      if (!fw) continue;
      const rec = sessionOf(entry, fw, this.o.node, now, this.minTtl, this.o.role);
      const id = sessionId(rec);
      if (kind === 'destroy') {
        this.puts.delete(id);
        this.dels.add(id);
        this.o.onChange?.('delete', rec);
      } else {
        this.dels.delete(id);
        this.puts.set(id, rec);
        this.o.onChange?.('put', rec);
      }
    }
    if (!this.timer) this.timer = setTimeout(() => void this.flush(), this.o.flushMs);
  }

  /** Write what is pending. On failure nothing is retried piecemeal: the next re-sync rewrites everything. */
  flush(): Promise<void> {
    this.timer = null;
    const puts = [...this.puts.values()];
    const dels = [...this.dels];
    this.puts.clear();
    this.dels.clear();
    const run = async () => {
      try {
        if (puts.length) this.metrics.written += await this.o.store.put(puts, this.now());
        if (dels.length) this.metrics.deleted += await this.o.store.delete(dels);
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

  /** Events were lost, Redis came back, or the period is up: publish every fwlb session in the kernel. */
  resync(reason: string): Promise<void> {
    this.busy = this.busy.then(() => this.resyncNow(reason)).catch((e) => {
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
    for (const e of entries) {
      const fw = tracked(e, this.o.firewallOf);
      if (fw) recs.push(sessionOf(e, fw, this.o.node, now, this.minTtl, this.o.role));
    }
    await this.o.store.put(recs, now);
    for (const r of recs) this.o.onChange?.('put', r);
    this.behind = false;
    this.metrics.resyncs++;
    this.metrics.lastResync = { at: now, sessions: recs.length, ms: this.now() - t0 };
    if (reason !== 'periodic') this.o.log?.(`session table re-synced (${reason}): ${recs.length} sessions in ${this.now() - t0} ms`);
  }

  start(): void {
    const tick = () => {
      this.resyncTimer = setTimeout(() => {
        void this.resync(this.behind ? 'catching up after Redis was unreachable' : 'periodic').then(tick);
      }, this.behind ? Math.min(1000, this.o.resyncMs) : this.o.resyncMs);
    };
    tick();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
  }
}
