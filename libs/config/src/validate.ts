// Validates and normalises config documents: ajv first, then the rules JSON Schema cannot say; pure layer of libs/config.
import Ajv, { ErrorObject } from 'ajv';
import addFormats from 'ajv-formats';
import { canonicalAddress, canonicalOrNull, isPrime } from '@fwlb/flowhash';
import { CheckSpec, TimerConfig, TimerConfigError, validateTimers } from '@fwlb/health';
import { ConfigError, FieldProblem } from './errors';
import { ApiTls, BalancerConfig, balancerSchema, FirewallConfig, IdRange, SessionTableConfig } from './balancer-schema';
import { checkSpecProblems, RESERVED_PRIORITIES, RESERVED_TABLES, reservedProblem } from './check-problems';
import { canonicalPrefix, parsePrefix, Prefix, prefixesOverlap, prefixHas } from './address-class';
import { resolveBgp, ResolvedBgp } from './bgp';

/** Compiled on first use: a process compiles only the schemas it validates (compiling costs tens of ms at start). */
export function lazy<T>(f: () => T): () => T {
  let v: T | undefined;
  return () => (v ??= f());
}

const ajv = new Ajv({ allErrors: true, strict: true });
addFormats(ajv, ['ipv4', 'ipv6']);
/** The address format of the schemas: IPv4 or IPv6, any text form (validation then stores the canonical one). */
export const ADDRESS_FORMATS = { 'IPv4 or IPv6': (x: string) => canonicalOrNull(x) !== null };
ajv.addFormat('IPv4 or IPv6', ADDRESS_FORMATS['IPv4 or IPv6']);
const checkBalancer = lazy(() => ajv.compile<BalancerConfig>(balancerSchema));

export function problemsOf(errors: ErrorObject[] | null | undefined): FieldProblem[] {
  return (errors ?? []).map((e) => {
    if (e.keyword === 'additionalProperties') {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      return { field: `${e.instancePath}/${key}`, message: 'unknown key' };
    }
    if (e.keyword === 'required') {
      const key = (e.params as { missingProperty: string }).missingProperty;
      return { field: `${e.instancePath}/${key}`, message: 'is required' };
    }
    if (e.keyword === 'format') return { field: e.instancePath, message: `must be a valid ${(e.params as { format: string }).format} address` };
    return { field: e.instancePath, message: e.message ?? e.keyword };
  });
}

/** A balancer config with every default filled in. Frozen: nothing changes it after start-up. */
export type ResolvedFirewall = Required<Omit<FirewallConfig, 'mac' | 'syncGroup' | 'nextHop6'>> & { mac?: string; syncGroup?: string; nextHop6: string | null };
export type ResolvedBalancerConfig = Readonly<
  Required<Omit<BalancerConfig, 'api' | 'hash' | 'firewalls' | 'health' | 'sessionTable' | 'slb' | 'stateFile' | 'bgp'>> & {
    bgp: ResolvedBgp | null;
    slb: string | null;
    stateFile: string | null;
    sessionTable: (SessionTableConfig & { keyPrefix: string; flushMs: number; resyncSeconds: number; heartbeatSeconds: number }) | null;
    health: { targets: string[]; check: CheckSpec; timers: Required<TimerConfig>; panicThreshold: number } | null;
    hash: Required<BalancerConfig['hash']>;
    firewalls: ResolvedFirewall[];
    api: { listen: string; token?: string; tokenFile?: string; tls?: ApiTls };
  }
>;

/**
 * conntrack's TIME_WAIT timeout fwlb advises on a node with siblings (several nodes per side): an ended connection's
 * entry keeps its firewall's mark for that long, and a new connection that reuses the tuple (a CGNAT client within
 * a second or two) and is moved to this node by the routers before it was answered would be restored to that
 * firewall. A balancer's entry is only a cache of the firewall; the firewalls keep their own TIME_WAIT.
 */
export const TIME_WAIT_ADVICE_SECONDS = 1;

