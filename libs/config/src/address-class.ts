// Which IPv4 and IPv6 addresses can be a VIP or a real server: the special ranges that cannot work or would capture someone
// else's traffic; pure layer of libs/config.
import { formatAddress, parseAddress } from '@fwlb/flowhash';
import type { FieldProblem } from './errors';

/** Special-purpose IPv4 ranges (RFC 6890) a VIP or a member must never be in, with the reason shown to the operator. */
const SPECIAL: { base: number; len: number; what: string }[] = [
  { base: 0x00000000, len: 8, what: 'unspecified ("this network", 0.0.0.0/8): no host has it' },
  { base: 0x7f000000, len: 8, what: "loopback (127.0.0.0/8): it would capture the node's own services" },
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
    if ((n & mask) >>> 0 === r.base) return r.what;
  }
  return null;
}

/** A field problem for a VIP or member address in a special range. */
export function addressProblem(field: string, address: string): FieldProblem | null {
  const why = specialAddress(address);
  return why ? { field, message: `${address} is ${why}` } : null;
}

/** An IPv4 or IPv6 prefix: its address bytes (host bits zero) and length. */
export interface Prefix {
  bytes: Uint8Array;
  len: number;
}

const bitOf = (b: Uint8Array, i: number) => (b[i >> 3] >> (7 - (i & 7))) & 1;

/** The address with every bit from `len` on cleared. */
function network(b: Uint8Array, len: number): Uint8Array {
  return b.map((x, i) => (i * 8 >= len ? 0 : i * 8 + 8 <= len ? x : x & (0xff << (8 - (len - i * 8)))));
}

/**
 * Parse `a.b.c.d/len` or `2001:db8::/len` (or a bare address: a /32 or /128). Why strict about host bits:
 * `10.96.1.7/24` is more often a typo for an address or for another prefix than meant as 10.96.1.0/24, and the two
 * steer different traffic.
 */
export function parsePrefix(s: string): Prefix | { error: string } {
  const [addr, lenText, ...rest] = s.split('/');
  const v6 = addr.includes(':');
  let bytes: Uint8Array;
  try {
    if (rest.length) throw new TypeError('two slashes');
    bytes = parseAddress(addr);
  } catch {
    return { error: v6 ? `${s} is not an IPv6 address or prefix (2001:db8::/len)` : `${s} is not an IPv4 address or prefix (a.b.c.d or a.b.c.d/len)` };
  }
  const max = bytes.length * 8;
  const len = lenText === undefined ? max : /^\d{1,3}$/.test(lenText) ? Number(lenText) : NaN;
  if (!(len >= 0 && len <= max)) return { error: `${s}: the prefix length must be 0 to ${max}` };
  const base = network(bytes, len);
  if (base.some((x, i) => x !== bytes[i])) return { error: `${s} has host bits set: did you mean ${formatAddress(base)}/${len}?` };
  return { bytes: base, len };
}

/** A valid prefix in canonical form: the address (RFC 5952 for IPv6) and `/len`, a bare address for a host. */
export function canonicalPrefix(s: string): string {
  const p = parsePrefix(s);
  if ('error' in p) throw new TypeError(p.error);
  return p.len === p.bytes.length * 8 ? formatAddress(p.bytes) : `${formatAddress(p.bytes)}/${p.len}`;
}

/** Whether two prefixes share an address (one contains the other); prefixes of two families never do. */
export function prefixesOverlap(a: Prefix, b: Prefix): boolean {
  if (a.bytes.length !== b.bytes.length) return false;
  const len = Math.min(a.len, b.len);
  for (let i = 0; i < len; i++) if (bitOf(a.bytes, i) !== bitOf(b.bytes, i)) return false;
  return true;
}

/** Whether `address` lies in the prefix. */
export function prefixHas(p: Prefix, address: string): boolean {
  let b: Uint8Array;
  try {
    b = parseAddress(address);
  } catch {
    return false;
  }
  return prefixesOverlap(p, { bytes: b, len: b.length * 8 });
}
