// ctnetlink message codec: netlink attributes to typed conntrack entries and back; pure layer of libs/conntrack.
// Attribute numbers are from linux/netfilter/nfnetlink_conntrack.h; values are in network byte order.
import { familyOf, formatAddress, parseAddress } from '@fwlb/flowhash';

export const NFNL_SUBSYS_CTNETLINK = 1;
export const IPCTNL_MSG_CT_NEW = 0;
export const IPCTNL_MSG_CT_GET = 1;
export const IPCTNL_MSG_CT_DELETE = 2;
export const NFNLGRP_CONNTRACK_NEW = 1;
export const NFNLGRP_CONNTRACK_UPDATE = 2;
export const NFNLGRP_CONNTRACK_DESTROY = 3;
export const NLM_F_CREATE = 0x400;

const CTA = { TUPLE_ORIG: 1, TUPLE_REPLY: 2, STATUS: 3, PROTOINFO: 4, TIMEOUT: 7, MARK: 8, ID: 12, TIMESTAMP: 20, LABELS: 22 } as const;
const CTA_TIMESTAMP_START = 1;
const CTA_TUPLE = { IP: 1, PROTO: 2 } as const;
const CTA_IP = { V4_SRC: 1, V4_DST: 2, V6_SRC: 3, V6_DST: 4 } as const;
export const AF_INET = 2;
export const AF_INET6 = 10;
const CTA_PROTO = { NUM: 1, SRC_PORT: 2, DST_PORT: 3 } as const;
const CTA_PROTOINFO_TCP = 1;
const CTA_PROTOINFO_TCP_STATE = 1;
const NLA_TYPE_MASK = 0x3fff;
const NLA_F_NESTED = 0x8000;

export const TCP_STATES = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2'] as const;

export interface CtTuple {
  src: string;
  dst: string;
  proto: number;
  sport?: number;
  dport?: number;
}

export interface CtEntry {
  orig: CtTuple;
  reply: CtTuple;
  /** IPS_* status bits (ASSURED = 1<<2, SEEN_REPLY = 1<<1, ...). */
  status: number;
  /** Seconds left before the kernel expires the entry. */
  timeout?: number;
  mark: number;
  id?: number;
  tcpState?: (typeof TCP_STATES)[number];
  /** Conntrack label bits that are set (nft `ct label set N`). */
  labels?: number[];
  /**
   * When the entry was confirmed (its first packet passed), ms since the epoch; only where the kernel keeps
   * timestamps (net.netfilter.nf_conntrack_timestamp=1 when the entry was made).
   */
  start?: number;
}

export type CtEventKind = 'new' | 'update' | 'destroy';

