// Runs HAProxy as the L7 data plane: started in master-worker mode and supervised, configured by a rendered file
// that `haproxy -c` checked, and changed through its runtime API without a reload; shell layer of libs/slb.
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import { writeFileAtomic } from '@fwlb/service';
import { haproxyCli, HaproxyError, HaproxyStat, parseStat, parseTable } from './haproxy-cli';
import { runtimeChange } from './haproxy-runtime';
import { adminSocket, configFile, L7Paths, L7Want, mapText, masterSocket } from './haproxy-render';

/**
 * Whether a process that is not our child runs. A dead one stays a zombie until whoever adopted it reaps it (seen:
 * 1.5 s with this machine's init), and a signal 0 still reaches a zombie: its state in /proc says.
 */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The L7 data plane as the SLB service sees it (a fake stands in for it in unit tests). */
export interface L7Engine {
  readonly paths: L7Paths;
  /** Makes HAProxy run `want`: runtime commands when only servers and maps differ, else a checked seamless reload. */
  apply(want: L7Want): Promise<{ reloaded: boolean; commands: number }>;
  stats(): Promise<Map<string, HaproxyStat>>;
  alarms(): string[];
  status(): Record<string, unknown>;
  stop(): void;
}

export interface HaproxyOptions {
  paths: L7Paths;
  binary?: string;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  now?: () => number;
}

/** How long after an unexpected exit the alarm stays, once HAProxy runs again. */
export const RESTART_ALARM_MS = 5 * 60_000;

export class HaproxyEngine implements L7Engine {
  private child: ChildProcess | null = null;
  /** The master's pid when this controller adopted one that was already running (it is not our child then). */
  private adoptedPid: number | null = null;
  private poll: NodeJS.Timeout | null = null;
  /** What HAProxy runs now, as last applied; null until the first apply (or after a start we could not finish). */
  private have: L7Want | null = null;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private backoffMs = 100;
  reloads = 0;
  restarts = 0;
  runtimeCommands = 0;
  lastError: string | null = null;
  private down: { since: number; why: string } | null = null;
  private lastExit: { at: number; why: string; back: number | null } | null = null;
  private readonly bin: string;
  private readonly pidFile: string;
  /** HAProxy's own messages (its stdout and stderr), and where the current master's begin. */
  readonly logFile: string;
  private logFrom = 0;

  readonly paths: L7Paths;

  constructor(private readonly o: HaproxyOptions) {
    this.paths = o.paths;
    this.bin = o.binary ?? 'haproxy';
    this.pidFile = `${o.paths.dir}/haproxy.pid`;
    this.logFile = `${o.paths.dir}/haproxy.log`;
    mkdirSync(o.paths.dir, { recursive: true, mode: 0o700 });
  }

