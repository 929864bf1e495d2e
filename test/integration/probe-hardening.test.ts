// Integration: probes that cannot be fooled or crashed, and a supervised probe helper. Hostile packets
// come from a raw socket in a namespace (deploy/lab/tools/spoof.py); the helper runs in its own namespace.
import { t } from 'tap';
import { spawnSync, ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createChecker, HealthMonitor, ProbeHelper, probeHelperRunnable } from '@fwlb/health';
import { AGENT, deleteNs, inNs, linkedPair, REPO, SPOOF, spawnInNs, uniquePrefix, waitForLine } from '@fwlb/lab';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CLI6 = '2001:db8::1';
const SRV6 = '2001:db8::2';

async function pair(t: { teardown(f: () => void): void }, tag: string) {
  const p = uniquePrefix(tag);
  const cli = `${p}-cli`;
  const srv = `${p}-srv`;
  const procs: ChildProcess[] = [];
  t.teardown(() => {
    for (const x of procs) x.kill('SIGKILL');
    deleteNs(cli);
    deleteNs(srv);
  });
  linkedPair(p, { ns: cli, addrs: ['192.0.2.1/24'] }, { ns: srv, addrs: ['192.0.2.2/24'] });
  inNs(cli, ['ip', '-6', 'addr', 'add', `${CLI6}/64`, 'dev', 'eth0', 'nodad']);
  inNs(srv, ['ip', '-6', 'addr', 'add', `${SRV6}/64`, 'dev', 'eth0', 'nodad']);
  const bg = (ns: string, cmd: string[]) => {
    const x = spawnInNs(ns, cmd);
    procs.push(x);
    return new Promise<void>((r) => x.once('exit', () => r()));
  };
  return { cli, srv, procs, bg };
}

/** An echo server on the target side, a probe helper on the prober side, and the two probes the floods aim at. */
async function prober(t: { teardown(f: () => void): void }, p: Awaited<ReturnType<typeof pair>>) {
  const x = spawnInNs(p.srv, [process.execPath, AGENT, 'serve', '--tcp', '9000']);
  p.procs.push(x);
  await waitForLine(x, /^ready/, 10000, 'serve');
  const helper = ProbeHelper.start(undefined, p.cli);
  t.teardown(() => helper.close());
  return { helper, icmp: createChecker({ kind: 'icmp' }, helper), half: createChecker({ kind: 'tcp-half-open', port: 9000 }, helper) };
}

/**
 * The target answers nothing itself (no echo replies, its RSTs dropped); a spoofer answers every echo request with
 * the right id but the wrong sequence and payload, and every SYN with a SYN/ACK that acknowledges the wrong
 * sequence number, for 6 s.
 */
function silenceAndSpoof(srv: string, bg: (ns: string, cmd: string[]) => Promise<void>, family: 4 | 6): Promise<unknown> {
  inNs(srv, ['sysctl', '-qw', family === 4 ? 'net.ipv4.icmp_echo_ignore_all=1' : 'net.ipv6.icmp.echo_ignore_all=1']);
  inNs(srv, ['nft', 'add', 'table', 'inet', 'mute']);
  inNs(srv, ['nft', 'add', 'chain', 'inet', 'mute', 'out', '{ type filter hook output priority 0; }']);
  inNs(srv, ['nft', 'add', 'rule', 'inet', 'mute', 'out', 'tcp', 'flags', '&', 'rst', '==', 'rst', 'drop']);
  const v = family === 4 ? '' : '6';
  return Promise.all([bg(srv, ['/usr/bin/python3', SPOOF, `echo${v}-responder`, '6']), bg(srv, ['/usr/bin/python3', SPOOF, `synack${v}-responder`, '6'])]);
}

