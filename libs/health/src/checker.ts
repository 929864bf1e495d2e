// The one small interface every checker kind implements, and the helpers the kinds share; libs/health.
import type { CheckSpec } from './check-spec';
import type { ProbeResult } from './timer';

export interface CheckTarget {
  address: string;
  /** Used when the spec names no port. */
  port?: number;
}

export interface Checker {
  readonly kind: CheckSpec['kind'];
  /** One probe, answered within `responseMs`. Never throws: failures are results with a reason. */
  check(target: CheckTarget, responseMs: number): Promise<ProbeResult>;
}

export function portOf(specPort: number | undefined, target: CheckTarget, kind: string): number {
  const p = specPort ?? target.port;
  if (!p) throw new RangeError(`${kind} check needs a port`);
  return p;
}

export function steerOf(spec: { source?: string; mark?: number; device?: string }) {
  return { source: spec.source, mark: spec.mark, device: spec.device };
}

/**
 * One checker over several addresses: the probe succeeds when any of them answers (all are probed at once, so a
 * probe takes no longer than one). Why: with several nodes on the other side, a firewall is up while it
 * carries traffic to any of them; one dead node must not take every firewall down with it.
 */
export function anyOf(checker: Checker, addresses: readonly string[]): Checker {
  if (!addresses.length) throw new RangeError('anyOf needs at least one address');
  return {
    kind: checker.kind,
    async check(target, responseMs) {
      const results = await Promise.all(addresses.map((address) => checker.check({ ...target, address }, responseMs)));
      const ok = results.find((r) => r.ok);
      if (ok) return ok;
      // No evidence either way only when no probe could be run at all.
      if (results.every((r) => r.unknown)) return results[0];
      const reasons = results.flatMap((r, i) => (r.unknown ? [] : [`${addresses[i]}: ${r.reason}`]));
      return { ok: false, reason: reasons.join('; ') };
    },
  };
}
