// How full this network namespace's conntrack table is, and what to say about it; the read is the shell part of
// libs/conntrack, the verdict and the advice are pure.
import { readFileSync } from 'node:fs';

export interface ConntrackUse {
  count: number;
  max: number;
}

/** The entries this namespace's conntrack holds and may hold, or null without nf_conntrack. */
export function conntrackUse(procDir = '/proc/sys/net/netfilter'): ConntrackUse | null {
  try {
    const n = (f: string) => Number(readFileSync(`${procDir}/${f}`, 'utf8').trim());
    const use = { count: n('nf_conntrack_count'), max: n('nf_conntrack_max') };
    return Number.isFinite(use.count) && Number.isFinite(use.max) && use.max > 0 ? use : null;
  } catch {
    return null;
  }
}

/** An alarm when the table is at or above `ratio` of its size, else null. */
export function conntrackAlarm(use: ConntrackUse | null, ratio: number): string | null {
  if (!use || use.count < use.max * ratio) return null;
  return `conntrack table ${Math.round((use.count / use.max) * 100)}% full (${use.count} of ${use.max} entries): new connections are dropped when it is full`;
}

/** What `fwlb doctor` says about the table's use and its size. */
export function conntrackAdvice(use: ConntrackUse, ratio: number): string {
  const pct = ((use.count / use.max) * 100).toFixed(1);
  const base = `${use.count} of ${use.max} entries (${pct}%)`;
  if (use.count >= use.max * ratio) {
    return `${base}: raise net.netfilter.nf_conntrack_max (a balancer node tracks every flow of its side, each firewall only its share) or find what fills it (conntrack -L | sort by state)`;
  }
  return `${base}; size it for every concurrent flow of this side plus the unanswered SYNs of a flood (SYN_RECV lasts 60 s)`;
}
