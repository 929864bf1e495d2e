// An SLB node with thousands of VIPs in a namespace of its own, for the scale tests and the control-plane bench:
// the VIPs sit on a veth whose peer stays in the namespace (no dummy module here); members are addresses of a local
// route (every 10.50.x.y answers ICMP from the node's own stack), the API is a unix socket, and `nft` runs through a
// wrapper that logs each invocation and each line of the SLB's nft session, so that a test can count them. I/O layer
// of deploy/lab.
import { ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteNs, inNs, run, spawnInNs } from './netns';
import { NODE_FLAGS, SLB_MAIN } from './lab';

export const SCALE_TOKEN = 'scale-token-0123456789abcdef';

export interface ScaleOptions {
  vips: number;
  members: number;
  /** Health check interval (ms) of every VIP. @default 30000 */
  interval?: number;
  /** Seconds between full reconciles and counter reads. @default 3600 (out of the way of what a test counts) */
  resyncSeconds?: number;
  countersSeconds?: number;
}

/** VIP i: 10.(100 + i/250).(i%250).1:80/tcp, members 10.50.(i%250).(10+j):(8000 + i/250) checked by ICMP. */
export function scaleVips(o: ScaleOptions) {
  return Array.from({ length: o.vips }, (_, i) => ({
    id: `v${i}`,
    address: `10.${100 + Math.floor(i / 250)}.${i % 250}.1`,
    port: 80,
    protocol: 'tcp',
    check: { kind: 'icmp' },
    timers: { interval: o.interval ?? 30000, response: 1000, retries: 2, deadInterval: 60000, rise: 1 },
    members: Array.from({ length: o.members }, (_, j) => ({ address: `10.50.${i % 250}.${10 + j}`, port: 8000 + Math.floor(i / 250) })),
  }));
}

export interface ApiReply {
  status: number;
  body: any;
  ms: number;
}

export class ScaleSlb {
  readonly ns: string;
  readonly dir: string;
  readonly socket: string;
  readonly configPath: string;
  readonly stateFile: string;
  readonly nftLog: string;
  readonly sessionLog: string;
  proc: ChildProcess | null = null;
  log: string[] = [];

  constructor(
    readonly prefix: string,
    readonly o: ScaleOptions,
  ) {
    this.ns = `${prefix}-scale`;
    this.dir = mkdtempSync(join(tmpdir(), `${prefix}-scale-`));
    this.socket = join(this.dir, 'api.sock');
    this.configPath = join(this.dir, 'slb.json');
    this.stateFile = join(this.dir, 'state.json');
    this.nftLog = join(this.dir, 'nft.log');
    this.sessionLog = join(this.dir, 'session.log');
  }

