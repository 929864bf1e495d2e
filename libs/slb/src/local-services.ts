// What this node serves itself (its addresses and the ports its sockets listen on), so that a VIP never captures it;
// the parser is pure, the reader is the shell layer of libs/slb.
import { accessSync, constants, readFileSync } from 'node:fs';
import type { ResolvedVip } from '@fwlb/config';
import { networkInterfaces } from 'node:os';
import { canonicalOrNull, formatAddress, hostPort } from '@fwlb/flowhash';

export interface LocalSocket {
  protocol: 'tcp' | 'udp';
  /** Canonical address the socket is bound to; `0.0.0.0` or `::` for every address. */
  address: string;
  port: number;
}

const TCP_LISTEN = '0A';
const UDP_UNCONNECTED = '07';

/**
 * Sockets that take traffic from anyone, from one of /proc/net/{tcp,tcp6,udp,udp6}: listening TCP sockets and
 * unconnected UDP ones. The kernel prints each address as 32-bit words in host order (little-endian here).
 */
export function parseProcNet(text: string, protocol: 'tcp' | 'udp'): LocalSocket[] {
  const out: LocalSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const [hex, portHex] = f[1].split(':');
    if (f[3] !== (protocol === 'tcp' ? TCP_LISTEN : UDP_UNCONNECTED) || !/^[0-9A-F]{8}([0-9A-F]{24})?$/i.test(hex ?? '')) continue;
    const bytes = new Uint8Array(hex.length / 2);
    for (let w = 0; w < hex.length / 8; w++)
      for (let b = 0; b < 4; b++) bytes[w * 4 + b] = parseInt(hex.slice(w * 8 + (3 - b) * 2, w * 8 + (3 - b) * 2 + 2), 16);
    out.push({ protocol, address: formatAddress(bytes), port: parseInt(portHex, 16) });
  }
  return out;
}

/**
 * Why a VIP at `address`:`port` would capture a service of this node, or null: the address is one of the node's
 * own (not one fwlb holds for a VIP) and a socket takes that port on it. A socket on `::` counts for IPv4 too (a
 * dual-stack socket accepts both).
 */
export function vipConflict(
  vip: { address: string; port: number; protocol: 'tcp' | 'udp' },
  nodeAddresses: ReadonlySet<string>,
  sockets: readonly LocalSocket[],
): string | null {
  if (!nodeAddresses.has(vip.address)) return null;
  const v6 = vip.address.includes(':');
  const s = sockets.find(
    (x) => x.protocol === vip.protocol && x.port === vip.port && (x.address === vip.address || x.address === '::' || (!v6 && x.address === '0.0.0.0')),
  );
  return s
    ? `${vip.address} is this node's own address, and ${hostPort(s.address, s.port)}/${s.protocol} serves on it: the VIP would capture that service`
    : null;
}

/** This node's services as the kernel shows them now: its addresses except `vipAddresses` (fwlb's own), and its sockets. */
export function localServices(vipAddresses: Iterable<string>): { addresses: Set<string>; sockets: LocalSocket[] } {
  const vips = new Set(vipAddresses);
  const addresses = new Set<string>();
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) {
      const c = canonicalOrNull(a.address.replace(/%.*$/, ''));
      if (c && !vips.has(c)) addresses.add(c);
    }
  const sockets: LocalSocket[] = [];
  for (const [file, protocol] of [
    ['tcp', 'tcp'],
    ['tcp6', 'tcp'],
    ['udp', 'udp'],
    ['udp6', 'udp'],
  ] as const) {
    try {
      sockets.push(...parseProcNet(readFileSync(`/proc/net/${file}`, 'utf8'), protocol));
    } catch {
      // No such family in this kernel: no sockets of it.
    }
  }
  return { addresses, sockets };
}

/** The VIPs of `vips` that would capture a service of this node (`here`), as config problems; `field` names each. */
export function captureProblems(
  vips: readonly ResolvedVip[],
  here: { addresses: ReadonlySet<string>; sockets: readonly LocalSocket[] },
  field: (v: ResolvedVip, i: number) => string,
): { field: string; message: string }[] {
  return vips.flatMap((v, i) => {
    const why = vipConflict(v, here.addresses, here.sockets);
    return why ? [{ field: field(v, i), message: why }] : [];
  });
}

/** The TLS certificates of `vips` this process cannot read, as config problems (HAProxy would refuse to start). */
export function unreadableCertificates(vips: readonly (ResolvedVip | undefined)[]): { field: string; message: string }[] {
  return vips.flatMap((v) => {
    const cert = v?.tls?.certificate;
    if (!cert) return [];
    try {
      accessSync(cert, constants.R_OK);
      return [];
    } catch {
      return [{ field: '/tls/certificate', message: `cannot read ${cert} (a PEM file with the certificate and its key)` }];
    }
  });
}
