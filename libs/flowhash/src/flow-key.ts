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

/** Parses (and remembers: sessions share addresses, and a recovering node hashes 100k of them) an IPv4 address. The result is shared: do not modify it. */
export function parseIPv4(addr: string): Uint8Array {
  const hit = parsed.get(addr);
  if (hit) return hit;
  const out = parseIPv4Uncached(addr);
  if (parsed.size >= 65536) parsed.clear();
  parsed.set(addr, out);
  return out;
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

/**
 * The register image nft hashes for `ip saddr . th sport . ip daddr . th dport . meta l4proto` (TCP/UDP) or
 * `ip saddr . ip daddr . meta l4proto` (other protocols). Why: every concatenated field starts on a 4-byte
 * register boundary, so a 2-byte port is followed by 2 zero bytes and the 1-byte protocol by 3.
 */
export function keyImage(k: FlowKey): Uint8Array {
  const ported = hasPorts(k.proto);
  const out = new Uint8Array(ported ? 20 : 12);
  let o = 0;
  out.set(parseIPv4(k.outerAddr), o); o += 4;
  if (ported) { out[o] = k.outerPort >> 8; out[o + 1] = k.outerPort & 0xff; o += 4; }
  out.set(parseIPv4(k.innerAddr), o); o += 4;
  if (ported) { out[o] = k.innerPort >> 8; out[o + 1] = k.innerPort & 0xff; o += 4; }
  out[o] = k.proto;
  return out;
}

/** The bucket nft's `jhash <key> mod buckets seed <seed>` yields for this flow. */
export function bucketOf(k: FlowKey, seed: number, buckets: number): number {
  return reciprocalScale(jhash(keyImage(k), seed >>> 0), buckets);
}
