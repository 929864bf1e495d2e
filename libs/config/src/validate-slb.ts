// Validates the SLB tier's config and its VIP changes: ajv first, then what JSON Schema cannot say; pure layer of libs/config.
import Ajv from 'ajv';
import { addressProblem } from './address-class';
import { checkSpecProblems } from './check-problems';
import addFormats from 'ajv-formats';
import { canonicalAddress, canonicalOrNull, familyOf, hostPort, splitHostPort } from '@fwlb/flowhash';
import { CheckSpec, DEFAULT_REGEX_MS_PER_SECOND, TimerConfig, TimerConfigError, validateTimers } from '@fwlb/health';
import { checkDemand, DEFAULT_CHECKS_PER_SECOND, overBudget } from './check-budget';
import { ConfigError, FieldProblem } from './errors';
import { ADDRESS_FORMATS, problemsOf, deepFreeze, lazy } from './validate';
import type { ApiTls } from './balancer-schema';
import { MemberState, RuleConfig, SlbConfig, slbSchema, VipConfig, vipSchema } from './slb-schema';
import type { ResolvedVip } from './slb-resolved';

// References are not inlined: the config's validator calls the VIP validator, so compiling the config's compiles
// the VIP's too, once (inlined, the two compiled the VIP schema each, about 0.1 s at every start).
const ajv = new Ajv({ allErrors: true, strict: true, inlineRefs: false });
addFormats(ajv, ['ipv4']);
ajv.addFormat('IPv4 or IPv6', ADDRESS_FORMATS['IPv4 or IPv6']);
ajv.addSchema({ $id: 'fwlb/vip', ...vipSchema });
/** slbSchema with its VIPs as a reference to the VIP schema (relative to slbSchema's id `fwlb/slb-config`). */
const slbChecked = { ...slbSchema, properties: { ...slbSchema.properties, vips: { ...slbSchema.properties.vips, items: { $ref: 'vip' } } } };
const checkSlb = lazy(() => ajv.compile<SlbConfig>(slbChecked));
const checkVip = lazy(() => {
  checkSlb();
  return ajv.getSchema<VipConfig>('fwlb/vip')!;
});

/** Compiles the VIP body validator now (with the config's, if that was not compiled yet), so that the first API change does not pay for it. */
export function compileVipValidator(): void {
  checkVip();
}

export type ResolvedSlbConfig = Readonly<{
  name: string;
  interface: string;
  table: string;
  seed: number;
  api: { listen: string; token?: string; tokenFile?: string; tls?: ApiTls };
  stateFile?: string;
  resyncSeconds: number;
  countersSeconds: number;
  vips: readonly ResolvedVip[];
  /** What the node's health checks may cost: checks per second, and regex time per second (see check-budget.ts). */
  checkBudget: { checksPerSecond: number; regexMsPerSecond: number };
  haproxy: { dir: string; binary: string; peers: readonly SlbPeer[] };
}>;

/** An SLB node of the group, as HAProxy's peers section names it. */
export type SlbPeer = Readonly<{ name: string; address: string; port: number }>;
/** The port of HAProxy's peers protocol when a peer names none. */
export const DEFAULT_PEER_PORT = 10000;

export const SLB_DEFAULTS = {
  name: 'slb',
  table: 'fwlb_slb',
  seed: 0,
  listen: '127.0.0.1:8481',
  resyncSeconds: 10,
  countersSeconds: 2,
  scheduler: 'rr' as const,
  check: { kind: 'tcp' } as CheckSpec,
  timers: { interval: 1000, response: 500, retries: 3, deadInterval: 2000, rise: 2 } as TimerConfig,
  weight: 1,
  state: 'enabled' as MemberState,
};

/** A member's stable key within its VIP: `address:port`, `[address]:port` for IPv6 (canonical addresses). */
export const memberKey = (m: { address: string; port: number }): string => hostPort(m.address, m.port);

/** The member key an operator typed (`address:port`, `[IPv6]:port`, any IPv6 text form) in canonical form. */
export function memberKeyOf(text: string): string {
  const [a, port] = splitHostPort(text);
  const c = canonicalOrNull(a);
  return c ? hostPort(c, port) : text;
}

/** The VIP and its members with their addresses in canonical form (IPv6 per RFC 5952), so that keys compare. */
function canonicalVip(v: VipConfig): VipConfig {
  return {
    ...v,
    address: canonicalOr(v.address),
    members: v.members.map((m) => ({ ...m, address: canonicalOr(m.address) })),
    ...(v.snat ? { snat: v.snat.address ? { address: canonicalOr(v.snat.address) } : {} } : {}),
  };
}

