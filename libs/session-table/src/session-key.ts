// Canonical session keys and records as stored in Redis; pure layer of libs/session-table.

export interface SessionKey {
  outerAddr: string;
  outerPort: number;
  innerAddr: string;
  innerPort: number;
  proto: number;
}

export interface SessionRecord extends SessionKey {
  /** The firewall the session crosses. */
  firewall: string;
  /** The node that recorded it. */
  node: string;
  /** First seen, ms since the epoch. */
  firstSeen: number;
  /** When it expires unless refreshed, ms since the epoch (follows the conntrack timeout). */
  expires: number;
}

/** "198.51.100.11:40000>203.0.113.100:7007/6": the same string on both nodes for the same session. */
export function sessionId(k: SessionKey): string {
  return `${k.outerAddr}:${k.outerPort}>${k.innerAddr}:${k.innerPort}/${k.proto}`;
}

const ID = /^(\d+\.\d+\.\d+\.\d+):(\d+)>(\d+\.\d+\.\d+\.\d+):(\d+)\/(\d+)$/;

export function parseSessionId(id: string): SessionKey | null {
  const m = ID.exec(id);
  return m ? { outerAddr: m[1], outerPort: Number(m[2]), innerAddr: m[3], innerPort: Number(m[4]), proto: Number(m[5]) } : null;
}

/** Stored value: "firewall node firstSeen expires" (compact; the key carries the tuple). */
export function encodeRecord(r: SessionRecord): string {
  return `${r.firewall} ${r.node} ${r.firstSeen} ${r.expires}`;
}

export function decodeRecord(id: string, v: string): SessionRecord | null {
  const k = parseSessionId(id);
  const f = v.split(' ');
  if (!k || f.length !== 4) return null;
  return { ...k, firewall: f[0], node: f[1], firstSeen: Number(f[2]), expires: Number(f[3]) };
}

export interface SessionQuery {
  addr?: string;
  port?: number;
  firewall?: string;
  limit?: number;
}

export function matches(r: SessionRecord, q: SessionQuery): boolean {
  if (q.addr && r.outerAddr !== q.addr && r.innerAddr !== q.addr) return false;
  if (q.port !== undefined && r.outerPort !== q.port && r.innerPort !== q.port) return false;
  if (q.firewall && r.firewall !== q.firewall) return false;
  return true;
}
