// Benchmark: the SLB control plane at scale, one fwlb-slb process in a namespace of its own (ScaleSlb:
// members are local addresses, so their health checks pass). Reproduces the issue's table on this machine:
//   start from a config of N VIPs × 8 members (fresh kernel) and a restart with nothing to change: until the API
//   answers, until the kernel state is adopted, and the nft transactions sent;
//   POST /vips one at a time on an empty SLB, then the member POSTs (p50/p99 by stage, total);
//   PATCH drain with N VIPs loaded: the response (sent after the kernel committed) and the rule event seen by
//   `nft monitor`;
//   GET latency with an open-loop client at a fixed rate (latency from the scheduled send, so a stall is counted);
//   idle CPU and RSS of the process;
//   health of 8,000 members that are up, with the default timers (interval 1 s): false DOWNs, unknown checks, CPU.
// Prints figures only; nothing here is pass/fail.
import { readFileSync, writeFileSync } from 'node:fs';
import { openLoop, percentile, processUsage as usage, spawnInNs, uniquePrefix, ProcessUsage, ScaleSlb, scaleVips, SCALE_TOKEN } from '@fwlb/lab';

const N = Number(process.env.BENCH_SLB_VIPS ?? 1000);
const MEMBER_POSTS = Number(process.env.BENCH_SLB_MEMBER_POSTS ?? 8000);
const RATE = Number(process.env.BENCH_SLB_GET_RATE ?? 1000);
const GET_SECONDS = Number(process.env.BENCH_SLB_GET_SECONDS ?? 10);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const pct = percentile;
const f = (x: number) => (Number.isFinite(x) ? x.toFixed(x < 10 ? 2 : 0) : 'n/a');
const line = (label: string, xs: number[], goal = '') =>
  console.log(`  ${label}: n=${xs.length} p50 ${f(pct(xs, 50))} ms, p99 ${f(pct(xs, 99))} ms, max ${f(Math.max(...xs))} ms${goal ? ` (goal: ${goal})` : ''}`);

const cpuLine = (a: ProcessUsage, b: ProcessUsage, ms: number) =>
  `controller ${f(((b.cpuMs - a.cpuMs) / ms) * 100)} %, nft runs ${f(((b.childMs - a.childMs) / ms) * 100)} %, probe helper ${f(((b.helperMs - a.helperMs) / ms) * 100)} % of a core`;

/** The pid of the node process (ip netns exec → env → node keep one pid through exec). */
const pidOf = (s: ScaleSlb) => s.proc!.pid!;

async function startPhase(s: ScaleSlb, label: string, goal: string) {
  const before = s.nftRuns().length;
  const sent = s.transactionsMark();
  const t0 = Date.now();
  const api = await s.start();
  const adopted = await s.adopted(t0);
  const runs = s.nftRuns().slice(before);
  console.log(
    `  ${label}: API answers after ${api} ms, kernel adopted after ${adopted} ms, ${s.transactionsSince(sent).length} nft transactions (${runs.length} nft runs) (goal: adopted ${goal})`,
  );
}

