// Renders the VIPs HAProxy serves (L7 VIPs, mode http, and proxied TCP VIPs, mode tcp) as one HAProxy config, its
// rule maps and its servers, and the runtime API commands that take a running HAProxy from one rendering to the next
// without a reload; pure layer of libs/slb.
//
// How a request finds its pool: the frontend builds one match key per request, HAProxy's `base` (Host header and
// path), a 0x01 byte, then for each header name the VIP's rules use, that header's value and a 0x01. Each rule is a
// regex over that key in the VIP's map, in rule order, and `map_reg` returns the first that matches (a list, looked
// up in order). HTTP forbids control characters in the host, path and header values (HAProxy refuses such a request),
// so the key holds exactly one 0x01 more than it has header slots and no part of a rule can match across a slot. A rule change
// is a new map, swapped in whole and at once (`prepare map` / `add map @version` / `commit map`): no reload, and
// no request ever sees half a rule list.
import { createHash } from 'node:crypto';
import type { ResolvedL7Vip, ResolvedMember, ResolvedVip, RuleConfig, SlbPeer } from '@fwlb/config';
import { isL7 } from '@fwlb/config';
import { hostPort } from '@fwlb/flowhash';

export interface L7Paths {
  /** Directory of the rendered config, the maps and the sockets. */
  dir: string;
  /** The SLB group (`haproxy.peers`): the stick tables are shared with these peers; `localPeer` is this node's name. */
  peers?: readonly SlbPeer[];
  localPeer?: string;
}

/** The peers section's name: the stick tables name it. */
export const PEERS_SECTION = 'fwlb';

export type ServerState = 'ready' | 'drain' | 'maint';

export interface ServerWant {
  backend: string;
  name: string;
  address: string;
  port: number;
  weight: number;
  /** The pool inserts a persistence cookie (HAProxy derives each server's from its address, port and the VIP's key). */
  cookie: boolean;
  state: ServerState;
  /** The member expects a PROXY protocol header with the client's address (`proxyProtocol`). */
  proxy?: 'v1' | 'v2';
}

/** What HAProxy should run: its structure (a change there needs a reload), and what the runtime API can change. */
export interface L7Want {
  /** The config without server lines: when it differs from the running one, HAProxy reloads. */
  skeleton: string;
  /** The full config (skeleton plus servers in their current state): what a start or reload loads. */
  config: string;
  /** Map file → entries (regex key, backend) in rule order. */
  maps: Map<string, [string, string][]>;
  /** `backend/server` → server. */
  servers: Map<string, ServerWant>;
  /** The stick tables that count each VIP's requests per rule (`show table`). */
  tables: string[];
  /** The pools in panic: too few of their members look up to believe the checks, every enabled member takes requests. */
  panics: L7Panic[];
}

export interface L7Panic {
  vip: string;
  pool: string;
  healthy: number;
  enabled: number;
  threshold: number;
}

/**
 * A rule's counter key: a digest of what it matches and where it sends, so its count follows it when rules are
 * reordered (a rule is unique within its VIP: a duplicate never matches and is refused). `-`: no rule matched.
 */
export function ruleId(r: RuleConfig): string {
  const canon = JSON.stringify([r.host ?? null, r.path ?? null, r.pathRegex ?? null, r.header ? [r.header.name.toLowerCase(), r.header.value] : null, r.pool]);
  return `r${createHash('sha256').update(canon).digest('hex').slice(0, 10)}`;
}
export const ruleTable = (vip: string) => `st.${vip}`;

export const frontendName = (vip: string) => `f.${vip}`;
export const backendName = (vip: string, pool: string) => `b.${vip}.${pool}`;
/** The one backend of a proxied TCP VIP (it has no pools: every member is in it). */
export const TCP_POOL = 'tcp';
/** The backend a member's connections go to: its pool's, or its proxied TCP VIP's. */
export const memberBackend = (vip: string, m: { pool?: string }) => backendName(vip, m.pool ?? TCP_POOL);
/**
 * How long a proxied TCP connection may stay idle: its service is not known (a database, a terminal), so HAProxy's
 * HTTP-sized 30 s would end quiet sessions that the members themselves keep.
 */
export const TCP_IDLE_TIMEOUT = '1h';
/** Names allow letters, digits and `-_.:`; the member's address and port make it stable and readable. */
export const serverName = (m: { address: string; port: number }) => `${m.address}_${m.port}`;
export const mapFile = (p: L7Paths, vip: string) => `${p.dir}/${vip}.map`;
/** The counter key of requests no rule matched. */
export const DEFAULT_RULE = '-';
export const adminSocket = (p: L7Paths) => `${p.dir}/admin.sock`;
export const masterSocket = (p: L7Paths) => `${p.dir}/master.sock`;
export const configFile = (p: L7Paths) => `${p.dir}/haproxy.cfg`;

