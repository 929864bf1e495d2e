// Client of the fwlb-probe socket shim (raw sockets, SO_MARK, SO_BINDTODEVICE); I/O layer of libs/health.
import { spawn, ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface ProbeRequest {
  op: 'icmp' | 'syn' | 'connect';
  target: string;
  port?: number;
  timeoutMs: number;
  mark?: number;
  device?: string;
  source?: string;
  send?: string;
  readMax?: number;
  close?: 'fin' | 'rst';
}

export interface ProbeAnswer {
  ok: boolean;
  reason: string;
  latencyMs?: number;
  data?: string;
}

export const HELPER_PATH = join(__dirname, '..', 'helper', 'fwlb-probe.py');

/** One long-lived helper process per node; requests are matched to answers by id, so probes run concurrently. */
export class ProbeHelper {
  private nextId = 1;
  private readonly pending = new Map<number, (a: ProbeAnswer) => void>();
  private readonly ready: Promise<void>;
  private closed = false;

  private constructor(private readonly proc: ChildProcess) {
    let markReady: () => void;
    this.ready = new Promise((r) => (markReady = r));
    const rl = createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      let msg: ProbeAnswer & { id: number; ready?: boolean };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.ready) return markReady();
      const cb = this.pending.get(msg.id);
      if (cb) {
        this.pending.delete(msg.id);
        cb({ ok: msg.ok, reason: msg.reason, latencyMs: msg.latencyMs, data: msg.data });
      }
    });
    proc.on('exit', () => {
      this.closed = true;
      for (const cb of this.pending.values()) cb({ ok: false, reason: 'probe helper exited' });
      this.pending.clear();
    });
  }

  /** Python is the system one: the helper uses its standard library only. */
  static start(python = process.env.FWLB_PYTHON ?? '/usr/bin/python3', netns?: string): ProbeHelper {
    const cmd = netns ? ['ip', 'netns', 'exec', netns, python, HELPER_PATH] : [python, HELPER_PATH];
    const proc = spawn(cmd[0], cmd.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
    return new ProbeHelper(proc);
  }

  async request(req: ProbeRequest): Promise<ProbeAnswer> {
    await this.ready;
    if (this.closed) return { ok: false, reason: 'probe helper exited' };
    const id = this.nextId++;
    return new Promise((resolve) => {
      // A backstop a little past the probe's own deadline, in case the helper is stuck.
      const t = setTimeout(() => {
        this.pending.delete(id);
        resolve({ ok: false, reason: 'timeout' });
      }, req.timeoutMs + 1000);
      this.pending.set(id, (a) => {
        clearTimeout(t);
        resolve(a);
      });
      this.proc.stdin!.write(JSON.stringify({ id, ...req }) + '\n');
    });
  }

  close(): void {
    this.closed = true;
    this.proc.stdin!.end();
    this.proc.kill();
  }
}