async function controlPlane() {
  console.log(`== SLB control plane: ${N} VIPs × 8 members (bench/slb-control.ts)`);
  const s = new ScaleSlb(uniquePrefix('bs'), { vips: N, members: 8 });
  try {
    s.setup();
    await startPhase(s, 'start from the config, fresh kernel', 'under 1,000 ms');
    const pid = pidOf(s);
    const u0 = usage(pid);
    console.log(`  RSS after start: ${f(u0.rssMb)} MB`);
    await s.stop();
    await startPhase(s, 'restart, nothing to change', 'under 500 ms');

    // PATCH drain, one VIP at a time, with the rule event from nft monitor.
    let text = '';
    const mon = spawnInNs(s.ns, ['nft', 'monitor', 'rules']);
    mon.stdout!.on('data', (d: Buffer) => (text += d));
    let monErr = '';
    mon.stderr!.on('data', (d: Buffer) => (monErr += d));
    mon.on('exit', (c) => (monErr += ` [exit ${c}]`));
    // nft monitor prints nothing when it is ready: a change it reports, to a VIP the loop leaves alone, shows it is.
    const warm = N - 1;
    const warmMember = `10.50.${warm % 250}.10:${8000 + Math.floor(warm / 250)}`;
    for (let t0 = performance.now(); !text.includes(` v_v${warm} `) && performance.now() - t0 < 10000; await sleep(200))
      await s
        .api('PATCH', `/vips/v${warm}/members/${warmMember}`, { state: 'drain' })
        .then(() => s.api('PATCH', `/vips/v${warm}/members/${warmMember}`, { state: 'enabled' }));
    const resp: number[] = [];
    const seen: number[] = [];
    const missed: string[] = [];
    for (let i = 0; i < 100; i++) {
      const v = (Math.floor(i / 2) * 7) % N; // drain, then enable the same member again
      const member = `10.50.${v % 250}.10:${8000 + Math.floor(v / 250)}`;
      const mark = text.length;
      const t0 = performance.now();
      const r = await s.api('PATCH', `/vips/v${v}/members/${member}`, { state: i % 2 ? 'enabled' : 'drain' });
      resp.push(r.ms);
      while (!text.slice(mark).includes(` v_v${v} `) && performance.now() - t0 < 2000) await sleep(1);
      seen.push(performance.now() - t0);
      if (seen[i] >= 2000)
        missed.push(
          `#${i} v${v} ${i % 2 ? 'enabled' : 'drain'} (${r.status}, ${text.slice(mark).includes(` v_v${v} `) ? 'seen at the deadline' : 'not seen'})`,
        );
    }
    mon.kill();
    console.log(`  PATCH a member (drain/enable) with ${N} VIPs loaded:`);
    line('response (sent after the kernel committed)', resp, 'p99 under 50 ms');
    line('the VIP’s rule event seen by nft monitor (1 ms polling)', seen, 'under 50 ms');
    if (missed.length) console.log(`  no rule event within 2 s for: ${missed.join(', ')}; nft monitor: ${monErr.trim() || 'running, nothing on stderr'}`);

    // Reads.
    const pidNow = pidOf(s);
    const rss0 = usage(pidNow).rssMb;
    for (const path of ['/health', '/status', '/vips/v1', '/vips/v1/members', '/vips']) {
      const rate = path === '/vips' ? Math.min(RATE, 100) : RATE;
      const r = await openLoop({ socketPath: s.socket, path, rate, seconds: GET_SECONDS, headers: { authorization: `Bearer ${SCALE_TOKEN}` } });
      line(`GET ${path} at ${rate}/s open loop for ${GET_SECONDS} s (${r.errors} errors)`, r.lat);
    }
    console.log(`  RSS before the GETs ${f(rss0)} MB, after ${f(usage(pidNow).rssMb)} MB`);

    // Idle CPU: counters every 2 s and a resync every 10 s (the defaults), health checks every 30 s.
    await s.stop();
    const idle = new ScaleSlb(uniquePrefix('bi'), { vips: N, members: 8, resyncSeconds: 10, countersSeconds: 2 });
    try {
      idle.setup();
      const t0 = Date.now();
      await idle.start();
      await idle.adopted(t0);
      await sleep(5000);
      const a = usage(pidOf(idle));
      await sleep(30000);
      const b = usage(pidOf(idle));
      console.log(
        `  idle CPU over 30 s (resync 10 s, counters 2 s, checks every 30 s): ${cpuLine(a, b, 30000)}; RSS ${f(a.rssMb)} → ${f(b.rssMb)} MB (goal: controller and probe helper under 2 % each)`,
      );
    } finally {
      await idle.cleanup();
    }
  } finally {
    await s.cleanup();
  }
}

async function apiChanges() {
  console.log(`== SLB API changes on an empty SLB: ${N} POST /vips, then ${MEMBER_POSTS} member POSTs (bench/slb-control.ts)`);
  const s = new ScaleSlb(uniquePrefix('bp'), { vips: 0, members: 0 });
  try {
    s.setup();
    const t0 = Date.now();
    await s.start();
    await s.adopted(t0);
    const vips = scaleVips({ vips: N, members: 8 });
    const post: number[] = [];
    const start = Date.now();
    let failed = 0;
    for (const v of vips) {
      const r = await s.api('POST', '/vips', { ...v, members: [] });
      if (r.status !== 201) failed++;
      post.push(r.ms);
    }
    const stages = [100, 300, 500, N].filter((x, i, a) => x <= N && a.indexOf(x) === i);
    for (const k of stages)
      line(
        `POST /vips, VIPs ${k === stages[0] ? 1 : stages[stages.indexOf(k) - 1] + 1}-${k}`,
        post.slice(k === stages[0] ? 0 : stages[stages.indexOf(k) - 1], k),
        'p99 under 50 ms',
      );
    console.log(`  ${N} POST /vips in ${((Date.now() - start) / 1000).toFixed(1)} s, ${failed} failed`);
    const mpost: number[] = [];
    const m0 = Date.now();
    failed = 0;
    for (let i = 0; i < MEMBER_POSTS; i++) {
      const v = vips[i % N];
      const m = v.members[Math.floor(i / N) % 8];
      const r = await s.api('POST', `/vips/${v.id}/members`, m);
      if (r.status !== 201) failed++;
      mpost.push(r.ms);
    }
    line(`member POSTs (${N} VIPs)`, mpost, 'p99 under 50 ms');
    console.log(`  ${MEMBER_POSTS} member POSTs in ${((Date.now() - m0) / 1000).toFixed(1)} s, ${failed} failed`);
  } finally {
    await s.cleanup();
  }
}

