// Desired policy routing (one ip rule and one default route per firewall) and its diff; pure layer of libs/routing.

/** An address family: each has its own ip rules and its own routing tables (table 1000 of IPv4 is not IPv6's). */
export type Family = 4 | 6;

export interface PolicyRoute {
  /** 4 (default) or 6: the family of the rule and of the table's default route. */
  family?: Family;
  /** fwmark matched by the ip rule. */
  fwmark: number;
  /** Routing table the rule selects. */
  table: number;
  /** ip rule priority. */
  priority: number;
  /** Next hop of the table's default route. */
  gateway: string;
  /** Interface of the next hop. */
  oif: string;
}

export interface ActualRule {
  family?: Family;
  priority: number;
  fwmark?: number;
  fwmask?: number;
  table: number;
}

export interface ActualRoute {
  family?: Family;
  table: number;
  dstLen: number;
  dst?: string;
  gateway?: string;
  oif?: string;
}

export interface OwnedRanges {
  tables: { base: number; size: number };
  priorities: { base: number; size: number };
}

export interface RoutingPlan {
  addRules: ActualRule[];
  delRules: ActualRule[];
  /** Default routes to create or replace. */
  setRoutes: { family?: Family; table: number; gateway: string; oif: string }[];
  delRoutes: ActualRoute[];
}

const inRange = (v: number, r: { base: number; size: number }) => v >= r.base && v < r.base + r.size;

/**
 * What to change so that the owned rules and tables match `want`, family by family. Anything outside the owned
 * ranges is never touched.
 */
export function planRouting(want: PolicyRoute[], rules: ActualRule[], routes: ActualRoute[], owned: OwnedRanges): RoutingPlan {
  const plan: RoutingPlan = { addRules: [], delRules: [], setRoutes: [], delRoutes: [] };
  const fam = (x: { family?: Family }) => x.family ?? 4;
  for (const family of [4, 6] as const) {
    const p = planFamily(
      want.filter((x) => fam(x) === family),
      rules.filter((x) => fam(x) === family),
      routes.filter((x) => fam(x) === family),
      owned,
    );
    const tag = <T extends object>(xs: T[]) => xs.map((x) => (family === 6 ? { ...x, family } : x));
    plan.addRules.push(...tag(p.addRules));
    plan.delRules.push(...tag(p.delRules));
    plan.setRoutes.push(...tag(p.setRoutes));
    plan.delRoutes.push(...tag(p.delRoutes));
  }
  return plan;
}

function planFamily(want: PolicyRoute[], rules: ActualRule[], routes: ActualRoute[], owned: OwnedRanges): RoutingPlan {
  const plan: RoutingPlan = { addRules: [], delRules: [], setRoutes: [], delRoutes: [] };
  const mine = rules.filter((r) => inRange(r.priority, owned.priorities));
  const wantRules = new Map(want.map((w) => [w.priority, w]));
  for (const r of mine) {
    const w = wantRules.get(r.priority);
    if (!w || r.fwmark !== w.fwmark || (r.fwmask ?? 0xffffffff) !== 0xffffffff || r.table !== w.table) plan.delRules.push(r);
  }
  for (const w of want) {
    const ok = mine.some((r) => r.priority === w.priority && r.fwmark === w.fwmark && (r.fwmask ?? 0xffffffff) === 0xffffffff && r.table === w.table);
    if (!ok) plan.addRules.push({ priority: w.priority, fwmark: w.fwmark, fwmask: 0xffffffff, table: w.table });
  }
  const wantTables = new Map(want.map((w) => [w.table, w]));
  const ownedRoutes = routes.filter((r) => inRange(r.table, owned.tables));
  for (const r of ownedRoutes) {
    const w = wantTables.get(r.table);
    if (!w || r.dstLen !== 0) plan.delRoutes.push(r);
  }
  for (const w of want) {
    const cur = ownedRoutes.find((r) => r.table === w.table && r.dstLen === 0);
    if (!cur || cur.gateway !== w.gateway || cur.oif !== w.oif) plan.setRoutes.push({ table: w.table, gateway: w.gateway, oif: w.oif });
  }
  return plan;
}

export function planIsEmpty(p: RoutingPlan): boolean {
  return !p.addRules.length && !p.delRules.length && !p.setRoutes.length && !p.delRoutes.length;
}

/** A kernel notice that a link, a route or an ip rule changed (from rtnetlink's multicast groups). */
export type RoutingEvent =
  | { kind: 'link' }
  | { kind: 'route'; family: Family; table: number }
  | { kind: 'rule'; family: Family; priority: number }
  | { kind: 'address'; address: string };

/**
 * Whether a notice may mean that fwlb's rules or tables are no longer as it left them. A link event always may: the
 * kernel drops the IPv4 routes through an interface taken down without a notice per route, and a link coming back
 * up needs them added again. Route and rule events count only in the owned ranges, so a routing daemon's churn in
 * other tables costs nothing.
 */
export function touchesOwned(e: RoutingEvent, owned: OwnedRanges): boolean {
  if (e.kind === 'link') return true;
  if (e.kind === 'route') return inRange(e.table, owned.tables);
  if (e.kind === 'rule') return inRange(e.priority, owned.priorities);
  return false;
}
