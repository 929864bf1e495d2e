// The SLB's desired state and the plan of a change: what an API call makes of the VIP list, which VIPs it touches,
// what their new members start as, and what it must not do (too many VIPs, over the check budget, L7 without
// HAProxy). Pure layer of libs/slb, in the style of the balancer's Membership: no I/O, the service applies the plan.
import type { MemberConfig, ResolvedVip } from '@fwlb/config';
import { checkBudgetProblem, ConfigError, isProxied, memberKey, memberKeyOf, validateVip, vipDocument } from '@fwlb/config';
import { healthKey } from './render';

/** The most VIPs one SLB holds: the same limit for the API and the config file's schema (`vips` maxItems). */
export const MAX_VIPS = 4096;

export class NotFoundError extends Error {
  constructor(
    readonly what: 'vip' | 'member',
    message: string,
  ) {
    super(message);
    this.name = 'NotFoundError';
  }
}

type Vips = readonly ResolvedVip[];

export function findVip(vips: Vips, id: string): ResolvedVip {
  const v = vips.find((x) => x.id === id);
  if (!v) throw new NotFoundError('vip', `no VIP "${id}"`);
  return v;
}

/** The other VIPs, for the overlap and duplicate checks (resolved VIPs carry the fields they compare). */
const others = (vips: Vips, id?: string): Vips => (id === undefined ? vips : vips.filter((v) => v.id !== id));

/** An API change as a function of the current list: the next list, and the VIP it made (if any). */
export type Edit = (current: Vips) => { next: ResolvedVip[]; vip?: ResolvedVip };

export const createVip =
  (body: unknown): Edit =>
  (cur) => {
    const vip = validateVip(body, others(cur));
    return { next: [...cur, vip], vip };
  };

export const replaceVip =
  (id: string, body: unknown): Edit =>
  (cur) => {
    if (body && typeof body === 'object' && 'id' in body && (body as { id: unknown }).id !== id) {
      throw new ConfigError([{ field: '/id', message: `must be "${id}" as in the path` }], 'request body');
    }
    findVip(cur, id);
    const vip = validateVip({ ...(body as object), id }, others(cur, id));
    return { next: cur.map((x) => (x.id === id ? vip : x)), vip };
  };

export const deleteVip =
  (id: string): Edit =>
  (cur) => {
    findVip(cur, id);
    return { next: cur.filter((x) => x.id !== id) };
  };

function memberIndex(v: ResolvedVip, key: string): number {
  const k = memberKeyOf(key);
  const i = v.members.findIndex((m) => memberKey(m) === k);
  if (i < 0) throw new NotFoundError('member', `VIP "${v.id}" has no member ${key}`);
  return i;
}

/** One VIP's members edited; errors name the member fields as the request sent them, not as they sit in the VIP. */
const editMembers =
  (id: string, edit: (v: ResolvedVip, members: MemberConfig[]) => MemberConfig[]): Edit =>
  (cur) => {
    const old = findVip(cur, id);
    const doc = vipDocument(old);
    doc.members = edit(old, doc.members);
    let vip: ResolvedVip;
    try {
      vip = validateVip(doc, others(cur, id));
    } catch (e) {
      if (e instanceof ConfigError)
        throw new ConfigError(
          e.problems.map((p) => ({ ...p, field: p.field.replace(/^\/members\/\d+/, '') || '/' })),
          'request body',
        );
      throw e;
    }
    return { next: cur.map((x) => (x.id === id ? vip : x)), vip };
  };

export const addMember = (id: string, body: MemberConfig): Edit => editMembers(id, (_v, ms) => [...ms, body]);

export const patchMember = (id: string, key: string, patch: Partial<Pick<MemberConfig, 'weight' | 'state'>>): Edit =>
  editMembers(id, (v, ms) => {
    const i = memberIndex(v, key);
    return ms.map((m, j) => (j === i ? { ...m, ...patch } : m));
  });