/** 20 back-to-back rounds of both probes of `address` while `flood` runs. */
async function probeDuring(c: Awaited<ReturnType<typeof prober>>, address: string, flood: Promise<unknown>) {
  const results: { ok: boolean; reason?: string }[] = [];
  const probing = (async () => {
    for (let i = 0; i < 20; i++) results.push(await c.icmp.check({ address }, 200), await c.half.check({ address }, 200));
  })();
  await Promise.all([flood, probing]);
  return results;
}

t.test('a flood of crafted ICMP errors and stray echo replies fails no probe and kills no worker', async (t) => {
  const p = await pair(t, 'ph');
  const { srv, bg } = p;
  const c = await prober(t, p);
  const { helper, icmp, half } = c;
  const flood = Promise.all([
    bg(srv, ['/usr/bin/python3', SPOOF, 'icmp-errors', '192.0.2.1', '10000']),
    bg(srv, ['/usr/bin/python3', SPOOF, 'echo-replies', '192.0.2.1', '10000']),
  ]);
  // Monitors with the lab's firewall timers (interval 200, response 100, retries 3), as a node runs them.
  const events: string[] = [];
  const monitors = [icmp, half].map((checker) => {
    const m = new HealthMonitor({
      name: checker.kind,
      checker,
      target: { address: '192.0.2.2' },
      timers: { interval: 200, response: 100, retries: 3, rise: 2 },
      onEvent: (n, ev) => events.push(`${n} ${ev.to}: ${ev.reason}`),
    });
    m.start();
    return m;
  });
  t.teardown(() => monitors.forEach((m) => m.stop()));
  const results = await probeDuring(c, '192.0.2.2', flood);
  await sleep(300);
  const failed = results.filter((r) => !r.ok);
  t.comment(
    `${results.length - failed.length} of ${results.length} back-to-back probes passed during 20,000 hostile packets (${JSON.stringify(failed.map((f) => f.reason))}); the monitors ran ${monitors.map((m) => m.checks).join(' and ')} checks`,
  );
  t.ok(failed.length <= 2, 'at most a stray timeout under the flood, never a wrong answer');
  t.ok(failed.every((f) => f.reason === 'timeout'));
  t.same(events, [], 'no monitor went down');
  t.ok(monitors.every((m) => m.checks > 0 && m.state === 'up'));
  t.equal(helper.status().restarts, 0, 'the helper never died');
});

t.test('an on-path spoofer cannot make a dead target look alive', async (t) => {
  const { cli, srv, bg } = await pair(t, 'pj');
  const spoofers = silenceAndSpoof(srv, bg, 4);
  await sleep(300);
  const helper = ProbeHelper.start(undefined, cli);
  t.teardown(() => helper.close());
  const icmp = createChecker({ kind: 'icmp' }, helper);
  const half = createChecker({ kind: 'tcp-half-open', port: 9999 }, helper);
  const res = [];
  for (let i = 0; i < 10; i++) res.push(await icmp.check({ address: '192.0.2.2' }, 150), await half.check({ address: '192.0.2.2' }, 150));
  t.same(
    res.filter((r) => r.ok),
    [],
    '0 of 20 spoofed answers were taken for the target',
  );
  t.ok(
    res.every((r) => r.reason === 'timeout'),
    'every probe timed out, as it should for a dead target',
  );
  await spoofers;
});

