// Maglev-style consistent bucket tables with minimal-move repair for failed members, and joins that move only the
// joining member's buckets; pure layer of libs/flowhash.
import { jhash } from './jhash';

export interface BucketTable {
  /** Bucket count M (prime). */
  size: number;
  /** owner[b] = member id for bucket b, or null when no member is live. */
  owner: (string | null)[];
}

function hashName(name: string, seed: number): number {
  return jhash(new TextEncoder().encode(name), seed);
}

export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

/**
 * Maglev population (Eisenbud et al., NSDI'16): each member walks its own permutation of the buckets and in
 * turn takes its next free one. Only buckets where `free[b]` is true are filled; others are left as they are.
 */
function populate(owner: (string | null)[], members: string[], free: boolean[]): void {
  const m = owner.length;
  let left = free.filter(Boolean).length;
  if (members.length === 0 || left === 0) return;
  const perm = members.map((id) => ({ id, offset: hashName(id, 0x5eed0001) % m, skip: (hashName(id, 0x5eed0002) % (m - 1)) + 1, next: 0 }));
  for (;;) {
    for (const p of perm) {
      let b = (p.offset + p.next * p.skip) % m;
      while (!free[b]) {
        p.next++;
        b = (p.offset + p.next * p.skip) % m;
      }
      free[b] = false;
      owner[b] = p.id;
      p.next++;
      if (--left === 0) return;
    }
  }
}

/**
 * Build the table for `members` (all configured ids) of which only `live` carry traffic.
 * The base table depends only on the sorted member ids and M, so any host computes the same one. A member that
 * is not live gives up exactly its own buckets, which are shared out among the live members by the same
 * population walk: removing one of N moves only its ~1/N, and bringing it back moves exactly those back.
 */
export function buildTable(members: readonly string[], size: number, live: readonly string[] = members): BucketTable {
  if (!isPrime(size)) throw new RangeError(`bucket count ${size} must be prime`);
  const ids = [...new Set(members)].sort();
  const owner: (string | null)[] = new Array(size).fill(null);
  populate(owner, ids, new Array(size).fill(true));
  const alive = new Set(live.filter((id) => ids.includes(id)));
  if (alive.size === ids.length) return { size, owner };
  const free = owner.map((o) => o === null || !alive.has(o));
  for (let b = 0; b < size; b++) if (free[b]) owner[b] = null;
  populate(owner, [...alive].sort(), free);
  return { size, owner };
}

/** Each member's permutation of the buckets (its Maglev offset and skip): the order in which it claims them. */
function permutation(id: string, m: number): (j: number) => number {
  const offset = hashName(id, 0x5eed0001) % m;
  const skip = (hashName(id, 0x5eed0002) % (m - 1)) + 1;
  return (j) => (offset + j * skip) % m;
}

/**
 * Members joined one after the other, in the order given: the first holds every bucket, and the k-th (0-based)
 * takes floor(M/(k+1)) of them by walking its permutation, each from a member that holds more than its share after
 * the join. So each join takes evenly from every member before it (all end within one bucket of each other) and
 * moves nothing between them.
 */
function joined(ids: readonly string[], size: number): (string | null)[] {
  const owner: (string | null)[] = new Array(size).fill(ids.length ? ids[0] : null);
  const count = new Map<string, number>(ids.length ? [[ids[0], size]] : []);
  for (let k = 1; k < ids.length; k++) {
    const id = ids[k];
    const share = Math.floor(size / (k + 1));
    // What each earlier member keeps: the rest shared out evenly, floor or ceil of (M - share) / k. The first
    // round takes from those above the ceil, the second from those above the floor until the share is reached;
    // the walk meets every bucket once a round (M is prime), and the buckets above the floor add up to the share.
    const rest = (size - share) / k;
    const at = permutation(id, size);
    let taken = 0;
    for (const keep of [Math.ceil(rest), Math.floor(rest)]) {
      for (let j = 0; j < size && taken < share; j++) {
        const b = at(j);
        const o = owner[b]!;
        if (o !== id && count.get(o)! > keep) {
          count.set(o, count.get(o)! - 1);
          owner[b] = id;
          taken++;
        }
      }
    }
    count.set(id, share);
  }
  return owner;
}

