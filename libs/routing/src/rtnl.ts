// Reads and writes ip rules and routes through rtnetlink (the `netlink` package); I/O layer of libs/routing.
import { createRtNetlink, FlagsNew, RtNetlinkSocket } from 'netlink';
import { formatAddress, parseAddress } from '@fwlb/flowhash';
import { ActualRoute, ActualRule, Family, RoutingPlan } from './model';
import { AnnouncedRoute, AnnouncePlan } from './bird';
import { NetlinkError, toNetlinkError } from './errors';

const AF_INET = 2;
const AF_INET6 = 10;
const af = (f: Family | undefined) => (f === 6 ? AF_INET6 : AF_INET);
/** The metric that marks an IPv6 address as an fwlb VIP (`ip -6 addr` shows it as `metric 6174`). */
export const VIP6_METRIC = 6174;

function ip4(b?: Buffer): string | undefined {
  return b && b.length === 4 ? `${b[0]}.${b[1]}.${b[2]}.${b[3]}` : undefined;
}

/** An address from netlink in its canonical text form (IPv4 or IPv6). */
function ipText(b?: Buffer): string | undefined {
  return b && (b.length === 4 || b.length === 16) ? formatAddress(b) : undefined;
}

function ip4buf(a: string): Buffer {
  return Buffer.from(a.split('.').map(Number));
}

function ipBuf(a: string): Buffer {
  return Buffer.from(parseAddress(a));
}

export class Rtnl {
  private constructor(private readonly rt: RtNetlinkSocket) {}

