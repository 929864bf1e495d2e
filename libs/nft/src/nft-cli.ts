// Runs the nft binary with JSON on stdin and arguments as an array; I/O layer of libs/nft.
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActualTable, NftJson } from './model';
import { mapElements, parseListing } from './diff';
import type { NetlinkElements } from './elements-netlink';
import { NftSession, SESSION_MAX_BYTES } from './nft-session';

import { NftError } from './nft-error';

export interface NftRunner {
  /** Apply commands as one transaction: all or nothing. */
  apply(cmds: NftJson[]): Promise<void>;
  /** Check commands against the kernel without committing them (`nft -c`). */
  check(cmds: NftJson[]): Promise<void>;
  /**
   * Read one table, or null when it does not exist. With `unlisted`, the rules, counters and declarations come from
   * a terse listing, and the maps it names come back without their elements (their owner keeps them).
   */
  read(family: string, name: string, unlisted?: ReadonlySet<string>): Promise<ActualTable | null>;
  /** Raw `nft -j list table` JSON, or null. */
  list(family: string, name: string): Promise<unknown | null>;
  /**
   * Apply a batch in nft's text syntax. Only for constant declarations JSON cannot express in nft 1.0.6 (a map with
   * `typeof`, or with concatenated data); never text built from input.
   */
  applyText(text: string, checkOnly?: boolean): Promise<void>;
  /** Raw `nft -j <args>` JSON (args as an array, e.g. ['-t', 'list', 'table', 'ip', 'x']), or null when the object does not exist. */
  json(args: string[]): Promise<unknown | null>;
  /**
   * Element changes of a map whose keys the caller encodes, over nfnetlink (see NetlinkElements), in the namespace
   * of this process; absent, they go through nft.
   */
  elements?: Pick<NetlinkElements, 'write'>;
}

/**
 * Why stdin is a file and not a pipe: libuv gives a child a socketpair for 'pipe' stdio, and nft opens
 * /dev/stdin by path, which fails with ENXIO on a socket. An unlinked temp file as fd 0 opens fine.
 */
function stdinFile(text: string): number {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-nft-'));
  const path = join(dir, 'batch.json');
  try {
    writeFileSync(path, text, { mode: 0o600 });
    return openSync(path, 'r');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A table read in parts, so that a large map costs nothing when its elements are known: the rules, counters and
 * declarations from a terse listing of the ruleset (nft 1.0.6 lists a table's set elements for `list table`, `list
 * chain` and `list counter` even with `-t`, and skips them only for `list ruleset -t`), then the elements of each map
 * not `unlisted`, one listing each.
 */
async function readTerse(json: (args: string[]) => Promise<unknown>, family: string, name: string, unlisted: ReadonlySet<string>): Promise<ActualTable | null> {
  const t = parseListing(await json(['-t', 'list', 'ruleset']), { family, name });
  if (!t) return null;
  await Promise.all(
    [...t.maps].map(async ([m, cur]) => {
      if (unlisted.has(m)) return;
      const listed = (await json(['list', 'map', family, name, m])) as { nftables?: Record<string, any>[] } | null;
      const got = listed?.nftables?.find((it) => it.map?.name === m)?.map;
      if (!got) throw new Error(`map ${m} of table ${family} ${name} went away while it was read`);
      t.maps.set(m, { ...cur, elements: mapElements(got) });
    }),
  );
  return t;
}

/** The longest one nft run may take before it is killed (a stuck command must not stall every later reconcile). */
export const NFT_TIMEOUT_MS = 30_000;

function run(bin: string, args: string[], stdin?: string, timeoutMs = NFT_TIMEOUT_MS): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const fd = stdin === undefined ? null : stdinFile(stdin);
    const p = spawn(bin, args, { stdio: [fd ?? 'ignore', 'pipe', 'pipe'] });
    if (fd !== null) closeSync(fd);
    let stdout = '';
    let stderr = '';
    let killed = false;
    // A transaction is all or nothing in the kernel: killing nft before it commits leaves the kernel as it was.
    const timer = setTimeout(() => {
      killed = true;
      p.kill('SIGKILL');
    }, timeoutMs);
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.on('error', (e) => {
      clearTimeout(timer);
      reject(new NftError(`cannot run ${bin}: ${e.message}`, ''));
    });
    p.on('close', (code) => {
      clearTimeout(timer);
      if (killed) reject(new NftError(`${bin} ${args.join(' ')} did not finish within ${timeoutMs} ms and was killed`, stderr));
      else resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/**
 * `session`: transactions up to SESSION_MAX_BYTES go to one long-lived nft (see NftSession), larger ones and every
 * read to a process of their own; where this nft cannot hold a session, everything does.
 */
export function nftCli(bin = 'nft', timeoutMs = NFT_TIMEOUT_MS, o: { session?: boolean } = {}): NftRunner {
  const session = o.session ? new NftSession(bin, timeoutMs) : null;
  const json = async (args: string[]) => {
    const r = await run(bin, ['-j', ...args], undefined, timeoutMs);
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return null;
      throw new NftError(`nft ${args.join(' ')} failed: ${r.stderr.trim()}`, r.stderr);
    }
    return JSON.parse(r.stdout);
  };
  const list = (family: string, name: string) => json(['list', 'table', family, name]);
  const batch = async (cmds: NftJson[], checkOnly: boolean) => {
    if (cmds.length === 0) return;
    const text = JSON.stringify({ nftables: cmds });
    if (session && !checkOnly && text.length <= SESSION_MAX_BYTES && (await session.apply(text))) return;
    const r = await run(bin, checkOnly ? ['-c', '-j', '-f', '-'] : ['-j', '-f', '-'], text, timeoutMs);
    if (r.code !== 0) throw new NftError(`nft transaction ${checkOnly ? 'check ' : ''}failed (nothing applied): ${r.stderr.trim().split('\n')[0]}`, r.stderr);
  };
  const applyText = async (text: string, checkOnly = false) => {
    const r = await run(bin, checkOnly ? ['-c', '-f', '-'] : ['-f', '-'], text, timeoutMs);
    if (r.code !== 0) throw new NftError(`nft ${checkOnly ? 'check' : 'declaration'} failed (nothing applied): ${r.stderr.trim().split('\n')[0]}`, r.stderr);
  };
  return {
    apply: (cmds) => batch(cmds, false),
    applyText,
    check: (cmds) => batch(cmds, true),
    list,
    json,
    read: (family, name, unlisted) => (unlisted ? readTerse(json, family, name, unlisted) : list(family, name).then((j) => parseListing(j))),
  };
}
