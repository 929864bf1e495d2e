// The fields each kind of VIP allows and how they resolve: an L4 VIP (nft), a proxied TCP VIP and an L7 VIP (both
// HAProxy's), with an L7 VIP's pools and rules; pure layer of libs/config, used by validate-slb.ts.
import { TimerConfig, TimerConfigError, validateTimers } from '@fwlb/health';
import { checkSpecProblems } from './check-problems';
import type { FieldProblem } from './errors';
import { ResolvedVip, SLB_DEFAULTS } from './slb-resolved';
import type { RuleConfig, VipConfig } from './slb-schema';

const L7_ONLY = ['pools', 'rules', 'defaultPool', 'forwardedFor', 'tls'] as const;

/** A VIP that is not an L7 VIP carries none of the L7 fields (they would be silently ignored). */
function noL7Fields(v: VipConfig, at: string, problems: FieldProblem[]): void {
  for (const k of L7_ONLY) if (v[k] !== undefined) problems.push({ field: `${at}/${k}`, message: 'is for L7 VIPs only (mode "http")' });
  v.members.forEach((m, i) => {
    if (m.pool !== undefined) problems.push({ field: `${at}/members/${i}/pool`, message: 'is for members of L7 VIPs only (mode "http")' });
  });
}

/** An L4 VIP: no L7 fields, and no PROXY header (nothing is put in front of a stream the kernel forwards). */
export function l4Only(v: VipConfig, at: string, problems: FieldProblem[]): object {
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
export function resolveTcp(v: VipConfig, at: string, problems: FieldProblem[]): Partial<ResolvedVip> {
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
export function resolveL7(v: VipConfig, at: string, problems: FieldProblem[]): Partial<ResolvedVip> {
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
