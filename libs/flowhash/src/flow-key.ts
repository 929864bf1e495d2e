// Canonical flow key and its nft register image; pure layer of libs/flowhash.
import { jhash, reciprocalScale } from './jhash';

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;

/** A packet's 5-tuple as seen on the wire. */
export interface PacketTuple {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
}

/** The canonical key: the outer side is the client side of the sandwich, whichever way the packet goes. */
export interface FlowKey {
  outerAddr: string;
  outerPort: number;
  innerAddr: string;
  innerPort: number;
  proto: number;
}

export type Role = 'outside' | 'inside';

/**
 * Which end of a packet is "outer" depends on the node: the outside node hashes packets that enter from the
 * client side (source = outer); the inside node hashes packets that enter from the server side (destination = outer).
 */
export function canonicalKey(role: Role, p: PacketTuple): FlowKey {
  const ported = hasPorts(p.proto);
  const sport = ported ? p.sport : 0;
  const dport = ported ? p.dport : 0;
  return role === 'outside'
    ? { outerAddr: p.saddr, outerPort: sport, innerAddr: p.daddr, innerPort: dport, proto: p.proto }
    : { outerAddr: p.daddr, outerPort: dport, innerAddr: p.saddr, innerPort: sport, proto: p.proto };
}

export function hasPorts(proto: number): boolean {
  return proto === PROTO_TCP || proto === PROTO_UDP;
}

const parsed = new Map<string, Uint8Array>();

/**
 * Parses (and remembers: sessions share addresses, and a recovering node hashes 100k of them) an IPv4 address
 * (4 bytes) or an IPv6 address (16 bytes, any RFC 4291 text form). The result is shared: do not modify it.
 */
export function parseAddress(addr: string): Uint8Array {
  const hit = parsed.get(addr);
  if (hit) return hit;
  const out = addr.includes(':') ? parseIPv6Uncached(addr) : parseIPv4Uncached(addr);
  if (parsed.size >= 65536) parsed.clear();
  parsed.set(addr, out);
  return out;
}

/** 4 or 6: the family of an address in text form (by its separator; parseAddress checks the rest). */
export function familyOf(addr: string): 4 | 6 {
  return addr.includes(':') ? 6 : 4;
}

function parseIPv4Uncached(addr: string): Uint8Array {
  const parts = addr.split('.');
  if (parts.length !== 4) throw new TypeError(`not an IPv4 address: ${addr}`);
  const out = new Uint8Array(4);
  parts.forEach((s, i) => {
    if (!/^\d{1,3}$/.test(s) || Number(s) > 255) throw new TypeError(`not an IPv4 address: ${addr}`);
    out[i] = Number(s);
  });
  return out;
}

function parseIPv6Uncached(addr: string): Uint8Array {
  const bad = () => new TypeError(`not an IPv6 address: ${addr}`);
  let text = addr;
  const words: number[] = [];
  // A trailing dotted quad (::ffff:192.0.2.1) stands for the last two words.
  const quad = /^(.*:)(\d{1,3}(?:\.\d{1,3}){3})$/.exec(text);
  let tail: number[] = [];
  if (quad) {
    const b = parseIPv4Uncached(quad[2]);
    tail = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]];
    text = quad[1].endsWith('::') ? quad[1] : quad[1].slice(0, -1);
  }
  const halves = text.split('::');
  if (halves.length > 2) throw bad();
  const group = (h: string) =>
    h === ''
      ? []
      : h.split(':').map((g) => {
          if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
          return parseInt(g, 16);
        });
  const head = group(halves[0]);
  const rest = halves.length === 2 ? group(halves[1]) : [];
  const given = head.length + rest.length + tail.length;
  if (halves.length === 2 ? given > 7 : given !== 8) throw bad();
  words.push(...head, ...new Array(8 - given).fill(0), ...rest, ...tail);
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** The canonical text form of an address (RFC 5952 for IPv6: lower case, no leading zeros, the longest run of two or more zero words as ::). */
export function formatAddress(b: Uint8Array): string {
  if (b.length === 4) return b.join('.');
  if (b.length !== 16) throw new TypeError(`not an address: ${b.length} bytes`);
  const w = Array.from({ length: 8 }, (_, i) => (b[2 * i] << 8) | b[2 * i + 1]);
  // IPv4-mapped (::ffff:0:0/96) in mixed notation, as RFC 5952 section 5 recommends (and inet_ntop prints).
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) return `::ffff:${b.slice(12).join('.')}`;
  let best = -1,
    bestLen = 1;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(w) : `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

/** An address in its canonical text form (throws on a malformed one). */
export function canonicalAddress(addr: string): string {
  return formatAddress(parseAddress(addr));
}

/** The canonical text form, or null for anything that is not an address (for validators). */
export function canonicalOrNull(addr: string): string | null {
  try {
    return canonicalAddress(addr);
  } catch {
    return null;
  }
}

/** "addr:port", IPv6 in brackets ("[2001:db8::1]:80", RFC 5952 section 6): its own colons would end the address. */
export function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** The address and port of "addr:port" or "[v6]:port" (the last colon separates the port). */
export function splitHostPort(text: string): [string, number] {
  const i = text.lastIndexOf(':');
  return [text.slice(0, i).replace(/^\[(.*)\]$/, '$1'), Number(text.slice(i + 1))];
}

/**
 * The register image nft hashes for `ip saddr . th sport . ip daddr . th dport . meta l4proto` (TCP/UDP) or
 * `ip saddr . ip daddr . meta l4proto` (other protocols), and the same with `ip6`. Why the padding: every
 * concatenated field starts on a 4-byte register boundary, so a 2-byte port is followed by 2 zero bytes and the
 * 1-byte protocol by 3; an IPv6 address fills four registers.
 */
export function keyImage(k: FlowKey): Uint8Array {
  const ported = hasPorts(k.proto);
  const outer = parseAddress(k.outerAddr);
  const inner = parseAddress(k.innerAddr);
  if (outer.length !== inner.length) throw new TypeError(`one flow, two families: ${k.outerAddr} and ${k.innerAddr}`);
  const out = new Uint8Array(2 * outer.length + (ported ? 12 : 4));
  let o = 0;
  out.set(outer, o);
  o += outer.length;
  if (ported) {
    out[o] = k.outerPort >> 8;
    out[o + 1] = k.outerPort & 0xff;
    o += 4;
  }
  out.set(inner, o);
  o += inner.length;
  if (ported) {
    out[o] = k.innerPort >> 8;
    out[o + 1] = k.innerPort & 0xff;
    o += 4;
  }
  out[o] = k.proto;
  return out;
}

/** The bucket nft's `jhash <key> mod buckets seed <seed>` yields for this flow. */
export function bucketOf(k: FlowKey, seed: number, buckets: number): number {
  return reciprocalScale(jhash(keyImage(k), seed >>> 0), buckets);
}
