// The node processes' log: pino, one JSON object per line (time, level, prog, node, msg, and fields), so it can be
// shipped and queried; shell layer. Level from FWLB_LOG_LEVEL (trace … fatal). @default info
import pino, { Logger } from 'pino';

export type { Logger };

export function nodeLogger(prog: string, node: string, level = process.env.FWLB_LOG_LEVEL ?? 'info', dest?: { write(s: string): void }): Logger {
  const opts = { base: { prog, node }, level, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label: string) => ({ level: label }) } };
  return dest ? pino(opts, dest) : pino(opts);
}

/**
 * The `log(message)` callback the libraries take, on a logger: messages that start with ALARM are warnings, the
 * rest information. Structured fields go through the logger itself.
 */
export function logLines(l: Logger): (msg: string) => void {
  return (msg) => (msg.startsWith('ALARM') ? l.warn(msg) : l.info(msg));
}
