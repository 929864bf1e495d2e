// Where each VIP comes from, the config file or the API: the one rule of the SLB's configuration lifecycle; pure
// layer of libs/slb.
import { createHash } from 'node:crypto';
import type { VipConfig } from '@fwlb/config';

/**
 * The state file: the VIPs as the API left them, and, for each VIP id, the digest of the config file's version of
 * it when they were written (null: the file did not have it).
 */
export interface SlbState {
  vips: VipConfig[];
  file: Record<string, string | null>;
}

/** A VIP's definition, as a short digest (keys sorted, so the file's formatting and key order do not count). */
export function vipDigest(v: VipConfig | undefined): string | null {
  if (!v) return null;
  const canon = (x: unknown): unknown =>
    Array.isArray(x)
      ? x.map(canon)
      : x && typeof x === 'object'
        ? Object.fromEntries(
            Object.keys(x)
              .sort()
              .map((k) => [k, canon((x as Record<string, unknown>)[k])]),
          )
        : x;
  return createHash('sha256')
    .update(JSON.stringify(canon(v)))
    .digest('hex')
    .slice(0, 16);
}

/** The config file's VIPs as the state file records them: id -> digest. */
export function fileDigests(fileVips: readonly VipConfig[]): Record<string, string | null> {
  return Object.fromEntries(fileVips.map((v) => [v.id, vipDigest(v)]));
}

/**
 * The state file's document: `{file, vips}`, or the older bare list of VIPs, which is taken as written against the
 * config file as it is now (so its VIPs run, as they did before the digests existed). Null: not a state document.
 */
export function parseState(doc: unknown, fileVips: readonly VipConfig[]): SlbState | null {
  if (Array.isArray(doc)) return { vips: doc as VipConfig[], file: fileDigests(fileVips) };
  if (!doc || typeof doc !== 'object') return null;
  const d = doc as { vips?: unknown; file?: unknown };
  if (!Array.isArray(d.vips) || !d.file || typeof d.file !== 'object' || Array.isArray(d.file)) return null;
  const file = d.file as Record<string, unknown>;
  if (!Object.values(file).every((x) => x === null || typeof x === 'string')) return null;
  return { vips: d.vips as VipConfig[], file: file as Record<string, string | null> };
}

export interface VipOrigin {
  id: string;
  /** Where the running definition comes from; `api` only where it differs from the config file's. */
  from: 'file' | 'api';
  /** Why, in a sentence for the log. */
  why: string;
}

/**
 * The rule: **a VIP runs as the last of the config file and the API to change it.** The API's version (a change,
 * an addition, a deletion) stands while the config file's version of that VIP is the one the API's change was
 * made against; once the file changes that VIP (an edit, an addition, a removal), the file's version runs, and a
 * later API change stands again. So an operator's edit of the file is never ignored, and the API's changes
 * survive restarts; `fwlb-slb export` writes the running VIPs as a config file to fold them back in.
 */
export function mergeVips(fileVips: readonly VipConfig[], state: SlbState): { vips: VipConfig[]; origins: VipOrigin[] } {
  const file = new Map(fileVips.map((v) => [v.id, v]));
  const api = new Map(state.vips.map((v) => [v.id, v]));
  const ids = [...new Set([...file.keys(), ...api.keys()])];
  const vips: VipConfig[] = [];
  const origins: VipOrigin[] = [];
  for (const id of ids) {
    const f = file.get(id);
    const a = api.get(id);
    const fd = vipDigest(f);
    const unchanged = id in state.file && state.file[id] === fd;
    const v = unchanged ? a : f;
    if (v) vips.push(v);
    if (!unchanged) {
      if (vipDigest(a) !== fd)
        origins.push({
          id,
          from: 'file',
          why: f
            ? `the config file ${id in state.file ? (state.file[id] ? 'changed' : 'added') : 'has'} it since the API's last change: the file's version runs`
            : "the config file removed it since the API's last change: it does not run",
        });
    } else if (vipDigest(a) !== fd)
      origins.push({
        id,
        from: 'api',
        why: a
          ? `${f ? 'changed' : 'added'} through the API, the config file's version unchanged since: the API's version runs`
          : "deleted through the API, the config file's version unchanged since: it does not run",
      });
  }
  return { vips, origins };
}

/** What the state file records with the VIPs: the config file's digests (see fileDigests), and null for VIPs only the API has. */
export function stateFileDigests(fileDigests: Readonly<Record<string, string | null>>, vips: readonly VipConfig[]): Record<string, string | null> {
  const out = { ...fileDigests };
  for (const v of vips) if (!(v.id in out)) out[v.id] = null;
  return out;
}