export const BALANCER_DEFAULTS = {
  buckets: 251,
  order: 'canonical' as const,
  marks: { base: 0x10000, size: 256 },
  tables: { base: 1000, size: 256 },
  rulePriorities: { base: 10000, size: 256 },
  ingressLearning: true,
  listen: '127.0.0.1:8480',
  resyncSeconds: 10,
  conntrackAlarmRatio: 0.8,
  handshakeTimeoutSeconds: 10,
  healthTimers: { interval: 500, response: 200, retries: 3, deadInterval: 1000, rise: 2 },
  panicThreshold: 0.5,
};

export function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    Object.values(o).forEach(deepFreeze);
    Object.freeze(o);
  }
  return o;
}

/**
 * Each NAT pool is a valid prefix, belongs to one firewall only (a packet to it can go to one firewall) and holds
 * no firewall's next hop (packets to a next hop from the side would be sent through that firewall).
 */
export function natPoolProblems(firewalls: FirewallConfig[]): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const parsed: { i: number; j: number; p: Prefix; text: string }[] = [];
  firewalls.forEach((fw, i) =>
    (fw.natPools ?? []).forEach((text, j) => {
      const p = parsePrefix(text);
      if ('error' in p) return void problems.push({ field: `/firewalls/${i}/natPools/${j}`, message: p.error });
      if (p.bytes.length === 16 && !fw.nextHop6)
        problems.push({
          field: `/firewalls/${i}/natPools/${j}`,
          message: `${text} is IPv6, and firewall ${fw.id} has no nextHop6: IPv6 is steered only with one`,
        });
      const other = parsed.find((o) => prefixesOverlap(o.p, p));
      if (other)
        problems.push({
          field: `/firewalls/${i}/natPools/${j}`,
          message: `${text} overlaps ${other.text} (/firewalls/${other.i}/natPools/${other.j}, firewall ${firewalls[other.i].id}): an address belongs to one firewall's pool`,
        });
      for (const f of firewalls) {
        for (const hop of [f.nextHop, f.nextHop6]) {
          if (hop && prefixHas(p, hop)) problems.push({ field: `/firewalls/${i}/natPools/${j}`, message: `${text} holds firewall ${f.id}'s next hop ${hop}` });
        }
      }
      parsed.push({ i, j, p, text });
    }),
  );
  return problems;
}

/**
 * IPv6 next hops: on every firewall or on none (an IPv6 flow hashed to a firewall without one would have no path),
 * unicast, and no two the same.
 */
export function nextHop6Problems(firewalls: FirewallConfig[]): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const given = firewalls.filter((f) => f.nextHop6).map((f) => f.id);
  const seen = new Map<string, number>();
  firewalls.forEach((fw, i) => {
    if (!fw.nextHop6) {
      if (given.length)
        problems.push({
          field: `/firewalls/${i}/nextHop6`,
          message: `is required: ${given.join(', ')} ${given.length === 1 ? 'has' : 'have'} one, and every firewall must carry IPv6 or none`,
        });
      return;
    }
    const a = canonicalOrNull(fw.nextHop6);
    if (a === null) return void problems.push({ field: `/firewalls/${i}/nextHop6`, message: `${fw.nextHop6} is not an IPv6 address` });
    if (/^ff/i.test(a) || a === '::' || a === '::1') problems.push({ field: `/firewalls/${i}/nextHop6`, message: `${fw.nextHop6} is not a unicast address` });
    const j = seen.get(`${fw.interface} ${a}`);
    if (j !== undefined)
      problems.push({ field: `/firewalls/${i}/nextHop6`, message: `duplicate next hop ${a} on ${fw.interface} (also /firewalls/${j}/nextHop6)` });
    else seen.set(`${fw.interface} ${a}`, i);
  });
  return problems;
}

