// HAProxy's runtime API from the outside: one command on a CLI socket, its answer checked, and the parsers of what
// `show stat` and `show table` print; shell layer of libs/slb.
import * as net from 'node:net';

/** One command on a HAProxy CLI socket (non-interactive: the answer ends when HAProxy closes the connection). */
export function haproxyCli(path: string, cmd: string, timeoutMs = 3000, refusedRetryMs = 0): Promise<string> {
  const started = Date.now();
  const once = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = net.connect(path);
      let out = '';
      let connected = false;
      let failed = false;
      const timer = setTimeout(() => s.destroy(new Error(`HAProxy CLI ${path}: no answer to "${cmd.slice(0, 60)}" within ${timeoutMs} ms`)), timeoutMs);
      s.setEncoding('utf8');
      s.on('connect', () => {
        connected = true;
        s.end(`${cmd}\n`);
      });
      s.on('data', (d: string) => (out += d));
      s.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        failed = true;
        // Refused before the command was sent (a master re-executing after a reload refuses for a moment): the
        // command never reached HAProxy, so sending it again is safe.
        const refused = !connected && (e.code === 'ECONNREFUSED' || e.code === 'ENOENT' || e.code === 'EAGAIN');
        if (refused && Date.now() - started < refusedRetryMs) setTimeout(() => once().then(resolve, reject), 20);
        else reject(e);
      });
      s.on('close', () => {
        clearTimeout(timer);
        if (!failed) resolve(out);
      });
    });
  return once();
}

/** What each runtime command answers when it worked; anything else is HAProxy's error message. */
const OK_ANSWERS: [RegExp, RegExp][] = [
  [/^add server /, /^New server registered\.$/],
  [/^del server /, /^Server deleted\.$/],
  [/^prepare map /, /^New version created: \d+$/],
  [/^(set server|shutdown sessions|add map|commit map|enable dynamic-cookie) /, /^$/],
];

export class HaproxyError extends Error {
  readonly code = 'FWLB_HAPROXY';
}

/** Runs a runtime command and throws HAProxy's own message when it did not work. */
export async function runtimeCommand(sock: string, cmd: string): Promise<string> {
  const out = (await haproxyCli(sock, cmd)).trim();
  const ok = OK_ANSWERS.find(([c]) => c.test(cmd));
  if (ok && !ok[1].test(out)) throw new HaproxyError(`HAProxy refused "${cmd}": ${out || '(no answer)'}`);
  return out;
}

export interface HaproxyStat {
  /** Sessions (connections) since start. */
  sessions: number;
  /** HTTP responses since start (a backend's or server's), or requests (a frontend's). */
  requests: number;
  /** 1 up, 0 maint/drain/down, as HAProxy shows it. */
  status: string;
}

/** Parses `show stat` (CSV): `proxy/server` (FRONTEND and BACKEND rows too) → counters. */
export function parseStat(csv: string): Map<string, HaproxyStat> {
  const lines = csv.split('\n').filter((l) => l.length);
  const out = new Map<string, HaproxyStat>();
  if (!lines.length || !lines[0].startsWith('# ')) return out;
  const cols = lines[0].slice(2).split(',');
  const at = (name: string) => cols.indexOf(name);
  const [px, sv, stot, req, st] = ['pxname', 'svname', 'stot', 'req_tot', 'status'].map(at);
  const hrsp = ['hrsp_1xx', 'hrsp_2xx', 'hrsp_3xx', 'hrsp_4xx', 'hrsp_5xx', 'hrsp_other'].map(at);
  for (const l of lines.slice(1)) {
    const f = l.split(',');
    const responses = hrsp.reduce((a, i) => a + (Number(f[i]) || 0), 0);
    out.set(`${f[px]}/${f[sv]}`, { sessions: Number(f[stot]) || 0, requests: f[sv] === 'FRONTEND' ? Number(f[req]) || 0 : responses, status: f[st] ?? '' });
  }
  return out;
}

/** Parses `show table`: key → http_req_cnt. */
export function parseTable(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/ key=(\S+) .*?http_req_cnt=(\d+)/g)) out.set(m[1], Number(m[2]));
  return out;
}
