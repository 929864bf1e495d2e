// BIRD 2's configuration for a node's BGP sessions, and the announce table's contract with it; pure layer of libs/routing.

/**
 * What a node announces depends on its state, and the state is carried to the routing daemon by the metric of the
 * announce table's routes: the daemon's export filter prepends the node's AS by it. A node never withdraws by itself
 * (withdrawing the last node would stop traffic): a drained or unfit node becomes less preferred, so the routers
 * leave it while a better node is there and keep it when none is. A dead node is withdrawn by BFD and BGP.
 */
export type AnnounceState = 'fit' | 'drained' | 'unfit';

export const ANNOUNCE_METRIC: Readonly<Record<AnnounceState, number>> = { fit: 100, drained: 200, unfit: 300 };

export function stateOfMetric(metric: number): AnnounceState | null {
  const e = Object.entries(ANNOUNCE_METRIC).find(([, m]) => m === metric);
  return e ? (e[0] as AnnounceState) : null;
}

/** The shape of the balancer config's resolved `bgp` section this needs. */
export interface BirdSpec {
  asn: number;
  routerId: string;
  announceTable: number;
  bfd: { intervalMs: number; multiplier: number };
  holdTimeSeconds: number;
  prepend: { drained: number; unfit: number };
  peers: { name: string; address: string; family: 4 | 6; asn: number; announce: string[]; bfd: boolean }[];
}

/** The daemon's protocol name of a configured peer. */
export const birdProtocol = (peer: string) => `fwlb_${peer}`;

function exportFilter(s: BirdSpec, prefixes: string[]): string {
  const prepends = (n: number) => Array.from({ length: n }, () => `bgp_path.prepend(${s.asn});`).join(' ');
  return [
    `export filter {`,
    `      if ! (net ~ [ ${prefixes.join(', ')} ]) then reject;`,
    `      if krt_metric >= ${ANNOUNCE_METRIC.unfit} then { ${prepends(s.prepend.unfit)} }`,
    `      else if krt_metric >= ${ANNOUNCE_METRIC.drained} then { ${prepends(s.prepend.drained)} }`,
    `      accept;`,
    `    };`,
  ].join('\n');
}

/**
 * The whole configuration file. The daemon learns the announce table (`learn`: routes fwlb added), imports nothing
 * from its peers (a node routes by its own static routes and fwlb's tables) and exports to each peer only its
 * prefixes. Timers: a failed session retries after 1 s (BIRD's default waits a minute, far too long for a node that
 * comes back), and connects again every 2 s.
 */
export function renderBird(s: BirdSpec, node: string): string {
  const families = ([4, 6] as const).filter((f) => s.peers.some((p) => p.family === f));
  const table = (f: 4 | 6) => `fwlb${f}`;
  const out: string[] = [
    `# Written by fwlb (node ${node}) from its bgp section; changes made here are overwritten.`,
    `router id ${s.routerId};`,
    `log syslog all;`,
    '',
    ...families.map((f) => `ipv${f} table ${table(f)};`),
    '',
    `# Interfaces, for the sessions to directly connected peers.`,
    `protocol device { scan time 10; }`,
    '',
    `# The announce table: fwlb keeps a blackhole route per announced prefix there, its metric saying the node's state.`,
  ];
  for (const f of families)
    out.push(
      `protocol kernel fwlb_announce${f} {`,
      `  kernel table ${s.announceTable};`,
      `  learn;`,
      `  scan time 10;`,
      `  ipv${f} { table ${table(f)}; import all; export none; };`,
      `}`,
      '',
    );
  if (s.peers.some((p) => p.bfd))
    out.push(
      `protocol bfd fwlb_bfd {`,
      `  interface "*" { min rx interval ${s.bfd.intervalMs} ms; min tx interval ${s.bfd.intervalMs} ms; multiplier ${s.bfd.multiplier}; };`,
      `}`,
      '',
    );
  for (const p of s.peers)
    out.push(
      `protocol bgp ${birdProtocol(p.name)} {`,
      `  local as ${s.asn};`,
      `  neighbor ${p.address} as ${p.asn};`,
      `  direct;`,
      `  hold time ${s.holdTimeSeconds};`,
      `  keepalive time ${Math.max(1, Math.floor(s.holdTimeSeconds / 3))};`,
      `  connect retry time 2;`,
      `  error wait time 1, 10;`,
      `  bfd ${p.bfd ? 'on' : 'off'};`,
      `  ipv${p.family} {`,
      `    table ${table(p.family)};`,
      `    import none;`,
      `    ${exportFilter(s, p.announce)}`,
      `  };`,
      `}`,
      '',
    );
  return out.join('\n');
}

export interface BirdProtocolState {
  name: string;
  proto: string;
  state: string;
  since: string;
  info: string;
  /** A BGP session that is up (BIRD's info column says `Established`). */
  established: boolean;
}

/** `birdc show protocols` → one entry per protocol (the header line and the banner skipped). */
export function parseBirdProtocols(text: string): BirdProtocolState[] {
  const out: BirdProtocolState[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\S+)\s+(\S+)\s+(\S+)\s+(up|down|start|stop|flush)\s+(\S+(?: \S+)?)\s*(.*)$/.exec(line);
    if (!m || m[1] === 'Name') continue;
    const [, name, proto, , state, since, info] = m;
    out.push({ name, proto, state, since, info: info.trim(), established: proto === 'BGP' && info.startsWith('Established') });
  }
  return out;
}

/** `birdc show bfd sessions` → the state of each session by the peer's address (Up, Down, Init, AdminDown). */
export function parseBfdSessions(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([0-9a-fA-F.:]+)\s+(\S+)\s+(Up|Down|Init|AdminDown)\s/.exec(line);
    if (m) out.set(m[1], m[3]);
  }
  return out;
}

/** The announce table's routes: what to add and what to delete (added first: the daemon never sees a gap). */
export interface AnnouncePlan {
  add: { family: 4 | 6; prefix: string; metric: number }[];
  del: { family: 4 | 6; prefix: string; metric: number }[];
}

export interface AnnouncedRoute {
  family: 4 | 6;
  /** `a.b.c.d/len` or `2001:db8::/len`. */
  prefix: string;
  metric: number;
}

/**
 * What to change so that every prefix is in the table once, with the state's metric (null: nothing announced).
 * Routes of other metrics or prefixes (an older configuration's) are deleted.
 */
export function planAnnounce(prefixes: { family: 4 | 6; prefix: string }[], state: AnnounceState | null, actual: AnnouncedRoute[]): AnnouncePlan {
  const metric = state ? ANNOUNCE_METRIC[state] : null;
  const key = (r: { family: number; prefix: string }) => `${r.family} ${r.prefix}`;
  const want = new Set(metric === null ? [] : prefixes.map(key));
  const plan: AnnouncePlan = { add: [], del: [] };
  for (const p of metric === null ? [] : prefixes) if (!actual.some((a) => key(a) === key(p) && a.metric === metric)) plan.add.push({ ...p, metric: metric! });
  for (const a of actual) if (!want.has(key(a)) || a.metric !== metric) plan.del.push(a);
  return plan;
}
