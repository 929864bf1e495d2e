// Unit: HTTP response judging for the http and http-content kinds, and the check spec schema.
import { t } from 'tap';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { judgeHttp, parseHttp, checkSpecSchema, httpRequest } from '@fwlb/health';

const resp = (status: number, body: string) => `HTTP/1.1 ${status} X\r\nContent-Type: text/plain\r\n\r\n${body}`;

const cases: [string, string, Parameters<typeof judgeHttp>[1], boolean, string][] = [
  ['200 default', resp(200, 'hi'), {}, true, 'status 200'],
  ['500 is down', resp(500, 'hi'), {}, false, 'status 500'],
  ['503 listed as expected', resp(503, ''), { expect: [200, 503] }, true, 'status 503'],
  ['contains', resp(200, 'all good here'), { contains: 'good' }, true, 'status 200'],
  ['missing string on 200', resp(200, 'nothing'), { contains: 'good' }, false, 'content mismatch'],
  ['regex', resp(200, 'version 4.2 ok'), { regex: 'version \\d+\\.\\d+' }, true, 'status 200'],
  ['regex mismatch', resp(200, 'version x'), { regex: 'version \\d+' }, false, 'content mismatch'],
  ['not HTTP', 'SSH-2.0-OpenSSH\r\n', {}, false, 'not an HTTP response'],
  ['empty', '', {}, false, 'empty response'],
  ['string beyond readMax is not seen', resp(200, 'x'.repeat(10)).slice(0, 50), { contains: 'y' }, false, 'content mismatch'],
];

for (const [name, raw, e, ok, reason] of cases) {
  t.test(name, async (t) => {
    const r = judgeHttp(raw, e, 3);
    t.equal(r.ok, ok);
    t.equal(r.reason, reason);
    t.equal(r.latencyMs, 3);
  });
}

t.test('parseHttp splits status and body', async (t) => {
  t.same(parseHttp('HTTP/1.0 404 Not Found\n\nbody'), { status: 404, body: 'body' });
});

t.test('request line carries method, path and Host', async (t) => {
  t.equal(
    httpRequest({ kind: 'http', method: 'HEAD', path: '/healthz', host: 'www.example' }, '192.0.2.1').split('\r\n').slice(0, 2).join('|'),
    'HEAD /healthz HTTP/1.0|Host: www.example',
  );
});

t.test('a check of a server that expects the PROXY protocol starts with a health check header', async (t) => {
  const v1 = httpRequest({ kind: 'http', path: '/', proxy: 'v1' }, '192.0.2.1');
  t.ok(v1.startsWith('PROXY UNKNOWN\r\nGET / HTTP/1.0\r\n'), 'v1: PROXY UNKNOWN, then the request');
  const v2 = Buffer.from(httpRequest({ kind: 'http', path: '/', proxy: 'v2' }, '192.0.2.1'), 'latin1');
  // The v2 signature, version 2 with the LOCAL command, family unspecified, no address bytes (the PROXY protocol specification, section 2.2).
  t.same(
    [...v2.subarray(0, 16)],
    [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00],
    'v2: the 16-byte LOCAL header',
  );
  t.equal(v2.subarray(16, 20).toString(), 'GET ', 'then the request');
  t.notOk(httpRequest({ kind: 'http' }, '192.0.2.1').startsWith('PROXY'), 'without it, no header');
});

t.test('check spec schema', async (t) => {
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  const v = ajv.compile(checkSpecSchema);
  t.ok(v({ kind: 'icmp', mark: 65536 }));
  t.ok(v({ kind: 'tcp', port: 80, close: 'rst' }));
  t.ok(v({ kind: 'http-content', port: 80, regex: 'ok' }));
  t.notOk(v({ kind: 'http-content', port: 80 }), 'content kind needs contains or regex');
  t.notOk(v({ kind: 'tcp', port: 0 }), 'port 0');
  t.notOk(v({ kind: 'icmp', colour: 'red' }), 'unknown key');
  t.notOk(v({ kind: 'smtp' }), 'unknown kind');
  t.notOk(v({ kind: 'http', path: 'no-slash' }), 'path must start with /');
});

t.test('a content regex cannot stall the event loop: it runs under a time limit', async (t) => {
  const { matchBounded, judgeHttp } = await import('@fwlb/health');
  const evil = /(a+)+$/;
  const page = 'a'.repeat(30) + '!';
  const t0 = Date.now();
  t.equal(matchBounded(evil, page, 20), 'timeout');
  t.ok(Date.now() - t0 < 1000, `stopped after ${Date.now() - t0} ms (unbounded it runs for minutes)`);
  t.equal(matchBounded(/healthy/, 'all healthy'), true);
  t.equal(matchBounded(/healthy/, 'broken'), false);
  const r = judgeHttp(`HTTP/1.1 200 OK\r\n\r\n${page}`, { regex: '(a+)+$' });
  t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'content regex ran longer than 20 ms' }, 'the check fails, the process lives');
});