/** Firewall ids unique and off the side interface; a shared segment's firewalls told apart by MAC; no sync group of one. */
function firewallProblems(c: BalancerConfig): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const seen = new Map<string, number>();
  c.firewalls.forEach((fw, i) => {
    if (seen.has(fw.id)) problems.push({ field: `/firewalls/${i}/id`, message: `duplicate firewall id "${fw.id}" (also /firewalls/${seen.get(fw.id)}/id)` });
    else seen.set(fw.id, i);
    if (fw.interface === c.sideInterface) problems.push({ field: `/firewalls/${i}/interface`, message: 'must differ from sideInterface' });
  });
  // A shared transit segment (several nodes per side): firewalls on one interface are told apart by their
  // MAC alone, so each needs one, and no two the same.
  c.firewalls.forEach((fw, i) => {
    const shared = c.firewalls.filter((o) => o.interface === fw.interface);
    if (shared.length < 2) return;
    if (!fw.mac) problems.push({ field: `/firewalls/${i}/mac`, message: `is required: interface ${fw.interface} is shared by ${shared.length} firewalls` });
    const j = c.firewalls.findIndex((o) => o !== fw && o.interface === fw.interface && o.mac && fw.mac && o.mac.toLowerCase() === fw.mac.toLowerCase());
    if (j >= 0 && j < i)
      problems.push({ field: `/firewalls/${i}/mac`, message: `duplicate MAC ${fw.mac} on interface ${fw.interface} (also /firewalls/${j}/mac)` });
  });
  // A sync group of one shares state with nobody: almost certainly a typo in a group name.
  const groupSize = new Map<string, number>();
  for (const fw of c.firewalls) if (fw.syncGroup) groupSize.set(fw.syncGroup, (groupSize.get(fw.syncGroup) ?? 0) + 1);
  c.firewalls.forEach((fw, i) => {
    if (fw.syncGroup && groupSize.get(fw.syncGroup) === 1)
      problems.push({ field: `/firewalls/${i}/syncGroup`, message: `sync group "${fw.syncGroup}" has no other firewall` });
  });
  return problems;
}

/** The marks, routing tables and rule priorities fwlb takes: room for every firewall, clear of what the system uses. */
function rangeProblems(c: BalancerConfig, marks: IdRange, buckets: number): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const n = c.firewalls.length;
  const fits = (name: string, r: IdRange) => {
    if (r.size < n) problems.push({ field: `/${name}/size`, message: `must be at least the firewall count (${n})` });
  };
  fits('marks', marks);
  fits('tables', c.tables ?? BALANCER_DEFAULTS.tables);
  fits('rulePriorities', c.rulePriorities ?? BALANCER_DEFAULTS.rulePriorities);
  for (const p of [
    reservedProblem('/tables', c.tables ?? BALANCER_DEFAULTS.tables, RESERVED_TABLES, 'routing tables'),
    reservedProblem('/rulePriorities', c.rulePriorities ?? BALANCER_DEFAULTS.rulePriorities, RESERVED_PRIORITIES, 'rule priorities'),
  ])
    if (p) problems.push(p);
  // Why: the jhash rule leaves the bucket number in the mark on a map miss; it must never look like a firewall mark.
  if (marks.base < buckets) problems.push({ field: '/marks/base', message: `must be >= hash.buckets (${buckets})` });
  return problems;
}

/** The firewall probes: a target, a check fwlb can mark, timers that make sense. Returns the timers (null: invalid). */
function healthProblems(health: NonNullable<BalancerConfig['health']>, problems: FieldProblem[]): Required<TimerConfig> | null {
  let timers: Required<TimerConfig> | null = null;
  if (health.target && health.targets) problems.push({ field: '/health/targets', message: 'give target or targets, not both' });
  if (!health.target && !health.targets) problems.push({ field: '/health/target', message: 'is required (or targets)' });
  if (health.check && 'mark' in health.check) problems.push({ field: '/health/check/mark', message: 'is set per firewall by fwlb' });
  if (health.check) problems.push(...checkSpecProblems(health.check, '/health/check', false));
  try {
    timers = validateTimers(health.timers ?? BALANCER_DEFAULTS.healthTimers);
  } catch (e) {
    if (!(e instanceof TimerConfigError)) throw e;
    problems.push({ field: `/health/timers/${e.field}`, message: e.message.slice(e.field.length + 2) });
  }
  return timers;
}

