// The lab's reading of a PROXY protocol header (v1 text, v2 binary), as a member behind an L7 VIP receives it from
// HAProxy: what a real server with `proxy_protocol` on would do. Pure.

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/**
 * A header at the start of `b`: `more` (not all of it yet), `bad` (no header: a server that requires one closes the
 * connection), or its length and the client it names (null for a health check's LOCAL or UNKNOWN header).
 */
export type ProxyHeader = { more: true } | { bad: string } | { length: number; source: { address: string; port: number } | null };

export function parseProxyHeader(b: Buffer): ProxyHeader {
  if (b.length >= 1 && b[0] === 0x0d) return parseV2(b);
  const prefix = 'PROXY ';
  if (b.length < prefix.length) return prefix.startsWith(b.toString('latin1')) ? { more: true } : { bad: 'no PROXY header' };
  if (b.subarray(0, prefix.length).toString('latin1') !== prefix) return { bad: 'no PROXY header' };
  const end = b.indexOf('\r\n');
  if (end < 0) return b.length > 107 ? { bad: 'v1 header longer than 107 bytes' } : { more: true };
  const [, proto, src, , sport] = b.subarray(0, end).toString('latin1').split(' ');
  if (proto === 'UNKNOWN') return { length: end + 2, source: null };
  if ((proto !== 'TCP4' && proto !== 'TCP6') || !src || !sport) return { bad: `v1 header ${JSON.stringify(b.subarray(0, end).toString('latin1'))}` };
  return { length: end + 2, source: { address: src, port: Number(sport) } };
}

function parseV2(b: Buffer): ProxyHeader {
  if (b.length < 16) return V2_SIGNATURE.subarray(0, b.length).equals(b.subarray(0, Math.min(b.length, 12))) ? { more: true } : { bad: 'no PROXY header' };
  if (!b.subarray(0, 12).equals(V2_SIGNATURE) || b[12] >> 4 !== 2) return { bad: 'no PROXY v2 header' };
  const length = 16 + b.readUInt16BE(14);
  if (b.length < length) return { more: true };
  if ((b[12] & 0x0f) === 0) return { length, source: null }; // LOCAL: the proxy's own connection (a health check)
  const fam = b[13] >> 4;
  if (fam === 1) return { length, source: { address: [...b.subarray(16, 20)].join('.'), port: b.readUInt16BE(24) } };
  if (fam === 2) {
    const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(16 + 2 * i).toString(16));
    return { length, source: { address: groups.join(':'), port: b.readUInt16BE(48) } };
  }
  return { length, source: null };
}