/** Netlink attributes of a buffer: type (flags masked off) → payload. Padding to 4 bytes is skipped. */
export function parseAttrs(b: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = 0;
  while (off + 4 <= b.length) {
    const len = b.readUInt16LE(off);
    const type = b.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < 4 || off + len > b.length) throw new RangeError(`bad netlink attribute at ${off}: length ${len} of ${b.length}`);
    out.set(type, b.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

export function parseTuple(b: Buffer): CtTuple | null {
  const a = parseAttrs(b);
  const ip = a.get(CTA_TUPLE.IP);
  const proto = a.get(CTA_TUPLE.PROTO);
  if (!ip || !proto) return null;
  const ipa = parseAttrs(ip);
  const v6 = ipa.has(CTA_IP.V6_SRC);
  const src = ipa.get(v6 ? CTA_IP.V6_SRC : CTA_IP.V4_SRC);
  const dst = ipa.get(v6 ? CTA_IP.V6_DST : CTA_IP.V4_DST);
  if (!src || !dst || src.length !== (v6 ? 16 : 4) || dst.length !== src.length) return null;
  const pa = parseAttrs(proto);
  const num = pa.get(CTA_PROTO.NUM);
  // Canonical text (RFC 5952 for IPv6): one session has one text.
  const t: CtTuple = { src: formatAddress(src), dst: formatAddress(dst), proto: num ? num[0] : 0 };
  const sp = pa.get(CTA_PROTO.SRC_PORT);
  const dp = pa.get(CTA_PROTO.DST_PORT);
  if (sp && dp) {
    t.sport = sp.readUInt16BE(0);
    t.dport = dp.readUInt16BE(0);
  }
  return t;
}

/** The payload of one ctnetlink message after the 4-byte nfgenmsg header (IPv4 or IPv6); null for anything else. */
export function parseEntry(payload: Buffer): CtEntry | null {
  const a = parseAttrs(payload.subarray(4));
  const o = a.get(CTA.TUPLE_ORIG);
  const r = a.get(CTA.TUPLE_REPLY);
  const orig = o && parseTuple(o);
  const reply = r && parseTuple(r);
  if (!orig || !reply) return null;
  const u32 = (k: number) => a.get(k)?.readUInt32BE(0);
  const e: CtEntry = { orig, reply, status: u32(CTA.STATUS) ?? 0, mark: u32(CTA.MARK) ?? 0 };
  const timeout = u32(CTA.TIMEOUT);
  if (timeout !== undefined) e.timeout = timeout;
  const id = u32(CTA.ID);
  if (id !== undefined) e.id = id;
  const pi = a.get(CTA.PROTOINFO);
  const tcp = pi && parseAttrs(pi).get(CTA_PROTOINFO_TCP);
  const st = tcp && parseAttrs(tcp).get(CTA_PROTOINFO_TCP_STATE);
  if (st) e.tcpState = TCP_STATES[st[0]] ?? 'NONE';
  // Nanoseconds of the real-time clock, a 64-bit big-endian value.
  const ts = a.get(CTA.TIMESTAMP);
  const start = ts && parseAttrs(ts).get(CTA_TIMESTAMP_START);
  if (start && start.length >= 8) e.start = Number(start.readBigUInt64BE(0) / 1_000_000n);
  // CTA_LABELS is the kernel's label bitmap (unsigned longs, little-endian here): bit n is byte n/8, bit n%8.
  const lb = a.get(CTA.LABELS);
  if (lb) {
    const bits: number[] = [];
    for (let i = 0; i < lb.length * 8; i++) if (lb[i >> 3] & (1 << (i & 7))) bits.push(i);
    if (bits.length) e.labels = bits;
  }
  return e;
}

/** What a message is: NEW with NLM_F_CREATE is a new entry, NEW without it an update, DELETE a destroy. */
export function eventKind(type: number, flags: number): CtEventKind | null {
  if (type >> 8 !== NFNL_SUBSYS_CTNETLINK) return null;
  const msg = type & 0xff;
  if (msg === IPCTNL_MSG_CT_DELETE) return 'destroy';
  if (msg === IPCTNL_MSG_CT_NEW) return flags & NLM_F_CREATE ? 'new' : 'update';
  return null;
}

/** nfgenmsg: family (AF_INET, AF_INET6, or 0 for a dump of both), version 0, resource id 0. */
export function nfgenmsg(family = AF_INET): Buffer {
  return Buffer.from([family, 0, 0, 0]);
}

function attr(type: number, data: Buffer, nested = false): Buffer {
  const len = 4 + data.length;
  const b = Buffer.alloc((len + 3) & ~3);
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type | (nested ? NLA_F_NESTED : 0), 2);
  data.copy(b, 4);
  return b;
}

/** Encodes a tuple as the kernel does (used for lookups and deletes, and by tests to build messages). */
export function encodeTuple(t: CtTuple): Buffer {
  const [src, dst] = [parseAddress(t.src), parseAddress(t.dst)];
  if (src.length !== dst.length) throw new TypeError(`one tuple, two families: ${t.src} and ${t.dst}`);
  const v6 = src.length === 16;
  const ip = Buffer.concat([attr(v6 ? CTA_IP.V6_SRC : CTA_IP.V4_SRC, Buffer.from(src)), attr(v6 ? CTA_IP.V6_DST : CTA_IP.V4_DST, Buffer.from(dst))]);
  const port = (p: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(p);
    return b;
  };
  const proto = Buffer.concat([
    attr(CTA_PROTO.NUM, Buffer.from([t.proto])),
    ...(t.sport !== undefined && t.dport !== undefined ? [attr(CTA_PROTO.SRC_PORT, port(t.sport)), attr(CTA_PROTO.DST_PORT, port(t.dport))] : []),
  ]);
  return Buffer.concat([attr(CTA_TUPLE.IP, ip, true), attr(CTA_TUPLE.PROTO, proto, true)]);
}

/**
 * The payload that names one entry by its original tuple (a GET finds the entry whichever direction the tuple is);
 * with `id`, a DELETE removes that entry only, not a newer one that took its tuple.
 */
export function encodeLookup(t: CtTuple, id?: number): Buffer {
  const parts = [nfgenmsg(familyOf(t.src) === 6 ? AF_INET6 : AF_INET), attr(CTA.TUPLE_ORIG, encodeTuple(t), true)];
  if (id !== undefined) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(id >>> 0);
    parts.push(attr(CTA.ID, b));
  }
  return Buffer.concat(parts);
}

/** Encodes an entry's message payload (nfgenmsg + attributes). */
export function encodeEntry(e: CtEntry): Buffer {
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    return b;
  };
  const parts = [
    nfgenmsg(familyOf(e.orig.src) === 6 ? AF_INET6 : AF_INET),
    attr(CTA.TUPLE_ORIG, encodeTuple(e.orig), true),
    attr(CTA.TUPLE_REPLY, encodeTuple(e.reply), true),
    attr(CTA.STATUS, u32(e.status)),
    attr(CTA.MARK, u32(e.mark)),
  ];
  if (e.timeout !== undefined) parts.push(attr(CTA.TIMEOUT, u32(e.timeout)));
  if (e.id !== undefined) parts.push(attr(CTA.ID, u32(e.id)));
  if (e.tcpState)
    parts.push(attr(CTA.PROTOINFO, attr(CTA_PROTOINFO_TCP, attr(CTA_PROTOINFO_TCP_STATE, Buffer.from([TCP_STATES.indexOf(e.tcpState)])), true), true));
  if (e.start !== undefined) {
    const ns = Buffer.alloc(8);
    ns.writeBigUInt64BE(BigInt(e.start) * 1_000_000n);
    parts.push(attr(CTA.TIMESTAMP, attr(CTA_TIMESTAMP_START, ns), true));
  }
  if (e.labels?.length) {
    const lb = Buffer.alloc(16);
    for (const b of e.labels) lb[b >> 3] |= 1 << (b & 7);
    parts.push(attr(CTA.LABELS, lb));
  }
  return Buffer.concat(parts);
}