/** An address in canonical form; anything that is not one as given (the schema has refused it already). */
const canonicalOr = (a: string) => canonicalOrNull(a) ?? a;

function resolveVip(given: VipConfig, at: string, problems: FieldProblem[]): ResolvedVip | null {
  const v = canonicalVip(given);
  const seen = new Map<string, number>();
  const special = addressProblem(`${at}/address`, v.address);
  if (special) problems.push(special);
  const family = familyOf(v.address);
  v.members.forEach((m, i) => {
    const bad = addressProblem(`${at}/members/${i}/address`, m.address);
    if (bad) problems.push(bad);
    // DNAT keeps the family: an L4 VIP's member must be in it. HAProxy opens its own connection, so the members of a
    // VIP it serves may be in either.
    if (!proxied(v) && familyOf(m.address) !== family) {
      problems.push({
        field: `${at}/members/${i}/address`,
        message: `${m.address} is IPv${familyOf(m.address)} but the VIP ${v.address} is IPv${family}: an L4 VIP's members are in its family (a VIP HAProxy serves, mode "http" or "tcp", may mix them)`,
      });
    }
    const k = memberKey(m);
    if (seen.has(k)) problems.push({ field: `${at}/members/${i}`, message: `duplicate member ${k} (also ${at}/members/${seen.get(k)})` });
    else seen.set(k, i);
    if (m.address === v.address) problems.push({ field: `${at}/members/${i}/address`, message: 'must differ from the VIP address' });
  });
  if (v.snat?.address) {
    const bad = addressProblem(`${at}/snat/address`, v.snat.address);
    if (bad) problems.push(bad);
    else if (familyOf(v.snat.address) !== family)
      problems.push({ field: `${at}/snat/address`, message: `${v.snat.address} is not in the VIP's family (IPv${family})` });
  }
  if (v.check) problems.push(...checkSpecProblems(v.check, `${at}/check`, true));
  let timers: Required<TimerConfig> | null = null;
  try {
    timers = validateTimers(v.timers ?? SLB_DEFAULTS.timers);
  } catch (e) {
    if (!(e instanceof TimerConfigError)) throw e;
    problems.push({ field: `${at}/timers/${e.field}`, message: e.message.slice(e.field.length + 2) });
  }
  const l7 = v.mode === 'http' ? resolveL7(v, at, problems) : v.mode === 'tcp' ? resolveTcp(v, at, problems) : l4Only(v, at, problems);
  if (!timers) return null;
  return {
    id: v.id,
    address: v.address,
    port: v.port,
    protocol: v.protocol,
    scheduler: v.scheduler ?? SLB_DEFAULTS.scheduler,
    check: v.check ?? SLB_DEFAULTS.check,
    timers,
    panicThreshold: v.panicThreshold ?? 0,
    members: v.members.map((m) => ({
      address: m.address,
      port: m.port,
      weight: m.weight ?? SLB_DEFAULTS.weight,
      state: m.state ?? SLB_DEFAULTS.state,
      ...(m.pool !== undefined ? { pool: m.pool } : {}),
      ...(m.proxyProtocol !== undefined ? { proxyProtocol: m.proxyProtocol } : {}),
    })),
    ...(v.snat ? { snat: v.snat } : {}),
    ...l7,
  };
}

const L7_ONLY = ['pools', 'rules', 'defaultPool', 'forwardedFor', 'tls'] as const;

const proxied = (v: VipConfig) => v.mode === 'http' || v.mode === 'tcp';

/** A VIP that is not an L7 VIP carries none of the L7 fields (they would be silently ignored). */
function noL7Fields(v: VipConfig, at: string, problems: FieldProblem[]): void {
  for (const k of L7_ONLY) if (v[k] !== undefined) problems.push({ field: `${at}/${k}`, message: 'is for L7 VIPs only (mode "http")' });
  v.members.forEach((m, i) => {
    if (m.pool !== undefined) problems.push({ field: `${at}/members/${i}/pool`, message: 'is for members of L7 VIPs only (mode "http")' });
  });
}