async function healthAtScale(interval: number) {
  const members = 8;
  console.log(
    `== health of ${N * members} members that are up, interval ${interval} ms, response ${Math.min(500, interval / 2)} ms, retries 3 (${interval === 1000 ? 'the default timers' : 'more checks than the helper can run'}) (bench/slb-control.ts)`,
  );
  const s = new ScaleSlb(uniquePrefix('bh'), { vips: N, members, interval });
  try {
    s.setup();
    // Default timers (the config's VIPs say interval 1000 via ScaleSlb's timers; response and retries as the defaults).
    const doc = JSON.parse(readFileSync(s.configPath, 'utf8'));
    for (const v of doc.vips) v.timers = { interval, response: Math.min(500, interval / 2), retries: 3, deadInterval: 2000, rise: 2 };
    // Past the node's check budget on purpose: this measures what the helper does when asked for too much.
    doc.checkBudget = { checksPerSecond: 1_000_000 };
    writeFileSync(s.configPath, JSON.stringify(doc));
    const t0 = Date.now();
    await s.start();
    await s.adopted(t0);
    const pid = pidOf(s);
    const a = usage(pid);
    const seconds = Number(process.env.BENCH_SLB_HEALTH_SECONDS ?? 60);
    let down = 0;
    let minUp = Infinity;
    for (let t = 0; t < seconds; t += 5) {
      await sleep(5000);
      const vips = (await s.api('GET', '/vips')).body as any[];
      const up = vips.reduce((n, v) => n + v.members.filter((m: any) => m.health.up).length, 0);
      minUp = Math.min(minUp, up);
      down = Math.max(down, N * members - up);
    }
    const b = usage(pid);
    const downs = s.log.filter((l) => l.includes(' DOWN: ')).length;
    const m = ((await s.api('GET', '/metrics')).body as string).toString();
    const checks = m
      .split('\n')
      .filter((l) => /^fwlb_member_checks_total/.test(l))
      .join('; ');
    console.log(`  over ${seconds} s: at most ${down} of ${N * members} members not up at a sample (lowest up ${minUp}), ${downs} DOWN transitions logged`);
    console.log(`  CPU: ${cpuLine(a, b, seconds * 1000)}; ${Math.round((N * members * 1000) / interval).toLocaleString()} checks/s wanted; ${checks}`);
  } finally {
    await s.cleanup();
  }
}

/** GET /status and GET /metrics with the request log on (info) and off (warn), interleaved rounds. */
async function logging() {
  const rounds = Number(process.env.BENCH_LOG_ROUNDS ?? 2);
  console.log(`== API latency with the request log on and off, ${N} VIPs × 8 members, ${rounds} interleaved rounds (bench/slb-control.ts)`);
  const res: Record<string, Record<string, { p50: number[]; p99: number[]; bytes: number; first: number[] }>> = { info: {}, warn: {} };
  const prev = process.env.FWLB_LOG_LEVEL;
  try {
    for (let r = 0; r < rounds; r++) {
      for (const level of ['info', 'warn']) {
        process.env.FWLB_LOG_LEVEL = level;
        const s = new ScaleSlb(uniquePrefix('bl'), { vips: N, members: 8 });
        try {
          s.setup();
          const t0 = Date.now();
          await s.start();
          await s.adopted(t0);
          for (const [path, rate] of [
            ['/status', RATE],
            ['/metrics', RATE],
          ] as const) {
            // /metrics as Prometheus asks for it: gzip accepted.
            const headers: Record<string, string> = path === '/metrics' ? { 'accept-encoding': 'gzip' } : {};
            // The first request after a start renders what later ones get from the cache (a large registry is
            // rendered once a second in the background): timed on its own, as Prometheus' first scrape would be.
            const t1 = performance.now();
            await s.api('GET', path);
            const e = (res[level][`${path} at ${rate}/s`] ??= { p50: [], p99: [], bytes: 0, first: [] });
            e.first.push(performance.now() - t1);
            const o = await openLoop({ socketPath: s.socket, path, rate, seconds: GET_SECONDS, headers });
            e.p50.push(pct(o.lat, 50));
            e.p99.push(pct(o.lat, 99));
            const body = (await s.api('GET', path)).body;
            e.bytes = Buffer.byteLength(typeof body === 'string' ? body : JSON.stringify(body));
          }
        } finally {
          await s.cleanup();
        }
      }
    }
  } finally {
    if (prev === undefined) delete process.env.FWLB_LOG_LEVEL;
    else process.env.FWLB_LOG_LEVEL = prev;
  }
  const med = (xs: number[]) => pct(xs, 50);
  for (const k of Object.keys(res.info)) {
    const on = res.info[k];
    const off = res.warn[k];
    console.log(
      `  GET ${k} (${on.bytes} bytes): log on p50 ${f(med(on.p50))} / p99 ${f(med(on.p99))} ms, off p50 ${f(med(off.p50))} / p99 ${f(med(off.p99))} ms, on/off p99 ${f(med(on.p99) / med(off.p99))} (rounds' p99 on: ${on.p99.map(f).join(', ')}; off: ${off.p99.map(f).join(', ')}) (goal: p99 under 5 ms with the log on); the first request after a start ${f(med([...on.first, ...off.first]))} ms`,
    );
  }
}

