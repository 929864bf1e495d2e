// Which IPv4 addresses can be a VIP or a real server: the special ranges that cannot work or would capture someone
// else's traffic; pure layer of libs/config.
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

/** Why `address` cannot be a VIP or a real server, or null when it can. */
export function specialAddress(address: string): string | null {
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
