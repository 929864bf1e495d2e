// The CPU this process has used, its reaped children's included (the nft and ip processes it runs); shell layer
// shared by the node processes, for work that keeps to a share of a core.
import { readFileSync } from 'node:fs';

/** Clock ticks a second for /proc's times (USER_HZ: 100 on every Linux ABI). */
const TICKS_PER_SECOND = 100;

/** Milliseconds of CPU: this process's own (µs resolution) plus its reaped children's (10 ms resolution, from /proc). */
export function cpuMs(): number {
  const own = process.cpuUsage();
  return (own.user + own.system) / 1000 + childrenCpuMs();
}

function childrenCpuMs(): number {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    // Fields after the command's closing parenthesis: state is field 3, cutime and cstime are fields 16 and 17.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[13]) + Number(f[14])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/**
 * How long to wait before work that cost `costMs` of CPU runs again, so that it takes at most `share` of a core
 * (0.005: half a percent), and never sooner than `everyMs`.
 */
export function periodForShare(everyMs: number, costMs: number, share: number): number {
  return Math.max(everyMs, costMs / share);
}
