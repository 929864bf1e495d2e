// Load generators the benchmarks share: iperf3 (throughput, with its server behind a VIP of its own) and wrk (new
// connections/s), each surviving a bad run (reported, retried or left out as NaN, never a crash that loses a run).
import { ChildProcess, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { Lab, spawnInNs, spread, WEB_PORT } from '@fwlb/lab';

export const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);

/**
 * iperf3's client on CPU 0 and its server on CPU 1 (`-A 0,1`). Why: unpinned, a 3 s TCP run on 2 cores landed in
 * one of two regimes, about 10.5 or 14 Gbit/s, on any path with conntrack (the slow one with four equal streams and
 * almost no retransmits), by where the scheduler put the two processes, not by the path. BENCH_PIN=0
 * leaves the pinning out.
 */
export const IPERF_PIN = cpus().length >= 2 && process.env.BENCH_PIN !== '0' ? ['-A', '0,1'] : [];

/**
 * The iperf3 server in s1, restarted after a run that gave no result. Why: after a UDP run at a rate the path
 * cannot carry, the server sometimes stayed busy and every later run hung until its timeout (seen here).
 */
export class IperfServer {
  private p: ChildProcess | null = null;
  constructor(private readonly ns: string) {}
  /** Starts the server and waits (up to 5 s) until it listens on 5201. */
  start(): void {
    this.p = spawnInNs(this.ns, ['iperf3', '-s']);
    for (let i = 0; i < 50; i++) {
      const r = spawnSync('ip', ['netns', 'exec', this.ns, 'ss', '-Hltn', 'sport', '=', ':5201'], { encoding: 'utf8' });
      if (r.stdout.trim()) return;
      spawnSync('sleep', ['0.1']);
    }
    console.error('iperf3 server: not listening after 5 s');
  }
  restart(): void {
    this.stop();
    this.start();
  }
  stop(): void {
    this.p?.kill('SIGKILL');
    this.p = null;
  }
}

/** The servers sit behind the SLB: iperf3 reaches s1 through VIPs of its own (the same DNAT cost in every mode). */
export async function addIperfVips(lab: Lab): Promise<void> {
  const s1 = lab.host('s1').addr!;
  // iperf3 -u keeps its control connection on TCP 5201 and sends its datagrams to UDP 5201: one VIP each.
  for (const protocol of ['tcp', 'udp']) {
    // Checked by ICMP: a restart of the iperf3 server (after a bad run) must not take the member down.
    const v = await lab.api(
      'slb',
      'POST',
      '/vips',
      { id: `iperf-${protocol}`, address: lab.t.vip, port: 5201, protocol, check: { kind: 'icmp' }, members: [{ address: s1, port: 5201 }] },
      lab.t.slb.api!.token,
    );
    if (v.status !== 201) throw new Error(`cannot add the iperf ${protocol} VIP: ${JSON.stringify(v.body)}`);
  }
}

export function runIn(ns: string, cmd: string[]): string {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', timeout: (SECONDS + 10) * 1000 });
  if (r.status !== 0)
    throw new Error(
      `${cmd[0]}: ${r.error ? r.error.message : `exit ${r.status ?? r.signal}`} ${r.stderr.trim()} ${r.status === 1 && cmd[0] === 'iperf3' ? r.stdout.slice(0, 200) : ''}`.trim(),
    );
  return r.stdout;
}

/**
 * Gbit/s of one iperf3 run (4 streams) from `client`, or NaN when three attempts gave no result. Why: iperf3 sometimes
 * answers with an error object ("the server is busy running a test"), and a TypeError there used to lose every round
 * already measured; a missing round is reported and left out of the median instead.
 */
export function throughput(lab: Lab, server: IperfServer, client = 'c1', target = lab.t.vip): number {
  for (let attempt = 1; attempt <= 3; attempt++) {
    let j: any = null;
    try {
      j = JSON.parse(runIn(lab.ns(client), ['iperf3', '-c', target, '--connect-timeout', '3000', '-t', String(SECONDS), '-P', '4', ...IPERF_PIN, '-J']));
    } catch (e) {
      j = { error: (e as Error).message.slice(0, 200) };
    }
    const bps = j?.end?.sum_received?.bits_per_second;
    if (typeof bps === 'number' && bps > 0) return bps / 1e9;
    console.error(`iperf3 attempt ${attempt} gave no result: ${j?.error ?? 'no sum_received'}; restarting the server`);
    server.restart();
  }
  return NaN;
}

/** New connections/s of one wrk run from `client` to `url`, or NaN (reported) when it gave no result, like `throughput`. */
export function connRate(lab: Lab, client = 'c1', url = `http://${lab.t.vip}:${WEB_PORT}/`): number {
  try {
    const out = runIn(lab.ns(client), ['wrk', '-t', '2', '-c', '32', '-d', `${SECONDS}s`, '-H', 'Connection: close', url]);
    const m = /Requests\/sec:\s+([\d.]+)/.exec(out);
    if (m) return Number(m[1]);
    console.error(`wrk gave no result: ${out.slice(0, 200)}`);
  } catch (e) {
    console.error(`wrk failed: ${(e as Error).message.slice(0, 200)}`);
  }
  return NaN;
}

export interface Paired {
  median: number;
  min: number;
  max: number;
  /** Rounds in which a's figure was below b's (for CPU per packet, lower is better). */
  lower: number;
  n: number;
}

/** a / b round by round (both ran in the same round, next to each other), skipping rounds either lost. */
export function pairedRatio(a: readonly number[], b: readonly number[]): Paired {
  const r = a.map((x, i) => x / b[i]).filter((x) => Number.isFinite(x));
  const sp = spread(r);
  return { median: sp.median, min: sp.min, max: sp.max, lower: r.filter((x) => x < 1).length, n: r.length };
}

/** An nft JSON listing item as an `add` command's body: no handle, counters zeroed. */
export function stripHandles(x: any): any {
  const [k] = Object.keys(x);
  const o = { ...x[k] };
  delete o.handle;
  // An anonymous counter starts again from 0; a named counter, or one chosen by a map, is kept as it is.
  if (k === 'rule') o.expr = o.expr.map((s: any) => (s.counter && typeof s.counter === 'object' && !('map' in s.counter) ? { counter: null } : s));
  return { [k]: o };
}

/** Median [min-max] (n) of the finite values, for a report line. */
export function fmtSpread(xs: number[], d = 0): string {
  const s = spread(xs.filter((x) => Number.isFinite(x)));
  return `${s.median.toFixed(d)} [${s.min.toFixed(d)}-${s.max.toFixed(d)}] (n=${s.n})`;
}
