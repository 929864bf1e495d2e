// http checker: method, path and Host header; up when the status is one of the expected codes (default 200).
import type { HttpSpec, HttpContentSpec } from './check-spec';
import type { Checker, CheckTarget } from './checker';
import { portOf, steerOf } from './checker';
import { judgeHttp, HttpExpectation, parseHttp } from './http-response';
import type { ContentMatcher } from './content-matcher';
import type { ProbeHelper } from './probe-helper';
import type { ProbeResult } from './timer';

/**
 * The PROXY protocol header of a health check (the connection is the checker's own, relayed for nobody): v1
 * `PROXY UNKNOWN`, v2 the signature and a LOCAL command with no address. Bytes below 0x80: the helper sends the
 * string as latin-1, byte for byte.
 */
export const PROXY_CHECK_HEADER = { v1: 'PROXY UNKNOWN\r\n', v2: '\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00' } as const;

export function httpRequest(spec: HttpSpec | HttpContentSpec, host: string): string {
  const head = spec.proxy ? PROXY_CHECK_HEADER[spec.proxy] : '';
  return `${head}${spec.method ?? 'GET'} ${spec.path ?? '/'} HTTP/1.0\r\nHost: ${spec.host ?? host}\r\nUser-Agent: fwlb-health\r\nConnection: close\r\n\r\n`;
}

/** Where an http-content check's regex runs, and whose budget it is charged to (a VIP, a firewall). */
export interface ContentScope {
  matcher: ContentMatcher;
  owner: string;
}

export async function httpProbe(
  spec: HttpSpec | HttpContentSpec,
  helper: ProbeHelper,
  t: CheckTarget,
  responseMs: number,
  e: HttpExpectation,
  content?: ContentScope,
): Promise<ProbeResult> {
  const a = await helper.request({
    op: 'connect',
    target: t.address,
    port: portOf(spec.port, t, spec.kind),
    timeoutMs: responseMs,
    // An IPv6 literal goes in brackets in a Host header (RFC 3986).
    send: httpRequest(spec, t.address.includes(':') ? `[${t.address}]` : t.address),
    readMax: spec.readMax ?? 65536,
    ...steerOf(spec),
  });
  if (!a.ok) return a;
  if (e.regex === undefined || !content) return judgeHttp(a.data ?? '', e, a.latencyMs);
  // Status and `contains` here; the regex in the matcher's worker, under the node's budget.
  const first = judgeHttp(a.data ?? '', { ...e, regex: undefined }, a.latencyMs);
  if (!first.ok) return first;
  const v = await content.matcher.match(content.owner, e.regex, parseHttp(a.data ?? '')!.body);
  return v.ok ? first : { ...v, latencyMs: a.latencyMs };
}

export class HttpChecker implements Checker {
  readonly kind = 'http' as const;
  constructor(
    private readonly spec: HttpSpec,
    private readonly helper: ProbeHelper,
  ) {}

  check(t: CheckTarget, responseMs: number) {
    return httpProbe(this.spec, this.helper, t, responseMs, { expect: this.spec.expect });
  }
}