t.test('IPv6: a flood of crafted ICMPv6 errors and stray echo replies fails no probe; an on-path spoofer makes no dead target alive', async (t) => {
  const p = await pair(t, 'p6');
  const { srv, bg } = p;
  const c = await prober(t, p);
  const { helper, icmp } = c;
  const flood = Promise.all([
    bg(srv, ['/usr/bin/python3', SPOOF, 'icmp6-errors', CLI6, '10000', SRV6]),
    bg(srv, ['/usr/bin/python3', SPOOF, 'echo6-replies', CLI6, '10000']),
  ]);
  const results = await probeDuring(c, SRV6, flood);
  const failed = results.filter((r) => !r.ok);
  t.comment(
    `${results.length - failed.length} of ${results.length} back-to-back IPv6 probes passed during 20,000 hostile packets (${JSON.stringify(failed.map((f) => f.reason))})`,
  );
  t.ok(failed.length <= 2 && failed.every((f) => f.reason === 'timeout'), 'at most a stray timeout under the flood, never a wrong answer');
  t.equal(helper.status().restarts, 0, 'the helper never died');

  // Now the target goes silent and a spoofer answers for it, wrongly.
  const spoofers = silenceAndSpoof(srv, bg, 6);
  await sleep(300);
  const dead = createChecker({ kind: 'tcp-half-open', port: 9999 }, helper);
  const res = [];
  for (let i = 0; i < 10; i++) res.push(await icmp.check({ address: SRV6 }, 150), await dead.check({ address: SRV6 }, 150));
  t.same(
    res.filter((r) => r.ok),
    [],
    '0 of 20 spoofed IPv6 answers were taken for the target',
  );
  t.ok(
    res.every((r) => r.reason === 'timeout'),
    `every probe timed out (${JSON.stringify([...new Set(res.map((r) => r.reason))])})`,
  );
  await spoofers;
});

t.test('the probe helper killed 10 times: no monitor goes down, each restart within 1 s', async (t) => {
  const { cli } = await pair(t, 'pk');
  const helper = ProbeHelper.start(undefined, cli, { backoffMs: 50 });
  t.teardown(() => helper.close());
  const events: string[] = [];
  const mon = new HealthMonitor({
    name: 'twin',
    checker: createChecker({ kind: 'icmp' }, helper),
    target: { address: '192.0.2.2' },
    timers: { interval: 100, response: 50, retries: 2, rise: 1 },
    onEvent: (_n, ev) => events.push(`${ev.to}: ${ev.reason}`),
  });
  mon.start();
  t.teardown(() => mon.stop());
  await sleep(500);
  const restarts: number[] = [];
  for (let i = 0; i < 10; i++) {
    const pid = helper.pid!;
    const t0 = Date.now();
    process.kill(pid, 'SIGKILL');
    while (helper.pid === pid || !helper.status().up) {
      if (Date.now() - t0 > 5000) break;
      await sleep(10);
    }
    restarts.push(Date.now() - t0);
    await sleep(150);
  }
  t.comment(`restart times (ms): ${restarts.join(', ')}; checks ${mon.checks}, not run ${mon.unknownChecks}`);
  t.ok(
    restarts.every((ms) => ms < 1000),
    'back within 1 s every time',
  );
  t.same(events, [], 'the monitor never changed state');
  t.equal(mon.state, 'up');
  t.equal(helper.status().restarts, 10);
});

t.test('python missing: a clear warning from doctor, and unknown (not failed) checks', async (t) => {
  const r = await probeHelperRunnable('/nonexistent/python3');
  t.notOk(r.ok);
  t.match(r.detail, /cannot run \/nonexistent\/python3: .*ENOENT.*install python3/);
  const helper = ProbeHelper.start('/nonexistent/python3', undefined, { backoffMs: 50 });
  t.teardown(() => helper.close());
  const a = await createChecker({ kind: 'icmp' }, helper).check({ address: '127.0.0.1' }, 100);
  t.same({ ok: a.ok, unknown: a.unknown }, { ok: false, unknown: true }, `the check is unknown: ${a.reason}`);
  t.match(helper.status().lastError ?? '', /ENOENT/);
  const doc = spawnSync(process.execPath, [join(REPO, 'apps/balancer/dist/main.js'), 'doctor', '--config', join(REPO, 'deploy/configs/outside.json')], {
    encoding: 'utf8',
    env: { ...process.env, FWLB_PYTHON: '/nonexistent/python3' },
  });
  t.match(
    doc.stdout + doc.stderr,
    /^warn\s+probe helper \(python3\): cannot run \/nonexistent\/python3.*the node starts degraded, health checks cannot run/m,
    '`fwlb doctor` names what is missing, as a warning: the node would start degraded',
  );
});
