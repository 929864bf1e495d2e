// The REST client of fwlbctl: one request to a node's API over TCP or a unix socket; I/O layer of apps/fwlbctl.
import * as http from 'node:http';

export interface Target {
  /** `http://host:port` or `unix:/path/to/api.sock`. */
  api: string;
  token?: string;
}

export interface Answer {
  status: number;
  body: any;
}

export class CtlError extends Error {
  constructor(readonly code: string, message: string, readonly exit: number) {
    super(message);
    this.name = 'CtlError';
  }
}

export function request(t: Target, method: string, path: string, body?: unknown, timeoutMs = 10000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const where = t.api.startsWith('unix:') ? { socketPath: t.api.slice(5) } : (() => {
      const u = new URL(t.api);
      return { host: u.hostname, port: Number(u.port || 80) };
    })();
    const req = http.request({ ...where, method, path, timeout: timeoutMs, headers: { ...(data ? { 'content-type': 'application/json' } : {}), ...(t.token ? { authorization: `Bearer ${t.token}` } : {}) } }, (res) => {
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
    });
    req.on('timeout', () => req.destroy(new CtlError('FWLBCTL_TIMEOUT', `no answer from ${t.api} within ${timeoutMs} ms`, 4)));
    req.on('error', (e) => reject(e instanceof CtlError ? e : new CtlError('FWLBCTL_UNREACHABLE', `cannot reach ${t.api}: ${e.message}`, 4)));
    req.end(data);
  });
}
