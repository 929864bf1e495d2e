// What every fwlbctl command shares: its output, its signature, and the helpers that turn answers into tables and
// errors into exit codes; pure layer of apps/fwlbctl.
import { Answer, CtlError, EXIT, Target } from './client';
import { USAGE } from './help';

export interface Output {
  /** What --json prints. */
  json: unknown;
  /** What a human reads. */
  text: string;
}

/** Columns padded to their widest cell. */
export function table(head: string[], rows: (string | number | boolean | null)[][]): string {
  const cells = [head, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => c.padEnd(w[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function ok(a: Answer, what: string): any {
  if (a.status >= 200 && a.status < 300) return a.body;
  const code = a.body?.code ?? `HTTP_${a.status}`;
  throw new CtlError(code, `${what}: ${code}: ${a.body?.message ?? a.body}`, EXIT.warning);
}

export function usage(msg: string): never {
  throw new CtlError('FWLBCTL_USAGE', `${msg}\n${USAGE}`, EXIT.unknown);
}

export const opt = (args: string[], name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

/** A command: its target agent, its subcommand, the words after it, and every word (for options). */
export type Command = (t: Target, sub: string | undefined, rest: string[], args: string[]) => Promise<Output>;