/** An L4 VIP: no L7 fields, and no PROXY header (nothing is put in front of a stream the kernel forwards). */
function l4Only(v: VipConfig, at: string, problems: FieldProblem[]): object {
  noL7Fields(v, at, problems);
  v.members.forEach((m, i) => {
    if (m.proxyProtocol !== undefined)
      problems.push({
        field: `${at}/members/${i}/proxyProtocol`,
        message:
          'is for members of VIPs HAProxy serves (mode "http" or "tcp"): an L4 VIP forwards the packets as they are; the member sees the client\'s address unless the VIP has snat',
      });
  });
  return {};
}

/**
 * A proxied TCP VIP (mode tcp): HAProxy ends each connection on this node and opens its own to a member, so the
 * scheduler is HAProxy's (`rr`, `sh`; `flow`, a choice other SLB nodes would repeat for the same packets, means
 * nothing for a connection that cannot move), and snat is what it does anyway.
 */
function resolveTcp(v: VipConfig, at: string, problems: FieldProblem[]): Partial<ResolvedVip> {
  noL7Fields(v, at, problems);
  if (v.protocol !== 'tcp') problems.push({ field: `${at}/protocol`, message: 'must be "tcp" for a proxied TCP VIP (mode "tcp")' });
  if (v.scheduler === 'flow')
    problems.push({
      field: `${at}/scheduler`,
      message: 'must be "rr" or "sh" for mode "tcp": HAProxy ends each connection on this node, so it cannot move to another SLB node',
    });
  if (v.snat)
    problems.push({ field: `${at}/snat`, message: "is for L4 VIPs only: a proxied VIP's connections to its members leave from HAProxy on this node" });
  return { mode: 'tcp' };
}

/** Host names compare without case; `*.example.com` covers every name under example.com (not example.com itself). */
function hostCovers(outer: string | undefined, inner: string | undefined): boolean {
  if (outer === undefined) return true;
  if (inner === undefined) return false;
  const o = outer.toLowerCase();
  const i = inner.toLowerCase();
  if (o === i) return true;
  if (!o.startsWith('*.')) return false;
  const suffix = o.slice(1);
  return i.endsWith(suffix) && i.length > suffix.length;
}

/** Whether every request rule `b` matches is matched by `a` too (so, with `a` first, `b` never matches). */
export function ruleCovers(a: RuleConfig, b: RuleConfig): boolean {
  if (!hostCovers(a.host, b.host)) return false;
  if (a.pathRegex !== undefined) {
    if (a.pathRegex !== b.pathRegex) return false;
  } else if (a.path !== undefined && !(b.path !== undefined && b.path.startsWith(a.path))) return false;
  if (a.header) {
    if (!b.header || a.header.name.toLowerCase() !== b.header.name.toLowerCase() || a.header.value !== b.header.value) return false;
  }
  return true;
}

/** An L7 VIP's pools: each name once, each pool's own check and timers valid. */
function poolNames(pools: NonNullable<VipConfig['pools']>, at: string, problems: FieldProblem[]) {
  const names = new Map<string, number>();
  const poolTimers = new Map<string, Required<TimerConfig>>();
  pools.forEach((p, i) => {
    if (p.check) problems.push(...checkSpecProblems(p.check, `${at}/pools/${i}/check`, true));
    if (p.timers) {
      try {
        poolTimers.set(p.name, validateTimers(p.timers));
      } catch (e) {
        if (!(e instanceof TimerConfigError)) throw e;
        problems.push({ field: `${at}/pools/${i}/timers/${e.field}`, message: e.message.slice(e.field.length + 2) });
      }
    }
    if (names.has(p.name))
      problems.push({ field: `${at}/pools/${i}/name`, message: `duplicate pool "${p.name}" (also ${at}/pools/${names.get(p.name)}/name)` });
    else names.set(p.name, i);
  });
  return { names, poolTimers };
}

/** An L7 VIP's rules: each names a pool, can match, and is not shadowed by an earlier one. */
function ruleProblems(rules: NonNullable<VipConfig['rules']>, at: string, known: (name: string, field: string) => void, problems: FieldProblem[]): void {
  rules.forEach((r, i) => {
    const f = `${at}/rules/${i}`;
    known(r.pool, `${f}/pool`);
    if (r.host === undefined && r.path === undefined && r.pathRegex === undefined && r.header === undefined) {
      problems.push({ field: f, message: 'matches nothing: give host, path, pathRegex or header (requests no rule matches go to defaultPool)' });
      return;
    }
    if (r.path !== undefined && r.pathRegex !== undefined) problems.push({ field: `${f}/pathRegex`, message: 'give path or pathRegex, not both' });
    if (r.pathRegex !== undefined) {
      const bad = pathRegexProblem(r.pathRegex);
      if (bad) problems.push({ field: `${f}/pathRegex`, message: bad });
    }
    const earlier = rules.findIndex((o, j) => j < i && ruleCovers(o, r));
    if (earlier >= 0)
      problems.push({
        field: f,
        message: `overlaps ${at}/rules/${earlier}: that rule comes first and matches every request this one does, so this one never matches`,
      });
  });
}

