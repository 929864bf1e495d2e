// What the API and the metrics show of the VIPs: members with health, slots and counters, and the cached GET /vips
// body. Reads memory only (counters come from the background refresh); shell layer of libs/slb.
import type { ResolvedVip, VipConfig } from '@fwlb/config';
import { isL7, isProxied, memberKey } from '@fwlb/config';
import { memberCounterKey, SlbCounters, vipKeyString } from './kernel';
import { healthKey } from './render';
import type { HaproxyStat } from './haproxy-cli';
import type { MonitorPool } from './monitor-pool';
import { backendName, DEFAULT_RULE, frontendName, memberBackend, ruleId, ruleTable, serverName } from './haproxy-render';

/** How old the cached GET /vips body may be when only health or counters changed. */
export const LIST_MAX_AGE_MS = 1000;

const viewKeyCache = new WeakMap<ResolvedVip, { vip: string; members: string[]; counters: string[] }>();

/** A VIP's lookup keys for views (its counter key, its members' keys), made once per VIP object. */
export function viewKeys(v: ResolvedVip) {
  let k = viewKeyCache.get(v);
  if (!k) {
    const vk: [string, 'tcp' | 'udp', number] = [v.address, v.protocol, v.port];
    k = { vip: vipKeyString(vk), members: v.members.map(memberKey), counters: v.members.map((m) => memberCounterKey(vk, m)) };
    viewKeyCache.set(v, k);
  }
  return k;
}

/** What the views read of the service. */
export interface ViewSource {
  vips(): readonly ResolvedVip[];
  /** The member keys of a VIP's DNAT map, in slot order, as last applied. */
  slots(id: string): readonly string[];
  health: Pick<MonitorPool, 'healthOf' | 'monitorOf'>;
  /** The kernel state is adopted (until then a member's reason says so). */
  started(): boolean;
  now(): number;
}

export class VipViews {
  /** The kernel's counters as last read, and when (ms; null before the first read). */
  counters: SlbCounters = { vipNew: new Map(), memberNew: new Map(), memberPackets: new Map() };
  countersAt: number | null = null;
  /** HAProxy's stats as last read (L7 VIPs). */
  l7Stats = new Map<string, HaproxyStat>();
  /** Bumped by every accepted change: the cached GET /vips body is rebuilt for a new one at once. */
  private version = 0;
  /** Bumped when health or counters change what GET /vips shows (the cached body may lag these by a second). */
  private liveVersion = 0;
  private listCache: { body: Buffer; version: number; live: number; at: number } | null = null;

  constructor(private readonly src: ViewSource) {}

  /** A change was accepted: the next GET /vips shows it. */
  changed(): void {
    this.version++;
  }

  /** Health or slots changed: GET /vips shows it within LIST_MAX_AGE_MS. */
  refreshed(): void {
    this.liveVersion++;
  }

  setCounters(c: SlbCounters, at: number): void {
    this.counters = c;
    this.countersAt = at;
    this.liveVersion++;
  }

  /** Counter elements the last read found. */
  counterElements(): number {
    return this.counters.vipNew.size + this.counters.memberNew.size + this.counters.memberPackets.size;
  }

  private healthView(k: string) {
    const h = this.src.health.healthOf(k);
    const mon = this.src.health.monitorOf(k);
    return {
      up: h?.up ?? false,
      reason: h?.reason ?? (this.src.started() ? '' : 'starting: the kernel state is being adopted'),
      since: h?.since ?? null,
      lastCheck: mon?.last ?? null,
      unknown: mon?.unknown ?? null,
    };
  }

  memberView(v: ResolvedVip) {
    if (isProxied(v)) return this.l7MemberView(v);
    const slots = this.src.slots(v.id);
    const keys = viewKeys(v);
    return v.members.map((m, i) => {
      const key = keys.members[i];
      const ck = keys.counters[i];
      let n = 0;
      for (const x of slots) if (x === key) n++;
      return {
        address: m.address,
        port: m.port,
        weight: m.weight,
        state: m.state,
        health: this.healthView(healthKey(v, m)),
        slots: n,
        counters: {
          at: this.countersAt,
          newSessions: this.counters.memberNew.get(ck) ?? 0,
          packets: this.counters.memberPackets.get(ck)?.packets ?? 0,
          bytes: this.counters.memberPackets.get(ck)?.bytes ?? 0,
        },
      };
    });
  }

  /** The members of a VIP HAProxy serves: health as fwlb's checks see it, counters from HAProxy's stats (a session is a connection). */
  private l7MemberView(v: ResolvedVip) {
    return v.members.map((m) => {
      const st = this.l7Stats.get(`${memberBackend(v.id, m)}/${serverName(m)}`);
      return {
        address: m.address,
        port: m.port,
        weight: m.weight,
        state: m.state,
        ...(m.pool !== undefined ? { pool: m.pool } : {}),
        health: this.healthView(healthKey(v, m)),
        haproxy: st?.status ?? null,
        // No DNAT slots and no per-packet counters for L7 (HAProxy counts sessions and responses).
        slots: 0,
        counters: { at: this.countersAt, newSessions: st?.sessions ?? 0, responses: st?.requests ?? 0, packets: 0, bytes: 0 },
      };
    });
  }

  /** The VIP's new sessions as last read from the kernel. */
  vipNewSessions(v: ResolvedVip): number {
    return this.counters.vipNew.get(viewKeys(v).vip) ?? 0;
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
      return {
        ...(v as VipConfig),
        members: this.memberView(v),
        counters: { newSessions: fe?.sessions ?? 0, requests: fe?.requests ?? 0, rules, defaultPool: unmatched, pools, at: this.countersAt },
      };
    }
    if (isProxied(v)) {
      const fe = this.l7Stats.get(`${frontendName(v.id)}/FRONTEND`);
      return { ...(v as VipConfig), members: this.memberView(v), counters: { newSessions: fe?.sessions ?? 0, at: this.countersAt } };
    }
    // The resolved VIP is frozen and serializes as its document: spread it instead of a JSON round trip per VIP per GET.
    return { ...(v as VipConfig), members: this.memberView(v), counters: { newSessions: this.vipNewSessions(v), at: this.countersAt } };
  }

  /**
   * GET /vips as JSON (UTF-8). At 1,000 VIPs × 8 members the body is 2 MB and takes about 0.1 s to build, so it is built
   * once and served to every request until a change is accepted (at once) or it is a second old (health and counters).
   */
  vipsBody(): Buffer {
    const now = this.src.now();
    const c = this.listCache;
    if (c && c.version === this.version && (c.live === this.liveVersion || now - c.at < LIST_MAX_AGE_MS)) return c.body;
    // Kept encoded: a 2 MB string would be encoded to UTF-8 again for every response.
    const body = Buffer.from(JSON.stringify(this.src.vips().map((v) => this.vipView(v))));
    this.listCache = { body, version: this.version, live: this.liveVersion, at: now };
    return body;
  }
}
