// The shared state the nodes agree through, as documents: the bucket-table epoch, a firewall's admin state, and
// which firewalls every node sees up or down. Strict decoders: what Redis holds is untrusted. Pure layer of
// libs/session-table.
export interface EpochDoc {
  epoch: number;
  /** The counter's history (see PUBLISH_EPOCH in scripts.ts); a new generation restarts the numbering. */
  generation: string;
  /** Firewall ids in the agreed membership, those that carry new sessions, and those every node sees down. */
  members: string[];
  live: string[];
  down: string[];
  /** Who computed it and when. */
  by: string;
  at: number;
  /** Firewalls `live` that the previous epoch did not have take new sessions from this time on (ms since the epoch). */
  joinAt?: number;
}

/** A firewall's shared admin state: `enabled` from `at` (ms since the epoch) on. */
export interface AdminState {
  enabled: boolean;
  at: number;
}

/** "1 1764670000000" (or "1" as written before times were shared: in force since ever). */
export function decodeAdmin(v: unknown): AdminState | null {
  const m = typeof v === 'string' ? /^([01])(?: (\d{1,15}))?$/.exec(v) : null;
  return m ? { enabled: m[1] === '1', at: m[2] ? Number(m[2]) : 0 } : null;
}

const IDS = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 4096 && v.every((x) => typeof x === 'string' && /^[A-Za-z0-9_-]{1,32}$/.test(x));

/** Strict decode of an epoch document read back from Redis (untrusted): null unless every field is sound. */
export function decodeEpoch(text: string): EpochDoc | null {
  let d: Record<string, unknown>;
  try {
    d = JSON.parse(text);
  } catch {
    return null;
  }
  if (!d || typeof d !== 'object') return null;
  const { epoch, generation, members, live, by, at, joinAt } = d;
  const down = d.down ?? [];
  if (
    !Number.isSafeInteger(epoch) ||
    (epoch as number) < 1 ||
    typeof generation !== 'string' ||
    !IDS(members) ||
    !IDS(live) ||
    !IDS(down) ||
    typeof by !== 'string' ||
    typeof at !== 'number'
  )
    return null;
  if (joinAt !== undefined && !(Number.isSafeInteger(joinAt) && (joinAt as number) >= 0)) return null;
  return { epoch: epoch as number, generation, members, live, down, by, at, ...(joinAt !== undefined ? { joinAt: joinAt as number } : {}) };
}

/**
 * The nodes whose views count: those that published a (fresh) view with at least one firewall in it. An empty view
 * is an abstention: a node cut off from every firewall (all its links down) forwards nothing, and its view would
 * otherwise veto every firewall for the nodes that still forward.
 */
export function voters(views: Record<string, Record<string, boolean>>): string[] {
  return Object.keys(views).filter((n) => Object.keys(views[n]).length > 0);
}

/** Firewalls every node sees down (the ones whose flows may be re-hashed): none when no node has a view. */
export function agreedDown(views: Record<string, Record<string, boolean>>, firewalls: string[], nodes: string[] = voters(views)): string[] {
  if (!nodes.length) return [];
  return firewalls.filter((fw) => nodes.every((n) => views[n]?.[fw] === false));
}

/**
 * Firewalls every node sees up: a firewall carries new sessions only when every node agrees. `nodes` defaults to
 * the voters (nodes with a fresh, non-empty view), so a twin that has not started yet does not veto everything.
 */
export function agreedUp(views: Record<string, Record<string, boolean>>, firewalls: string[], nodes: string[] = voters(views)): string[] {
  return firewalls.filter((fw) => nodes.every((n) => views[n]?.[fw] === true));
}
