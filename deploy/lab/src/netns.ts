// Runs commands as argument arrays, inside namespaces; I/O layer of deploy/lab.
import { execFileSync, spawn, ChildProcess, SpawnOptions } from 'node:child_process';

export function run(cmd: string[], input?: string): string {
  try {
    return execFileSync(cmd[0], cmd.slice(1), { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 256 * 1024 * 1024 });
  } catch (e: any) {
    throw new Error(`${cmd.join(' ')} failed: ${(e.stderr || e.message || '').toString().trim()}`);
  }
}

export function inNs(ns: string, cmd: string[], input?: string): string {
  return run(['ip', 'netns', 'exec', ns, ...cmd], input);
}

export function spawnInNs(ns: string, cmd: string[], opts: SpawnOptions = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

export function listNs(): string[] {
  return run(['ip', 'netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter(Boolean);
}

/** Kill every process left in a namespace, then delete it. */
export function deleteNs(ns: string): void {
  try {
    const pids = run(['ip', 'netns', 'pids', ns]).split('\n').filter(Boolean);
    for (const p of pids) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  } catch {
    /* namespace already gone */
  }
  try {
    run(['ip', 'netns', 'del', ns]);
  } catch {
    /* already gone */
  }
}
