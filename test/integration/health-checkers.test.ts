// Integration: the five checker kinds against real servers in namespaces, with packet captures of the TCP kinds.
import { t } from 'tap';
import { ChildProcess } from 'node:child_process';
import { rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChecker, ProbeHelper, CheckSpec } from '@fwlb/health';
import { AGENT, deleteNs, inNs, linkedPair, spawnInNs, uniquePrefix, waitForLine } from '@fwlb/lab';

const SRV = '192.0.2.2';
const DARK = '192.0.2.3';
const SRV6 = '2001:db8::2';
const DARK6 = '2001:db8::3';

t.test('checker kinds', async (t) => {
  const p = uniquePrefix('hc');
  const cli = `${p}-cli`;
  const srv = `${p}-srv`;
  const procs: ChildProcess[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-hc-'));
  t.teardown(() => {
    for (const x of procs) x.kill('SIGKILL');
    deleteNs(cli);
    deleteNs(srv);
    rmSync(dir, { recursive: true, force: true });
  });
  linkedPair(p, { ns: cli, addrs: ['192.0.2.1/24'] }, { ns: srv, addrs: [`${SRV}/24`, `${DARK}/24`] });
  // IPv6 as well, usable at once (no duplicate address detection on a link the test alone builds).
  inNs(cli, ['ip', '-6', 'addr', 'add', '2001:db8::1/64', 'dev', 'eth0', 'nodad']);
  for (const a of [SRV6, DARK6]) inNs(srv, ['ip', '-6', 'addr', 'add', `${a}/64`, 'dev', 'eth0', 'nodad']);
  // The "dark" addresses drop ICMP echo; everything else answers.
  inNs(
    srv,
    ['nft', '-f', '-'],
    `table inet dark {
  chain in {
    type filter hook input priority 0;
    ip daddr ${DARK} icmp type echo-request drop
    ip6 daddr ${DARK6} icmpv6 type echo-request drop
  }
}
`,
  );
  const serve = async (args: string[]) => {
    const x = spawnInNs(srv, [process.execPath, AGENT, 'serve', ...args]);
    procs.push(x);
    await waitForLine(x, /^ready/, 10000, `serve ${args.join(' ')}`);
  };
  await serve(['--tcp', '9000', '--http', '9001']);
  await serve(['--http', '8080', '--http-body', 'all systems go: healthy-marker\n']);
  await serve(['--http', '8081', '--http-status', '500', '--http-body', 'broken healthy-marker\n']);
  await serve(['--http', '8082', '--http-body', 'a page without the marker\n']);
  // The checker runs inside the client namespace: start the helper there.
  const helper = ProbeHelper.start(undefined, cli);
  t.teardown(() => helper.close());

  const probe = (spec: CheckSpec, address = SRV) => createChecker(spec, helper).check({ address }, 500);
  const accepted = () =>
    JSON.parse(inNs(cli, [process.execPath, '-e', `fetch('http://${SRV}:9001/stats').then((r) => r.text()).then((s) => process.stdout.write(s))`]))
      .accepted as number;

  /** Capture the TCP flags of port 9000 on the client side while `f` runs. */
  const capture = async (name: string, f: () => Promise<unknown>): Promise<string[]> => {
    const file = join(dir, `${name}.pcap`);
    // Why --immediate-mode: without it this kernel's TPACKET_V3 blocks were never handed over ("0 packets captured").
    // Why -Z root: tcpdump otherwise drops to its own user, which cannot write into the test's 0700 directory.
    const td = spawnInNs(cli, ['tcpdump', '--immediate-mode', '-Z', 'root', '-i', 'eth0', '-nn', '-U', '-w', file, 'tcp port 9000']);
    procs.push(td);
    await waitForLine(td, /listening on/, 10000, 'tcpdump');
    await f();
    await new Promise((r) => setTimeout(r, 300));
    td.kill('SIGINT');
    await new Promise((r) => td.once('exit', r));
    return inNs(cli, ['tcpdump', '-nn', '-r', file])
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const dirn = l.includes(`192.0.2.1.`) && l.indexOf('192.0.2.1.') < l.indexOf('>') ? 'c>s' : 's>c';
        return `${dirn} ${/Flags \[([^\]]+)\]/.exec(l)![1]}`;
      });
  };

  await t.test('tcp-half-open: SYN, SYN/ACK, RST and nothing accepted', async (t) => {
    let res: any;
    const flags = await capture('half', async () => (res = await probe({ kind: 'tcp-half-open', port: 9000 })));
    t.equal(res.ok, true, `up: ${res.reason}`);
    t.same(flags, ['c>s S', 's>c S.', 'c>s R'], 'exact packet sequence');
    t.notOk(
      flags.some((f) => f === 'c>s .'),
      'the checker never ACKs',
    );
    t.equal(accepted(), 0, 'the server application accepted no connection');
  });

  await t.test('tcp: SYN, SYN/ACK, ACK, FIN', async (t) => {
    let res: any;
    const flags = await capture('full', async () => (res = await probe({ kind: 'tcp', port: 9000 })));
    t.equal(res.ok, true);
    t.same(flags.slice(0, 4), ['c>s S', 's>c S.', 'c>s .', 'c>s F.'], 'handshake then FIN from the checker');
    t.equal(accepted(), 1, 'the server accepted exactly this connection');
  });

  await t.test('tcp with close rst ends with RST instead of FIN', async (t) => {
    const flags = await capture('rst', () => probe({ kind: 'tcp', port: 9000, close: 'rst' }));
    t.same(flags.slice(0, 4), ['c>s S', 's>c S.', 'c>s .', 'c>s R.'], 'handshake then RST');
  });

  await t.test('refused and timeout carry their reason', async (t) => {
    const refused = await probe({ kind: 'tcp-half-open', port: 9999 });
    t.same([refused.ok, refused.reason], [false, 'refused']);
    const tcpRefused = await probe({ kind: 'tcp', port: 9999 });
    t.same([tcpRefused.ok, tcpRefused.reason], [false, 'refused']);
  });

  await t.test('http and http-content', async (t) => {
    const ok = await probe({ kind: 'http', port: 8080 });
    t.equal(ok.ok, true, 'HTTP 200 is up');
    t.ok((ok.latencyMs ?? -1) >= 0, 'latency measured');
    const e500 = await probe({ kind: 'http', port: 8081 });
    t.same([e500.ok, e500.reason], [false, 'status 500'], 'HTTP 500 is down for http');
    const plain = await probe({ kind: 'http', port: 8082 });
    t.equal(plain.ok, true, 'a 200 without the string is up for http');
    const mismatch = await probe({ kind: 'http-content', port: 8082, contains: 'healthy-marker' });
    t.same([mismatch.ok, mismatch.reason], [false, 'content mismatch'], 'and down for http-content');
    const match = await probe({ kind: 'http-content', port: 8080, contains: 'healthy-marker' });
    t.equal(match.ok, true);
    const regex = await probe({ kind: 'http-content', port: 8080, regex: 'systems\\s+go' });
    t.equal(regex.ok, true, 'regex match');
    const status500 = await probe({ kind: 'http-content', port: 8081, contains: 'healthy-marker' });
    t.same([status500.ok, status500.reason], [false, 'status 500'], 'content checks the status too');
  });

  await t.test('icmp: echo answered is up, a host dropping ICMP is down', async (t) => {
    const up = await probe({ kind: 'icmp' });
    t.equal(up.ok, true);
    const dark = await probe({ kind: 'icmp' }, DARK);
    t.same([dark.ok, dark.reason], [false, 'timeout']);
  });

  await t.test('IPv6: every kind against an IPv6 server, with the same answers', async (t) => {
    const echo = await probe({ kind: 'icmp' }, SRV6);
    t.same([echo.ok, echo.reason], [true, 'echo reply'], 'ICMPv6 echo answered is up');
    const dark = await probe({ kind: 'icmp' }, DARK6);
    t.same([dark.ok, dark.reason], [false, 'timeout'], 'a host dropping ICMPv6 echo is down');
    const spelled = await probe({ kind: 'icmp' }, '2001:DB8:0::2');
    t.equal(spelled.ok, true, 'another spelling of the address is the same target');
    const before = accepted();
    const half = await probe({ kind: 'tcp-half-open', port: 9000 }, SRV6);
    t.same([half.ok, half.reason], [true, 'syn-ack'], 'half-open up');
    t.equal(accepted(), before, 'and the server application accepted no connection');
    t.same(await probe({ kind: 'tcp', port: 9000 }, SRV6).then((r) => [r.ok, r.reason]), [true, 'connected'], 'tcp up');
    t.same(await probe({ kind: 'tcp-half-open', port: 9999 }, SRV6).then((r) => [r.ok, r.reason]), [false, 'refused'], 'half-open refused');
    t.same(await probe({ kind: 'tcp', port: 9999 }, SRV6).then((r) => [r.ok, r.reason]), [false, 'refused'], 'tcp refused');
    t.equal((await probe({ kind: 'http', port: 8080 }, SRV6)).ok, true, 'http up');
    t.same(await probe({ kind: 'http', port: 8081 }, SRV6).then((r) => [r.ok, r.reason]), [false, 'status 500'], 'http 500 down');
    t.equal((await probe({ kind: 'http-content', port: 8080, contains: 'healthy-marker' }, SRV6)).ok, true, 'http-content up');
    const unreach = await probe({ kind: 'icmp' }, '2001:db8:ffff::1');
    t.equal(unreach.ok, false, `no route: down (${unreach.reason})`);
  });
});
