// The one small interface every checker kind implements, and the factory; libs/health.
import type { CheckSpec } from './check-spec';
import type { ProbeHelper } from './probe-helper';
import type { ProbeResult } from './timer';
import { IcmpChecker } from './icmp';
import { TcpChecker } from './tcp';
import { TcpHalfOpenChecker } from './tcp-half-open';
import { HttpChecker } from './http';
import { HttpContentChecker } from './http-content';

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

export function createChecker(spec: CheckSpec, helper: ProbeHelper): Checker {
  switch (spec.kind) {
    case 'icmp':
      return new IcmpChecker(spec, helper);
    case 'tcp':
      return new TcpChecker(spec, helper);
    case 'tcp-half-open':
      return new TcpHalfOpenChecker(spec, helper);
    case 'http':
      return new HttpChecker(spec, helper);
    case 'http-content':
      return new HttpContentChecker(spec, helper);
  }
}

export function portOf(specPort: number | undefined, target: CheckTarget, kind: string): number {
  const p = specPort ?? target.port;
  if (!p) throw new RangeError(`${kind} check needs a port`);
  return p;
}

export function steerOf(spec: { source?: string; mark?: number; device?: string }) {
  return { source: spec.source, mark: spec.mark, device: spec.device };
}