/**
 * The balancer's bucket table: `members` in a fixed order (the config's, the same on every node), of which only
 * `live` carry traffic. Built by joining the members in that order (see `joined`), up to the last live one:
 * members after it are left out, so a firewall added at the end of the list changes nothing until it is live, and
 * its arrival then moves exactly the buckets it takes, evenly from the others. A member that is not live before
 * the last live one gives up exactly its own buckets, shared out by the Maglev walk of the live members
 * (as `buildTable`). Why not `buildTable`: its table is a function of the member set, so adding a member to the set
 * reshuffles some buckets between the members already there.
 */
export function buildJoinedTable(members: readonly string[], size: number, live: readonly string[] = members): BucketTable {
  if (!isPrime(size)) throw new RangeError(`bucket count ${size} must be prime`);
  const ids = [...new Set(members)];
  const alive = new Set(live.filter((id) => ids.includes(id)));
  let n = ids.length;
  while (n > 0 && !alive.has(ids[n - 1])) n--;
  const owner = joined(ids.slice(0, n), size);
  if (alive.size === n) return { size, owner };
  const free = owner.map((o) => o === null || !alive.has(o));
  for (let b = 0; b < size; b++) if (free[b]) owner[b] = null;
  populate(owner, [...alive].sort(), free);
  return { size, owner };
}

/** Buckets per member, for /status and for tests. */
export function distribution(t: BucketTable): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of t.owner) if (o !== null) out[o] = (out[o] ?? 0) + 1;
  return out;
}

/** How many buckets changed owner between two tables of the same size. */
export function moved(a: BucketTable, b: BucketTable): number {
  let n = 0;
  for (let i = 0; i < a.size; i++) if (a.owner[i] !== b.owner[i]) n++;
  return n;
}

/**
 * Sync groups: for a member that is not live, which live member of its group takes bucket b, or null
 * (no group, or no member of it live). Each group with a member down gets its own joined table over the group's
 * members, in the members' order (when the group's members come first in the order, a member's buckets in the
 * whole table are among its buckets in its group's, so they spread evenly), so the buckets of a member that is down
 * go to the live ones of its group consistently, and bringing a member back moves only the buckets of members that
 * are still down (to a member that holds their state too).
 */
export function syncGroupRescue(
  size: number,
  live: readonly string[],
  groups: readonly (readonly string[])[],
): (member: string, bucket: number) => string | null {
  const alive = new Set(live);
  const tables = new Map<string, readonly (string | null)[]>();
  for (const g of groups) {
    const ids = [...new Set(g)];
    const up = ids.filter((id) => alive.has(id));
    if (up.length === 0 || up.length === ids.length) continue;
    const t = buildJoinedTable(ids, size, up).owner;
    for (const id of ids) if (!alive.has(id)) tables.set(id, t);
  }
  return (member, bucket) => tables.get(member)?.[bucket] ?? null;
}

/**
 * buildJoinedTable with sync groups: a member that is not live gives its buckets first to the live members of its
 * group (syncGroupRescue), and only when none is live to every live member, as buildJoinedTable does. The buckets of
 * live members never move. Without groups this is buildJoinedTable.
 */
export function buildGroupedTable(members: readonly string[], size: number, live: readonly string[], groups: readonly (readonly string[])[]): BucketTable {
  const spread = buildJoinedTable(members, size, live);
  if (!groups.length) return spread;
  const home = buildJoinedTable(members, size).owner;
  const alive = new Set(live);
  const rescue = syncGroupRescue(size, live, groups);
  return { size, owner: spread.owner.map((o, b) => (home[b] === null || alive.has(home[b]!) ? o : (rescue(home[b]!, b) ?? o))) };
}

/** Where the buckets of members that are not live went: member → { new owner → buckets }, for /status. */
export function bucketMoves(members: readonly string[], table: BucketTable): Record<string, Record<string, number>> {
  const home = buildJoinedTable(members, table.size).owner;
  const out: Record<string, Record<string, number>> = {};
  table.owner.forEach((o, b) => {
    const h = home[b];
    if (h === null || o === h) return;
    const to = (out[h] ??= {});
    const k = o ?? 'none';
    to[k] = (to[k] ?? 0) + 1;
  });
  return out;
}