/** The L7 fields: pools named once, rules that can match and can be reached, members and rules naming real pools. */
function resolveL7(v: VipConfig, at: string, problems: FieldProblem[]): Partial<ResolvedVip> {
  if (v.protocol !== 'tcp') problems.push({ field: `${at}/protocol`, message: 'must be "tcp" for an L7 VIP (mode "http")' });
  if (v.scheduler !== undefined && v.scheduler !== SLB_DEFAULTS.scheduler)
    problems.push({ field: `${at}/scheduler`, message: 'an L7 VIP schedules per pool: set pools[].scheduler' });
  if (v.snat)
    problems.push({ field: `${at}/snat`, message: "is for L4 VIPs only: a proxied VIP's connections to its members leave from HAProxy on this node" });
  const pools = v.pools ?? [];
  if (!v.pools) problems.push({ field: `${at}/pools`, message: 'is required for an L7 VIP (mode "http")' });
  if (v.defaultPool === undefined) problems.push({ field: `${at}/defaultPool`, message: 'is required for an L7 VIP (mode "http")' });
  const { names, poolTimers } = poolNames(pools, at, problems);
  const known = (name: string, field: string) => {
    if (!names.has(name)) problems.push({ field, message: `no pool "${name}" in ${at}/pools` });
  };
  if (v.defaultPool !== undefined) known(v.defaultPool, `${at}/defaultPool`);
  v.members.forEach((m, i) => {
    if (m.pool === undefined) problems.push({ field: `${at}/members/${i}/pool`, message: 'is required for a member of an L7 VIP' });
    else known(m.pool, `${at}/members/${i}/pool`);
  });
  const rules = v.rules ?? [];
  ruleProblems(rules, at, known, problems);
  return {
    mode: 'http',
    pools: pools.map((p) => ({
      name: p.name,
      scheduler: p.scheduler ?? 'rr',
      persistence: p.persistence ?? 'none',
      ...(p.check ? { check: p.check } : {}),
      ...(poolTimers.has(p.name) ? { timers: poolTimers.get(p.name)! } : {}),
    })),
    rules: rules.map((r) => ({ ...r, ...(r.header ? { header: { ...r.header } } : {}) })),
    defaultPool: v.defaultPool ?? '',
    forwardedFor: v.forwardedFor ?? true,
    ...(v.tls ? { tls: { certificate: v.tls.certificate } } : {}),
  };
}

/**
 * A path regex must compile (HAProxy uses PCRE2: JavaScript's syntax is checked here, and HAProxy compiles it again
 * before it is used) and is matched against the whole path, so it carries no anchors of its own.
 */
export function pathRegexProblem(re: string): string | null {
  try {
    new RegExp(re);
  } catch (e) {
    return `is not a valid regular expression: ${(e as Error).message}`;
  }
  if (/^\^|(?<!\\)\$$/.test(re)) return 'is matched against the whole path already: leave out ^ and $';
  return null;
}

/** Checks across VIPs: unique ids, and no two VIPs on the same address, port and protocol. */
function crossChecks(vips: readonly VipConfig[], at: (i: number) => string, problems: FieldProblem[]): void {
  const ids = new Map<string, number>();
  const listeners = new Map<string, number>();
  vips.forEach((v, i) => {
    if (ids.has(v.id)) problems.push({ field: `${at(i)}/id`, message: `duplicate VIP id "${v.id}" (also ${at(ids.get(v.id)!)}/id)` });
    else ids.set(v.id, i);
    const l = `${hostPort(canonicalOr(v.address), v.port)}/${v.protocol}`;
    const other = listeners.get(l);
    if (other !== undefined) problems.push({ field: `${at(i)}`, message: `overlaps VIP "${vips[other].id}" on ${l}` });
    else listeners.set(l, i);
  });
}

