// A change HAProxy takes without a reload: its servers and maps through the runtime API, undone when HAProxy refuses
// part of it. Shell layer of libs/slb; the engine in haproxy.ts decides when a change can go this way.
import { haproxyCli, HaproxyError, runtimeCommand } from './haproxy-cli';
import { cliArg, L7Want, mapsChanged, serverCommands } from './haproxy-render';

/** How long a removed member's requests in flight may take before its sessions are shut. */
export const DRAIN_MS = 2000;

/**
 * Servers, then maps, from `have` to `want` over the admin socket `sock`. On a refusal the server commands are
 * undone (the reverse change) and the error thrown. Returns the server commands, and every command sent.
 */
export async function runtimeChange(sock: string, have: L7Want, want: L7Want): Promise<{ servers: number; commands: number }> {
  const cmds = serverCommands(have.servers, want.servers);
  let commands = cmds.length;
  try {
    for (const c of cmds) await (c.startsWith('del server ') ? delServer(sock, c) : runtimeCommand(sock, c));
    for (const file of mapsChanged(have.maps, want.maps)) commands += await swapMap(sock, file, want.maps.get(file)!);
  } catch (e) {
    for (const c of serverCommands(want.servers, have.servers)) await runtimeCommand(sock, c).catch(() => undefined);
    throw e;
  }
  return { servers: cmds.length, commands };
}

/**
 * `del server` once the server's connections are gone. It is in maintenance (no new requests), and HAProxy refuses
 * the delete while a request is in flight or a connection to it is open: the requests in flight get `DRAIN_MS` to
 * finish (removing a member fails no request), then its sessions are shut.
 */
async function delServer(sock: string, cmd: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    try {
      await runtimeCommand(sock, cmd);
      return;
    } catch (e) {
      if (!/still has connections|connection queue/i.test((e as Error).message) || Date.now() - t0 > ms) throw e;
    }
    if (Date.now() - t0 > DRAIN_MS) await runtimeCommand(sock, cmd.replace(/^del server/, 'shutdown sessions server')).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A whole map swapped at once: a new version filled in rule order, then committed (requests see old or new).
 * Returns the commands sent.
 */
async function swapMap(sock: string, file: string, entries: readonly [string, string][]): Promise<number> {
  const out = await runtimeCommand(sock, `prepare map ${cliArg(file)}`);
  const ver = /(\d+)$/.exec(out)![1];
  // The entries in batches of `;`-separated commands on one connection (keys and values are escaped: a `;` in
  // them is not a separator); each answers nothing when it worked.
  const adds = entries.map(([k, v]) => `add map @${ver} ${cliArg(file)} ${cliArg(k)} ${cliArg(v)}`);
  for (let i = 0; i < adds.length; i += 64) {
    const answer = (await haproxyCli(sock, adds.slice(i, i + 64).join(';'))).trim();
    if (answer) throw new HaproxyError(`HAProxy refused a rule of ${file}: ${answer.split('\n').slice(0, 2).join(' | ')}`);
  }
  await runtimeCommand(sock, `commit map @${ver} ${cliArg(file)}`);
  return entries.length + 2;
}
