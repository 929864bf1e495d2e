// The checker factory: a check spec to the checker of its kind. In a file of its own so that checker.ts (the
// interface the kinds import) imports none of them: no import cycle in libs/health.
import type { CheckSpec } from './check-spec';
import type { Checker } from './checker';
import type { ProbeHelper } from './probe-helper';
import { IcmpChecker } from './icmp';
import { TcpChecker } from './tcp';
import { TcpHalfOpenChecker } from './tcp-half-open';
import { ContentScope, HttpChecker } from './http';
import { HttpContentChecker } from './http-content';

/** `content`: where an http-content regex runs (without it, on this thread under its per-match limit only). */
export function createChecker(spec: CheckSpec, helper: ProbeHelper, content?: ContentScope): Checker {
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
      return new HttpContentChecker(spec, helper, content);
  }
}
