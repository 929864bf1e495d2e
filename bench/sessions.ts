// Benchmark: the session table's sync rate and lag at rising new-flow rates, and the recovery time of a
// node holding 100k sessions that lost its state; against redis-benchmark on the same Redis in the same run.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bucketOf, buildJoinedTable } from '@fwlb/flowhash';
import { SessionCache, pinElementOf, PIN_MAP_TYPE } from '@fwlb/balancer';
import { connect, ready, sessionId, SessionRecord, SessionTable, DEFAULT_LAYOUT, ENDED_MS } from '@fwlb/session-table';
import { deleteNs, inNs, run, startCluster, startRedis, uniquePrefix, REPO } from '@fwlb/lab';
import type { Cluster } from 'ioredis';

const RATES = (process.env.BENCH_RATES ?? '2000,5000,10000,20000').split(',').map(Number);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const N = Number(process.env.BENCH_SESSIONS ?? 100000);

function records(n: number, fw: (i: number) => string): SessionRecord[] {
  const now = Date.now();
  return Array.from({ length: n }, (_, i) => ({
    outerAddr: `198.51.${100 + ((i >> 16) & 3)}.${(i >> 8) & 255}`,
    outerPort: 1024 + ((i & 0xffff) % 60000),
    innerAddr: '203.0.113.100',
    innerPort: 443,
    proto: 6,
    firewall: fw(i),
    node: 'ob',
    firstSeen: now,
    expires: now + 600000,
  }));
}

/** Memory Redis uses for data, summed over the servers given (a cluster's masters). */
async function usedMemory(servers: { info(section: string): Promise<string> }[]): Promise<number> {
  let n = 0;
  for (const r of servers) n += Number(/used_memory:(\d+)/.exec(await r.info('memory'))?.[1] ?? 0);
  return n;
}

/**
 * The same sessions written by the same writer into one Redis and into a Redis Cluster of 3 masters and 3
 * replicas on loopback, in the same run: sessions/s and bytes per session.
 */