export function validateBalancerConfig(doc: unknown, source = 'config'): ResolvedBalancerConfig {
  const copy = JSON.parse(JSON.stringify(doc ?? null));
  if (!checkBalancer()(copy)) throw new ConfigError(problemsOf(checkBalancer().errors), source);
  const c = copy as BalancerConfig;
  const problems: FieldProblem[] = [];
  problems.push(...firewallProblems(c));
  problems.push(...natPoolProblems(c.firewalls), ...nextHop6Problems(c.firewalls));
  const st = c.sessionTable;
  const modes = st ? (['url', 'sentinels', 'cluster'] as const).filter((k) => st[k] !== undefined) : [];
  if (modes.length > 1) problems.push({ field: '/sessionTable', message: `give one of url, sentinels and cluster, not ${modes.join(' and ')}` });
  const buckets = c.hash.buckets ?? BALANCER_DEFAULTS.buckets;
  if (!isPrime(buckets)) problems.push({ field: '/hash/buckets', message: `must be prime (Maglev permutations), got ${buckets}` });
  const marks = c.marks ?? BALANCER_DEFAULTS.marks;
  problems.push(...rangeProblems(c, marks, buckets));
  const timers = c.health ? healthProblems(c.health, problems) : null;
  if (c.api?.token && c.api?.tokenFile) problems.push({ field: '/api/token', message: 'give token or tokenFile, not both' });
  if (c.slb && c.role !== 'inside') problems.push({ field: '/slb', message: 'only the inside node runs the SLB tier' });
  const bgp = c.bgp ? resolveBgp(c.bgp, c.tables ?? BALANCER_DEFAULTS.tables, problems) : null;
  if (problems.length) throw new ConfigError(problems, source);
  const resolved: ResolvedBalancerConfig = {
    role: c.role,
    name: c.name ?? c.role,
    sideInterface: c.sideInterface,
    firewalls: c.firewalls.map((f) => ({
      ...f,
      nextHop6: f.nextHop6 ? canonicalAddress(f.nextHop6) : null,
      enabled: f.enabled ?? true,
      natPools: (f.natPools ?? []).map(canonicalPrefix),
    })),
    hash: { seed: c.hash.seed, buckets, order: c.hash.order ?? BALANCER_DEFAULTS.order },
    marks,
    tables: c.tables ?? BALANCER_DEFAULTS.tables,
    rulePriorities: c.rulePriorities ?? BALANCER_DEFAULTS.rulePriorities,
    ingressLearning: c.ingressLearning ?? BALANCER_DEFAULTS.ingressLearning,
    api: { listen: c.api?.listen ?? BALANCER_DEFAULTS.listen, token: c.api?.token, tokenFile: c.api?.tokenFile, ...(c.api?.tls ? { tls: c.api.tls } : {}) },
    resyncSeconds: c.resyncSeconds ?? BALANCER_DEFAULTS.resyncSeconds,
    conntrackAlarmRatio: c.conntrackAlarmRatio ?? BALANCER_DEFAULTS.conntrackAlarmRatio,
    handshakeTimeoutSeconds: c.handshakeTimeoutSeconds ?? BALANCER_DEFAULTS.handshakeTimeoutSeconds,
    slb: c.slb ?? null,
    stateFile: c.stateFile ?? null,
    bgp,
    sessionTable: c.sessionTable ? { keyPrefix: 'fwlb:', flushMs: 100, resyncSeconds: 30, heartbeatSeconds: 2, ...c.sessionTable } : null,
    health:
      c.health && timers
        ? {
            targets: c.health.targets ?? [c.health.target!],
            check: c.health.check ?? { kind: 'icmp' },
            timers,
            panicThreshold: c.health.panicThreshold ?? BALANCER_DEFAULTS.panicThreshold,
          }
        : null,
  };
  return deepFreeze(resolved);
}

/** Validate an API body against a schema; throws ConfigError naming the fields. */
export function compileBodyValidator<T>(schema: object): (body: unknown) => T {
  const check = ajv.compile<T>(schema);
  return (body: unknown) => {
    if (!check(body)) throw new ConfigError(problemsOf(check.errors), 'request body');
    return body;
  };
}