  /**
   * One dump at a time on the socket: the kernel answers a second dump request during the first with EBUSY (the
   * reconciler reads rules and routes together, and each reads both families).
   */
  private queue: Promise<unknown> = Promise.resolve();
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => undefined);
    return run;
  }

  static open(): Rtnl {
    return new Rtnl(createRtNetlink());
  }

  close(): void {
    this.rt.socket.close();
  }

  private async links(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const l of await this.serial(() => this.rt.getLinks())) if (l.attrs.ifname) out.set(l.attrs.ifname, l.data.index!);
    return out;
  }

  async linkNames(): Promise<Map<number, string>> {
    const m = new Map<number, string>();
    for (const [n, i] of await this.links()) m.set(i, n);
    return m;
  }

  /** The ip rules of both families (IPv6 ones carry `family: 6`). */
  async rules(): Promise<ActualRule[]> {
    const out: ActualRule[] = [];
    for (const family of [4, 6] as const) {
      for (const m of await this.serial(() => this.rt.getRules({ family: af(family) }))) {
        out.push({
          ...(family === 6 ? { family } : {}),
          priority: m.attrs.priority ?? 0,
          fwmark: m.attrs.fwmark,
          fwmask: m.attrs.fwmask,
          table: m.attrs.table ?? m.data.table ?? 0,
        });
      }
    }
    return out;
  }

  /** The routes of both families (IPv6 ones carry `family: 6`). */
  async routes(): Promise<ActualRoute[]> {
    const names = await this.linkNames();
    const out: ActualRoute[] = [];
    for (const family of [4, 6] as const) {
      for (const m of await this.serial(() => this.rt.getRoutes({ family: af(family) }))) {
        out.push({
          ...(family === 6 ? { family } : {}),
          table: m.attrs.table ?? m.data.table ?? 0,
          dstLen: m.data.dstLen ?? 0,
          dst: ipText(m.attrs.dst),
          gateway: ipText(m.attrs.gateway),
          oif: m.attrs.oif !== undefined ? names.get(m.attrs.oif) : undefined,
        });
      }
    }
    return out;
  }

  /**
   * Apply a plan. Each call is idempotent: EEXIST on add and ENOENT/ESRCH on delete count as success
   * (keepalived's rule). Failures of single routes (e.g. ENETDOWN while a link is down) are collected and
   * returned so that the rest still applies; the next reconcile retries them.
   */
  async apply(plan: RoutingPlan): Promise<NetlinkError[]> {
    const errors: NetlinkError[] = [];
    const tryIt = async (what: string, ok: string[], f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        const err = toNetlinkError(e, what);
        if (!ok.includes(err.code)) errors.push(err);
      }
    };
    for (const r of plan.delRules) {
      await tryIt(`delete ${r.family === 6 ? 'IPv6 ' : ''}rule pref ${r.priority}`, ['ENOENT', 'ESRCH'], () =>
        this.rt.delRule({ family: af(r.family), action: 'toTbl', table: 0 }, { priority: r.priority, fwmark: r.fwmark, fwmask: r.fwmask, table: r.table }),
      );
    }
    for (const r of plan.addRules) {
      await tryIt(`add ${r.family === 6 ? 'IPv6 ' : ''}rule pref ${r.priority}`, ['EEXIST'], () =>
        this.rt.newRule(
          { family: af(r.family), action: 'toTbl', table: 0 },
          { priority: r.priority, fwmark: r.fwmark, fwmask: r.fwmask ?? 0xffffffff, table: r.table },
          { flags: FlagsNew.CREATE | FlagsNew.EXCL },
        ),
      );
    }
    const links = plan.setRoutes.length ? await this.links() : new Map<string, number>();
    for (const r of plan.setRoutes) {
      const oif = links.get(r.oif);
      if (oif === undefined) {
        errors.push(new NetlinkError('ENODEV', `route table ${r.table} via ${r.gateway}: no interface ${r.oif}`));
        continue;
      }
      await tryIt(`route table ${r.table} via ${r.gateway} dev ${r.oif}`, [], () =>
        this.rt.newRoute(
          { family: af(r.family), dstLen: 0, table: 0, protocol: 'STATIC', scope: 'UNIVERSE', type: 'UNICAST' },
          { table: r.table, gateway: ipBuf(r.gateway), oif },
          { flags: FlagsNew.CREATE | FlagsNew.REPLACE },
        ),
      );
    }
    for (const r of plan.delRoutes) {
      await tryIt(`delete ${r.family === 6 ? 'IPv6 ' : ''}route table ${r.table}`, ['ENOENT', 'ESRCH'], () =>
        this.rt.delRoute({ family: af(r.family), dstLen: r.dstLen, table: 0 }, { table: r.table, ...(r.dst ? { dst: ipBuf(r.dst) } : {}) }),
      );
    }
    return errors;
  }

  /** The announce table's routes (blackholes: the table is never used for forwarding), both families. */
  async announced(table: number): Promise<AnnouncedRoute[]> {
    const out: AnnouncedRoute[] = [];
    for (const family of [4, 6] as const) {
      for (const m of await this.serial(() => this.rt.getRoutes({ family: af(family) }))) {
        if ((m.attrs.table ?? m.data.table) !== table || m.data.type !== 'BLACKHOLE') continue;
        const dst = ipText(m.attrs.dst) ?? (family === 4 ? '0.0.0.0' : '::');
        out.push({ family, prefix: `${dst}/${m.data.dstLen ?? 0}`, metric: m.attrs.priority ?? 0 });
      }
    }
    return out;
  }

  /** Adds first, then deletes: the daemon that learns the table sees a route replaced, never a prefix gone. */
  async applyAnnounce(table: number, plan: AnnouncePlan): Promise<NetlinkError[]> {
    const errors: NetlinkError[] = [];
    const key = (r: AnnouncedRoute) => {
      const [addr, len] = r.prefix.split('/');
      return {
        header: { family: af(r.family), dstLen: Number(len), table: 0 },
        attrs: { table, priority: r.metric, ...(Number(len) ? { dst: ipBuf(addr) } : {}) },
      };
    };
    for (const r of plan.add) {
      const k = key(r);
      try {
        await this.rt.newRoute({ ...k.header, protocol: 'STATIC', scope: 'UNIVERSE', type: 'BLACKHOLE' }, k.attrs, { flags: FlagsNew.CREATE | FlagsNew.EXCL });
      } catch (e) {
        const err = toNetlinkError(e, `announce ${r.prefix} metric ${r.metric} in table ${table}`);
        if (err.code !== 'EEXIST') errors.push(err);
      }
    }
    for (const r of plan.del) {
      const k = key(r);
      try {
        await this.rt.delRoute({ ...k.header, type: 'BLACKHOLE' }, k.attrs);
      } catch (e) {
        const err = toNetlinkError(e, `withdraw ${r.prefix} metric ${r.metric} from table ${table}`);
        if (!['ENOENT', 'ESRCH'].includes(err.code)) errors.push(err);
      }
    }
    return errors;
  }

  /**
   * The addresses on `ifname` fwlb owns: IPv4 ones that carry `label` (such as "up0:vip"), and IPv6 ones with the
   * metric `VIP6_METRIC` (IPv6 addresses have no label; the metric of a /128 changes no route anyone else uses).
   */
  async labelledAddresses(ifname: string, label: string): Promise<string[]> {
    const index = (await this.links()).get(ifname);
    if (index === undefined) throw new NetlinkError('ENODEV', `no interface ${ifname}`);
    const v4 = await this.serial(() => this.rt.getAddresses({ family: AF_INET }));
    const v6 = await this.serial(() => this.rt.getAddresses({ family: AF_INET6 }));
    return [
      ...v4.filter((m) => m.data.index === index && m.attrs.label === label).map((m) => ip4(m.attrs.local ?? m.attrs.address)!),
      ...v6.filter((m) => m.data.index === index && m.attrs.rtPriority === VIP6_METRIC).map((m) => ipText(m.attrs.address ?? m.attrs.local)!),
    ].filter(Boolean);
  }

  /**
   * Add `addr`/32 with `label`, or an IPv6 `addr`/128 with the VIP metric and no duplicate address detection (a
   * VIP answers at once; DAD would hold it tentative for a second). True when it added the address, false when it
   * was there already (then it is not the caller's to take away again).
   */
  async addAddress(ifname: string, addr: string, label: string): Promise<boolean> {
    const index = (await this.links()).get(ifname);
    if (index === undefined) throw new NetlinkError('ENODEV', `no interface ${ifname}`);
    const v6 = addr.includes(':');
    try {
      if (v6)
        await this.rt.newAddress(
          { family: AF_INET6, prefixlen: 128, index, scope: 0 },
          { local: ipBuf(addr), address: ipBuf(addr), rtPriority: VIP6_METRIC, flags: { nodad: true } },
          { flags: FlagsNew.CREATE | FlagsNew.EXCL },
        );
      else
        await this.rt.newAddress(
          { family: AF_INET, prefixlen: 32, index, scope: 0 },
          { local: ip4buf(addr), address: ip4buf(addr), label },
          { flags: FlagsNew.CREATE | FlagsNew.EXCL },
        );
      return true;
    } catch (e) {
      const err = toNetlinkError(e, `add address ${addr}/${v6 ? 128 : 32} on ${ifname}`);
      if (err.code !== 'EEXIST') throw err;
      return false;
    }
  }

  /** Delete `addr`/32 (or an IPv6 `addr`/128); an address already gone counts as success. */
  async delAddress(ifname: string, addr: string): Promise<void> {
    const index = (await this.links()).get(ifname);
    if (index === undefined) return;
    const v6 = addr.includes(':');
    try {
      if (v6) await this.rt.delAddress({ family: AF_INET6, prefixlen: 128, index }, { local: ipBuf(addr), address: ipBuf(addr) });
      else await this.rt.delAddress({ family: AF_INET, prefixlen: 32, index }, { local: ip4buf(addr), address: ip4buf(addr) });
    } catch (e) {
      const err = toNetlinkError(e, `delete address ${addr}/${v6 ? 128 : 32} on ${ifname}`);
      if (!['EADDRNOTAVAIL', 'ENOENT', 'ESRCH'].includes(err.code)) throw err;
    }
  }
}