export const deleteMember = (id: string, key: string): Edit =>
  editMembers(id, (v, ms) => {
    const i = memberIndex(v, key);
    return ms.filter((_, j) => j !== i);
  });

export interface ChangePlan {
  next: ResolvedVip[];
  nextById: ReadonlyMap<string, ResolvedVip>;
  /** VIPs added, replaced or removed. */
  changed: ReadonlySet<string>;
  /** The health a changed VIP's members start with, by health key (see planChange). */
  initial: ReadonlyMap<string, boolean>;
  /** An L7 VIP is added, replaced or removed (HAProxy must run the new set). */
  l7Touched: boolean;
  /** VIPs that take a new address, port or protocol: only these can capture a service of this node. */
  newListeners: ResolvedVip[];
  /**
   * The addresses of the changed VIPs that take or leave an address (added, removed, or moved), before and after:
   * only these are added or removed. A member change holds its VIP's address as it was: no address is read or written
   * for it (one held by no VIP any more, or lost by hand, is the full pass's, which an address notice triggers).
   */
  touchedAddresses: ReadonlySet<string>;
}

/**
 * The plan of a change from `prev` to `next`, or a ConfigError for what no change may do. A member new to health
 * starts down (it joins after passing its checks), unless the same VIP's member with that address and port was up
 * (`up` reads the health a key has now). `haproxy`: this node runs HAProxy.
 */
export function planChange(
  prev: Vips,
  next: ResolvedVip[],
  o: { budget: number; up: (healthKey: string) => boolean; known: (healthKey: string) => boolean; haproxy: boolean },
): ChangePlan {
  if (next.length > MAX_VIPS) throw new ConfigError([{ field: '/', message: `at most ${MAX_VIPS} VIPs (the config file's limit)` }], 'request body');
  const overBudget = checkBudgetProblem(prev, next, o.budget);
  if (overBudget) throw new ConfigError([overBudget], 'request body');
  const byId = new Map(prev.map((v) => [v.id, v]));
  const nextById = new Map(next.map((v) => [v.id, v]));
  const changed = new Set<string>();
  for (const v of next) if (byId.get(v.id) !== v) changed.add(v.id);
  for (const id of byId.keys()) if (!nextById.has(id)) changed.add(id);
  const wasUp = (v: ResolvedVip, m: { address: string; port: number }) => {
    const k = healthKey(v, m);
    if (o.known(k)) return o.up(k);
    const old = byId.get(v.id);
    const om = old?.members.find((x) => x.address === m.address && x.port === m.port);
    return !!(old && om && o.up(healthKey(old, om)));
  };
  const initial = new Map<string, boolean>();
  for (const id of changed) {
    const v = nextById.get(id);
    for (const m of v?.members ?? []) initial.set(healthKey(v!, m), wasUp(v!, m));
  }
  const l7Touched = [...changed].some((id) => [nextById.get(id), byId.get(id)].some((v) => v && isProxied(v)));
  if (l7Touched && !o.haproxy)
    throw new ConfigError(
      [{ field: '/mode', message: 'HAProxy is not available on this node (fwlb-slb doctor): VIPs HAProxy serves (mode "http" or "tcp") cannot be served' }],
      'request body',
    );
  const newListeners = [...changed].flatMap((id) => {
    const v = nextById.get(id);
    const old = byId.get(id);
    // A member change never depends on the node's sockets.
    return v && !(old && old.address === v.address && old.port === v.port && old.protocol === v.protocol) ? [v] : [];
  });
  const touchedAddresses = new Set(
    [...changed].flatMap((id) => {
      const [was, is] = [byId.get(id)?.address, nextById.get(id)?.address];
      return was === is ? [] : [was, is].filter((a): a is string => !!a);
    }),
  );
  return { next, nextById, changed, initial, l7Touched, newListeners, touchedAddresses };
}
