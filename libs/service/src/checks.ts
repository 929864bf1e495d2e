// What a node process's doctor reports: one line per kernel feature, and sysctl reads; shell layer shared by the node processes.
import { readFileSync } from 'node:fs';

export interface Check {
  name: string;
  ok: boolean;
  required: boolean;
  detail: string;
}

export function sysctl(path: string): string | null {
  try {
    return readFileSync(`/proc/sys/${path}`, 'utf8').trim();
  } catch {
    return null;
  }
}

export function ipForwardCheck(): Check {
  const fwd = sysctl('net/ipv4/ip_forward');
  return {
    name: 'ip_forward',
    ok: fwd === '1',
    required: true,
    detail: fwd === '1' ? 'enabled' : 'net.ipv4.ip_forward is 0: this node would not forward (sysctl -w net.ipv4.ip_forward=1)',
  };
}

export function formatChecks(checks: Check[]): string {
  return checks.map((c) => `${c.ok ? 'ok     ' : c.required ? 'MISSING' : 'warn   '} ${c.name}: ${c.detail}`).join('\n');
}
