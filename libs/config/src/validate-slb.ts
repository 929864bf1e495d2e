// Validates the SLB tier's config and its VIP changes: ajv first, then what JSON Schema cannot say; pure layer of libs/config.
import Ajv from 'ajv';
import { checkSpecProblems } from './check-problems';
import addFormats from 'ajv-formats';
import { CheckSpec, TimerConfig, TimerConfigError, validateTimers } from '@fwlb/health';
import { ConfigError, FieldProblem } from './errors';
import { problemsOf, deepFreeze, lazy } from './validate';
import { MemberConfig, MemberState, SlbConfig, slbSchema, VipConfig, vipSchema } from './slb-schema';

const ajv = new Ajv({ allErrors: true, strict: true });
addFormats(ajv, ['ipv4']);
const checkSlb = lazy(() => ajv.compile<SlbConfig>(slbSchema));
const checkVip = lazy(() => ajv.compile<VipConfig>(vipSchema));

export type ResolvedMember = Readonly<Required<MemberConfig>>;
export type ResolvedVip = Readonly<
  Required<Omit<VipConfig, 'members' | 'timers'>> & { timers: Required<TimerConfig>; members: readonly ResolvedMember[] }
>;
export type ResolvedSlbConfig = Readonly<{
  name: string;
  interface: string;
  table: string;
  seed: number;
  api: { listen: string; token?: string; tokenFile?: string };
  stateFile?: string;
  resyncSeconds: number;
  countersSeconds: number;
  vips: readonly ResolvedVip[];
}>;

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

/** A member's stable key within its VIP. */
export const memberKey = (m: { address: string; port: number }): string => `${m.address}:${m.port}`;

function resolveVip(v: VipConfig, at: string, problems: FieldProblem[]): ResolvedVip | null {
  const seen = new Map<string, number>();
  v.members.forEach((m, i) => {
    const k = memberKey(m);
    if (seen.has(k)) problems.push({ field: `${at}/members/${i}`, message: `duplicate member ${k} (also ${at}/members/${seen.get(k)})` });
    else seen.set(k, i);
    if (m.address === v.address) problems.push({ field: `${at}/members/${i}/address`, message: 'must differ from the VIP address' });
  });
  if (v.check) problems.push(...checkSpecProblems(v.check, `${at}/check`, true));
  let timers: Required<TimerConfig> | null = null;
  try {
    timers = validateTimers(v.timers ?? SLB_DEFAULTS.timers);
  } catch (e) {
    if (!(e instanceof TimerConfigError)) throw e;
    problems.push({ field: `${at}/timers/${e.field}`, message: e.message.slice(e.field.length + 2) });
  }
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
    members: v.members.map((m) => ({ address: m.address, port: m.port, weight: m.weight ?? SLB_DEFAULTS.weight, state: m.state ?? SLB_DEFAULTS.state })),
  };
}

/** Checks across VIPs: unique ids, and no two VIPs on the same address, port and protocol. */
function crossChecks(vips: readonly VipConfig[], at: (i: number) => string, problems: FieldProblem[]): void {
  const ids = new Map<string, number>();
  const listeners = new Map<string, number>();
  vips.forEach((v, i) => {
    if (ids.has(v.id)) problems.push({ field: `${at(i)}/id`, message: `duplicate VIP id "${v.id}" (also ${at(ids.get(v.id)!)}/id)` });
    else ids.set(v.id, i);
    const l = `${v.address}:${v.port}/${v.protocol}`;
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
  if (problems.length) throw new ConfigError(problems, source);
  return deepFreeze({
    name: c.name ?? SLB_DEFAULTS.name,
    interface: c.interface,
    table: c.table ?? SLB_DEFAULTS.table,
    seed: c.seed ?? SLB_DEFAULTS.seed,
    api: { listen: c.api?.listen ?? SLB_DEFAULTS.listen, token: c.api?.token, tokenFile: c.api?.tokenFile },
    ...(c.stateFile ? { stateFile: c.stateFile } : {}),
    resyncSeconds: c.resyncSeconds ?? SLB_DEFAULTS.resyncSeconds,
    countersSeconds: c.countersSeconds ?? SLB_DEFAULTS.countersSeconds,
    vips: resolved as ResolvedVip[],
  });
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
  for (const o of others) {
    if (o.id === v.id) problems.push({ field: '/id', message: `VIP "${v.id}" exists` });
    else if (o.address === v.address && o.port === v.port && o.protocol === v.protocol) {
      problems.push({ field: '/port', message: `overlaps VIP "${o.id}" on ${v.address}:${v.port}/${v.protocol}` });
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
