// The SLB config as validation resolves it: its types, its defaults, and what tells the kinds of VIP apart; pure
// layer of libs/config. Apart from the validator so that the check budget can read VIPs without importing it.
import type { CheckSpec, TimerConfig } from '@fwlb/health';
import type { MemberConfig, MemberState, PoolConfig, RuleConfig, VipConfig } from './slb-schema';

export type ResolvedMember = Readonly<Required<Omit<MemberConfig, 'pool' | 'proxyProtocol'>> & { pool?: string; proxyProtocol?: 'v1' | 'v2' }>;
export type ResolvedPool = Readonly<Required<Omit<PoolConfig, 'check' | 'timers'>> & { check?: CheckSpec; timers?: Required<TimerConfig> }>;
/** The fields only an L7 VIP has; resolved (defaults filled in) when `mode` is `http`, absent on an L4 VIP. */
type L7Fields = 'mode' | 'pools' | 'rules' | 'defaultPool' | 'forwardedFor' | 'tls' | 'snat';
export type ResolvedVip = Readonly<
  Required<Omit<VipConfig, 'members' | 'timers' | L7Fields>> & {
    timers: Required<TimerConfig>;
    members: readonly ResolvedMember[];
    mode?: 'http' | 'tcp';
    pools?: readonly ResolvedPool[];
    rules?: readonly Readonly<RuleConfig>[];
    defaultPool?: string;
    forwardedFor?: boolean;
    tls?: { certificate: string };
    /** L4 one-arm: the source address the connections leave with (none: the node's own on the way out). */
    snat?: { address?: string };
  }
>;
/** An L7 VIP (mode http: HAProxy serves it, rules to pools); the L4 ones are nft DNAT maps. */
export type ResolvedL7Vip = ResolvedVip & Required<Pick<ResolvedVip, 'mode' | 'pools' | 'rules' | 'defaultPool' | 'forwardedFor'>> & { mode: 'http' };
export const isL7 = (v: ResolvedVip): v is ResolvedL7Vip => v.mode === 'http';
/** A VIP HAProxy serves: an L7 VIP, or a TCP service it proxies connection by connection (mode tcp). */
export const isProxied = (v: Pick<ResolvedVip, 'mode'> | Pick<VipConfig, 'mode'>): boolean => v.mode === 'http' || v.mode === 'tcp';

/** What an SLB config or VIP leaves out resolves to these. */
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