  /** The namespace, its interface and member route, the nft wrapper and the config (no state file yet). */
  setup(): void {
    run(['ip', 'netns', 'add', this.ns]);
    inNs(this.ns, ['ip', 'link', 'set', 'lo', 'up']);
    inNs(this.ns, ['ip', 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up0p']);
    inNs(this.ns, ['ip', 'link', 'set', 'up0p', 'up']);
    inNs(this.ns, ['ip', 'link', 'set', 'up0', 'up']);
    inNs(this.ns, ['ip', 'addr', 'add', '10.255.0.1/24', 'dev', 'up0']);
    inNs(this.ns, ['ip', 'route', 'add', 'local', '10.50.0.0/16', 'dev', 'lo']);
    inNs(this.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const bin = join(this.dir, 'bin');
    run(['mkdir', '-p', bin]);
    const nft = run(['sh', '-c', 'command -v nft']).trim();
    // Each invocation is logged; a batch read from stdin is kept as batch-<line of the log> (the transaction as sent).
    writeFileSync(
      join(bin, 'nft'),
      [
        '#!/bin/sh',
        `echo "$*" >> '${this.nftLog}'`,
        'case " $* " in',
        `*" -f - "*) n=$(wc -l < '${this.nftLog}'); cat > '${this.dir}/batch-'$n; exec '${nft}' "$@" < '${this.dir}/batch-'$n ;;`,
        // The SLB's nft session (nft -j -i): every line it is sent is kept as well, a transaction per JSON line.
        `*" -i "*) tee -a '${this.sessionLog}' | '${nft}' "$@"; exit ;;`,
        'esac',
        `exec '${nft}' "$@"`,
        '',
      ].join('\n'),
    );
    chmodSync(join(bin, 'nft'), 0o755);
    writeFileSync(this.nftLog, '');
    writeFileSync(
      this.configPath,
      JSON.stringify({
        name: 'scale',
        interface: 'up0',
        table: 'fwlb_slb',
        seed: 7,
        api: { listen: `unix:${this.socket}`, token: SCALE_TOKEN },
        stateFile: this.stateFile,
        resyncSeconds: this.o.resyncSeconds ?? 3600,
        countersSeconds: this.o.countersSeconds ?? 3600,
        vips: scaleVips(this.o),
      }),
    );
  }

  /** Starts fwlb-slb and resolves when its API listens; returns the milliseconds that took. `nodeArgs`: e.g. --cpu-prof. */
  async start(nodeArgs: string[] = []): Promise<number> {
    const t0 = Date.now();
    this.log = [];
    const p = spawnInNs(this.ns, [
      'env',
      `PATH=${join(this.dir, 'bin')}:${process.env.PATH}`,
      process.execPath,
      ...NODE_FLAGS,
      ...nodeArgs,
      SLB_MAIN,
      'run',
      '--config',
      this.configPath,
    ]);
    this.proc = p;
    const onData = (d: Buffer) => this.log.push(...d.toString().split('\n').filter(Boolean));
    p.stdout!.on('data', onData);
    p.stderr!.on('data', onData);
    // Polls the API rather than waiting for the "listening on" line: that line is not logged at FWLB_LOG_LEVEL=warn.
    let exited: number | null = null;
    p.once('exit', (code) => (exited = code ?? -1));
    while (Date.now() - t0 < 60000) {
      if (exited !== null) throw new Error(`fwlb-slb (scale) exited with ${exited}: ${this.log.join('\n')}`);
      if (
        await this.api('GET', '/health').then(
          () => true,
          () => false,
        )
      )
        return Date.now() - t0;
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`fwlb-slb (scale) did not answer within 60 s: ${this.log.join('\n')}`);
  }

  /** Waits until the SLB has adopted the kernel state (GET /status `started`); returns ms since `since`. */
  async adopted(since: number, ms = 60000): Promise<number> {
    while (Date.now() - since < ms) {
      const r = await this.api('GET', '/status').catch(() => null);
      if (r?.body?.started) return Date.now() - since;
      await new Promise((res) => setTimeout(res, 20));
    }
    throw new Error(`fwlb-slb (scale) did not adopt the kernel state within ${ms} ms: ${this.log.join('\n')}`);
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
    if (p.exitCode === null) p.kill('SIGKILL');
    this.proc = null;
  }

  /** nft invocations logged so far (each line: its arguments). */
  nftRuns(): string[] {
    return existsSync(this.nftLog) ? readFileSync(this.nftLog, 'utf8').split('\n').filter(Boolean) : [];
  }

  /** Where the transactions sent so far end: for transactionsSince. */
  transactionsMark(): { runs: number; session: number } {
    return { runs: this.nftRuns().length, session: this.sessionLines().length };
  }

  /**
   * The transactions (JSON or text) sent since `mark`: each nft run that read a batch from a file or stdin and is not a
   * check (`-c`), then each transaction the SLB's nft session took.
   */
  transactionsSince(mark: { runs: number; session: number }): string[] {
    const runs = this.nftRuns()
      .map((l, i) => [l, i + 1] as const)
      .slice(mark.runs)
      .filter(([l]) => /(^| )-f /.test(l) && !/(^| )-c /.test(l))
      .map(([l, n]) => (/ -f - /.test(` ${l} `) ? this.batch(n) : l));
    return [...runs, ...this.sessionLines().slice(mark.session)];
  }

  private sessionLines(): string[] {
    return existsSync(this.sessionLog)
      ? readFileSync(this.sessionLog, 'utf8')
          .split('\n')
          .filter((l) => l.startsWith('{'))
      : [];
  }

  /** The batch that nft invocation number `n` (1-based, as in nftRuns()) read from stdin. */
  batch(n: number): string {
    return readFileSync(join(this.dir, `batch-${n}`), 'utf8');
  }

  nft(args: string[]): string {
    return inNs(this.ns, ['nft', ...args]);
  }

  api(method: string, path: string, body?: unknown): Promise<ApiReply> {
    const t0 = process.hrtime.bigint();
    const data = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socket,
          method,
          path,
          headers: {
            authorization: `Bearer ${SCALE_TOKEN}`,
            ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}),
          },
        },
        (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => {
            const ms = Number(process.hrtime.bigint() - t0) / 1e6;
            let parsed: unknown = text;
            try {
              parsed = text ? JSON.parse(text) : null;
            } catch {
              /* not JSON: keep the text */
            }
            resolve({ status: res.statusCode ?? 0, body: parsed, ms });
          });
        },
      );
      req.on('error', reject);
      req.end(data);
    });
  }

  async cleanup(): Promise<void> {
    await this.stop();
    deleteNs(this.ns);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