async function singleVsCluster(recs: SessionRecord[], singleRate: number): Promise<void> {
  const stops: (() => void)[] = [];
  try {
    const cluster = await startCluster({ teardown: (f) => stops.push(f) });
    const c = await ready(connect({ cluster: cluster.nodes, node: 'ob' }));
    const table = new SessionTable(c, 'ob', 'bc:', DEFAULT_LAYOUT);
    const masters = () => (c as Cluster).nodes('master');
    const before = await usedMemory(masters());
    const t0 = performance.now();
    await table.put(recs);
    const ms = performance.now() - t0;
    const bytes = ((await usedMemory(masters())) - before) / recs.length;
    console.log(
      `\nthe same ${recs.length} sessions on a 3-master cluster: ${Math.round((recs.length / ms) * 1000)} sessions/s (${(((recs.length / ms) * 1000) / singleRate).toFixed(2)} of the single server's, same writer), ${bytes.toFixed(0)} bytes per session over the masters`,
    );
    c.disconnect();
  } finally {
    for (const f of stops) f();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-bss-'));
  const sock = join(dir, 'redis.sock');
  const redisProc = await startRedis(sock, dir);
  const p = uniquePrefix('bss');
  const nss: string[] = [];
  try {
    // The ceiling: redis-benchmark SET on the same Redis, pipelined.
    const rb = spawnSync('redis-benchmark', ['-s', sock, '-t', 'set', '-n', '300000', '-P', '64', '-q', '-r', '1000000'], { encoding: 'utf8' });
    const ceiling = Number(/SET: ([\d.]+) requests per second/.exec(rb.stdout)?.[1]);
    console.log(`redis-benchmark SET -P 64: ${Math.round(ceiling)} requests/s (each session is an HSET in its bucket's hash)`);

    // The write path alone: SessionTable.put of N sessions in batches of 1,000.
    const redis = await ready(connect({ url: `unix:${sock}`, node: 'ob' }));
    const table = new SessionTable(redis, 'ob', 'bw:', DEFAULT_LAYOUT);
    const recs = records(N, (i) => `fw${(i % 3) + 1}`);
    const m0 = await usedMemory([redis]);
    let t0 = performance.now();
    await table.put(recs);
    const putMs = performance.now() - t0;
    const bytes = ((await usedMemory([redis])) - m0) / N;
    console.log(
      `SessionTable.put: ${N} sessions in ${putMs.toFixed(0)} ms = ${Math.round((N / putMs) * 1000)} sessions/s (${(((N / putMs) * 1000) / ceiling).toFixed(2)} of the SET ceiling), ${bytes.toFixed(0)} bytes per session`,
    );

    // The ended sessions' marks: each end leaves its firewall in its bucket for ENDED_MS (a client that reuses the
    // tuple on another firewall is announced). Their cost is Redis memory per session ended in that window.
    t0 = performance.now();
    const gone = await table.delete(recs.map((r) => ({ id: sessionId(r), firewall: r.firewall })));
    const delMs = performance.now() - t0;
    const markBytes = ((await usedMemory([redis])) - m0) / N;
    console.log(
      `SessionTable.delete: ${gone} ends in ${delMs.toFixed(0)} ms = ${Math.round((N / delMs) * 1000)} ends/s; ${markBytes.toFixed(0)} bytes per ended mark (kept ${ENDED_MS / 1000} s: ${((markBytes * 50000 * ENDED_MS) / 1000 / 1e6).toFixed(0)} MB at 50,000 ends/s)`,
    );

    // Sync rate and lag from conntrack NEW to written, at rising rates, in a namespace with conntrack on.
    console.log(`\nrate (flows/s)  generated/s  events  overruns  written/s  written/offered  lag p50  lag p99`);
    for (const [i, rate] of RATES.entries()) {
      const ns = `${p}-${i}`;
      nss.push(ns);
      run(['ip', 'netns', 'add', ns]);
      inNs(ns, ['ip', 'link', 'set', 'lo', 'up']);
      inNs(ns, ['nft', 'add', 'table', 'ip', 'b']);
      inNs(ns, ['nft', 'add', 'chain', 'ip', 'b', 'out', '{ type filter hook output priority 0; }']);
      inNs(ns, ['nft', 'add', 'rule', 'ip', 'b', 'out', 'ct', 'state', 'new', 'ct', 'mark', 'set', String(0x10001)]);
      const w = spawnSync(
        'ip',
        ['netns', 'exec', ns, process.execPath, join(__dirname, 'sessions-worker.js'), `unix:${sock}`, String(rate), String(SECONDS), '2000'],
        { encoding: 'utf8', timeout: 120000 },
      );
      const line = w.stdout.trim().split('\n').pop() ?? '';
      let r: any;
      try {
        r = JSON.parse(line);
      } catch {
        console.log(`${rate}: worker failed: ${w.stderr.slice(0, 300)}`);
        continue;
      }
      console.log(
        `${String(rate).padStart(14)}  ${String(r.genRate).padStart(11)}  ${String(r.events).padStart(6)}  ${String(r.overruns).padStart(8)}  ${String(r.writeRate).padStart(9)}  ${`${r.written}/${r.offered}`.padStart(15)}  ${r.p50.toFixed(0).padStart(4)} ms  ${r.p99.toFixed(0).padStart(4)} ms`,
      );
      deleteNs(ns);
    }

    // Recovery: a node that lost its state loads N sessions, computes its pins and loads them into the kernel.
    // The sessions were recorded while fw2 was out of the table; with fw2 back, those now in fw2's buckets are pins.
    const ids = ['fw1', 'fw2', 'fw3'];
    const seed = 0x5eed1234;
    const M = 251;
    const t1 = buildJoinedTable(ids, M, ['fw1', 'fw3']);
    const t0full = buildJoinedTable(ids, M);
    const rtable = new SessionTable(redis, 'ob', 'br:', { seed, buckets: M });
    // Each session on the firewall the table of that time (fw2 out) gave it.
    const sessions = records(N, () => '').map((r) => ({ ...r, firewall: t1.owner[bucketOf(r, seed, M)]! }));
    await rtable.put(sessions);
    const ns = `${p}-r`;
    nss.push(ns);
    run(['ip', 'netns', 'add', ns]);
    const marks = new Map(ids.map((id, i) => [id, 0x10000 + i]));
    t0 = performance.now();
    const loaded = await rtable.all();
    const tLoad = performance.now() - t0;
    const cache = new SessionCache(seed, M);
    for (const r of loaded) cache.put(r);
    const tCache = performance.now() - t0;
    const pins = cache.pins(t0full, marks, new Set(ids));
    const tPins = performance.now() - t0;
    // Applied in the namespace as the reconciler would: one transaction with the pins map.
    const cmds = [
      { add: { table: { family: 'inet', name: 'fwlb' } } },
      { add: { map: { family: 'inet', table: 'fwlb', name: 'pins', type: PIN_MAP_TYPE, map: 'mark' } } },
      { add: { element: { family: 'inet', table: 'fwlb', name: 'pins', elem: [...pins].map(([id, mark]) => pinElementOf(id, mark)) } } },
    ];
    const applied = spawnSync(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '-e',
        `require(${JSON.stringify(join(REPO, 'libs/nft/dist/index.js'))}).nftCli().apply(JSON.parse(require('fs').readFileSync(0,'utf8'))).then(()=>process.exit(0),(e)=>{console.error(e.message);process.exit(1)})`,
      ],
      { input: JSON.stringify(cmds), encoding: 'utf8', maxBuffer: 1 << 28 },
    );
    const tApply = performance.now() - t0;
    if (applied.status !== 0) throw new Error(`pins apply failed: ${applied.stderr}`);
    const inKernel = (inNs(ns, ['nft', 'list', 'map', 'inet', 'fwlb', 'pins']).match(/ : 0x/g) ?? []).length;
    console.log(
      `\nrecovery of a node holding ${N} sessions: load from Redis ${tLoad.toFixed(0)} ms, cache ${(tCache - tLoad).toFixed(0)} ms, pins ${(tPins - tCache).toFixed(0)} ms (${pins.size} pins), nft apply ${(tApply - tPins).toFixed(0)} ms; total ${tApply.toFixed(0)} ms (goal <= 2000 ms); ${inKernel} pins in the kernel`,
    );
    redis.disconnect();
    await singleVsCluster(recs, (N / putMs) * 1000);
  } finally {
    for (const n of nss) deleteNs(n);
    redisProc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
