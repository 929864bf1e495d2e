// The SLB schedulers as pure slot lists: which member each nft map slot points at; pure layer of libs/slb.
import { buildTable, isPrime } from '@fwlb/flowhash';

export interface Weighted {
  key: string;
  weight: number;
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * Round robin honouring weights: the smooth weighted round robin sequence (nginx's), one cycle long
 * (sum of weights divided by their gcd). A member of weight 3 next to one of weight 1 comes as a,a,b,a, not a,a,a,b.
 */
export function roundRobinSlots(members: readonly Weighted[]): string[] {
  if (members.length === 0) return [];
  const g = members.reduce((a, m) => gcd(a, m.weight), 0);
  const w = members.map((m) => m.weight / g);
  const total = w.reduce((a, b) => a + b, 0);
  const current = members.map(() => 0);
  const out: string[] = [];
  for (let n = 0; n < total; n++) {
    let best = 0;
    for (let i = 0; i < members.length; i++) {
      current[i] += w[i];
      if (current[i] > current[best]) best = i;
    }
    current[best] -= total;
    out.push(members[best].key);
  }
  return out;
}

/** Size of the source-hash table: the first prime of at least 20 slots per unit of configured weight, at least 61. */
export function sourceHashSize(configured: readonly Weighted[]): number {
  const total = configured.reduce((a, m) => a + m.weight, 0);
  let n = Math.min(65521, Math.max(61, total * 20));
  while (!isPrime(n)) n++;
  return n;
}

/**
 * Source-hash persistence honouring weights: a Maglev table over every configured member, each present as `weight`
 * virtual members, so a member that goes down or is drained gives up only its own slots: the other clients keep
 * their server. `live` lists the members that may take new sessions.
 */
export function sourceHashSlots(configured: readonly Weighted[], live: ReadonlySet<string>, size = sourceHashSize(configured)): string[] {
  const virt = (m: Weighted) => Array.from({ length: m.weight }, (_, i) => `${m.key}#${i}`);
  const all = configured.flatMap(virt);
  const alive = configured.filter((m) => live.has(m.key)).flatMap(virt);
  if (alive.length === 0) return [];
  return buildTable(all, size, alive).owner.map((o) => o!.slice(0, o!.lastIndexOf('#')));
}
