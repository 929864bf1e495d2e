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

/** A sysctl that must be 1 (`path` under /proc/sys): ok with `on`, else `off(value)` says what follows and the fix. */
export function sysctlOnCheck(name: string, path: string, required: boolean, on: string, off: (value: string | null) => string): Check {
  const v = sysctl(path);
  return { name, ok: v === '1', required, detail: v === '1' ? on : off(v) };
}

export function ipForwardCheck(): Check {
  return sysctlOnCheck(
    'ip_forward',
    'net/ipv4/ip_forward',
    true,
    'enabled',
    () => 'net.ipv4.ip_forward is 0: this node would not forward (sysctl -w net.ipv4.ip_forward=1)',
  );
}

export function formatChecks(checks: Check[]): string {
  return checks.map((c) => `${c.ok ? 'ok     ' : c.required ? 'MISSING' : 'warn   '} ${c.name}: ${c.detail}`).join('\n');
}
