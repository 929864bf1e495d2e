// What JSON Schema cannot say about a health check spec: its regex compiles, and a port is there when the kind
// needs one and the target has none; pure layer of libs/config.
import { CheckSpec, compileContentRegex } from '@fwlb/health';
import type { FieldProblem } from './errors';

const PORTED = new Set(['tcp', 'tcp-half-open', 'http', 'http-content']);

/** `at` is the spec's JSON pointer; `targetHasPort`: the checked target brings its own port (an SLB member does). */
export function checkSpecProblems(spec: CheckSpec, at: string, targetHasPort: boolean): FieldProblem[] {
  const out: FieldProblem[] = [];
  if (!targetHasPort && PORTED.has(spec.kind) && !('port' in spec && spec.port))
    out.push({ field: `${at}/port`, message: `is required for a ${spec.kind} check (the target has no port)` });
  if (spec.kind === 'http-content' && spec.regex !== undefined) {
    try {
      compileContentRegex(spec.regex);
    } catch (e) {
      out.push({ field: `${at}/regex`, message: `is not a valid regular expression: ${(e as Error).message}` });
    }
  }
  return out;
}

/** Routing table ids the system owns: unspec, default, main, local. */
export const RESERVED_TABLES = [0, 253, 254, 255];
/** ip rule priorities the system owns: local (0), main (32766), default (32767). */
export const RESERVED_PRIORITIES = [0, 32766, 32767];

/** A problem when the owned range [base, base+size) covers an id the system owns: fwlb deletes what it does not want in its ranges. */
export function reservedProblem(field: string, r: { base: number; size: number }, reserved: number[], what: string): FieldProblem | null {
  const hit = reserved.filter((x) => x >= r.base && x < r.base + r.size);
  return hit.length
    ? { field, message: `the range ${r.base}..${r.base + r.size - 1} covers the system's ${what} ${hit.join(', ')}; fwlb would delete them` }
    : null;
}
