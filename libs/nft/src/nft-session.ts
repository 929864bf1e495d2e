// One long-lived `nft -j -i` that takes transactions, one per line; I/O layer of libs/nft.
//
// Why not a process per transaction: a process that deleted anything (a rule, an element) waits as it exits for the
// kernel to release what it deleted, an RCU grace period (about 12 ms on the test VM, against under 2 ms for the
// transaction itself), and each spawn costs the node 2-3 ms of CPU. A change of one VIP paid both.
//
// The protocol: each transaction is one line of JSON (one batch, all or nothing, as with `nft -j -f`), followed by a
// line that makes nft print one known line. What nft prints before that line is the transaction's answer: an
// "Error:" line means nothing of it was applied; else it committed. stderr is merged into stdout (`2>&1`: the shell
// string is a constant, the binary its argument), so the error and the known line arrive in the order nft wrote
// them.
import { spawn, ChildProcess } from 'node:child_process';
import { NftError } from './nft-error';

/** A command that touches no cache and prints one line that no error starts with. */
const MARK_COMMAND = 'describe meta mark';
const MARK_LINE = /^meta expression, datatype mark\b/;

/** The longest transaction sent as a line (bytes of JSON); a longer one runs in a process of its own. */
export const SESSION_MAX_BYTES = 256 * 1024;

/**
 * Bytes of transactions a session takes before the next one starts afresh. Why: nft's line editor keeps every line
 * in its history for as long as the process runs.
 */
export const SESSION_RECYCLE_BYTES = 4 << 20;

/** How long the session may take to answer its first known line before it is taken as unavailable. */
const START_MS = 5000;

interface Pending {
  /** The session it waits on: a session that ends fails its own transaction only. */
  proc: ChildProcess;
  lines: string[];
  done: (err: Error | null, output: string) => void;
}

export class NftSession {
  private proc: ChildProcess | null = null;
  private pending: Pending | null = null;
  /** Bytes of transactions the running session took (see SESSION_RECYCLE_BYTES). */
  private sent = 0;
  private queue: Promise<unknown> = Promise.resolve();
  /** Why this nft cannot hold a session (no interactive mode in its build): every transaction then spawns. */
  unavailable: string | null = null;
  /** Sessions started (a session that ended, killed or not, is started again on the next transaction). */
  starts = 0;

  constructor(
    private readonly bin: string,
    private readonly timeoutMs: number,
  ) {}

  /**
   * One transaction, all or nothing: resolves true once nft committed it, false when no session could be had (nothing
   * was sent: the caller runs it in a process of its own), rejects with nft's error (nothing applied), or when the
   * session ended or did not answer within the timeout (it is killed; as with a process of its own, a transaction
   * killed before its commit leaves the kernel as it was). One at a time, in call order.
   */
  apply(json: string): Promise<boolean> {
    const next = this.queue.then(async () => {
      // A session that ended since it answered last (or never started) took nothing: the caller runs it alone.
      if (!(await this.ready()) || !this.proc) return false;
      await this.send(json);
      return true;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The session's process (every step to nft is an exec, so this is nft's pid), or null while none runs. */
  get pid(): number | null {
    return this.proc?.pid ?? null;
  }

  /** Ends the session (the node stops). */
  close(): void {
    this.proc?.stdin?.end();
    this.proc = null;
  }

  /** A running session that answered its known line once; false (and the reason in `unavailable`) if none can run. */
  private async ready(): Promise<boolean> {
    if (this.unavailable) return false;
    if (this.proc) return true;
    this.proc = this.start();
    try {
      await this.exchange(null, START_MS);
      return true;
    } catch (e) {
      this.unavailable = `nft cannot hold a session (nft -j -i): ${(e as Error).message}`;
      return false;
    }
  }

  private start(): ChildProcess {
    this.starts++;
    // HOME where nothing can be written: the line editor would save every transaction to ~/.nft.history at exit.
    const p = spawn('sh', ['-c', 'exec "$0" -j -i 2>&1', this.bin], { stdio: ['pipe', 'pipe', 'ignore'], env: { ...process.env, HOME: '/nonexistent' } });
    this.sent = 0;
    p.stdout!.setEncoding('utf8');
    const out = { buf: '' };
    p.stdout!.on('data', (d: string) => this.onOutput(p, out, d));
    p.stdin!.on('error', () => undefined);
    const ended = (why: string) => {
      if (this.proc === p) this.proc = null;
      const pending = this.pending?.proc === p ? this.pending : null;
      if (pending) this.pending = null;
      pending?.done(new NftError(`nft session ended (${why}); the transaction may or may not have been applied`, pending.lines.join('\n')), '');
    };
    p.on('exit', (code, signal) => ended(signal ?? `exit ${code}`));
    p.on('error', (e) => ended(e.message));
    // The session never keeps the node running: a transaction in flight holds the loop with its timer.
    p.unref();
    (p.stdout as unknown as { unref?: () => void }).unref?.();
    (p.stdin as unknown as { unref?: () => void }).unref?.();
    return p;
  }

  /** A session's output, in lines: each line before the known one is its transaction's; the known line ends it. */
  private onOutput(p: ChildProcess, out: { buf: string }, d: string): void {
    out.buf += d;
    for (let i = out.buf.indexOf('\n'); i >= 0; i = out.buf.indexOf('\n')) {
      const line = out.buf.slice(0, i);
      out.buf = out.buf.slice(i + 1);
      const pending = this.pending?.proc === p ? this.pending : null;
      if (!pending) continue;
      if (!MARK_LINE.test(line)) {
        if (line.trim()) pending.lines.push(line);
        continue;
      }
      this.pending = null;
      pending.done(null, pending.lines.join('\n'));
    }
  }

  /** Writes `json` (or nothing: the known line alone) and waits for the known line; rejects with what nft printed before it. */
  private exchange(json: string | null, timeoutMs: number): Promise<string> {
    const p = this.proc!;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        if (this.proc === p) this.proc = null;
        p.kill('SIGKILL');
        reject(new NftError(`nft session did not answer within ${timeoutMs} ms and was killed`, ''));
      }, timeoutMs);
      this.pending = {
        proc: p,
        lines: [],
        done: (err, output) => {
          clearTimeout(timer);
          if (err) reject(err);
          else resolve(output);
        },
      };
      p.stdin!.write(json === null ? `${MARK_COMMAND}\n` : `${json}\n${MARK_COMMAND}\n`);
    });
  }

  private async send(json: string): Promise<void> {
    if (json.includes('\n')) throw new NftError('nft session: a transaction must be one line', '');
    const out = await this.exchange(json, this.timeoutMs);
    this.sent += json.length;
    if (this.sent > SESSION_RECYCLE_BYTES) this.close();
    // nft marks every error "Error:" (a warning, "Warning:", comes with a transaction that committed).
    const error = out.split('\n').find((l) => /\bError:/.test(l));
    if (error) throw new NftError(`nft transaction failed (nothing applied): ${error.replace(/^internal:\d+:\d+-\d+: /, '')}`, out);
  }
}
