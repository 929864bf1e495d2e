// Benchmark: the balancer node's read API with 100,000 sessions in Redis (issues 12 and 15). The lab sandwich with a
// session table on a redis-server of its own; 100,000 session records written to it as another node would; then
// GET /status, /firewalls, /health, /sessions/count and /sessions?addr=… on the outside node, each at a fixed rate
// with an open-loop client (latency from the scheduled send). RSS of the node before and after. Figures only.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, ready, SessionRecord, SessionTable, DEFAULT_LAYOUT } from '@fwlb/session-table';
import { Lab, openLoop, percentile, startRedis, uniquePrefix } from '@fwlb/lab';

const N = Number(process.env.BENCH_SESSIONS ?? 100000);
const RATE = Number(process.env.BENCH_API_RATE ?? 1000);
const SECONDS = Number(process.env.BENCH_API_SECONDS ?? 10);
const f = (x: number) => (Number.isFinite(x) ? x.toFixed(x < 10 ? 2 : 0) : 'n/a');

function records(n: number): SessionRecord[] {
  const now = Date.now();
  return Array.from({ length: n }, (_, i) => ({
    outerAddr: `198.51.${100 + ((i >> 16) & 3)}.${(i >> 8) & 255}`,
    outerPort: 1024 + ((i & 0xffff) % 60000),
    innerAddr: '203.0.113.100',
    innerPort: 443,
    proto: 6,
    firewall: `fw${(i % 3) + 1}`,
    node: 'bench',
    firstSeen: now,
    expires: now + 600000,
  }));
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-bapi-'));
  const sock = join(dir, 'redis.sock');
  const redisProc = await startRedis(sock, dir);
  const prefix = uniquePrefix('ba');
  const lab = new Lab({ prefix, runDir: join(tmpdir(), `fwlb-bench-${prefix}`), sessionTable: `unix:${sock}` });
  try {
    lab.build();
    await lab.startServers();
    await lab.startNodes();
    const redis = await ready(connect({ url: `unix:${sock}`, node: 'bench' }));
    const table = new SessionTable(redis, 'bench', 'fwlb:', DEFAULT_LAYOUT);
    const t0 = Date.now();
    await table.put(records(N));
    console.log(`== balancer API with ${N.toLocaleString()} sessions in Redis (bench/api-latency.ts): written in ${Date.now() - t0} ms`);
    const pid = lab.nodes.outside!.proc.pid!;
    const rss0 = rssMb(pid);
    const socketPath = lab.socketPath('outside');
    const inRedis = async () => (await lab.api('outside', 'GET', '/sessions/count')).body?.redis;
    console.log(`  Redis holds ${await inRedis()} sessions (GET /sessions/count)`);
    // A query by address scans the table (HSCAN, decoded in the node): it runs at 20/s, not at the full rate.
    for (const [path, rate] of [
      ['/health', RATE],
      ['/status', RATE],
      ['/firewalls', RATE],
      ['/sessions/count', RATE],
      ['/sessions?firewall=fw2&limit=100', RATE],
      ['/sessions?addr=198.51.100.7&limit=100', Math.min(RATE, 20)],
    ] as const) {
      const r = await openLoop({ socketPath, path, rate, seconds: SECONDS });
      console.log(
        `  GET ${path} at ${rate}/s for ${SECONDS} s: p50 ${f(percentile(r.lat, 50))} ms, p99 ${f(percentile(r.lat, 99))} ms, max ${f(Math.max(...r.lat))} ms, ${r.errors} errors of ${rate * SECONDS}; Redis holds ${await inRedis()}`,
      );
    }
    console.log(`  RSS of the node ${f(rss0)} MB before, ${f(rssMb(pid))} MB after`);
    redis.disconnect();
  } finally {
    await lab.teardown();
    redisProc.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
