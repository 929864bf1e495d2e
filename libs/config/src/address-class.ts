// Which IPv4 and IPv6 addresses can be a VIP or a real server: the special ranges that cannot work or would capture someone
// else's traffic; pure layer of libs/config.
import { parseAddress } from '@fwlb/flowhash';
import type { FieldProblem } from './errors';

/** Special-purpose IPv4 ranges (RFC 6890) a VIP or a member must never be in, with the reason shown to the operator. */
const SPECIAL: { base: number; len: number; what: string }[] = [
  { base: 0x00000000, len: 8, what: 'unspecified ("this network", 0.0.0.0/8): no host has it' },
  { base: 0x7f000000, len: 8, what: 'loopback (127.0.0.0/8): it would capture the node\'s own services' },
  { base: 0xa9fe0000, len: 16, what: 'link-local (169.254.0.0/16): not routed beyond one link' },
  { base: 0xe0000000, len: 4, what: 'multicast (224.0.0.0/4): not a unicast host' },
  { base: 0xf0000000, len: 4, what: 'reserved or broadcast (240.0.0.0/4, 255.255.255.255)' },
];

function toInt(a: string): number | null {
  const p = a.split('.');
  if (p.length !== 4 || !p.every((x) => /^\d{1,3}$/.test(x) && Number(x) <= 255)) return null;
  return p.reduce((n, x) => n * 256 + Number(x), 0);
}

/** Special-purpose IPv6 ranges (RFC 6890, RFC 4291) with the same meaning: prefix bytes, length, reason. */
const SPECIAL6: { prefix: number[]; len: number; what: string }[] = [
  { prefix: [], len: 128, what: 'unspecified (::): no host has it' },
  { prefix: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], len: 128, what: "loopback (::1): it would capture the node's own services" },
  { prefix: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff], len: 96, what: 'IPv4-mapped (::ffff:0:0/96): not an IPv6 host; give the IPv4 address' },
  { prefix: [0xfe, 0x80], len: 10, what: 'link-local (fe80::/10): not routed beyond one link' },
  { prefix: [0xff], len: 8, what: 'multicast (ff00::/8): not a unicast host' },
];

function special6(address: string): string | null {
  let b: Uint8Array;
  try {
    b = parseAddress(address);
  } catch {
    return null;
  }
  for (const r of SPECIAL6) {
    let ok = true;
    for (let bit = 0; bit < r.len && ok; bit++) {
      const want = ((r.prefix[bit >> 3] ?? 0) >> (7 - (bit & 7))) & 1;
      ok = ((b[bit >> 3] >> (7 - (bit & 7))) & 1) === want;
    }
    if (ok) return r.what;
  }
  return null;
}

/** Why `address` cannot be a VIP or a real server, or null when it can. */
export function specialAddress(address: string): string | null {
  if (address.includes(':')) return special6(address);
  const n = toInt(address);
  if (n === null) return null;
  for (const r of SPECIAL) {
    const mask = r.len === 0 ? 0 : (0xffffffff << (32 - r.len)) >>> 0;
    if (((n & mask) >>> 0) === r.base) return r.what;
  }
  return null;
}

/** A field problem for a VIP or member address in a special range. */
export function addressProblem(field: string, address: string): FieldProblem | null {
  const why = specialAddress(address);
  return why ? { field, message: `${address} is ${why}` } : null;
}

/** An IPv4 prefix as numbers: `base` (host bits zero) and `len`. */
export interface Prefix4 {
  base: number;
  len: number;
}

/**
 * Parse `a.b.c.d/len` (or a bare address, a /32). Why strict about host bits: `10.96.1.7/24` is more often a typo
 * for an address or for another prefix than meant as 10.96.1.0/24, and the two steer different traffic.
 */
export function parsePrefix(s: string): Prefix4 | { error: string } {
  const [addr, lenText, ...rest] = s.split('/');
  const n = toInt(addr);
  if (n === null || rest.length) return { error: `${s} is not an IPv4 address or prefix (a.b.c.d or a.b.c.d/len)` };
  const len = lenText === undefined ? 32 : /^\d{1,2}$/.test(lenText) ? Number(lenText) : NaN;
  if (!(len >= 0 && len <= 32)) return { error: `${s}: the prefix length must be 0 to 32` };
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const base = (n & mask) >>> 0;
  if (base !== n) return { error: `${s} has host bits set: did you mean ${fromInt(base)}/${len}?` };
  return { base, len };
}

export function fromInt(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

/** Whether two prefixes share an address (one contains the other). */
export function prefixesOverlap(a: Prefix4, b: Prefix4): boolean {
  const len = Math.min(a.len, b.len);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return ((a.base & mask) >>> 0) === ((b.base & mask) >>> 0);
}

/** Whether `address` lies in the prefix. */
export function prefixHas(p: Prefix4, address: string): boolean {
  const n = toInt(address);
  return n !== null && prefixesOverlap(p, { base: n, len: 32 });
}
