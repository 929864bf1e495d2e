// Runs commands as argument arrays, inside namespaces; I/O layer of deploy/lab.
import { execFileSync, spawn, ChildProcess, SpawnOptions } from 'node:child_process';

export function run(cmd: string[], input?: string): string {
  try {
    return execFileSync(cmd[0], cmd.slice(1), { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 256 * 1024 * 1024 });
  } catch (e: any) {
    throw new Error(`${cmd.join(' ')} failed: ${(e.stderr || e.message || '').toString().trim()}`);
  }
}

/**
 * What the lab runs in a namespace runs without the test runner's hooks. tap preloads a process tracker into every
 * Node.js process through NODE_OPTIONS, and puts it back into the environment of every spawn whatever `env` the
 * spawn asks for. With it, a node's controller (which spawns nft for every reconcile) spent 22 to 25 % of its CPU
 * time in tap's code (CPU profiles of an inside node through the VRRP lab's subtests): a different, slower program
 * than the one a host runs, on a machine the lab already keeps busy.
 */
const UNHOOKED = ['env', '-u', 'NODE_OPTIONS'];

export function inNs(ns: string, cmd: string[], input?: string): string {
  return run(['ip', 'netns', 'exec', ns, ...UNHOOKED, ...cmd], input);
}

export function spawnInNs(ns: string, cmd: string[], opts: SpawnOptions = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, ...UNHOOKED, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

export function listNs(): string[] {
  return run(['ip', 'netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter(Boolean);
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

/**
 * Two hosts on one link: namespaces `a` and `b`, each with eth0 up and the given addresses (first of each list
 * is the primary). The veth is created under throwaway names and renamed inside each namespace.
 */
export function linkedPair(prefix: string, a: { ns: string; addrs: string[] }, b: { ns: string; addrs: string[] }): void {
  run(['ip', 'netns', 'add', a.ns]);
  run(['ip', 'netns', 'add', b.ns]);
  const [ta, tb] = [`${prefix}a`.slice(0, 15), `${prefix}b`.slice(0, 15)];
  run(['ip', 'link', 'add', ta, 'netns', a.ns, 'type', 'veth', 'peer', 'name', tb, 'netns', b.ns]);
  for (const [end, tmp] of [
    [a, ta],
    [b, tb],
  ] as const) {
    inNs(end.ns, ['ip', 'link', 'set', tmp, 'name', 'eth0']);
    for (const addr of end.addrs) inNs(end.ns, ['ip', 'addr', 'add', addr, 'dev', 'eth0']);
    for (const l of ['lo', 'eth0']) inNs(end.ns, ['ip', 'link', 'set', l, 'up']);
  }
}
