// The REST client of fwlbctl: one request to a node's API over TCP or a unix socket; I/O layer of apps/fwlbctl.
import * as http from 'node:http';
import * as https from 'node:https';

export interface Target {
  /** `http://host:port`, `https://host:port` or `unix:/path/to/api.sock`. */
  api: string;
  token?: string;
  /** PEM of the CA that signed an https API's certificate (else the system's CAs). */
  ca?: string;
}

/**
 * Exit codes, the Nagios plugin convention, the same for every command: 0 OK; 1 WARNING, the node answered but
 * refused or is degraded; 2 CRITICAL, no answer; 3 UNKNOWN, the command line is wrong.
 */
export const EXIT = { ok: 0, warning: 1, critical: 2, unknown: 3 } as const;

export interface Answer {
  status: number;
  body: any;
}

export class CtlError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly exit: number,
  ) {
    super(message);
    this.name = 'CtlError';
  }
}

/** Whether an http:// API is on this host (127.0.0.0/8, ::1, localhost): a token may go there in clear. */
function onThisHost(api: string): boolean {
  const host = new URL(api).hostname.replace(/^\[(.*)\]$/, '$1');
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

export function request(t: Target, method: string, path: string, body?: unknown, timeoutMs = 10000): Promise<Answer> {
  // Reads need no token, so none is sent with them; a mutation's token never crosses the network in clear: refused
  // before anything is sent.
  const token = method === 'GET' ? undefined : t.token;
  if (token && t.api.startsWith('http:') && !onThisHost(t.api))
    return Promise.reject(
      new CtlError(
        'FWLBCTL_CLEAR_TOKEN',
        `refusing to send the token in clear to ${t.api}: use https:// (the node's api.tls) and --ca, or a unix socket`,
        EXIT.unknown,
      ),
    );
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const tls = t.api.startsWith('https:');
    const where = t.api.startsWith('unix:')
      ? { socketPath: t.api.slice(5) }
      : (() => {
          const u = new URL(t.api);
          return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port || (tls ? 443 : 80)), ...(tls && t.ca ? { ca: t.ca } : {}) };
        })();
    const req = (tls ? https : http).request(
      {
        ...where,
        method,
        path,
        timeout: timeoutMs,
        headers: { ...(data ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      },
      (res) => {
        let s = '';
        res.on('data', (d) => (s += d));
        res.on('end', () => {
          let parsed: unknown = s;
          try {
            parsed = s ? JSON.parse(s) : null;
          } catch {
            /* text (e.g. /metrics) */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new CtlError('FWLBCTL_TIMEOUT', `no answer from ${t.api} within ${timeoutMs} ms`, EXIT.critical)));
    req.on('error', (e) => reject(e instanceof CtlError ? e : new CtlError('FWLBCTL_UNREACHABLE', `cannot reach ${t.api}: ${e.message}`, EXIT.critical)));
    req.end(data);
  });
}
