// Benchmark: the balancer controllers' memory under hours of session churn. The lab sandwich with a shared
// Redis; a client makes UDP flows to the VIP's echo-udp service at a steady rate (each one answered, so each one is
// a session recorded and later destroyed); conntrack's UDP timeout is cut to 5 s so the tables turn over. Prints the
// RSS of both controllers, the session counts and the sync metrics every minute, and the start/end RSS.
//   node bench/dist/churn.js [MINUTES=60] [RATE=5000]
import { spawn, ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ECHO_PORT, inNs, Lab, spawnInNs, uniquePrefix } from '@fwlb/lab';

const MINUTES = Number(process.argv[2] ?? 60);
const RATE = Number(process.argv[3] ?? 5000);

function redisOnSocket(dir: string): Promise<{ proc: ChildProcess; url: string }> {
  const sock = join(dir, 'redis.sock');
  return new Promise((resolve, reject) => {
    const proc = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    proc.stdout!.on('data', (d) => {
      buf += d;
      if (/ready to accept connections/i.test(buf)) resolve({ proc, url: `unix:${sock}` });
    });
    proc.on('exit', (c) => reject(new Error(`redis-server exited ${c}`)));
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-churn-'));
  const redis = await redisOnSocket(dir);
  const prefix = uniquePrefix('bch');
  const lab = new Lab({ prefix, runDir: join(dir, 'lab'), sessionTable: redis.url });
  let gen: ChildProcess | null = null;
  try {
    lab.build();
    for (const h of lab.t.hosts) inNs(h.ns, ['sysctl', '-qw', 'net.netfilter.nf_conntrack_udp_timeout=5', 'net.netfilter.nf_conntrack_udp_timeout_stream=5']);
    await lab.startServers();
    await lab.startNodes();
    const rss = (role: 'outside' | 'inside') => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${lab.nodes[role]!.proc.pid}/status`, 'utf8'))![1]) / 1024;
    const sample = async (minute: number) => {
      const [o, i] = await Promise.all((['outside', 'inside'] as const).map((r) => lab.api(r, 'GET', '/sessions/count')));
      const m = o.body.sync;
      console.log(
        `${String(minute).padStart(6)}  ${rss('outside').toFixed(0).padStart(9)}  ${rss('inside').toFixed(0).padStart(8)}  ${String(o.body.redis).padStart(8)}  ${String(o.body.kernel).padStart(9)}  ${String(i.body.kernel).padStart(9)}  ${String(m.written).padStart(10)}  ${String(m.deleted + m.graced).padStart(10)}  ${String(m.cached).padStart(7)}  ${m.eventOverruns}/${m.resyncs}`,
      );
    };
    console.log(`churn: ${RATE} new UDP flows/s to ${lab.t.vip}:${ECHO_PORT} for ${MINUTES} min (udp conntrack timeout 5 s)`);
    console.log(`minute  ob RSS MB  ib RSS MB  Redis  ob kernel  ib kernel  ob written  ob ended  ob cache  overruns/resyncs`);
    const start = { o: rss('outside'), i: rss('inside') };
    await sample(0);
    gen = spawnInNs(lab.host('c1').ns, [
      process.execPath,
      join(__dirname, 'flow-generator.js'),
      String(RATE),
      String(MINUTES * 60),
      '10000',
      lab.t.vip,
      String(ECHO_PORT),
      '50000',
    ]);
    const exited = new Promise((r) => gen!.once('exit', r));
    for (let minute = 1; minute <= MINUTES; minute++) {
      await new Promise((r) => setTimeout(r, 60000));
      await sample(minute);
    }
    await exited;
    const end = { o: rss('outside'), i: rss('inside') };
    console.log(`RSS start → end: outside ${start.o.toFixed(0)} → ${end.o.toFixed(0)} MB, inside ${start.i.toFixed(0)} → ${end.i.toFixed(0)} MB`);
  } finally {
    gen?.kill('SIGKILL');
    lab.teardown();
    redis.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