  /** Whether the HAProxy binary runs here (`haproxy -v`). */
  static available(binary = 'haproxy'): boolean {
    return spawnSync(binary, ['-v'], { stdio: 'ignore' }).status === 0;
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  private log(msg: string, fields?: Record<string, unknown>): void {
    this.o.log?.(msg, fields);
  }

  /** `haproxy -c` on a candidate config (written next to the live one); throws HAProxy's message. */
  private check(text: string): string {
    const tmp = `${configFile(this.o.paths)}.new`;
    writeFileAtomic(tmp, text);
    const r = spawnSync(this.bin, ['-c', '-f', tmp], { encoding: 'utf8' });
    if (r.status !== 0) {
      unlinkSync(tmp);
      throw new HaproxyError(
        `haproxy -c refused the rendered config: ${(r.stderr || r.stdout || String(r.error ?? ''))
          .trim()
          .split('\n')
          .filter((l) => /ALERT|error/i.test(l))
          .slice(0, 4)
          .join(' | ')}`,
      );
    }
    return tmp;
  }

  private writeMaps(want: L7Want): void {
    for (const [file, entries] of want.maps) writeFileAtomic(file, mapText(entries));
  }

  /** Back to the maps of `prev`: the ones `want` added are removed. */
  private restoreMaps(want: L7Want, prev: L7Want | null): void {
    for (const file of want.maps.keys()) if (!prev?.maps.has(file) && existsSync(file)) unlinkSync(file);
    if (prev) this.writeMaps(prev);
  }

  private masterPid(): number | null {
    if (this.child?.pid && this.child.exitCode === null && this.child.signalCode === null) return this.child.pid;
    return this.adoptedPid;
  }

  private running(): boolean {
    return this.masterPid() !== null;
  }

  /** An HAProxy master left running by a controller that died (fail static): adopted, then reloaded with our config. */
  private adopt(): boolean {
    try {
      const pid = Number(readFileSync(this.pidFile, 'utf8').trim());
      if (!pid || !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('haproxy')) return false;
      this.adoptedPid = pid;
      this.watchAdopted();
      this.log(`HAProxy master ${pid} was running: adopted`);
      return true;
    } catch {
      return false;
    }
  }

  private watchAdopted(): void {
    this.poll = setInterval(() => {
      const pid = this.adoptedPid;
      if (pid === null || alive(pid)) return;
      this.adoptedPid = null;
      if (this.poll) clearInterval(this.poll);
      this.exited(`master ${pid} is gone`);
    }, 100);
    this.poll.unref();
  }

  /** Starts the master with the config on disk (the last good one) and waits until a worker answers. */
  private async spawnMaster(): Promise<void> {
    const p = this.o.paths;
    for (const s of [adminSocket(p), masterSocket(p)]) if (existsSync(s)) unlinkSync(s);
    // Its messages go to a file, not a pipe to this process, and it runs in a process group of its own: HAProxy
    // must outlive this controller (fail static), and a pipe would break under it when the controller dies.
    const logFd = openSync(this.logFile, 'a');
    this.logFrom = fstatSync(logFd).size;
    const child = spawn(this.bin, ['-W', '-S', `${masterSocket(p)},mode,600`, '-f', configFile(p), '-p', this.pidFile], {
      stdio: ['ignore', logFd, logFd],
      detached: true,
    });
    closeSync(logFd);
    this.child = child;
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      this.exited(signal ? `signal ${signal}` : `exit code ${code}`);
    });
    await this.waitWorker(null, 5000);
  }

  /** Waits until the admin socket answers with a worker other than `oldPid`. */
  private async waitWorker(oldPid: number | null, ms: number): Promise<number> {
    const t0 = Date.now();
    for (;;) {
      const pid = await this.workerPid().catch(() => null);
      if (pid !== null && pid !== oldPid) return pid;
      if (!this.running())
        throw new HaproxyError(`HAProxy exited while starting${this.lastExit ? ` (${this.lastExit.why}; its messages are in the log)` : ''}`);
      if (Date.now() - t0 > ms) throw new HaproxyError(`HAProxy's worker did not answer within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async workerPid(): Promise<number | null> {
    const info = await haproxyCli(adminSocket(this.o.paths), 'show info', 1000);
    const m = /^Pid: (\d+)$/m.exec(info);
    return m ? Number(m[1]) : null;
  }

  /** The last lines HAProxy wrote (its alerts say why it would not start). */
  private tail(n = 3): string {
    try {
      return readFileSync(this.logFile, 'utf8')
        .slice(this.logFrom)
        .trim()
        .split('\n')
        .filter((l) => /ALERT/.test(l))
        .slice(-n)
        .join(' | ');
    } catch {
      return '';
    }
  }

  private exited(why: string): void {
    if (this.stopped) return;
    const alerts = this.tail();
    if (alerts) why = `${why}; ${alerts}`;
    this.have = null;
    this.down = { since: this.now(), why };
    this.lastExit = { at: this.now(), why, back: null };
    this.log(`ALARM HAProxy exited (${why}); restarting it with the last good config`, { event: 'haproxy-exit', why });
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (this.stopped || this.restartTimer) return;
    this.restartTimer = setTimeout(async () => {
      this.restartTimer = null;
      try {
        await this.spawnMaster();
        this.restarts++;
        this.backoffMs = 100;
        if (this.lastExit) this.lastExit.back = this.now();
        this.down = null;
        this.have = this.onDisk;
        this.log(`HAProxy restarted with the last good config (${this.restarts} restarts)`, { event: 'haproxy-restart', restarts: this.restarts });
      } catch (e) {
        this.lastError = (e as Error).message;
        this.child?.kill('SIGKILL');
        this.backoffMs = Math.min(this.backoffMs * 2, 5000);
        this.scheduleRestart();
      }
    }, this.backoffMs);
  }

  /** The rendering whose files are on disk (what a restart loads). */
  private onDisk: L7Want | null = null;

  async apply(want: L7Want): Promise<{ reloaded: boolean; commands: number }> {
    if (this.stopped) throw new HaproxyError('stopped');
    const have = this.have;
    if (have && have.skeleton === want.skeleton) return { reloaded: false, commands: await this.runtime(have, want) };
    // The maps first (the check loads them by name; a running HAProxy reads them only at a reload), then the check;
    // a refused config puts the previous maps back.
    const prevDisk = this.onDisk;
    this.writeMaps(want);
    let tmp: string;
    try {
      tmp = this.check(want.config);
    } catch (e) {
      this.restoreMaps(want, prevDisk);
      this.lastError = (e as Error).message;
      throw e;
    }
    renameSync(tmp, configFile(this.o.paths));
    try {
      if (!this.running() && !this.adopt()) {
        if (this.restartTimer) {
          clearTimeout(this.restartTimer);
          this.restartTimer = null;
        }
        await this.spawnMaster();
        this.down = null;
      } else {
        const old = await this.workerPid().catch(() => null);
        const out = await haproxyCli(masterSocket(this.o.paths), 'reload', 3000, 2000);
        if (out.trim()) this.log(`haproxy reload: ${out.trim()}`);
        await this.waitWorker(old, 5000);
        this.reloads++;
      }
    } catch (e) {
      // Put the previous files back so a restart loads what ran before this change (with none, the restarts retry
      // this config: it passed the check, so what failed is more likely the moment than the config).
      if (prevDisk) {
        this.restoreMaps(want, prevDisk);
        writeFileAtomic(configFile(this.o.paths), prevDisk.config);
      }
      this.lastError = (e as Error).message;
      throw e;
    }
    this.have = want;
    this.onDisk = want;
    this.lastError = null;
    return { reloaded: true, commands: 0 };
  }

  /** Servers and maps through the runtime API (see runtimeChange); the files follow. */
  private async runtime(have: L7Want, want: L7Want): Promise<number> {
    let sent: { servers: number; commands: number };
    try {
      sent = await runtimeChange(adminSocket(this.o.paths), have, want);
    } catch (e) {
      this.lastError = (e as Error).message;
      throw e;
    }
    this.runtimeCommands += sent.commands;
    this.have = want;
    // The files follow, so that a restart loads what runs now (the maps, the servers in their current state).
    this.writeMaps(want);
    writeFileAtomic(configFile(this.o.paths), want.config);
    this.onDisk = want;
    this.lastError = null;
    return sent.servers;
  }

  /** `show stat`, and each VIP's requests per rule (`show table`) as `st.<vip>/<rule id>`. */
  async stats(): Promise<Map<string, HaproxyStat>> {
    if (!this.running()) return new Map();
    const sock = adminSocket(this.o.paths);
    const out = parseStat(await haproxyCli(sock, 'show stat', 2000));
    for (const table of this.have?.tables ?? []) {
      for (const [k, n] of parseTable(await haproxyCli(sock, `show table ${table}`, 2000))) out.set(`${table}/${k}`, { sessions: 0, requests: n, status: '' });
    }
    return out;
  }

  alarms(): string[] {
    const out: string[] = [];
    if (this.down)
      out.push(
        `HAProxy is down since ${new Date(this.down.since).toISOString()} (${this.down.why}): L7 VIPs do not answer; restarting it with the last good config${this.lastError ? ` (last try: ${this.lastError})` : ''}`,
      );
    else if (this.lastExit?.back && this.now() - this.lastExit.back < RESTART_ALARM_MS) {
      out.push(
        `HAProxy exited at ${new Date(this.lastExit.at).toISOString()} (${this.lastExit.why}) and was restarted with the last good config ${this.lastExit.back - this.lastExit.at} ms later`,
      );
    }
    if (!this.down && this.lastError) out.push(`HAProxy: last change failed: ${this.lastError}`);
    return out;
  }

  status(): Record<string, unknown> {
    return {
      running: this.running(),
      masterPid: this.masterPid(),
      reloads: this.reloads,
      restarts: this.restarts,
      runtimeCommands: this.runtimeCommands,
      lastError: this.lastError,
      config: configFile(this.o.paths),
    };
  }

  /**
   * Stops supervising. HAProxy keeps serving what it runs (fail static, as the nft table does): the next controller
   * adopts it from its pid file and reloads it seamlessly. `kill` stops it as well.
   */
  stop(kill = false): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.poll) clearInterval(this.poll);
    const pid = this.masterPid();
    if (pid && kill) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
  }
}
