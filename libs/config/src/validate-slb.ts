// Validates the SLB tier's config and its VIP changes: ajv first, then what JSON Schema cannot say; pure layer of libs/config.
import Ajv from 'ajv';
import { addressProblem } from './address-class';
import { checkSpecProblems } from './check-problems';
import addFormats from 'ajv-formats';
import { canonicalAddress, canonicalOrNull, familyOf, hostPort, splitHostPort } from '@fwlb/flowhash';
import { DEFAULT_REGEX_MS_PER_SECOND, TimerConfig, TimerConfigError, validateTimers } from '@fwlb/health';
import { checkDemand, DEFAULT_CHECKS_PER_SECOND, overBudget } from './check-budget';
import { ConfigError, FieldProblem } from './errors';
import { ADDRESS_FORMATS, problemsOf, deepFreeze, lazy } from './validate';
import type { ApiTls } from './balancer-schema';
import { SlbConfig, slbSchema, VipConfig, vipSchema } from './slb-schema';
import { isProxied, ResolvedVip, SLB_DEFAULTS } from './slb-resolved';
import { l4Only, resolveL7, resolveTcp } from './validate-vip-mode';

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
    if (!isProxied(v) && familyOf(m.address) !== family) {
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
