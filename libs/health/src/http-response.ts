// Parses a raw HTTP/1.x response (status, body) and judges it for the http and http-content kinds; pure layer of libs/health.
import type { ProbeResult } from './timer';
import { compiledContentRegex, matchBounded, REGEX_LIMIT_MS } from './content-match';

export interface ParsedHttp {
  status: number;
  body: string;
}

export function parseHttp(raw: string): ParsedHttp | null {
  const m = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r?\n/.exec(raw);
  if (!m) return null;
  const split = raw.search(/\r?\n\r?\n/);
  const body = split < 0 ? '' : raw.slice(split).replace(/^\r?\n\r?\n/, '');
  return { status: Number(m[1]), body };
}

export interface HttpExpectation {
  expect?: number[];
  contains?: string;
  regex?: string;
}

/** Up only when the status is expected and, for content checks, the body (as read, at most readMax bytes) matches. */
export function judgeHttp(raw: string, e: HttpExpectation, latencyMs?: number): ProbeResult {
  const r = parseHttp(raw);
  if (!r) return { ok: false, reason: raw ? 'not an HTTP response' : 'empty response', latencyMs };
  const expect = e.expect ?? [200];
  if (!expect.includes(r.status)) return { ok: false, reason: `status ${r.status}`, latencyMs };
  if (e.contains !== undefined && !r.body.includes(e.contains)) return { ok: false, reason: 'content mismatch', latencyMs };
  if (e.regex !== undefined) {
    const m = matchBounded(compiledContentRegex(e.regex), r.body);
    if (m === 'timeout') return { ok: false, reason: `content regex ran longer than ${REGEX_LIMIT_MS} ms`, latencyMs };
    if (!m) return { ok: false, reason: 'content mismatch', latencyMs };
  }
  return { ok: true, reason: `status ${r.status}`, latencyMs };
}
