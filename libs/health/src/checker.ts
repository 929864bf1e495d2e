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
