// The node processes' log: pino, one JSON object per line (time, level, prog, node, msg, and fields), so it can be
// shipped and queried; on a terminal, one readable line each instead. Shell layer. Level from FWLB_LOG_LEVEL
// (trace … fatal, @default info); FWLB_LOG_FORMAT=json|pretty|journal overrides the choice made by whether stdout is
// a TTY or, under systemd, the journal ($JOURNAL_STREAM): there each line starts with its syslog priority.
import { fstatSync } from 'node:fs';
import pino, { Logger } from 'pino';

export type { Logger };

type Dest = { write(s: string): void };

export function nodeLogger(prog: string, node: string, level = process.env.FWLB_LOG_LEVEL ?? 'info', dest?: Dest): Logger {
  const opts = { base: { prog, node }, level, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label: string) => ({ level: label }) } };
  const format = process.env.FWLB_LOG_FORMAT ?? (dest ? 'json' : stdoutIsJournal() ? 'journal' : process.stdout.isTTY ? 'pretty' : 'json');
  const out = dest ?? process.stdout;
  return pino(opts, format === 'pretty' ? prettyDest(out) : format === 'journal' ? journalDest(out) : out);
}

/**
 * Whether standard output is the journal: $JOURNAL_STREAM names its device and inode (systemd.exec(5)). Compared,
 * because a child whose output is a pipe inherits the variable too.
 */
export function stdoutIsJournal(env = process.env.JOURNAL_STREAM): boolean {
  const m = /^(\d+):(\d+)$/.exec(env ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(1);
    return String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

/** syslog priorities of pino's levels, as journald reads them from a `<N>` prefix (SyslogLevelPrefix). */
export const JOURNAL_PRIORITY: Record<string, number> = { trace: 7, debug: 7, info: 6, warn: 4, error: 3, fatal: 2 };

/** A destination that prefixes each JSON line with its level's syslog priority, so journald files it under it. */
export function journalDest(out: Dest): Dest {
  return {
    write(line: string) {
      const level = /"level":"([a-z]+)"/.exec(line)?.[1];
      out.write(`<${JOURNAL_PRIORITY[level ?? ''] ?? 6}>${line}`);
    },
  };
}

const LEVEL_WIDTH = 5;

/**
 * A destination that writes each JSON log line as `HH:MM:SS.mmm LEVEL node: msg key=value …` (for a person at a
 * terminal). A line that is not a JSON object is written as it came.
 */
export function prettyDest(out: Dest): Dest {
  return {
    write(line: string) {
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line);
      } catch {
        return out.write(line);
      }
      if (!o || typeof o !== 'object') return out.write(line);
      const { time, level, prog, node, msg, pid: _pid, hostname: _host, ...rest } = o;
      const t = typeof time === 'string' ? time.slice(11, 23) : '';
      const fields = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
      out.write(
        `${t} ${String(level ?? '')
          .toUpperCase()
          .padEnd(LEVEL_WIDTH)} ${node ?? prog ?? ''}: ${msg ?? ''}${fields.length ? ' ' + fields.join(' ') : ''}\n`,
      );
    },
  };
}

/** The log callback the libraries take: a message, and for events (a health transition, a reconcile) their fields. */
export type LogFn = (msg: string, fields?: Record<string, unknown>) => void;

/**
 * The `log(message, fields)` callback on a logger: messages that start with ALARM are warnings, the rest
 * information; `fields` become fields of the JSON line (`event`, `firewall`, `from`, `to`, …), so a log shipper can
 * query transitions without parsing the message.
 */
export function logLines(l: Logger): LogFn {
  return (msg, fields) => (msg.startsWith('ALARM') ? l.warn(fields ?? {}, msg) : l.info(fields ?? {}, msg));
}