export function validateSlbConfig(doc: unknown, source = 'config'): ResolvedSlbConfig {
  const copy = JSON.parse(JSON.stringify(doc ?? null));
  if (!checkSlb()(copy)) throw new ConfigError(problemsOf(checkSlb().errors), source);
  const c = copy as SlbConfig;
  const problems: FieldProblem[] = [];
  const vips = c.vips ?? [];
  crossChecks(vips, (i) => `/vips/${i}`, problems);
  const resolved = vips.map((v, i) => resolveVip(v, `/vips/${i}`, problems));
  if (c.api?.token && c.api?.tokenFile) problems.push({ field: '/api/token', message: 'give token or tokenFile, not both' });
  const peers = (c.haproxy?.peers ?? []).map((p) => ({ name: p.name, address: canonicalAddress(p.address), port: p.port ?? DEFAULT_PEER_PORT }));
  peerProblems(peers, c.name ?? SLB_DEFAULTS.name, problems);
  const checkBudget = {
    checksPerSecond: c.checkBudget?.checksPerSecond ?? DEFAULT_CHECKS_PER_SECOND,
    regexMsPerSecond: c.checkBudget?.regexMsPerSecond ?? DEFAULT_REGEX_MS_PER_SECOND,
  };
  if (!problems.length) {
    const want = checkDemand(resolved as ResolvedVip[]);
    if (want > checkBudget.checksPerSecond) problems.push({ field: '/vips', message: overBudget(want, checkBudget.checksPerSecond) });
  }
  if (problems.length) throw new ConfigError(problems, source);
  return deepFreeze({
    name: c.name ?? SLB_DEFAULTS.name,
    interface: c.interface,
    table: c.table ?? SLB_DEFAULTS.table,
    seed: c.seed ?? SLB_DEFAULTS.seed,
    api: { listen: c.api?.listen ?? SLB_DEFAULTS.listen, token: c.api?.token, tokenFile: c.api?.tokenFile, ...(c.api?.tls ? { tls: c.api.tls } : {}) },
    ...(c.stateFile ? { stateFile: c.stateFile } : {}),
    resyncSeconds: c.resyncSeconds ?? SLB_DEFAULTS.resyncSeconds,
    countersSeconds: c.countersSeconds ?? SLB_DEFAULTS.countersSeconds,
    vips: resolved as ResolvedVip[],
    checkBudget,
    haproxy: { dir: c.haproxy?.dir ?? `/run/fwlb/haproxy-${c.table ?? SLB_DEFAULTS.table}`, binary: c.haproxy?.binary ?? 'haproxy', peers },
  });
}

/** A group's peers: each name once, each address and port once, and this node among them. */
function peerProblems(peers: readonly SlbPeer[], self: string, problems: FieldProblem[]): void {
  if (!peers.length) return;
  const names = new Set<string>();
  const ends = new Set<string>();
  peers.forEach((p, i) => {
    if (names.has(p.name)) problems.push({ field: `/haproxy/peers/${i}/name`, message: `${p.name} is listed twice` });
    const end = hostPort(p.address, p.port);
    if (ends.has(end)) problems.push({ field: `/haproxy/peers/${i}/address`, message: `${end} is listed twice` });
    names.add(p.name);
    ends.add(end);
  });
  if (!names.has(self))
    problems.push({ field: '/haproxy/peers', message: `no peer is this node (name ${JSON.stringify(self)}): list every node of the group, this one included` });
}

/**
 * Validates one VIP body against the VIPs that stay (`others`): schema, members, timers, and overlap.
 * Fields are named relative to the body ("/members/1/port").
 */
export function validateVip(body: unknown, others: readonly Pick<VipConfig, 'id' | 'address' | 'port' | 'protocol'>[], source = 'request body'): ResolvedVip {
  const copy = JSON.parse(JSON.stringify(body ?? null));
  if (!checkVip()(copy)) throw new ConfigError(problemsOf(checkVip().errors), source);
  const v = copy as VipConfig;
  const problems: FieldProblem[] = [];
  const address = canonicalOr(v.address);
  for (const o of others) {
    if (o.id === v.id) problems.push({ field: '/id', message: `VIP "${v.id}" exists` });
    else if (o.address === address && o.port === v.port && o.protocol === v.protocol) {
      problems.push({ field: '/port', message: `overlaps VIP "${o.id}" on ${hostPort(address, v.port)}/${v.protocol}` });
    }
  }
  const r = resolveVip(v, '', problems);
  if (problems.length || !r) throw new ConfigError(problems, source);
  return deepFreeze(r);
}

/** A resolved VIP written back as a config document (for the state file and GET bodies). */
export function vipDocument(v: ResolvedVip): VipConfig {
  return JSON.parse(JSON.stringify({ ...v, members: v.members.map((m) => ({ ...m })) }));
}