/**
 * The helper's check capacity: 1,000 VIPs × 8 ICMP members that are up, the interval stepped so that the checks
 * asked for go up; per step, the checks' own latency (each member's last check, as the helper measured it) and
 * the share answered unknown. The capacity is the first rate at which the median latency is twice the first step's;
 * the default check budget (checkBudget.checksPerSecond) must sit below it.
 */
async function capacity() {
  const members = 8;
  const rates = (process.env.BENCH_CAPACITY_RATES ?? '2000,4000,8000,12000,16000,24000,32000').split(',').map(Number);
  const seconds = Number(process.env.BENCH_CAPACITY_SECONDS ?? 15);
  console.log(`== check capacity: ${N * members} ICMP members that are up, ${seconds} s a step (bench/slb-control.ts capacity)`);
  let base = NaN;
  let capacityAt: number | null = null;
  for (const rate of rates) {
    const interval = Math.round((N * members * 1000) / rate);
    const s = new ScaleSlb(uniquePrefix('bk'), { vips: N, members, interval });
    try {
      s.setup();
      const doc = JSON.parse(readFileSync(s.configPath, 'utf8'));
      for (const v of doc.vips) v.timers = { interval, response: Math.min(1000, Math.floor(interval / 2)), retries: 3, deadInterval: interval, rise: 1 };
      doc.checkBudget = { checksPerSecond: 1_000_000 };
      writeFileSync(s.configPath, JSON.stringify(doc));
      const t0 = Date.now();
      await s.start();
      await s.adopted(t0);
      // One interval to spread the first checks, then the measured part.
      await sleep(Math.max(2000, interval * 2));
      const m0 = ((await s.api('GET', '/metrics')).body as string).toString();
      await sleep(seconds * 1000);
      const m1 = ((await s.api('GET', '/metrics')).body as string).toString();
      const count = (m: string, result: string) => Number(new RegExp(`^fwlb_member_checks_total\\{result="${result}"\\} (\\d+)`, 'm').exec(m)?.[1] ?? 0);
      const done = ['ok', 'failed', 'unknown'].map((r) => count(m1, r) - count(m0, r));
      const vips = (await s.api('GET', '/vips')).body as any[];
      const lat = vips.flatMap((v) => v.members.map((x: any) => x.health.lastCheck?.latencyMs).filter((x: unknown) => typeof x === 'number'));
      const p50 = pct(lat, 50);
      if (Number.isNaN(base)) base = p50;
      if (capacityAt === null && p50 >= 2 * base) capacityAt = rate;
      console.log(
        `  ${rate.toLocaleString()} checks/s asked (interval ${interval} ms): ran ${Math.round((done[0] + done[1] + done[2]) / seconds).toLocaleString()}/s (ok ${done[0]}, failed ${done[1]}, unknown ${done[2]}); check latency p50 ${f(p50)} ms, p99 ${f(pct(lat, 99))} ms (${f(p50 / base)} × the first step)`,
      );
    } finally {
      await s.cleanup();
    }
  }
  console.log(
    `  capacity (median latency twice the first step's): ${capacityAt === null ? `above ${rates[rates.length - 1].toLocaleString()} checks/s` : `${capacityAt.toLocaleString()} checks/s`}`,
  );
}

(async () => {
  const which = process.argv[2];
  if (which === 'capacity') await capacity();
  if (!which || which === 'logging') await logging();
  if (!which || which === 'control') await controlPlane();
  if (!which || which === 'changes') await apiChanges();
  if (!which || which === 'health') {
    await healthAtScale(1000);
    await healthAtScale(Number(process.env.BENCH_SLB_OVERLOAD_INTERVAL ?? 200));
  }
})().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