/**
 * The key of a VIP's dynamic persistence cookies: HAProxy hashes it with a server's address and port, so the cookie
 * does not show the address, every node renders the same one, and a server added at runtime gets its cookie too
 * (2.6 refuses a fixed `cookie` on a dynamic server).
 */
export function cookieKey(vip: string): string {
  return createHash('sha256').update(`fwlb-cookie/${vip}`).digest('hex').slice(0, 32);
}

/** Regex-escapes text: letters, digits, `_`, `/` and `-` stay; everything else is written by its code (`\x2e`). */
export function escapeRegex(s: string): string {
  let out = '';
  for (const ch of s) {
    if (/[A-Za-z0-9_/-]/.test(ch)) out += ch;
    else out += `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** The header names a VIP's rules use, lower case, in order of first use: one slot each in the match key. */
export function headerSlots(rules: readonly RuleConfig[]): string[] {
  const names: string[] = [];
  for (const r of rules) if (r.header && !names.includes(r.header.name.toLowerCase())) names.push(r.header.name.toLowerCase());
  return names;
}

/** One rule as an anchored regex over the match key (see the top of this file). */
export function ruleKey(r: RuleConfig, slots: readonly string[]): string {
  const port = '(?::[0-9]+)?';
  let host = '[^/\\x01]*';
  if (r.host !== undefined) {
    const h = r.host.toLowerCase();
    host = h.startsWith('*.') ? `(?i:[^/:\\x01]+${escapeRegex(h.slice(1))})${port}` : `(?i:${escapeRegex(h)})${port}`;
  }
  let path = '[^\\x01]*';
  if (r.path !== undefined) path = `${escapeRegex(r.path)}[^\\x01]*`;
  else if (r.pathRegex !== undefined) path = `(?:${r.pathRegex})`;
  const tail = slots.map((name) => `${r.header && r.header.name.toLowerCase() === name ? escapeRegex(r.header.value) : '[^\\x01]*'}\\x01`).join('');
  return `^${host}${path}\\x01${tail}$`;
}

/** Whether a member takes new requests (`ready`), only its persistent ones (`drain`), or none (`maint`: down). */
export function serverState(m: ResolvedMember, up: boolean): ServerState {
  if (!up) return 'maint';
  return m.state === 'drain' ? 'drain' : 'ready';
}

const SCHEDULER = { rr: 'roundrobin', leastconn: 'leastconn', source: 'source' } as const;

/** A server line as a start or reload loads it; the runtime API then keeps its weight and state. */
function serverLine(s: ServerWant): string {
  const parts = [`  server ${s.name} ${hostPort(s.address, s.port)} weight ${s.state === 'drain' ? 0 : s.weight}${proxyKeyword(s)}`];
  if (s.state === 'maint') parts.push('disabled');
  return parts.join(' ');
}

/** HAProxy's keyword for a member's PROXY protocol header, on a server line and on a runtime `add server`. */
const proxyKeyword = (s: ServerWant) => (s.proxy === 'v2' ? ' send-proxy-v2' : s.proxy === 'v1' ? ' send-proxy' : '');

/** The global and defaults sections, and the group's peers. */
function globalLines(p: L7Paths, peered: boolean): string[] {
  return [
    '# Rendered by fwlb-slb: do not edit. Servers, weights, states and the rule maps change through the runtime API.',
    'global',
    `  stats socket ${adminSocket(p)} mode 600 level admin expose-fd listeners`,
    '  stats timeout 30s',
    ...(peered ? [`  localpeer ${p.localPeer}`] : []),
    'defaults',
    '  mode http',
    '  option dontlognull',
    '  option redispatch',
    '  retries 2',
    '  timeout connect 2s',
    '  timeout client 30s',
    '  timeout server 30s',
    '  timeout http-request 10s',
    '  timeout http-keep-alive 5s',
    ...(peered ? [`peers ${PEERS_SECTION}`, ...p.peers!.map((x) => `  peer ${x.name} ${hostPort(x.address, x.port)}`)] : []),
  ];
}

/**
 * A VIP's frontend: the match key built per request, the rule map looked up with it, and the stick table that counts
 * each rule's requests.
 */
function frontendLines(v: ResolvedL7Vip, slots: string[], file: string, share: string): string[] {
  // base, 0x01, then each header slot's value followed by 0x01.
  const key = ['base', 'concat(,txn.fwlb_sep,)', ...slots.flatMap((_, i) => [`concat(,txn.fwlb_h${i},)`, 'concat(,txn.fwlb_sep,)'])].join(',');
  return [
    `frontend ${frontendName(v.id)}`,
    `  bind ${hostPort(v.address, v.port)} transparent${v.tls ? ` ssl crt ${v.tls.certificate}` : ''}`,
    ...(v.forwardedFor ? ['  option forwardfor'] : []),
    '  http-request set-var(txn.fwlb_sep) bin(01)',
    ...slots.map((name, i) => `  http-request set-var(txn.fwlb_h${i}) req.fhdr(${name})`),
    `  http-request set-var(txn.fwlb_key) ${key}`,
    // The map gives "<rule id>:<backend>": the rule's request counter, then the pool (rule ids and backend names hold no ':').
    `  http-request set-var(txn.fwlb_hit) var(txn.fwlb_key),map_reg(${file},${DEFAULT_RULE}:${backendName(v.id, v.defaultPool)})`,
    `  http-request track-sc0 var(txn.fwlb_hit),field(1,:) table ${ruleTable(v.id)}`,
    '  use_backend %[var(txn.fwlb_hit),field(2,:)]',
    `  default_backend ${backendName(v.id, v.defaultPool)}`,
    `backend ${ruleTable(v.id)}`,
    // A fixed size (the most rules a VIP has, plus "no rule"): a size that followed the rules would make every rule
    // change structural, a reload.
    `  stick-table type string len 16 size 512 store http_req_cnt${share}`,
  ];
}

/** A proxied TCP VIP's frontend: every connection to its one backend. */
function tcpFrontendLines(v: ResolvedVip): string[] {
  return [
    `frontend ${frontendName(v.id)}`,
    '  mode tcp',
    `  bind ${hostPort(v.address, v.port)} transparent`,
    `  timeout client ${TCP_IDLE_TIMEOUT}`,
    `  default_backend ${backendName(v.id, TCP_POOL)}`,
  ];
}

/** A proxied TCP VIP's one pool: HAProxy's round robin, or `sh` as a consistent hash of the client's address. */
const tcpPool = (v: ResolvedVip): L7Pool => ({ name: TCP_POOL, scheduler: v.scheduler === 'sh' ? 'source' : 'rr', persistence: 'none' });

/**
 * Renders every VIP HAProxy serves (L7 and proxied TCP VIPs; `vips` holds no other). `up(vip, member)` is the
 * member's health as fwlb's checks see it: HAProxy's own checks are off, fwlb decides and pushes the state.
 */
export function renderL7(vips: readonly ResolvedVip[], up: (v: ResolvedVip, m: ResolvedMember) => boolean, p: L7Paths): L7Want {
  const peered = !!p.peers?.length;
  // Shared with the group's other nodes (HAProxy's peers protocol pushes every change of an entry to them).
  const share = peered ? ` peers ${PEERS_SECTION}` : '';
  const full = globalLines(p, peered);
  const maps = new Map<string, [string, string][]>();
  const servers = new Map<string, ServerWant>();
  const tables: string[] = [];
  const panics: L7Panic[] = [];
  const addPool = (v: ResolvedVip, pool: L7Pool) => {
    const b = renderPool(v, pool, up, share);
    full.push(...b.lines);
    for (const sv of b.servers) servers.set(`${sv.backend}/${sv.name}`, sv);
    if (b.panic) panics.push(b.panic);
  };
  for (const v of vips) {
    if (!isL7(v)) {
      full.push(...tcpFrontendLines(v));
      addPool(v, tcpPool(v));
      continue;
    }
    const slots = headerSlots(v.rules);
    const file = mapFile(p, v.id);
    tables.push(ruleTable(v.id));
    full.push(...frontendLines(v, slots, file, share));
    maps.set(
      file,
      v.rules.map((r) => [ruleKey(r, slots), `${ruleId(r)}:${backendName(v.id, r.pool)}`]),
    );
    for (const pool of v.pools) addPool(v, pool);
  }
  // The skeleton is the config without its server lines: what only a reload can change.
  const skeleton = full.filter((l) => !l.startsWith('  server '));
  return { skeleton: skeleton.join('\n') + '\n', config: full.join('\n') + '\n', maps, servers, tables, panics };
}

type L7Pool = ResolvedL7Vip['pools'][number];

/**
 * One pool's backend: its lines (servers included) and its servers' states. Panic (Envoy's, as for L4 VIPs, here per
 * pool): when fewer than `panicThreshold` of the pool's enabled members look up, the checks are not believed and
 * every enabled member takes requests. A pool of one member whose checks time out on a busy node keeps serving; one
 * that is really gone answers 503 either way.
 */
function renderPool(
  v: ResolvedVip,
  pool: L7Pool,
  up: (v: ResolvedVip, m: ResolvedMember) => boolean,
  share: string,
): { lines: string[]; servers: ServerWant[]; panic: L7Panic | null } {
  const lines = [`backend ${backendName(v.id, pool.name)}`];
  if (!isL7(v)) lines.push('  mode tcp', `  timeout server ${TCP_IDLE_TIMEOUT}`);
  lines.push(`  balance ${SCHEDULER[pool.scheduler]}`);
  // Servers come and go through the runtime API, which a map-based hash does not allow.
  if (pool.scheduler === 'source' || pool.persistence === 'source') lines.push('  hash-type consistent');
  if (pool.persistence === 'cookie')
    lines.push(`  cookie FWLB_${v.id.replace(/-/g, '_')} insert indirect nocache httponly dynamic`, `  dynamic-cookie-key ${cookieKey(v.id)}`);
  // Source persistence's entries name a server by its id: every node of a group renders the same config, so the
  // same server gets the same id (in config order) on each.
  if (pool.persistence === 'source') lines.push(`  stick-table type ip size 200k expire 30m${share}`, '  stick on src');
  const members = v.members.filter((x) => (x.pool ?? TCP_POOL) === pool.name);
  const health = new Map(members.map((m) => [m, up(v, m)]));
  const enabled = members.filter((m) => m.state === 'enabled').length;
  const healthy = members.filter((m) => m.state === 'enabled' && health.get(m)).length;
  const panic = inPanic(v.panicThreshold, enabled, healthy) ? { vip: v.id, pool: pool.name, healthy, enabled, threshold: v.panicThreshold } : null;
  const servers = members.map((m): ServerWant => ({
    backend: backendName(v.id, pool.name),
    name: serverName(m),
    address: m.address,
    port: m.port,
    weight: m.weight,
    cookie: pool.persistence === 'cookie',
    state: serverState(m, health.get(m)! || (panic !== null && m.state === 'enabled')),
    ...(m.proxyProtocol ? { proxy: m.proxyProtocol } : {}),
  }));
  lines.push(...servers.map(serverLine));
  return { lines, servers, panic };
}

/** Whether a pool is in panic: fewer than `threshold` (0 to 1; 0: never) of its `enabled` members are `healthy`. */
export function inPanic(threshold: number, enabled: number, healthy: number): boolean {
  return threshold > 0 && enabled > 0 && healthy < threshold * enabled;
}

/** A map file's text: one `regex backend` line per rule, in order. */
export function mapText(entries: readonly [string, string][]): string {
  return entries.map(([k, v]) => `${k} ${v}\n`).join('');
}

/** An argument of the runtime CLI: spaces, `;` and backslashes are escaped by a backslash. */
export function cliArg(s: string): string {
  return s.replace(/[\\; ]/g, (c) => `\\${c}`);
}

/**
 * The runtime commands that take HAProxy's servers from `have` to `want` (same skeleton): removed servers are put in
 * maintenance, then deleted once their requests in flight are done (the engine waits, see `delServer`); added ones
 * are created (they start in maintenance) and then get their state; weights and states that differ are set. Map
 * changes are separate (`mapsChanged`: a versioned swap).
 */
export function serverCommands(have: ReadonlyMap<string, ServerWant>, want: ReadonlyMap<string, ServerWant>): string[] {
  const out: string[] = [];
  for (const id of have.keys()) {
    if (want.has(id)) continue;
    out.push(`set server ${id} state maint`, `del server ${id}`);
  }
  const cookies = new Set<string>();
  for (const [id, s] of want) {
    let h = have.get(id);
    // A server's PROXY header cannot be changed at runtime: the server goes (its requests in flight finish) and
    // comes back with it.
    if (h && h.proxy !== s.proxy) {
      out.push(`set server ${id} state maint`, `del server ${id}`);
      h = undefined;
    }
    if (!h) {
      out.push(`add server ${id} ${hostPort(s.address, s.port)} weight ${s.weight}${proxyKeyword(s)}`);
      if (s.cookie) cookies.add(s.backend);
      if (s.state !== 'maint') out.push(`set server ${id} state ${s.state}`);
      continue;
    }
    if (h.weight !== s.weight) out.push(`set server ${id} weight ${s.weight}`);
    if (h.state !== s.state) out.push(`set server ${id} state ${s.state}`);
  }
  // A server added at runtime gets its dynamic cookie when the backend's cookies are generated again.
  for (const b of cookies) out.push(`enable dynamic-cookie backend ${b}`);
  return out;
}

/** The map files whose entries differ between two renderings. */
export function mapsChanged(have: ReadonlyMap<string, [string, string][]>, want: ReadonlyMap<string, [string, string][]>): string[] {
  return [...want].filter(([f, e]) => JSON.stringify(have.get(f) ?? null) !== JSON.stringify(e)).map(([f]) => f);
}
